// Package storetest is the contract test suite that every orders.Store and
// orders.Views implementation runs from its own tests:
//
//	func TestStore(t *testing.T) { storetest.Run(t, func(t *testing.T) orders.Store { return open(t) }) }
//	func TestViews(t *testing.T) { storetest.RunViews(t, func(t *testing.T) orders.Views { return open(t) }) }
//
// newStore must return an empty store, and arrange its cleanup with t.Cleanup.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lagscope/lagscope/orders"
)

// Run runs the orders.Store contract against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) orders.Store) {
	t.Run("AppendLoadRoundTrip", func(t *testing.T) { testRoundTrip(t, newStore(t)) })
	t.Run("LoadUnknown", func(t *testing.T) { testLoadUnknown(t, newStore(t)) })
	t.Run("ExpectedVersion", func(t *testing.T) { testExpectedVersion(t, newStore(t)) })
	t.Run("BadBatch", func(t *testing.T) { testBadBatch(t, newStore(t)) })
	t.Run("ConcurrentCreate", func(t *testing.T) { testConcurrentCreate(t, newStore(t)) })
	t.Run("ConcurrentAppendOneAggregate", func(t *testing.T) { testConcurrentAppend(t, newStore(t)) })
	t.Run("GlobalOrder", func(t *testing.T) { testGlobalOrder(t, newStore(t)) })
	t.Run("TraceContextMetadata", func(t *testing.T) { testMetadata(t, newStore(t)) })
	t.Run("Subscribe", func(t *testing.T) { testSubscribe(t, newStore(t)) })
}

// eventCmp compares stored events: times by instant, nil and empty maps alike.
var eventCmp = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
}

// events builds n events for id starting after version from.
func events(t *testing.T, id string, from int64, n int) []orders.Event {
	t.Helper()
	var out []orders.Event
	at := time.Unix(1_700_000_000, 123456789).UTC()
	for i := range n {
		var d orders.Data = orders.OrderPaid{Method: "card", Amount: int64(i + 1)}
		if from+int64(i) == 0 {
			d = orders.OrderCreated{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: 100, Quantity: 1}}, Total: 100}
		}
		e, err := orders.NewEvent(id, from+int64(i)+1, d, at)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func testRoundTrip(t *testing.T, s orders.Store) {
	ctx := context.Background()
	want := events(t, "o-1", 0, 3)
	stored, err := s.Append(ctx, "o-1", 0, want)
	if err != nil {
		t.Fatalf("Append() error = %v", err)
	}
	for i, e := range stored {
		if e.Position <= 0 || (i > 0 && e.Position <= stored[i-1].Position) {
			t.Fatalf("Append() positions not increasing: %d at %d", e.Position, i)
		}
		want[i].Position = e.Position
	}
	got, err := s.Load(ctx, "o-1")
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if diff := cmp.Diff(got, want, eventCmp); diff != "" {
		t.Errorf("Load() mismatch (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(stored, want, eventCmp); diff != "" {
		t.Errorf("Append() returned (-got +want):\n%s", diff)
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatalf("Head() error = %v", err)
	}
	if head != want[2].Position {
		t.Errorf("Head() = %d, want %d", head, want[2].Position)
	}
}

func testLoadUnknown(t *testing.T, s orders.Store) {
	ctx := context.Background()
	if _, err := s.Load(ctx, "nope"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("Load(unknown) error = %v, want ErrNotFound", err)
	}
	head, err := s.Head(ctx)
	if err != nil || head != 0 {
		t.Errorf("Head(empty) = %d, %v; want 0, nil", head, err)
	}
	got, err := s.ReadAll(ctx, 0, 10)
	if err != nil || len(got) != 0 {
		t.Errorf("ReadAll(empty) = %d events, %v; want 0, nil", len(got), err)
	}
}

func testExpectedVersion(t *testing.T, s orders.Store) {
	ctx := context.Background()
	if _, err := s.Append(ctx, "o-1", 0, events(t, "o-1", 0, 2)); err != nil {
		t.Fatalf("Append() error = %v", err)
	}
	tests := []struct {
		name     string
		expected int64
		wantErr  error
	}{
		{name: "stale", expected: 1, wantErr: orders.ErrVersionConflict},
		{name: "as new", expected: 0, wantErr: orders.ErrVersionConflict},
		{name: "ahead", expected: 5, wantErr: orders.ErrVersionConflict},
		{name: "current", expected: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Append(ctx, "o-1", tt.expected, events(t, "o-1", tt.expected, 1))
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Append(expected %d) error = %v, want %v", tt.expected, err, tt.wantErr)
			}
		})
	}
	got, err := s.Load(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Errorf("Load() = %d events, want 3", len(got))
	}
}

