package collector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Regression tests for issue 10: hostile requests must not crash the
// receiver, exhaust its memory or starve other clients.

// waitFor polls cond until it holds or waitTimeout passes.
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

func TestPanicInConsumerIsRecovered(t *testing.T) {
	var calls atomic.Int32
	c := consumerFunc(func(context.Context, ptrace.Traces) error {
		if calls.Add(1)%2 == 1 {
			panic("consumer bug")
		}
		return nil
	})
	var logs syncBuffer
	r, err := New(testConfig(), c, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown(context.Background())
	body := mustMarshal(t, newTraces(1, 2))

	// gRPC: before the fix the panic killed the process.
	if _, err := exportGRPC(t, r, body); status.Code(err) != codes.Internal {
		t.Errorf("gRPC export that panics: %v, want Internal", err)
	}
	if _, err := exportGRPC(t, r, body); err != nil {
		t.Errorf("gRPC export after a panic: %v", err)
	}
	// HTTP.
	if got, err := postTraces(r, "application/x-protobuf", "", body); err != nil || got.code != http.StatusInternalServerError {
		t.Errorf("HTTP export that panics: %v, status %d; want 500", err, got.code)
	}
	if got, err := postTraces(r, "application/x-protobuf", "", body); err != nil || got.code != http.StatusOK {
		t.Errorf("HTTP export after a panic: %v, status %d; want 200", err, got.code)
	}
	for _, tr := range []transport{transportGRPC, transportHTTP} {
		if n := testutil.ToFloat64(r.core.metrics.rejectedRequests[tr][reasonPanic]); n != 1 {
			t.Errorf("rejected_requests_total{transport=%s,reason=panic} = %v, want 1", tr, n)
		}
	}
	// A gRPC stream's own reservation goes when gRPC has ended the stream,
	// which may be just after the client saw its status.
	waitFor(t, "the budget of the panicked requests to be released", func() bool { return r.core.limiter.inUse() == 0 })
	for _, tr := range []string{"grpc", "http"} {
		if !strings.Contains(logs.String(), "level=ERROR msg=\"panic handling an OTLP request\" transport="+tr) {
			t.Errorf("no panic logged at Error for transport %s; log:\n%s", tr, logs.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rawHTTP opens a connection to r's HTTP server and writes head (a request
// line and headers, without the blank line) and then the blank line.
func rawHTTP(t *testing.T, r *Receiver, head string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", r.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn
}

func stalledPost(contentLength int) string {
	return "POST " + tracesPath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: " + strconv.Itoa(contentLength)
}

func TestHTTPDeclaredLengthReservesNothingUntilItArrives(t *testing.T) {
	cfg := DefaultConfig() // 16 MiB requests, 256 MiB in flight: 16 declared bodies took it all
	cfg.GRPCEndpoint, cfg.HTTPEndpoint = "", "127.0.0.1:0"
	r, _ := startReceiver(t, cfg, &recorder{})

	const n = 20
	for range n {
		rawHTTP(t, r, stalledPost(int(cfg.MaxRequestBytes)))
	}
	// Every stalled request has reserved its first step, no more.
	waitFor(t, "the stalled requests to reserve", func() bool { return r.core.limiter.inUse() == n*minReadStep })
	if got, err := postTraces(r, "application/x-protobuf", "", mustMarshal(t, newTraces(1, 2))); err != nil || got.code != http.StatusOK {
		t.Fatalf("normal request beside %d stalled 16 MiB bodies: %v, status %d; want 200", n, err, got.code)
	}
}

func TestHTTPStalledBodyIsCut(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = 200 * time.Millisecond
	r, _ := startReceiver(t, cfg, &recorder{})
	conn := rawHTTP(t, r, stalledPost(1000))
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stalled body answered %d, want 400", resp.StatusCode)
	}
	waitFor(t, "the budget to be released", func() bool { return r.core.limiter.inUse() == 0 })
}

func TestHTTPOverloadAnsweredBeforeBody(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInflightBytes = cfg.MaxRequestBytes
	c := newBlockingConsumer()
	defer close(c.release)
	r, _ := startReceiver(t, cfg, c)

	// Hold the whole budget with a request in the consumer.
	// Its body and decoded estimate leave less than minReadStep free.
	body := padProto(t, mustMarshal(t, newTraces(1, 1)), 490<<10)
	go func() { _, _ = postTraces(r, "application/x-protobuf", "", body) }()
	c.waitEntered(t)

	// A request that sends only its headers learns 429 at once.
	conn := rawHTTP(t, r, stalledPost(500<<10))
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Errorf("answer = %d, Retry-After %q, close %v; want 429 with Retry-After and Connection: close",
			resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
	}
}

func TestMaxConnections(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnections = 2
	r, _ := startReceiver(t, cfg, &recorder{})
	for range cfg.MaxConnections {
		rawHTTP(t, r, stalledPost(1000))
	}
	// The third connection is not served until one of the two closes.
	conn := rawHTTP(t, r, "GET "+tracesPath+" HTTP/1.1\r\nHost: x")
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		t.Fatal("a connection past MaxConnections was served")
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = 200 * time.Millisecond
	r, _ := startReceiver(t, cfg, &recorder{})

	// HTTP: a keep-alive connection after its request.
	body := mustMarshal(t, newTraces(1, 1))
	conn := rawHTTP(t, r, stalledPost(len(body)))
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("request: %v, %v", err, resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	// gRPC: a connection that never opens a stream.
	g := dialHTTP2(t, r.GRPCAddr().String())

	for name, c := range map[string]io.Reader{"HTTP": br, "gRPC": g.closed} {
		_ = map[string]net.Conn{"HTTP": conn, "gRPC": g.Conn}[name].SetReadDeadline(time.Now().Add(waitTimeout))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("idle %s connection: %v, want it closed by the server", name, err)
		}
	}
}

// http2Conn is a minimal HTTP/2 client, to open gRPC streams that a real
// client never would: headers only, or a message that stops halfway.
type http2Conn struct {
	net.Conn
	next   uint32    // the next stream id
	closed io.Reader // what the server sends, read to EOF
}

func dialHTTP2(t *testing.T, addr string) *http2Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	pr, pw := io.Pipe()
	c := &http2Conn{Conn: conn, next: 1, closed: pr}
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.frame(t, 0x4, 0, 0, nil)   // SETTINGS, empty
	c.frame(t, 0x4, 0x1, 0, nil) // SETTINGS ack of the server's, sent blind
	// Read and drop what the server sends, so that its writes never block;
	// closed reports the end.
	go func() {
		_, err := io.Copy(io.Discard, conn)
		pw.CloseWithError(err)
	}()
	return c
}

func (c *http2Conn) frame(t *testing.T, typ, flags byte, stream uint32, payload []byte) {
	t.Helper()
	var h [9]byte
	h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream)
	if _, err := c.Write(append(h[:], payload...)); err != nil {
		t.Fatalf("write HTTP/2 frame: %v", err)
	}
}

// openExport opens a stream of the trace service's Export and returns its id.
func (c *http2Conn) openExport(t *testing.T) uint32 {
	t.Helper()
	var block []byte
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", traceExportPath}, {":authority", "x"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		// Literal header field without indexing, new name (RFC 7541 6.2.2).
		block = append(block, 0)
		block = append(block, byte(len(h[0])))
		block = append(block, h[0]...)
		block = append(block, byte(len(h[1])))
		block = append(block, h[1]...)
	}
	id := c.next
	c.next += 2
	c.frame(t, 0x1, 0x4, id, block) // HEADERS, END_HEADERS
	return id
}

// sendPartial sends the gRPC message header of a declared-byte message and
// the first n bytes of it.
func (c *http2Conn) sendPartial(t *testing.T, id uint32, declared, n int) {
	t.Helper()
	msg := make([]byte, 5+n)
	binary.BigEndian.PutUint32(msg[1:], uint32(declared))
	for len(msg) > 0 {
		chunk := msg[:min(len(msg), 16<<10)]
		c.frame(t, 0x0, 0, id, chunk) // DATA
		msg = msg[len(chunk):]
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC() // sync.Pool keeps its victims for one cycle more
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func TestGRPCStalledStreamsAreBoundedAndCut(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInflightBytes = 64 << 20
	cfg.MaxConcurrentStreams = 16
	// Long enough that no stream is cut before the last one opens: opening
	// 2,200 streams took over a second under -race on two busy cores.
	cfg.ReadTimeout = 5 * time.Second
	r, _ := startReceiver(t, cfg, &recorder{})
	addr := r.GRPCAddr().String()
	goroutines, heap := runtime.NumGoroutine(), heapInUse()

	// 200 streams stalled halfway through a 1 MiB message (8 per
	// connection, within the connection's window), and 2000 header-only
	// streams on 50 connections, of which MaxConcurrentStreams each open.
	const midConns, midPer, midBytes = 25, 8, 100 << 10
	for range midConns {
		c := dialHTTP2(t, addr)
		for range midPer {
			c.sendPartial(t, c.openExport(t), int(cfg.MaxRequestBytes), midBytes)
		}
	}
	const hdrConns, hdrPer = 50, 40
	for range hdrConns {
		c := dialHTTP2(t, addr)
		for range hdrPer {
			c.openExport(t)
		}
	}
	admitted := midConns*midPer + hdrConns*cfg.MaxConcurrentStreams
	waitFor(t, "the streams to open", func() bool {
		return r.core.limiter.inUse() >= int64(admitted)*streamCost
	})
	gotG, gotHeap := runtime.NumGoroutine()-goroutines, int64(heapInUse())-int64(heap)
	t.Logf("%d streams open: %d goroutines, %d KiB heap more than before", admitted, gotG, gotHeap>>10)
	// A stream costs its handler goroutine, a connection a few more
	// (ours included): the header-only streams past the per-connection
	// cap cost nothing.
	if maxG := admitted + 8*(midConns+hdrConns); gotG > maxG {
		t.Errorf("%d goroutines for %d admitted streams, want at most %d", gotG, admitted, maxG)
	}
	if maxHeap := int64(midConns*midPer*midBytes) + int64(admitted)*streamCost + 32<<20; gotHeap > maxHeap {
		t.Errorf("heap grew by %d MiB, want under %d MiB", gotHeap>>20, maxHeap>>20)
	}

	// A normal client is served meanwhile.
	if _, err := exportGRPC(t, r, mustMarshal(t, newTraces(1, 2))); err != nil {
		t.Fatalf("normal export beside stalled streams: %v", err)
	}
	// The receive deadline cuts every stalled stream and frees what it held.
	waitFor(t, "the stalled streams to be cut", func() bool { return r.core.limiter.inUse() == 0 })
	waitFor(t, "the streams' goroutines to end", func() bool {
		return runtime.NumGoroutine() <= goroutines+4*(midConns+hdrConns)
	})
	if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportGRPC][reasonDecodeError]); got < float64(admitted) {
		t.Errorf("rejected_requests_total{transport=grpc,reason=decode_error} = %v, want at least %d cut streams", got, admitted)
	}
	if grown := int64(heapInUse()) - int64(heap); grown > 16<<20 {
		t.Errorf("heap after the streams were cut is %d MiB above the start, want under 16", grown>>20)
	}
}

func TestShutdownCutsStalledRequestsAndStopsAccepting(t *testing.T) {
	cfg := testConfig()
	cfg.ReadTimeout = time.Minute // longer than the test: Shutdown must cut them
	r, err := New(cfg, &recorder{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) }) // if the test fails first
	httpAddr, grpcAddr := r.HTTPAddr().String(), r.GRPCAddr().String()
	rawHTTP(t, r, stalledPost(1000))
	g := dialHTTP2(t, grpcAddr)
	g.sendPartial(t, g.openExport(t), 1000, 10)
	// The HTTP body reserves what it declares, 1000 bytes and one for EOF.
	waitFor(t, "both stalled requests to reserve", func() bool { return r.core.limiter.inUse() == 1001+streamCost })

	const budget = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.Shutdown(ctx) }()

	// Both listeners close as Shutdown begins, while it waits for the
	// stalled requests.
	waitFor(t, "both listeners to refuse connections", func() bool {
		for _, addr := range []string{httpAddr, grpcAddr} {
			if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				c.Close()
				return false
			}
		}
		return true
	})
	if elapsed := time.Since(start); elapsed >= budget {
		t.Errorf("listeners still accepting %v after Shutdown began", elapsed)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
		if elapsed := time.Since(start); elapsed > budget+time.Second {
			t.Errorf("Shutdown took %v with a %v budget", elapsed, budget)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not return")
	}
}

