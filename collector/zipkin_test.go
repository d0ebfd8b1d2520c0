package collector

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"github.com/openzipkin/zipkin-go"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	zipkinhttp "github.com/openzipkin/zipkin-go/reporter/http"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// zspan is what the Zipkin tests compare of a span that reached the consumer.
type zspan struct {
	Service, Name, Kind string
	Trace, ID, Parent   string
	Attrs               map[string]any
	Events              []string
}

// spanRecorder is a Consumer that keeps the ids, kind and attributes of
// every span it receives.
type spanRecorder struct {
	mu    sync.Mutex
	spans []zspan
}

func (c *spanRecorder) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		var service string
		if v, ok := rss.At(i).Resource().Attributes().Get("service.name"); ok {
			service = v.AsString()
		}
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				s := spans.At(k)
				z := zspan{
					Service: service, Name: s.Name(), Kind: s.Kind().String(),
					Trace: s.TraceID().String(), ID: s.SpanID().String(), Parent: s.ParentSpanID().String(),
					Attrs: s.Attributes().AsRaw(),
				}
				for e := range s.Events().Len() {
					z.Events = append(z.Events, s.Events().At(e).Name())
				}
				c.spans = append(c.spans, z)
			}
		}
	}
	return nil
}

func (c *spanRecorder) got() []zspan {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]zspan(nil), c.spans...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *spanRecorder) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.spans)
}

// startZipkin starts a receiver (OTLP on loopback) and its Zipkin
// transport on an ephemeral port, both shut down when the test ends.
func startZipkin(t testing.TB, cfg Config, zcfg ZipkinConfig, next Consumer) (*Zipkin, *prometheus.Registry) {
	t.Helper()
	r, reg := startReceiver(t, cfg, next)
	if zcfg.Endpoint == "" {
		zcfg.Endpoint = "127.0.0.1:0"
	}
	z, err := newZipkin(zcfg, r, nil, testReloadInterval)
	if err != nil {
		t.Fatalf("NewZipkin: %v", err)
	}
	if err := z.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := z.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return z, reg
}

func zipkinURL(z *Zipkin) string { return "http://" + z.Addr().String() + ZipkinPath }

func postZipkin(t testing.TB, z *Zipkin, method, contentType, contentEncoding string, body []byte) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, zipkinURL(z), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if contentEncoding != "" {
		req.Header.Set("Content-Encoding", contentEncoding)
	}
	got, err := doHTTP(req)
	if err != nil {
		t.Fatalf("POST %s: %v", ZipkinPath, err)
	}
	return got
}

