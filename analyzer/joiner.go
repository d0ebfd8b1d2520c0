package analyzer

import (
	"encoding/hex"
	"math/bits"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// eventEntry is an appended event held by the join. Label values are interned
// ids and projections are bits, so an entry is a fixed 112 bytes.
type eventEntry struct {
	key       EventKey
	trace     [16]byte
	lagFrom   int64 // command start, or append end when the trace has no command
	appendEnd int64
	arrived   int64
	aggHash   uint64
	version   int64
	// expected: projections the event is expected by; pending: those of
	// them still counted in cqrs_projection_pending_events; seen: those that
	// showed it; unproj: those declared unprojected at the deadline.
	expected, pending, seen, unproj uint64
	typ, aggType, command           uint16
	declared                        bool // the deadline has been evaluated
}

// orphanEntry is a projection fact whose event has not been appended (yet).
type orphanEntry struct {
	key        EventKey
	trace      [16]byte
	start, end int64
	arrived    int64
	prev       uint64 // seq+1 of the previous orphan of the same event; 0 when none
	projection uint16
	consumed   bool
}

type orderKey struct {
	projection uint16
	agg        uint64
}

type orderVal struct {
	version, start int64
}

type versionAt struct {
	version, appendEnd int64
}

// Joiner is step 2 of the analysis: it joins facts by event id, whatever the
// trace they came from, and turns the joins into metrics. Its state is
// bounded by Config's limits. Not safe for concurrent use; Analyzer
// serialises calls.
type Joiner struct {
	deadline, retention, orphanTTL int64
	maxEvents, maxOrphans          int

	m                                            *metrics
	types, aggTypes, commands, projections, qrys *labelSet

	index     eventIndex
	events    deque[eventEntry]
	orphanIdx map[EventKey]uint64 // seq+1 of the newest orphan of an event
	orphans   deque[orphanEntry]

	expectedByType []uint64
	cfgAll         uint64
	cfgByType      map[string]uint64

	pending  [maxProjections]int64
	cursor   [maxProjections]uint64
	progress [maxProjections]int64
	declSeq  uint64

	order  *genMap[orderKey, orderVal]
	latest *genMap[aggKey, versionAt]

	lagSeries   map[[3]uint16]*lagSeries
	appended    counters2
	projected   counters2
	unproj      counters2
	duplicated  counters2
	outOfOrder  counters2
	late        counters2
	queries     map[[2]uint16]prometheus.Counter
	projSeries  [maxProjections]projSeries
	sum         *summaryState
	chain       []uint64
	exemplarGap int64
}

type lagSeries struct {
	obs    prometheus.Observer
	lastEx int64
}

type projSeries struct {
	skew            prometheus.Counter
	pending, oldest prometheus.Gauge
}

// counters2 caches the counters of a two-label vector by interned ids, so an
// increment is one map lookup without allocations.
type counters2 struct {
	vec  *prometheus.CounterVec
	a, b *labelSet
	m    map[[2]uint16]prometheus.Counter
}

func (c *counters2) inc(x, y uint16) {
	k := [2]uint16{x, y}
	ctr, ok := c.m[k]
	if !ok {
		ctr = c.vec.WithLabelValues(c.a.value(x), c.b.value(y))
		c.m[k] = ctr
	}
	ctr.Inc()
}

// NewJoiner returns a Joiner for cfg that reports to m.
func newJoiner(cfg Config, m *metrics) *Joiner {
	overflow := func(label string) { m.overflow.WithLabelValues(label).Inc() }
	projLimit := cfg.MaxLabelValues
	if projLimit > maxProjections-1 {
		projLimit = maxProjections - 1 // one bit is kept for "other"
	}
	j := &Joiner{
		deadline:    int64(cfg.Deadline),
		retention:   int64(cfg.Retention),
		orphanTTL:   int64(cfg.Deadline + cfg.CommandWait),
		maxEvents:   cfg.MaxPendingEvents,
		maxOrphans:  cfg.MaxPendingProjections,
		m:           m,
		types:       newLabelSet("event_type", cfg.MaxLabelValues, overflow),
		aggTypes:    newLabelSet("aggregate_type", cfg.MaxLabelValues, overflow),
		commands:    newLabelSet("command", cfg.MaxLabelValues, overflow),
		projections: newLabelSet("projection", projLimit, overflow),
		qrys:        newLabelSet("query", cfg.MaxLabelValues, overflow),
		orphanIdx:   make(map[EventKey]uint64),
		cfgByType:   make(map[string]uint64),
		order:       newGenMap[orderKey, orderVal](cfg.MaxPendingEvents),
		latest:      newGenMap[aggKey, versionAt](cfg.MaxPendingEvents),
		lagSeries:   make(map[[3]uint16]*lagSeries),
		queries:     make(map[[2]uint16]prometheus.Counter),
		sum:         newSummaryState(cfg.KeepSamples),
		exemplarGap: int64(100 * time.Millisecond),
	}
	j.appended = counters2{vec: m.appended, a: j.types, b: j.aggTypes, m: map[[2]uint16]prometheus.Counter{}}
	for _, c := range []*counters2{&j.projected, &j.unproj, &j.duplicated, &j.outOfOrder, &j.late} {
		c.a, c.b, c.m = j.types, j.projections, map[[2]uint16]prometheus.Counter{}
	}
	j.projected.vec, j.unproj.vec, j.duplicated.vec = m.projected, m.unproj, m.duplicated
	j.outOfOrder.vec, j.late.vec = m.outOfOrder, m.late
	for typ, ps := range cfg.Expected {
		var mask uint64
		for _, p := range ps {
			mask |= j.projectionBit(j.projections.id(p))
		}
		if typ == "*" {
			j.cfgAll |= mask
		} else {
			j.cfgByType[typ] |= mask
		}
	}
	return j
}

func (j *Joiner) projectionBit(p uint16) uint64 {
	if int(p) >= maxProjections {
		return 0
	}
	if p == 0 || j.projSeries[p].pending == nil {
		j.initProjection(p)
	}
	return 1 << p
}

func (j *Joiner) initProjection(p uint16) {
	if j.projSeries[p].pending != nil {
		return
	}
	name := j.projections.value(p)
	j.projSeries[p] = projSeries{
		skew:    j.m.skew.WithLabelValues(name),
		pending: j.m.pending.WithLabelValues(name),
		oldest:  j.m.oldest.WithLabelValues(name),
	}
	j.sum.projection(p, name)
}

func (j *Joiner) typeID(name string) uint16 {
	t := j.types.id(name)
	for int(t) >= len(j.expectedByType) {
		n := len(j.expectedByType)
		mask := j.cfgAll | j.cfgByType[j.types.value(uint16(n))]
		j.expectedByType = append(j.expectedByType, mask)
		j.touchUnprojected(uint16(n), mask)
	}
	return t
}

// touchUnprojected creates the unprojected counters of an event type and the
// projections now expected to show it, at 0: a counter that first appears at
// 1 hides its first increase from PromQL's increase() and rate(), and so
// from the unprojected-events alert.
func (j *Joiner) touchUnprojected(typ uint16, mask uint64) {
	for b := mask; b != 0; b &= b - 1 {
		p := uint16(bits.TrailingZeros64(b))
		k := [2]uint16{typ, p}
		if _, ok := j.unproj.m[k]; !ok {
			j.unproj.m[k] = j.unproj.vec.WithLabelValues(j.types.value(typ), j.projections.value(p))
		}
	}
}

// Apply joins facts that arrived at now (Unix ns).
func (j *Joiner) Apply(facts []Fact, now int64) {
	for i := range facts {
		f := &facts[i]
		switch f.Kind {
		case FactAppend:
			j.appendEvent(f, now)
		case FactProject:
			j.projectFact(f, now)
		case FactQuery:
			j.query(f)
		}
	}
}

func aggHash(s string) uint64 {
	if s == "" {
		return 0
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h | 1
}

func (j *Joiner) appendEvent(f *Fact, now int64) {
	if _, dup := j.index.find(f.Event, &j.events); dup {
		return // the same append exported twice
	}
	for j.events.len() >= j.maxEvents {
		j.retireEvent(true)
	}
	typ := j.typeID(f.EventType)
	e := eventEntry{
		key:       f.Event,
		trace:     f.TraceID,
		lagFrom:   f.End,
		appendEnd: f.End,
		arrived:   now,
		aggHash:   aggHash(f.AggregateID),
		version:   f.Version,
		typ:       typ,
		aggType:   j.aggTypes.id(f.AggregateType),
		command:   j.commands.id(f.Command),
	}
	if f.CommandStart > 0 && f.Command != "none" {
		e.lagFrom = f.CommandStart
		if d := f.End - f.CommandStart; d >= 0 {
			j.m.stageObs[stageCommand].Observe(seconds(d))
		}
	}
	e.expected = j.expectedByType[typ]
	e.pending = e.expected
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]++
	}
	j.appended.inc(typ, e.aggType)
	j.sum.appended(j.types.value(typ))
	if e.aggHash != 0 && e.version > 0 {
		if v, ok := j.latest.get(aggKey(e.aggHash)); !ok || v.version < e.version {
			j.latest.put(aggKey(e.aggHash), versionAt{version: e.version, appendEnd: f.End})
		}
	}
	seq := j.events.push(e)
	j.index.insert(f.Event, seq)
	if j.sum.keep {
		j.sum.ids[f.Event] = f.DisplayID()
	}
	if o, ok := j.orphanIdx[f.Event]; ok {
		delete(j.orphanIdx, f.Event)
		j.applyOrphans(j.events.at(seq), o, now)
	}
}

