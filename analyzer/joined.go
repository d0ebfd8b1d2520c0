package analyzer

import "math/bits"

// joinedEntry is an event the join no longer waits for: every projection
// expected to show it has (or its deadline found it with none expected).
// Of the 112 bytes of its eventEntry it keeps what duplicate and late
// detection read: its key, when it arrived, and a class that names its event
// type and projection masks, 24 bytes with its index at 3/4 load another
// 10.7 (BenchmarkJoinedEvents). A projection that shows it again is
// duplicated; one that shows it for the first time is counted (projected,
// and late if the deadline declared it unprojected for it) but gives no lag
// or stage duration, which the entry no longer has the timestamps for. Such
// a first showing past the event's full join is rare: it takes a projection
// that started showing events of the type after the event was joined.
type joinedEntry struct {
	key EventKey
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
	typ          uint16
	// declared: the deadline has been evaluated (unproj is final).
	declared bool
}

// maxClasses bounds the classes a shard interns (4096 * ~60 bytes); an event
// whose class does not fit stays in its full entry.
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
	id, ok := s.class(joinedClass{seen: e.seen, unproj: e.unproj, typ: e.typ, declared: e.declared})
	if !ok {
		return false
	}
	for s.events.len() >= s.limit {
		j.retireJoined()
	}
	seq := s.events.push(joinedEntry{key: e.key, at: msCeil(e.arrived), class: id})
	s.index.insert(e.key, seq)
	return true
}

// projectJoined records that projection p showed joined event e.
func (j *joinShard) projectJoined(e *joinedEntry, p uint16, now int64) {
	s := &j.joined
	c := s.classes[e.class]
	bit := uint64(1) << p
	if c.seen&bit != 0 {
		j.duplicated.inc(c.typ, p)
		return
	}
	j.sh.learn(c.typ, bit, now)
	j.projected.inc(c.typ, p)
	if c.unproj&bit != 0 {
		j.late.inc(c.typ, p)
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
			j.unproj.inc(c.typ, p)
			j.extra.unprojected(p, e.key)
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
