package analyzer

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.yaml.in/yaml/v3"
)

// analyzeFile runs the offline analysis of one OTLP JSON lines file.
func analyzeFile(t testing.TB, path string, cfg Config) (*Analyzer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range readRequests(t, path) {
		if err := a.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	a.Flush()
	return a, reg
}

// readRequests returns the export requests of one OTLP JSON lines file.
func readRequests(t testing.TB, path string) []ptrace.Traces {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var u ptrace.JSONUnmarshaler
	var out []ptrace.Traces
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, td)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// proj is the expected outcome for one projection of a fixture; lags in ms.
type proj struct {
	name                                             string
	expected, projected, unprojected, dup, ooo, skew uint64
	broken                                           uint64 // broken propagation
	lags                                             []int
	unprojectedIDs                                   []string
}

// TestFixtures checks the analysis of every fixture against the expectations
// written down in testdata/README.md, through the exposition (what
// Prometheus scrapes) and through Summary (what `lagscope analyze` reports).
func TestFixtures(t *testing.T) {
	tests := []struct {
		file  string
		projs []proj
		rules string // the config file of the rules to read it with
	}{
		{"happy_path", []proj{
			{name: "orders_view", expected: 3, projected: 3, lags: []int{120, 250, 80}},
			{name: "sales_summary", expected: 3, projected: 3, lags: []int{340, 1500, 610}},
		}, ""},
		{"projection_before_append", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{200, 95}},
			{name: "sales_summary", expected: 2, projected: 2, lags: []int{450, 1250}},
		}, ""},
		{"missing_projection", []proj{
			{name: "orders_view", expected: 4, projected: 4, lags: []int{110, 130, 150, 170}},
			{name: "sales_summary", expected: 4, projected: 3, unprojected: 1, lags: []int{500, 700, 900}, unprojectedIDs: []string{"evt-03-003"}},
		}, ""},
		{"two_projections", []proj{
			{name: "orders_view", expected: 1, projected: 1, lags: []int{90}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{2400}},
		}, ""},
		{"multi_event_append", []proj{
			{name: "orders_view", expected: 3, projected: 3, lags: []int{100, 130, 160}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{420}},
		}, ""},
		{"span_link", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{400, 700}},
		}, ""},
		{"messaging_semconv", []proj{
			{name: "orders-view", expected: 5, projected: 5, broken: 1, lags: []int{60, 75, 140, 310, 520}},
		}, ""},
		{"clock_skew", []proj{
			{name: "orders_view", expected: 2, projected: 2, skew: 1, lags: []int{300}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{19}},
		}, ""},
		{"noise", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{210, 160}},
			{name: "sales_summary", expected: 2, projected: 2, lags: []int{380, 520}},
		}, ""},
		{"duplicates_out_of_order", []proj{
			{name: "orders_view", expected: 3, projected: 3, dup: 1, ooo: 1, lags: []int{200, 1200, 150}},
			{name: "sales_summary", expected: 3, projected: 3, lags: []int{450, 350, 400}},
		}, ""},
		{"broken_propagation", []proj{
			{name: "orders_view", expected: 3, projected: 3, broken: 2, lags: []int{180, 260, 140}},
			{name: "sales_summary", expected: 3, projected: 3, broken: 3, lags: []int{520, 1100, 700}},
		}, ""},
		{"stale_reads", []proj{
			{name: "orders_view", expected: 5, projected: 5, lags: []int{100, 1500, 100, 900, 600}},
		}, ""},
		{"no_command", []proj{
			{name: "orders_view", expected: 2, projected: 2, lags: []int{180, 240}},
		}, ""},
		{"intermediate_spans", []proj{
			{name: "orders_view", expected: 1, projected: 1, lags: []int{330}},
			{name: "sales_summary", expected: 1, projected: 1, lags: []int{780}},
		}, ""},
		{"hand_instrumented", []proj{
			{name: "billing", expected: 1, projected: 1, lags: []int{150}},
			{name: "query-service", expected: 3, projected: 3, lags: []int{45, 80, 60}},
		}, ""},
		{"hand_instrumented", []proj{ // the same, with the shape written as rules
			{name: "billing", expected: 1, projected: 1, lags: []int{150}},
			{name: "query-service", expected: 3, projected: 3, lags: []int{45, 80, 60}},
		}, "rules/hand_instrumented.yaml"},
		{"rules/custom", []proj{
			{name: "shop", expected: 2, projected: 2, lags: []int{90, 130}},
		}, "rules/custom.yaml"},
		{"multi_event_consumer", []proj{
			{name: "billing", expected: 6, projected: 4, unprojected: 2, lags: []int{210, 210, 210, 120}, unprojectedIDs: []string{"evt-21-004", "evt-21-005"}},
			{name: "query-service", expected: 6, projected: 6, lags: []int{70, 70, 70, 95, 95, 55}},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.file+tt.rules, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.KeepSamples = true
			if tt.rules != "" {
				cfg.Rules = rulesOf(t, filepath.Join("..", "testdata", tt.rules))
				if len(cfg.Rules) == 0 {
					t.Fatalf("%s: no rules", tt.rules)
				}
			}
			a, reg := analyzeFile(t, filepath.Join("..", "testdata", tt.file+".jsonl"), cfg)
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
			// The numbers as Prometheus scrapes them; what the exposition
			// does not hold (the largest lag, the unprojected ids) from
			// Summary.
			sum := a.Summary()
			extra := map[string]ProjectionSummary{}
			for _, p := range sum.Projections {
				extra[p.Name] = p
			}
			got := scrapedProjections(t, reg)
			for i := range got {
				p := &got[i]
				p.lags = append(p.lags, int(extra[p.name].Lag.Max/time.Millisecond))
				p.unprojectedIDs = extra[p.name].UnprojectedIDs
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(proj{})); diff != "" {
				t.Errorf("scrape mismatch (-want +got; lags are count, sum ms, max ms):\n%s", diff)
			}
			// Summary, the offline report, says the same.
			var fromSummary []proj
			for _, p := range sum.Projections {
				fromSummary = append(fromSummary, proj{
					name: p.Name, expected: p.Expected, projected: p.Projected, unprojected: p.Unprojected,
					dup: p.Duplicated, ooo: p.OutOfOrder, skew: p.ClockSkew, broken: p.BrokenPropagation, unprojectedIDs: p.UnprojectedIDs,
					lags: []int{int(p.Lag.Count), int(p.Lag.Sum / time.Millisecond), int(p.Lag.Max / time.Millisecond)},
				})
			}
			if diff := cmp.Diff(want, fromSummary, cmp.AllowUnexported(proj{})); diff != "" {
				t.Errorf("summary mismatch (-want +got; lags are count, sum ms, max ms):\n%s", diff)
			}
		})
	}
}

