package server

import (
	"encoding/binary"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lagscope/lagscope/analyzer"
)

// The re-keying hop of the join role (issue 13). A consumer span without
// event id is keyed by the producer span it links to (or is a child of);
// one process's Resolver gives its projection fact the events that span
// appended. With several ingest instances, the producer's trace may be
// resolved by another one: that projection then comes keyed by the span
// (analyzer.FactProjectSpan), and its events' appends, partitioned by
// event, are on partitions nobody can name from the span. So the ingest
// role sends such a projection (rare: a consumer linking across traces
// resolved by two instances) to every partition, and each join instance
// pairs it here, before its Joiner, with the appends it holds: it keeps,
// for each append it applied with an event id, the event by its span (an
// alias: no fact on the wire, and nothing more for the ingest role to do
// on its path of every append). The instance that holds some of the span's
// appends joins the projection to their events in its own Joiner, where
// those appends are, and tells the projection's home partition (that of
// its key, where one process would have joined it keyed by the span:
// analyzer.FactResolved). The owner of the home partition joins it keyed
// by the span when its producer appended a message without id (that
// append is keyed by the span: it is there), or when no instance resolved
// it within twice join.command_wait (as one process gives up after one);
// the other copies are dropped after one.

// maxAliasKeys bounds the events of one producer span that its consumers
// project: the first 256, as the Resolver's (an append of more is a batch
// import).
const maxAliasKeys = 256

// Reasons of lagscope_join_evictions_total counted by the pairing.
const (
	// reasonAliasCapacity: the events of a producer span left the table
	// (kept for as many producer spans as the Resolver keeps:
	// join.max_trace_spans/8, in two generations): a projection keyed by
	// that span that comes later is not joined to them.
	reasonAliasCapacity = "alias_capacity"
	// reasonAliasWaitCapacity: a projection keyed by its producer span
	// stopped waiting for the span's appends early, to keep those
	// waiting within join.max_pending_projections.
	reasonAliasWaitCapacity = "alias_wait_capacity"
)

// aliasSlot is a slot of an aliasTable: producer span key span appended
// event first (and, if several, the others in the table's more).
type aliasSlot struct {
	span  analyzer.EventKey // zero: a free slot
	first analyzer.EventKey
}

// aliasTable is one generation of aliases: an open-addressing table of
// power-of-two size, at most half full, probed linearly from the span
// key's first 8 bytes (analyzer.KeyOfSpan mixes them). meta holds a
// one-byte fingerprint of each used slot's key (0: free), 1/32 of the
// slots' size, so that an alias new to the table (the usual case) is told
// from the cached meta alone and its slot only written, never read, as in
// the analyzer's genMap: every append with an id costs an insert here,
// the join's only cost on the path of every span (BenchmarkPairingAppends).
type aliasTable struct {
	slots []aliasSlot // made on first use
	meta  []uint8
	n     int
	// more holds the other events of the spans that appended several,
	// rare: kept out of the slots, which it would double.
	more map[analyzer.EventKey][]analyzer.EventKey
}

// fingerprint is the meta byte of span key h's slot: never 0.
func fingerprint(h uint64) uint8 { return uint8(h>>56) | 1 }

// keys appends the events of slot a to dst.
func (t *aliasTable) keys(dst []analyzer.EventKey, a *aliasSlot) []analyzer.EventKey {
	return append(append(dst, a.first), t.more[a.span]...)
}

// has reports whether k is one of the events of slot a.
func (t *aliasTable) has(a *aliasSlot, k analyzer.EventKey) bool {
	if a.first == k {
		return true
	}
	for _, m := range t.more[a.span] {
		if m == k {
			return true
		}
	}
	return false
}

func (t *aliasTable) find(span analyzer.EventKey) *aliasSlot {
	if t.n == 0 {
		return nil
	}
	h := binary.LittleEndian.Uint64(span[:8])
	fp, mask := fingerprint(h), uint64(len(t.slots)-1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch t.meta[i] {
		case 0:
			return nil
		case fp:
			if s := &t.slots[i]; s.span == span {
				return s
			}
		}
	}
}

// add takes a free slot for span, which the table must not hold and have
// room for, and returns it.
func (t *aliasTable) add(span analyzer.EventKey) *aliasSlot {
	h := binary.LittleEndian.Uint64(span[:8])
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	for t.meta[i] != 0 {
		i = (i + 1) & mask
	}
	t.meta[i] = fingerprint(h)
	t.n++
	s := &t.slots[i]
	s.span = span
	return s
}

func (t *aliasTable) reset() {
	clear(t.meta) // the slots are overwritten when taken
	clear(t.more)
	t.n = 0
}

