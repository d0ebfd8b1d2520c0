package collector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 10 * time.Second

// recordedSpan is what the tests compare of a span that reached the consumer.
type recordedSpan struct {
	Service string
	Scope   string
	Name    string
	Attrs   map[string]any
}

// recorder is a Consumer that keeps a copy of every span it receives.
type recorder struct {
	mu    sync.Mutex
	spans []recordedSpan
	calls int
}

func (c *recorder) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		rs := rss.At(i)
		service, _ := rs.Resource().Attributes().Get("service.name")
		for j := range rs.ScopeSpans().Len() {
			ss := rs.ScopeSpans().At(j)
			for k := range ss.Spans().Len() {
				s := ss.Spans().At(k)
				c.spans = append(c.spans, recordedSpan{
					Service: service.AsString(),
					Scope:   ss.Scope().Name(),
					Name:    s.Name(),
					Attrs:   s.Attributes().AsRaw(),
				})
			}
		}
	}
	return nil
}

// got returns the spans recorded so far, sorted by name.
func (c *recorder) got() []recordedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]recordedSpan(nil), c.spans...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *recorder) callCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// consumerFunc adapts a function to Consumer.
type consumerFunc func(ctx context.Context, td ptrace.Traces) error

func (f consumerFunc) ConsumeTraces(ctx context.Context, td ptrace.Traces) error { return f(ctx, td) }

// blockingConsumer holds every request until release is closed or the request
// ends, and announces each arrival on entered.
type blockingConsumer struct {
	entered chan struct{}
	release chan struct{}
}

func newBlockingConsumer() *blockingConsumer {
	return &blockingConsumer{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (c *blockingConsumer) ConsumeTraces(ctx context.Context, _ ptrace.Traces) error {
	c.entered <- struct{}{}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *blockingConsumer) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-c.entered:
	case <-time.After(waitTimeout):
		t.Fatal("consumer was not called in time")
	}
}

// overloadError is a consumer error that asks for a back-off.
type overloadError struct{ after time.Duration }

func (e overloadError) Error() string             { return "queue full" }
func (e overloadError) RetryAfter() time.Duration { return e.after }

// testConfig is a config on ephemeral loopback ports with small limits.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.GRPCEndpoint = "127.0.0.1:0"
	cfg.HTTPEndpoint = "127.0.0.1:0"
	cfg.MaxRequestBytes = 1 << 20
	cfg.MaxInflightBytes = 4 << 20
	return cfg
}

// startReceiver starts a receiver that is shut down when the test ends.
func startReceiver(t testing.TB, cfg Config, next Consumer) (*Receiver, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(cfg, next, nil, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return r, reg
}

// exportWithSDK sends two spans through a tracer provider whose exporter is exp.
func exportWithSDK(t *testing.T, exp sdktrace.SpanExporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "checkout"))),
	)
	tracer := tp.Tracer("orders")
	ctx, parent := tracer.Start(ctx, "place-order", trace.WithAttributes(
		attribute.String("order.id", "o-42"),
		attribute.Int64("order.items", 3),
	))
	_, child := tracer.Start(ctx, "reserve-stock", trace.WithAttributes(attribute.Bool("stock.partial", true)))
	child.End()
	parent.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("shut down tracer provider: %v", err)
	}
}

func wantSDKSpans() []recordedSpan {
	return []recordedSpan{
		{Service: "checkout", Scope: "orders", Name: "place-order", Attrs: map[string]any{"order.id": "o-42", "order.items": int64(3)}},
		{Service: "checkout", Scope: "orders", Name: "reserve-stock", Attrs: map[string]any{"stock.partial": true}},
	}
}

