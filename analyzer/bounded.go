package analyzer

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// genMap is a map bounded to about limit entries by generations: when the
// current generation is full it becomes the old one and the previous old one
// is cleared, so the least recently inserted half is forgotten at once.
//
// Each generation is an open-addressing table with linear probing, kept at
// most half full while it grows by doubling; at the size its half of limit
// needs at 3/4 load (half*4/3 slots, not a power of two: a key's home slot
// is its hash multiplied into the table's range, not masked) it fills to
// 3/4, which takes a full genMap from 2*limit slots to 1.33*limit (the
// parent-span table at the default join.max_trace_spans: 66 to 45 MB).
// Probes run over one-byte fingerprints of the keys (genTable.meta), 1/32
// of the slots or less, and read a slot only where the fingerprint
// matches: in the common case a lookup of a key the map does not hold
// touches no slot, and one of a key it holds the one slot (the parent-edge
// and join maps are far larger than the caches, so each slot touched is a
// miss). Tables grow by doubling up to the generation's size and are
// reused across rotations, so inserts allocate nothing once warm. The zero
// key marks an empty slot: put ignores it and get never finds it. Not safe
// for concurrent use.
type genMap[K hashKey, V any] struct {
	cur, old genTable[K, V]
	half     int
	// rotations counts generations dropped, for tests and metrics.
	rotations int
}

// hashKey is a key of a genMap: comparable, with a well-mixed hash.
type hashKey interface {
	comparable
	hash() uint64
}

type genSlot[K hashKey, V any] struct {
	key K
	val V
}

// genTable is one generation: a power-of-two array of slots, at most half
// used, until it reaches max slots.
type genTable[K hashKey, V any] struct {
	slots []genSlot[K, V]
	// max is the size past which the table fills to 3/4 rather than
	// doubling.
	max int
	// meta holds a one-byte fingerprint of the key of each used slot (0:
	// empty), 1/32 of the slots' size or less: probes run over it (get) and
	// read a slot only where the fingerprint matches, on cache lines that
	// stay cached.
	meta []uint8
	n    int
}

// fingerprint is the meta byte of a key of hash h: never 0.
func fingerprint(h uint64) uint8 { return uint8(h>>56) | 1 }

// home returns the slot where the probe for a key of hash h starts: the
// low 32 bits of h scaled to the table (the fingerprint takes the top 8).
func (t *genTable[K, V]) home(h uint64) uint64 {
	return uint64(uint32(h)) * uint64(len(t.slots)) >> 32
}

func (t *genTable[K, V]) next(i uint64) uint64 {
	if i++; i == uint64(len(t.slots)) {
		return 0
	}
	return i
}

// full reports whether one more entry needs a larger table.
func (t *genTable[K, V]) full() bool {
	if t.max > 0 && len(t.slots) >= t.max {
		return 4*(t.n+1) > 3*len(t.slots)
	}
	return 2*(t.n+1) > len(t.slots)
}

func newGenMap[K hashKey, V any](limit int) *genMap[K, V] {
	half := limit / 2
	if half < 1 {
		half = 1
	}
	g := &genMap[K, V]{half: half}
	g.cur.max = max(16, (half*4+2)/3)
	g.old.max = g.cur.max
	return g
}

func (g *genMap[K, V]) get(k K) (V, bool) {
	h := k.hash()
	if v, ok := g.cur.get(k, h); ok {
		return v, true
	}
	return g.old.get(k, h)
}

func (g *genMap[K, V]) put(k K, v V) { g.putHash(k, k.hash(), v) }

// getHash is get with h, which must be k.hash().
func (g *genMap[K, V]) getHash(k K, h uint64) (V, bool) {
	if v, ok := g.cur.get(k, h); ok {
		return v, true
	}
	return g.old.get(k, h)
}

