package collector

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lagscope/lagscope/synth"
)

// relevantAttr is an attribute as the analysis reads it.
type relevantAttr struct{ Key, Type, Value string }

type relevantSpan struct {
	Trace        pcommon.TraceID
	Span, Parent pcommon.SpanID
	Name         string
	Kind         ptrace.SpanKind
	Start, End   pcommon.Timestamp
	Status       ptrace.StatusCode
	Attrs        []relevantAttr
	Events       [][]relevantAttr
	LinkTraces   []pcommon.TraceID
	LinkSpans    []pcommon.SpanID
}

type relevantResource struct {
	Service string
	Scopes  [][]relevantSpan
}

func relevantAttrs(m pcommon.Map) []relevantAttr {
	var out []relevantAttr
	for k, v := range m.All() {
		if kept([]byte(k)) {
			out = append(out, relevantAttr{k, v.Type().String(), v.AsString()})
		}
	}
	return out
}

// relevant returns what the analysis reads of td.
func relevant(td ptrace.Traces) []relevantResource {
	var out []relevantResource
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		var r relevantResource
		if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
			r.Service = v.Type().String() + ":" + v.Str()
		}
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			spans := rs.ScopeSpans().At(j).Spans()
			var scope []relevantSpan
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				s := relevantSpan{
					Trace: sp.TraceID(), Span: sp.SpanID(), Parent: sp.ParentSpanID(), Name: sp.Name(), Kind: sp.Kind(),
					Start: sp.StartTimestamp(), End: sp.EndTimestamp(), Status: sp.Status().Code(), Attrs: relevantAttrs(sp.Attributes()),
				}
				for e := 0; e < sp.Events().Len(); e++ {
					if ev := sp.Events().At(e); ev.Name() == "cqrs.event" {
						s.Events = append(s.Events, relevantAttrs(ev.Attributes()))
					}
				}
				for l := 0; l < sp.Links().Len(); l++ {
					s.LinkTraces = append(s.LinkTraces, sp.Links().At(l).TraceID())
					s.LinkSpans = append(s.LinkSpans, sp.Links().At(l).SpanID())
				}
				scope = append(scope, s)
			}
			r.Scopes = append(r.Scopes, scope)
		}
		out = append(out, r)
	}
	return out
}

// lazySeeds are encoded requests: the synth stream and spans with every
// kind of field and attribute value the lazy decoder keeps or skips.
func lazySeeds(t testing.TB) [][]byte {
	t.Helper()
	g := synth.New(synth.Config{TracesPerRequest: 2})
	synthTD, _ := g.Next(time.Unix(1700000000, 0))

	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
	rs.Resource().Attributes().PutStr("service.name", "orders")
	rs.Resource().Attributes().PutInt("process.pid", 7)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("lib")
	ss.Scope().SetVersion("1")
	ss.Scope().Attributes().PutBool("x", true)
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	sp.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	sp.SetParentSpanID(pcommon.SpanID{8, 7, 6, 5, 4, 3, 2, 1})
	sp.SetName("consume")
	sp.SetKind(ptrace.SpanKindConsumer)
	sp.SetStartTimestamp(100)
	sp.SetEndTimestamp(200)
	sp.SetFlags(1)
	sp.TraceState().FromRaw("a=b")
	sp.Status().SetCode(ptrace.StatusCodeError)
	sp.Status().SetMessage("failed")
	a := sp.Attributes()
	a.PutStr("messaging.system", "kafka")
	a.PutStr("messaging.operation.type", "process")
	a.PutInt("cqrs.aggregate.version", 3)
	a.PutDouble("cqrs.aggregate.id", 1.5)
	a.PutEmptyBytes("messaging.message.id").FromRaw([]byte{1, 2})
	a.PutBool("cqrs.flag", true)
	a.PutEmpty("cqrs.empty")
	a.PutEmptyMap("http.headers").PutStr("k", "v")
	a.PutEmptySlice("http.list").AppendEmpty().SetEmptySlice().AppendEmpty().SetInt(1)
	ev := sp.Events().AppendEmpty()
	ev.SetName("cqrs.event")
	ev.SetTimestamp(150)
	ev.Attributes().PutStr("cqrs.event.id", "evt-1")
	ev.Attributes().PutStr("other", "x")
	sp.Events().AppendEmpty().SetName("exception")
	l := sp.Links().AppendEmpty()
	l.SetTraceID(pcommon.TraceID{9})
	l.SetSpanID(pcommon.SpanID{9})
	l.Attributes().PutStr("k", "v")
	sp.SetDroppedAttributesCount(1)
	sp.SetDroppedEventsCount(2)
	sp.SetDroppedLinksCount(3)
	ss.Spans().AppendEmpty() // empty ids

	var out [][]byte
	for _, td := range []ptrace.Traces{synthTD, td, ptrace.NewTraces()} {
		b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, []byte{0x0a, 0x02, 0x0a}, []byte{0xff}, []byte{0x0a, 0x00})
}

