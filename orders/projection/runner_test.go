package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/command"
	"github.com/lagscope/lagscope/orders/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	db    *sqlite.DB
	views *views
	rec   *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider
	cmds  *command.Handler
}

// views wraps the fixture's database as the runners' orders.Views: it
// records every committed batch and runs the tests' hooks, which must be set
// before a runner starts.
type views struct {
	orders.Views

	// before runs before each ApplyBatch; inTx runs inside its transaction
	// after fn applied e, and its error fails the batch; after runs after
	// each commit with the events that were applied.
	before func(name string, events []orders.Event)
	inTx   func(name string, e orders.Event) error
	after  func(name string, applied []orders.Event)

	mu        sync.Mutex
	batches   map[string][][]int64             // positions applied, by committed batch
	committed map[string]map[int64][]time.Time // when each position's batch committed
}

func (v *views) ApplyBatch(ctx context.Context, name string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	if v.before != nil {
		v.before(name, events)
	}
	wrapped := fn
	if v.inTx != nil {
		wrapped = func(tx orders.ViewTx, e orders.Event) error {
			if fn != nil {
				if err := fn(tx, e); err != nil {
					return err
				}
			}
			return v.inTx(name, e)
		}
	}
	n, err := v.Views.ApplyBatch(ctx, name, events, wrapped)
	if err != nil || n == 0 {
		return n, err
	}
	now := time.Now()
	applied := events[len(events)-n:]
	v.mu.Lock()
	var positions []int64
	for _, e := range applied {
		positions = append(positions, e.Position)
		if v.committed[name] == nil {
			v.committed[name] = map[int64][]time.Time{}
		}
		v.committed[name][e.Position] = append(v.committed[name][e.Position], now)
	}
	v.batches[name] = append(v.batches[name], positions)
	v.mu.Unlock()
	if v.after != nil {
		v.after(name, applied)
	}
	return n, nil
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	v := &views{Views: db, batches: map[string][][]int64{}, committed: map[string]map[int64][]time.Time{}}
	return &fixture{db: db, views: v, rec: rec, tp: tp, cmds: command.New(db, tp, command.DefaultConfig())}
}

