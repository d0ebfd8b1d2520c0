package server

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
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

func testPairingMetrics() pairingMetrics {
	return pairingMetrics{
		matched: prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), unmatched: prometheus.NewCounter(prometheus.CounterOpts{Name: "u"}),
		aliasEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "a"}), waitEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}),
	}
}

// TestPairing feeds the join role's pairing batches of appends and of
// copies of projections keyed by their producer span, in every order, as
// the instance of the projection's home partition or another, and wants
// the projections joined to each event of the span's appends held here
// (with the news for the home partition), or keyed by the span at home
// when no instance resolves them.
func TestPairing(t *testing.T) {
	const wait = 10 * time.Second
	const parts = 4
	prodTrace, prodSpan := [16]byte{0xa1}, [8]byte{0xb1}
	span := analyzer.KeyOfSpan(prodTrace, prodSpan)
	home := partitionOf(span, parts)
	away := (home + 1) % parts
	ev := func(i int) analyzer.EventKey { return analyzer.KeyOf("evt-" + string(rune('0'+i))) }
	appended := func(i int) analyzer.Fact {
		id := "evt-" + string(rune('0'+i))
		return analyzer.Fact{Kind: analyzer.FactAppend, Event: analyzer.KeyOf(id), EventID: id, TraceID: prodTrace, SpanID: prodSpan}
	}
	proj := analyzer.Fact{Kind: analyzer.FactProjectSpan, Event: span, Projection: "billing", TraceID: [16]byte{0xc1}, SpanID: [8]byte{0xd1}}
	proj2 := proj
	proj2.SpanID = [8]byte{0xd2}
	claim := analyzer.Fact{Kind: analyzer.FactResolved, Event: span, TraceID: proj.TraceID, SpanID: proj.SpanID}
	appendBySpan := analyzer.Fact{Kind: analyzer.FactAppend, Event: span, TraceID: prodTrace, SpanID: prodSpan}
	learned := analyzer.Fact{Kind: analyzer.FactLearned, EventType: "OrderPaid", Projection: "billing"}
	app := func(i int) pairingEvent { return pairingEvent{analyzer.FactAppend, ev(i)} }
	projected := func(i int) pairingEvent { return pairingEvent{analyzer.FactProject, ev(i)} }
	bySpan := pairingEvent{analyzer.FactProject, span}
	news := pairingEvent{analyzer.FactResolved, span}

	type step struct {
		at       time.Duration // after the start
		q        int           // the batch's partition
		batch    []analyzer.Fact
		expire   bool // expire at `at` instead of a batch
		out      []pairingEvent
		resolved []pairingEvent
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
			name: "append before projection",
			steps: []step{
				{batch: []analyzer.Fact{appended(1), learned}, out: []pairingEvent{app(1)}},
				{at: time.Second, q: away, batch: []analyzer.Fact{proj}, out: []pairingEvent{projected(1)}, resolved: []pairingEvent{news}},
				{at: 3 * wait, expire: true},
			},
			matched: 1,
		},
		{
			name: "append before projection, at home: no news to send",
			steps: []step{
				{batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1)}},
				{at: time.Second, q: home, batch: []analyzer.Fact{proj}, out: []pairingEvent{projected(1)}},
				{at: 3 * wait, expire: true},
			},
			matched: 1,
		},
		{
			name: "append after projection, in the same batch",
			steps: []step{
				{q: away, batch: []analyzer.Fact{proj, appended(1)}, out: []pairingEvent{app(1), projected(1)}, resolved: []pairingEvent{news}},
				{at: 3 * wait, expire: true},
			},
			matched: 1,
		},
		{
			name: "projection before append",
			steps: []step{
				{q: away, batch: []analyzer.Fact{proj}},
				{at: wait - time.Millisecond, batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1), projected(1)}, resolved: []pairingEvent{news}},
				{at: wait, expire: true},
			},
			matched: 1,
		},
		{
			name: "several events of the span",
			steps: []step{
				{q: away, batch: []analyzer.Fact{proj}},
				{at: time.Second, batch: []analyzer.Fact{appended(1), appended(2), appended(2)}, out: []pairingEvent{app(1), app(2), app(2), projected(1), projected(2)}, resolved: []pairingEvent{news}},
				{at: 2 * time.Second, batch: []analyzer.Fact{appended(3)}, out: []pairingEvent{app(3), projected(3)}},
				{at: 3 * time.Second, q: away, batch: []analyzer.Fact{proj2}, out: []pairingEvent{projected(1), projected(2), projected(3)}, resolved: []pairingEvent{news}},
				{at: 3 * wait, expire: true},
			},
			matched: 2,
		},
		{
			name: "no instance resolves it: home joins it keyed by the span after twice the wait",
			steps: []step{
				{q: home, batch: []analyzer.Fact{proj}},
				{at: wait, expire: true},
				{at: 2*wait - time.Millisecond, expire: true},
				{at: 2 * wait, expire: true, out: []pairingEvent{bySpan}},
				{at: 3 * wait, batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1)}}, // too late: nothing waits
			},
			unmatched: 1,
		},
		{
			name: "another partition's copy is dropped after the wait",
			steps: []step{
				{q: away, batch: []analyzer.Fact{proj}},
				{at: wait, expire: true},
				{at: wait, batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1)}},
			},
		},
		{
			name: "resolved by another instance",
			steps: []step{
				{q: home, batch: []analyzer.Fact{proj}},
				{at: wait, q: home, batch: []analyzer.Fact{claim, claim}},
				{at: 3 * wait, expire: true},
			},
		},
		{
			name: "resolved by another instance before the copy came",
			steps: []step{
				{q: home, batch: []analyzer.Fact{claim}},
				{at: time.Second, q: home, batch: []analyzer.Fact{proj}},
				{at: 3 * wait, expire: true},
			},
		},
		{
			name: "the producer's append without id comes: home's copy follows it",
			steps: []step{
				{q: home, batch: []analyzer.Fact{proj}},
				{at: time.Second, q: home, batch: []analyzer.Fact{appendBySpan}, out: []pairingEvent{{analyzer.FactAppend, span}, bySpan}},
				{at: 3 * wait, expire: true},
			},
			unmatched: 1,
		},
		{
			name:  "the Joiner holds the producer's append without id: home's copy joins it at once",
			holds: true,
			steps: []step{
				{q: away, batch: []analyzer.Fact{proj}},
				{at: time.Second, q: home, batch: []analyzer.Fact{proj}, out: []pairingEvent{bySpan}},
				{at: 3 * wait, expire: true},
			},
			unmatched: 1,
		},
		{
			name: "two copies on one instance",
			steps: []step{
				{batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1)}},
				{q: away, batch: []analyzer.Fact{proj}, out: []pairingEvent{projected(1)}, resolved: []pairingEvent{news}},
				{q: home, batch: []analyzer.Fact{proj, claim}}, // its own news
				{at: 3 * wait, expire: true},
			},
			matched: 1,
		},
		{
			name:       "waiting projections past the bound",
			maxWaiting: 2,
			steps: func() []step {
				p := func(i byte) analyzer.Fact {
					f := proj
					f.SpanID = [8]byte{i}
					return f
				}
				return []step{
					{q: home, batch: []analyzer.Fact{p(1), p(2)}},
					{at: time.Second, q: home, batch: []analyzer.Fact{p(3)}, out: []pairingEvent{bySpan}},
					{at: 2 * time.Second, batch: []analyzer.Fact{appended(1)}, out: []pairingEvent{app(1), projected(1), projected(1)}},
					{at: 3 * wait, expire: true},
				}
			}(),
			matched: 2, unmatched: 1, waitEvicted: 1,
		},
		{
			name:    "aliases past the bound",
			aliases: 16, // 8 a generation
			steps: func() []step {
				var batch []analyzer.Fact
				var out []pairingEvent
				for i := range 17 {
					f := appended(1)
					f.TraceID = [16]byte{byte(i + 1)}
					batch = append(batch, f)
					out = append(out, app(1))
				}
				// The first 8 are dropped when the third generation
				// starts; the 9th is still there.
				p := func(i int) analyzer.Fact {
					f := proj
					f.Event = analyzer.KeyOfSpan([16]byte{byte(i + 1)}, prodSpan)
					return f
				}
				return []step{
					{batch: batch, out: out},
					{q: away, batch: []analyzer.Fact{p(8), p(0)}, out: []pairingEvent{projected(1)}, resolved: []pairingEvent{{analyzer.FactResolved, p(8).Event}}},
					{at: 3 * wait, expire: true},
				}
			}(),
			matched: 1, aliasEvicted: 8,
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
			m := testPairingMetrics()
			var holds func(analyzer.EventKey) bool
			if tt.holds {
				holds = func(k analyzer.EventKey) bool { return k == span }
			}
			p := newPairing(cfg, m, holds)
			start := time.Unix(1_700_000_000, 0)
			for i, st := range tt.steps {
				now := start.Add(st.at).UnixNano()
				var out, resolved []analyzer.Fact
				if st.expire {
					out = p.expire(nil, now, false)
				} else {
					// What the Joiner joins: the batch's facts of the
					// kinds it joins (it skips the others), then extra.
					batch := append([]analyzer.Fact(nil), st.batch...)
					var extra []analyzer.Fact
					extra, resolved = p.pair(nil, nil, batch, st.q, parts, now)
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
				if diff := cmp.Diff(st.resolved, pairingEvents(resolved)); diff != "" {
					t.Errorf("step %d: news for the home partition (-want +got):\n%s", i, diff)
				}
				for _, f := range out {
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
			if n := p.waiting(); n != 0 {
				t.Errorf("%d projections still held at the end, want 0", n)
			}
		})
	}
}