func testBadBatch(t *testing.T, s orders.Store) {
	ctx := context.Background()
	gap := events(t, "o-1", 0, 3)
	gap[2].Version = 7
	other := events(t, "o-1", 0, 2)
	other[1].AggregateID = "o-2"
	tests := []struct {
		name   string
		events []orders.Event
	}{
		{name: "empty", events: nil},
		{name: "version gap", events: gap},
		{name: "other aggregate", events: other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Append(ctx, "o-1", 0, tt.events); err == nil {
				t.Errorf("Append() error = nil, want an error")
			}
		})
	}
	if _, err := s.Load(ctx, "o-1"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("Load() after rejected batches error = %v, want ErrNotFound", err)
	}
	// A batch whose event id is already stored is rejected whole.
	first := events(t, "o-3", 0, 1)
	if _, err := s.Append(ctx, "o-3", 0, first); err != nil {
		t.Fatal(err)
	}
	dup := events(t, "o-4", 0, 2)
	dup[1].ID = first[0].ID
	if _, err := s.Append(ctx, "o-4", 0, dup); err == nil {
		t.Errorf("Append(duplicate event id) error = nil, want an error")
	}
	if _, err := s.Load(ctx, "o-4"); !errors.Is(err, orders.ErrNotFound) {
		t.Errorf("Load() after duplicate id batch error = %v, want ErrNotFound", err)
	}
}

func testConcurrentCreate(t *testing.T, s orders.Store) {
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Append(ctx, "o-1", 0, events(t, "o-1", 0, 2))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, orders.ErrVersionConflict):
			t.Errorf("Append() error = %v, want nil or ErrVersionConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d writers won version 1, want exactly 1", won)
	}
	got, err := s.Load(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("Load() = %d events, want 2", len(got))
	}
}

func testConcurrentAppend(t *testing.T, s orders.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Append(ctx, "o-1", 0, events(t, "o-1", 0, 1)); err != nil {
		t.Fatal(err)
	}
	const writers, target = 6, 40
	var (
		mu      sync.Mutex
		winners = map[int64]int{}
		ids     = map[int64]string{}
		wg      sync.WaitGroup
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cur, err := s.Load(ctx, "o-1")
				if err != nil {
					t.Errorf("Load() error = %v", err)
					return
				}
				v := cur[len(cur)-1].Version
				if v >= target {
					return
				}
				evs := events(t, "o-1", v, 1)
				_, err = s.Append(ctx, "o-1", v, evs)
				switch {
				case err == nil:
					mu.Lock()
					winners[v+1]++
					ids[v+1] = evs[0].ID
					mu.Unlock()
				case !errors.Is(err, orders.ErrVersionConflict):
					t.Errorf("Append() error = %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := s.Load(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != target {
		t.Fatalf("Load() = %d events, want %d", len(got), target)
	}
	for i, e := range got[1:] {
		v := int64(i + 2)
		if e.Version != v {
			t.Errorf("event %d has version %d, want %d", i+1, e.Version, v)
		}
		if winners[v] != 1 {
			t.Errorf("version %d has %d winners, want exactly 1", v, winners[v])
		}
		if e.ID != ids[v] {
			t.Errorf("version %d stored event %s, the winner appended %s", v, e.ID, ids[v])
		}
	}
}

func testGlobalOrder(t *testing.T, s orders.Store) {
	ctx := context.Background()
	const aggs, perAgg = 5, 6
	var wg sync.WaitGroup
	for a := range aggs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("o-%d", a)
			for v := range perAgg {
				if _, err := s.Append(ctx, id, int64(v), events(t, id, int64(v), 1)); err != nil {
					t.Errorf("Append(%s v%d) error = %v", id, v+1, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all, err := s.ReadAll(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != aggs*perAgg {
		t.Fatalf("ReadAll() = %d events, want %d", len(all), aggs*perAgg)
	}
	last := map[string]int64{}
	for i, e := range all {
		if i > 0 && e.Position <= all[i-1].Position {
			t.Errorf("ReadAll() position %d after %d", e.Position, all[i-1].Position)
		}
		if e.Version != last[e.AggregateID]+1 {
			t.Errorf("ReadAll() %s version %d after %d", e.AggregateID, e.Version, last[e.AggregateID])
		}
		last[e.AggregateID] = e.Version
	}
	// Paging with a small limit reads the same sequence.
	var paged []orders.Event
	after := int64(0)
	for {
		page, err := s.ReadAll(ctx, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 7 {
			t.Fatalf("ReadAll(limit 7) = %d events", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Position
	}
	if diff := cmp.Diff(paged, all, eventCmp); diff != "" {
		t.Errorf("paged ReadAll() mismatch (-got +want):\n%s", diff)
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head != all[len(all)-1].Position {
		t.Errorf("Head() = %d, want %d", head, all[len(all)-1].Position)
	}
}

func testMetadata(t *testing.T, s orders.Store) {
	ctx := context.Background()
	evs := events(t, "o-1", 0, 2)
	evs[0].Metadata = map[string]string{
		orders.MetaTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		orders.MetaTracestate:  "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
	}
	evs[1].Metadata = map[string]string{orders.MetaTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
	if _, err := s.Append(ctx, "o-1", 0, evs); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	read, err := s.ReadAll(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]orders.Event{"Load": loaded, "ReadAll": read} {
		for i := range evs {
			if diff := cmp.Diff(got[i].Metadata, evs[i].Metadata); diff != "" {
				t.Errorf("%s() event %d metadata mismatch (-got +want):\n%s", name, i, diff)
			}
		}
	}
}

func testSubscribe(t *testing.T, s orders.Store) {
	ch, stop := s.Subscribe()
	defer stop()
	if _, err := s.Append(context.Background(), "o-1", 0, events(t, "o-1", 0, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up within 5s of Append")
	}
	// A stopped subscription no longer receives; stop is idempotent.
	stop()
	stop()
	if _, err := s.Append(context.Background(), "o-2", 0, events(t, "o-2", 0, 1)); err != nil {
		t.Fatal(err)
	}
}
