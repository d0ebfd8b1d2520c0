package collector

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/synth"
)

// analysisSel is what the analyzer reads, converted as lagscope serve
// converts it: the tests decide what is relevant from it, never from the
// selective decoder itself.
var analysisSel = Selection(analyzer.DefaultConfig().Reads())

// analysisDecoder is the selective decoder of analysisSel.
var analysisDecoder = newSelectiveDecoder(analysisSel)

// analysisKeys is the spanbatch Filter of analysisSel: what FromTraces
// keeps of pdata with it is what the selective decoder must make of the
// same request.
var analysisKeys = selectionKeys(analysisSel)

func selectionKeys(sel Selection) *spanbatch.Keys {
	return spanbatch.NewKeys(sel.ResourceAttributes, sel.SpanAttributes, sel.EventNames, sel.EventAttributes)
}

// batchOptions compare Batches, attribute values included.
var batchOptions = cmp.AllowUnexported(spanbatch.Value{})

// diffBatch returns the difference between got, the selective decoder's
// Batch of a request, and the Batch that FromTraces makes of td, pdata's
// decoding of it, with keys; "" when they are equal. It compares with
// cmp.Equal first (cmp.Diff only on a difference): TestLazyDifferential
// calls it for every input.
func diffBatch(got *spanbatch.Batch, td ptrace.Traces, keys spanbatch.Filter) string {
	var want spanbatch.Batch
	want.FromTraces(td, keys)
	g, w := withNilEmpty(*got), withNilEmpty(want)
	if cmp.Equal(g, w, batchOptions) {
		return ""
	}
	return cmp.Diff(g, w, batchOptions)
}

// withNilEmpty is b with its empty slices nil: a pooled Batch keeps the
// room of the requests before it, which is no difference.
func withNilEmpty(b spanbatch.Batch) spanbatch.Batch {
	nilEmpty(&b.Resources)
	nilEmpty(&b.Scopes)
	nilEmpty(&b.Spans)
	nilEmpty(&b.Events)
	nilEmpty(&b.Links)
	nilEmpty(&b.ResourceAttrs)
	nilEmpty(&b.SpanAttrs)
	nilEmpty(&b.EventAttrs)
	return b
}

func nilEmpty[T any](s *[]T) {
	if len(*s) == 0 {
		*s = nil
	}
}

// traces returns r as pdata: td, or its Batch's ToTraces.
func (r decodedRequest) traces() ptrace.Traces {
	if r.batch != nil {
		return r.batch.ToTraces()
	}
	return r.td
}

// testDecoder returns analysisDecoder when lazy, else nil (pdata only).
func testDecoder(lazy bool) *selectiveDecoder {
	if lazy {
		return analysisDecoder
	}
	return nil
}

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
	Events       []relevantEvent
	LinkTraces   []pcommon.TraceID
	LinkSpans    []pcommon.SpanID
}

type relevantEvent struct {
	Name  string
	Attrs []relevantAttr
}

type relevantResource struct {
	Attrs  []relevantAttr
	Scopes [][]relevantSpan
}

// selected reports whether keys lists k; nil keys list everything.
func selected(keys []string, k string) bool { return keys == nil || slices.Contains(keys, k) }

func relevantAttrs(m pcommon.Map, keys []string) []relevantAttr {
	var out []relevantAttr
	for k, v := range m.All() {
		if selected(keys, k) {
			out = append(out, relevantAttr{k, v.Type().String(), v.AsString()})
		}
	}
	return out
}

