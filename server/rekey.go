package server

import (
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

// aliasRun is the events a producer span appended with an id.
type aliasRun struct {
	first analyzer.EventKey
	more  []analyzer.EventKey // the others, rare: appends of several events
}

// keys appends the run's events to dst.
func (a *aliasRun) keys(dst []analyzer.EventKey) []analyzer.EventKey {
	return append(append(dst, a.first), a.more...)
}

// has reports whether k is one of the run's events.
func (a *aliasRun) has(k analyzer.EventKey) bool {
	if a.first == k {
		return true
	}
	for _, m := range a.more {
		if m == k {
			return true
		}
	}
	return false
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
// generations (the older dropped whole when the newer is full, counted),
// waiting projections by join.max_pending_projections. Safe for concurrent
// use.
type pairing struct {
	mu   sync.Mutex
	wait int64 // join.command_wait, ns
	half int   // aliases per generation
	// cur and old are the generations of aliases by producer span key
	// (analyzer.KeyOfSpan).
	cur, old   map[analyzer.EventKey]aliasRun
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
		cur:        make(map[analyzer.EventKey]aliasRun),
		old:        make(map[analyzer.EventKey]aliasRun),
		maxWaiting: max(1, cfg.Join.MaxPendingProjections),
		index:      make(map[analyzer.EventKey][]uint64),
		m:          m,
		holds:      holds,
	}
}

// pair takes the facts of one batch, which arrived at now, in two passes
// (the batch's aliases first, so that their order in it does not matter):
// it appends to out the facts for the Joiner (every fact but aliases and
// the projections keyed by their span, learned ones included: the caller
// gives them to Joiner.Learn) and to rekeyed the projections paired with
// their span's events, one fact per event (FactProject, keyed by it), to
// publish; the Joiner must not get those: the event's partition has its
// append. Projections whose alias has not come wait for it (expire).
// rekeyed's facts may refer to the batch's strings.
func (p *pairing) pair(out, rekeyed, facts []analyzer.Fact, now int64) ([]analyzer.Fact, []analyzer.Fact) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spans, p.bySpan = p.spans[:0], p.bySpan[:0]
	for i := range facts {
		switch f := &facts[i]; {
		case f.Kind == analyzer.FactAlias:
			span := analyzer.KeyOfSpan(f.TraceID, f.SpanID)
			if p.addAlias(span, f.Event) && len(p.index[span]) > 0 {
				p.spans = append(p.spans, span)
			}
		case f.Kind == analyzer.FactAppend && f.EventID == "":
			p.bySpan = append(p.bySpan, f.Event)
		}
	}
	// The projections that came before their span's aliases (an alias of
	// each of the span's events comes in the same batch, as the span's
	// append facts do).
	for _, span := range p.spans {
		run, _ := p.alias(span)
		for _, seq := range p.index[span] {
			w := &p.queue[seq-p.head]
			p.m.matched.Inc()
			rekeyed = p.rekey(rekeyed, &w.fact, &run)
			w.done = true
			p.live--
		}
		delete(p.index, span)
	}
	for i := range facts {
		f := &facts[i]
		switch f.Kind {
		case analyzer.FactAlias:
		case analyzer.FactProjectSpan:
			if run, ok := p.alias(f.Event); ok {
				p.m.matched.Inc()
				rekeyed = p.rekey(rekeyed, f, &run)
				continue
			}
			if p.holds != nil && p.holds(f.Event) {
				// Its producer appended a message without id, keyed by
				// the span: no alias will come.
				p.m.unmatched.Inc()
				g := *f
				g.Kind = analyzer.FactProject
				out = append(out, g)
				continue
			}
			p.park(f.Clone(), now)
		default:
			out = append(out, *f)
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
			out = append(out, g)
			w.done = true
			p.live--
		}
		delete(p.index, k)
	}
	out = p.expireLocked(out, now, false)
	return out, rekeyed
}

// rekey appends to dst projection f keyed by each event of run.
func (p *pairing) rekey(dst []analyzer.Fact, f *analyzer.Fact, run *aliasRun) []analyzer.Fact {
	g := *f
	g.Kind = analyzer.FactProject
	p.keys = run.keys(p.keys[:0])
	for _, k := range p.keys {
		g.Event = k
		dst = append(dst, g)
	}
	return dst
}

// alias returns the events of producer span key span.
func (p *pairing) alias(span analyzer.EventKey) (aliasRun, bool) {
	if a, ok := p.cur[span]; ok {
		return a, true
	}
	a, ok := p.old[span]
	return a, ok
}

// addAlias records that producer span key span appended event ev, and
// reports whether that is news (not a batch published again, nor an event
// past maxAliasKeys).
func (p *pairing) addAlias(span, ev analyzer.EventKey) bool {
	run, ok := p.alias(span)
	switch {
	case !ok:
		run = aliasRun{first: ev}
	case run.has(ev):
		return false
	case len(run.more)+1 < maxAliasKeys:
		// A copy: the older generation may share the array.
		run.more = append(run.more[:len(run.more):len(run.more)], ev)
	default:
		return false
	}
	p.put(span, run)
	return true
}

// put stores span's run in the newer generation, which, when full, becomes
// the older one (the older one's aliases that no projection asked for, and
// that the newer one does not hold, are counted evicted).
func (p *pairing) put(span analyzer.EventKey, run aliasRun) {
	if _, ok := p.cur[span]; !ok && len(p.cur) >= p.half {
		dropped := 0
		for k := range p.old {
			if _, ok := p.cur[k]; !ok {
				dropped++
			}
		}
		p.m.aliasEvicted.Add(float64(dropped))
		p.old, p.cur = p.cur, p.old
		clear(p.cur)
	}
	p.cur[span] = run
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
