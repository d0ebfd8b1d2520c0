package analyzer

import "testing"

// TestVersionHistory: the two newest versions are kept whatever order the
// appends arrive in, and a read is judged against the newest appended
// before it started.
func TestVersionHistory(t *testing.T) {
	type append struct{ version, end int64 }
	tests := []struct {
		name        string
		appends     []append
		read, start int64
		stale       bool
		staleness   int64
	}{
		{"read the latest", []append{{1, 10}, {2, 20}}, 2, 30, false, 0},
		{"missed the latest", []append{{1, 10}, {2, 20}}, 1, 30, true, 10},
		{"latest appended after the read began", []append{{1, 10}, {2, 20}}, 1, 15, false, 0},
		{"missed the one before a newer in flight", []append{{1, 10}, {2, 20}, {3, 40}}, 1, 30, true, 10},
		{"appends out of order", []append{{3, 40}, {1, 10}, {2, 20}}, 1, 30, true, 10},
		{"a repeated append changes nothing", []append{{1, 10}, {2, 20}, {2, 99}}, 1, 30, true, 10},
		{"older than both kept", []append{{2, 20}, {3, 40}, {1, 10}}, 1, 35, true, 15},
		{"older version appended after the newer (skew)", []append{{2, 50}, {3, 40}}, 1, 45, true, 5},
		{"nothing appended before the read", []append{{2, 20}, {3, 40}}, 1, 5, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v versionAt
			// Times in ms: the older version is kept to the microsecond.
			for _, a := range tt.appends {
				v, _ = v.with(a.version, a.end*1e6)
			}
			stale, d := v.staleFor(tt.read, tt.start*1e6)
			if stale != tt.stale || d != tt.staleness*1e6 {
				t.Errorf("staleFor(%d, %d) = %v, %d; want %v, %d (history %+v)", tt.read, tt.start, stale, d, tt.stale, tt.staleness, v)
			}
		})
	}
}