// relevant returns what sel names of td, with the span fields the selective
// decoder always keeps; a nil sel names every attribute and event.
func relevant(td ptrace.Traces, sel *Selection) []relevantResource {
	if sel == nil {
		sel = &Selection{}
	} else if sel.ResourceAttributes == nil || sel.SpanAttributes == nil || sel.EventNames == nil || sel.EventAttributes == nil {
		panic("a Selection with a nil list would select everything of it")
	}
	var out []relevantResource
	for _, rs := range td.ResourceSpans().All() {
		r := relevantResource{Attrs: relevantAttrs(rs.Resource().Attributes(), sel.ResourceAttributes)}
		for _, ss := range rs.ScopeSpans().All() {
			var scope []relevantSpan
			for _, sp := range ss.Spans().All() {
				s := relevantSpan{
					Trace: sp.TraceID(), Span: sp.SpanID(), Parent: sp.ParentSpanID(), Name: sp.Name(), Kind: sp.Kind(),
					Start: sp.StartTimestamp(), End: sp.EndTimestamp(), Status: sp.Status().Code(),
					Attrs: relevantAttrs(sp.Attributes(), sel.SpanAttributes),
				}
				for _, ev := range sp.Events().All() {
					if selected(sel.EventNames, ev.Name()) {
						s.Events = append(s.Events, relevantEvent{ev.Name(), relevantAttrs(ev.Attributes(), sel.EventAttributes)})
					}
				}
				for _, l := range sp.Links().All() {
					s.LinkTraces = append(s.LinkTraces, l.TraceID())
					s.LinkSpans = append(s.LinkSpans, l.SpanID())
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
	a.PutBool("cqrs.query.name", true)
	a.PutEmpty("cqrs.event.type")
	a.PutStr("cqrs.unread", "x") // a cqrs.* key the analysis does not read
	a.PutEmptyMap("http.headers").PutStr("k", "v")
	a.PutEmptySlice("http.list").AppendEmpty().SetEmptySlice().AppendEmpty().SetInt(1)
	ev := sp.Events().AppendEmpty()
	ev.SetName("cqrs.event")
	ev.SetTimestamp(150)
	ev.Attributes().PutStr("cqrs.event.id", "evt-1")
	ev.Attributes().PutStr("other", "x")
	exc := sp.Events().AppendEmpty()
	exc.SetName("exception")
	exc.Attributes().PutStr("cqrs.event.id", "not read: the event is not")
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

// checkLazy fails when the selective decoder accepts what pdata rejects,
// calls malformed what pdata accepts, or decodes differently from pdata
// what the analysis reads (and nothing more), or makes another Batch than
// FromTraces of pdata's decoding, or when decodeTraces, falling back or
// not, differs from pdata. It returns why the selective decoder declined
// buf.
func checkLazy(t *testing.T, buf []byte) fallbackReason {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	perr := req.UnmarshalProto(buf)
	got, fb := analysisDecoder.decode(buf)
	if fb == fallbackNone && perr != nil {
		t.Fatalf("selective decoder accepted a request pdata rejects (%v)", perr)
	}
	if fb == fallbackMalformed && perr == nil {
		t.Fatal("selective decoder declined as malformed a request pdata decodes")
	}
	want := relevant(req.Traces(), &analysisSel)
	if fb == fallbackNone {
		// All of what it decoded, against what the analysis reads of pdata's.
		if diff := cmp.Diff(relevant(got.ToTraces(), nil), want); diff != "" {
			t.Fatalf("selective decoder differs from pdata (-selective +pdata):\n%s", diff)
		}
		if diff := diffBatch(got, req.Traces(), analysisKeys); diff != "" {
			t.Fatalf("selective decoder's Batch differs from FromTraces of pdata's (-selective +pdata):\n%s", diff)
		}
		putBatch(got)
	}
	dec, dfb, err := decodeTraces(buf, analysisDecoder)
	defer dec.free()
	if (err != nil) != (perr != nil) {
		t.Fatalf("decodeTraces error = %v, pdata's = %v", err, perr)
	}
	if dfb != fb {
		t.Fatalf("decodeTraces fell back for %v, the selective decoder declined for %v", dfb, fb)
	}
	if err == nil && !cmp.Equal(relevant(dec.traces(), &analysisSel), want) {
		t.Fatal("decodeTraces differs from pdata")
	}
	return fb
}

func TestDecodeLazy(t *testing.T) {
	seeds := lazySeeds(t)
	for i, b := range seeds {
		fb := checkLazy(t, b)
		if i < 3 && fb != fallbackNone {
			t.Errorf("seed %d: selective decoder declined a valid request: %v", i, fb)
		}
		// Every truncation of a valid request too.
		for n := range len(b) {
			checkLazy(t, b[:n])
		}
	}
	// Two requests in a row are one request with the resources of both.
	checkLazy(t, append(bytes.Clone(seeds[1]), seeds[1]...))
}

// fallbackCases are requests the selective decoder declines, one per reason.
func fallbackCases(t testing.TB) []struct {
	name string
	buf  []byte
	want fallbackReason
} {
	t.Helper()
	// request wraps a span's encoding in a scope, a resource and a request.
	request := func(span []byte) []byte {
		ss := protowire.AppendBytes(protowire.AppendTag(nil, scopeSpansSpans, protowire.BytesType), span)
		rs := protowire.AppendBytes(protowire.AppendTag(nil, resourceSpansScopeSpans, protowire.BytesType), ss)
		return protowire.AppendBytes(protowire.AppendTag(nil, exportTraceServiceRequestResourceSpans, protowire.BytesType), rs)
	}
	keyValue := func(fields ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, spanAttributes, protowire.BytesType), bytes.Join(fields, nil))
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	strValue := func(s string) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, keyValueValue, protowire.BytesType), str(anyValueStringValue, s))
	}
	marshal := func(build func(sp ptrace.Span)) []byte {
		td := ptrace.NewTraces()
		sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{1})
		sp.SetSpanID(pcommon.SpanID{1})
		build(sp)
		return mustMarshal(t, td)
	}
	deep := marshal(func(sp ptrace.Span) {
		v := sp.Attributes().PutEmptySlice("http.nested")
		for range maxLazyDepth + 2 {
			v = v.AppendEmpty().SetEmptySlice()
		}
	})
	return []struct {
		name string
		buf  []byte
		want fallbackReason
	}{
		{"unknown field of the request", protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 1), fallbackUnknownField},
		{"unknown field of a span", request(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)), fallbackUnknownField},
		{"group", request(protowire.AppendTag(protowire.AppendTag(nil, 99, protowire.StartGroupType), 99, protowire.EndGroupType)), fallbackGroup},
		{"repeated key", request(keyValue(str(keyValueKey, "cqrs.operation"), str(keyValueKey, "cqrs.projection"), strValue("append"))), fallbackRepeatedField},
		{"repeated value", request(keyValue(str(keyValueKey, "cqrs.operation"), strValue("append"), strValue("project"))), fallbackRepeatedField},
		{"duplicate kept attribute", request(append(
			keyValue(str(keyValueKey, "cqrs.operation"), strValue("append")),
			keyValue(str(keyValueKey, "cqrs.operation"), strValue("project"))...)), fallbackDuplicateKeptAttribute},
		{"kept array", marshal(func(sp ptrace.Span) { sp.Attributes().PutEmptySlice("cqrs.event.id").AppendEmpty().SetStr("e") }), fallbackKeptComplexValue},
		{"kept map", marshal(func(sp ptrace.Span) { sp.Attributes().PutEmptyMap("cqrs.event.id").PutStr("k", "v") }), fallbackKeptComplexValue},
		{"too deep", deep, fallbackTooDeep},
		// Found by TestLazyDifferential: pdata reads field 20, varint 1.
		{"varint overflow in a tag", []byte{0xa0, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x76, 0x01}, fallbackVarintOverflow},
		// A length of 2<<63: pdata drops the bit and reads an empty ResourceSpans.
		{"varint overflow in a length", []byte{0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}, fallbackVarintOverflow},
		{"truncated", deep[:len(deep)-1], fallbackMalformed},
		{"wrong wire type", request(protowire.AppendVarint(protowire.AppendTag(nil, spanName, protowire.VarintType), 1)), fallbackMalformed},
		{"short trace id", request(str(spanTraceID, "short")), fallbackMalformed},
	}
}

