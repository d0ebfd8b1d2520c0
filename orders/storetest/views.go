package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/orders"
)

// RunViews runs the orders.Views contract against views made by newViews:
// Apply and ApplyBatch (idempotency by checkpoint, one transaction, rollback
// on error or cancellation) and the read model queries.
func RunViews(t *testing.T, newViews func(t *testing.T) orders.Views) {
	t.Run("CheckpointAndIdempotency", func(t *testing.T) { testCheckpoint(t, newViews(t)) })
	t.Run("RollbackOnError", func(t *testing.T) { testRollback(t, newViews(t)) })
	t.Run("Batch", func(t *testing.T) { testBatch(t, newViews(t)) })
	t.Run("BatchSeesItsOwnWrites", func(t *testing.T) { testBatchOwnWrites(t, newViews(t)) })
	t.Run("BatchRollback", func(t *testing.T) { testBatchRollback(t, newViews(t)) })
	t.Run("Orders", func(t *testing.T) { testOrders(t, newViews(t)) })
	t.Run("Summary", func(t *testing.T) { testSummary(t, newViews(t)) })
}

func testCheckpoint(t *testing.T, v orders.Views) {
	ctx := context.Background()
	if got, err := v.Checkpoint(ctx, "p"); err != nil || got != 0 {
		t.Fatalf("Checkpoint(new) = %d, %v; want 0, nil", got, err)
	}
	calls := 0
	fn := func(orders.ViewTx) error { calls++; return nil }
	tests := []struct {
		name        string
		position    int64
		fn          func(orders.ViewTx) error
		wantApplied bool
		wantCP      int64
	}{
		{name: "first", position: 3, fn: fn, wantApplied: true, wantCP: 3},
		{name: "same again", position: 3, fn: fn, wantApplied: false, wantCP: 3},
		{name: "older", position: 2, fn: fn, wantApplied: false, wantCP: 3},
		{name: "checkpoint only", position: 5, wantApplied: true, wantCP: 5},
		{name: "next", position: 6, fn: fn, wantApplied: true, wantCP: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			applied, err := v.Apply(ctx, "p", tt.position, tt.fn)
			if err != nil {
				t.Fatalf("Apply() error = %v", err)
			}
			if applied != tt.wantApplied {
				t.Errorf("Apply() applied = %v, want %v", applied, tt.wantApplied)
			}
			if got, _ := v.Checkpoint(ctx, "p"); got != tt.wantCP {
				t.Errorf("Checkpoint() = %d, want %d", got, tt.wantCP)
			}
		})
	}
	if calls != 2 {
		t.Errorf("fn called %d times, want 2", calls)
	}
	if got, _ := v.Checkpoint(ctx, "other"); got != 0 {
		t.Errorf("Checkpoint(other) = %d, want 0: checkpoints are per projection", got)
	}
}