// putHash is put with h, which must be k.hash(): callers compute it
// outside their lock.
func (g *genMap[K, V]) putHash(k K, h uint64, v V) {
	var zero K
	if k == zero {
		return
	}
	if g.cur.n >= g.half {
		if _, ok := g.cur.get(k, h); !ok {
			g.old, g.cur = g.cur, g.old
			g.cur.reset()
			g.rotations++
		}
	}
	g.cur.put(k, h, v)
}

// touch reads the first byte of the slot where an insert of a key with
// hash h starts probing, and returns it. Touching the slots of a batch of
// keys before inserting them lets the CPU overlap their cache misses (the
// loads do not depend on each other, where each insert's probe loop waits
// for its own); the caller sums the results into a field so that the loads
// are not optimised away.
func (g *genMap[K, V]) touch(h uint64) uint8 {
	t := &g.cur
	if len(t.slots) == 0 {
		return 0
	}
	i := t.home(h)
	// The fingerprints too: the probe reads them first, and a full
	// generation's are larger than the caches.
	return *(*uint8)(unsafe.Pointer(&t.slots[i])) + t.meta[i]
}

// touchOld reads the fingerprint where a probe for hash h starts in the
// old generation, as touch does for an insert.
func (g *genMap[K, V]) touchOld(h uint64) uint8 {
	t := &g.old
	if len(t.meta) == 0 {
		return 0
	}
	return t.meta[t.home(h)]
}

// putNew inserts k, whose hash is h, with v unless either generation holds
// it, and reports whether one did (then nothing changes). Both generations
// are probed through their fingerprints (get): a new key, the common case,
// then costs no miss on the slots of the old one, which a plain lookup
// would (the retry check of every span doubled the resolver's misses and
// made BenchmarkConsumeUnrelated 1.7x slower without them), and reads a
// slot of the current one only to insert there.
func (g *genMap[K, V]) putNew(k K, h uint64, v V) bool {
	var zero K
	if k == zero {
		return false
	}
	t := &g.cur
	if len(t.slots) > 0 {
		// One probe of the current generation finds k or the slot to
		// insert it in.
		fp := fingerprint(h)
		for i := t.home(h); ; i = t.next(i) {
			m := t.meta[i]
			if m == fp && t.slots[i].key == k {
				return true
			}
			if m == 0 {
				if _, ok := g.old.get(k, h); ok {
					return true
				}
				if t.n < g.half && !t.full() {
					t.slots[i] = genSlot[K, V]{key: k, val: v}
					t.meta[i] = fp
					t.n++
					return false
				}
				break // full: putHash rotates or grows
			}
		}
	} else if _, ok := g.old.get(k, h); ok {
		return true
	}
	g.putHash(k, h, v)
	return false
}

func (g *genMap[K, V]) len() int { return g.cur.n + g.old.n }

// get probes the fingerprints, 64 to a cache line where the slots take 2 or
// fewer, and
// reads a slot only where its fingerprint matches: a key the table does not
// hold, the common case of the join's per-aggregate maps, then costs the
// one fingerprint line rather than a run of slot lines (at 3/4 load an
// unsuccessful probe passes 8.5 slots on average, 270 bytes of 32-byte
// slots). With put and putNew probing the same way, BenchmarkConsumeSynth
// took 0.84x the time of slot probes (alternating runs on one core).
func (t *genTable[K, V]) get(k K, h uint64) (V, bool) {
	if t.n > 0 {
		fp := fingerprint(h)
		for i := t.home(h); ; i = t.next(i) {
			switch t.meta[i] {
			case 0:
				var v V
				return v, false
			case fp:
				if s := &t.slots[i]; s.key == k {
					return s.val, true
				}
			}
		}
	}
	var v V
	return v, false
}

// put inserts or replaces k, whose hash is h and which is not the zero
// key.
func (t *genTable[K, V]) put(k K, h uint64, v V) {
	if t.full() {
		if _, ok := t.get(k, h); !ok {
			t.grow()
		}
		// else replaced below: the current generation at its largest
		// size is full when it holds half of limit, where putHash
		// rotates before a new key; a replace must not double it.
	}
	fp := fingerprint(h)
	for i := t.home(h); ; i = t.next(i) {
		switch t.meta[i] {
		case 0:
			t.slots[i] = genSlot[K, V]{key: k, val: v}
			t.meta[i] = fp
			t.n++
			return
		case fp:
			if s := &t.slots[i]; s.key == k {
				s.val = v
				return
			}
		}
	}
}

