package forward

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config configures a Forwarder (YAML section forward). The zero value is
// not usable; start from DefaultConfig.
type Config struct {
	// Endpoint (forward.endpoint) is the host:port of the OTLP backend that
	// receives a copy of every span: Jaeger v2, Grafana Tempo, an
	// OpenTelemetry Collector. Default "": forwarding is off.
	Endpoint string `yaml:"endpoint"`

	// Protocol (forward.protocol) is how to reach Endpoint: grpc (OTLP/gRPC,
	// usually port 4317) or http (OTLP/HTTP, usually port 4318). Default grpc.
	Protocol string `yaml:"protocol"`

	// Path (forward.path) is the URL path OTLP/HTTP posts to, for backends
	// behind a prefix (Grafana Cloud's /otlp/v1/traces). Ignored over gRPC.
	// Default /v1/traces.
	Path string `yaml:"path"`

	// Headers (forward.headers) are sent with every request: HTTP headers,
	// or gRPC metadata (keys lower-cased), e.g. an Authorization or a tenant
	// header (X-Scope-OrgID for a multi-tenant Tempo). Default none.
	Headers map[string]string `yaml:"headers"`

	// Compression (forward.compression) is none or gzip. gzip shrinks
	// OTLP about five times, for a backend across a network, at a cost of
	// CPU of the order of decoding the request again. Default none.
	Compression string `yaml:"compression"`

	// TLS (forward.tls.*) secures the connection. Default plaintext.
	TLS TLSConfig `yaml:"tls"`

	// QueueBytes (forward.queue_bytes) bounds the memory of requests waiting
	// to be sent or being sent, as their encoded size. A request that does
	// not fit is dropped at once and counted (reason queue_full), so a slow or
	// absent backend never slows receiving. Default 64 MiB.
	QueueBytes int64 `yaml:"queue_bytes"`

	// Concurrency (forward.concurrency) is how many requests are sent at
	// once. Default 4.
	Concurrency int `yaml:"concurrency"`

	// Timeout (forward.timeout) bounds one attempt to send a request. An
	// attempt that times out is retried. Default 10s.
	Timeout time.Duration `yaml:"timeout"`

	// Retry (forward.retry.*) is the exponential backoff between attempts.
	Retry RetryConfig `yaml:"retry"`
}

// TLSConfig secures the connection to the backend. TLS is on when Enabled is
// set or when CAFile or CertFile is; otherwise the connection is plaintext,
// as to a Collector or Jaeger next to lagscope.
type TLSConfig struct {
	// Enabled (forward.tls.enabled) turns TLS on with the system's root
	// certificates. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile (forward.tls.ca_file) is a PEM file of the certificates that
	// sign the backend's, in place of the system's. Default "".
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile (forward.tls.cert_file, forward.tls.key_file)
	// are the PEM client certificate and key, for backends that ask for
	// one (mutual TLS); both or neither. Default "".
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName (forward.tls.server_name) is the name the backend's
	// certificate must carry, when it is not Endpoint's host. Default "".
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify (forward.tls.insecure_skip_verify) accepts any
	// certificate: for tests only. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// RetryConfig is the backoff between attempts to send one request. The
// server's advice (HTTP Retry-After, gRPC RetryInfo) replaces the backoff's
// interval when it names one.
type RetryConfig struct {
	// InitialInterval (forward.retry.initial_interval) is the wait after the
	// first failed attempt; each further wait doubles it, with ±20% jitter.
	// Default 500ms.
	InitialInterval time.Duration `yaml:"initial_interval"`
	// MaxInterval (forward.retry.max_interval) caps the backoff's wait.
	// Default 30s.
	MaxInterval time.Duration `yaml:"max_interval"`
	// MaxElapsedTime (forward.retry.max_elapsed_time) is how long after its
	// first attempt a request is given up (reason retries_exhausted); a wait
	// that would end past it is not started. 0 sends each request once.
	// Default 2m.
	MaxElapsedTime time.Duration `yaml:"max_elapsed_time"`
}

// Protocols of Config.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
)

// Compressions of Config.Compression.
const (
	CompressionNone = "none"
	CompressionGzip = "gzip"
)

// DefaultConfig returns the configuration documented on Config's fields:
// forwarding off.
func DefaultConfig() Config {
	return Config{
		Protocol:    ProtocolGRPC,
		Path:        "/v1/traces",
		Compression: CompressionNone,
		QueueBytes:  64 << 20,
		Concurrency: 4,
		Timeout:     10 * time.Second,
		Retry: RetryConfig{
			InitialInterval: 500 * time.Millisecond,
			MaxInterval:     30 * time.Second,
			MaxElapsedTime:  2 * time.Minute,
		},
	}
}

// Enabled reports whether c forwards anything: whether Endpoint is set.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Validate reports every field that cannot be used, naming its YAML key,
// joined into one error. It does not read the TLS files; New does.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		if _, _, err := net.SplitHostPort(c.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("forward.endpoint must be host:port: %w", err))
		}
	}
	if c.Protocol != ProtocolGRPC && c.Protocol != ProtocolHTTP {
		errs = append(errs, fmt.Errorf("forward.protocol must be grpc or http, got %q", c.Protocol))
	}
	if c.Compression != CompressionNone && c.Compression != CompressionGzip {
		errs = append(errs, fmt.Errorf("forward.compression must be none or gzip, got %q", c.Compression))
	}
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("forward.path must start with /, got %q", c.Path))
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			errs = append(errs, fmt.Errorf("forward.headers: %q is not a header name", k))
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("forward.tls.cert_file and forward.tls.key_file must be set together"))
	}
	if c.QueueBytes <= 0 {
		errs = append(errs, fmt.Errorf("forward.queue_bytes must be positive, got %d", c.QueueBytes))
	}
	if c.Concurrency <= 0 {
		errs = append(errs, fmt.Errorf("forward.concurrency must be positive, got %d", c.Concurrency))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("forward.timeout must be positive, got %v", c.Timeout))
	}
	if c.Retry.InitialInterval <= 0 {
		errs = append(errs, fmt.Errorf("forward.retry.initial_interval must be positive, got %v", c.Retry.InitialInterval))
	}
	if c.Retry.MaxInterval < c.Retry.InitialInterval {
		errs = append(errs, fmt.Errorf("forward.retry.max_interval (%v) must be at least forward.retry.initial_interval (%v)", c.Retry.MaxInterval, c.Retry.InitialInterval))
	}
	if c.Retry.MaxElapsedTime < 0 {
		errs = append(errs, fmt.Errorf("forward.retry.max_elapsed_time must not be negative, got %v", c.Retry.MaxElapsedTime))
	}
	return errors.Join(errs...)
}

// on reports whether t turns TLS on.
func (t TLSConfig) on() bool { return t.Enabled || t.CAFile != "" || t.CertFile != "" }

// config loads the files of t into a *tls.Config, or returns nil for
// plaintext.
func (t TLSConfig) config() (*tls.Config, error) {
	if !t.on() {
		return nil, nil
	}
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // documented as for tests only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read forward.tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("forward.tls.ca_file %s holds no PEM certificate", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load forward.tls.cert_file and key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
