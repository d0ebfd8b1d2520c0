package analyzer

import "encoding/binary"

// eventIndex finds the events a deque of T holds by key. It is an
// open-addressing table with linear probing of 8-byte slots: a 31-bit hash
// tag (top bit set, so no used slot is zero) and the low 32 bits of the
// event's sequence number in the deque; the key itself is compared in the
// deque entry, only when the tag matches. The table doubles while it is
// smaller than its limit needs and keeps at most half of it used; at the
// size the limit needs (limit*4/3 slots, not rounded to a power of two: a
// slot's home is found by multiplying the tag, not masking it) it fills to
// 3/4, so that a full index costs about 10.7 bytes per event rather than the
// 16 to 32 of a power-of-two table at most half full. A lookup touches one
// cache line of the table in the common case. Every sequence number in the
// index must be live in the deque, and the deque must span fewer than 2^32
// sequence numbers. Not safe for concurrent use.
type eventIndex[T any, P keyed[T]] struct {
	slots []uint64
	n     int
	// limit is the most entries the index is sized for (0: no limit, the
	// table stays at most half full).
	limit int
}

// keyed is a pointer to an entry of a deque that an eventIndex indexes:
// hasKey reports whether the entry is the event of key k, whose hash is h
// (a joined entry keeps only h, joined.go).
type keyed[T any] interface {
	*T
	hasKey(k EventKey, h uint64) bool
}

const indexUsed = 1 << 31

func (k EventKey) hash() uint64 {
	return mix64(binary.LittleEndian.Uint64(k[:8]) ^ mix64(binary.LittleEndian.Uint64(k[8:])))
}

func indexTag(h uint64) uint32 { return uint32(h) | indexUsed }

// home returns the first slot probed for a tag (or a slot's top half).
func (x *eventIndex[T, P]) home(tag uint64) uint64 {
	return (tag & (indexUsed - 1)) * uint64(len(x.slots)) >> 31
}

func (x *eventIndex[T, P]) next(i uint64) uint64 {
	if i++; i == uint64(len(x.slots)) {
		return 0
	}
	return i
}

// find returns the sequence number of the event with key k.
func (x *eventIndex[T, P]) find(k EventKey, events *deque[T]) (uint64, bool) {
	if x.n == 0 {
		return 0, false
	}
	h := k.hash()
	tag := indexTag(h)
	for i := x.home(uint64(tag)); ; i = x.next(i) {
		s := x.slots[i]
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == tag {
			seq := events.head + uint64(uint32(s)-uint32(events.head))
			if P(events.at(seq)).hasKey(k, h) {
				return seq, true
			}
		}
	}
}

// insert adds the event with key k at seq; k must not be in the index.
func (x *eventIndex[T, P]) insert(k EventKey, seq uint64) { x.insertHash(k.hash(), seq) }

// insertHash is insert for the key whose hash is h.
func (x *eventIndex[T, P]) insertHash(h, seq uint64) {
	if x.full() {
		x.grow()
	}
	x.place(uint64(indexTag(h))<<32 | uint64(uint32(seq)))
	x.n++
}

// full reports whether one more entry needs a larger table.
func (x *eventIndex[T, P]) full() bool {
	if x.limit > 0 && len(x.slots) >= x.capSlots() {
		return 4*(x.n+1) > 3*len(x.slots)
	}
	return 2*(x.n+1) > len(x.slots)
}

// capSlots is the table size that holds limit entries at 3/4 load.
func (x *eventIndex[T, P]) capSlots() int { return max(64, (x.limit*4+2)/3) }

func (x *eventIndex[T, P]) place(slot uint64) {
	for i := x.home(slot >> 32); ; i = x.next(i) {
		if x.slots[i] == 0 {
			x.slots[i] = slot
			return
		}
	}
}

func (x *eventIndex[T, P]) grow() {
	old := x.slots
	size := max(64, 2*len(old))
	if x.limit > 0 && size > x.capSlots() && len(old) < x.capSlots() {
		size = x.capSlots()
	}
	x.slots = make([]uint64, size)
	for _, s := range old {
		if s != 0 {
			x.place(s)
		}
	}
}

// remove deletes the entry of the event with key k at seq, if there is one.
func (x *eventIndex[T, P]) remove(k EventKey, seq uint64) { x.removeHash(k.hash(), seq) }

// removeHash is remove for the key whose hash is h.
func (x *eventIndex[T, P]) removeHash(h, seq uint64) {
	if x.n == 0 {
		return
	}
	want := uint64(indexTag(h))<<32 | uint64(uint32(seq))
	i := x.home(want >> 32)
	for ; x.slots[i] != want; i = x.next(i) {
		if x.slots[i] == 0 {
			return
		}
	}
	// Backward-shift deletion: move later entries of the probe run into
	// the hole unless their home lies cyclically in (hole, entry].
	for j := i; ; {
		j = x.next(j)
		s := x.slots[j]
		if s == 0 {
			break
		}
		home := x.home(s >> 32)
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = s
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
}

func (x *eventIndex[T, P]) len() int { return x.n }
