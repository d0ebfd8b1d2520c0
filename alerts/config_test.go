package alerts

import (
	"strings"
	"testing"
	"time"
)

// TestWarnings: a lag threshold that is not a classic bucket bound is
// warned about, naming both; one that is, or unknown buckets, is not.
func TestWarnings(t *testing.T) {
	buckets := []float64{0.5, 1, 2, 5, 10}
	tests := []struct {
		name      string
		threshold time.Duration
		buckets   []float64
		warn      bool
	}{
		{"default threshold, default-like buckets", 5 * time.Second, buckets, false},
		{"sub-second bound", 500 * time.Millisecond, buckets, false},
		{"between bounds", 3 * time.Second, buckets, true},
		{"just off a bound", 5*time.Second + time.Millisecond, buckets, true},
		{"buckets not known", 3 * time.Second, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.LagThreshold, cfg.LagBuckets = tt.threshold, tt.buckets
			got := cfg.Warnings()
			if (len(got) > 0) != tt.warn {
				t.Fatalf("Warnings() = %q, want a warning: %v", got, tt.warn)
			}
			if tt.warn && !(strings.Contains(got[0], tt.threshold.String()) && strings.Contains(got[0], "metrics.lag_buckets")) {
				t.Errorf("warning %q does not name the threshold %s and metrics.lag_buckets", got[0], tt.threshold)
			}
		})
	}
}