func (t *genTable[K, V]) grow() {
	old := t.slots
	size := max(16, 2*len(old))
	if t.max > 0 && size > t.max && len(old) < t.max {
		size = t.max
	}
	t.slots = make([]genSlot[K, V], size)
	t.meta = make([]uint8, len(t.slots))
	t.n = 0
	var zero K
	for i := range old {
		if old[i].key != zero {
			t.put(old[i].key, old[i].key.hash(), old[i].val)
		}
	}
}

// reset empties the table and keeps its memory.
func (t *genTable[K, V]) reset() {
	clear(t.slots)
	clear(t.meta)
	t.n = 0
}

func (k spanKey) hash() uint64 {
	// Mixed in two rounds: span ids are often derived from trace ids, and
	// a plain XOR of the two would cancel out.
	t := mix64(binary.LittleEndian.Uint64(k.trace[8:]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(k.trace[:8]), 29))
	return mix64(t ^ binary.LittleEndian.Uint64(k.span[:]))
}

func (k orderKey) hash() uint64 { return mix64(k.agg ^ uint64(k.projection)<<52) }

// aggKey is the hash of an aggregate id (aggHash), as a genMap key.
type aggKey uint64

func (k aggKey) hash() uint64 { return mix64(uint64(k)) }

// chunkBits sizes deque chunks: 4096 entries, so a deque allocates once per
// 4096 pushes and frees memory as its front advances.
const chunkBits = 12
const chunkSize = 1 << chunkBits

// deque is a FIFO of T addressed by a monotonically increasing sequence
// number, stored in fixed-size chunks. Entries are pushed at the back and
// retired from the front; a retired sequence number is never reused. Not safe
// for concurrent use.
type deque[T any] struct {
	chunks     [][]T
	head, tail uint64 // live entries are [head, tail)
	spare      []T
}

func (d *deque[T]) len() int { return int(d.tail - d.head) }

// push appends v and returns its sequence number.
func (d *deque[T]) push(v T) uint64 {
	if int(d.tail>>chunkBits-d.head>>chunkBits) >= len(d.chunks) {
		c := d.spare
		d.spare = nil
		if c == nil {
			c = make([]T, chunkSize)
		}
		d.chunks = append(d.chunks, c)
	}
	seq := d.tail
	*d.at(seq) = v
	d.tail++
	return seq
}

// live reports whether seq is still in the deque.
func (d *deque[T]) live(seq uint64) bool { return seq >= d.head && seq < d.tail }

// at returns the entry of a live sequence number.
func (d *deque[T]) at(seq uint64) *T {
	ci := seq>>chunkBits - d.head>>chunkBits
	return &d.chunks[ci][seq&(chunkSize-1)]
}

// front returns the oldest entry; the deque must not be empty.
func (d *deque[T]) front() *T { return d.at(d.head) }

// popFront retires the oldest entry.
func (d *deque[T]) popFront() {
	var zero T
	*d.at(d.head) = zero // drop references for the GC
	d.head++
	if d.head&(chunkSize-1) == 0 || d.head == d.tail {
		if d.head == d.tail {
			// Empty: keep the first chunk for reuse, rebase on a fresh chunk boundary.
			if len(d.chunks) > 0 && d.spare == nil {
				d.spare = d.chunks[0]
			}
			d.chunks = d.chunks[:0]
			d.head = (d.head + chunkSize - 1) &^ (chunkSize - 1)
			d.tail = d.head
			return
		}
		if d.spare == nil {
			d.spare = d.chunks[0]
		}
		d.chunks[0] = nil
		d.chunks = d.chunks[1:]
	}
}