// checkLazy fails when decodeLazy accepts what pdata rejects or reads a
// field the analysis uses differently from pdata.
func checkLazy(t *testing.T, buf []byte) {
	req := ptraceotlp.NewExportRequest()
	perr := req.UnmarshalProto(buf)
	got, ok := decodeLazy(buf)
	if ok && perr != nil {
		t.Fatalf("lazy decoder accepted a request pdata rejects (%v)", perr)
	}
	if ok {
		if diff := cmp.Diff(relevant(got), relevant(req.Traces())); diff != "" {
			t.Fatalf("lazy decoder differs from pdata (-lazy +pdata):\n%s", diff)
		}
	}
	td, err := decodeTraces(buf, true)
	if (err != nil) != (perr != nil) {
		t.Fatalf("decodeTraces error = %v, pdata's = %v", err, perr)
	}
	if err == nil && !cmp.Equal(relevant(td), relevant(req.Traces())) {
		t.Fatal("decodeTraces differs from pdata")
	}
}

func TestDecodeLazy(t *testing.T) {
	seeds := lazySeeds(t)
	for i, b := range seeds {
		checkLazy(t, b)
		if i < 3 {
			if _, ok := decodeLazy(b); !ok {
				t.Errorf("seed %d: lazy decoder declined a valid request", i)
			}
		}
		// Every truncation of a valid request too.
		for n := range len(b) {
			checkLazy(t, b[:n])
		}
	}
	// Two requests in a row are one request with the resources of both.
	checkLazy(t, append(bytes.Clone(seeds[1]), seeds[1]...))
}

// FuzzDecodeProto checks the protobuf path: the lazy decoder against pdata
// (checkLazy), and the receiver's decoding, pre-scan and limits included,
// with and without the lazy decoder (checkDecode).
func FuzzDecodeProto(f *testing.F) {
	for _, b := range lazySeeds(f) {
		f.Add(b)
	}
	f.Add(linkFlood(fuzzLimits.links))
	f.Add(linkFlood(fuzzLimits.links + 1))
	f.Fuzz(func(t *testing.T, buf []byte) {
		checkLazy(t, buf)
		checkDecode(t, buf, false, false)
		checkDecode(t, buf, false, true)
	})
}

// TestLazyDecodeReceiver sends the same requests over gRPC and OTLP/HTTP
// protobuf to receivers with and without LazyDecode, and compares what
// their consumers read of them.
func TestLazyDecodeReceiver(t *testing.T) {
	body := mustMarshal(t, newTraces(3, 4))
	bad := append(bytes.Clone(body), 0x0a, 0x05)
	for _, lazy := range []bool{false, true} {
		var mu sync.Mutex
		var got []relevantResource
		cfg := testConfig()
		cfg.LazyDecode = lazy
		r, _ := startReceiver(t, cfg, consumerFunc(func(_ context.Context, td ptrace.Traces) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, relevant(td)...)
			return nil
		}))
		if _, err := exportGRPC(t, r, body); err != nil {
			t.Fatalf("lazy %v: gRPC export: %v", lazy, err)
		}
		if res, err := postTraces(r, "application/x-protobuf", "", body); err != nil || res.code != http.StatusOK {
			t.Fatalf("lazy %v: HTTP export: %v, %v", lazy, res.code, err)
		}
		if _, err := exportGRPC(t, r, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("lazy %v: gRPC export of a truncated request: %v, want InvalidArgument", lazy, err)
		}
		if res, err := postTraces(r, "application/x-protobuf", "", bad); err != nil || res.code != http.StatusBadRequest {
			t.Errorf("lazy %v: HTTP export of a truncated request: %v, %v; want 400", lazy, res.code, err)
		}
		want := relevant(newTraces(3, 4))
		mu.Lock()
		if diff := cmp.Diff(got, append(want, want...)); diff != "" {
			t.Errorf("lazy %v: consumed (-got +want):\n%s", lazy, diff)
		}
		mu.Unlock()
	}
}