// TestDecodeFallbacks checks that each request the selective decoder
// declines for a reason is decoded by pdata (or refused exactly when pdata
// refuses it) and counted under that reason, every other reason staying 0.
func TestDecodeFallbacks(t *testing.T) {
	seen := map[fallbackReason]bool{}
	for _, tt := range fallbackCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := analysisDecoder.decode(tt.buf); got != tt.want {
				t.Fatalf("selective decoder declined for %v, want %v", got, tt.want)
			}
			seen[tt.want] = true
			checkLazy(t, tt.buf)

			reg := prometheus.NewRegistry()
			m, err := newMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			core := &tracesCore{next: Discard, limiter: newByteLimiter(1 << 30), metrics: m, selective: analysisDecoder, limits: DefaultConfig().decodeLimits()}
			_, reserved, rerr := core.decode(tt.buf, false)
			core.limiter.release(reserved)
			perr := ptraceotlp.NewExportRequest().UnmarshalProto(tt.buf)
			if (rerr != nil) != (perr != nil) {
				t.Fatalf("decode error = %v, pdata's = %v", rerr, perr)
			}
			var want strings.Builder
			want.WriteString("# HELP lagscope_decode_fallbacks_total OTLP protobuf requests that the selective decoder (otlp.lazy_decode) declined and left to pdata, by reason; pdata refuses the malformed ones too.\n")
			want.WriteString("# TYPE lagscope_decode_fallbacks_total counter\n")
			for r := fallbackNone + 1; r < numFallbackReasons; r++ {
				n := "0"
				if r == tt.want {
					n = "1"
				}
				want.WriteString(`lagscope_decode_fallbacks_total{reason="` + r.String() + `"} ` + n + "\n")
			}
			if err := testutil.CollectAndCompare(reg, strings.NewReader(want.String()), "lagscope_decode_fallbacks_total"); err != nil {
				t.Error(err)
			}
		})
	}
	for r := fallbackNone + 1; r < numFallbackReasons; r++ {
		if !seen[r] {
			t.Errorf("no case declines for %v", r)
		}
	}
}

