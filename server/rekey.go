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
// appended. With several ingest instances, the producer's trace may have
// been resolved by another one: that projection comes keyed by the span
// (analyzer.FactProjectSpan) and would never meet its events' appends. So
// the ingest role also publishes, for each event appended with an id, an
// alias (analyzer.FactAlias) keyed by its span, which lands on the same
// partition as such projections, and the join role that owns it pairs
// them here, before its Joiner: a paired projection is published again
// keyed by each of its events; one whose alias does not come within
// join.command_wait (the producer appended nothing with an id, or its
// trace never came) goes to the Joiner as it is, where it joins the
// append keyed by the span, as in one process.

// maxAliasKeys bounds the events of one producer span that its consumers
// project: the first 256, as the Resolver's (an append of more is a batch
// import).
const maxAliasKeys = 256

// Reasons of lagscope_join_evictions_total counted by the pairing.
const (
	// reasonAliasCapacity: an alias left the table (aliases are kept as
	// many as the Resolver keeps producer spans: join.max_trace_spans/8)
	// before any projection asked for it, if one did later it went
	// unmatched.
	reasonAliasCapacity = "alias_capacity"
	// reasonAliasWaitCapacity: a projection waiting for its alias was
	// joined as it is before join.command_wait, to keep the waiting ones
	// within join.max_pending_projections.
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
// from the cached meta alone and its slot only written, never read: a Go
// map, whose probes read the slots, made BenchmarkStagesRatio's join 2.5
// times slower in the pairing (the analyzer's genMap does the same).
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

// waitingProj is a projection keyed by its producer span, waiting for the
// span's alias.
type waitingProj struct {
	fact    analyzer.Fact // strings owned
	arrived int64
	done    bool // paired (published keyed by its events) or given on
}

// pairingMetrics are the pairing's counters.
type pairingMetrics struct {
	matched, unmatched prometheus.Counter
	aliasEvicted       prometheus.Counter
	waitEvicted        prometheus.Counter
}

// pairing pairs projections keyed by their producer span with the span's
// aliases. Bounded: aliases as the Resolver's producer spans, in two
// generations (the older dropped whole when the newer is full, counted:
// an alias lives for half to all of join.max_trace_spans/8 aliases after),
// waiting projections by join.max_pending_projections. Safe for concurrent
// use.
type pairing struct {
	mu   sync.Mutex
	wait int64 // join.command_wait, ns
	half int   // aliases per generation
	// cur and old are the generations of aliases by producer span key
	// (analyzer.KeyOfSpan), of half each.
	cur, old   *aliasTable
	maxWaiting int
	// queue holds the waiting projections in arrival order, queue[i] of
	// sequence number head+i; index gives those of a span key.
	queue []waitingProj
	head  uint64
	live  int
	index map[analyzer.EventKey][]uint64
	m     pairingMetrics
	// holds reports whether the Joiner holds an event (Joiner.Holds);
	// nil in tests of the pairing alone.
	holds func(analyzer.EventKey) bool
	// Scratch of pair: a run's events, the spans whose aliases came, the
	// keys of the appends keyed by their span.
	keys, spans, bySpan []analyzer.EventKey
}

func newPairing(cfg analyzer.Config, m pairingMetrics, holds func(analyzer.EventKey) bool) *pairing {
	half := max(1, cfg.Join.MaxTraceSpans/8/2)
	return &pairing{
		wait:       int64(cfg.Join.CommandWait),
		half:       half,
		cur:        &aliasTable{},
		old:        &aliasTable{},
		maxWaiting: max(1, cfg.Join.MaxPendingProjections),
		index:      make(map[analyzer.EventKey][]uint64),
		m:          m,
		holds:      holds,
	}
}

// pair takes the facts of one batch, which arrived at now, in two passes
// (the batch's aliases first, so that their order in it does not matter).
// It appends to rekeyed the projections paired with their span's events,
// one fact per event (FactProject, keyed by it), to publish: the Joiner
// must not get those, the event's partition has its append. It turns into
// FactProject, in facts, the projections whose producer appended a message
// without id (the Joiner holds its append), and appends to extra the
// earlier ones that waited for such an append, and those that waited
// join.command_wait by now in vain. The rest of facts is the Joiner's as it
// is, which skips the kinds it does not join (aliases, projections keyed by
// their span, which wait here for their alias, learned expectations: the
// caller gives them to Joiner.Learn): give it facts, then extra. rekeyed's
// facts may refer to the batch's strings.
func (p *pairing) pair(extra, rekeyed, facts []analyzer.Fact, now int64) ([]analyzer.Fact, []analyzer.Fact) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spans, p.bySpan = p.spans[:0], p.bySpan[:0]
	marked := false
	for i := range facts {
		switch f := &facts[i]; {
		case f.Kind == analyzer.FactAlias:
			span := analyzer.KeyOfSpan(f.TraceID, f.SpanID)
			if p.addAlias(span, f.Event) && p.live > 0 && len(p.index[span]) > 0 {
				p.spans = append(p.spans, span)
			}
		case f.Kind == analyzer.FactProjectSpan:
			marked = true
		case f.Kind == analyzer.FactAppend && f.EventID == "" && p.live > 0:
			p.bySpan = append(p.bySpan, f.Event)
		}
	}
	// The projections that came before their span's aliases (an alias of
	// each of the span's events comes in the same batch, as the span's
	// append facts do).
	for _, span := range p.spans {
		t, run := p.alias(span)
		for _, seq := range p.index[span] {
			w := &p.queue[seq-p.head]
			p.m.matched.Inc()
			rekeyed = p.rekey(rekeyed, &w.fact, t, run)
			w.done = true
			p.live--
		}
		delete(p.index, span)
	}
	for i := range facts {
		if f := &facts[i]; marked && f.Kind == analyzer.FactProjectSpan {
			if t, run := p.alias(f.Event); run != nil {
				p.m.matched.Inc()
				rekeyed = p.rekey(rekeyed, f, t, run)
				continue
			}
			if p.holds != nil && p.holds(f.Event) {
				// Its producer appended a message without id, keyed by
				// the span: no alias will come.
				p.m.unmatched.Inc()
				f.Kind = analyzer.FactProject
				continue
			}
			p.park(f.Clone(), now)
		}
	}
	// The same for those waiting whose producer's append without id came
	// now: they follow it.
	for _, k := range p.bySpan {
		for _, seq := range p.index[k] {
			w := &p.queue[seq-p.head]
			p.m.unmatched.Inc()
			g := w.fact
			g.Kind = analyzer.FactProject
			extra = append(extra, g)
			w.done = true
			p.live--
		}
		delete(p.index, k)
	}
	if len(p.queue) > 0 {
		extra = p.expireLocked(extra, now, false)
	}
	return extra, rekeyed
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
// reports whether that is news (not a batch published again, nor an event
// past maxAliasKeys). The newer generation, when full, becomes the older
// one, whose aliases are dropped (counted). A span's events come together
// (its append facts do): one whose first ones are in the older generation
// starts again in the newer.
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
		return false // a batch published again
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

// park holds projection f (strings owned) for its span's alias.
func (p *pairing) park(f analyzer.Fact, now int64) {
	seq := p.head + uint64(len(p.queue))
	p.queue = append(p.queue, waitingProj{fact: f, arrived: now})
	p.index[f.Event] = append(p.index[f.Event], seq)
	p.live++
}

// expire appends to dst, as FactProject, the projections that waited
// join.command_wait by now for their alias (all of them when all is set),
// and returns it: they join the append keyed by their span.
func (p *pairing) expire(dst []analyzer.Fact, now int64, all bool) []analyzer.Fact {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.expireLocked(dst, now, all)
}

func (p *pairing) expireLocked(dst []analyzer.Fact, now int64, all bool) []analyzer.Fact {
	for len(p.queue) > 0 {
		w := &p.queue[0]
		if !w.done {
			due := all || w.arrived+p.wait <= now
			if !due && len(p.queue) <= p.maxWaiting {
				break
			}
			if !due {
				p.m.waitEvicted.Inc()
			}
			p.m.unmatched.Inc()
			f := w.fact
			f.Kind = analyzer.FactProject
			dst = append(dst, f)
			p.live--
		}
		p.pop()
	}
	return dst
}

// handOver appends to dst, as they came (FactProjectSpan), the projections
// still waiting for their alias, and forgets them: at a graceful stop, the
// join role publishes them again to their partition, whose next owner
// waits for the alias in its turn.
func (p *pairing) handOver(dst []analyzer.Fact) []analyzer.Fact {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) > 0 {
		if w := &p.queue[0]; !w.done {
			dst = append(dst, w.fact)
			p.live--
		}
		p.pop()
	}
	return dst
}

// waiting returns the number of projections waiting for their alias.
func (p *pairing) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// pop removes the front of the queue, paired, given or handed over.
func (p *pairing) pop() {
	w := &p.queue[0]
	k := w.fact.Event
	if seqs := p.index[k]; len(seqs) > 0 && seqs[0] == p.head {
		if len(seqs) == 1 {
			delete(p.index, k)
		} else {
			p.index[k] = seqs[1:]
		}
	}
	*w = waitingProj{}
	p.queue = p.queue[1:]
	p.head++
	if len(p.queue) == 0 {
		p.queue = p.queue[:0:0] // let the backing array go
	}
}
