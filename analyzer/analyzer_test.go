package analyzer

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// clock is a settable time source for the analyzer.
type clock struct{ t time.Time }

func (c *clock) now() time.Time               { return c.t }
func (c *clock) advance(d time.Duration)      { c.t = c.t.Add(d) }
func (c *clock) at(d time.Duration) time.Time { return base.Add(d) }

func newTestAnalyzer(t *testing.T, mutate func(*Config)) (*Analyzer, *prometheus.Registry, *clock) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Join.Deadline = 10 * time.Second
	cfg.Join.CommandWait = 2 * time.Second
	cfg.Join.Retention = time.Minute
	if mutate != nil {
		mutate(&cfg)
	}
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: base}
	a.now = c.now
	return a, reg, c
}

func consume(t *testing.T, a *Analyzer, tds ...ptrace.Traces) {
	t.Helper()
	for _, td := range tds {
		if err := a.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// TestDeadlineLateAndPending walks one event through the join's life: it is
// pending for a projection, declared unprojected at the deadline, and shown
// late afterwards (counted late, lag still observed).
func TestDeadlineLateAndPending(t *testing.T) {
	a, reg, clk := newTestAnalyzer(t, nil)
	// e1 teaches the analyzer that OrderCreated is shown by both projections.
	consume(t, a,
		traces("cmd", command(1, 1, "CreateOrder", 0, 50*time.Millisecond), appendSpan(1, 2, 1, "e1", "OrderCreated", 10*time.Millisecond, 20*time.Millisecond)),
		traces("proj", project(1, 3, 2, "e1", "OrderCreated", "view", 30*time.Millisecond, 100*time.Millisecond),
			project(1, 4, 2, "e1", "OrderCreated", "summary", 30*time.Millisecond, 200*time.Millisecond)),
		traces("cmd", command(2, 1, "CreateOrder", time.Second, 1050*time.Millisecond), appendSpan(2, 2, 1, "e2", "OrderCreated", 1010*time.Millisecond, 1020*time.Millisecond)),
		traces("proj", project(2, 3, 2, "e2", "OrderCreated", "view", 1030*time.Millisecond, 1300*time.Millisecond)),
	)
	a.Tick(clk.t.Add(9 * time.Second))
	if got := counter(t, reg, "cqrs_projection_pending_events", "projection", "summary"); got != 1 {
		t.Errorf("pending before the deadline = %v, want 1", got)
	}
	if got := counter(t, reg, "cqrs_events_unprojected_total"); got != 0 {
		t.Errorf("unprojected before the deadline = %v, want 0", got)
	}
	a.Tick(clk.t.Add(10 * time.Second))
	if got := counter(t, reg, "cqrs_events_unprojected_total", "projection", "summary", "event_type", "OrderCreated"); got != 1 {
		t.Errorf("unprojected at the deadline = %v, want 1", got)
	}
	if got := counter(t, reg, "cqrs_projection_pending_events", "projection", "summary"); got != 0 {
		t.Errorf("pending after the deadline = %v, want 0", got)
	}
	clk.advance(11 * time.Second)
	consume(t, a, traces("proj", project(2, 4, 2, "e2", "OrderCreated", "summary", 11*time.Second, 12*time.Second)))
	if got := counter(t, reg, "cqrs_events_late_total", "projection", "summary"); got != 1 {
		t.Errorf("late = %v, want 1", got)
	}
	if got := counter(t, reg, "cqrs_command_to_projection_lag_seconds", "projection", "summary"); got != 2 {
		t.Errorf("lag observations for summary = %v, want 2 (the late one too)", got)
	}
	if got := counter(t, reg, "cqrs_events_unprojected_total"); got != 1 {
		t.Errorf("unprojected after the late projection = %v, want still 1", got)
	}
}

// TestOldestPendingKeepsRisingWhileStalled: a projection that shows nothing
// has an oldest-pending age that grows past the deadline; when it shows a
// newer event the events it skipped stop counting.
func TestOldestPendingKeepsRisingWhileStalled(t *testing.T) {
	a, reg, clk := newTestAnalyzer(t, nil)
	consume(t, a,
		traces("cmd", appendSpan(1, 1, -1, "e1", "T", 0, 0)),
		traces("proj", project(1, 2, 1, "e1", "T", "p", 0, 10*time.Millisecond)),
		traces("cmd", appendSpan(2, 1, -1, "e2", "T", time.Second, time.Second)),
	)
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{5 * time.Second, 4}, {20 * time.Second, 19}, {40 * time.Second, 39}} {
		a.Tick(clk.at(tc.at))
		if got := counter(t, reg, "cqrs_projection_oldest_pending_seconds", "projection", "p"); got != tc.want {
			t.Errorf("oldest pending at %s = %v, want %v", tc.at, got, tc.want)
		}
	}
	// The projection comes back and shows a newer event: e2 was skipped
	// (unprojected), so nothing is pending any more.
	consume(t, a,
		traces("cmd", appendSpan(3, 1, -1, "e3", "T", 41*time.Second, 41*time.Second)),
		traces("proj", project(3, 2, 1, "e3", "T", "p", 41*time.Second, 42*time.Second)),
	)
	a.Tick(clk.at(42 * time.Second))
	if got := counter(t, reg, "cqrs_projection_oldest_pending_seconds", "projection", "p"); got != 0 {
		t.Errorf("oldest pending after recovery = %v, want 0", got)
	}
	if got := counter(t, reg, "cqrs_events_unprojected_total", "projection", "p"); got != 1 {
		t.Errorf("unprojected = %v, want 1", got)
	}
}

// TestEvictionKeepsNewest: a full join evicts the oldest event, counts it,
// and still joins the newest.
func TestEvictionKeepsNewest(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, func(c *Config) { c.Join.MaxPendingEvents = 2; c.Join.Expected = map[string][]string{"T": {"p"}} })
	consume(t, a,
		traces("cmd", appendSpan(1, 1, -1, "e1", "T", 0, 0), appendSpan(2, 1, -1, "e2", "T", 0, 0), appendSpan(3, 1, -1, "e3", "T", 0, 0)),
		traces("proj", project(3, 2, 1, "e3", "T", "p", 0, time.Second)),
	)
	if got := counter(t, reg, "lagscope_join_evictions_total", "reason", "capacity"); got != 1 {
		t.Errorf("evictions = %v, want 1", got)
	}
	if got := counter(t, reg, "cqrs_events_projected_total", "projection", "p"); got != 1 {
		t.Errorf("projected = %v, want 1 (the newest event was kept)", got)
	}
	a.Tick(base)
	if got := counter(t, reg, "cqrs_projection_pending_events", "projection", "p"); got != 1 {
		t.Errorf("pending = %v, want 1 (e2; e1 was evicted)", got)
	}
}

