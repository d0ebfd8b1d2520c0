package analyzer

import "math/bits"

// joinedEntry is an event the join no longer waits for: every projection
// expected to show it has (or its deadline found it with none expected).
// Of the 128 bytes of its eventEntry it keeps what duplicate and late
// detection read: its key, when it arrived, and a class that names its event
// type, projection masks, weight and service; and, for checkCause, which
// main's consistency counts run on every projection span joined by event id
// (duplicates included), the append's trace id and end. 48 bytes, with its
// index at 3/4 load another 10.7 (BenchmarkJoinedEvents). A projection that
// shows it again is duplicated, with the append's weight, and checked for
// broken propagation and clock skew as a full entry would be. One that shows
// it for the first time is counted (projected and shown, late if the
// deadline declared it unprojected for it, all weighted) and checked the
// same way, but gives no lag, stage duration, negative-lag count
// (cqrs_clock_skew_total) or out-of-order check, which the entry no longer
// has the timestamps and versions for. Such a first showing past the
// event's full join is rare: it takes a projection that started showing
// events of the type a deadline after the event was joined (settle).
type joinedEntry struct {
	key   EventKey
	trace [16]byte // the append's, for broken propagation and the summary
	// appendEnd is the append's end (ns), for clock skew.
	appendEnd int64
	// at is when the event arrived, in milliseconds of the Unix clock
	// rounded up, modulo 2^32: ages are computed with wrap-around, so
	// retention is capped at maxJoinedAge.
	at    uint32
	class uint16
}

func (e *eventEntry) eventKey() *EventKey  { return &e.key }
func (e *joinedEntry) eventKey() *EventKey { return &e.key }

// joinedClass is what joined events of one type and the same masks share.
type joinedClass struct {
	seen, unproj uint64
	weight       float64 // the append's Fact.weight (1 unsampled)
	typ, service uint16
	// declared: the deadline has been evaluated (unproj is final).
	declared bool
	// badTime: the append's timestamps were not credible (no clock skew).
	badTime bool
}

// maxClasses bounds the classes a shard interns (4096 * ~80 bytes); an event
// whose class does not fit stays in its full entry. Weights are few in
// practice (the powers of two of the usual sampling thresholds), services
// bounded by metrics.max_label_values.
const maxClasses = 4096

// maxJoinedAge is the longest age a joinedEntry can tell: 2^31 ms, 24.8
// days; a longer join.retention keeps joined events that long.
const maxJoinedAge = int64(1<<31-1) * 1e6

// joinedStore holds a shard's joined events, oldest joined first, bounded by
// limit and retired past retention. Not safe for concurrent use.
type joinedStore struct {
	events  deque[joinedEntry]
	index   eventIndex[joinedEntry, *joinedEntry]
	declSeq uint64 // first entry the deadline may not have declared
	classes []joinedClass
	ids     map[joinedClass]uint16
	limit   int
}

func newJoinedStore(limit int) joinedStore {
	return joinedStore{
		index: eventIndex[joinedEntry, *joinedEntry]{limit: limit},
		ids:   make(map[joinedClass]uint16),
		limit: limit,
	}
}

// class returns the id of c, interning it; false when the shard has
// maxClasses already.
func (s *joinedStore) class(c joinedClass) (uint16, bool) {
	if id, ok := s.ids[c]; ok {
		return id, true
	}
	if len(s.classes) >= maxClasses {
		return 0, false
	}
	id := uint16(len(s.classes))
	s.classes = append(s.classes, c)
	s.ids[c] = id
	return id, true
}

// msCeil is t in milliseconds rounded up, modulo 2^32.
func msCeil(t int64) uint32 { return uint32((t + 999_999) / 1e6) }

// msAge is how long before now (ns) an entry stamped at arrived, in
// milliseconds; negative when it arrived after now.
func msAge(now int64, at uint32) int64 { return int64(int32(uint32(now/1e6)-at)) * 1e6 }

// join copies event e, which every projection expected to show it has
// shown (or which the deadline declared with none missing, or which no
// projection waits for when it is evicted), into the joined store, and
// reports whether it did: false when its class does not fit. The caller
// removes it from its queue.
func (j *joinShard) join(e *eventEntry) bool {
	s := &j.joined
	id, ok := s.class(joinedClass{
		seen: e.seen, unproj: e.unproj, weight: e.weight, typ: e.typ, service: e.service,
		declared: e.declared, badTime: e.badTime,
	})
	if !ok {
		return false
	}
	for s.events.len() >= s.limit {
		j.retireJoined()
	}
	seq := s.events.push(joinedEntry{key: e.key, trace: e.trace, appendEnd: e.appendEnd, at: msCeil(e.arrived), class: id})
	s.index.insert(e.key, seq)
	return true
}

// projectJoined records that projection p showed joined event e with span
// ps.
func (j *joinShard) projectJoined(e *joinedEntry, p uint16, ps projSpan, now int64) {
	s := &j.joined
	c := s.classes[e.class]
	j.checkAppend(e.trace, c.service, e.appendEnd, c.badTime, p, ps)
	bit := uint64(1) << p
	if c.seen&bit != 0 {
		j.duplicated.add(c.typ, p, c.weight)
		return
	}
	j.sh.learn(c.typ, bit, now)
	j.projected.add(c.typ, p, c.weight)
	j.st.shown[p]++
	if c.unproj&bit != 0 {
		j.late.add(c.typ, p, c.weight)
	}
	c.seen |= bit
	if id, ok := s.class(c); ok {
		e.class = id
	}
	// else a further showing by p is counted again rather than as a
	// duplicate: the shard has maxClasses classes, which takes a hostile
	// mix of event types and projections.
}

// expireJoined declares the joined events whose deadline passed (all when
// flush is set): a projection that started showing their type after they
// were joined makes them unprojected for it. It retires those past
// retention.
func (j *joinShard) expireJoined(now int64, flush bool) {
	s := &j.joined
	seq := max(s.declSeq, s.events.head)
	for ; seq < s.events.tail; seq++ {
		e := s.events.at(seq)
		c := s.classes[e.class]
		if c.declared {
			continue
		}
		if !flush && msAge(now, e.at) < j.deadline {
			break
		}
		missing := j.sh.expectedBy(c.typ) &^ c.seen
		for b := missing; b != 0; b &= b - 1 {
			p := uint16(bits.TrailingZeros64(b))
			j.unproj.add(c.typ, p, c.weight)
			j.extra.unprojected(p, e.key, e.trace)
		}
		c.unproj, c.declared = missing, true
		if id, ok := s.class(c); ok {
			e.class = id
		}
	}
	s.declSeq = seq
	retention := min(j.retention, maxJoinedAge)
	for s.events.len() > 0 && msAge(now, s.events.front().at) >= retention {
		j.retireJoined()
	}
}

func (j *joinShard) retireJoined() {
	s := &j.joined
	e := s.events.front()
	s.index.remove(e.key, s.events.head)
	if j.extra.keep {
		delete(j.extra.ids, e.key)
	}
	s.events.popFront()
}