// TestZipkinGoTracerDeliversSpans sends spans made by zipkin-go's own
// tracer through its HTTP reporter, in both of its encodings: an RPC with
// shared spans (the server side reuses the client's span id, as zipkin-go
// does by default), 64-bit trace ids, each kind, tags and annotations.
func TestZipkinGoTracerDeliversSpans(t *testing.T) {
	for _, tc := range []struct {
		name       string
		serializer []zipkinhttp.ReporterOption
	}{
		{"json", nil},
		{"proto", []zipkinhttp.ReporterOption{zipkinhttp.Serializer(zipkin_proto3.SpanSerializer{})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &spanRecorder{}
			z, reg := startZipkin(t, testConfig(), ZipkinConfig{}, rec)
			rep := zipkinhttp.NewReporter(zipkinURL(z), append(tc.serializer, zipkinhttp.BatchInterval(time.Hour))...)
			newTracer := func(service string) *zipkin.Tracer {
				ep, err := zipkin.NewEndpoint(service, "127.0.0.1:8080")
				if err != nil {
					t.Fatal(err)
				}
				tr, err := zipkin.NewTracer(rep, zipkin.WithLocalEndpoint(ep), zipkin.WithTraceID128Bit(false))
				if err != nil {
					t.Fatal(err)
				}
				return tr
			}
			api, projector := newTracer("orders-api"), newTracer("projector")

			root := api.StartSpan("post /orders", zipkin.Kind(zipkinmodel.Server))
			client := api.StartSpan("get /stock", zipkin.Kind(zipkinmodel.Client), zipkin.Parent(root.Context()))
			server := projector.StartSpan("get /stock", zipkin.Kind(zipkinmodel.Server), zipkin.Parent(client.Context()))
			child := projector.StartSpan("read stock", zipkin.Parent(server.Context()))
			child.Finish()
			server.Finish()
			client.Finish()
			produce := api.StartSpan("orders publish", zipkin.Kind(zipkinmodel.Producer), zipkin.Parent(root.Context()))
			produce.Tag("messaging.system", "kafka")
			produce.Tag("cqrs.event.type", "OrderPlaced")
			produce.Annotate(time.Now(), "appended")
			produce.Finish()
			consume := projector.StartSpan("orders process", zipkin.Kind(zipkinmodel.Consumer), zipkin.Parent(produce.Context()))
			consume.Finish()
			root.Finish()
			if err := rep.Close(); err != nil { // sends the batch
				t.Fatalf("reporter: %v", err)
			}

			got := rec.got()
			if len(got) != 6 {
				t.Fatalf("got %d spans, want 6: %+v", len(got), got)
			}
			trace := fmt.Sprintf("%032x", root.Context().TraceID.Low)
			id := func(i zipkinmodel.ID) string { return fmt.Sprintf("%016x", uint64(i)) }
			if root.Context().TraceID.High != 0 {
				t.Fatalf("zipkin-go sent a 128-bit trace id: %v", root.Context().TraceID)
			}
			if server.Context().ID != client.Context().ID {
				t.Fatal("zipkin-go did not share the client's span id")
			}
			serverID := id(sharedSpanID(root.Context().TraceID, client.Context().ID))
			ep := map[string]any{"net.host.port": int64(8080), "network.local.address": "127.0.0.1"}
			with := func(kv ...any) map[string]any {
				m := map[string]any{}
				for k, v := range ep {
					m[k] = v
				}
				for i := 0; i < len(kv); i += 2 {
					m[kv[i].(string)] = kv[i+1]
				}
				return m
			}
			want := []zspan{
				{Service: "orders-api", Name: "get /stock", Kind: "Client", Trace: trace, ID: id(client.Context().ID), Parent: id(root.Context().ID), Attrs: with()},
				{Service: "projector", Name: "get /stock", Kind: "Server", Trace: trace, ID: serverID, Parent: id(client.Context().ID), Attrs: with()},
				{Service: "orders-api", Name: "orders publish", Kind: "Producer", Trace: trace, ID: id(produce.Context().ID), Parent: id(root.Context().ID),
					Attrs: with("messaging.system", "kafka", "cqrs.event.type", "OrderPlaced"), Events: []string{"appended"}},
				{Service: "projector", Name: "orders process", Kind: "Consumer", Trace: trace, ID: id(consume.Context().ID), Parent: id(produce.Context().ID), Attrs: with()},
				{Service: "orders-api", Name: "post /orders", Kind: "Server", Trace: trace, ID: id(root.Context().ID), Parent: "", Attrs: with()},
				// The child of the shared server span hangs off the server span, not the client's.
				{Service: "projector", Name: "read stock", Kind: "Unspecified", Trace: trace, ID: id(child.Context().ID), Parent: serverID, Attrs: with()},
			}
			// Same-name spans in a stable order.
			sort.SliceStable(got, func(i, j int) bool { return got[i].Name+got[i].Kind < got[j].Name+got[j].Kind })
			sort.SliceStable(want, func(i, j int) bool { return want[i].Name+want[i].Kind < want[j].Name+want[j].Kind })
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("spans (-want +got):\n%s", diff)
			}
			if v := counterValue(t, reg, "lagscope_received_spans_total", "transport", "zipkin"); v != 6 {
				t.Errorf("lagscope_received_spans_total{transport=zipkin} = %v, want 6", v)
			}
		})
	}
}