// waitKey identifies a projection keyed by its producer span: the span's
// key, and the projection's own span.
type waitKey struct {
	span  analyzer.EventKey
	trace [16]byte
	id    [8]byte
}

func waitKeyOf(f *analyzer.Fact) waitKey { return waitKey{f.Event, f.TraceID, f.SpanID} }

// waitingProj is a copy of a projection keyed by its producer span,
// waiting for the span's appends.
type waitingProj struct {
	fact    analyzer.Fact // strings owned
	arrived int64
	// home: this instance has the copy of the home partition, so it joins
	// it keyed by the span unless an instance resolves it.
	home bool
	// matched: joined here to the events of the span's appends held here
	// (it still joins those that come later: a span's events may be on
	// several instances); claimed: another instance did (FactResolved);
	// done: joined keyed by the span. Kept till the wait's end all the
	// same, so that copies from other partitions are recognised.
	matched, claimed, done bool
}

// resolved reports whether the projection needs nothing more of w.
func (w *waitingProj) resolved() bool { return w.matched || w.claimed || w.done }

// pairingMetrics are the pairing's counters.
type pairingMetrics struct {
	matched, unmatched prometheus.Counter
	aliasEvicted       prometheus.Counter
	waitEvicted        prometheus.Counter
}

// pairing pairs projections keyed by their producer span with the events
// of the span's appends. Bounded: the appends' events (aliases) for as
// many producer spans as the Resolver keeps, in two generations (the older
// dropped whole when the newer is full, counted: an alias lives for half
// to all of join.max_trace_spans/8 producer spans after it); waiting
// projections by join.max_pending_projections; claims that came before
// their projection as many. Safe for concurrent use.
type pairing struct {
	mu   sync.Mutex
	wait int64 // join.command_wait, ns
	half int   // aliases per generation
	// cur and old are the generations of aliases by producer span key
	// (analyzer.KeyOfSpan), of half each.
	cur, old   *aliasTable
	maxWaiting int
	// queue holds the waiting projections in arrival order, queue[i] of
	// sequence number head+i; bySpan gives those of a span key, ids that
	// of a waitKey.
	queue  []waitingProj
	head   uint64
	bySpan map[analyzer.EventKey][]uint64
	ids    map[waitKey]uint64
	// claims are the FactResolved that came before their projection,
	// with when, in arrival order.
	claims  map[waitKey]int64
	claimed []waitKey
	m       pairingMetrics
	// holds reports whether the Joiner holds an event (Joiner.Holds);
	// nil in tests of the pairing alone.
	holds func(analyzer.EventKey) bool
	// Scratch of pair: a run's events, the keys of the appends keyed by
	// their span.
	keys, spanKeyed []analyzer.EventKey
}

func newPairing(cfg analyzer.Config, m pairingMetrics, holds func(analyzer.EventKey) bool) *pairing {
	return &pairing{
		wait:       int64(cfg.Join.CommandWait),
		half:       max(1, cfg.Join.MaxTraceSpans/8/2),
		cur:        &aliasTable{},
		old:        &aliasTable{},
		maxWaiting: max(1, cfg.Join.MaxPendingProjections),
		bySpan:     make(map[analyzer.EventKey][]uint64),
		ids:        make(map[waitKey]uint64),
		claims:     make(map[waitKey]int64),
		m:          m,
		holds:      holds,
	}
}

// hasSpanFacts reports whether facts hold a projection keyed by its
// producer span, for which pair needs the partition count.
func hasSpanFacts(facts []analyzer.Fact) bool {
	for i := range facts {
		if facts[i].Kind == analyzer.FactProjectSpan {
			return true
		}
	}
	return false
}

// pair takes the facts of one batch of partition q (of n; n may be 0 when
// the batch has no FactProjectSpan), which arrived at now, in two passes:
// the batch's appends first, so that their order in it does not matter.
// It remembers the events of the appends with an event id by their span,
// and appends to extra the projections it joins to them (one fact per
// event, FactProject), those it joins keyed by their span, and those
// whose wait ran out by now; and to resolved the FactResolved to publish
// (to the home partitions of the projections it joined to events). The
// rest of facts is the Joiner's as it is, which skips the kinds it does
// not join (FactProjectSpan and FactResolved, consumed here; FactLearned:
// the caller gives those to Joiner.Learn): give it facts, then extra.
func (p *pairing) pair(extra, resolved, facts []analyzer.Fact, q, n int, now int64) ([]analyzer.Fact, []analyzer.Fact) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spanKeyed = p.spanKeyed[:0]
	spans := false
	for i := range facts {
		f := &facts[i]
		switch f.Kind {
		case analyzer.FactAppend:
			if f.EventID == "" {
				if len(p.queue) > 0 {
					p.spanKeyed = append(p.spanKeyed, f.Event)
				}
				continue
			}
			span := analyzer.KeyOfSpan(f.TraceID, f.SpanID)
			if p.addAlias(span, f.Event) && len(p.queue) > 0 {
				extra, resolved = p.matchLater(extra, resolved, span, f.Event)
			}
		case analyzer.FactResolved:
			p.claim(waitKeyOf(f), now)
		case analyzer.FactProjectSpan:
			spans = true
		}
	}
	if spans {
		for i := range facts {
			if f := &facts[i]; f.Kind == analyzer.FactProjectSpan {
				extra, resolved = p.arrive(extra, resolved, f, n == 0 || partitionOf(f.Event, n) == q, now)
			}
		}
	}
	// Those waiting at home whose producer's append without id came now:
	// they follow it.
	for _, k := range p.spanKeyed {
		for _, seq := range p.bySpan[k] {
			if w := &p.queue[seq-p.head]; w.home && !w.resolved() {
				extra = p.bySpanKey(extra, w)
			}
		}
	}
	if len(p.queue) > 0 {
		extra = p.expireLocked(extra, now, false)
	}
	return extra, resolved
}