// applyOrphans applies, oldest first, the projections that arrived before
// their event.
func (j *Joiner) applyOrphans(e *eventEntry, newest uint64, now int64) {
	j.chain = j.chain[:0]
	for s := newest; s != 0; {
		if !j.orphans.live(s - 1) {
			break
		}
		o := j.orphans.at(s - 1)
		j.chain = append(j.chain, s-1)
		s = o.prev
	}
	for i := len(j.chain) - 1; i >= 0; i-- {
		o := j.orphans.at(j.chain[i])
		o.consumed = true
		j.project(e, o.projection, o.start, o.end, now)
	}
}

func (j *Joiner) projectFact(f *Fact, now int64) {
	p := j.projections.id(f.Projection)
	j.projectionBit(p)
	if seq, ok := j.index.find(f.Event, &j.events); ok {
		j.project(j.events.at(seq), p, f.Start, f.End, now)
		return
	}
	for j.orphans.len() >= j.maxOrphans {
		j.retireOrphan(true)
	}
	seq := j.orphans.push(orphanEntry{
		key: f.Event, trace: f.TraceID, start: f.Start, end: f.End, arrived: now,
		prev: j.orphanIdx[f.Event], projection: p,
	})
	j.orphanIdx[f.Event] = seq + 1
}

// project records that projection p showed event e with a span from start
// to end.
func (j *Joiner) project(e *eventEntry, p uint16, start, end, now int64) {
	bit := uint64(1) << p
	ps := j.sum.proj[p]
	if e.seen&bit != 0 {
		j.duplicated.inc(e.typ, p)
		ps.duplicated++
		return
	}
	e.seen |= bit
	if j.expectedByType[e.typ]&bit == 0 {
		j.expectedByType[e.typ] |= bit
		j.touchUnprojected(e.typ, bit)
	}
	if e.pending&bit != 0 {
		e.pending &^= bit
		j.pending[p]--
	}
	j.projected.inc(e.typ, p)
	ps.projected++
	if e.unproj&bit != 0 {
		j.late.inc(e.typ, p)
		ps.late++
	}
	if lag := end - e.lagFrom; lag < 0 {
		j.projSeries[p].skew.Inc()
		ps.skew++
	} else {
		j.observeLag(e, p, lag, now)
		ps.observe(lag)
	}
	if d := start - e.appendEnd; d >= 0 {
		j.m.stageObs[stageDelivery].Observe(seconds(d))
	}
	if d := end - start; d >= 0 {
		j.m.stageObs[stageProjection].Observe(seconds(d))
	}
	if e.appendEnd > j.progress[p] {
		j.progress[p] = e.appendEnd
	}
	if e.aggHash != 0 && e.version > 0 {
		k := orderKey{projection: p, agg: e.aggHash}
		last, ok := j.order.get(k)
		switch {
		case !ok:
			j.order.put(k, orderVal{version: e.version, start: start})
		case (e.version-last.version < 0) != (start-last.start < 0) && e.version != last.version && start != last.start:
			// Applied later but older (or earlier but newer): the
			// projection saw the aggregate's events out of order.
			j.outOfOrder.inc(e.typ, p)
			ps.outOfOrder++
			if start > last.start {
				j.order.put(k, orderVal{version: e.version, start: start})
			}
		case start > last.start:
			j.order.put(k, orderVal{version: e.version, start: start})
		}
	}
}