// linkFlood returns an encoded request of one span holding n empty links:
// two bytes each, some hundred bytes each once decoded by pdata.
func linkFlood(n int) []byte {
	span := bytes.Repeat(protowire.AppendBytes(protowire.AppendTag(nil, spanLinks, protowire.BytesType), nil), n)
	ss := protowire.AppendBytes(protowire.AppendTag(nil, scopeSpansSpans, protowire.BytesType), span)
	rs := protowire.AppendBytes(protowire.AppendTag(nil, resourceSpansScopeSpans, protowire.BytesType), ss)
	return protowire.AppendBytes(protowire.AppendTag(nil, exportTraceServiceRequestResourceSpans, protowire.BytesType), rs)
}

// deepJSON returns an OTLP/JSON request whose one attribute value nests
// depth arrays.
func deepJSON(depth int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":`)
	b.WriteString(strings.Repeat(`{"arrayValue":{"values":[`, depth))
	b.WriteString(strings.Repeat(`]}}`, depth))
	b.WriteString(`}]}}]}`)
	return b.Bytes()
}

// totalAlloc returns the bytes allocated while f runs, client included.
func totalAlloc(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHostileRequestsRefusedCheaply(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GRPCEndpoint, cfg.HTTPEndpoint = "127.0.0.1:0", "127.0.0.1:0"
	r, _ := startReceiver(t, cfg, &recorder{})
	links := linkFlood(1_000_000) // 2 MB, 8.7 KB gzipped; pdata made 696 MiB of it
	deep := deepJSON(100_000)     // 2.5 MB; the 599k levels made 960 MiB

	tests := []struct {
		name, contentType string
		body              []byte
		grpc              bool
		maxAlloc          uint64
	}{
		{"1M links gzip", "application/x-protobuf", gzipped(t, links), false, 24 << 20},
		{"1M links gRPC", "", links, true, 24 << 20},
		{"deep JSON gzip", "application/json", gzipped(t, deep), false, 24 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var code int
			var grpcErr error
			alloc := totalAlloc(func() {
				if tt.grpc {
					_, grpcErr = exportGRPC(t, r, tt.body)
					return
				}
				got, err := postTraces(r, tt.contentType, "gzip", tt.body)
				if err != nil {
					t.Fatal(err)
				}
				code = got.code
			})
			t.Logf("refusing it allocated %d KiB, client included", alloc>>10)
			if tt.grpc {
				if status.Code(grpcErr) != codes.ResourceExhausted {
					t.Errorf("gRPC export = %v, want ResourceExhausted", grpcErr)
				}
			} else if code != http.StatusRequestEntityTooLarge {
				t.Errorf("status = %d, want 413", code)
			}
			if alloc > tt.maxAlloc {
				t.Errorf("refusing it allocated %d MiB, want under %d MiB", alloc>>20, tt.maxAlloc>>20)
			}
		})
	}
}