// TestLabelOverflow: past the limit, new label values become "other" and the
// overflow is counted.
func TestLabelOverflow(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, func(c *Config) { c.Metrics.MaxLabelValues = 2 })
	consume(t, a, traces("cmd",
		appendSpan(1, 1, -1, "e1", "A", 0, 0), appendSpan(2, 1, -1, "e2", "B", 0, 0),
		appendSpan(3, 1, -1, "e3", "C", 0, 0), appendSpan(4, 1, -1, "e4", "D", 0, 0)))
	if got := counter(t, reg, "cqrs_events_appended_total", "event_type", "other"); got != 2 {
		t.Errorf("appended{event_type=other} = %v, want 2", got)
	}
	if got := counter(t, reg, "lagscope_label_overflow_total", "label", "event_type"); got != 2 {
		t.Errorf("overflow = %v, want 2", got)
	}
}

// TestCommandResolution covers the command span arriving after its append
// span, through an intermediate span, and never.
func TestCommandResolution(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name     string
		requests []ptrace.Traces
		wait     bool // tick past CommandWait before projecting
		command  string
		lag      time.Duration
	}{
		{
			name: "command in a later request",
			requests: []ptrace.Traces{
				traces("svc", appendSpan(1, 3, 2, "e", "T", 20*ms, 30*ms)),
				traces("svc", spanSpec{trace: 1, span: 2, parent: 1, start: 10 * ms, end: 40 * ms}),
				traces("svc", command(1, 1, "Pay", 0, 50*ms)),
			},
			command: "Pay", lag: 500 * ms,
		},
		{
			name: "command in an earlier request, intermediate span later",
			requests: []ptrace.Traces{
				traces("svc", command(1, 1, "Pay", 0, 50*ms)),
				traces("svc", appendSpan(1, 3, 2, "e", "T", 20*ms, 30*ms)),
				traces("svc", spanSpec{trace: 1, span: 2, parent: 1, start: 10 * ms, end: 40 * ms}),
			},
			command: "Pay", lag: 500 * ms,
		},
		{
			name:     "root append span",
			requests: []ptrace.Traces{traces("svc", appendSpan(1, 3, -1, "e", "T", 20*ms, 30*ms))},
			command:  "none", lag: 470 * ms,
		},
		{
			name:     "parent never arrives",
			requests: []ptrace.Traces{traces("svc", appendSpan(1, 3, 2, "e", "T", 20*ms, 30*ms))},
			wait:     true,
			command:  "none", lag: 470 * ms,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, reg, clk := newTestAnalyzer(t, nil)
			consume(t, a, tt.requests...)
			if tt.wait {
				if got := counter(t, reg, "cqrs_events_appended_total"); got != 0 {
					t.Fatalf("appended before the command wait = %v, want 0", got)
				}
				a.Tick(clk.at(3 * time.Second))
			}
			consume(t, a, traces("proj", project(1, 9, 3, "e", "T", "p", 100*ms, 500*ms)))
			if got := counter(t, reg, "cqrs_command_to_projection_lag_seconds", "command", tt.command); got != 1 {
				t.Fatalf("lag observations with command %q = %v, want 1", tt.command, got)
			}
			s := a.Summary()
			if got := s.Projections[0].Lag.Sum; got != tt.lag {
				t.Errorf("lag = %s, want %s", got, tt.lag)
			}
		})
	}
}