// matchLater joins to event ev, just appended by producer span key span,
// the projections waiting for that span.
func (p *pairing) matchLater(extra, resolved []analyzer.Fact, span, ev analyzer.EventKey) ([]analyzer.Fact, []analyzer.Fact) {
	for _, seq := range p.bySpan[span] {
		w := &p.queue[seq-p.head]
		if w.done {
			continue // joined keyed by the span
		}
		// Even if claimed: the span's other events may be on other
		// instances, each joins those it holds.
		g := w.fact
		g.Kind, g.Event = analyzer.FactProject, ev
		extra = append(extra, g)
		if !w.matched {
			resolved = p.match(resolved, w)
		}
	}
	return extra, resolved
}

// match records that w was joined here, and appends to resolved the news
// for its home partition unless this instance is its home or another
// told it already.
func (p *pairing) match(resolved []analyzer.Fact, w *waitingProj) []analyzer.Fact {
	w.matched = true
	p.m.matched.Inc()
	if !w.home && !w.claimed {
		resolved = append(resolved, analyzer.Fact{Kind: analyzer.FactResolved, Event: w.fact.Event, TraceID: w.fact.TraceID, SpanID: w.fact.SpanID})
	}
	return resolved
}

// arrive takes a copy of projection f keyed by its producer span; home:
// the copy of its home partition.
func (p *pairing) arrive(extra, resolved []analyzer.Fact, f *analyzer.Fact, home bool, now int64) ([]analyzer.Fact, []analyzer.Fact) {
	k := waitKeyOf(f)
	if seq, ok := p.ids[k]; ok {
		// Another copy (this instance owns several partitions).
		if w := &p.queue[seq-p.head]; home && !w.home {
			w.home = true
			if !w.resolved() && p.holds != nil && p.holds(f.Event) {
				extra = p.bySpanKey(extra, w)
			}
		}
		return extra, resolved
	}
	w := p.park(f.Clone(), home, now)
	if _, ok := p.claims[k]; ok {
		w.claimed = true
		delete(p.claims, k)
	}
	switch t, run := p.alias(f.Event); {
	case run != nil:
		extra = p.rekey(extra, f, t, run)
		resolved = p.match(resolved, w)
	case w.claimed:
	case home && p.holds != nil && p.holds(f.Event):
		// Its producer appended a message without id, keyed by the span:
		// no instance holds an append of the span with an id.
		extra = p.bySpanKey(extra, w)
	}
	return extra, resolved
}

// bySpanKey appends w's projection to extra keyed by its span, as one
// process gives a projection whose producer appended no event with an id.
func (p *pairing) bySpanKey(extra []analyzer.Fact, w *waitingProj) []analyzer.Fact {
	w.done = true
	p.m.unmatched.Inc()
	g := w.fact
	g.Kind = analyzer.FactProject
	return append(extra, g)
}

// claim records that another instance resolved projection k.
func (p *pairing) claim(k waitKey, now int64) {
	if seq, ok := p.ids[k]; ok {
		if w := &p.queue[seq-p.head]; !w.matched && !w.done {
			w.claimed = true
		}
		return
	}
	if _, ok := p.claims[k]; ok {
		return
	}
	p.claims[k] = now
	p.claimed = append(p.claimed, k)
}

// rekey appends to dst projection f keyed by each event of run, a slot of
// t.
func (p *pairing) rekey(dst []analyzer.Fact, f *analyzer.Fact, t *aliasTable, run *aliasSlot) []analyzer.Fact {
	g := *f
	g.Kind = analyzer.FactProject
	p.keys = t.keys(p.keys[:0], run)
	for _, k := range p.keys {
		g.Event = k
		dst = append(dst, g)
	}
	return dst
}

