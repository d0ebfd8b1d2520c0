package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLagscope is a Lagscope built from its components as `lagscope serve`
// wires them (cmd/lagscope's Server is in package main): the OTLP receivers
// on loopback feeding an analyzer, whose metrics an httptest server exposes.
type testLagscope struct {
	*prometheus.Registry
	analyzer *analyzer.Analyzer
	receiver *collector.Receiver
	web      *httptest.Server
}

func newTestLagscope(t *testing.T, deadline time.Duration) *testLagscope {
	t.Helper()
	reg := prometheus.NewRegistry()
	ac := analyzer.DefaultConfig()
	ac.Join.Deadline = deadline
	ac.Join.Expected = map[string][]string{"*": {projection.OrdersView, projection.SalesSummary}}
	a, err := analyzer.New(ac, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	cc := collector.DefaultConfig()
	cc.GRPCEndpoint, cc.HTTPEndpoint = "127.0.0.1:0", "127.0.0.1:0"
	r, err := collector.New(cc, a, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewUnstartedServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return &testLagscope{Registry: reg, analyzer: a, receiver: r, web: web}
}

func (l *testLagscope) Start(ctx context.Context) error {
	if err := l.analyzer.Start(ctx); err != nil {
		return err
	}
	l.web.Start()
	return l.receiver.Start(ctx)
}

func (l *testLagscope) Shutdown(ctx context.Context) error {
	err := errors.Join(l.receiver.Shutdown(ctx), l.analyzer.Shutdown(ctx))
	l.web.Close()
	return err
}

func (l *testLagscope) GRPCAddr() net.Addr { return l.receiver.GRPCAddr() }
func (l *testLagscope) HTTPAddr() net.Addr { return l.receiver.HTTPAddr() }
func (l *testLagscope) MetricsURL() string { return l.web.URL + "/metrics" }
func (l *testLagscope) Flush()             { l.analyzer.Flush() }
func (l *testLagscope) Refresh()           { l.analyzer.Tick(time.Now()) }

// startDemo runs the demo in-process on ephemeral ports, with count commands
// and the given projector faults.
func startDemo(t *testing.T, count int64, deadline time.Duration, faults map[string]projection.Faults) (*Demo, *testLagscope) {
	return startDemoWith(t, count, deadline, func(oc *app.Config) { oc.Projection.Faults = faults })
}

// startDemoWith is startDemo with the order system's config changed by
// edit.
func startDemoWith(t *testing.T, count int64, deadline time.Duration, edit func(*app.Config)) (*Demo, *testLagscope) {
	t.Helper()
	ls := newTestLagscope(t, deadline)
	oc := app.DefaultConfig()
	oc.Store = "sqlite::memory:"
	oc.Listen = "127.0.0.1:0"
	oc.OTLP.BatchTimeout = 100 * time.Millisecond
	oc.Projection.Seed = 7
	edit(&oc)
	ld := load.DefaultConfig()
	ld.Rate, ld.Count, ld.Seed = 100, count, 7
	d, err := New(Config{Orders: oc, Load: ld}, ls, nil, ls.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("shutdown demo: %v", err)
		}
	})
	select {
	case <-d.LoadDone():
	case <-time.After(60 * time.Second):
		t.Fatal("load did not finish within 60s")
	}
	sum, err := d.LoadSummary()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if sum.Commands != count || sum.Failed != 0 {
		t.Fatalf("load sent %d commands (%d failed), want %d", sum.Commands, sum.Failed, count)
	}
	return d, ls
}

// gather returns lagscope's metric families by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	return byName
}