// TestPairingHandOver: at a graceful stop, the projections no instance
// resolved yet are given back as they came, to be published again; those
// resolved are not.
func TestPairingHandOver(t *testing.T) {
	p := newPairing(analyzer.DefaultConfig(), testPairingMetrics(), nil)
	span := analyzer.KeyOfSpan([16]byte{1}, [8]byte{2})
	proj := analyzer.Fact{Kind: analyzer.FactProjectSpan, Event: span, Projection: "billing", SpanID: [8]byte{3}}
	done := proj
	done.SpanID = [8]byte{4}
	p.pair(nil, nil, []analyzer.Fact{proj, done, {Kind: analyzer.FactResolved, Event: span, SpanID: done.SpanID}}, 0, 0, 1)
	got := pairingEvents(p.handOver(nil))
	if diff := cmp.Diff([]pairingEvent{{analyzer.FactProjectSpan, span}}, got); diff != "" {
		t.Errorf("handed over (-want +got):\n%s", diff)
	}
	if n := p.waiting(); n != 0 {
		t.Errorf("%d still held after the hand-over, want 0", n)
	}
}

// BenchmarkPairingAppends measures what the pairing adds to the join of
// every append with an event id: the insert of its event by producer span
// (batches of 4 appends of new spans, the table at its default size and
// full, so that it rotates).
func BenchmarkPairingAppends(b *testing.B) {
	p := newPairing(analyzer.DefaultConfig(), testPairingMetrics(), nil)
	batch := make([]analyzer.Fact, 4)
	var extra, resolved []analyzer.Fact
	n := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		for i := range batch {
			n++
			var trace [16]byte
			binary.BigEndian.PutUint64(trace[:8], n*0x9e3779b97f4a7c15)
			batch[i] = analyzer.Fact{Kind: analyzer.FactAppend, Event: analyzer.EventKey{byte(n)}, EventID: "e", TraceID: trace, SpanID: [8]byte{1}}
		}
		extra, resolved = p.pair(extra[:0], resolved[:0], batch, 0, 0, 1)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/append")
}

