package analyzer

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// overflowValue replaces label values past a label's limit.
const overflowValue = "other"

// truncMarker ends a label value cut to the length limit.
const truncMarker = "…"

// labelSet interns the values of one metric label into small ids, bounded to
// limit distinct values; later values all map to the id of "other". Every
// value it hands out is valid UTF-8 of at most maxLen bytes (sanitizeLabel),
// so no span can make a label that client_golang refuses or a scrape that
// fails. It is safe for concurrent use: lookups read an immutable snapshot
// without a lock and do not allocate for a value already interned; adding a
// value (rare: at most limit+1 times) copies the snapshot under a mutex.
type labelSet struct {
	name   string
	limit  int
	maxLen int
	c      *labelCounters // nil: not counted
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

// labelCounters are the counters a labelSet moves: its label's series of
// lagscope_label_overflow_total and lagscope_label_values_sanitized_total.
type labelCounters struct {
	overflow, invalid, truncated prometheus.Counter
}

func newLabelSet(name string, limit, maxLen int, c *labelCounters) *labelSet {
	s := &labelSet{name: name, limit: limit, maxLen: max(maxLen, minLabelLength), c: c}
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
	return s.miss(cur, v)
}

// miss is id for a value not interned as it is: sanitized (counted), then
// looked up again, added, or "other" when the set is full.
func (s *labelSet) miss(cur *labelSnap, v string) uint16 {
	if sv, invalid, truncated := sanitizeLabel(v, s.maxLen); invalid || truncated {
		if s.c != nil {
			if invalid {
				s.c.invalid.Inc()
			}
			if truncated {
				s.c.truncated.Inc()
			}
		}
		v = sv
		if id, ok := cur.ids[v]; ok {
			return id
		}
	}
	if cur.other >= 0 && len(cur.values) >= s.limit {
		// Full, and "other" exists: the snapshot cannot change any more.
		s.overflowed()
		return uint16(cur.other)
	}
	return s.add(v)
}

func (s *labelSet) overflowed() {
	if s.c != nil {
		s.c.overflow.Inc()
	}
}

// sanitizeLabel returns v as a label value: invalid UTF-8 sequences replaced
// by U+FFFD, then, past maxLen bytes, cut at a rune boundary to end in
// truncMarker within maxLen. It reads at most the first maxLen+1 bytes of v
// (so that a caller may keep only those), and allocates only when v
// changes.
func sanitizeLabel(v string, maxLen int) (out string, invalid, truncated bool) {
	if len(v) > maxLen {
		// Validate only what can be kept, cut where a rune starts so that
		// a valid value does not end in half a rune.
		truncated = true
		v = v[:runeCut(v, maxLen)]
	}
	if !utf8.ValidString(v) {
		invalid = true
		v = strings.ToValidUTF8(v, "\uFFFD") // may grow: each bad byte run is 3 bytes
	}
	if truncated || len(v) > maxLen {
		truncated = true
		v = v[:runeCut(v, maxLen-len(truncMarker))] + truncMarker
	}
	return v, invalid, truncated
}

// runeCut returns where to cut v to at most limit bytes without splitting a
// rune: limit when v[limit] starts a rune, else up to utf8.UTFMax-1 bytes
// less (in invalid UTF-8 it may still split a bad sequence, which stays
// invalid). It reads v[limit-2:limit+1] at most.
func runeCut(v string, limit int) int {
	if limit >= len(v) {
		return len(v)
	}
	n := limit
	for k := 0; k < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(v[n]); k++ {
		n--
	}
	return n
}

// cutLabel returns the part of v a labelSet of maxLen would read (its first
// maxLen+1 bytes): what a value kept for later must hold, at most, to give
// the same label.
func cutLabel(v string, maxLen int) string {
	if len(v) > maxLen+1 {
		return v[:maxLen+1]
	}
	return v
}

func (s *labelSet) add(v string) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	if id, ok := cur.ids[v]; ok {
		return id
	}
	if len(cur.values) >= s.limit {
		s.overflowed()
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