// scrapedProjections reads each projection's counts from a text scrape of
// reg: expected is projected + unprojected - late (a late event is counted
// in both), lags are the lag histogram's count and sum (ms).
func scrapedProjections(t *testing.T, reg *prometheus.Registry) []proj {
	t.Helper()
	body := scrape(t, reg, acceptText).body
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	byName := map[string]*proj{}
	var names []string
	for _, m := range mfs["cqrs_projection_pending_events"].GetMetric() {
		name := labelOf(m, "projection")
		byName[name] = &proj{name: name}
		names = append(names, name)
	}
	late := map[string]uint64{}
	lagSum := map[string]float64{}
	lagCount := map[string]uint64{}
	add := func(family string, f func(p *proj, n uint64)) {
		for _, m := range mfs[family].GetMetric() {
			if p := byName[labelOf(m, "projection")]; p != nil {
				f(p, uint64(m.GetCounter().GetValue()))
			}
		}
	}
	add("cqrs_events_projected_total", func(p *proj, n uint64) { p.projected += n })
	add("cqrs_events_unprojected_total", func(p *proj, n uint64) { p.unprojected += n })
	add("cqrs_events_duplicated_total", func(p *proj, n uint64) { p.dup += n })
	add("cqrs_events_out_of_order_total", func(p *proj, n uint64) { p.ooo += n })
	add("cqrs_events_late_total", func(p *proj, n uint64) { late[p.name] += n })
	add("cqrs_clock_skew_total", func(p *proj, n uint64) { p.skew += n })
	add("cqrs_trace_propagation_broken_total", func(p *proj, n uint64) { p.broken += n })
	for _, m := range mfs["cqrs_command_to_projection_lag_seconds"].GetMetric() {
		name := labelOf(m, "projection")
		lagCount[name] += m.GetHistogram().GetSampleCount()
		lagSum[name] += m.GetHistogram().GetSampleSum()
	}
	slices.Sort(names)
	var out []proj
	for _, name := range names {
		p := byName[name]
		p.expected = p.projected + p.unprojected - late[name]
		p.lags = []int{int(lagCount[name]), int(math.Round(lagSum[name] * 1000))}
		out = append(out, *p)
	}
	return out
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// rulesOf reads the rules of a config file.
func rulesOf(t testing.TB, path string) []Rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Rules []Rule `yaml:"rules"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c.Rules
}

// TestConsistencyFixtures checks the stale reads and the clock skews of the
// fixtures against testdata/README.md (issue 14), through the exposition
// (series: count and sum in ms) and through Summary. Every fixture is
// listed: one with none must expose none.
func TestConsistencyFixtures(t *testing.T) {
	type series map[string][2]int // labels -> count, sum ms
	tests := []struct {
		file        string
		stale, skew series
	}{
		{"happy_path", nil, nil},
		{"projection_before_append", nil, nil},
		{"missing_projection", nil, nil},
		{"two_projections", nil, nil},
		{"multi_event_append", nil, nil},
		{"span_link", nil, nil},
		{"messaging_semconv", nil, nil},
		{"clock_skew", nil, series{"order-api -> order-projector": {1, 274}, "order-api -> sales-projector": {1, 5}}},
		{"noise", nil, nil},
		{"duplicates_out_of_order", nil, nil},
		{"broken_propagation", nil, nil},
		{"no_command", nil, nil},
		{"intermediate_spans", nil, nil},
		{"hand_instrumented", nil, nil},
		{"stale_reads", series{"GetOrder": {1, 280}, "GetOrderSummary": {1, 490}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.KeepSamples = true
			a, reg := analyzeFile(t, filepath.Join("..", "testdata", tt.file+".jsonl"), cfg)
			body := scrape(t, reg, acceptText).body
			parser := expfmt.NewTextParser(model.UTF8Validation)
			mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("parse scrape: %v", err)
			}
			hist := func(family string, key func(*dto.Metric) string) series {
				out := series{}
				for _, m := range mfs[family].GetMetric() {
					if h := m.GetHistogram(); h.GetSampleCount() > 0 {
						out[key(m)] = [2]int{int(h.GetSampleCount()), int(math.Round(h.GetSampleSum() * 1000))}
					}
				}
				return out
			}
			staleKey := func(m *dto.Metric) string { return labelOf(m, "query") }
			skewKey := func(m *dto.Metric) string { return labelOf(m, "from_service") + " -> " + labelOf(m, "to_service") }
			wantStale, wantSkew := tt.stale, tt.skew
			if wantStale == nil {
				wantStale = series{}
			}
			if wantSkew == nil {
				wantSkew = series{}
			}
			if diff := cmp.Diff(wantStale, hist("cqrs_read_staleness_seconds", staleKey)); diff != "" {
				t.Errorf("cqrs_read_staleness_seconds (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantSkew, hist("cqrs_clock_skew_seconds", skewKey)); diff != "" {
				t.Errorf("cqrs_clock_skew_seconds (-want +got):\n%s", diff)
			}
			staleTotal := series{}
			var stale uint64
			for _, m := range mfs["cqrs_stale_reads_total"].GetMetric() {
				if n := int(m.GetCounter().GetValue()); n > 0 {
					staleTotal[labelOf(m, "query")] = [2]int{n, wantStale[labelOf(m, "query")][1]}
					stale += uint64(n)
				}
			}
			if diff := cmp.Diff(wantStale, staleTotal); diff != "" {
				t.Errorf("cqrs_stale_reads_total disagrees with the staleness histogram (-want +got):\n%s", diff)
			}
			sum := a.Summary()
			if sum.Queries.Stale != stale {
				t.Errorf("cqrs_queries_total{result=\"stale\"} = %d, cqrs_stale_reads_total = %d; want the same", sum.Queries.Stale, stale)
			}
			fromSummary := series{}
			for _, q := range sum.StaleReads {
				fromSummary[q.Query] = [2]int{int(q.Count), int(q.Staleness / time.Millisecond)}
			}
			if diff := cmp.Diff(wantStale, fromSummary); diff != "" {
				t.Errorf("Summary.StaleReads (-want +got):\n%s", diff)
			}
			fromSummary = series{}
			for _, c := range sum.ClockSkew {
				fromSummary[c.From+" -> "+c.To] = [2]int{int(c.Count), int(c.Sum / time.Millisecond)}
			}
			if diff := cmp.Diff(wantSkew, fromSummary); diff != "" {
				t.Errorf("Summary.ClockSkew (-want +got):\n%s", diff)
			}
		})
	}
}
