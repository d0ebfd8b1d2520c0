package server

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lagscope/lagscope/analyzer"
)

// pairingEvent is what a test wants of a fact the pairing gives: its kind
// and the key it is keyed by.
type pairingEvent struct {
	Kind  analyzer.FactKind
	Event analyzer.EventKey
}

func pairingEvents(facts []analyzer.Fact) []pairingEvent {
	var out []pairingEvent
	for _, f := range facts {
		out = append(out, pairingEvent{f.Kind, f.Event})
	}
	return out
}

// TestPairing feeds the join role's pairing batches of aliases and
// projections keyed by their producer span, in every order, and wants the
// projections re-keyed by each event of their span, or given on keyed by
// the span when no alias comes.
func TestPairing(t *testing.T) {
	const wait = 10 * time.Second
	prodTrace, prodSpan := [16]byte{0xa1}, [8]byte{0xb1}
	span := analyzer.KeyOfSpan(prodTrace, prodSpan)
	ev := func(i int) analyzer.EventKey { return analyzer.KeyOf("evt-" + string(rune('0'+i))) }
	alias := func(i int) analyzer.Fact {
		return analyzer.Fact{Kind: analyzer.FactAlias, Event: ev(i), TraceID: prodTrace, SpanID: prodSpan}
	}
	proj := analyzer.Fact{Kind: analyzer.FactProjectSpan, Event: span, Projection: "billing", TraceID: [16]byte{0xc1}, SpanID: [8]byte{0xd1}}
	appendBySpan := analyzer.Fact{Kind: analyzer.FactAppend, Event: span, TraceID: prodTrace, SpanID: prodSpan}
	other := analyzer.Fact{Kind: analyzer.FactAppend, Event: ev(9), EventID: "evt-9"}
	learned := analyzer.Fact{Kind: analyzer.FactLearned, EventType: "OrderPaid", Projection: "billing"}
	projected := func(i int) pairingEvent { return pairingEvent{analyzer.FactProject, ev(i)} }
	bySpan := pairingEvent{analyzer.FactProject, span}

	type step struct {
		at      time.Duration // after the start
		batch   []analyzer.Fact
		expire  bool // expire at `at` instead of a batch
		out     []pairingEvent
		rekeyed []pairingEvent
	}
	tests := []struct {
		name                string
		maxWaiting, aliases int // 0: defaults
		holds               bool
		steps               []step
		matched, unmatched  float64
		waitEvicted         float64
		aliasEvicted        float64
	}{
		{
			name: "alias before projection",
			steps: []step{
				{batch: []analyzer.Fact{other, alias(1)}, out: []pairingEvent{{analyzer.FactAppend, ev(9)}}},
				{at: time.Second, batch: []analyzer.Fact{proj}, rekeyed: []pairingEvent{projected(1)}},
			},
			matched: 1,
		},
		{
			name: "alias after projection, in the same batch",
			steps: []step{
				{batch: []analyzer.Fact{proj, alias(1)}, rekeyed: []pairingEvent{projected(1)}},
			},
			matched: 1,
		},
		{
			name: "projection before alias",
			steps: []step{
				{batch: []analyzer.Fact{proj}},
				{at: wait - time.Millisecond, batch: []analyzer.Fact{alias(1), learned}, rekeyed: []pairingEvent{projected(1)}},
				{at: 2 * wait, expire: true},
			},
			matched: 1,
		},
		{
			name: "multi-event alias",
			steps: []step{
				{batch: []analyzer.Fact{proj}},
				{at: time.Second, batch: []analyzer.Fact{alias(1), alias(2), alias(3), alias(2)}, rekeyed: []pairingEvent{projected(1), projected(2), projected(3)}},
				{at: 2 * time.Second, batch: []analyzer.Fact{proj}, rekeyed: []pairingEvent{projected(1), projected(2), projected(3)}},
			},
			matched: 2,
		},
		{
			name: "no alias: given on keyed by the span after the wait",
			steps: []step{
				{batch: []analyzer.Fact{proj}},
				{at: wait - time.Millisecond, expire: true},
				{at: wait, expire: true, out: []pairingEvent{bySpan}},
				{at: 2 * wait, batch: []analyzer.Fact{alias(1)}}, // too late: nothing waits
			},
			unmatched: 1,
		},
		{
			name: "the producer's append without id comes: given on after it",
			steps: []step{
				{batch: []analyzer.Fact{proj}},
				{at: time.Second, batch: []analyzer.Fact{appendBySpan}, out: []pairingEvent{{analyzer.FactAppend, span}, bySpan}},
				{at: 2 * wait, expire: true},
			},
			unmatched: 1,
		},
		{
			name:  "the Joiner holds the producer's append without id: given on at once",
			holds: true,
			steps: []step{
				{batch: []analyzer.Fact{proj}, out: []pairingEvent{bySpan}},
			},
			unmatched: 1,
		},
		{
			name:       "waiting projections past the bound",
			maxWaiting: 2,
			steps: []step{
				{batch: []analyzer.Fact{proj, proj}},
				{at: time.Second, batch: []analyzer.Fact{proj}, out: []pairingEvent{bySpan}},
				{at: 2 * time.Second, batch: []analyzer.Fact{alias(1)}, rekeyed: []pairingEvent{projected(1), projected(1)}},
			},
			matched: 2, unmatched: 1, waitEvicted: 1,
		},
		{
			name:    "aliases past the bound",
			aliases: 16, // 8 a generation
			steps: func() []step {
				var batch []analyzer.Fact
				for i := range 17 {
					batch = append(batch, analyzer.Fact{Kind: analyzer.FactAlias, Event: ev(1), TraceID: [16]byte{byte(i + 1)}, SpanID: prodSpan})
				}
				// The first 8 are dropped when the third generation
				// starts; the 9th is still there.
				p := func(i int) analyzer.Fact {
					f := proj
					f.Event = analyzer.KeyOfSpan([16]byte{byte(i + 1)}, prodSpan)
					return f
				}
				return []step{
					{batch: batch},
					{batch: []analyzer.Fact{p(8), p(0)}, rekeyed: []pairingEvent{projected(1)}},
					{at: wait, expire: true, out: []pairingEvent{{analyzer.FactProject, p(0).Event}}},
				}
			}(),
			matched: 1, unmatched: 1, aliasEvicted: 8,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := analyzer.DefaultConfig()
			cfg.Join.CommandWait = wait
			if tt.maxWaiting > 0 {
				cfg.Join.MaxPendingProjections = tt.maxWaiting
			}
			if tt.aliases > 0 {
				cfg.Join.MaxTraceSpans = 8 * tt.aliases
			}
			m := pairingMetrics{
				matched: prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), unmatched: prometheus.NewCounter(prometheus.CounterOpts{Name: "u"}),
				aliasEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "a"}), waitEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}),
			}
			var holds func(analyzer.EventKey) bool
			if tt.holds {
				holds = func(k analyzer.EventKey) bool { return k == span }
			}
			p := newPairing(cfg, m, holds)
			start := time.Unix(1_700_000_000, 0)
			for i, st := range tt.steps {
				now := start.Add(st.at).UnixNano()
				var out, rekeyed []analyzer.Fact
				if st.expire {
					out = p.expire(nil, now, false)
				} else {
					// What the Joiner joins: the batch's facts of the
					// kinds it joins (it skips the others), then extra.
					batch := append([]analyzer.Fact(nil), st.batch...)
					var extra []analyzer.Fact
					extra, rekeyed = p.pair(nil, nil, batch, now)
					for _, f := range batch {
						if f.Kind >= analyzer.FactAppend && f.Kind <= analyzer.FactQuery {
							out = append(out, f)
						}
					}
					out = append(out, extra...)
				}
				if diff := cmp.Diff(st.out, pairingEvents(out)); diff != "" {
					t.Errorf("step %d: facts for the Joiner (-want +got):\n%s", i, diff)
				}
				if diff := cmp.Diff(st.rekeyed, pairingEvents(rekeyed)); diff != "" {
					t.Errorf("step %d: facts to publish again (-want +got):\n%s", i, diff)
				}
				for _, f := range append(out, rekeyed...) {
					if f.Kind == analyzer.FactProject && f.Projection != "billing" {
						t.Errorf("step %d: projection %q, want the fact's own (billing)", i, f.Projection)
					}
				}
			}
			got := map[string]float64{
				"matched": testutil.ToFloat64(m.matched), "unmatched": testutil.ToFloat64(m.unmatched),
				"waitEvicted": testutil.ToFloat64(m.waitEvicted), "aliasEvicted": testutil.ToFloat64(m.aliasEvicted),
			}
			want := map[string]float64{"matched": tt.matched, "unmatched": tt.unmatched, "waitEvicted": tt.waitEvicted, "aliasEvicted": tt.aliasEvicted}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("counters (-want +got):\n%s", diff)
			}
			if n := p.waiting(); n != 0 && tt.name != "waiting projections past the bound" {
				t.Errorf("%d projections still waiting at the end", n)
			}
		})
	}
}

// TestPairingHandOver: at a graceful stop, the projections still waiting
// are given back as they came, to be published again to their partition.
func TestPairingHandOver(t *testing.T) {
	m := pairingMetrics{
		matched: prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), unmatched: prometheus.NewCounter(prometheus.CounterOpts{Name: "u"}),
		aliasEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "a"}), waitEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}),
	}
	p := newPairing(analyzer.DefaultConfig(), m, nil)
	span := analyzer.KeyOfSpan([16]byte{1}, [8]byte{2})
	proj := analyzer.Fact{Kind: analyzer.FactProjectSpan, Event: span, Projection: "billing"}
	p.pair(nil, nil, []analyzer.Fact{proj}, 1)
	got := pairingEvents(p.handOver(nil))
	if diff := cmp.Diff([]pairingEvent{{analyzer.FactProjectSpan, span}}, got); diff != "" {
		t.Errorf("handed over (-want +got):\n%s", diff)
	}
	if n := p.waiting(); n != 0 {
		t.Errorf("%d still waiting after the hand-over, want 0", n)
	}
}