func TestQueryFreshness(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, nil)
	v := func(id string, version int64, start, end time.Duration) spanSpec {
		s := appendSpan(1, int(version), -1, id, "T", start, end)
		s.attrs["cqrs.aggregate.id"] = "order-1"
		s.attrs["cqrs.aggregate.version"] = version
		return s
	}
	q := func(span int, version int64, start time.Duration) spanSpec {
		return spanSpec{trace: 2, span: span, parent: -1, start: start, end: start + time.Millisecond,
			attrs: map[string]any{"cqrs.query.name": "GetOrder", "cqrs.aggregate.id": "order-1", "cqrs.aggregate.version": version}}
	}
	consume(t, a, traces("cmd", v("e1", 1, 0, time.Millisecond), v("e2", 2, time.Second, 1001*time.Millisecond)),
		traces("query", q(1, 2, 2*time.Second), q(2, 1, 2*time.Second), q(3, 1, 500*time.Millisecond),
			spanSpec{trace: 3, span: 1, parent: -1, attrs: map[string]any{"cqrs.query.name": "ListOrders"}}))
	for result, want := range map[string]float64{"fresh": 2, "stale": 1, "unknown": 1} {
		if got := counter(t, reg, "cqrs_queries_total", "result", result); got != want {
			t.Errorf("queries{result=%s} = %v, want %v", result, got, want)
		}
	}
}

// TestMetricsContract pins the exported metric names, types and labels.
func TestMetricsContract(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, nil)
	consume(t, a,
		traces("cmd", command(1, 1, "C", 0, time.Millisecond), appendSpan(1, 2, 1, "e", "T", 0, time.Millisecond)),
		traces("proj", project(1, 3, 2, "e", "T", "p", 0, time.Second)))
	a.Tick(base)
	want := map[string]string{
		"cqrs_command_to_projection_lag_seconds": "histogram command event_type projection",
		"cqrs_stage_duration_seconds":            "histogram stage",
		"cqrs_events_appended_total":             "counter aggregate_type event_type",
		"cqrs_events_projected_total":            "counter event_type projection",
		"cqrs_projection_pending_events":         "gauge projection",
		"cqrs_projection_oldest_pending_seconds": "gauge projection",
		"lagscope_spans_total":                   "counter role",
		"lagscope_join_entries":                  "gauge",
		"lagscope_join_evictions_total":          "counter reason",
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		w, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		delete(want, mf.GetName())
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		got := strings.ToLower(mf.GetType().String())
		if len(labels) > 0 {
			got += " " + strings.Join(labels, " ")
		}
		if got != w {
			t.Errorf("%s: got %q, want %q", mf.GetName(), got, w)
		}
	}
	for name := range want {
		t.Errorf("metric %s missing", name)
	}
	// The lag histogram has a bucket boundary at exactly 5s.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(""), "no_such_metric"); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range LagBuckets {
		if b == 5 {
			found = true
		}
	}
	if !found {
		t.Error("LagBuckets has no boundary at 5s")
	}
}

// TestFailedSpansGiveNoFacts: a projection span with status Error did not
// update the read model, so the event stays unprojected for it.
func TestFailedSpansGiveNoFacts(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, func(c *Config) { c.Join.Expected = map[string][]string{"T": {"p"}} })
	failed := traces("proj", project(1, 2, 1, "e", "T", "p", 0, time.Second))
	failed.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Status().SetCode(ptrace.StatusCodeError)
	consume(t, a, traces("cmd", appendSpan(1, 1, -1, "e", "T", 0, 0)), failed)
	a.Flush()
	if got := counter(t, reg, "cqrs_events_projected_total"); got != 0 {
		t.Errorf("projected = %v, want 0", got)
	}
	if got := counter(t, reg, "cqrs_events_unprojected_total", "projection", "p"); got != 1 {
		t.Errorf("unprojected = %v, want 1", got)
	}
	if got := counter(t, reg, "lagscope_spans_total", "role", "project"); got != 1 {
		t.Errorf("project spans counted = %v, want 1", got)
	}
}

// TestUnprojectedSeriesStartAtZero: the unprojected counter of a (type,
// projection) pair exists at 0 as soon as the pair is expected, so that
// increase() sees its first event.
func TestUnprojectedSeriesStartAtZero(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, func(c *Config) { c.Join.Expected = map[string][]string{"A": {"cfg"}} })
	consume(t, a,
		traces("cmd", appendSpan(1, 1, -1, "e1", "A", 0, 0), appendSpan(2, 1, -1, "e2", "B", 0, 0)),
		traces("proj", project(2, 2, 1, "e2", "B", "learned", 0, time.Second)))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "cqrs_events_unprojected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetValue())
			}
			got = append(got, fmt.Sprintf("%s=%v", strings.Join(ls, "/"), m.GetCounter().GetValue()))
		}
	}
	want := []string{"A/cfg=0", "B/learned=0"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("unprojected series = %v, want %v", got, want)
	}
}