// counterValue returns the value of the registered counter name whose
// labels include every pair of kv, or fails the test if there is none.
func counterValue(t testing.TB, reg *prometheus.Registry, name string, kv ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(kv); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == kv[i] && lp.GetValue() == kv[i+1])
				}
				if !found {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, kv)
	return 0
}

// zipkinJSON is a hand-built Zipkin v2 JSON list: a 64-bit trace id as
// zipkin-js sends it, every kind, tags, an annotation and the error tag.
const zipkinJSON = `[
 {"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","name":"get /api","kind":"SERVER","timestamp":1700000000000000,"duration":2000,
  "localEndpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"},"tags":{"http.method":"GET","http.path":"/api"}},
 {"traceId":"463ac35c9f6413ad","parentId":"a2fb4a1d1a96d312","id":"b2fb4a1d1a96d313","name":"send","kind":"PRODUCER","timestamp":1700000000000100,"duration":100,
  "localEndpoint":{"serviceName":"frontend"},"annotations":[{"timestamp":1700000000000150,"value":"appended"}],"tags":{"messaging.system":"kafka","error":"boom"}},
 {"traceId":"463ac35c9f6413ad","parentId":"b2fb4a1d1a96d313","id":"c2fb4a1d1a96d314","name":"receive","kind":"CONSUMER","timestamp":1700000000000300,"duration":100,
  "localEndpoint":{"serviceName":"backend"}},
 {"traceId":"463ac35c9f6413ad","parentId":"a2fb4a1d1a96d312","id":"d2fb4a1d1a96d315","name":"call","kind":"CLIENT","timestamp":1700000000000400,"duration":100,
  "localEndpoint":{"serviceName":"frontend"},"remoteEndpoint":{"serviceName":"db","port":5432}},
 {"traceId":"463ac35c9f6413ad","parentId":"a2fb4a1d1a96d312","id":"e2fb4a1d1a96d316","name":"local","timestamp":1700000000000500,"duration":10,
  "localEndpoint":{"serviceName":"frontend"}}
]`

