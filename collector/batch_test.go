package collector

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/synth"
)

var _ BatchConsumer = discard{}

// batchRecorder is a Consumer and a BatchConsumer that keeps a copy of
// what it gets by each.
type batchRecorder struct {
	mu      sync.Mutex
	batches []spanbatch.Batch // copies: the receiver reuses what it hands on
	traces  []ptrace.Traces
}

func (c *batchRecorder) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := ptrace.NewTraces()
	td.CopyTo(cp)
	c.traces = append(c.traces, cp)
	return nil
}

func (c *batchRecorder) ConsumeBatch(_ context.Context, b *spanbatch.Batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, cloneBatch(b))
	return nil
}

func (c *batchRecorder) got() ([]spanbatch.Batch, []ptrace.Traces) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches), slices.Clone(c.traces)
}

// cloneBatch copies b's slices. Their strings and bytes are b's own, never
// the request's, and a Reset drops them without reusing them.
func cloneBatch(b *spanbatch.Batch) spanbatch.Batch {
	return spanbatch.Batch{
		Resources:     slices.Clone(b.Resources),
		Scopes:        slices.Clone(b.Scopes),
		Spans:         slices.Clone(b.Spans),
		Events:        slices.Clone(b.Events),
		Links:         slices.Clone(b.Links),
		ResourceAttrs: slices.Clone(b.ResourceAttrs),
		SpanAttrs:     slices.Clone(b.SpanAttrs),
		EventAttrs:    slices.Clone(b.EventAttrs),
	}
}

// TestBatchConsumer sends the same spans over gRPC and OTLP/HTTP, as
// protobuf and as JSON, to a selectively decoding receiver: a BatchConsumer
// gets the protobuf requests by ConsumeBatch, as the Batch FromTraces makes
// of the spans, and the JSON one by ConsumeTraces; a Consumer without
// ConsumeBatch gets the same of all three by ConsumeTraces. Without
// LazyDecode, every request is pdata's.
func TestBatchConsumer(t *testing.T) {
	td, _ := synth.New(synth.Config{TracesPerRequest: 4}).Next(time.Unix(1_700_000_000, 0))
	proto, json := mustMarshal(t, td), mustMarshalJSON(t, td)
	want := relevant(td, &analysisSel)
	send := func(t *testing.T, r *Receiver) {
		t.Helper()
		if _, err := exportGRPC(t, r, proto); err != nil {
			t.Fatalf("gRPC export: %v", err)
		}
		for _, req := range []struct {
			contentType string
			body        []byte
		}{{"application/x-protobuf", proto}, {"application/json", json}} {
			if res, err := postTraces(r, req.contentType, "", req.body); err != nil || res.code != http.StatusOK {
				t.Fatalf("HTTP export (%s): %v, %v", req.contentType, res.code, err)
			}
		}
	}
	for _, lazy := range []bool{true, false} {
		cfg := testConfig()
		cfg.LazyDecode = lazy
		cfg.Keep = analysisSel
		t.Run(fmt.Sprintf("lazy=%v/BatchConsumer", lazy), func(t *testing.T) {
			var rec batchRecorder
			r, _ := startReceiver(t, cfg, &rec)
			send(t, r)
			batches, traces := rec.got()
			wantBatches, wantTraces := 2, 1 // gRPC and HTTP protobuf; JSON
			if !lazy {
				wantBatches, wantTraces = 0, 3
			}
			if len(batches) != wantBatches || len(traces) != wantTraces {
				t.Fatalf("consumed %d batches and %d traces, want %d and %d", len(batches), len(traces), wantBatches, wantTraces)
			}
			for i := range batches {
				if diff := diffBatch(&batches[i], td, analysisKeys); diff != "" {
					t.Errorf("batch %d differs from FromTraces of the spans sent (-got +want):\n%s", i, diff)
				}
				if diff := cmp.Diff(relevant(batches[i].ToTraces(), &analysisSel), want); diff != "" {
					t.Errorf("batch %d: ToTraces differs from the spans sent (-got +want):\n%s", i, diff)
				}
			}
			for i, got := range traces {
				if diff := cmp.Diff(relevant(got, &analysisSel), want); diff != "" {
					t.Errorf("traces %d differ from the spans sent (-got +want):\n%s", i, diff)
				}
			}
		})
		t.Run(fmt.Sprintf("lazy=%v/Consumer", lazy), func(t *testing.T) {
			var mu sync.Mutex
			var got [][]relevantResource
			r, _ := startReceiver(t, cfg, consumerFunc(func(_ context.Context, td ptrace.Traces) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, relevant(td, &analysisSel))
				return nil
			}))
			send(t, r)
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(got, [][]relevantResource{want, want, want}); diff != "" {
				t.Errorf("consumed (-got +want):\n%s", diff)
			}
		})
	}
}

