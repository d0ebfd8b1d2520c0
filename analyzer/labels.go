package analyzer

// overflowValue replaces label values past a label's limit.
const overflowValue = "other"

// labelSet interns the values of one metric label into small ids, bounded to
// limit distinct values; later values all map to the id of "other". Lookups
// of known values do not allocate. Not safe for concurrent use.
type labelSet struct {
	name     string
	ids      map[string]uint16
	values   []string
	limit    int
	other    int // id of "other", -1 until needed
	overflow func(label string)
}

func newLabelSet(name string, limit int, overflow func(string)) *labelSet {
	return &labelSet{name: name, ids: make(map[string]uint16), limit: limit, other: -1, overflow: overflow}
}

// id returns the id of v, adding it when there is room. Empty values are
// given as "unknown".
func (s *labelSet) id(v string) uint16 {
	if v == "" {
		v = "unknown"
	}
	if id, ok := s.ids[v]; ok {
		return id
	}
	if len(s.values) >= s.limit {
		if s.overflow != nil {
			s.overflow(s.name)
		}
		return s.otherID()
	}
	v = clone(v) // v may point into a request
	id := uint16(len(s.values))
	s.ids[v] = id
	s.values = append(s.values, v)
	return id
}

func (s *labelSet) otherID() uint16 {
	if s.other < 0 {
		if id, ok := s.ids[overflowValue]; ok {
			s.other = int(id)
			return id
		}
		// "other" takes a slot of its own past the limit, so the limit
		// counts real values.
		s.other = len(s.values)
		s.ids[overflowValue] = uint16(s.other)
		s.values = append(s.values, overflowValue)
	}
	return uint16(s.other)
}

// lookup returns the id of v without adding it.
func (s *labelSet) lookup(v string) (uint16, bool) {
	id, ok := s.ids[v]
	return id, ok
}

func (s *labelSet) value(id uint16) string { return s.values[id] }

func (s *labelSet) len() int { return len(s.values) }