func testRollback(t *testing.T, v orders.Views) {
	ctx := context.Background()
	boom := errors.New("boom")
	_, err := v.Apply(ctx, "p", 1, func(tx orders.ViewTx) error {
		if err := tx.PutOrder(orders.OrderView{ID: "o-1", CustomerID: "cust-1", Status: orders.StatusCreated, Version: 1}); err != nil {
			return err
		}
		if err := tx.AddSummary(orders.Summary{Orders: 1, Created: 1}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Apply() error = %v, want %v", err, boom)
	}
	if got, _ := v.Checkpoint(ctx, "p"); got != 0 {
		t.Errorf("Checkpoint() after rollback = %d, want 0", got)
	}
	if _, err := v.Order(ctx, "o-1"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("Order() after rollback error = %v, want ErrNotFound", err)
	}
	if got, _ := v.Summary(ctx); got != (orders.Summary{}) {
		t.Errorf("Summary() after rollback = %+v, want zero", got)
	}
}

func testOrders(t *testing.T, v orders.Views) {
	ctx := context.Background()
	at := time.Unix(1_700_000_000, 5).UTC()
	views := []orders.OrderView{
		{ID: "o-2", CustomerID: "cust-1", Status: orders.StatusPaid, Items: []orders.Item{{SKU: "a", Price: 5, Quantity: 2}}, Total: 10, PaymentMethod: "card", Version: 2, CreatedAt: at, UpdatedAt: at.Add(time.Second)},
		{ID: "o-1", CustomerID: "cust-1", Status: orders.StatusCreated, Items: []orders.Item{{SKU: "b", Price: 7, Quantity: 1}}, Total: 7, Version: 1, CreatedAt: at, UpdatedAt: at},
		{ID: "o-3", CustomerID: "cust-2", Status: orders.StatusCancelled, Items: []orders.Item{{SKU: "c", Price: 1, Quantity: 1}}, Total: 1, CancelReason: "x", Version: 2, CreatedAt: at, UpdatedAt: at},
	}
	for i, ov := range views {
		if _, err := v.Apply(ctx, "orders_view", int64(i+1), func(tx orders.ViewTx) error { return tx.PutOrder(ov) }); err != nil {
			t.Fatal(err)
		}
	}
	// Read and replace within a transaction.
	_, err := v.Apply(ctx, "orders_view", 10, func(tx orders.ViewTx) error {
		got, ok, err := tx.Order("o-1")
		if err != nil || !ok {
			return errors.Join(err, errors.New("o-1 missing in tx"))
		}
		got.Status, got.Version = orders.StatusPaid, 2
		if _, ok, _ := tx.Order("o-9"); ok {
			return errors.New("o-9 found in tx")
		}
		return tx.PutOrder(got)
	})
	if err != nil {
		t.Fatal(err)
	}
	views[1].Status, views[1].Version = orders.StatusPaid, 2

	cmpTime := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	got, err := v.Order(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, views[1], cmpTime); diff != "" {
		t.Errorf("Order(o-1) mismatch (-got +want):\n%s", diff)
	}
	if _, err := v.Order(ctx, "o-9"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("Order(unknown) error = %v, want ErrNotFound", err)
	}
	list, err := v.OrdersByCustomer(ctx, "cust-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(list, []orders.OrderView{views[1], views[0]}, cmpTime); diff != "" {
		t.Errorf("OrdersByCustomer(cust-1) mismatch (-got +want):\n%s", diff)
	}
	if list, _ := v.OrdersByCustomer(ctx, "cust-1", 1); len(list) != 1 {
		t.Errorf("OrdersByCustomer(limit 1) = %d views, want 1", len(list))
	}
	if list, _ := v.OrdersByCustomer(ctx, "cust-9", 10); len(list) != 0 {
		t.Errorf("OrdersByCustomer(unknown) = %d views, want 0", len(list))
	}
}

func testSummary(t *testing.T, v orders.Views) {
	ctx := context.Background()
	deltas := []orders.Summary{
		{Orders: 1, Created: 1},
		{Orders: 1, Created: 1},
		{Created: -1, Paid: 1, Revenue: 500},
		{Paid: -1, Cancelled: 1, Revenue: -500},
	}
	for i, d := range deltas {
		if _, err := v.Apply(ctx, "sales_summary", int64(i+1), func(tx orders.ViewTx) error { return tx.AddSummary(d) }); err != nil {
			t.Fatal(err)
		}
	}
	got, err := v.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := orders.Summary{Orders: 2, Created: 1, Cancelled: 1}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Summary() mismatch (-got +want):\n%s", diff)
	}
}

// batch returns events at the given positions, each of its own order.
func batch(positions ...int64) []orders.Event {
	out := make([]orders.Event, 0, len(positions))
	for _, p := range positions {
		out = append(out, orders.Event{AggregateID: fmt.Sprintf("o-%d", p), Version: 1, Position: p})
	}
	return out
}

func testBatch(t *testing.T, v orders.Views) {
	ctx := context.Background()
	var calls []int64
	fn := func(tx orders.ViewTx, e orders.Event) error {
		calls = append(calls, e.Position)
		return tx.AddSummary(orders.Summary{Orders: 1})
	}
	tests := []struct {
		name        string
		events      []orders.Event
		fn          func(orders.ViewTx, orders.Event) error
		wantApplied int
		wantCalls   []int64
		wantCP      int64
		wantErr     bool
	}{
		{name: "empty", wantCP: 0},
		{name: "first", events: batch(3, 4, 5), fn: fn, wantApplied: 3, wantCalls: []int64{3, 4, 5}, wantCP: 5},
		{name: "same again", events: batch(3, 4, 5), fn: fn, wantCP: 5},
		{name: "older", events: batch(1, 2), fn: fn, wantCP: 5},
		{name: "overlapping the checkpoint", events: batch(4, 5, 6, 8), fn: fn, wantApplied: 2, wantCalls: []int64{6, 8}, wantCP: 8},
		{name: "checkpoint only", events: batch(9, 10), wantApplied: 2, wantCP: 10},
		{name: "not ascending", events: batch(12, 11), fn: fn, wantErr: true, wantCP: 10},
		{name: "repeated position", events: batch(11, 11), fn: fn, wantErr: true, wantCP: 10},
		{name: "single", events: batch(11), fn: fn, wantApplied: 1, wantCalls: []int64{11}, wantCP: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = nil
			applied, err := v.ApplyBatch(ctx, "p", tt.events, tt.fn)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ApplyBatch() error = %v, want error %v", err, tt.wantErr)
			}
			if applied != tt.wantApplied {
				t.Errorf("ApplyBatch() applied = %d, want %d", applied, tt.wantApplied)
			}
			if diff := cmp.Diff(calls, tt.wantCalls); diff != "" {
				t.Errorf("fn calls by position (-got +want):\n%s", diff)
			}
			if got, _ := v.Checkpoint(ctx, "p"); got != tt.wantCP {
				t.Errorf("Checkpoint() = %d, want %d", got, tt.wantCP)
			}
		})
	}
	if got, _ := v.Summary(ctx); got.Orders != 6 {
		t.Errorf("Summary().Orders = %d, want 6: one per applied event", got.Orders)
	}
	// Apply and ApplyBatch share the checkpoint.
	if ok, err := v.Apply(ctx, "p", 11, nil); err != nil || ok {
		t.Errorf("Apply(11) after ApplyBatch up to 11 = %v, %v; want false, nil", ok, err)
	}
}

