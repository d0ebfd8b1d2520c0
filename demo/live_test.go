package demo

import (
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/analyzer"
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
			if len(rows) != 1 || (len(rows[0].firing) > 0) != tt.firing {
				t.Fatalf("rows = %+v, want one with firing=%v", rows, tt.firing)
			}
			out := strings.Join(v.frame("test", 0), "\n")
			if got := strings.Contains(out, "FIRING"); got != tt.firing {
				t.Errorf("rendered FIRING = %v, want %v:\n%s", got, tt.firing, out)
			}
		})
	}
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test ./demo -update writes it): %v", err)
	}
	if diff := cmp.Diff(got, string(want)); diff != "" {
		t.Errorf("%s differs (-got +want; go test ./demo -update rewrites it):\n%s", path, diff)
	}
}

// fixtureView is a view a minute into a demo whose orders_view keeps up while
// sales_summary has stopped: every alert condition holds for it.
func fixtureView() *liveView {
	bounds := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.Inf(1)}
	buckets := func(counts ...float64) map[float64]float64 {
		m := map[float64]float64{}
		for i, le := range bounds {
			m[le] = counts[min(i, len(counts)-1)]
		}
		return m
	}
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	v := &liveView{threshold: 5 * time.Second, window: 30 * time.Second, start: start}
	v.add(&snapshot{at: start, projs: map[string]*projSnapshot{
		"orders_view":   {buckets: buckets(0), positionLag: 0},
		"sales_summary": {buckets: buckets(0), positionLag: 0},
	}})
	v.add(&snapshot{at: start.Add(30 * time.Second), commands: 300, appended: 300, head: 300, projs: map[string]*projSnapshot{
		"orders_view":   {projected: 298, pending: 2, oldest: 0.012, buckets: buckets(0, 100, 250, 298), positionLag: 2},
		"sales_summary": {projected: 120, pending: 180, oldest: 9, buckets: buckets(0, 0, 50, 100, 110, 120), positionLag: 180},
	}})
	v.add(&snapshot{at: start.Add(45 * time.Second), commands: 456, appended: 456, head: 456, projs: map[string]*projSnapshot{
		"orders_view":   {projected: 455, pending: 1, oldest: 0.01, buckets: buckets(0, 150, 400, 455), positionLag: 1},
		"sales_summary": {projected: 120, pending: 336, oldest: 24, buckets: buckets(0, 0, 50, 100, 110, 120), positionLag: 336},
	}})
	v.add(&snapshot{at: start.Add(60 * time.Second), commands: 612, appended: 612, head: 612, staleReads: 7, projs: map[string]*projSnapshot{
		"orders_view":   {projected: 610, pending: 2, oldest: 0.011, duplicated: 1, buckets: buckets(0, 200, 560, 608, 610), positionLag: 2, status: "OK"},
		"sales_summary": {projected: 120, pending: 489, oldest: 39.5, unprojected: 3, late: 1, buckets: buckets(0, 0, 50, 100, 110, 120), positionLag: 492, status: "STOPPED"},
	}})
	return v
}

// TestFrameWidth: at 80, 100 and 120 columns no line of the live view (its
// legend included) is wider than the terminal, so that it never wraps and a
// redraw overwrites the whole previous frame; the 80-column frame and the
// unlimited one (the final report in a file) are golden.
func TestFrameWidth(t *testing.T) {
	for _, width := range []int{80, 100, 120, 0} {
		v := fixtureView()
		lines := append(legend(width), "")
		lines = append(lines, v.frame("09:01:00", width)...)
		if width > 0 {
			for _, l := range lines {
				if got := cells(l); got > width {
					t.Errorf("width %d: a line of %d cells: %q", width, got, l)
				}
			}
		}
		switch width {
		case 80:
			golden(t, "frame-80.golden", strings.Join(lines, "\n")+"\n")
		case 0:
			golden(t, "frame-wide.golden", strings.Join(lines, "\n")+"\n")
		}
	}
}