// fixtureRequests returns the requests of the OTLP/JSON fixtures at the
// repository root (testdata/*.jsonl), re-encoded as protobuf, by file.
func fixtureRequests(t testing.TB) map[string][][]byte {
	t.Helper()
	files, err := filepath.Glob("../testdata/*.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no fixtures under ../testdata")
	}
	out := map[string][][]byte{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			req := ptraceotlp.NewExportRequest()
			if err := req.UnmarshalJSON(sc.Bytes()); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			b, err := req.MarshalProto()
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(name)] = append(out[filepath.Base(name)], b)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return out
}

// synthStream returns n encoded requests of the synth generator.
func synthStream(t testing.TB, n int) [][]byte {
	t.Helper()
	g := synth.New(synth.Config{})
	start := time.Unix(1_700_000_000, 0)
	td, _ := g.Next(start)
	out := make([][]byte, n)
	for i := range out {
		if i > 0 {
			g.Refill(td, start.Add(time.Duration(i)*time.Second))
		}
		out[i] = mustMarshal(t, td)
	}
	return out
}

// analysis returns the metrics an Analyzer exposes after consuming reqs
// decoded by dec (nil: pdata), in the text format, without exemplars and
// without the one gauge that reads the clock.
func analysis(t *testing.T, reqs [][]byte, dec *selectiveDecoder) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := analyzer.New(analyzer.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	core := &tracesCore{next: a} // to hand a Batch on as the receiver does
	for _, b := range reqs {
		req, _, err := decodeTraces(b, dec)
		if err != nil {
			t.Fatal(err)
		}
		if err := core.consume(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		req.free()
	}
	a.Flush()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, mf := range mfs {
		if mf.GetName() == "cqrs_projection_oldest_pending_seconds" {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&out, mf); err != nil {
			t.Fatal(err)
		}
	}
	return out.String()
}

// TestSelectiveDecoderFixtures decodes every fixture and the synth stream
// with the selective decoder and with pdata: the selective decoder must not
// decline any of them, must decode what the analysis reads as pdata does,
// and an Analyzer fed either must expose the same metrics.
func TestSelectiveDecoderFixtures(t *testing.T) {
	streams := fixtureRequests(t)
	streams["synth"] = synthStream(t, 4)
	for name, reqs := range streams {
		t.Run(name, func(t *testing.T) {
			for i, b := range reqs {
				if fb := checkLazy(t, b); fb != fallbackNone {
					t.Errorf("request %d: selective decoder declined: %v", i, fb)
				}
			}
			got, want := analysis(t, reqs, analysisDecoder), analysis(t, reqs, nil)
			if !strings.Contains(want, "cqrs_events_appended_total") {
				t.Fatalf("the analysis exposes no appended events:\n%s", want)
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("metrics of the selectively decoded stream (-selective +pdata):\n%s", diff)
			}
		})
	}
}

// FuzzDecodeProto checks the protobuf path: the selective decoder against
// pdata (checkLazy), and the receiver's decoding, pre-scan and limits
// included, with and without the selective decoder (checkDecode). The seeds
// include every fixture and the synth stream.
func FuzzDecodeProto(f *testing.F) {
	for _, b := range lazySeeds(f) {
		f.Add(b)
	}
	for _, reqs := range fixtureRequests(f) {
		for _, b := range reqs {
			f.Add(b)
		}
	}
	for _, tt := range fallbackCases(f) {
		f.Add(tt.buf)
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
		cfg.Keep = Selection(analyzer.DefaultConfig().Reads())
		r, reg := startReceiver(t, cfg, consumerFunc(func(_ context.Context, td ptrace.Traces) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, relevant(td, &analysisSel)...)
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
		want := relevant(newTraces(3, 4), &analysisSel)
		mu.Lock()
		if diff := cmp.Diff(got, append(want, want...)); diff != "" {
			t.Errorf("lazy %v: consumed (-got +want):\n%s", lazy, diff)
		}
		mu.Unlock()
		// The two truncated requests fell back, when there was a selective
		// decoder to decline them.
		wantFallbacks := 0
		if lazy {
			wantFallbacks = 2
		}
		if n := testutil.ToFloat64(r.core.metrics.decodeFallbacks[fallbackMalformed]); int(n) != wantFallbacks {
			t.Errorf("lazy %v: %v malformed fallbacks, want %d", lazy, n, wantFallbacks)
		}
		if n, err := testutil.GatherAndCount(reg, "lagscope_decode_fallbacks_total"); err != nil || n != int(numFallbackReasons-1) {
			t.Errorf("lazy %v: %d fallback series (%v), want every reason's", lazy, n, err)
		}
	}
}
