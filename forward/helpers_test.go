package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/collector"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait on a condition in these tests.
const waitTimeout = 8 * time.Second

// waitFor waits until cond holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receivedSpan is what the backend's consumer records of a span.
type receivedSpan struct {
	Service string
	Name    string
	Attrs   map[string]any
}

// backend is lagscope's own OTLP receiver with a recording Consumer: a real
// OTLP/gRPC and OTLP/HTTP server.
type backend struct {
	r        *collector.Receiver
	grpcAddr string
	httpAddr string

	mu    sync.Mutex
	spans map[pcommon.SpanID][]receivedSpan
	calls []time.Time
	// fail, if set, is asked before each call is recorded; its error is
	// the consumer's answer.
	fail func(call int) error
	// block, if not nil, holds every call until it is closed.
	block       chan struct{}
	releaseOnce sync.Once
	blocked     atomic.Int32 // calls held by block now
	// onCall, if set, sees each call's context.
	onCall func(ctx context.Context)
}

// startBackend starts a backend; grpcAddr and httpAddr may name the ports to
// bind ("" picks free ones).
func startBackend(t *testing.T, b *backend, grpcAddr, httpAddr string) *backend {
	t.Helper()
	if grpcAddr == "" {
		grpcAddr = "127.0.0.1:0"
	}
	if httpAddr == "" {
		httpAddr = "127.0.0.1:0"
	}
	cfg := collector.DefaultConfig()
	cfg.GRPCEndpoint, cfg.HTTPEndpoint = grpcAddr, httpAddr
	cfg.RetryAfter = time.Second // HTTP advises whole seconds
	b.spans = map[pcommon.SpanID][]receivedSpan{}
	r, err := collector.New(cfg, b, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.r, b.grpcAddr, b.httpAddr = r, r.GRPCAddr().String(), r.HTTPAddr().String()
	t.Cleanup(func() {
		if b.block != nil {
			b.release()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shut down backend: %v", err)
		}
	})
	return b
}

// release lets the blocked calls through, once.
func (b *backend) release() { b.releaseOnce.Do(func() { close(b.block) }) }

func (b *backend) addr(protocol string) string {
	if protocol == ProtocolHTTP {
		return b.httpAddr
	}
	return b.grpcAddr
}

func (b *backend) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if b.onCall != nil {
		b.onCall(ctx)
	}
	if b.block != nil {
		b.blocked.Add(1)
		defer b.blocked.Add(-1)
		select {
		case <-b.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, time.Now())
	if b.fail != nil {
		if err := b.fail(len(b.calls)); err != nil {
			return err
		}
	}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		service, _ := rss.At(i).Resource().Attributes().Get("service.name")
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				s := spans.At(k)
				b.spans[s.SpanID()] = append(b.spans[s.SpanID()], receivedSpan{
					Service: service.AsString(), Name: s.Name(), Attrs: s.Attributes().AsRaw(),
				})
			}
		}
	}
	return nil
}

func (b *backend) spanCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, s := range b.spans {
		n += len(s)
	}
	return n
}

func (b *backend) callTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.calls...)
}

// received returns what the backend got, by span id.
func (b *backend) received() map[pcommon.SpanID][]receivedSpan {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[pcommon.SpanID][]receivedSpan, len(b.spans))
	for k, v := range b.spans {
		out[k] = append([]receivedSpan(nil), v...)
	}
	return out
}

// retryAfterError is a consumer error that asks for a delay: the receiver
// answers it as overload (HTTP 429, gRPC ResourceExhausted with RetryInfo).
type retryAfterError time.Duration

func (e retryAfterError) Error() string             { return "busy" }
func (e retryAfterError) RetryAfter() time.Duration { return time.Duration(e) }

var errBackend = errors.New("backend trouble")

// traces returns request number req of spans spans, with ids that no other
// request number shares. invalid of them have an all-zero span id.
func traces(req, spans, invalid int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "orders")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("lagscope/forward_test")
	for i := range spans {
		s := ss.Spans().AppendEmpty()
		var tid pcommon.TraceID
		binary.BigEndian.PutUint64(tid[:], uint64(req)+1)
		s.SetTraceID(tid)
		if i >= invalid {
			s.SetSpanID(spanID(req, i))
		}
		s.SetName("append OrderPlaced")
		s.SetKind(ptrace.SpanKindProducer)
		s.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + i))
		s.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_000_001_000 + i))
		s.Attributes().PutStr("messaging.message.id", "evt-"+string(rune('a'+i%26)))
		s.Attributes().PutInt("event.position", int64(req*1000+i))
	}
	return td
}

func spanID(req, i int) pcommon.SpanID {
	var id pcommon.SpanID
	binary.BigEndian.PutUint32(id[:4], uint32(req)+1)
	binary.BigEndian.PutUint32(id[4:], uint32(i)+1)
	return id
}

// encode returns td as an export request body in enc.
func encode(t testing.TB, td ptrace.Traces, enc Encoding) []byte {
	t.Helper()
	req := ptraceotlp.NewExportRequestFromTraces(td)
	var b []byte
	var err error
	if enc == JSON {
		b, err = req.MarshalJSON()
	} else {
		b, err = req.MarshalProto()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig is a config to endpoint over protocol with fast retries.
func testConfig(protocol, endpoint string) Config {
	cfg := DefaultConfig()
	cfg.Endpoint, cfg.Protocol = endpoint, protocol
	cfg.Timeout = 2 * time.Second
	cfg.Retry = RetryConfig{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxElapsedTime: 5 * time.Second}
	return cfg
}

// newForwarder builds and starts a Forwarder whose Shutdown the test's end
// makes sure of.
func newForwarder(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	f, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = f.Shutdown(ctx)
	})
	return f
}

// counts are a forwarder's span counters.
type counts struct {
	Sent    int
	Dropped map[string]int // nonzero reasons only
}

func (f *Forwarder) counts() counts {
	c := counts{Sent: int(testutil.ToFloat64(f.metrics.sent)), Dropped: map[string]int{}}
	for r := range numReasons {
		if n := int(testutil.ToFloat64(f.metrics.dropped[r])); n != 0 {
			c.Dropped[r.String()] = n
		}
	}
	return c
}

// shutdown shuts f down within d and fails the test on error.
func shutdown(t *testing.T, f *Forwarder, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := f.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// freeAddr returns a loopback address nothing listens on (connection
// refused), which a backend can bind later.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var protocols = []string{ProtocolGRPC, ProtocolHTTP}

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// queueLen returns how many requests are queued, not yet taken.
func (f *Forwarder) queueLen() int {
	f.queue.mu.Lock()
	defer f.queue.mu.Unlock()
	return len(f.queue.items) - f.queue.head
}