func TestConcurrentLargeRequestsKeepHeapBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("heap figures under the race detector say nothing")
	}
	cfg := DefaultConfig()
	cfg.GRPCEndpoint, cfg.HTTPEndpoint = "", "127.0.0.1:0"
	r, _ := startReceiver(t, cfg, consumerFunc(func(context.Context, ptrace.Traces) error { return nil }))
	body := mustMarshal(t, newTraces(866, 100)) // 14.5 MB, as in the issue
	t.Logf("request of %d bytes", len(body))
	base := heapInUse()

	var peak atomic.Uint64
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	})
	const clients = 24
	codes := make([]int, clients)
	var sending sync.WaitGroup
	for i := range clients {
		sending.Go(func() {
			got, err := postTraces(r, "application/x-protobuf", "", body)
			if err != nil {
				t.Error(err)
			}
			codes[i] = got.code
		})
	}
	sending.Wait()
	close(stop)
	sampling.Wait()

	ok := 0
	for _, c := range codes {
		if c == http.StatusOK {
			ok++
		} else if c != http.StatusTooManyRequests {
			t.Errorf("status %d, want 200 or 429", c)
		}
	}
	grown := int64(peak.Load()) - int64(base)
	status, _ := os.ReadFile("/proc/self/status")
	_, hwm, _ := strings.Cut(string(status), "VmHWM:")
	hwm, _, _ = strings.Cut(hwm, "\n")
	t.Logf("%d of %d accepted; heap peaked %d MiB above the start; peak RSS of the test process %s", ok, clients, grown>>20, strings.TrimSpace(hwm))
	if ok == 0 {
		t.Error("no request accepted")
	}
	// The issue measured 2.76 GiB RSS. The clients' buffers are in this heap too.
	if grown > 400<<20 {
		t.Errorf("heap peaked %d MiB above the start, want under 400 MiB", grown>>20)
	}
}