// zeroedIDTraces returns 3 resources of 2 scopes of 3 spans each, with
// kept and unkept attributes, events and links, and the ids of the spans
// zeroed that bad names: "r.s.k" its trace id, "r.s.k/span" its span id,
// "r.s.k/both" both.
func zeroedIDTraces(bad ...string) ptrace.Traces {
	td := ptrace.NewTraces()
	for r := range 3 {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("svc-%d", r))
		rs.Resource().Attributes().PutStr("host.name", "h")
		for s := range 2 {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName("lib")
			for k := range 3 {
				name := fmt.Sprintf("%d.%d.%d", r, s, k)
				sp := ss.Spans().AppendEmpty()
				sp.SetTraceID(pcommon.TraceID{1, byte(r), byte(s), byte(k)})
				sp.SetSpanID(pcommon.SpanID{1, byte(r), byte(s), byte(k)})
				switch {
				case slices.Contains(bad, name):
					sp.SetTraceID(pcommon.TraceID{})
				case slices.Contains(bad, name+"/span"):
					sp.SetSpanID(pcommon.SpanID{})
				case slices.Contains(bad, name+"/both"):
					sp.SetTraceID(pcommon.TraceID{})
					sp.SetSpanID(pcommon.SpanID{})
				}
				sp.SetName(name)
				sp.Attributes().PutStr("cqrs.operation", "append")
				sp.Attributes().PutInt("cqrs.aggregate.version", int64(k))
				sp.Attributes().PutStr("unread", name)
				for e := range k {
					ev := sp.Events().AppendEmpty()
					ev.SetName("cqrs.event")
					ev.Attributes().PutStr("cqrs.event.id", fmt.Sprintf("%s-e%d", name, e))
					ev.Attributes().PutStr("unread", "x")
				}
				for l := range 2 - k%2 {
					link := sp.Links().AppendEmpty()
					link.SetTraceID(pcommon.TraceID{2, byte(l)})
					link.SetSpanID(pcommon.SpanID{2, byte(k)})
				}
			}
		}
	}
	return td
}

// invalidIDCases are the spans with bad ids of the removal tests.
var invalidIDCases = []struct {
	name                 string
	bad                  []string
	wantBadTrace, badSpn int
}{
	{"all valid", nil, 0, 0},
	{"one trace id", []string{"1.0.1"}, 1, 0},
	{"span ids, first and last", []string{"0.0.0/span", "2.1.2/span"}, 0, 2},
	{"both zero counts as trace", []string{"1.1.2/both"}, 1, 0},
	{"a whole scope", []string{"0.1.0", "0.1.1/span", "0.1.2/both"}, 2, 1},
	{"a whole resource", []string{"1.0.0", "1.0.1", "1.0.2", "1.1.0/span", "1.1.1/span", "1.1.2"}, 4, 2},
	{"all but one", allSpansBut("2.0.1"), 17, 0},
	{"all", allSpansBut(""), 18, 0},
}

func allSpansBut(keep string) []string {
	var out []string
	for r := range 3 {
		for s := range 2 {
			for k := range 3 {
				if name := fmt.Sprintf("%d.%d.%d", r, s, k); name != keep {
					out = append(out, name)
				}
			}
		}
	}
	return out
}