func TestSDKExportersDeliverSpans(t *testing.T) {
	tests := []struct {
		name     string
		exporter func(ctx context.Context, r *Receiver) (sdktrace.SpanExporter, error)
	}{
		{"grpc", func(ctx context.Context, r *Receiver) (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(r.GRPCAddr().String()), otlptracegrpc.WithInsecure())
		}},
		{"grpc gzip", func(ctx context.Context, r *Receiver) (sdktrace.SpanExporter, error) {
			return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(r.GRPCAddr().String()), otlptracegrpc.WithInsecure(),
				otlptracegrpc.WithCompressor("gzip"))
		}},
		{"http", func(ctx context.Context, r *Receiver) (sdktrace.SpanExporter, error) {
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(r.HTTPAddr().String()), otlptracehttp.WithInsecure())
		}},
		{"http gzip", func(ctx context.Context, r *Receiver) (sdktrace.SpanExporter, error) {
			return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(r.HTTPAddr().String()), otlptracehttp.WithInsecure(),
				otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			r, _ := startReceiver(t, testConfig(), rec)
			exp, err := tt.exporter(context.Background(), r)
			if err != nil {
				t.Fatalf("new exporter: %v", err)
			}
			exportWithSDK(t, exp)
			if diff := cmp.Diff(rec.got(), wantSDKSpans()); diff != "" {
				t.Errorf("spans consumed (-got +want):\n%s", diff)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr bool
	}{
		{"default", func(*Config) {}, false},
		{"http only", func(c *Config) { c.GRPCEndpoint = "" }, false},
		{"grpc only", func(c *Config) { c.HTTPEndpoint = "" }, false},
		{"nothing to serve", func(c *Config) { c.GRPCEndpoint, c.HTTPEndpoint = "", "" }, true},
		{"endpoint without port", func(c *Config) { c.GRPCEndpoint = "localhost" }, true},
		{"zero max request", func(c *Config) { c.MaxRequestBytes = 0 }, true},
		{"max request over 2 GiB", func(c *Config) { c.MaxRequestBytes, c.MaxInflightBytes = 1<<31, 1<<32 }, true},
		{"inflight below request", func(c *Config) { c.MaxInflightBytes = c.MaxRequestBytes - 1 }, true},
		{"zero retry after", func(c *Config) { c.RetryAfter = 0 }, true},
		{"zero max spans", func(c *Config) { c.MaxSpansPerRequest = 0 }, true},
		{"negative max links", func(c *Config) { c.MaxLinksPerRequest = -1 }, true},
		{"zero max events", func(c *Config) { c.MaxEventsPerRequest = 0 }, true},
		{"zero max attributes", func(c *Config) { c.MaxAttributesPerRequest = 0 }, true},
		{"JSON depth below a span attribute's", func(c *Config) { c.MaxJSONDepth = minJSONDepth - 1 }, true},
		{"JSON depth of a span attribute", func(c *Config) { c.MaxJSONDepth = minJSONDepth }, false},
		{"zero read timeout", func(c *Config) { c.ReadTimeout = 0 }, true},
		{"zero idle timeout", func(c *Config) { c.IdleTimeout = 0 }, true},
		{"zero max connections", func(c *Config) { c.MaxConnections = 0 }, true},
		{"zero max streams", func(c *Config) { c.MaxConcurrentStreams = 0 }, true},
		{"max streams over uint32", func(c *Config) { c.MaxConcurrentStreams = 1 << 32 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Errorf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	if _, err := New(Config{}, &recorder{}, nil, nil); err == nil {
		t.Error("New with the zero Config succeeded")
	}
	if _, err := New(DefaultConfig(), nil, nil, nil); err == nil {
		t.Error("New with a nil Consumer succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), &recorder{}, nil, reg); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := New(DefaultConfig(), &recorder{}, nil, reg); err == nil {
		t.Error("second New on the same registry succeeded, want a duplicate registration error")
	}
}

func TestStartRollsBackWhenAListenerFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cfg := testConfig()
	cfg.HTTPEndpoint = busy.Addr().String()
	r, err := New(cfg, &recorder{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded on a port in use")
	}
	// The gRPC listener bound before the failure must be closed again.
	ln, err := net.Listen("tcp", r.GRPCAddr().String())
	if err != nil {
		t.Fatalf("gRPC port still held after failed Start: %v", err)
	}
	ln.Close()
	if err := r.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after failed Start: %v", err)
	}
}

func TestStartTwiceFails(t *testing.T) {
	r, _ := startReceiver(t, testConfig(), &recorder{})
	if err := r.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
}

func TestShutdown(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		r, err := New(testConfig(), &recorder{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("second Shutdown: %v", err)
		}
		goleak.VerifyNone(t)
	})
	t.Run("never started", func(t *testing.T) {
		r, err := New(testConfig(), &recorder{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	t.Run("deadline with a request stuck in the consumer", func(t *testing.T) {
		for _, tr := range []string{"grpc", "http"} {
			t.Run(tr, func(t *testing.T) {
				c := newBlockingConsumer()
				defer close(c.release)
				r, err := New(testConfig(), c, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				body := mustMarshal(t, newTraces(1, 1))
				sent := make(chan error, 1)
				go func() {
					if tr == "grpc" {
						_, err := exportGRPC(t, r, body)
						sent <- err
					} else {
						_, err := postTraces(r, "application/x-protobuf", "", body)
						sent <- err
					}
				}()
				c.waitEntered(t)

				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				defer cancel()
				start := time.Now()
				err = r.Shutdown(ctx)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
				}
				if elapsed := time.Since(start); elapsed > 5*time.Second {
					t.Errorf("Shutdown took %v despite a 100ms deadline", elapsed)
				}
				select {
				case <-sent: // the client saw its connection end
				case <-time.After(waitTimeout):
					t.Fatal("client request did not end after Shutdown")
				}
			})
		}
	})
}

// newTraces returns traces of n resource spans holding spansPer valid spans each.
func newTraces(n, spansPer int) ptrace.Traces {
	td := ptrace.NewTraces()
	for i := range n {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("svc-%d", i%4))
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("bench")
		for j := range spansPer {
			s := ss.Spans().AppendEmpty()
			s.SetTraceID(pcommon.TraceID{1, byte(i), byte(i >> 8), 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
			s.SetSpanID(pcommon.SpanID{1, byte(j), byte(i), byte(i >> 8), 5, 6, 7, 8})
			if j > 0 {
				s.SetParentSpanID(pcommon.SpanID{1, 0, byte(i), byte(i >> 8), 5, 6, 7, 8})
			}
			s.SetName(fmt.Sprintf("op-%d", j))
			s.SetKind(ptrace.SpanKindServer)
			s.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + int64(j)*1000))
			s.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + int64(j)*1000 + 500))
			s.Attributes().PutStr("http.route", "/orders/{id}")
			s.Attributes().PutInt("http.status_code", 200)
			s.Attributes().PutStr("messaging.destination", "orders.events")
		}
	}
	return td
}

func mustMarshal(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