// zipkinProto is zipkinJSON as a protobuf ListOfSpans.
func zipkinProto(t testing.TB) []byte {
	t.Helper()
	var spans []*zipkinmodel.SpanModel
	if err := json.Unmarshal([]byte(zipkinJSON), &spans); err != nil {
		t.Fatal(err)
	}
	b, err := zipkin_proto3.SpanSerializer{}.Serialize(spans)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestZipkinRequests(t *testing.T) {
	wantKinds := []string{"Client", "Server", "Unspecified", "Consumer", "Producer"} // by name: call, get /api, local, receive, send
	tests := []struct {
		name, method, contentType, encoding string
		body                                func(t testing.TB) []byte
		wantCode                            int
		wantSpans                           int
		wantReason                          string // of lagscope_rejected_requests_total{transport="zipkin"}
	}{
		{name: "json", contentType: "application/json", body: func(testing.TB) []byte { return []byte(zipkinJSON) }, wantCode: 202, wantSpans: 5},
		{name: "json with charset", contentType: "application/json; charset=utf-8", body: func(testing.TB) []byte { return []byte(zipkinJSON) }, wantCode: 202, wantSpans: 5},
		{name: "no content type is json", body: func(testing.TB) []byte { return []byte(zipkinJSON) }, wantCode: 202, wantSpans: 5},
		{name: "json gzip", contentType: "application/json", encoding: "gzip", body: func(t testing.TB) []byte { return gzipped(t, []byte(zipkinJSON)) }, wantCode: 202, wantSpans: 5},
		{name: "proto", contentType: "application/x-protobuf", body: zipkinProto, wantCode: 202, wantSpans: 5},
		{name: "proto gzip", contentType: "application/x-protobuf", encoding: "gzip", body: func(t testing.TB) []byte { return gzipped(t, zipkinProto(t)) }, wantCode: 202, wantSpans: 5},
		{name: "empty list", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`[]`) }, wantCode: 202},
		{name: "null spans are skipped", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`[null,null]`) }, wantCode: 202},
		{name: "GET", method: http.MethodGet, contentType: "application/json", body: func(testing.TB) []byte { return nil }, wantCode: 405, wantReason: "method_not_allowed"},
		{name: "text/plain", contentType: "text/plain", body: func(testing.TB) []byte { return []byte(zipkinJSON) }, wantCode: 415, wantReason: "unsupported_media_type"},
		{name: "deflate", contentType: "application/json", encoding: "br", body: func(testing.TB) []byte { return []byte(zipkinJSON) }, wantCode: 415, wantReason: "unsupported_media_type"},
		{name: "not json", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`{"traceId":`) }, wantCode: 400, wantReason: "decode_error"},
		{name: "object, not list", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`{"traceId":"1","id":"2"}`) }, wantCode: 400, wantReason: "decode_error"},
		{name: "span without id", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`[{"traceId":"463ac35c9f6413ad","name":"x"}]`) }, wantCode: 400, wantReason: "decode_error"},
		{name: "bad hex id", contentType: "application/json", body: func(testing.TB) []byte { return []byte(`[{"traceId":"zz","id":"a2fb4a1d1a96d312"}]`) }, wantCode: 400, wantReason: "decode_error"},
		{name: "tag of the wrong type", contentType: "application/json", body: func(testing.TB) []byte {
			return []byte(`[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","tags":{"a":{"b":1}}}]`)
		}, wantCode: 400, wantReason: "decode_error"},
		{name: "not proto", contentType: "application/x-protobuf", body: func(testing.TB) []byte { return []byte{0x0a, 0xff, 0xff} }, wantCode: 400, wantReason: "decode_error"},
		{name: "proto span with a short trace id", contentType: "application/x-protobuf", body: func(testing.TB) []byte { return []byte{0x0a, 0x04, 0x0a, 0x02, 0x01, 0x02} }, wantCode: 400, wantReason: "decode_error"},
		{name: "bad gzip", contentType: "application/json", encoding: "gzip", body: func(testing.TB) []byte { return []byte("not gzip") }, wantCode: 400, wantReason: "decode_error"},
		{name: "too many spans", contentType: "application/json", body: func(testing.TB) []byte {
			return []byte("[" + strings.Repeat(`{"id":"1"},`, 11) + `{"id":"1"}]`)
		}, wantCode: 413, wantReason: "too_large"},
		{name: "too many proto spans", contentType: "application/x-protobuf", body: func(testing.TB) []byte { return bytes.Repeat([]byte{0x0a, 0x00}, 11) }, wantCode: 413, wantReason: "too_large"},
		{name: "too many tags", contentType: "application/json", body: func(testing.TB) []byte {
			return []byte(`[{"id":"1","tags":{` + strings.Repeat(`"a":"b",`, 20) + `"c":"d"}}]`)
		}, wantCode: 413, wantReason: "too_large"},
		{name: "too many annotations", contentType: "application/json", body: func(testing.TB) []byte {
			return []byte(`[{"id":"1","annotations":[` + strings.Repeat(`{"value":"a"},`, 10) + `{"value":"b"}]}]`)
		}, wantCode: 413, wantReason: "too_large"},
		{name: "too deep", contentType: "application/json", body: func(testing.TB) []byte {
			return []byte(strings.Repeat("[", 100) + strings.Repeat("]", 100))
		}, wantCode: 413, wantReason: "too_large"},
		{name: "bomb", contentType: "application/json", encoding: "gzip", body: func(t testing.TB) []byte { return gzipBomb(t, 2) }, wantCode: 413, wantReason: "too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxSpansPerRequest, cfg.MaxEventsPerRequest, cfg.MaxAttributesPerRequest = 10, 10, 20
			rec := &spanRecorder{}
			z, reg := startZipkin(t, cfg, ZipkinConfig{}, rec)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			got := postZipkin(t, z, method, tc.contentType, tc.encoding, tc.body(t))
			if got.code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", got.code, got.body, tc.wantCode)
			}
			if tc.wantCode == 202 && len(got.body) != 0 {
				t.Errorf("body %q, want none", got.body)
			}
			if n := rec.count(); n != tc.wantSpans {
				t.Errorf("consumer got %d spans, want %d", n, tc.wantSpans)
			}
			if tc.wantSpans == 5 {
				spans := rec.got()
				var kinds []string
				for _, s := range spans {
					kinds = append(kinds, s.Kind)
					if s.Trace != "0000000000000000463ac35c9f6413ad" {
						t.Errorf("span %s: trace id %s, want the 64-bit id in the low half", s.Name, s.Trace)
					}
				}
				if diff := cmp.Diff(wantKinds, kinds); diff != "" {
					t.Errorf("kinds (-want +got):\n%s", diff)
				}
				if v := spans[4].Attrs["messaging.system"]; v != "kafka" {
					t.Errorf("send: messaging.system = %v, want kafka", v)
				}
				if v := spans[1].Attrs["http.path"]; v != "/api" {
					t.Errorf("get /api: http.path = %v, want /api", v)
				}
				if diff := cmp.Diff([]string{"appended"}, spans[4].Events); diff != "" {
					t.Errorf("send: events (-want +got):\n%s", diff)
				}
			}
			if tc.wantReason != "" {
				if v := counterValue(t, reg, "lagscope_rejected_requests_total", "transport", "zipkin", "reason", tc.wantReason); v != 1 {
					t.Errorf("lagscope_rejected_requests_total{reason=%q} = %v, want 1", tc.wantReason, v)
				}
			}
		})
	}
}

