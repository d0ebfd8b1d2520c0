package analyzer

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// analyzeFile runs the offline analysis of one OTLP JSON lines file.
func analyzeFile(t testing.TB, path string, cfg Config) (*Analyzer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var u ptrace.JSONUnmarshaler
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := a.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	a.Flush()
	return a, reg
}

// proj is the expected outcome for one projection of a fixture; lags in ms.
type proj struct {
	name                                             string
	expected, projected, unprojected, dup, ooo, skew uint64
	lags                                             []int
	unprojectedIDs                                   []string
}

// TestFixtures checks the analysis of every fixture against the expectations
// written down in testdata/README.md.
func TestFixtures(t *testing.T) {
	tests := []struct {
		file  string
		projs []proj
	}{
		{"happy_path", []proj{
			{name: "orders_view", expected: 3, projected: 3, lags: []int{120, 250, 80}},
			{name: "sales_summary", expected: 3, projected: 3, lags: []int{340, 1500, 610}},
		}},
		{"projection_before_append", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{200, 95}},
			{name: "sales_summary", expected: 2, projected: 2, lags: []int{450, 1250}},
		}},
		{"missing_projection", []proj{
			{name: "orders_view", expected: 4, projected: 4, lags: []int{110, 130, 150, 170}},
			{name: "sales_summary", expected: 4, projected: 3, unprojected: 1, lags: []int{500, 700, 900}, unprojectedIDs: []string{"evt-03-003"}},
		}},
		{"two_projections", []proj{
			{name: "orders_view", expected: 1, projected: 1, lags: []int{90}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{2400}},
		}},
		{"multi_event_append", []proj{
			{name: "orders_view", expected: 3, projected: 3, lags: []int{100, 130, 160}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{420}},
		}},
		{"span_link", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{400, 700}},
		}},
		{"messaging_semconv", []proj{
			{name: "orders-view", expected: 5, projected: 5, lags: []int{60, 75, 140, 310, 520}},
		}},
		{"clock_skew", []proj{
			{name: "orders_view", expected: 2, projected: 2, skew: 1, lags: []int{300}},
		}},
		{"noise", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{210, 160}},
			{name: "sales_summary", expected: 2, projected: 2, lags: []int{380, 520}},
		}},
		{"duplicates_out_of_order", []proj{
			{name: "orders_view", expected: 3, projected: 3, dup: 1, ooo: 1, lags: []int{200, 1200, 150}},
			{name: "sales_summary", expected: 3, projected: 3, lags: []int{450, 350, 400}},
		}},
		{"broken_propagation", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{180, 260}},
			{name: "sales_summary", expected: 2, projected: 2, lags: []int{520, 1100}},
		}},
		{"no_command", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{180, 240}},
		}},
		{"intermediate_spans", []proj{
			{name: "orders_view", expected: 1, projected: 1, lags: []int{330}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{780}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.KeepSamples = true
			a, _ := analyzeFile(t, filepath.Join("..", "testdata", tt.file+".jsonl"), cfg)
			var got []proj
			for _, p := range a.Summary().Projections {
				got = append(got, proj{
					name: p.Name, expected: p.Expected, projected: p.Projected, unprojected: p.Unprojected,
					dup: p.Duplicated, ooo: p.OutOfOrder, skew: p.ClockSkew, unprojectedIDs: p.UnprojectedIDs,
					lags: []int{int(p.Lag.Count), int(p.Lag.Sum / time.Millisecond), int(p.Lag.Max / time.Millisecond)},
				})
			}
			var want []proj
			for _, p := range tt.projs {
				var sum, mx int
				for _, l := range p.lags {
					sum += l
					mx = max(mx, l)
				}
				p.lags = []int{len(p.lags), sum, mx} // count, sum, max
				want = append(want, p)
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(proj{})); diff != "" {
				t.Errorf("summary mismatch (-want +got; lags are count, sum ms, max ms):\n%s", diff)
			}
		})
	}
}