// TestRemoveInvalidBatchSpans checks that removing the spans with bad ids
// from a Batch (FromTraces of everything, and the selective decoder's)
// counts as removeInvalidSpans of pdata counts, and leaves the Batch that
// FromTraces makes of what removeInvalidSpans leaves: so its ToTraces too.
func TestRemoveInvalidBatchSpans(t *testing.T) {
	for _, tt := range invalidIDCases {
		t.Run(tt.name, func(t *testing.T) {
			td := zeroedIDTraces(tt.bad...)
			want := ptrace.NewTraces()
			td.CopyTo(want)
			wantBadTrace, wantBadSpan := removeInvalidSpans(want)
			if wantBadTrace != tt.wantBadTrace || wantBadSpan != tt.badSpn {
				t.Fatalf("removeInvalidSpans = %d, %d; want %d, %d", wantBadTrace, wantBadSpan, tt.wantBadTrace, tt.badSpn)
			}

			everything := new(spanbatch.Batch)
			everything.FromTraces(td, nil)
			selective, fb := analysisDecoder.decode(mustMarshal(t, td))
			if fb != fallbackNone {
				t.Fatalf("selective decoder declined: %v", fb)
			}
			defer putBatch(selective)
			for _, b := range []struct {
				name  string
				batch *spanbatch.Batch
				keys  spanbatch.Filter
				sel   *Selection
			}{{"everything", everything, nil, nil}, {"selective", selective, analysisKeys, &analysisSel}} {
				badTrace, badSpan := removeInvalidBatchSpans(b.batch)
				if badTrace != wantBadTrace || badSpan != wantBadSpan {
					t.Errorf("%s: removeInvalidBatchSpans = %d, %d; want %d, %d", b.name, badTrace, badSpan, wantBadTrace, wantBadSpan)
				}
				if diff := diffBatch(b.batch, want, b.keys); diff != "" {
					t.Errorf("%s: left (-got +FromTraces of pdata's):\n%s", b.name, diff)
				}
				if diff := cmp.Diff(relevant(b.batch.ToTraces(), nil), relevant(want, b.sel)); diff != "" {
					t.Errorf("%s: ToTraces of what is left (-got +pdata's):\n%s", b.name, diff)
				}
				if diff := cmp.Diff(spanNames(b.batch.ToTraces()), spanNames(want)); diff != "" {
					t.Errorf("%s: spans left (-got +want):\n%s", b.name, diff)
				}
			}
		})
	}
}

// TestExportInvalidSpans sends requests with invalid ids through the
// core's decode and export, selectively decoded (a Batch, to a
// BatchConsumer) and by pdata: the responses, the span metrics and what
// the consumer got must be the same.
func TestExportInvalidSpans(t *testing.T) {
	type outcome struct {
		Rejected                    int64
		Message                     string
		Received, BadTrace, BadSpan float64
		Consumed                    [][]relevantResource
	}
	export := func(t *testing.T, buf []byte, lazy bool) outcome {
		t.Helper()
		m, err := newMetrics(nil)
		if err != nil {
			t.Fatal(err)
		}
		var rec batchRecorder
		core := &tracesCore{next: &rec, limiter: newByteLimiter(1 << 30), metrics: m, logger: slog.New(slog.DiscardHandler), selective: testDecoder(lazy), limits: DefaultConfig().decodeLimits()}
		req, reserved, rerr := core.decode(buf, false)
		defer core.limiter.release(reserved)
		defer req.free()
		if rerr != nil {
			t.Fatal(rerr)
		}
		if (req.batch != nil) != lazy {
			t.Fatalf("lazy %v: decoded a Batch: %v", lazy, req.batch != nil)
		}
		resp, rerr := core.export(context.Background(), transportHTTP, req, buf, false)
		if rerr != nil {
			t.Fatal(rerr)
		}
		batches, traces := rec.got()
		if lazy && len(traces) > 0 || !lazy && len(batches) > 0 {
			t.Errorf("lazy %v: consumed %d batches and %d traces", lazy, len(batches), len(traces))
		}
		out := outcome{
			Rejected: resp.PartialSuccess().RejectedSpans(),
			Message:  resp.PartialSuccess().ErrorMessage(),
			Received: testutil.ToFloat64(m.receivedSpans[transportHTTP]),
			BadTrace: testutil.ToFloat64(m.rejectedSpans[reasonInvalidTraceID]),
			BadSpan:  testutil.ToFloat64(m.rejectedSpans[reasonInvalidSpanID]),
		}
		for i := range batches {
			out.Consumed = append(out.Consumed, relevant(batches[i].ToTraces(), &analysisSel))
		}
		for _, td := range traces {
			out.Consumed = append(out.Consumed, relevant(td, &analysisSel))
		}
		return out
	}
	for _, tt := range invalidIDCases {
		t.Run(tt.name, func(t *testing.T) {
			buf := mustMarshal(t, zeroedIDTraces(tt.bad...))
			got, want := export(t, buf, true), export(t, buf, false)
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("selectively decoded (-got +pdata):\n%s", diff)
			}
			if int(want.Rejected) != tt.wantBadTrace+tt.badSpn || (want.Consumed == nil) != (tt.name == "all") {
				t.Errorf("pdata: rejected %d spans, consumed %d requests", want.Rejected, len(want.Consumed))
			}
		})
	}
}