// TestZipkinInvalidIDsAreRejectedSpans: a zero trace id (Zipkin has no
// rule against it on the wire) is dropped as OTLP's are, and counted.
func TestZipkinInvalidIDsAreRejectedSpans(t *testing.T) {
	rec := &spanRecorder{}
	z, reg := startZipkin(t, testConfig(), ZipkinConfig{}, rec)
	body := `[{"traceId":"0000000000000000","id":"a2fb4a1d1a96d312","name":"zero"},{"traceId":"1","id":"2","name":"ok"}]`
	if got := postZipkin(t, z, http.MethodPost, "application/json", "", []byte(body)); got.code != 202 {
		t.Fatalf("status %d (%s), want 202", got.code, got.body)
	}
	if diff := cmp.Diff([]string{"ok"}, names(rec.got())); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	if v := counterValue(t, reg, "lagscope_rejected_spans_total", "reason", "invalid_trace_id"); v != 1 {
		t.Errorf("rejected invalid_trace_id = %v, want 1", v)
	}
}

func names(spans []zspan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// TestZipkinOverloadAndPanic: the consumer's back-pressure is a 429 with
// Retry-After, and a panic a 500 counted under panic, as over OTLP/HTTP.
func TestZipkinOverloadAndPanic(t *testing.T) {
	tests := []struct {
		name       string
		consume    func() error
		wantCode   int
		wantRetry  string
		wantReason string
	}{
		{"overloaded", func() error { return overloadError{after: 3 * time.Second} }, 429, "3", "overloaded"},
		{"panic", func() error { panic("boom") }, 500, "", "panic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := consumerFunc(func(context.Context, ptrace.Traces) error { return tc.consume() })
			z, reg := startZipkin(t, testConfig(), ZipkinConfig{}, next)
			got := postZipkin(t, z, http.MethodPost, "application/json", "", []byte(zipkinJSON))
			if got.code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", got.code, got.body, tc.wantCode)
			}
			if r := got.header.Get("Retry-After"); r != tc.wantRetry {
				t.Errorf("Retry-After %q, want %q", r, tc.wantRetry)
			}
			if v := counterValue(t, reg, "lagscope_rejected_requests_total", "transport", "zipkin", "reason", tc.wantReason); v != 1 {
				t.Errorf("lagscope_rejected_requests_total{reason=%q} = %v, want 1", tc.wantReason, v)
			}
		})
	}
}