// alias returns the slot of producer span key span and its table; a nil
// slot when unknown.
func (p *pairing) alias(span analyzer.EventKey) (*aliasTable, *aliasSlot) {
	if a := p.cur.find(span); a != nil {
		return p.cur, a
	}
	return p.old, p.old.find(span)
}

// addAlias records that producer span key span appended event ev, and
// reports whether that is news (not a batch delivered again, nor an event
// past maxAliasKeys). The newer generation, when full, becomes the older
// one, whose aliases are dropped (counted). A span whose first events are
// in the older generation starts again in the newer.
func (p *pairing) addAlias(span, ev analyzer.EventKey) bool {
	if span == (analyzer.EventKey{}) {
		return false // the free slots' key: never KeyOfSpan's
	}
	if p.cur.slots == nil {
		size := 2
		for size < 2*p.half {
			size *= 2
		}
		for _, t := range [...]*aliasTable{p.cur, p.old} {
			t.slots, t.meta = make([]aliasSlot, size), make([]uint8, size)
		}
	}
	a := p.cur.find(span)
	switch {
	case a == nil:
		if p.cur.n >= p.half {
			p.m.aliasEvicted.Add(float64(p.old.n))
			p.old, p.cur = p.cur, p.old
			p.cur.reset()
		}
		a = p.cur.add(span)
		a.first = ev
	case p.cur.has(a, ev):
		return false
	case len(p.cur.more[span])+1 < maxAliasKeys:
		if p.cur.more == nil {
			p.cur.more = make(map[analyzer.EventKey][]analyzer.EventKey)
		}
		p.cur.more[span] = append(p.cur.more[span], ev)
	default:
		return false
	}
	return true
}

// park holds projection f (strings owned) for its span's appends.
func (p *pairing) park(f analyzer.Fact, home bool, now int64) *waitingProj {
	seq := p.head + uint64(len(p.queue))
	p.queue = append(p.queue, waitingProj{fact: f, arrived: now, home: home})
	p.bySpan[f.Event] = append(p.bySpan[f.Event], seq)
	p.ids[waitKeyOf(&f)] = seq
	return &p.queue[len(p.queue)-1]
}

// expire appends to dst, as FactProject keyed by their span, the
// projections of the home partition that no instance resolved within
// twice join.command_wait by now (all of them when all is set), and
// returns it; the other copies are dropped after join.command_wait.
func (p *pairing) expire(dst []analyzer.Fact, now int64, all bool) []analyzer.Fact {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.expireLocked(dst, now, all)
}

func (p *pairing) expireLocked(dst []analyzer.Fact, now int64, all bool) []analyzer.Fact {
	for len(p.queue) > 0 {
		w := &p.queue[0]
		wait := p.wait
		if w.home {
			// Longer than any other copy waits: a FactResolved sent
			// at the end of another's wait still arrives in time.
			wait *= 2
		}
		if due := all || w.arrived+wait <= now; !due {
			if len(p.queue) <= p.maxWaiting {
				break
			}
			if w.home && !w.resolved() {
				p.m.waitEvicted.Inc()
			}
		}
		if w.home && !w.resolved() {
			dst = p.bySpanKey(dst, w)
		}
		p.pop()
	}
	for len(p.claimed) > 0 {
		k := p.claimed[0]
		if at, ok := p.claims[k]; ok && !all && at+2*p.wait > now && len(p.claimed) <= p.maxWaiting {
			break
		}
		delete(p.claims, k)
		p.claimed = p.claimed[1:]
	}
	return dst
}

// handOver appends to dst, as they came (FactProjectSpan), the
// projections that no instance resolved yet, and forgets all: at a
// graceful stop, the join role publishes them again, and the next owners
// of its partitions wait in their turn.
func (p *pairing) handOver(dst []analyzer.Fact) []analyzer.Fact {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) > 0 {
		if w := &p.queue[0]; !w.resolved() {
			dst = append(dst, w.fact)
		}
		p.pop()
	}
	return dst
}

// waiting returns the number of projections held for their span's appends.
func (p *pairing) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// pop removes the front of the queue.
func (p *pairing) pop() {
	w := &p.queue[0]
	if seqs := p.bySpan[w.fact.Event]; len(seqs) > 0 && seqs[0] == p.head {
		if len(seqs) == 1 {
			delete(p.bySpan, w.fact.Event)
		} else {
			p.bySpan[w.fact.Event] = seqs[1:]
		}
	}
	delete(p.ids, waitKeyOf(&w.fact))
	*w = waitingProj{}
	p.queue = p.queue[1:]
	p.head++
	if len(p.queue) == 0 {
		p.queue = p.queue[:0:0] // let the backing array go
	}
}