// workload runs n order lifecycles: every order is created, most are paid,
// some shipped, some cancelled (before or after payment).
func (f *fixture) workload(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		res, err := f.cmds.Create(ctx, orders.CreateOrder{
			CustomerID: fmt.Sprintf("cust-%d", i%3),
			Items:      []orders.Item{{SKU: "sku", Price: int64(100 + i), Quantity: 2}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			_, err = f.cmds.Cancel(ctx, res.ID, orders.CancelOrder{Reason: "early"})
		} else if _, err = f.cmds.Pay(ctx, res.ID, orders.PayOrder{Method: "card"}); err == nil {
			switch i % 4 {
			case 1:
				_, err = f.cmds.Ship(ctx, res.ID, orders.ShipOrder{TrackingNumber: "T-1"})
			case 2:
				_, err = f.cmds.Cancel(ctx, res.ID, orders.CancelOrder{Reason: "late"})
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) runner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	cfg.PollInterval = 10 * time.Millisecond
	cfg.BatchSize = 7 // several reads per test
	cfg.Seed = 1
	r, err := New(cfg, f.db, f.views, f.tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func start(t *testing.T, r *Runner) {
	t.Helper()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, r) })
}

func shutdown(t *testing.T, r *Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() error = %v", err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) caughtUp(t *testing.T, names ...string) func() bool {
	return func() bool {
		head, err := f.db.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			cp, err := f.db.Checkpoint(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			if cp < head {
				return false
			}
		}
		return true
	}
}

// wantViews rebuilds every order from the store: the read models must match.
func (f *fixture) wantViews(t *testing.T) (map[string]orders.OrderView, orders.Summary) {
	t.Helper()
	all, err := f.db.ReadAll(context.Background(), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string][]orders.Event{}
	for _, e := range all {
		byID[e.AggregateID] = append(byID[e.AggregateID], e)
	}
	views := map[string]orders.OrderView{}
	var sum orders.Summary
	for id, evs := range byID {
		o, err := orders.Rebuild(evs)
		if err != nil {
			t.Fatal(err)
		}
		views[id] = orders.OrderView{ID: id, CustomerID: o.CustomerID(), Status: o.Status(), Total: o.Total(), Version: o.Version()}
		sum.Orders++
		switch o.Status() {
		case orders.StatusCreated:
			sum.Created++
		case orders.StatusPaid:
			sum.Paid++
			sum.Revenue += o.Total()
		case orders.StatusShipped:
			sum.Shipped++
			sum.Revenue += o.Total()
		case orders.StatusCancelled:
			sum.Cancelled++
		}
	}
	return views, sum
}

func (f *fixture) gotViews(t *testing.T) map[string]orders.OrderView {
	t.Helper()
	got := map[string]orders.OrderView{}
	for c := range 3 {
		list, err := f.db.OrdersByCustomer(context.Background(), fmt.Sprintf("cust-%d", c), 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range list {
			got[v.ID] = orders.OrderView{ID: v.ID, CustomerID: v.CustomerID, Status: v.Status, Total: v.Total, Version: v.Version}
		}
	}
	return got
}

func (f *fixture) checkReadModels(t *testing.T) {
	t.Helper()
	wantViews, wantSum := f.wantViews(t)
	if diff := cmp.Diff(f.gotViews(t), wantViews); diff != "" {
		t.Errorf("orders_view mismatch (-got +want):\n%s", diff)
	}
	gotSum, err := f.db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(gotSum, wantSum); diff != "" {
		t.Errorf("sales_summary mismatch (-got +want):\n%s", diff)
	}
}

func projectSpans(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "project "+name {
			out = append(out, s)
		}
	}
	return out
}

func TestProjectsEveryEvent(t *testing.T) {
	f := newFixture(t)
	f.workload(t, 10) // before Start: catch-up from checkpoint 0
	r := f.runner(t, DefaultConfig())
	start(t, r)
	f.workload(t, 10) // after Start: woken by appends
	head, _ := f.db.Head(context.Background())
	waitFor(t, "projectors to end every project span", func() bool {
		for _, st := range r.Stats() {
			if st.Spans < head {
				return false
			}
		}
		return true
	})
	f.checkReadModels(t)
	positions := f.positions(t)

	appendSpans := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range f.rec.Ended() {
		if s.Name() == "append Order" {
			appendSpans[s.SpanContext().SpanID()] = s
		}
	}
	for _, name := range Names {
		spans := projectSpans(f.rec, name)
		if int64(len(spans)) != head {
			t.Errorf("%s: %d project spans, want %d", name, len(spans), head)
		}
		for _, s := range spans {
			parent, ok := appendSpans[s.Parent().SpanID()]
			if !ok || s.SpanContext().TraceID() != parent.SpanContext().TraceID() || !s.Parent().IsRemote() {
				t.Errorf("%s: project span %s is not a remote child of an append span", name, s.SpanContext().SpanID())
				continue
			}
			got := attrMap(s)
			want := map[string]any{
				"cqrs.operation": "project", "cqrs.projection": name,
				"cqrs.event.id": attrMap(parent)["cqrs.event.id"], "cqrs.event.type": attrMap(parent)["cqrs.event.type"],
				"cqrs.aggregate.id": attrMap(parent)["cqrs.aggregate.id"], "cqrs.aggregate.version": attrMap(parent)["cqrs.aggregate.version"],
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("%s: project span attributes (-got +want):\n%s", name, diff)
			}
			if s.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("%s: span kind %v, want consumer", name, s.SpanKind())
			}
			if s.Status().Code != codes.Unset {
				t.Errorf("%s: span status %v, want unset", name, s.Status())
			}
			// The span ends once the read model shows the event: after its
			// batch committed.
			pos := positions[attrMap(s)["cqrs.event.id"].(string)]
			commits := f.views.commits(name, pos)
			if len(commits) != 1 {
				t.Errorf("%s: position %d committed %d times, want once", name, pos, len(commits))
			} else if s.EndTime().Before(commits[0]) {
				t.Errorf("%s: project span of position %d ended %v before its batch committed", name, pos, commits[0].Sub(s.EndTime()))
			}
		}
	}
	for _, st := range r.Stats() {
		if st.Projected != head || st.Spans != head || st.Checkpoint != head {
			t.Errorf("Stats(%s) = %+v, want %d projected, spans, checkpoint", st.Projection, st, head)
		}
	}
}

// positions returns every stored event's position by event id.
func (f *fixture) positions(t *testing.T) map[string]int64 {
	t.Helper()
	all, err := f.db.ReadAll(context.Background(), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range all {
		out[e.ID] = e.Position
	}
	return out
}

// commits returns when the batches that applied a position committed.
func (v *views) commits(name string, pos int64) []time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.committed[name][pos]
}

func attrMap(s sdktrace.ReadOnlySpan) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func TestCrashRestart(t *testing.T) {
	tests := []struct {
		name string
		// The runner is stopped when orders_view's batch that holds
		// position crashAt is at stage: after its commit, before its
		// transaction (after the delay), or inside it just after the event
		// at crashAt was written.
		crashAt int64
		stage   string
		faults  Faults
	}{
		{name: "after the first batch committed", crashAt: 1, stage: "after"},
		{name: "after a later batch committed", crashAt: 10, stage: "after"},
		{name: "before the batch transaction, after the delay", crashAt: 10, stage: "before", faults: Faults{Delay: time.Millisecond}},
		{name: "mid batch, inside the transaction", crashAt: 10, stage: "inTx"},
		{name: "mid batch, at its first event", crashAt: 8, stage: "inTx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.workload(t, 8)
			var (
				mu      sync.Mutex
				applied = map[string]map[int64]int{}
			)
			f.views.after = func(name string, events []orders.Event) {
				mu.Lock()
				defer mu.Unlock()
				if applied[name] == nil {
					applied[name] = map[int64]int{}
				}
				for _, e := range events {
					applied[name][e.Position]++
				}
			}
			cfg := DefaultConfig()
			cfg.Faults = map[string]Faults{OrdersView: tt.faults, SalesSummary: tt.faults}
			first := f.runner(t, cfg)
			crashed := make(chan struct{})
			var wantCP int64 // orders_view's checkpoint after the crash
			crash := func(stage, name string, events []orders.Event) {
				if stage != tt.stage || name != OrdersView || !slices.ContainsFunc(events, func(e orders.Event) bool { return e.Position == tt.crashAt }) {
					return
				}
				select {
				case <-crashed:
					return
				default:
				}
				if stage == "after" {
					wantCP = events[len(events)-1].Position
				}
				first.cancel()
				close(crashed)
			}
			after := f.views.after
			f.views.after = func(name string, events []orders.Event) {
				after(name, events)
				crash("after", name, events)
			}
			f.views.before = func(name string, events []orders.Event) {
				if name == OrdersView && slices.ContainsFunc(events, func(e orders.Event) bool { return e.Position == tt.crashAt }) {
					wantCP = events[0].Position - 1 // what the batch would have moved
				}
				crash("before", name, events)
			}
			f.views.inTx = func(name string, e orders.Event) error {
				crash("inTx", name, []orders.Event{e})
				return nil // the store finds the context cancelled
			}
			if err := first.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			<-crashed
			shutdown(t, first)
			cp, _ := f.db.Checkpoint(context.Background(), OrdersView)
			if cp != wantCP {
				t.Errorf("orders_view checkpoint after the crash = %d, want %d", cp, wantCP)
			}
			if got := first.Stats()[0]; got.Checkpoint != cp {
				t.Errorf("Stats(orders_view).Checkpoint = %d, want the stored %d", got.Checkpoint, cp)
			}

			f.views.before, f.views.inTx, f.views.after = nil, nil, after
			f.workload(t, 3)
			second := f.runner(t, cfg)
			start(t, second)
			waitFor(t, "restarted projectors to catch up", f.caughtUp(t, Names...))
			shutdown(t, second)

			head, _ := f.db.Head(context.Background())
			for _, name := range Names {
				var dups []int64
				for pos, n := range applied[name] {
					if n != 1 {
						dups = append(dups, pos)
					}
				}
				if int64(len(applied[name])) != head || len(dups) > 0 {
					t.Errorf("%s: %d positions committed (duplicates %v), want each of %d once", name, len(applied[name]), dups, head)
				}
			}
			f.checkReadModels(t)
		})
	}
}

