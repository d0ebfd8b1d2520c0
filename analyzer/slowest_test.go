package analyzer

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestKeepSlow: keepSlow keeps the SlowestKept largest lags of any order.
func TestKeepSlow(t *testing.T) {
	for _, lags := range [][]int64{{1, 2, 3, 4, 5}, {5, 4, 3, 2, 1}, {3, 1, 5, 2, 4}, {2}, {}} {
		var slow []tracedLag
		for _, l := range lags {
			slow = keepSlow(slow, tracedLag{lag: l})
		}
		var got []int64
		for _, s := range slow {
			got = append(got, s.lag)
		}
		slices.Sort(got)
		want := slices.Clone(lags)
		slices.Sort(want)
		want = want[max(0, len(want)-SlowestKept):]
		if diff := cmp.Diff(want, got, cmpEmpty); diff != "" {
			t.Errorf("keepSlow of %v (-want +got):\n%s", lags, diff)
		}
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []int64) bool { return slices.Equal(a, b) })
