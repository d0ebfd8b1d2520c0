package collector

import (
	"bytes"
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestOnePassDepth compares the one pass with the scan on attribute values
// nested through arrays and maps, of a span, an event and a link, at every
// depth limit from the least valid one up: the one pass checks the depth of
// values itself, and must stop where the scan refuses.
func TestOnePassDepth(t *testing.T) {
	nest := func(v pcommon.Value, depth int, maps bool) {
		for range depth {
			if maps {
				v = v.SetEmptyMap().PutEmpty("k")
			} else {
				v = v.SetEmptySlice().AppendEmpty()
			}
		}
		v.SetStr("leaf")
	}
	var reqs [][]byte
	for depth := range maxLazyDepth + 2 {
		for _, maps := range []bool{false, true} {
			td := ptrace.NewTraces()
			sp := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			sp.SetTraceID(pcommon.TraceID{1})
			sp.SetSpanID(pcommon.SpanID{1})
			nest(sp.Attributes().PutEmpty("unread"), depth, maps)
			ev := sp.Events().AppendEmpty()
			ev.SetName("cqrs.event")
			nest(ev.Attributes().PutEmpty("unread"), depth, maps)
			nest(sp.Links().AppendEmpty().Attributes().PutEmpty("unread"), depth, maps)
			reqs = append(reqs, protoOf(t, td))
		}
	}
	limits := DefaultConfig().decodeLimits()
	stopped := 0
	for limits.depth = minJSONDepth; limits.depth <= 3*maxLazyDepth+10; limits.depth++ {
		for i, b := range reqs {
			if err := diffOnePass(b, pdataOf(t, b), limits); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			batch, _, fb := analysisDecoder.decodeWithin(b, limits, receiverBudget(len(b)))
			if fb == overLimit {
				stopped++
			}
			if batch != nil {
				putBatch(batch)
			}
		}
	}
	if stopped == 0 {
		t.Error("the one pass never stopped at the depth limit: the test compares nothing")
	}
}

// pdataOf is pdata's decoding of buf, which it must decode.
func pdataOf(t *testing.T, buf []byte) *ptrace.Traces {
	t.Helper()
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(buf); err != nil {
		t.Fatal(err)
	}
	td := req.Traces()
	return &td
}

// TestOnePassBound checks that the synth stream's requests, a small request
// and the real clients' captures decode within the one pass's bound with
// room to spare, so that normal traffic never pays for the scan.
func TestOnePassBound(t *testing.T) {
	reqs := synthStream(t, 4)
	reqs = append(reqs, lazySeeds(t)[1])
	for _, b := range loadCaptures(t) {
		reqs = append(reqs, b)
	}
	limits := DefaultConfig().decodeLimits()
	for i, b := range reqs {
		td, counts, fb := analysisDecoder.decodeWithin(b, limits, receiverBudget(len(b)))
		if fb != fallbackNone {
			t.Fatalf("request %d declined: %v", i, fb)
		}
		est, bound := counts.decodedSize(len(b)), onePassBytes(len(b))
		t.Logf("request %d: %d bytes, %d spans: estimate %d, bound %d (%.1fx the estimate)", i, len(b), td.SpanCount(), est, bound, float64(bound)/float64(est))
		if 3*est > 2*bound {
			t.Errorf("request %d: estimate %d is more than 2/3 of the bound %d", i, est, bound)
		}
	}
}

// TestOnePassHostile sends the amplification bombs through the receiver's
// decode, with the default configuration: each must be refused exactly as
// with the scan first (same reason and message, nothing left reserved),
// allocating little.
func TestOnePassHostile(t *testing.T) {
	cfg := DefaultConfig()
	l := cfg.decodeLimits()
	repeat := func(field protowire.Number, value []byte, n int) []byte {
		one := protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), value)
		return bytes.Repeat(one, n)
	}
	wrap := func(field protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), b)
	}
	request := func(spans []byte) []byte {
		return wrap(exportTraceServiceRequestResourceSpans, wrap(resourceSpansScopeSpans, spans))
	}
	deep := []byte{}
	for range 10_000 {
		deep = wrap(anyValueKvlistValue, wrap(keyValueListValues, wrap(keyValueValue, deep)))
	}
	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"1M empty links", linkFlood(1_000_000)},
		{"links at the limit + 1", linkFlood(l.links + 1)},
		{"1M empty spans", request(repeat(scopeSpansSpans, nil, 1_000_000))},
		{"2M empty attributes", request(wrap(scopeSpansSpans, repeat(spanAttributes, nil, 2_000_000)))},
		{"1M empty events", request(wrap(scopeSpansSpans, repeat(spanEvents, nil, 1_000_000)))},
		{"values 30k deep", request(wrap(scopeSpansSpans, wrap(spanAttributes, wrap(keyValueValue, deep))))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := fuzzMetrics()
			if err != nil {
				t.Fatal(err)
			}
			core := func() *tracesCore {
				return &tracesCore{next: Discard, limiter: newByteLimiter(cfg.MaxInflightBytes), metrics: m, selective: analysisDecoder, limits: l}
			}
			got, want := core(), core()
			var rerr *requestError
			alloc := totalAlloc(func() {
				var reserved int64
				var req decodedRequest
				req, reserved, rerr = got.decode(tt.body, false)
				got.limiter.release(reserved)
				req.free()
			})
			_, wreserved, werr := scanThenDecode(want, tt.body)
			want.limiter.release(wreserved)
			if rerr == nil || werr == nil || rerr.reason != werr.reason || rerr.Error() != werr.Error() {
				t.Fatalf("decode = %v, with the scan first %v; want both refused alike", rerr, werr)
			}
			if rerr.reason != reasonTooLarge {
				t.Errorf("refused for %v, want too large", rerr.reason)
			}
			if n := got.limiter.inUse(); n != 0 {
				t.Errorf("%d bytes left reserved", n)
			}
			bound := uint64(onePassBytes(len(tt.body)))
			t.Logf("%d bytes refused (%v), allocating %d KiB; the one pass may reserve %d KiB", len(tt.body), rerr, alloc>>10, bound>>10)
			// The per-byte budget stops the one pass after some hundred
			// items: without it, 1M links cost 12 MiB, 1M spans 24 MiB.
			if alloc > 1<<20 || alloc > bound {
				t.Errorf("refusing it allocated %d KiB, want under 1 MiB and under the %d KiB the one pass reserves", alloc>>10, bound>>10)
			}
		})
	}
}
