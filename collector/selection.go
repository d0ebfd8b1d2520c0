package collector

import "encoding/binary"

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
// It is a small open-addressed hash table, at most half full, hashed by
// hashBytes: a lookup costs a hash of a few words and mostly one
// comparison, or none for a key it does not hold. (Indexing by length and
// comparing the strings of that length, up to four for the analysis's
// keys, most with a common prefix, took 7 % of BenchmarkReceiverDecode.)
// It is safe for concurrent lookups.
type stringSet struct {
	slots []string // "" is an empty slot
	mask  uint64   // len(slots) - 1, a power of two
	empty bool     // whether the set holds ""
}

func newStringSet(ss []string) stringSet {
	n := 16
	for n < 2*len(ss) {
		n *= 2
	}
	s := stringSet{slots: make([]string, n), mask: uint64(n - 1)}
	for _, x := range ss {
		if x == "" {
			s.empty = true
			continue
		}
		i := hashBytes([]byte(x)) & s.mask
		for s.slots[i] != "" && s.slots[i] != x {
			i = (i + 1) & s.mask
		}
		s.slots[i] = x
	}
	return s
}

// get returns the string of s equal to b, and whether there is one.
func (s *stringSet) get(b []byte) (string, bool) {
	if len(b) == 0 {
		return "", s.empty
	}
	for i := hashBytes(b) & s.mask; ; i = (i + 1) & s.mask {
		x := s.slots[i]
		if x == string(b) { // compared without allocating
			return x, true
		}
		if x == "" {
			return "", false
		}
	}
}

// hashBytes hashes b from its length and its first and last 8 bytes:
// strings that differ only in their middle collide, which costs a probe
// or a cache miss, never a wrong answer.
func hashBytes(b []byte) uint64 {
	x := uint64(len(b))
	if len(b) >= 8 {
		x ^= binary.LittleEndian.Uint64(b) ^ binary.LittleEndian.Uint64(b[len(b)-8:])*0xff51afd7ed558ccd
	} else {
		for _, c := range b {
			x = x<<8 ^ uint64(c)
		}
	}
	return (x * 0x9e3779b97f4a7c15) >> 32
}
