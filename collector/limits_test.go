package collector

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// fuzzLimits are small enough for fuzzed inputs to cross every one.
var fuzzLimits = decodeLimits{spans: 40, links: 20, events: 20, attrs: 60, depth: 20}

// fuzzMetrics are shared by the cores of fuzzCore: building them took
// most of the time of a fuzzed input.
var fuzzMetrics = sync.OnceValues(func() (*metrics, error) { return newMetrics(nil) })

func fuzzCore(t testing.TB, lazy bool) *tracesCore {
	m, err := fuzzMetrics()
	if err != nil {
		t.Fatal(err)
	}
	return &tracesCore{next: Discard, limiter: newByteLimiter(1 << 40), metrics: m, selective: testDecoder(lazy), limits: fuzzLimits}
}

// itemCounts counts what td holds as the scans count it, and the deepest
// nesting of its attribute values (1 for a scalar).
func itemCounts(td ptrace.Traces) (c requestCounts, depth int) {
	var anyValue func(v pcommon.Value, d int)
	attrs := func(m pcommon.Map, d int) {
		for _, v := range m.All() {
			c.attrs++
			anyValue(v, d)
		}
	}
	anyValue = func(v pcommon.Value, d int) {
		depth = max(depth, d)
		switch v.Type() {
		case pcommon.ValueTypeSlice:
			for _, e := range v.Slice().All() {
				c.attrs++
				anyValue(e, d+1)
			}
		case pcommon.ValueTypeMap:
			attrs(v.Map(), d+1)
		}
	}
	for _, rs := range td.ResourceSpans().All() {
		c.resources++
		attrs(rs.Resource().Attributes(), 1)
		for _, ss := range rs.ScopeSpans().All() {
			c.scopes++
			attrs(ss.Scope().Attributes(), 1)
			for _, s := range ss.Spans().All() {
				c.spans++
				attrs(s.Attributes(), 1)
				for _, e := range s.Events().All() {
					c.events++
					attrs(e.Attributes(), 1)
				}
				for _, l := range s.Links().All() {
					c.links++
					attrs(l.Attributes(), 1)
				}
			}
		}
	}
	return c, depth
}

// checkWithinLimits fails if td holds more than fuzzLimits allow. A value
// nested d deep sits 3d+7 levels deep in OTLP/JSON (and 2d+3 in protobuf).
func checkWithinLimits(t *testing.T, td ptrace.Traces) {
	t.Helper()
	c, depth := itemCounts(td)
	l := fuzzLimits
	if c.spans > l.spans || c.links > l.links || c.events > l.events || c.attrs > l.attrs || 2*depth+3 > l.depth {
		t.Fatalf("accepted a request past the limits: %+v, value depth %d", c, depth)
	}
}

