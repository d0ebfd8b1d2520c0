package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lagscope/lagscope/orders"
)

// RunViews runs the orders.Views contract against views made by newViews.
func RunViews(t *testing.T, newViews func(t *testing.T) orders.Views) {
	t.Run("CheckpointAndIdempotency", func(t *testing.T) { testCheckpoint(t, newViews(t)) })
	t.Run("RollbackOnError", func(t *testing.T) { testRollback(t, newViews(t)) })
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
