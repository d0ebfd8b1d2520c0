package collector

import (
	"errors"
	"fmt"
	"math"
	"net"
	"time"
)

// Config configures a Receiver. The zero value is not usable; start from DefaultConfig.
type Config struct {
	// GRPCEndpoint is the host:port the OTLP/gRPC server listens on.
	// Default "localhost:4317"; "" disables gRPC; a port of 0 picks a free one.
	GRPCEndpoint string `yaml:"grpc_endpoint"`

	// HTTPEndpoint is the host:port the OTLP/HTTP server listens on.
	// Default "localhost:4318"; "" disables HTTP; a port of 0 picks a free one.
	HTTPEndpoint string `yaml:"http_endpoint"`

	// MaxRequestBytes is the largest request accepted, measured after decompression.
	// It is also the gRPC server's maximum received message size, and the largest
	// compressed HTTP body read. Default 16 MiB.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`

	// MaxInflightBytes bounds the memory of requests being read, decoded and
	// consumed at once over both transports: their bodies as they arrive, plus
	// an estimate from above of what decoding them allocates, reserved before
	// decoding, plus 16 KiB per open gRPC export stream. A request that does
	// not fit is refused at once as overload (HTTP 429, gRPC
	// ResourceExhausted); one whose estimate alone exceeds it, as too large.
	// Must be at least MaxRequestBytes; a request of realistic spans decodes
	// into about eight times its size, so 16 MiB of them need about 140 MiB.
	// Default 192 MiB: a Go heap grows to about twice what is live before the
	// collector runs, and 24 concurrent 14.5 MB requests peaked at 224-364
	// MiB of heap (TestConcurrentLargeRequestsKeepHeapBounded), so this keeps
	// the process under 512 MiB RSS.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`

	// MaxSpansPerRequest, MaxLinksPerRequest, MaxEventsPerRequest and
	// MaxAttributesPerRequest (YAML otlp.max_spans_per_request,
	// otlp.max_links_per_request, otlp.max_events_per_request,
	// otlp.max_attributes_per_request) bound what one request may hold,
	// counted before decoding (or as the selective decoder decodes, within a
	// reservation); past one the request is refused as too large
	// (HTTP 413, gRPC ResourceExhausted without retry advice). Attributes are
	// those of resources, scopes, spans, events and links together, with the
	// elements of array and map values and entity references' keys. Defaults
	// 100,000 spans, links and events and 1,000,000 attributes: the OTel
	// SDKs export at most 512 spans per request by default and cap a span at
	// 128 attributes, events and links, and a Collector's batch processor
	// sends batches of 8192 spans, so real exporters stay far below. What
	// the limits admit is bounded further by MaxInflightBytes: a request whose
	// estimated decoded size exceeds it is refused as too large.
	MaxSpansPerRequest      int `yaml:"max_spans_per_request"`
	MaxLinksPerRequest      int `yaml:"max_links_per_request"`
	MaxEventsPerRequest     int `yaml:"max_events_per_request"`
	MaxAttributesPerRequest int `yaml:"max_attributes_per_request"`

	// MaxJSONDepth (otlp.max_json_depth) bounds the nesting of objects and
	// arrays in an OTLP/JSON request, and of messages in a protobuf one.
	// A span's attribute value sits at depth 10 in OTLP/JSON and each nested
	// map value adds 4, so the default of 64 allows 13 levels of nested maps,
	// more than any instrumentation writes. Default 64.
	MaxJSONDepth int `yaml:"max_json_depth"`

	// ReadTimeout (otlp.read_timeout) bounds how long a client may take to
	// send an HTTP request body, or a gRPC request message once its stream
	// has opened. A request still arriving then is cut and its budget
	// released. gRPC holds a message being received outside the in-flight
	// budget until it is complete (up to MaxRequestBytes per stream), so this
	// is also how long a stalled one can hold that memory. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`

	// IdleTimeout (otlp.idle_timeout) closes HTTP keep-alive connections and
	// gRPC connections (MaxConnectionIdle) that carry no request for that
	// long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`

	// MaxConnections (otlp.max_connections) bounds the open connections of
	// each listener (so twice that over both). Past it, new connections wait
	// in the kernel's accept queue until one closes. Default 1024.
	MaxConnections int `yaml:"max_connections"`

	// MaxConcurrentStreams (otlp.max_concurrent_streams) bounds the gRPC
	// streams open at once on one connection. Default 64.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`

	// RetryAfter is the delay that overload and unavailability responses advise
	// when the consumer's error does not name one. Default 1s.
	RetryAfter time.Duration `yaml:"retry_after"`

	// LazyDecode decodes OTLP protobuf requests (gRPC and HTTP) with the
	// selective decoder, which keeps only span ids, parent, name, kind,
	// times, status code, link ids and what Keep names. Requests it cannot
	// decode exactly like pdata go to pdata, counted in
	// lagscope_decode_fallbacks_total by reason. It takes effect only with a
	// Keep that names something (a consumer that said what it reads, as
	// lagscope serve does for the analyzer): with the zero Selection every
	// request is decoded in full. Default true: TestLazyDifferential
	// compares it with pdata on every fixture, the real-client captures and
	// generated inputs (ten million once, with no difference).
	LazyDecode bool `yaml:"lazy_decode"`

	// Keep is what the selective decoder keeps (LazyDecode) besides those
	// fields: attribute keys and span event names. It is the consumer's to
	// say, not a setting of the file: lagscope serve sets it from
	// analyzer.Config.Reads. Default empty: no attribute and no event.
	Keep Selection `yaml:"-"`

	// TLS (otlp.tls) serves both transports over TLS, and with
	// TLS.ClientCAFile over mutual TLS. Default: plaintext.
	TLS TLSConfig `yaml:"tls"`

	// Auth (otlp.auth) makes both transports require a bearer token.
	// Default: no authentication.
	Auth AuthConfig `yaml:"auth"`
}

