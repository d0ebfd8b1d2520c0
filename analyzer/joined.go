package analyzer

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// joinedEntry is an event the join no longer waits for: every projection
// expected to show it has (or its deadline found it with none expected).
// Of the 128 bytes of its eventEntry it keeps what duplicate and late
// detection read: its key, when it arrived, and a class that names its event
// type, projection masks, weight and service; and, for checkCause, which
// main's consistency counts run on every projection span joined by event id
// (duplicates included), the append's trace and end. A projection that
// shows it again is duplicated, with the append's weight, and checked for
// broken propagation and clock skew as a full entry would be. One that shows
// it for the first time is counted (projected and shown, late if the
// deadline declared it unprojected for it, all weighted) and checked the
// same way, but gives no lag, stage duration, negative-lag count
// (cqrs_clock_skew_total) or out-of-order check, which the entry no longer
// has the timestamps and versions for. Such a first showing past the
// event's full join is rare: it takes a projection that started showing
// events of the type a deadline after the event was joined (settle).
//
// 26 bytes of byte arrays (alignment 1, so nothing pads it; 48 before), with
// its index at 3/4 load another 10.7 (BenchmarkJoinedEvents), for these
// stated errors:
//   - key is a 64-bit fingerprint of the EventKey (EventKey.hash, whose low
//     31 bits are the index's tag): an event not held is taken for a held
//     one, a false duplicate or late showing, or a new append for a held
//     one, with a chance of about n/2^64 per lookup for n events held (one
//     in 10^13 at 2^21 held). A source that forges ids to collide gains
//     nothing it could not get by sending the same id twice.
//   - trace is the traceHash of the append's trace id, which gives both
//     "same trace" (equal hashes; wrong with a chance of 2^-64) and the
//     link Bloom bits, as they come from the same hash (LinkBloom).
//   - at is when the event arrived in milliseconds of the Unix clock
//     rounded up, modulo 2^32: ages are computed with wrap-around, so
//     retention is capped at maxJoinedAge.
//   - end is the append's end, for clock skew, in microseconds (rounded
//     down) after the millisecond at: a skew it gives is at most 1µs
//     shorter than the append's full end gives (one under 1µs may not be
//     observed), far below the histogram's smallest bucket (0.5 ms). An
//     event whose append ended more than 35 minutes (2^31µs) from its
//     arrival stays in its full entry, as one whose class does not fit
//     does; one whose timestamps were not credible (badTime) gives no skew
//     and keeps 0.
type joinedEntry struct {
	key   [8]byte // little endian, as all four
	trace [8]byte
	at    [4]byte
	end   [4]byte // int32
	class [2]byte
}

func (e *joinedEntry) fingerprint() uint64 { return binary.LittleEndian.Uint64(e.key[:]) }
func (e *joinedEntry) traceHash() uint64   { return binary.LittleEndian.Uint64(e.trace[:]) }
func (e *joinedEntry) arrivedAt() uint32   { return binary.LittleEndian.Uint32(e.at[:]) }
func (e *joinedEntry) classID() uint16     { return binary.LittleEndian.Uint16(e.class[:]) }
func (e *joinedEntry) setClass(id uint16)  { binary.LittleEndian.PutUint16(e.class[:], id) }

// appendEnd returns the append's end (ns), for an entry seen at now (ns):
// at's full millisecond is now's less the entry's age, which retention
// keeps under 2^31 ms.
func (e *joinedEntry) appendEnd(now int64) int64 {
	nowMs := now / 1e6
	atMs := nowMs - int64(int32(uint32(nowMs)-e.arrivedAt()))
	return atMs*1e6 + int64(int32(binary.LittleEndian.Uint32(e.end[:])))*1e3
}

func (e *eventEntry) hasKey(k EventKey, _ uint64) bool  { return e.key == k }
func (e *joinedEntry) hasKey(_ EventKey, h uint64) bool { return e.fingerprint() == h }

