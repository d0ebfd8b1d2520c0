package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Protocols of Config.Protocol.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
)

// Config configures an OTLP tracer provider.
type Config struct {
	// Endpoint is where spans are exported: "host:port" (plaintext) or a URL
	// ("http://host:4317" for gRPC; "http://host:4318" for HTTP, where a URL
	// without a path gets /v1/traces). Empty means no exporter.
	Endpoint string
	// Protocol is ProtocolGRPC (the default) or ProtocolHTTP.
	Protocol string
	// ServiceName is the service.name resource attribute. Default "orders".
	ServiceName string
	// BatchTimeout is the batch span processor's export delay. Default 500ms:
	// short, so that lagscope sees spans soon.
	BatchTimeout time.Duration
}

// Validate reports a bad protocol.
func (c Config) Validate() error {
	switch c.Protocol {
	case "", ProtocolGRPC, ProtocolHTTP:
		return nil
	}
	return fmt.Errorf("otlp protocol %q: want %q or %q", c.Protocol, ProtocolGRPC, ProtocolHTTP)
}

// NewTracerProvider returns an SDK tracer provider with a batch span processor
// exporting over OTLP to cfg.Endpoint (none when it is empty) and a resource
// holding only service.name. The caller must Shutdown it, which flushes.
func NewTracerProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name := cfg.ServiceName
	if name == "" {
		name = "orders"
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))),
	}
	if cfg.Endpoint != "" {
		exp, err := newExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		timeout := cfg.BatchTimeout
		if timeout <= 0 {
			timeout = 500 * time.Millisecond
		}
		opts = append(opts, sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(timeout)))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func newExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	isURL := strings.Contains(cfg.Endpoint, "://")
	endpointURL := cfg.Endpoint
	if isURL && cfg.Protocol == ProtocolHTTP {
		// A bare http://host:port means the standard traces path, as in the
		// OTEL_EXPORTER_OTLP_ENDPOINT convention.
		u, err := url.Parse(cfg.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("otlp endpoint %q: %w", cfg.Endpoint, err)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		endpointURL = u.String()
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	if cfg.Protocol == ProtocolHTTP {
		o := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Endpoint), otlptracehttp.WithInsecure()}
		if isURL {
			o = []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpointURL)}
		}
		exp, err = otlptracehttp.New(ctx, o...)
	} else {
		o := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithInsecure()}
		if isURL {
			o = []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(cfg.Endpoint)}
		}
		exp, err = otlptracegrpc.New(ctx, o...)
	}
	if err != nil {
		return nil, fmt.Errorf("create otlp %s exporter for %s: %w", cfg.Protocol, cfg.Endpoint, err)
	}
	return exp, nil
}