// selectiveDecoder returns the decoder of c.Keep, or nil without LazyDecode
// or with a Keep that names nothing (a consumer that did not say what it
// reads gets every field).
func (c Config) selectiveDecoder() *selectiveDecoder {
	k := c.Keep
	if !c.LazyDecode || (k.ResourceAttributes == nil && k.SpanAttributes == nil && k.EventNames == nil && k.EventAttributes == nil) {
		return nil
	}
	return newSelectiveDecoder(c.Keep)
}

// DefaultConfig returns the configuration documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		GRPCEndpoint:     "localhost:4317",
		HTTPEndpoint:     "localhost:4318",
		MaxRequestBytes:  16 << 20,
		MaxInflightBytes: 192 << 20,
		RetryAfter:       time.Second,
		LazyDecode:       true,

		MaxSpansPerRequest:      100_000,
		MaxLinksPerRequest:      100_000,
		MaxEventsPerRequest:     100_000,
		MaxAttributesPerRequest: 1_000_000,
		MaxJSONDepth:            64,
		ReadTimeout:             30 * time.Second,
		IdleTimeout:             2 * time.Minute,
		MaxConnections:          1024,
		MaxConcurrentStreams:    64,
	}
}

// Validate reports every field that cannot be used, joined into one error.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCEndpoint == "" && c.HTTPEndpoint == "" {
		errs = append(errs, errors.New("otlp.grpc_endpoint and otlp.http_endpoint are both empty: nothing to serve"))
	}
	if c.GRPCEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.GRPCEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("otlp.grpc_endpoint: %w", err))
		}
	}
	if c.HTTPEndpoint != "" {
		if _, _, err := net.SplitHostPort(c.HTTPEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("otlp.http_endpoint: %w", err))
		}
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, fmt.Errorf("otlp.max_request_bytes must be positive, got %d", c.MaxRequestBytes))
	}
	if c.MaxRequestBytes > maxRequestBytesLimit {
		errs = append(errs, fmt.Errorf("otlp.max_request_bytes must be at most %d, got %d", int64(maxRequestBytesLimit), c.MaxRequestBytes))
	}
	if c.MaxInflightBytes < c.MaxRequestBytes {
		errs = append(errs, fmt.Errorf("otlp.max_inflight_bytes (%d) must be at least otlp.max_request_bytes (%d)", c.MaxInflightBytes, c.MaxRequestBytes))
	}
	if c.RetryAfter <= 0 {
		errs = append(errs, fmt.Errorf("otlp.retry_after must be positive, got %v", c.RetryAfter))
	}
	positive := []struct {
		key string
		v   int64
	}{
		{"otlp.max_spans_per_request", int64(c.MaxSpansPerRequest)},
		{"otlp.max_links_per_request", int64(c.MaxLinksPerRequest)},
		{"otlp.max_events_per_request", int64(c.MaxEventsPerRequest)},
		{"otlp.max_attributes_per_request", int64(c.MaxAttributesPerRequest)},
		{"otlp.max_json_depth", int64(c.MaxJSONDepth)},
		{"otlp.max_connections", int64(c.MaxConnections)},
		{"otlp.max_concurrent_streams", int64(c.MaxConcurrentStreams)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", p.key, p.v))
		}
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("otlp.read_timeout must be positive, got %v", c.ReadTimeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("otlp.idle_timeout must be positive, got %v", c.IdleTimeout))
	}
	if c.MaxJSONDepth > 0 && c.MaxJSONDepth < minJSONDepth {
		errs = append(errs, fmt.Errorf("otlp.max_json_depth must be at least %d (the depth of a span's attribute value), got %d", minJSONDepth, c.MaxJSONDepth))
	}
	if int64(c.MaxConcurrentStreams) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("otlp.max_concurrent_streams must be at most %d, got %d", uint32(math.MaxUint32), c.MaxConcurrentStreams))
	}
	errs = append(errs, c.TLS.validate("otlp")...)
	return errors.Join(errs...)
}

// minJSONDepth is the depth of a span's attribute value in OTLP/JSON:
// request, resourceSpans, resource span, scopeSpans, scope span, spans,
// span, attributes, key-value, value.
const minJSONDepth = 10

// maxRequestBytesLimit keeps MaxRequestBytes within what gRPC's int32 message
// length prefix can carry.
const maxRequestBytesLimit = 1<<31 - 1