// joinedIDs is what the summary reads of a joined event (Config.KeepSamples
// only): its key and trace id, which its entry no longer has.
type joinedIDs struct {
	key   EventKey
	trace [16]byte
}

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
	// full holds the key and trace id of each event held, by fingerprint,
	// when the summary keeps them (Config.KeepSamples, offline analysis).
	full map[uint64]joinedIDs
}

func newJoinedStore(limit int, keepIDs bool) joinedStore {
	s := joinedStore{
		index: eventIndex[joinedEntry, *joinedEntry]{limit: limit},
		ids:   make(map[joinedClass]uint16),
		limit: limit,
	}
	if keepIDs {
		s.full = make(map[uint64]joinedIDs)
	}
	return s
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
func msCeil(t int64) uint32 { return uint32(msCeilFull(t)) }

// msCeilFull is t in milliseconds rounded up.
func msCeilFull(t int64) int64 { return (t + 999_999) / 1e6 }

// msAge is how long before now (ns) an entry stamped at arrived, in
// milliseconds; negative when it arrived after now.
func msAge(now int64, at uint32) int64 { return int64(int32(uint32(now/1e6)-at)) * 1e6 }

// join copies event e, which every projection expected to show it has
// shown (or which the deadline declared with none missing, or which no
// projection waits for when it is evicted), into the joined store, and
// reports whether it did: false when its class or its append's end does
// not fit. The caller removes it from its queue.
func (j *joinShard) join(e *eventEntry) bool {
	s := &j.joined
	var end int64 // µs after the millisecond e arrived in, rounded down
	if !e.badTime {
		d := e.appendEnd - msCeilFull(e.arrived)*1e6
		end = d / 1e3
		if d < 0 && d%1e3 != 0 {
			end--
		}
		if end < math.MinInt32 || end > math.MaxInt32 {
			return false
		}
	}
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
	h := e.key.hash()
	var n joinedEntry
	binary.LittleEndian.PutUint64(n.key[:], h)
	binary.LittleEndian.PutUint64(n.trace[:], traceHash(e.trace))
	binary.LittleEndian.PutUint32(n.at[:], msCeil(e.arrived))
	binary.LittleEndian.PutUint32(n.end[:], uint32(int32(end)))
	n.setClass(id)
	seq := s.events.push(n)
	s.index.insertHash(h, seq)
	if s.full != nil {
		s.full[h] = joinedIDs{key: e.key, trace: e.trace}
	}
	return true
}

// projectJoined records that projection p showed joined event e with span
// ps.
func (j *joinShard) projectJoined(e *joinedEntry, p uint16, ps projSpan, now int64) {
	s := &j.joined
	c := s.classes[e.classID()]
	j.checkAppend(e.traceHash(), c.service, e.appendEnd(now), c.badTime, p, ps)
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
		e.setClass(id)
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
		c := s.classes[e.classID()]
		if c.declared {
			continue
		}
		if !flush && msAge(now, e.arrivedAt()) < j.deadline {
			break
		}
		missing := j.sh.expectedBy(c.typ) &^ c.seen
		ids := s.full[e.fingerprint()] // zero unless the summary keeps them
		for b := missing; b != 0; b &= b - 1 {
			p := uint16(bits.TrailingZeros64(b))
			j.unproj.add(c.typ, p, c.weight)
			j.extra.unprojected(p, ids.key, ids.trace)
		}
		c.unproj, c.declared = missing, true
		if id, ok := s.class(c); ok {
			e.setClass(id)
		}
	}
	s.declSeq = seq
	retention := min(j.retention, maxJoinedAge)
	for s.events.len() > 0 && msAge(now, s.events.front().arrivedAt()) >= retention {
		j.retireJoined()
	}
}

func (j *joinShard) retireJoined() {
	s := &j.joined
	e := s.events.front()
	h := e.fingerprint()
	s.index.removeHash(h, s.events.head)
	if ids, ok := s.full[h]; ok {
		delete(j.extra.ids, ids.key)
		delete(s.full, h)
	}
	s.events.popFront()
}
