package analyzer

import "math"

// eventQueue holds full event entries in arrival order, found by key. An
// entry may leave before it reaches the front (joined, or moved to another
// queue): it then stays as a tombstone, skipped by every scan, until the
// front passes it. Not safe for concurrent use.
type eventQueue struct {
	events  deque[eventEntry]
	index   eventIndex[eventEntry, *eventEntry]
	live    int    // entries that are not tombstones
	declSeq uint64 // first entry the deadline may not have declared
	// cursor is oldestPending's position per projection.
	cursor [maxProjections]uint64
}

// goneArrived marks a tombstone in its arrived field: no clock reads it.
const goneArrived = math.MinInt64

func (e *eventEntry) gone() bool { return e.arrived == goneArrived }

func newEventQueue(limit int) eventQueue {
	return eventQueue{index: eventIndex[eventEntry, *eventEntry]{limit: limit}}
}

// len is the slots the queue uses, tombstones included: what bounds it.
func (q *eventQueue) len() int { return q.events.len() }

func (q *eventQueue) find(k EventKey) (uint64, bool) { return q.index.find(k, &q.events) }

func (q *eventQueue) at(seq uint64) *eventEntry { return q.events.at(seq) }

// push appends a copy of e and returns its sequence number.
func (q *eventQueue) push(e *eventEntry) uint64 {
	seq := q.events.push(*e)
	q.index.insert(e.key, seq)
	q.live++
	return seq
}

// remove takes the live entry at seq out of the queue, leaving a tombstone,
// and retires the tombstones at the front: the entry, and any entry before
// seq, must not be used afterwards.
func (q *eventQueue) remove(seq uint64) {
	e := q.events.at(seq)
	q.index.remove(e.key, seq)
	q.live--
	e.arrived = goneArrived
	for q.events.len() > 0 && q.events.front().gone() {
		q.events.popFront()
	}
}
