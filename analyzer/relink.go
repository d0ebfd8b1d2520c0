package analyzer

import (
	"math/bits"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// What the two stages of a scale-out (server's ingest and join roles) need
// of the Resolver and the Joiner to join across ingest instances what one
// process joins in memory: the key of a producer span, projections marked
// when their producer span did not come, and the expected projections
// learned from traffic, shared between join instances. None of it is used
// by a single process (role all), and none of it is on a hot path.

// KeyOfSpan returns the join key of a message identified by its producer
// span (trace and span id): the Event of a messaging producer's append
// without message id, and of the projection facts of the consumer spans
// without event id that link to that span or are its children, unless the
// Resolver knew the events the span appended.
func KeyOfSpan(trace [16]byte, span [8]byte) EventKey { return keyOfSpan(trace, span) }

// MarkSpanKeyed makes r give at once, as FactProjectSpan rather than
// FactProject, the projection facts keyed by a producer span it has not
// seen (a consumer span without event id that links to, or is a child of,
// a span of a trace not resolved here yet), instead of holding them for
// that span up to join.command_wait and then giving them keyed by it. In a
// two-stage deployment, another ingest instance may resolve the
// producer's trace, or this one later: the join role joins the fact to
// the events of the span's appends, whichever join instance holds them,
// and waits for them as r would have. The facts of a producer span r has
// seen (with or without events) are given as always. Call it before the
// first Resolve; the ingest role does.
func (r *Resolver) MarkSpanKeyed() {
	for i := range r.shards {
		rs := &r.shards[i]
		rs.mu.Lock()
		rs.t.markSpanKeyed = true
		rs.mu.Unlock()
	}
}

// RecordLearned makes j record each projection it learns from traffic to
// be expected for an event type (the first time it shows one of its
// events), for TakeLearned. Call it before the first Apply; the join role
// does, to tell its other instances (Learn).
func (j *Joiner) RecordLearned() {
	j.sh.learned = &learnedLog{}
}

// TakeLearned appends to dst, as FactLearned facts (EventType, Projection,
// and Start: when), the projections j learned from traffic since the last
// call (nothing unless RecordLearned was called), and returns it. Each
// (event type, projection) pair is learned once: they are bounded by the
// label limits.
func (j *Joiner) TakeLearned(dst []Fact) []Fact {
	l := j.sh.learned
	if l == nil {
		return dst
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	dst = append(dst, l.facts...)
	clear(l.facts)
	l.facts = l.facts[:0]
	return dst
}

// Learn records that projection shows events of type eventType, as if j
// had joined one at the time at, unless j knows it already: another join
// instance learned it (FactLearned). From then on, j expects the projection
// to show the type's events (those it holds too, at their deadline), and
// the type's events stay pending until a deadline after at (the rule of
// expectations learned from traffic, which the instances then share). It is
// not recorded for TakeLearned: the instance that learned it told the
// others.
func (j *Joiner) Learn(eventType, projection string, at time.Time) {
	sh := j.sh
	typ := sh.types.id(eventType)
	bit := projectionBit(sh.projections.id(projection))
	if bit == 0 || sh.expected[typ].Load()&bit != 0 {
		return
	}
	if sh.expected[typ].Or(bit)&bit == 0 {
		ns := at.UnixNano()
		for {
			old := sh.learnedAt[typ].Load()
			if old >= ns || sh.learnedAt[typ].CompareAndSwap(old, ns) {
				break
			}
		}
		sh.touchUnprojected(sh.types.value(typ), bit)
	}
}

// Learned appends to dst, as FactLearned facts, every projection j
// expects to show events of a type that it learned (from traffic, or from
// Learn) rather than from join.expected, with Start the last time it
// learned one for the type, and returns it: what a join instance that has
// just started needs to know of the others'.
func (j *Joiner) Learned(dst []Fact) []Fact {
	sh := j.sh
	for t := range min(sh.types.len(), len(sh.expected)) {
		name := sh.types.value(uint16(t))
		mask := sh.expected[t].Load() &^ (sh.cfgAll | sh.cfgByType[name])
		for b := mask; b != 0; b &= b - 1 {
			dst = append(dst, Fact{
				Kind:       FactLearned,
				EventType:  name,
				Projection: sh.projections.value(uint16(bits.TrailingZeros64(b))),
				Start:      sh.learnedAt[t].Load(),
			})
		}
	}
	return dst
}

// Holds reports whether j holds an event of key k (pending, unprojected
// or joined): the join role asks it of a projection keyed by its producer
// span, whose producer appended a message without id if the event is
// there.
func (j *Joiner) Holds(k EventKey) bool {
	s := j.shards[eventShard(&k, len(j.shards))]
	lock(&s.mu)
	defer s.mu.Unlock()
	return s.held(k)
}

// learnedLog holds the projections a Joiner learned since TakeLearned.
type learnedLog struct {
	mu    sync.Mutex
	facts []Fact
}

// add records that projection bit was learned for type typ at now.
func (l *learnedLog) add(sh *joinShared, typ uint16, bit uint64, now int64) {
	f := Fact{
		Kind:       FactLearned,
		EventType:  sh.types.value(typ),
		Projection: sh.projections.value(uint16(bits.TrailingZeros64(bit))),
		Start:      now,
	}
	l.mu.Lock()
	l.facts = append(l.facts, f)
	l.mu.Unlock()
}

// EvictionCounter returns the series of reason (a constant: label values
// are a bounded set) of lagscope_join_evictions_total in reg, registering
// the vector if no Resolver or Joiner has: for the entries a component
// outside this package drops before they were resolved.
func EvictionCounter(reg prometheus.Registerer, reason string) (prometheus.Counter, error) {
	v, err := registerCounterVec(reg, evictionsOpts, "reason")
	if err != nil {
		return nil, err
	}
	return v.WithLabelValues(reason), nil
}
