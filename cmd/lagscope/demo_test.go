package main

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
)

// startDemo runs the demo in-process on ephemeral ports, with count commands
// and the given projector faults.
func startDemo(t *testing.T, count int64, deadline time.Duration, faults map[string]projection.Faults) *Demo {
	t.Helper()
	lc := DefaultConfig()
	lc.OTLP.GRPCEndpoint, lc.OTLP.HTTPEndpoint, lc.Web.ListenAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	lc.Join.Deadline = deadline
	lc.Join.Expected = map[string][]string{"*": {projection.OrdersView, projection.SalesSummary}}
	oc := app.DefaultConfig()
	oc.Store = "sqlite::memory:"
	oc.Listen = "127.0.0.1:0"
	oc.OTLP.BatchTimeout = 100 * time.Millisecond
	oc.Projection.Faults = faults
	oc.Projection.Seed = 7
	ld := load.DefaultConfig()
	ld.Rate, ld.Count, ld.Seed = 100, count, 7
	d, err := NewDemo(DemoConfig{Lagscope: lc, Orders: oc, Load: ld}, slog.New(slog.DiscardHandler))
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
	return d
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
	d := startDemo(t, 40, 5*time.Second, map[string]projection.Faults{
		projection.OrdersView:   {Delay: delay},
		projection.SalesSummary: {Delay: delay},
	})
	url := d.Server.MetricsURL()
	var appended float64
	waitFor(t, 20*time.Second, "every appended event to be projected by both projections", func() (bool, string) {
		mfs := scrape(t, url)
		appended = value(mfs, "cqrs_events_appended_total", nil)
		v := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.OrdersView})
		s := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.SalesSummary})
		return appended >= 40 && v == appended && s == appended, fmt.Sprintf("appended=%v orders_view=%v sales_summary=%v", appended, v, s)
	})
	mfs := scrape(t, url)
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
	d := startDemo(t, 60, time.Second, map[string]projection.Faults{
		projection.SalesSummary: {DropRate: 0.25},
	})
	url := d.Server.MetricsURL()
	var dropped int64
	waitFor(t, 20*time.Second, "unprojected events to equal the dropped ones", func() (bool, string) {
		for _, st := range d.Orders.Projections() {
			if st.Projection == projection.SalesSummary {
				dropped = st.Dropped
			}
		}
		mfs := scrape(t, url)
		appended := value(mfs, "cqrs_events_appended_total", nil)
		u := value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": projection.SalesSummary})
		p := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": projection.SalesSummary})
		pending := value(mfs, "cqrs_projection_pending_events", map[string]string{"projection": projection.SalesSummary})
		return dropped > 0 && u == float64(dropped) && p+u == appended && pending == 0,
			fmt.Sprintf("dropped=%d unprojected=%v projected=%v appended=%v pending=%v", dropped, u, p, appended, pending)
	})
	mfs := scrape(t, url)
	if u := value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": projection.OrdersView}); u != 0 {
		t.Errorf("orders_view: %v unprojected, want 0 (it dropped nothing)", u)
	}
}
