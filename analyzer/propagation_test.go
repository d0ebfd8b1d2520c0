package analyzer

import "testing"

// TestBrokenPropagation: a projection span in the append's trace, or linked
// to it among other links, is not broken; one in another trace with no link
// to the append's is, and the Bloom filter of one link lets about one
// unrelated trace in 500 through (the count errs low, never high).
func TestBrokenPropagation(t *testing.T) {
	app, other := [16]byte{1}, [16]byte{2}
	tests := []struct {
		name  string
		trace [16]byte
		links [][16]byte
		want  bool
	}{
		{"same trace", app, nil, false},
		{"same trace, unrelated link", app, [][16]byte{other}, false},
		{"own trace, linked", other, [][16]byte{app}, false},
		{"own trace, linked among many", other, [][16]byte{{9}, {8}, app, {7}}, false},
		{"own trace, no link", other, nil, true},
		{"own trace, link to another trace", other, [][16]byte{{3}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bloom uint64
			for _, l := range tt.links {
				bloom |= LinkBloom(l)
			}
			if got := brokenPropagation(traceHash(app), traceHash(tt.trace), bloom); got != tt.want {
				t.Errorf("brokenPropagation = %v, want %v", got, tt.want)
			}
		})
	}
	var false1 int
	const n = 100_000
	for i := range n {
		var tr [16]byte
		putUint64(tr[:8], uint64(i)+1000)
		putUint64(tr[8:], uint64(i)*0x9e3779b97f4a7c15)
		if linkedTo(LinkBloom([16]byte{3}), tr) {
			false1++
		}
	}
	if rate := float64(false1) / n; rate > 1.0/300 {
		t.Errorf("one link lets %.4f of unrelated traces through, want about 1/500 at most 1/300", rate)
	}
}