// value sums the samples of a counter or gauge family whose labels include
// match.
func value(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		if !labelsMatch(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, match map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := match[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(match)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func bucketCount(mfs map[string]*dto.MetricFamily, projection string, le float64) (below, total uint64) {
	for _, m := range mfs["cqrs_command_to_projection_lag_seconds"].GetMetric() {
		if !labelsMatch(m, map[string]string{"projection": projection}) {
			continue
		}
		h := m.GetHistogram()
		total += h.GetSampleCount()
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == le {
				below += b.GetCumulativeCount()
			}
		}
	}
	return below, total
}

// TestDemoDelay: with a known projector delay, lagscope sees every appended
// event projected by both projections, and no lag below the delay (so the
// median is at least the delay).
func TestDemoDelay(t *testing.T) {
	const delay = 500 * time.Millisecond // a bucket boundary, so the check is exact
	d, ls := startDemo(t, 40, 5*time.Second, map[string]projection.Faults{
		projection.OrdersView:   {Delay: delay},
		projection.SalesSummary: {Delay: delay},
	})
	var appended float64
	waitFor(t, 20*time.Second, "every appended event to be projected by both projections", func() (bool, string) {
		mfs := gather(t, ls)
		appended = value(mfs, "cqrs_events_appended_total", nil)
		v := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.OrdersView})
		s := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.SalesSummary})
		return appended >= 40 && v == appended && s == appended, fmt.Sprintf("appended=%v orders_view=%v sales_summary=%v", appended, v, s)
	})
	mfs := gather(t, ls)
	for _, p := range []string{projection.OrdersView, projection.SalesSummary} {
		below, total := bucketCount(mfs, p, delay.Seconds())
		if total != uint64(appended) {
			t.Errorf("%s: %d lag observations, want %v", p, total, appended)
		}
		if below != 0 {
			t.Errorf("%s: %d of %d lags at or below the injected delay %s, want none", p, below, total, delay)
		}
		if u := value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": p}); u != 0 {
			t.Errorf("%s: %v unprojected, want 0", p, u)
		}
	}
	// Events appended match the store: what the projectors checkpointed.
	for _, st := range d.Orders.Projections() {
		if float64(st.Checkpoint) != appended {
			t.Errorf("%s: checkpoint %d, lagscope saw %v appended", st.Projection, st.Checkpoint, appended)
		}
	}
}

// TestDemoDropRate: every event a projector drops is counted unprojected for
// that projection, no more, no less.
func TestDemoDropRate(t *testing.T) {
	for _, bus := range []app.Bus{app.BusStore, app.BusKafka} {
		t.Run(string(bus), func(t *testing.T) { testDemoDropRate(t, bus) })
	}
}

func testDemoDropRate(t *testing.T, bus app.Bus) {
	d, ls := startDemoWith(t, 60, time.Second, func(oc *app.Config) {
		oc.Bus = bus
		oc.Projection.Faults = map[string]projection.Faults{projection.SalesSummary: {DropRate: 0.25}}
	})
	var dropped int64
	waitFor(t, 20*time.Second, "unprojected events to equal the dropped ones", func() (bool, string) {
		for _, st := range d.Orders.Projections() {
			if st.Projection == projection.SalesSummary {
				dropped = st.Dropped
			}
		}
		mfs := gather(t, ls)
		appended := value(mfs, "cqrs_events_appended_total", nil)
		u := value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": projection.SalesSummary})
		p := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.SalesSummary})
		pending := value(mfs, "cqrs_projection_pending_events", map[string]string{"projection": projection.SalesSummary})
		return dropped > 0 && u == float64(dropped) && p+u == appended && pending == 0,
			fmt.Sprintf("dropped=%d unprojected=%v projected=%v appended=%v pending=%v", dropped, u, p, appended, pending)
	})
	mfs := gather(t, ls)
	if u := value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": projection.OrdersView}); u != 0 {
		t.Errorf("orders_view: %v unprojected, want 0 (it dropped nothing)", u)
	}
}