func TestDecodeLimits(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpansPerRequest, cfg.MaxLinksPerRequest, cfg.MaxEventsPerRequest = 10, 10, 10
	cfg.MaxAttributesPerRequest, cfg.MaxJSONDepth = 20, 16
	r, _ := startReceiver(t, cfg, Discard)

	withSpans := func(n int, each func(ptrace.Span)) ptrace.Traces {
		td := ptrace.NewTraces()
		spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
		for i := range n {
			s := spans.AppendEmpty()
			s.SetTraceID([16]byte{1})
			s.SetSpanID([8]byte{byte(i + 1)})
			each(s)
		}
		return td
	}
	nested := func(depth int) ptrace.Traces {
		return withSpans(1, func(s ptrace.Span) {
			v := s.Attributes().PutEmptySlice("a")
			for range depth {
				v = v.AppendEmpty().SetEmptySlice()
			}
		})
	}
	tests := []struct {
		name    string
		td      ptrace.Traces
		wantMsg string // "" when accepted
	}{
		{"at every limit", withSpans(10, func(s ptrace.Span) {
			s.Events().AppendEmpty()
			s.Links().AppendEmpty()
			s.Attributes().PutStr("a", "b")
		}), ""},
		{"spans", withSpans(11, func(ptrace.Span) {}), "otlp.max_spans_per_request"},
		{"links", withSpans(1, func(s ptrace.Span) {
			for range 11 {
				s.Links().AppendEmpty()
			}
		}), "otlp.max_links_per_request"},
		{"events", withSpans(2, func(s ptrace.Span) {
			for range 6 {
				s.Events().AppendEmpty()
			}
		}), "otlp.max_events_per_request"},
		{"attributes of events and links together", withSpans(1, func(s ptrace.Span) {
			for i := range 7 {
				s.Attributes().PutInt(strconv.Itoa(i), 1)
				s.Events().AppendEmpty().Attributes().PutInt("e", 1)
				s.Links().AppendEmpty().Attributes().PutInt("l", 1)
			}
		}), "otlp.max_attributes_per_request"},
		{"array elements", withSpans(1, func(s ptrace.Span) {
			a := s.Attributes().PutEmptySlice("a")
			for range 20 {
				a.AppendEmpty()
			}
		}), "otlp.max_attributes_per_request"},
		// JSON: request, resourceSpans, resource span, scopeSpans, scope span,
		// spans, span, attributes, key-value, value (10), then 3 per level.
		{"nesting within the depth", nested(1), ""},
		{"nesting", nested(8), "otlp.max_json_depth"},
	}
	for _, tt := range tests {
		for _, enc := range []string{"application/x-protobuf", "application/json"} {
			t.Run(tt.name+" "+enc, func(t *testing.T) {
				body := mustMarshal(t, tt.td)
				if enc == "application/json" {
					body = mustMarshalJSON(t, tt.td)
				}
				got, err := postTraces(r, enc, "", body)
				if err != nil {
					t.Fatal(err)
				}
				if tt.wantMsg == "" {
					if got.code != http.StatusOK {
						t.Errorf("status %d (%s), want 200", got.code, decodeStatus(t, enc, got.body).GetMessage())
					}
					return
				}
				st := decodeStatus(t, enc, got.body)
				if got.code != http.StatusRequestEntityTooLarge || codes.Code(st.GetCode()) != codes.ResourceExhausted {
					t.Errorf("status %d, body code %v; want 413, ResourceExhausted", got.code, codes.Code(st.GetCode()))
				}
				if !strings.Contains(st.GetMessage(), tt.wantMsg) {
					t.Errorf("message %q does not name %s", st.GetMessage(), tt.wantMsg)
				}
			})
		}
		t.Run(tt.name+" gRPC", func(t *testing.T) {
			_, err := exportGRPC(t, r, mustMarshal(t, tt.td))
			if wantCode := map[bool]codes.Code{true: codes.OK, false: codes.ResourceExhausted}[tt.wantMsg == ""]; status.Code(err) != wantCode {
				t.Errorf("gRPC export = %v, want %v", err, wantCode)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("gRPC error %q does not name %s", err, tt.wantMsg)
			}
		})
	}
	waitFor(t, "the budget to be released", func() bool { return r.core.limiter.inUse() == 0 })
}