func protoOf(t *testing.T, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkDecode fails when tracesCore.decode of buf (OTLP/JSON if json)
// accepts what pdata rejects or past the limits, decodes differently from
// pdata (only what the analysis reads, for the lazy decoder), or refuses as
// undecodable what pdata accepts.
func checkDecode(t *testing.T, buf []byte, json, lazy bool) {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	var perr error
	if json {
		perr = req.UnmarshalJSON(buf)
	} else {
		perr = req.UnmarshalProto(buf)
	}
	core := fuzzCore(t, lazy)
	dec, reserved, rerr := core.decode(buf, json)
	core.limiter.release(reserved)
	defer dec.free()
	td := dec.traces()
	switch {
	case rerr == nil && perr != nil:
		t.Fatalf("accepted a request pdata rejects (%v)", perr)
	case rerr == nil:
		checkWithinLimits(t, td)
		if lazy {
			if diff := cmp.Diff(relevant(td, &analysisSel), relevant(req.Traces(), &analysisSel)); diff != "" {
				t.Fatalf("lazy decoding differs from pdata (-got +pdata):\n%s", diff)
			}
			if dec.batch != nil {
				if diff := diffBatch(dec.batch, req.Traces(), analysisKeys); diff != "" {
					t.Fatalf("lazy decoding's Batch differs from FromTraces of pdata's (-got +pdata):\n%s", diff)
				}
			}
		} else if !bytes.Equal(protoOf(t, td), protoOf(t, req.Traces())) {
			t.Fatal("decoding differs from pdata")
		}
	case rerr.reason == reasonDecodeError && perr == nil:
		t.Fatalf("refused as undecodable a request pdata accepts: %v", rerr)
	case rerr.reason != reasonDecodeError && rerr.reason != reasonTooLarge:
		t.Fatalf("refused with reason %v: %v", rerr.reason, rerr)
	}
	if used := core.limiter.inUse(); used != 0 {
		t.Fatalf("decode left %d bytes reserved", used)
	}
}

// jsonSeeds are OTLP/JSON requests: the protobuf seeds re-encoded, requests
// at and past the limits, both spellings of the keys, escaped keys, deep
// nesting and malformed input.
func jsonSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, b := range lazySeeds(t)[:3] {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(b); err != nil {
			t.Fatal(err)
		}
		j, err := req.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	j, err := ptraceotlp.NewExportRequestFromTraces(newTraces(2, 3)).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	snake := strings.NewReplacer(`"resourceSpans"`, `"resource_spans"`, `"scopeSpans"`, `"scope_spans"`).Replace(string(j))
	escaped := strings.Replace(string(j), `"spans"`, `"sp\u0061ns"`, 1)
	return append(out, j, []byte(snake), []byte(escaped), deepJSON(3), deepJSON(30),
		[]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{}]}]}]}`),
		[]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{},{}],"events":[{}]}]}]}]}`),
		[]byte(`{"resourceSpans":[`), []byte(`{"x":"\"spans\":[`), []byte(`[]`), []byte(`{}`), nil)
}

func TestScanJSONCounts(t *testing.T) {
	tests := []struct {
		name string
		json string
		want requestCounts
	}{
		{"empty", `{}`, requestCounts{}},
		{"spans, events and links", `{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{},{}],"events":[{"attributes":[{"key":"a"}]}]},{}]}]}]}`,
			requestCounts{resources: 1, scopes: 1, spans: 2, events: 1, links: 2, attrs: 1}},
		{"snake case", `{"resource_spans":[{},{}],"scope_spans":[{}]}`, requestCounts{resources: 2, scopes: 1}},
		{"escaped key", `{"sp\u0061ns":[{},{},{}]}`, requestCounts{spans: 3}},
		{"key inside a string is no key", `{"name":"\"spans\":[{},{}]"}`, requestCounts{}},
		{"array and map values", `{"attributes":[{"value":{"arrayValue":{"values":[1,"x",{}]}}},{"value":{"kvlistValue":{"values":[{},{}]}}}]}`,
			requestCounts{attrs: 7}},
		{"whitespace", "{ \"spans\" :\n[ {} ,\t{} ] }", requestCounts{spans: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := scanJSON([]byte(tt.json), decodeLimits{spans: 100, links: 100, events: 100, attrs: 100, depth: 64})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tt.want, cmp.AllowUnexported(requestCounts{})); diff != "" {
				t.Errorf("counts (-got +want):\n%s", diff)
			}
		})
	}
}

func TestScanProtoCountsWhatPdataDecodes(t *testing.T) {
	for i, b := range lazySeeds(t)[:3] {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(b); err != nil {
			t.Fatal(err)
		}
		got, err := scanProto(b, DefaultConfig().decodeLimits())
		if err != nil {
			t.Fatal(err)
		}
		want, _ := itemCounts(req.Traces())
		if diff := cmp.Diff(got, want, cmp.AllowUnexported(requestCounts{})); diff != "" {
			t.Errorf("seed %d: counts (-scan +pdata):\n%s", i, diff)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, b := range jsonSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, buf []byte) { checkDecode(t, buf, true, false) })
}
