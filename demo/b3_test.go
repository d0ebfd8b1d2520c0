package demo

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// TestDemoB3Multi runs the demo's flow (load generator -> HTTP API ->
// event store -> projectors, over the store and over Kafka) with
// OTEL_PROPAGATORS=b3multi and with the default W3C propagation: the
// events carry x-b3-* metadata instead of traceparent, and lagscope counts
// the same events appended and projected either way, none unprojected.
func TestDemoB3Multi(t *testing.T) {
	for _, bus := range []app.Bus{app.BusStore, app.BusKafka} {
		t.Run(string(bus), func(t *testing.T) {
			counts := map[string]map[string]float64{}
			for _, env := range []string{"", "b3multi"} {
				t.Run("OTEL_PROPAGATORS="+env, func(t *testing.T) {
					t.Setenv(telemetry.EnvPropagators, env)
					t.Cleanup(func() { _ = telemetry.UsePropagatorsFromEnv() }) // after the env is restored
					counts[env] = demoCounts(t, bus, env)
				})
			}
			if len(counts) == 2 {
				if diff := cmp.Diff(counts[""], counts["b3multi"]); diff != "" {
					t.Errorf("counts with b3multi (-W3C +b3multi):\n%s", diff)
				}
			}
		})
	}
}

// demoCounts runs a counted load and returns lagscope's counts once every
// event is projected by both projections, checking that the events'
// metadata is in the propagation env names.
func demoCounts(t *testing.T, bus app.Bus, env string) map[string]float64 {
	const commands = 30
	d, ls := startDemoWith(t, commands, 5*time.Second, func(oc *app.Config) { oc.Bus = bus })
	out := map[string]float64{}
	waitFor(t, 20*time.Second, "every appended event to be projected by both projections", func() (bool, string) {
		mfs := gather(t, ls)
		out["appended"] = value(mfs, "cqrs_events_appended_total", nil)
		for _, p := range []string{projection.OrdersView, projection.SalesSummary} {
			out["projected "+p] = value(mfs, "cqrs_events_projected_total", map[string]string{"projection": p})
			out["unprojected "+p] = value(mfs, "cqrs_events_unprojected_total", map[string]string{"projection": p})
			out["lags "+p], _ = lagCount(mfs, p)
		}
		ok := out["appended"] >= commands
		for _, p := range []string{projection.OrdersView, projection.SalesSummary} {
			ok = ok && out["projected "+p] == out["appended"] && out["lags "+p] == out["appended"]
		}
		return ok, fmt.Sprint(out)
	})
	events, err := d.Orders.Store().ReadAll(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		t.Fatal("no events stored")
	}
	key := "traceparent"
	if env == "b3multi" {
		key = "x-b3-traceid"
	}
	for _, e := range events {
		if e.Metadata[key] == "" {
			t.Fatalf("event %s: metadata %v has no %s", e.ID, e.Metadata, key)
		}
	}
	return out
}

// lagCount returns the observations of the lag histogram for projection p.
func lagCount(mfs map[string]*dto.MetricFamily, p string) (float64, bool) {
	_, total := bucketCount(mfs, p, 0)
	return float64(total), total > 0
}