// TestBatchesSendSpanKeyedProjectionsEverywhere: the ingest role sends a
// projection keyed by its producer span to every partition, and every
// batch's message key routes it to its own partition (that of its first
// fact would send all the copies to the span's).
func TestBatchesSendSpanKeyedProjectionsEverywhere(t *testing.T) {
	span := analyzer.KeyOfSpan([16]byte{7}, [8]byte{8})
	sc := &ingestScratch{facts: []analyzer.Fact{
		{Kind: analyzer.FactProjectSpan, Event: span, Projection: "billing"},
		{Kind: analyzer.FactAppend, Event: analyzer.KeyOf("e1"), EventID: "e1"},
	}}
	sent, err := sc.batches(partitions, func() factwire.Header { return factwire.Header{Producer: 1, Seq: 1} })
	if err != nil {
		t.Fatal(err)
	}
	if want := partitions + 1; sent != want {
		t.Errorf("batches sent %d facts, want %d", sent, want)
	}
	if len(sc.msgs) != partitions {
		t.Fatalf("%d messages, want one a partition (%d)", len(sc.msgs), partitions)
	}
	var parts atomic.Int64
	bal := keyBalancer{&parts}
	seen := map[int]bool{}
	for _, m := range sc.msgs {
		_, facts, err := factwire.Decode(nil, m.Value)
		if err != nil {
			t.Fatal(err)
		}
		p := bal.Balance(m, 0, 1, 2, 3)
		seen[p] = true
		copies := 0
		for _, f := range facts {
			switch f.Kind {
			case analyzer.FactProjectSpan:
				copies++
			case analyzer.FactAppend:
				if q := partitionOf(f.Event, partitions); q != p {
					t.Errorf("the append went to partition %d, want its event's, %d", p, q)
				}
			}
		}
		if copies != 1 {
			t.Errorf("partition %d got %d copies of the projection, want 1", p, copies)
		}
	}
	if len(seen) != partitions {
		t.Errorf("the messages went to partitions %v, want each of the %d", seen, partitions)
	}
}