func testBatchOwnWrites(t *testing.T, v orders.Views) {
	ctx := context.Background()
	// Three events of one order in one batch: each reads what the one before
	// wrote in the same transaction.
	events := []orders.Event{
		{AggregateID: "o-1", Version: 1, Position: 1},
		{AggregateID: "o-1", Version: 2, Position: 2},
		{AggregateID: "o-1", Version: 3, Position: 3},
	}
	n, err := v.ApplyBatch(ctx, "orders_view", events, func(tx orders.ViewTx, e orders.Event) error {
		ov, ok, err := tx.Order(e.AggregateID)
		if err != nil {
			return err
		}
		if ok != (e.Version > 1) || (ok && ov.Version != e.Version-1) {
			return fmt.Errorf("event %d found view %+v (exists %v), want version %d", e.Position, ov, ok, e.Version-1)
		}
		if err := tx.AddSummary(orders.Summary{Revenue: 10}); err != nil {
			return err
		}
		return tx.PutOrder(orders.OrderView{ID: e.AggregateID, CustomerID: "cust-1", Status: orders.StatusCreated, Version: e.Version})
	})
	if err != nil || n != 3 {
		t.Fatalf("ApplyBatch() = %d, %v; want 3, nil", n, err)
	}
	if got, err := v.Order(ctx, "o-1"); err != nil || got.Version != 3 {
		t.Errorf("Order(o-1) = version %d, %v; want 3, nil", got.Version, err)
	}
	if got, _ := v.Summary(ctx); got.Revenue != 30 {
		t.Errorf("Summary().Revenue = %d, want 30", got.Revenue)
	}
}

func testBatchRollback(t *testing.T, v orders.Views) {
	ctx := context.Background()
	put := func(tx orders.ViewTx, e orders.Event) error {
		if err := tx.PutOrder(orders.OrderView{ID: e.AggregateID, CustomerID: "cust-1", Status: orders.StatusCreated, Version: 1}); err != nil {
			return err
		}
		return tx.AddSummary(orders.Summary{Orders: 1, Created: 1})
	}
	if _, err := v.ApplyBatch(ctx, "p", batch(1, 2), put); err != nil {
		t.Fatal(err)
	}
	wantSum := orders.Summary{Orders: 2, Created: 2}
	boom := errors.New("boom")
	tests := []struct {
		name string
		// fn fails at the third event of the batch 3, 4, 5, after writing
		// the first two; cancel makes it cancel the context instead.
		cancel bool
	}{
		{name: "fn error"},
		{name: "context cancelled mid batch", cancel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			_, err := v.ApplyBatch(ctx, "p", batch(3, 4, 5), func(tx orders.ViewTx, e orders.Event) error {
				if e.Position == 5 {
					if !tt.cancel {
						return boom
					}
					cancel()
				}
				return put(tx, e)
			})
			if err == nil {
				t.Fatal("ApplyBatch() error = nil, want the failure")
			}
			if !tt.cancel && !errors.Is(err, boom) {
				t.Errorf("ApplyBatch() error = %v, want %v", err, boom)
			}
			if got, _ := v.Checkpoint(context.Background(), "p"); got != 2 {
				t.Errorf("Checkpoint() after rollback = %d, want 2", got)
			}
			for _, id := range []string{"o-3", "o-4", "o-5"} {
				if _, err := v.Order(context.Background(), id); !errors.Is(err, orders.ErrNotFound) {
					t.Errorf("Order(%s) after rollback error = %v, want ErrNotFound", id, err)
				}
			}
			if got, _ := v.Summary(context.Background()); got != wantSum {
				t.Errorf("Summary() after rollback = %+v, want %+v", got, wantSum)
			}
		})
	}
	// The failed batch applies in full when retried.
	if n, err := v.ApplyBatch(ctx, "p", batch(3, 4, 5), put); err != nil || n != 3 {
		t.Errorf("ApplyBatch() retry = %d, %v; want 3, nil", n, err)
	}
	if got, _ := v.Summary(ctx); got != (orders.Summary{Orders: 5, Created: 5}) {
		t.Errorf("Summary() after retry = %+v, want 5 orders", got)
	}
}
