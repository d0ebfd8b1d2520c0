package collector

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config configures a Receiver. The zero value is not usable; start from DefaultConfig.
type Config struct {
	// GRPCEndpoint is the host:port the OTLP/gRPC server listens on.
	// Default "localhost:4317"; "" disables gRPC; a port of 0 picks a free one.
	GRPCEndpoint string

	// HTTPEndpoint is the host:port the OTLP/HTTP server listens on.
	// Default "localhost:4318"; "" disables HTTP; a port of 0 picks a free one.
	HTTPEndpoint string

	// MaxRequestBytes is the largest request accepted, measured after decompression.
	// It is also the gRPC server's maximum received message size, and the largest
	// compressed HTTP body read. Default 16 MiB.
	MaxRequestBytes int64

	// MaxInflightBytes bounds the sum of request bodies being read, decoded and
	// consumed at once over both transports. A request that does not fit is refused
	// at once as overload (HTTP 429, gRPC ResourceExhausted). Must be at least
	// MaxRequestBytes. Default 256 MiB.
	MaxInflightBytes int64

	// RetryAfter is the delay that overload and unavailability responses advise
	// when the consumer's error does not name one. Default 1s.
	RetryAfter time.Duration

	// LazyDecode decodes OTLP protobuf requests (gRPC and HTTP) keeping only
	// what the analysis reads: span ids, parent, name, kind, times, status
	// code, attributes named cqrs.* and messaging.*, events named
	// cqrs.event, link ids and the resource's service.name. Requests it
	// cannot decode exactly like pdata go to pdata. Only for a Consumer that
	// reads no more than that (the analyzer). Default false.
	LazyDecode bool
}

// DefaultConfig returns the configuration documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		GRPCEndpoint:     "localhost:4317",
		HTTPEndpoint:     "localhost:4318",
		MaxRequestBytes:  16 << 20,
		MaxInflightBytes: 256 << 20,
		RetryAfter:       time.Second,
	}
}

// Validate reports every field that cannot be used, joined into one error.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCEndpoint == "" && c.HTTPEndpoint == "" {
		errs = append(errs, errors.New("GRPCEndpoint and HTTPEndpoint are both empty: nothing to serve"))
	}
	if c.GRPCEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.GRPCEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("GRPCEndpoint: %w", err))
		}
	}
	if c.HTTPEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.HTTPEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("HTTPEndpoint: %w", err))
		}
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, fmt.Errorf("MaxRequestBytes must be positive, got %d", c.MaxRequestBytes))
	}
	if c.MaxRequestBytes > maxRequestBytesLimit {
		errs = append(errs, fmt.Errorf("MaxRequestBytes must be at most %d, got %d", int64(maxRequestBytesLimit), c.MaxRequestBytes))
	}
	if c.MaxInflightBytes < c.MaxRequestBytes {
		errs = append(errs, fmt.Errorf("MaxInflightBytes (%d) must be at least MaxRequestBytes (%d)", c.MaxInflightBytes, c.MaxRequestBytes))
	}
	if c.RetryAfter <= 0 {
		errs = append(errs, fmt.Errorf("RetryAfter must be positive, got %v", c.RetryAfter))
	}
	return errors.Join(errs...)
}

// maxRequestBytesLimit keeps MaxRequestBytes within what gRPC's int32 message
// length prefix can carry.
const maxRequestBytesLimit = 1<<31 - 1