// TestLiveViewConditions: each alert condition of the rules holds when its
// expression would, over the window; the stall conditions only once the
// window is full.
func TestLiveViewConditions(t *testing.T) {
	v := fixtureView()
	_, _, rows := v.rows()
	got := map[string][]string{}
	for _, r := range rows {
		got[r.name] = []string{}
		for _, c := range r.firing {
			got[r.name] = append(got[r.name], c.name)
		}
	}
	want := map[string][]string{
		"orders_view":   {},
		"sales_summary": {condLag, condUnprojected, condStalled, condPositionStalled},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("conditions with a full window (-got +want):\n%s", diff)
	}

	// Until the window is full, sales_summary's 15s without a projection
	// is no stall yet.
	half := &liveView{threshold: v.threshold, window: v.window, start: v.start}
	half.add(&snapshot{at: v.start, projs: map[string]*projSnapshot{"sales_summary": {projected: 120, positionLag: 0}}})
	last := *v.history[len(v.history)-1]
	last.at = v.start.Add(15 * time.Second)
	half.add(&last)
	_, _, rows = half.rows()
	for _, r := range rows {
		for _, c := range r.firing {
			if c.name == condStalled || c.name == condPositionStalled {
				t.Errorf("%s: %s after half a window", r.name, c.name)
			}
		}
	}
}

// TestPlain: off a terminal the summary is one key=value line for the
// totals and one per projection, without escape sequences.
func TestPlain(t *testing.T) {
	got := fixtureView().plain("09:01:00")
	want := []string{
		"09:01:00 running=1m0s commands_per_s=10.4 appended=612 appended_per_s=10.4 stale_reads=7",
		"09:01:00 projection=orders_view projected=610 per_s=10.4 pending=2 unprojected=0 duplicated=1 late=0 lag_p50=14ms lag_p99=25ms oldest_pending=11ms behind_head=2 alert=ok status=OK",
		"09:01:00 projection=sales_summary projected=120 per_s=0.0 pending=489 unprojected=3 duplicated=0 late=1 lag_p50=- lag_p99=- oldest_pending=39.5s behind_head=492 alert=lag,unprojected,stalled,position-stalled status=STOPPED",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("plain (-got +want):\n%s", diff)
	}
}

func TestPack(t *testing.T) {
	tests := []struct {
		name  string
		width int
		items []string
		want  []string
	}{
		{"unlimited", 0, []string{"a b", "c"}, []string{"a b · c"}},
		{"fits", 7, []string{"a b", "c"}, []string{"a b · c"}},
		{"next item on the next line", 6, []string{"a b", "c"}, []string{"a b", "> c"}},
		{"long item wrapped at spaces", 9, []string{"aaa bbb ccc ddd"}, []string{"aaa bbb", "> ccc ddd"}},
		{"no space to wrap at", 4, []string{"abcdefgh"}, []string{"abcd", "efgh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pack(tt.width, " · ", "> ", tt.items...)
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("pack (-got +want):\n%s", diff)
			}
		})
	}
}

func TestFit(t *testing.T) {
	got := fit([]string{"short", "a line too long", "3", "4"}, 10, 3)
	want := []string{"short", "a line to…", "… (a tall…"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("fit (-got +want):\n%s", diff)
	}
}

// TestLagQuantilesNative: with native buckets the window's p50 and p99 come
// from them, within 5 % of a 6s lag (the classic buckets read 7.5s and
// 9.95s), counting only the window's observations.
func TestLagQuantilesNative(t *testing.T) {
	// Key 42 is (5.91s, 6.17s], key -160 about 1ms.
	old := &projSnapshot{native: analyzer.NativeBuckets{Counts: map[int]float64{-160: 1000}}}
	cur := &projSnapshot{native: analyzer.NativeBuckets{Counts: map[int]float64{-160: 1000, 42: 200}},
		buckets: map[float64]float64{5: 0, 10: 200, math.Inf(1): 200}}
	p50, p99 := lagQuantiles(cur, old)
	for _, got := range []float64{p50, p99} {
		if got < 5.7 || got > 6.3 {
			t.Errorf("p50 %g, p99 %g: want both within 5 %% of 6s", p50, p99)
		}
	}
}