func (j *Joiner) observeLag(e *eventEntry, p uint16, lag, now int64) {
	k := [3]uint16{e.command, e.typ, p}
	s, ok := j.lagSeries[k]
	if !ok {
		s = &lagSeries{obs: j.m.lag.WithLabelValues(j.commands.value(e.command), j.types.value(e.typ), j.projections.value(p))}
		j.lagSeries[k] = s
	}
	v := seconds(lag)
	// An exemplar costs an allocation; one per series every 100ms is
	// plenty for a person to find a trace, and every slow one is kept.
	if now-s.lastEx >= j.exemplarGap || lag >= int64(time.Second) {
		s.lastEx = now
		s.obs.(prometheus.ExemplarObserver).ObserveWithExemplar(v, prometheus.Labels{"trace_id": hex.EncodeToString(e.trace[:])})
		return
	}
	s.obs.Observe(v)
}

func (j *Joiner) query(f *Fact) {
	q := j.qrys.id(f.Query)
	result := uint16(queryUnknown)
	if h := aggHash(f.AggregateID); h != 0 && f.Version > 0 {
		if v, ok := j.latest.get(aggKey(h)); ok {
			result = queryFresh
			if v.version > f.Version && v.appendEnd <= f.Start {
				result = queryStale
			}
		}
	}
	k := [2]uint16{q, result}
	c, ok := j.queries[k]
	if !ok {
		c = j.m.queries.WithLabelValues(j.qrys.value(q), queryResults[result])
		j.queries[k] = c
	}
	c.Inc()
	j.sum.queries[result]++
}

