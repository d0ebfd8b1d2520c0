package collector

// Selection is what the selective decoder (Config.LazyDecode) keeps of a
// request besides the fields of a span it always keeps (trace and span ids,
// parent span id, name, kind, start and end times, status code, the ids of
// its links): the attributes named here, and the span events named here
// with those of their attributes named here. It is the consumer's to say:
// the collector does not interpret spans. A program serving the analyzer
// converts analyzer.Config.Reads() into it; the two types have the same
// fields for that.
type Selection struct {
	// ResourceAttributes are the keys of the resource attributes kept.
	ResourceAttributes []string
	// SpanAttributes are the keys of the span attributes kept.
	SpanAttributes []string
	// EventNames are the names of the span events kept; other events are
	// checked and dropped.
	EventNames []string
	// EventAttributes are the keys of the attributes kept of those events.
	EventAttributes []string
	// Values are string attribute values the consumer compares with: the
	// decoder shares one copy of each instead of allocating one per
	// attribute. They change no decoded value.
	Values []string
}

// stringSet is a set of strings looked up by a []byte without allocating.
// The sets are small (tens of keys) and their strings mostly of distinct
// lengths, so a lookup indexed by length and then comparing the few
// strings of that length beats hashing the key. It is safe for concurrent
// lookups.
type stringSet struct {
	byLen [][]string // by length up to maxIndexedLen: the strings of that length
	long  []string   // the longer ones, which no convention has
}

// maxIndexedLen bounds byLen, so that a long key (rules will come from the
// config file) costs no more than its own bytes.
const maxIndexedLen = 256

func newStringSet(ss []string) stringSet {
	var s stringSet
	for _, x := range ss {
		if _, dup := s.get([]byte(x)); dup {
			continue
		}
		if len(x) > maxIndexedLen {
			s.long = append(s.long, x)
			continue
		}
		if len(x) >= len(s.byLen) {
			s.byLen = append(s.byLen, make([][]string, len(x)+1-len(s.byLen))...)
		}
		s.byLen[len(x)] = append(s.byLen[len(x)], x)
	}
	return s
}

// get returns the string of s equal to b, and whether there is one.
func (s *stringSet) get(b []byte) (string, bool) {
	if len(b) < len(s.byLen) {
		for _, x := range s.byLen[len(b)] {
			if x == string(b) {
				return x, true
			}
		}
		return "", false
	}
	if len(b) > maxIndexedLen {
		return s.getLong(b)
	}
	return "", false
}

func (s *stringSet) getLong(b []byte) (string, bool) {
	for _, x := range s.long {
		if x == string(b) {
			return x, true
		}
	}
	return "", false
}