func TestOneTransactionPerBatch(t *testing.T) {
	f := newFixture(t)
	f.workload(t, 10) // before Start: every read returns a full batch
	head, _ := f.db.Head(context.Background())
	r := f.runner(t, DefaultConfig())
	start(t, r)
	waitFor(t, "projectors to catch up", f.caughtUp(t, Names...))
	shutdown(t, r)
	var want [][]int64
	for from := int64(1); from <= head; from += int64(r.cfg.BatchSize) {
		var b []int64
		for p := from; p <= head && p < from+int64(r.cfg.BatchSize); p++ {
			b = append(b, p)
		}
		want = append(want, b)
	}
	for _, name := range Names {
		if diff := cmp.Diff(f.views.batches[name], want); diff != "" {
			t.Errorf("%s: positions by committed transaction (-got +want):\n%s", name, diff)
		}
	}
	f.checkReadModels(t)
}

func TestFailedBatch(t *testing.T) {
	f := newFixture(t)
	f.workload(t, 6)
	boom := errors.New("boom")
	var failed atomic.Bool
	var failedBatch []int64 // written by orders_view's goroutine before it fails
	f.views.before = func(name string, events []orders.Event) {
		if name == OrdersView && events[0].Position == 8 && !failed.Load() {
			for _, e := range events {
				failedBatch = append(failedBatch, e.Position)
			}
		}
	}
	// orders_view's second batch fails once, after writing two events.
	f.views.inTx = func(name string, e orders.Event) error {
		if name == OrdersView && e.Position == 9 && failed.CompareAndSwap(false, true) {
			return boom
		}
		return nil
	}
	r := f.runner(t, DefaultConfig())
	start(t, r)
	head, _ := f.db.Head(context.Background())
	waitFor(t, "projectors to catch up after the failure", f.caughtUp(t, Names...))
	shutdown(t, r)
	f.checkReadModels(t)

	positions := f.positions(t)
	var gotFailed []int64
	ok := 0
	for _, s := range projectSpans(f.rec, OrdersView) {
		switch s.Status().Code {
		case codes.Error:
			gotFailed = append(gotFailed, positions[attrMap(s)["cqrs.event.id"].(string)])
		case codes.Unset:
			ok++
		default:
			t.Errorf("span status %v, want unset or error", s.Status())
		}
	}
	slices.Sort(gotFailed)
	if len(failedBatch) < 2 {
		t.Fatalf("failed batch %v, want at least positions 8 and 9", failedBatch)
	}
	if diff := cmp.Diff(gotFailed, failedBatch); diff != "" {
		t.Errorf("positions of project spans with status Error (-got +want):\n%s", diff)
	}
	if int64(ok) != head {
		t.Errorf("%d project spans without error, want one per event: %d", ok, head)
	}
	st := r.Stats()[0]
	want := Stats{Projection: OrdersView, Checkpoint: head, Projected: head, Spans: head + int64(len(failedBatch)), Errors: 1}
	if diff := cmp.Diff(st, want); diff != "" {
		t.Errorf("Stats(orders_view) (-got +want):\n%s", diff)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name   string
		faults map[string]Faults
		// want per projection: spans, projected, dropped, duplicated, as a
		// multiple of the number of events.
		want map[string][4]int64
	}{
		{
			name:   "drop all sales_summary",
			faults: map[string]Faults{SalesSummary: {DropRate: 1}},
			want:   map[string][4]int64{OrdersView: {1, 1, 0, 0}, SalesSummary: {0, 0, 1, 0}},
		},
		{
			name:   "duplicate all orders_view",
			faults: map[string]Faults{OrdersView: {DuplicateRate: 1}},
			want:   map[string][4]int64{OrdersView: {2, 1, 0, 1}, SalesSummary: {1, 1, 0, 0}},
		},
		{
			name:   "fixed delay",
			faults: map[string]Faults{OrdersView: {Delay: 20 * time.Millisecond}, SalesSummary: {Delay: time.Millisecond, DelayMax: 3 * time.Millisecond}},
			want:   map[string][4]int64{OrdersView: {1, 1, 0, 0}, SalesSummary: {1, 1, 0, 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.workload(t, 5)
			cfg := DefaultConfig()
			cfg.Faults = tt.faults
			r := f.runner(t, cfg)
			start(t, r)
			n, _ := f.db.Head(context.Background())
			// Wait on the counters, not the checkpoint: a duplicate's second
			// pass comes after the commit.
			waitFor(t, "projectors to handle every event", func() bool {
				for _, st := range r.Stats() {
					w := tt.want[st.Projection]
					if st.Checkpoint < n || st.Spans < w[0]*n || st.Duplicated < w[3]*n {
						return false
					}
				}
				return true
			})
			shutdown(t, r)
			for _, st := range r.Stats() {
				spans := int64(len(projectSpans(f.rec, st.Projection)))
				got := [4]int64{spans, st.Projected, st.Dropped, st.Duplicated}
				w := tt.want[st.Projection]
				want := [4]int64{w[0] * n, w[1] * n, w[2] * n, w[3] * n}
				if diff := cmp.Diff(got, want); diff != "" {
					t.Errorf("%s: [spans projected dropped duplicated] (-got +want):\n%s", st.Projection, diff)
				}
				if st.Spans != spans {
					t.Errorf("%s: Stats().Spans = %d, recorder has %d", st.Projection, st.Spans, spans)
				}
				if min := tt.faults[st.Projection].Delay; min > 0 {
					// A delayed projection shows an event no earlier than
					// the delay after it was recorded.
					events, err := f.db.ReadAll(context.Background(), 0, int(n))
					if err != nil {
						t.Fatal(err)
					}
					recorded := map[string]time.Time{}
					for _, e := range events {
						recorded[e.ID] = e.RecordedAt
					}
					for _, s := range projectSpans(f.rec, st.Projection) {
						var id string
						for _, kv := range s.Attributes() {
							if kv.Key == "cqrs.event.id" {
								id = kv.Value.AsString()
							}
						}
						at, ok := recorded[id]
						if !ok {
							t.Fatalf("%s: project span for unknown event %q", st.Projection, id)
						}
						if d := s.EndTime().Sub(at); d < min {
							t.Errorf("%s: event shown %v after it was recorded, want at least the delay %v", st.Projection, d, min)
						}
					}
				}
			}
			if _, ok := tt.faults[SalesSummary]; !ok || tt.faults[SalesSummary].DropRate == 0 {
				f.checkReadModels(t)
			}
		})
	}
}

func TestDelaySplitsBatch(t *testing.T) {
	const (
		delay = 300 * time.Millisecond
		gap   = 250 * time.Millisecond
	)
	f := newFixture(t)
	f.workload(t, 1) // positions 1, 2
	// The second order is recorded gap later (a sleep that makes the gap,
	// not one that waits for a condition): both are read in one batch.
	time.Sleep(gap)
	f.workload(t, 1) // positions 3, 4
	cfg := DefaultConfig()
	cfg.Faults = map[string]Faults{OrdersView: {Delay: delay}}
	r := f.runner(t, cfg)
	start(t, r)
	waitFor(t, "projectors to catch up", f.caughtUp(t, Names...))
	shutdown(t, r)
	f.checkReadModels(t)

	for _, b := range f.views.batches[OrdersView] {
		if slices.Contains(b, 2) && slices.Contains(b, 3) {
			t.Errorf("orders_view committed positions %v in one batch: the first order waited for the second to be due", b)
		}
	}
	events, err := f.db.ReadAll(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]time.Time{}
	for _, e := range events {
		recorded[e.ID] = e.RecordedAt
	}
	// Every event is shown about the delay after it was recorded: never
	// earlier, and not as late as delay+gap, which holding the whole batch
	// until its last event is due would give the first order.
	for _, s := range projectSpans(f.rec, OrdersView) {
		lag := s.EndTime().Sub(recorded[attrMap(s)["cqrs.event.id"].(string)])
		if lag < delay || lag >= delay+gap*3/5 {
			t.Errorf("orders_view shows an event %v after it was recorded, want in [%v, %v)", lag, delay, delay+gap*3/5)
		}
	}
}

func TestStall(t *testing.T) {
	f := newFixture(t)
	f.workload(t, 2)
	const stallFor = 300 * time.Millisecond
	cfg := DefaultConfig()
	cfg.Faults = map[string]Faults{OrdersView: {StallAfter: 0, StallFor: stallFor}}
	r := f.runner(t, cfg)
	begin := time.Now()
	start(t, r)
	waitFor(t, "orders_view to catch up after its stall", f.caughtUp(t, Names...))
	stats := map[string]Stats{}
	for _, s := range r.Stats() {
		stats[s.Projection] = s
	}
	if got := stats[OrdersView]; got.Stalls != 1 || got.Stalled {
		t.Errorf("orders_view stats = %+v, want one finished stall", got)
	}
	if got := stats[SalesSummary].Stalls; got != 0 {
		t.Errorf("sales_summary stalls = %d, want 0", got)
	}
	for _, s := range projectSpans(f.rec, OrdersView) {
		if s.StartTime().Before(begin.Add(stallFor)) {
			t.Errorf("orders_view project span started %v after Start, inside its %v stall", s.StartTime().Sub(begin), stallFor)
		}
	}
	f.checkReadModels(t)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "zero", cfg: Config{}},
		{name: "unknown projection", cfg: Config{Projections: []string{"nope"}}, wantErr: true},
		{name: "faults for unknown projection", cfg: Config{Faults: map[string]Faults{"nope": {}}}, wantErr: true},
		{name: "drop rate above 1", cfg: Config{Faults: map[string]Faults{OrdersView: {DropRate: 1.5}}}, wantErr: true},
		{name: "negative duplicate rate", cfg: Config{Faults: map[string]Faults{OrdersView: {DuplicateRate: -0.1}}}, wantErr: true},
		{name: "negative delay", cfg: Config{Faults: map[string]Faults{OrdersView: {Delay: -1}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