const (
	queryFresh = iota
	queryStale
	queryUnknown
)

var queryResults = [...]string{"fresh", "stale", "unknown"}

// Tick declares unprojected the events whose deadline passed (every pending
// one when flush is set), retires entries past retention, and refreshes the
// gauges.
func (j *Joiner) Tick(now int64, flush bool) {
	s := max(j.declSeq, j.events.head)
	for ; s < j.events.tail; s++ {
		e := j.events.at(s)
		if !flush && e.arrived+j.deadline > now {
			break
		}
		j.declare(e)
	}
	j.declSeq = s
	for j.events.len() > 0 && j.events.front().arrived+j.retention <= now {
		j.retireEvent(false)
	}
	for j.orphans.len() > 0 {
		o := j.orphans.front()
		if !o.consumed && !flush && o.arrived+j.orphanTTL > now {
			break
		}
		j.retireOrphan(false)
	}
	j.refreshGauges(now)
}

// declare evaluates an event at its deadline: every projection expected by
// then that has not shown it makes it unprojected.
func (j *Joiner) declare(e *eventEntry) {
	if e.declared {
		return
	}
	e.declared = true
	e.expected |= j.expectedByType[e.typ]
	missing := e.expected &^ e.seen
	for b := missing; b != 0; b &= b - 1 {
		p := uint16(bits.TrailingZeros64(b))
		j.unproj.inc(e.typ, p)
		j.sum.unprojected(p, e.key)
	}
	e.unproj = missing
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]--
	}
	e.pending = 0
	for b := e.expected; b != 0; b &= b - 1 {
		j.sum.proj[bits.TrailingZeros64(b)].expected++
	}
}

func (j *Joiner) retireEvent(forRoom bool) {
	seq := j.events.head
	e := j.events.front()
	if !e.declared && e.pending != 0 && forRoom {
		j.m.evictions.WithLabelValues(reasonCapacity).Inc()
	}
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]--
	}
	j.index.remove(e.key, seq)
	if j.sum.keep {
		delete(j.sum.ids, e.key)
	}
	j.events.popFront()
}

func (j *Joiner) retireOrphan(forRoom bool) {
	seq := j.orphans.head
	o := j.orphans.front()
	if !o.consumed {
		reason := reasonOrphanExpired
		if forRoom {
			reason = reasonOrphanCapacity
		}
		j.m.evictions.WithLabelValues(reason).Inc()
		j.sum.proj[o.projection].orphans++
		if s, ok := j.orphanIdx[o.key]; ok && s == seq+1 {
			delete(j.orphanIdx, o.key)
		}
	}
	j.orphans.popFront()
}

// refreshGauges sets the pending and oldest-pending gauges of every
// projection seen so far.
func (j *Joiner) refreshGauges(now int64) {
	for p := 0; p < j.projections.len() && p < maxProjections; p++ {
		ps := &j.projSeries[p]
		if ps.pending == nil {
			continue
		}
		ps.pending.Set(float64(j.pending[p]))
		age := j.oldestPending(uint16(p), now)
		ps.oldest.Set(seconds(age))
		j.sum.proj[p].pending = j.pending[p]
		j.sum.proj[p].oldest = age
	}
}

// oldestPending returns the age of the oldest event projection p has not
// shown: an event within its deadline, or past it while p has shown nothing
// appended later (a stalled projection). A cursor per projection makes this
// amortised O(1).
func (j *Joiner) oldestPending(p uint16, now int64) int64 {
	bit := uint64(1) << p
	c := max(j.cursor[p], j.events.head)
	for ; c < j.events.tail; c++ {
		e := j.events.at(c)
		exp := e.expected | j.expectedByType[e.typ]
		if exp&bit == 0 || e.seen&bit != 0 || (e.declared && e.appendEnd <= j.progress[p]) {
			continue
		}
		break
	}
	j.cursor[p] = c
	if c == j.events.tail {
		return 0
	}
	return max(0, now-j.events.at(c).appendEnd)
}

// Entries returns the number of events and waiting projections held.
func (j *Joiner) Entries() int { return j.events.len() + j.orphans.len() }

func seconds(ns int64) float64 { return float64(ns) / 1e9 }
