package analyzer

import "encoding/binary"

// eventIndex finds the events held by the join by key. It is an
// open-addressing table with linear probing, at most half full, of 8-byte
// slots: a 31-bit hash tag (top bit set, so no used slot is zero) and the low
// 32 bits of the event's sequence number in the join's deque; the key itself
// is compared in the deque entry, only when the tag matches. That is 16 bytes
// or less per event where a Go map of EventKey to uint64 takes about 50, and
// a lookup touches one cache line of the table. Every sequence number in the
// index must be live in the deque, and the deque must span fewer than 2^32
// sequence numbers. Not safe for concurrent use.
type eventIndex struct {
	slots []uint64
	n     int
}

const indexUsed = 1 << 31

func (k EventKey) hash() uint64 {
	return mix64(binary.LittleEndian.Uint64(k[:8]) ^ mix64(binary.LittleEndian.Uint64(k[8:])))
}

func indexTag(k EventKey) uint32 { return uint32(k.hash()) | indexUsed }

// find returns the sequence number of the event with key k.
func (x *eventIndex) find(k EventKey, events *deque[eventEntry]) (uint64, bool) {
	if x.n == 0 {
		return 0, false
	}
	tag := indexTag(k)
	mask := uint64(len(x.slots) - 1)
	for i := uint64(tag) & mask; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == tag {
			seq := events.head + uint64(uint32(s)-uint32(events.head))
			if events.at(seq).key == k {
				return seq, true
			}
		}
	}
}

// insert adds the event with key k at seq; k must not be in the index.
func (x *eventIndex) insert(k EventKey, seq uint64) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	x.place(uint64(indexTag(k))<<32 | uint64(uint32(seq)))
	x.n++
}

func (x *eventIndex) place(slot uint64) {
	mask := uint64(len(x.slots) - 1)
	for i := (slot >> 32) & mask; ; i = (i + 1) & mask {
		if x.slots[i] == 0 {
			x.slots[i] = slot
			return
		}
	}
}

func (x *eventIndex) grow() {
	old := x.slots
	x.slots = make([]uint64, max(64, 2*len(old)))
	for _, s := range old {
		if s != 0 {
			x.place(s)
		}
	}
}

// remove deletes the entry of the event with key k at seq, if there is one.
func (x *eventIndex) remove(k EventKey, seq uint64) {
	if x.n == 0 {
		return
	}
	want := uint64(indexTag(k))<<32 | uint64(uint32(seq))
	mask := uint64(len(x.slots) - 1)
	i := (want >> 32) & mask
	for ; x.slots[i] != want; i = (i + 1) & mask {
		if x.slots[i] == 0 {
			return
		}
	}
	// Backward-shift deletion: move later entries of the probe run into
	// the hole unless their home lies cyclically in (hole, entry].
	for j := i; ; {
		j = (j + 1) & mask
		s := x.slots[j]
		if s == 0 {
			break
		}
		home := (s >> 32) & mask
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = s
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
}

func (x *eventIndex) len() int { return x.n }
