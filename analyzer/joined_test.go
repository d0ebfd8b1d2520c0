package analyzer

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// joinTest drives one Joiner shard with facts at times relative to base.
type joinTest struct {
	t   *testing.T
	j   *Joiner
	s   *joinShard
	reg *prometheus.Registry
}

func newJoinTest(t *testing.T, mutate func(*Config)) *joinTest {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Join.Shards = 1
	cfg.Join.Expected = map[string][]string{"T": {"a", "b"}}
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	j, err := NewJoiner(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return &joinTest{t: t, j: j, s: j.shards[0], reg: reg}
}

func testKey(id int) EventKey {
	var k EventKey
	putUint64(k[:8], mix64(uint64(id)))
	putUint64(k[8:], uint64(id))
	return k
}

func (jt *joinTest) appendAt(id int, at time.Duration) {
	now := base.Add(at).UnixNano()
	jt.j.apply([]Fact{{Kind: FactAppend, Event: testKey(id), EventType: "T", AggregateType: "A",
		Command: "none", Start: now - 1e6, End: now}}, now)
}

func (jt *joinTest) projectAt(id int, p string, at time.Duration) {
	now := base.Add(at).UnixNano()
	jt.j.apply([]Fact{{Kind: FactProject, Event: testKey(id), EventType: "T", Projection: p,
		Start: now - 1e6, End: now}}, now)
}

func (jt *joinTest) tick(at time.Duration) { jt.j.tick(base.Add(at).UnixNano(), false, 0) }

func (jt *joinTest) count(name, projection string) float64 {
	jt.t.Helper()
	return counter(jt.t, jt.reg, name, "projection", projection)
}

// TestJoinedStore follows events through the joined store: moved there when
// every expected projection has shown them, still recognised for duplicates
// and late projections until retention or the store's bound, and counted as
// the pending deque counted them.
func TestJoinedStore(t *testing.T) {
	type want struct {
		live, joined, unproj, entries int
		duplicatedA, lateC, unprojC   float64
		projectedC                    float64
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		run    func(jt *joinTest)
		want   want
	}{
		{
			name: "joined, then duplicated within retention",
			run: func(jt *joinTest) {
				jt.appendAt(1, 0)
				jt.projectAt(1, "a", time.Second)
				jt.projectAt(1, "b", 2*time.Second)
				jt.tick(time.Minute)
				jt.projectAt(1, "a", 4*time.Minute)
			},
			want: want{joined: 1, entries: 1, duplicatedA: 1},
		},
		{
			name: "forgotten past retention: a projection then waits for its event",
			run: func(jt *joinTest) {
				jt.appendAt(1, 0)
				jt.projectAt(1, "a", time.Second)
				jt.projectAt(1, "b", 2*time.Second)
				jt.tick(5*time.Minute + time.Millisecond)
				jt.projectAt(1, "a", 6*time.Minute)
			},
			want: want{entries: 1},
		},
		{
			name: "a projection learned after the join: unprojected at the deadline, then late",
			run: func(jt *joinTest) {
				jt.appendAt(1, 0)
				jt.projectAt(1, "a", time.Second)
				jt.projectAt(1, "b", time.Second)
				jt.appendAt(2, time.Second)
				jt.projectAt(2, "c", 2*time.Second) // c now expected for T
				jt.tick(31 * time.Second)
				jt.projectAt(1, "c", 40*time.Second)
				jt.projectAt(1, "c", 41*time.Second) // and a duplicate of it
			},
			// Event 2 waits for a and b in the unprojected deque.
			want: want{joined: 1, unproj: 1, entries: 2, lateC: 1, unprojC: 1, projectedC: 2},
		},
		{
			name:   "the bound forgets the oldest joined, which is no eviction",
			mutate: func(c *Config) { c.Join.MaxJoinedEvents = 2 },
			run: func(jt *joinTest) {
				for id := 1; id <= 3; id++ {
					jt.appendAt(id, 0)
					jt.projectAt(id, "a", time.Second)
					jt.projectAt(id, "b", time.Second)
				}
				jt.projectAt(1, "a", 2*time.Second) // waits for its event
				jt.projectAt(3, "a", 2*time.Second) // duplicated
			},
			want: want{joined: 2, entries: 3, duplicatedA: 1},
		},
		{
			name: "a pending event ahead of joined ones: its deadline clears the tombstones",
			run: func(jt *joinTest) {
				jt.appendAt(1, 0)
				jt.projectAt(1, "a", time.Second)
				for id := 2; id <= 5; id++ {
					jt.appendAt(id, 0)
					jt.projectAt(id, "a", time.Second)
					jt.projectAt(id, "b", time.Second)
				}
				if got := jt.s.recent.len(); got != 5 {
					jt.t.Errorf("pending deque before the deadline = %d, want 5 (one live, four tombstones)", got)
				}
				jt.tick(31 * time.Second)
				if got := jt.s.recent.len(); got != 0 {
					jt.t.Errorf("pending deque after the deadline = %d, want 0", got)
				}
			},
			want: want{joined: 4, unproj: 1, entries: 5},
		},
		{
			name:   "a full join moves a waiting event to stalled rather than evict it for the tombstones behind it",
			mutate: func(c *Config) { c.Join.MaxPendingEvents = 8 },
			run: func(jt *joinTest) {
				jt.appendAt(1, 0)
				jt.projectAt(1, "a", time.Second)
				for id := 2; id <= 40; id++ {
					jt.appendAt(id, time.Second)
					jt.projectAt(id, "a", time.Second)
					jt.projectAt(id, "b", time.Second)
				}
				if got := jt.s.stalled.live; got != 1 {
					jt.t.Errorf("stalled = %d, want 1", got)
				}
				jt.tick(31 * time.Second)
			},
			want: want{joined: 39, unproj: 1, entries: 40},
		},
		{
			name:   "a full join of events no projection showed yet evicts the oldest, counted",
			mutate: func(c *Config) { c.Join.MaxPendingEvents = 8 },
			run: func(jt *joinTest) {
				for id := 1; id <= 10; id++ {
					jt.appendAt(id, 0)
				}
				if got := counter(jt.t, jt.reg, "lagscope_join_evictions_total", "reason", "capacity"); got != 2 {
					jt.t.Errorf("evictions = %v, want 2", got)
				}
			},
			want: want{live: 8, entries: 8},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jt := newJoinTest(t, tt.mutate)
			tt.run(jt)
			s := jt.s
			got := want{
				live: s.recent.live + s.stalled.live, joined: s.joined.events.len(), unproj: s.missed.len(), entries: jt.j.Entries(),
				duplicatedA: jt.count("cqrs_events_duplicated_total", "a"),
				lateC:       jt.count("cqrs_events_late_total", "c"),
				unprojC:     jt.count("cqrs_events_unprojected_total", "c"),
				projectedC:  jt.count("cqrs_events_projected_total", "c"),
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got := counter(t, jt.reg, "lagscope_join_evictions_total", "reason", "capacity"); got != 0 && tt.want.live == 0 {
				t.Errorf("evictions = %v, want 0", got)
			}
		})
	}
}

// TestJoinedStoreChangesNoMetric runs one random stream (late, duplicated,
// early and missing projections, every projection expected by
// configuration) through a Joiner that moves fully joined events to the
// joined store and one that keeps them pending until their deadline, and
// wants every series of the two to be equal but lagscope_join_entries: the
// joined store retires in the order events were joined, so an event that
// joined after a later one is kept until that one's retention too (never
// less than join.retention, at most the spread of join times longer).
func TestJoinedStoreChangesNoMetric(t *testing.T) {
	projections := []string{"a", "b", "c"}
	type timed struct {
		at time.Duration
		f  Fact
	}
	var stream []timed
	rng := rand.New(rand.NewPCG(7, 8))
	const events = 20000
	for id := range events {
		at := time.Duration(id) * time.Millisecond * 10 // 200 s of events
		stream = append(stream, timed{at, Fact{Kind: FactAppend, Event: testKey(id), EventType: "T", AggregateType: "A",
			AggregateID: "agg" + string(rune('a'+id%20)), Version: int64(id/20 + 1), Command: "none"}})
		for _, p := range projections {
			var delays []time.Duration
			switch r := rng.IntN(100); {
			case r < 80:
				delays = []time.Duration{time.Duration(rng.IntN(2000)) * time.Millisecond}
			case r < 85:
				delays = []time.Duration{31*time.Second + time.Duration(rng.IntN(60))*time.Second} // late
			case r < 90:
				delays = []time.Duration{time.Duration(rng.IntN(1000)) * time.Millisecond, time.Duration(rng.IntN(200)) * time.Second} // duplicated
			case r < 95:
				delays = []time.Duration{-time.Duration(rng.IntN(500)) * time.Millisecond} // before its append
			}
			for _, d := range delays {
				stream = append(stream, timed{at + d, Fact{Kind: FactProject, Event: testKey(id), EventType: "T", Projection: p}})
			}
		}
	}
	slices.SortStableFunc(stream, func(x, y timed) int { return int(x.at - y.at) })

	run := func(hold bool) (string, int, int) {
		jt := newJoinTest(t, func(c *Config) { c.Join.Expected = map[string][]string{"T": projections} })
		if hold {
			for i := range jt.j.sh.learnedAt {
				jt.j.sh.learnedAt[i].Store(1 << 62) // never settled: events stay pending
			}
		}
		var nextTick time.Duration
		for _, x := range stream {
			for x.at >= nextTick {
				jt.tick(nextTick)
				nextTick += time.Second
			}
			now := base.Add(x.at).UnixNano()
			f := x.f
			f.Start, f.End = now-1e6, now
			jt.j.apply([]Fact{f}, now)
		}
		jt.tick(nextTick)
		mfs, err := jt.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if mf.GetName() == "lagscope_join_entries" {
				continue
			}
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		return buf.String(), jt.s.joined.events.len(), jt.j.Entries()
	}
	held, _, heldEntries := run(true)
	moved, joined, movedEntries := run(false)
	if joined == 0 {
		t.Fatal("no event reached the joined store: the test compares nothing")
	}
	if movedEntries < heldEntries || movedEntries > heldEntries+heldEntries/100 {
		t.Errorf("entries held: %d with the joined store, %d without; want as many, or up to 1%% more", movedEntries, heldEntries)
	}
	if diff := cmp.Diff(held, moved); diff != "" {
		t.Errorf("metrics differ (-kept pending +moved to the joined store):\n%s", diff)
	}
}

// TestJoinedStoreClassesFull: with every class slot taken (a hostile mix of
// types and projections), a fully joined event stays pending, and is still
// counted and recognised.
func TestJoinedStoreClassesFull(t *testing.T) {
	jt := newJoinTest(t, nil)
	for i := range maxClasses {
		if _, ok := jt.s.joined.class(joinedClass{seen: uint64(i) + 1<<40, typ: 9}); !ok {
			t.Fatalf("class %d did not fit", i)
		}
	}
	jt.appendAt(1, 0)
	jt.projectAt(1, "a", time.Second)
	jt.projectAt(1, "b", time.Second)
	jt.projectAt(1, "b", 2*time.Second)
	if got := jt.s.recent.live; got != 1 {
		t.Errorf("pending = %d, want 1 (no class for it in the joined store)", got)
	}
	if got := jt.count("cqrs_events_duplicated_total", "b"); got != 1 {
		t.Errorf("duplicated = %v, want 1", got)
	}
	jt.tick(31 * time.Second) // declared: to missed, as the joined store has no class for it
	if got := jt.s.missed.live; got != 1 {
		t.Errorf("missed = %d, want 1", got)
	}
	if got := jt.count("cqrs_events_unprojected_total", "a"); got != 0 {
		t.Errorf("unprojected = %v, want 0", got)
	}
}

// TestJoinedStoreConsistency checks that a projection span of an event in
// the joined store is counted as a full entry counts it: with the append's
// sampling weight, checked for broken propagation against the append's trace
// and for clock skew against its end and service.
func TestJoinedStoreConsistency(t *testing.T) {
	appendTrace := [16]byte{1}
	otherTrace := [16]byte{2}
	type want struct {
		duplicatedA, brokenA, skew, lateC, unprojC, projectedC float64
	}
	tests := []struct {
		name   string
		weight float64
		// span is the projection span sent once the event is joined,
		// relative to the append's end.
		proj     string
		trace    [16]byte
		links    uint64
		start    time.Duration
		learnedC bool // a projection c starts showing T after the join
		want     want
	}{
		{name: "duplicate, same trace", weight: 1, proj: "a", trace: appendTrace, start: time.Minute,
			want: want{duplicatedA: 1}},
		{name: "duplicate weighted by the append's weight", weight: 8, proj: "a", trace: appendTrace, start: time.Minute,
			want: want{duplicatedA: 8}},
		{name: "duplicate in another trace: broken propagation", weight: 1, proj: "a", trace: otherTrace, start: time.Minute,
			want: want{duplicatedA: 1, brokenA: 1}},
		{name: "duplicate in another trace linked to the append's", weight: 1, proj: "a", trace: otherTrace,
			links: LinkBloom(appendTrace), start: time.Minute, want: want{duplicatedA: 1}},
		{name: "duplicate starting before the append ended: clock skew", weight: 1, proj: "a", trace: appendTrace,
			start: -5 * time.Millisecond, want: want{duplicatedA: 1, skew: 1}},
		{name: "first showing after the join: late and unprojected, weighted", weight: 4, proj: "c", trace: appendTrace,
			start: time.Minute, learnedC: true, want: want{lateC: 4, unprojC: 4, projectedC: 4 + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jt := newJoinTest(t, nil)
			end := base.Add(time.Second).UnixNano()
			apply := func(at time.Duration, f Fact) {
				jt.j.apply([]Fact{f}, base.Add(at).UnixNano())
			}
			apply(time.Second, Fact{Kind: FactAppend, Event: testKey(1), TraceID: appendTrace, EventType: "T",
				AggregateType: "A", Command: "none", Service: "writer", Weight: tt.weight, Start: end - 1e6, End: end})
			for _, p := range []string{"a", "b"} {
				apply(2*time.Second, Fact{Kind: FactProject, Event: testKey(1), TraceID: appendTrace, EventType: "T",
					Projection: p, Service: "reader", Start: end + 5e6, End: end + 10e6})
			}
			if tt.learnedC {
				// Event 2 teaches the join that c shows T; event 1's
				// deadline then declares it unprojected for c.
				apply(3*time.Second, Fact{Kind: FactAppend, Event: testKey(2), EventType: "T", AggregateType: "A",
					Command: "none", Start: end, End: end + 1e6})
				apply(3*time.Second, Fact{Kind: FactProject, Event: testKey(2), EventType: "T", Projection: "c",
					Start: end + 2e6, End: end + 3e6})
			}
			jt.tick(time.Minute)
			if got := jt.s.joined.events.len(); got < 1 {
				t.Fatalf("joined store holds %d events, want event 1 there", got)
			}
			if _, ok := jt.s.joined.index.find(testKey(1), &jt.s.joined.events); !ok {
				t.Fatal("event 1 is not in the joined store")
			}
			apply(2*time.Minute, Fact{Kind: FactProject, Event: testKey(1), TraceID: tt.trace, LinkedTraces: tt.links,
				EventType: "T", Projection: tt.proj, Service: "reader",
				Start: end + int64(tt.start), End: end + int64(tt.start) + 1e6})
			got := want{
				duplicatedA: jt.count("cqrs_events_duplicated_total", "a"),
				brokenA:     jt.count("cqrs_trace_propagation_broken_total", "a"),
				skew:        counter(t, jt.reg, "cqrs_clock_skew_seconds", "from_service", "writer", "to_service", "reader"),
				lateC:       jt.count("cqrs_events_late_total", "c"),
				unprojC:     counter(t, jt.reg, "cqrs_events_unprojected_total", "projection", "c", "event_type", "T"),
				projectedC:  jt.count("cqrs_events_projected_total", "c"),
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJoinedEntrySize: the joined entry is byte arrays, so that alignment
// does not pad it (BenchmarkJoinedEvents gives the figure with its index).
func TestJoinedEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(joinedEntry{}); got != 26 {
		t.Errorf("joinedEntry is %d bytes, want 26", got)
	}
	if got := unsafe.Alignof(joinedEntry{}); got != 1 {
		t.Errorf("joinedEntry is aligned to %d bytes, want 1", got)
	}
}

// TestJoinedEntryAppendEnd: a joined entry gives back its append's end to
// the microsecond (rounded down) at any age retention allows, across the
// 2^32 ms wrap of its arrival stamp, and an event whose append ended too far
// from its arrival for 32 bits of microseconds stays in its full entry.
func TestJoinedEntryAppendEnd(t *testing.T) {
	wrap := int64(1<<32) * 1e6 // the arrival stamp wraps here
	tests := []struct {
		name            string
		arrived, end    int64 // ns
		age             time.Duration
		badTime, joined bool
		want            int64 // the end given back (ns)
	}{
		{name: "end before arrival", arrived: base.UnixNano() + 123_456_789, end: base.UnixNano() + 100_000_000,
			age: time.Second, joined: true, want: base.UnixNano() + 100_000_000},
		{name: "rounded down to the µs", arrived: base.UnixNano() + 5e6, end: base.UnixNano() + 4_999_999,
			age: time.Minute, joined: true, want: base.UnixNano() + 4_999_000},
		{name: "end after arrival (clock ahead)", arrived: base.UnixNano(), end: base.UnixNano() + 2*int64(time.Second) + 1_500,
			age: 4 * time.Minute, joined: true, want: base.UnixNano() + 2*int64(time.Second) + 1_000},
		{name: "across the stamp's wrap", arrived: wrap - 300, end: wrap - 7_000_300,
			age: 10 * time.Second, joined: true, want: wrap - 7_001_000},
		{name: "at the greatest age", arrived: base.UnixNano() + 999, end: base.UnixNano() - 35*int64(time.Minute),
			age: time.Duration(maxJoinedAge) - time.Second, joined: true, want: base.UnixNano() - 35*int64(time.Minute)},
		{name: "ended 36 minutes before arrival: stays full", arrived: base.UnixNano(),
			end: base.UnixNano() - 36*int64(time.Minute), age: time.Second},
		{name: "ends 36 minutes after arrival: stays full", arrived: base.UnixNano(),
			end: base.UnixNano() + 36*int64(time.Minute), age: time.Second},
		{name: "timestamps not credible: joined, end unused", arrived: base.UnixNano(), end: math.MinInt64,
			age: time.Second, badTime: true, joined: true, want: base.UnixNano()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jt := newJoinTest(t, nil)
			e := eventEntry{key: testKey(7), trace: [16]byte{7}, arrived: tt.arrived, appendEnd: tt.end,
				badTime: tt.badTime, typ: 1, seen: 3, declared: true}
			if got := jt.s.join(&e); got != tt.joined {
				t.Fatalf("join = %v, want %v", got, tt.joined)
			}
			if !tt.joined {
				return
			}
			seq, ok := jt.s.joined.index.find(e.key, &jt.s.joined.events)
			if !ok {
				t.Fatal("joined event not found by its key")
			}
			je := jt.s.joined.events.at(seq)
			if got := je.appendEnd(tt.arrived + int64(tt.age)); got != tt.want {
				t.Errorf("append end = %d, want %d (%+dns)", got, tt.want, got-tt.want)
			}
			if got, want := je.traceHash(), traceHash(e.trace); got != want {
				t.Errorf("trace hash = %x, want %x", got, want)
			}
			if _, ok := jt.s.joined.index.find(testKey(8), &jt.s.joined.events); ok {
				t.Error("found an event never joined")
			}
		})
	}
}

// TestJoinedStoreKeepsIDs: with Config.KeepSamples, an event declared
// unprojected in the joined store is reported with its key and trace id,
// which its entry no longer has, and its id is dropped when it retires.
func TestJoinedStoreKeepsIDs(t *testing.T) {
	jt := newJoinTest(t, func(c *Config) { c.KeepSamples = true })
	trace := [16]byte{0xab, 1}
	end := base.Add(time.Second).UnixNano()
	apply := func(at time.Duration, f Fact) { jt.j.apply([]Fact{f}, base.Add(at).UnixNano()) }
	apply(time.Second, Fact{Kind: FactAppend, Event: testKey(1), EventID: "ev-1", TraceID: trace, EventType: "T",
		AggregateType: "A", Command: "none", Start: end - 1e6, End: end})
	for _, p := range []string{"a", "b"} {
		apply(2*time.Second, Fact{Kind: FactProject, Event: testKey(1), TraceID: trace, EventType: "T",
			Projection: p, Start: end + 5e6, End: end + 10e6})
	}
	// Event 2 teaches the join that c shows T: event 1 is unprojected for c.
	apply(3*time.Second, Fact{Kind: FactAppend, Event: testKey(2), EventType: "T", AggregateType: "A",
		Command: "none", Start: end, End: end + 1e6})
	apply(3*time.Second, Fact{Kind: FactProject, Event: testKey(2), EventType: "T", Projection: "c",
		Start: end + 2e6, End: end + 3e6})
	jt.tick(time.Minute)
	if _, ok := jt.s.joined.index.find(testKey(1), &jt.s.joined.events); !ok {
		t.Fatal("event 1 is not in the joined store")
	}
	c, _ := jt.s.projections.lookup("c")
	x := jt.s.extra.proj[c]
	if !slices.Equal(x.unprojIDs, []EventKey{testKey(1)}) || !slices.Equal(x.unprojTraces, [][16]byte{trace}) {
		t.Errorf("unprojected for c: ids %x traces %x, want [%x] [%x]", x.unprojIDs, x.unprojTraces, testKey(1), trace)
	}
	if got := jt.s.extra.ids[testKey(1)]; got != "ev-1" {
		t.Errorf("kept id = %q, want ev-1", got)
	}
	jt.tick(time.Minute + time.Duration(DefaultConfig().Join.Retention))
	if got := jt.s.joined.events.len(); got != 0 {
		t.Fatalf("joined store holds %d events past retention, want 0", got)
	}
	if _, ok := jt.s.extra.ids[testKey(1)]; ok || len(jt.s.joined.full) != 0 {
		t.Errorf("retired event's ids still kept: %d ids, %d full", len(jt.s.extra.ids), len(jt.s.joined.full))
	}
}

// TestJoinedFindAllocs: finding an event, pending or joined, allocates
// nothing (the key must not escape through hasKey).
func TestJoinedFindAllocs(t *testing.T) {
	jt := newJoinTest(t, nil)
	e := eventEntry{key: testKey(1), arrived: base.UnixNano(), appendEnd: base.UnixNano(), typ: 1, seen: 3, declared: true}
	if !jt.s.join(&e) {
		t.Fatal("event not joined")
	}
	jt.s.recent.push(&eventEntry{key: testKey(2), arrived: base.UnixNano()})
	allocs := testing.AllocsPerRun(100, func() {
		if !jt.s.held(testKey(1)) || !jt.s.held(testKey(2)) || jt.s.held(testKey(3)) {
			t.Fatal("held gives the wrong answer")
		}
	})
	if allocs != 0 {
		t.Errorf("held allocates %v times per run, want 0", allocs)
	}
}
