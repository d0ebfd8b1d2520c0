package demo

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name     string
		q        float64
		cur, old map[float64]float64
		want     float64
	}{
		{"empty", 0.5, map[float64]float64{1: 0, inf: 0}, nil, math.NaN()},
		{"all in first bucket", 0.5, map[float64]float64{1: 10, 5: 10, inf: 10}, nil, 0.5},
		{"interpolated inside a bucket", 0.5, map[float64]float64{1: 0, 5: 10, inf: 10}, nil, 3},
		{"p99 in the +Inf bucket is the highest bound", 0.99, map[float64]float64{1: 0, 5: 0, inf: 10}, nil, 5},
		{"window: only the increase counts", 0.5, map[float64]float64{1: 10, 5: 20, inf: 20}, map[float64]float64{1: 10, 5: 10, inf: 10}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := quantile(tt.q, tt.cur, tt.old)
			if !(got == tt.want || math.IsNaN(got) && math.IsNaN(tt.want)) {
				t.Errorf("quantile = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLiveViewAlert: the summary says FIRING when the windowed p99 or the
// oldest pending event is above the threshold, and not at exactly it.
func TestLiveViewAlert(t *testing.T) {
	inf := math.Inf(1)
	snap := func(at time.Duration, lagBuckets map[float64]float64, oldest float64) *snapshot {
		return &snapshot{at: time.Unix(0, 0).Add(at), projs: map[string]*projSnapshot{
			"p": {buckets: lagBuckets, oldest: oldest, positionLag: math.NaN()},
		}}
	}
	tests := []struct {
		name   string
		snaps  []*snapshot
		firing bool
	}{
		{"fast", []*snapshot{snap(0, map[float64]float64{1: 0, 5: 0, 10: 0, inf: 0}, 0), snap(time.Second, map[float64]float64{1: 10, 5: 10, 10: 10, inf: 10}, 0)}, false},
		{"slow completed lag", []*snapshot{snap(0, map[float64]float64{1: 0, 5: 0, 10: 0, inf: 0}, 0), snap(time.Second, map[float64]float64{1: 0, 5: 0, 10: 10, inf: 10}, 0)}, true},
		{"stalled: nothing completes, oldest pending grows", []*snapshot{snap(0, map[float64]float64{1: 0, inf: 0}, 4), snap(time.Second, map[float64]float64{1: 0, inf: 0}, 6)}, true},
		{"oldest pending exactly at the threshold", []*snapshot{snap(0, map[float64]float64{1: 0, inf: 0}, 5)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &liveView{threshold: 5 * time.Second, window: time.Minute}
			for _, s := range tt.snaps {
				v.add(s)
			}
			_, _, rows := v.rows()
			if len(rows) != 1 || rows[0].firing != tt.firing {
				t.Fatalf("rows = %+v, want one with firing=%v", rows, tt.firing)
			}
			var b bytes.Buffer
			v.render(&b, "test")
			if got := strings.Contains(b.String(), "FIRING"); got != tt.firing {
				t.Errorf("rendered FIRING = %v, want %v:\n%s", got, tt.firing, b.String())
			}
		})
	}
}