// TestRun runs the demo to the end of a counted load and checks its final
// report: without faults, lagscope has seen every event each projector
// projected, and has counted every appended event once per projection,
// shown or (stopped before the projector got to it) unprojected.
func TestRun(t *testing.T) {
	ls := newTestLagscope(t, 5*time.Second)
	oc := app.DefaultConfig()
	oc.Store = "sqlite::memory:"
	oc.Listen = "127.0.0.1:0"
	oc.OTLP.BatchTimeout = 100 * time.Millisecond
	oc.Projection.Seed = 7
	ld := load.DefaultConfig()
	ld.Rate, ld.Count, ld.Seed = 100, 30, 7
	d, err := New(Config{Orders: oc, Load: ld, Interval: 100 * time.Millisecond}, ls, nil, ls.Registry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := d.Run(ctx, &out); err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Running until Ctrl-C or 30 commands.", "PROJECTION", "== Final report ==", "Injected faults vs lagscope's findings",
		" projection=orders_view projected="} { // plain lines: a bytes.Buffer is no terminal
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Errorf("output to a non-terminal has escape sequences:\n%q", out.String())
	}
	report := regexp.MustCompile(`(\w+) +projected by the projector (\d+), seen by lagscope (\d+); dropped 0, unprojected (\d+);`)
	var got []string
	counted := map[int]bool{} // projected + unprojected, per projection
	for _, m := range report.FindAllStringSubmatch(out.String(), -1) {
		projected, _ := strconv.Atoi(m[2])
		unprojected, _ := strconv.Atoi(m[4])
		if projected == 0 || m[2] != m[3] {
			t.Errorf("%s: projected %s, seen by lagscope %s; want as many seen as projected, not 0", m[1], m[2], m[3])
		}
		counted[projected+unprojected] = true
		got = append(got, m[1])
	}
	if diff := cmp.Diff(got, []string{projection.OrdersView, projection.SalesSummary}); diff != "" {
		t.Errorf("projections in the final report (-got +want):\n%s\n%s", diff, out.String())
	}
	if len(counted) != 1 {
		t.Errorf("projected + unprojected differ between projections (%v), want every appended event counted once for each:\n%s", counted, out.String())
	}
}

// TestRunStoppedWithDelay stops a demo whose projectors delay every event,
// in the middle of its load: events held by the delay are shown before the
// order system stops when the drain timeout allows, and are reported as
// pending, never as unprojected, when it does not.
func TestRunStoppedWithDelay(t *testing.T) {
	tests := []struct {
		name        string
		delay       time.Duration
		drain       time.Duration
		wantPending bool
	}{
		{"drained", 500 * time.Millisecond, 10 * time.Second, false},
		{"still held at stop", 3 * time.Second, 200 * time.Millisecond, true},
	}
	report := regexp.MustCompile(`(\w+) +projected by the projector (\d+), seen by lagscope (\d+); dropped 0, unprojected (\d+); duplicated 0, duplicates seen 0; pending at stop (\d+)`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := newTestLagscope(t, 5*time.Second) // a join deadline above the delay
			oc := app.DefaultConfig()
			oc.Store = "sqlite::memory:"
			oc.Listen = "127.0.0.1:0"
			oc.OTLP.BatchTimeout = 100 * time.Millisecond
			oc.Projection.Seed = 7
			oc.Projection.Faults = map[string]projection.Faults{
				projection.OrdersView:   {Delay: tt.delay},
				projection.SalesSummary: {Delay: tt.delay},
			}
			ld := load.DefaultConfig()
			ld.Rate, ld.Seed = 100, 7 // until stopped
			d, err := New(Config{Orders: oc, Load: ld, Interval: 100 * time.Millisecond, DrainTimeout: tt.drain}, ls, nil, ls.Registry)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var out bytes.Buffer
			go func() { done <- d.Run(ctx, &out) }()
			// Stop (Ctrl-C) once events are appended: with the delay,
			// some are then held by every projector.
			waitFor(t, 30*time.Second, "events appended", func() (bool, string) {
				appended := value(gather(t, ls), "cqrs_events_appended_total", nil)
				return appended >= 20, fmt.Sprintf("appended=%v", appended)
			})
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v\n%s", err, out.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not return within 60s of the stop")
			}
			ms := report.FindAllStringSubmatch(out.String(), -1)
			if len(ms) != 2 {
				t.Fatalf("final report has %d projection lines, want 2:\n%s", len(ms), out.String())
			}
			for _, m := range ms {
				unprojected, _ := strconv.Atoi(m[4])
				pending, _ := strconv.Atoi(m[5])
				if unprojected != 0 {
					t.Errorf("%s: unprojected %d, want 0: the projector dropped nothing, it was delayed", m[1], unprojected)
				}
				if got := pending > 0; got != tt.wantPending {
					t.Errorf("%s: pending at stop %d, want pending=%v", m[1], pending, tt.wantPending)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out.String())
			}
		})
	}
}
