package demo

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/projection"
)

// TestDemoKafka runs the order system on the Kafka bus (the demo's
// in-process broker): every event appended to the store is counted
// appended once by lagscope, though two spans of the append role carry it
// (the store's append span and the relay's send span), and projected once
// by each projection, with its lag observed; nothing is unprojected or
// duplicated.
func TestDemoKafka(t *testing.T) {
	const count = 40
	d, ls := startDemoWith(t, count, 5*time.Second, func(oc *app.Config) {
		oc.Bus = app.BusKafka
		oc.Kafka.PollInterval = 20 * time.Millisecond
		oc.Kafka.MaxWait = 50 * time.Millisecond
	})
	if d.broker == nil {
		t.Fatal("no in-process broker started for --bus kafka without brokers")
	}
	head, err := d.Orders.Store().Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if head < count/2 {
		t.Fatalf("store head %d after %d commands", head, count)
	}
	views := map[string]float64{}
	waitFor(t, 20*time.Second, "every event appended to be projected by both projections", func() (bool, string) {
		mfs := gather(t, ls)
		appended := value(mfs, "cqrs_events_appended_total", nil)
		ok := appended == float64(head)
		for _, p := range []string{projection.OrdersView, projection.SalesSummary} {
			views[p] = value(mfs, "cqrs_events_projected_total", map[string]string{"projection": p})
			ok = ok && views[p] == appended
		}
		return ok, fmt.Sprintf("head=%d appended=%v projected=%v stats=%+v", head, appended, views, d.Orders.Projections())
	})
	mfs := gather(t, ls)
	if got, want := value(mfs, "lagscope_spans_total", map[string]string{"role": "append"}), 2*float64(head); got != want {
		t.Errorf("append-role spans = %v, want %v (an append and a send span per event)", got, want)
	}
	for _, p := range []string{projection.OrdersView, projection.SalesSummary} {
		if _, total := bucketCount(mfs, p, 5); total != uint64(head) {
			t.Errorf("%s: %d lag observations, want %d", p, total, head)
		}
		for _, m := range []string{"cqrs_events_unprojected_total", "cqrs_events_duplicated_total", "cqrs_events_out_of_order_total"} {
			if v := value(mfs, m, map[string]string{"projection": p}); v != 0 {
				t.Errorf("%s: %s = %v, want 0", p, m, v)
			}
		}
	}
	rs, ok := d.Orders.Relay()
	if !ok || rs.Checkpoint != head {
		t.Errorf("relay = %+v (running %v), want its checkpoint at the head %d", rs, ok, head)
	}
}
