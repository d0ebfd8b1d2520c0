package analyzer

// genMap is a map bounded to about limit entries by generations: when the
// current generation is full it becomes the old one and the previous old one
// is cleared, so the least recently inserted half is forgotten at once. Reuse
// of both maps keeps inserts free of allocations once warm. Not safe for
// concurrent use.
type genMap[K comparable, V any] struct {
	cur, old map[K]V
	half     int
	// rotations counts generations dropped, for tests and metrics.
	rotations int
}

func newGenMap[K comparable, V any](limit int) *genMap[K, V] {
	half := limit / 2
	if half < 1 {
		half = 1
	}
	return &genMap[K, V]{cur: make(map[K]V), old: make(map[K]V), half: half}
}

func (g *genMap[K, V]) get(k K) (V, bool) {
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	v, ok := g.old[k]
	return v, ok
}

func (g *genMap[K, V]) put(k K, v V) {
	if len(g.cur) >= g.half {
		if _, ok := g.cur[k]; !ok {
			g.old, g.cur = g.cur, g.old
			clear(g.cur)
			g.rotations++
		}
	}
	g.cur[k] = v
}

func (g *genMap[K, V]) len() int { return len(g.cur) + len(g.old) }

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
