package analyzer

import (
	"maps"
	"sync"
	"sync/atomic"
)

// overflowValue replaces label values past a label's limit.
const overflowValue = "other"

// labelSet interns the values of one metric label into small ids, bounded to
// limit distinct values; later values all map to the id of "other". It is
// safe for concurrent use: lookups read an immutable snapshot without a lock
// and do not allocate; adding a value (rare: at most limit+1 times) copies
// the snapshot under a mutex.
type labelSet struct {
	name     string
	limit    int
	overflow func(label string)
	// onAdd, when set, runs under mu for each new id before the id is
	// published, so that whoever reads an id sees what onAdd set up for it.
	onAdd func(id uint16, v string)

	mu   sync.Mutex
	snap atomic.Pointer[labelSnap]
}

// labelSnap is an immutable state of a labelSet.
type labelSnap struct {
	ids    map[string]uint16
	values []string
	other  int // id of "other", -1 until needed
}

func newLabelSet(name string, limit int, overflow func(string)) *labelSet {
	s := &labelSet{name: name, limit: limit, overflow: overflow}
	s.snap.Store(&labelSnap{ids: map[string]uint16{}, other: -1})
	return s
}

// id returns the id of v, adding it when there is room. Empty values are
// given as "unknown".
func (s *labelSet) id(v string) uint16 {
	if v == "" {
		v = "unknown"
	}
	cur := s.snap.Load()
	if id, ok := cur.ids[v]; ok {
		return id
	}
	if cur.other >= 0 && len(cur.values) >= s.limit {
		// Full, and "other" exists: the snapshot cannot change any more.
		if s.overflow != nil {
			s.overflow(s.name)
		}
		return uint16(cur.other)
	}
	return s.add(v)
}

func (s *labelSet) add(v string) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	if id, ok := cur.ids[v]; ok {
		return id
	}
	if len(cur.values) >= s.limit {
		if s.overflow != nil {
			s.overflow(s.name)
		}
		return s.otherID(cur)
	}
	return s.put(cur, clone(v)) // v may point into a request
}

// put publishes a snapshot with v added; mu must be held.
func (s *labelSet) put(cur *labelSnap, v string) uint16 {
	id := uint16(len(cur.values))
	if s.onAdd != nil {
		s.onAdd(id, v)
	}
	next := &labelSnap{ids: maps.Clone(cur.ids), values: append(cur.values[:len(cur.values):len(cur.values)], v), other: cur.other}
	next.ids[v] = id
	if v == overflowValue {
		next.other = int(id)
	}
	s.snap.Store(next)
	return id
}

// otherID returns the id of "other", adding it past the limit (so that the
// limit counts real values); mu must be held.
func (s *labelSet) otherID(cur *labelSnap) uint16 {
	if cur.other >= 0 {
		return uint16(cur.other)
	}
	if id, ok := cur.ids[overflowValue]; ok {
		return id
	}
	return s.put(cur, overflowValue)
}

// lookup returns the id of v without adding it.
func (s *labelSet) lookup(v string) (uint16, bool) {
	id, ok := s.snap.Load().ids[v]
	return id, ok
}

func (s *labelSet) value(id uint16) string { return s.snap.Load().values[id] }

func (s *labelSet) len() int { return len(s.snap.Load().values) }