// TestZipkinInflightBudget: a request that does not fit in what is left of
// the in-flight budget is refused as overload, with Retry-After.
func TestZipkinInflightBudget(t *testing.T) {
	big := []byte("[" + strings.Repeat(`{"traceId":"1","id":"2","tags":{"k":"v"}},`, 1500) + `{"traceId":"1","id":"2"}]`)
	cfg := testConfig()
	counts, rerr := scanZipkinJSON(big, cfg.decodeLimits())
	if rerr != nil {
		t.Fatal(rerr)
	}
	// Room for one such request (body and decoding), not two.
	est := counts.decodedSize(len(big))
	cfg.MaxInflightBytes = max(cfg.MaxRequestBytes, est+2*int64(len(big))+est/2)
	block := newBlockingConsumer()
	z, _ := startZipkin(t, cfg, ZipkinConfig{}, block)
	done := make(chan httpResult, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, zipkinURL(z), bytes.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		got, err := doHTTP(req)
		if err != nil {
			got.code = -1
		}
		done <- got
	}()
	block.waitEntered(t)
	got := postZipkin(t, z, http.MethodPost, "application/json", "", big)
	if got.code != 429 || got.header.Get("Retry-After") == "" {
		t.Errorf("second request: status %d, Retry-After %q; want 429 with Retry-After", got.code, got.header.Get("Retry-After"))
	}
	close(block.release)
	if first := <-done; first.code != 202 {
		t.Errorf("first request: status %d, want 202", first.code)
	}
}

// TestZipkinOverMutualTLS: zipkin.tls serves the endpoint over TLS and,
// with a client CA, refuses clients without a certificate from it.
func TestZipkinOverMutualTLS(t *testing.T) {
	clientCA := newTestCA(t, "client CA")
	p := newPKI(t, clientCA)
	rec := &spanRecorder{}
	z, _ := startZipkin(t, testConfig(), ZipkinConfig{TLS: p.cfg}, rec)
	cert := clientCA.Valid(t, 7, true)
	post := func(c *tls.Config) (int, error) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c, DisableKeepAlives: true}, Timeout: waitTimeout}
		resp, err := client.Post("https://"+z.Addr().String()+ZipkinPath, "application/json", strings.NewReader(zipkinJSON))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := post(p.clientTLS(&cert)); err != nil || code != 202 {
		t.Fatalf("with a client certificate: status %d, err %v; want 202", code, err)
	}
	if _, err := post(p.clientTLS(nil)); err == nil {
		t.Error("without a client certificate: the request went through")
	}
	if resp, err := (&http.Client{Timeout: waitTimeout}).Post(zipkinURL(z), "application/json", strings.NewReader(zipkinJSON)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 202 {
			t.Error("plaintext request accepted by a TLS endpoint")
		}
	}
	if n := rec.count(); n != 5 {
		t.Errorf("consumer got %d spans, want 5", n)
	}
}

func TestZipkinConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ZipkinConfig
		wantErr string
	}{
		{"off", ZipkinConfig{}, ""},
		{"on", ZipkinConfig{Endpoint: "localhost:9411"}, ""},
		{"no port", ZipkinConfig{Endpoint: "localhost"}, "zipkin.endpoint"},
		{"key without cert", ZipkinConfig{Endpoint: "localhost:9411", TLS: TLSConfig{KeyFile: "k"}}, "zipkin.tls.cert_file and zipkin.tls.key_file"},
		{"tls without endpoint", ZipkinConfig{TLS: TLSConfig{CertFile: "c", KeyFile: "k"}}, "without zipkin.endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate: %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
	r, _ := startReceiver(t, testConfig(), &recorder{})
	if _, err := NewZipkin(ZipkinConfig{}, r, nil); err == nil {
		t.Error("NewZipkin without an endpoint: no error")
	}
}

// TestSplitSharedSpans covers what zipkin-go's tracer does not send: a
// retry of the same shared span gets the same id, and a child in another
// service keeps its parent.
func TestSplitSharedSpans(t *testing.T) {
	trace := zipkinmodel.TraceID{Low: 0x1234}
	parent := zipkinmodel.ID(1)
	mk := func(id, parentID zipkinmodel.ID, service string, shared bool) *zipkinmodel.SpanModel {
		s := &zipkinmodel.SpanModel{SpanContext: zipkinmodel.SpanContext{TraceID: trace, ID: id}, Shared: shared,
			LocalEndpoint: &zipkinmodel.Endpoint{ServiceName: service}}
		if parentID != 0 {
			p := parentID
			s.ParentID = &p
		}
		return s
	}
	spans := []*zipkinmodel.SpanModel{
		mk(2, parent, "a", false), // client
		mk(2, parent, "b", true),  // server, shared
		mk(2, parent, "b", true),  // the same, sent twice
		mk(3, 2, "b", false),      // server's child
		mk(4, 2, "a", false),      // client's child in the client's service
	}
	splitSharedSpans(spans)
	sid := sharedSpanID(trace, 2)
	if sid == 2 || sid == 0 {
		t.Fatalf("sharedSpanID = %v", sid)
	}
	got := [][2]zipkinmodel.ID{}
	for _, s := range spans {
		got = append(got, [2]zipkinmodel.ID{s.ID, *s.ParentID})
	}
	want := [][2]zipkinmodel.ID{{2, 1}, {sid, 2}, {sid, 2}, {3, sid}, {4, 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(id, parent) (-want +got):\n%s", diff)
	}
}

// TestZipkinDecodeCostsBoundAllocations checks the per-item costs that
// decodeZipkin reserves against what decoding allocates, for the shapes
// that cost the most per byte: empty spans each of its own service, many
// small tags, many annotations.
func TestZipkinDecodeCostsBoundAllocations(t *testing.T) {
	var spansJSON strings.Builder
	spansJSON.WriteString("[")
	for i := range 2000 {
		if i > 0 {
			spansJSON.WriteString(",")
		}
		fmt.Fprintf(&spansJSON, `{"traceId":"1","id":"%x","localEndpoint":{"serviceName":"s%d"}}`, i+1, i)
	}
	spansJSON.WriteString("]")
	tags := `[{"traceId":"1","id":"2","tags":{` + tagList(5000) + `}}]`
	annotations := `[{"traceId":"1","id":"2","annotations":[` + strings.Repeat(`{"timestamp":1,"value":"a"},`, 4999) + `{"timestamp":1,"value":"a"}]}]`
	shapes := map[string][]byte{"spans": []byte(spansJSON.String()), "tags": []byte(tags), "annotations": []byte(annotations)}
	for name, b := range shapes {
		for _, isJSON := range []bool{true, false} {
			body := b
			if !isJSON {
				spans, err := parseZipkin(b, true)
				if err != nil {
					t.Fatal(err)
				}
				if body, err = (zipkin_proto3.SpanSerializer{}).Serialize(spans); err != nil {
					t.Fatal(err)
				}
			}
			t.Run(fmt.Sprintf("%s/json=%v", name, isJSON), func(t *testing.T) {
				l := testConfig().decodeLimits()
				l.spans, l.attrs, l.events = 1e9, 1e9, 1e9
				var counts zipkinCounts
				if isJSON {
					counts, _ = scanZipkinJSON(body, l)
				} else {
					counts, _ = scanZipkinProto(body, l)
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				spans, err := parseZipkin(body, isJSON)
				if err != nil {
					t.Fatal(err)
				}
				splitSharedSpans(spans)
				td, err := zipkinv2.ToTranslator{}.ToTraces(spans)
				if err != nil {
					t.Fatal(err)
				}
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(td)
				alloc := int64(after.TotalAlloc - before.TotalAlloc)
				est := counts.decodedSize(len(body))
				t.Logf("%d bytes, %+v: allocated %d, estimated %d", len(body), counts, alloc, est)
				if alloc > est {
					t.Errorf("decoding allocated %d bytes, more than the %d estimated", alloc, est)
				}
			})
		}
	}
}

func tagList(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"%d":""`, i)
	}
	return b.String()
}

// TestScanZipkinJSONCounts pins what the JSON scan counts.
func TestScanZipkinJSONCounts(t *testing.T) {
	l := testConfig().decodeLimits()
	got, err := scanZipkinJSON([]byte(zipkinJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	if want := (zipkinCounts{spans: 5, annotations: 1, tags: 4}); got != want {
		t.Errorf("scanZipkinJSON = %+v, want %+v", got, want)
	}
	gotProto, err := scanZipkinProto(zipkinProto(t), l)
	if err != nil {
		t.Fatal(err)
	}
	if gotProto != got {
		t.Errorf("scanZipkinProto = %+v, want %+v as the JSON", gotProto, got)
	}
}

// FuzzDecodeZipkin: no Zipkin body, JSON or protobuf, panics the decoder
// or the translator, and one that decodes holds what the scan counted.
func FuzzDecodeZipkin(f *testing.F) {
	f.Add([]byte(zipkinJSON), true)
	f.Add(zipkinProto(f), false)
	f.Add([]byte(`[{"traceId":"1","id":"2","shared":true,"parentId":"2","tags":{"otlp.link.0":"a|b|c|d|e","span.kind":"internal","error":"true"}}]`), true)
	f.Add([]byte(`[{"traceId":"463ac35c9f6413ad463ac35c9f6413ad","id":"1","annotations":[{"timestamp":1,"value":"x|{\"a\":[1,{\"b\":2}]}"}]}]`), true)
	f.Add([]byte{}, false)
	core := &tracesCore{limiter: newByteLimiter(64 << 20), limits: testConfig().decodeLimits(), retryAfter: time.Second}
	f.Fuzz(func(t *testing.T, b []byte, isJSON bool) {
		td, reserved, rerr := core.decodeZipkin(b, isJSON)
		core.limiter.release(reserved)
		if rerr != nil {
			return
		}
		var counts zipkinCounts
		if isJSON {
			counts, _ = scanZipkinJSON(b, core.limits)
		} else {
			counts, _ = scanZipkinProto(b, core.limits)
		}
		if n := td.SpanCount(); n > counts.spans {
			t.Errorf("decoded %d spans, the scan counted %d", n, counts.spans)
		}
	})
}

// TestZipkinIsForwardedAsOTLP: with a Tee (forward.endpoint), an accepted
// Zipkin request reaches it as an OTLP protobuf request of its spans, and a
// refused one does not.
func TestZipkinIsForwardedAsOTLP(t *testing.T) {
	var refuse atomic.Bool
	next := consumerFunc(func(context.Context, ptrace.Traces) error {
		if refuse.Load() {
			return overloadError{}
		}
		return nil
	})
	r, _ := startReceiver(t, testConfig(), next)
	tee := &teeRecorder{}
	r.SetTee(tee)
	z, err := newZipkin(ZipkinConfig{Endpoint: "127.0.0.1:0"}, r, nil, testReloadInterval)
	if err != nil {
		t.Fatal(err)
	}
	if err := z.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = z.Shutdown(context.Background()) })
	if got := postZipkin(t, z, http.MethodPost, "application/json", "", []byte(zipkinJSON)); got.code != 202 {
		t.Fatalf("status %d", got.code)
	}
	refuse.Store(true)
	if got := postZipkin(t, z, http.MethodPost, "application/json", "", []byte(zipkinJSON)); got.code != 429 {
		t.Fatalf("refused: status %d, want 429", got.code)
	}
	tee.mu.Lock()
	defer tee.mu.Unlock()
	if len(tee.bodies) != 1 || tee.json[0] || tee.spans[0] != 5 {
		t.Fatalf("tee got %d bodies (json %v, spans %v), want one protobuf request of 5 spans", len(tee.bodies), tee.json, tee.spans)
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(tee.bodies[0]); err != nil {
		t.Fatalf("forwarded body is not OTLP protobuf: %v", err)
	}
	if n := req.Traces().SpanCount(); n != 5 {
		t.Errorf("forwarded %d spans, want 5", n)
	}
}
