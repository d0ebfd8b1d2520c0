package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/postgres"
	"github.com/lagscope/lagscope/orders/postgres/pgtest"
	"github.com/lagscope/lagscope/orders/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens dsn and closes it when t ends.
func open(t *testing.T, dsn string) *postgres.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close() error = %v", err)
		}
	})
	return db
}

// fresh opens a DB on a new schema of its own.
func fresh(t *testing.T) *postgres.DB {
	t.Helper()
	return open(t, pgtest.DSN(t))
}

func TestStore(t *testing.T) {
	t.Parallel()
	t.Run("one handle", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) orders.Store { return fresh(t) })
	})
	t.Run("two handles", func(t *testing.T) {
		t.Parallel()
		// Two DB values on one schema stand in for a command process and a
		// projector process.
		storetest.Run(t, func(t *testing.T) orders.Store {
			dsn := pgtest.DSN(t)
			return twoHandles{DB: open(t, dsn), other: open(t, dsn)}
		})
	})
}

func TestViews(t *testing.T) {
	t.Parallel()
	storetest.RunViews(t, func(t *testing.T) orders.Views { return fresh(t) })
}

// twoHandles appends through one handle and reads through the other.
type twoHandles struct {
	*postgres.DB
	other *postgres.DB
}

func (h twoHandles) Load(ctx context.Context, id string) ([]orders.Event, error) {
	return h.other.Load(ctx, id)
}

func (h twoHandles) ReadAll(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	return h.other.ReadAll(ctx, after, limit)
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	ms := postgres.Migrations()
	if len(ms) == 0 {
		t.Fatal("Migrations() is empty")
	}
	for i, m := range ms {
		if m.Version != i+1 {
			t.Errorf("migration %d (%s) has version %d, want %d: versions are 1, 2, ... without gaps", i, m.Name, m.Version, i+1)
		}
	}

	dsn := pgtest.DSN(t)
	// Processes that start together on an empty schema: one applies the
	// migrations, the others wait for it and apply nothing.
	const handles = 4
	dbs := make([]*postgres.DB, handles)
	errs := make([]error, handles)
	var wg sync.WaitGroup
	for i := range handles {
		wg.Go(func() { dbs[i], errs[i] = postgres.Open(context.Background(), dsn, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open() %d error = %v", i, err)
		}
		t.Cleanup(func() { _ = dbs[i].Close() })
	}
	// And once more, later: a no-op.
	db := open(t, dsn)
	rows, err := db.Pool().Query(context.Background(), `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			v    int32
			name string
		)
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%04d_%s", v, name))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range ms {
		want = append(want, fmt.Sprintf("%04d_%s", m.Version, m.Name))
	}
	if !slices.Equal(got, want) {
		t.Errorf("schema_migrations = %v, want %v (each applied once)", got, want)
	}
}

// created returns an OrderCreated event for a new order id.
func created(t *testing.T, id string) orders.Event {
	t.Helper()
	e, err := orders.NewEvent(id, 1, orders.OrderCreated{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: 250, Quantity: 2}}, Total: 500}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func event(t *testing.T, id string, version int64, d orders.Data) orders.Event {
	t.Helper()
	e, err := orders.NewEvent(id, version, d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVersionConflicts(t *testing.T) {
	t.Parallel()
	t.Run("two processes race", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.DSN(t)
		dbs := []*postgres.DB{open(t, dsn), open(t, dsn)}
		ctx := context.Background()
		if _, err := dbs[0].Append(ctx, "o-1", 0, []orders.Event{created(t, "o-1")}); err != nil {
			t.Fatal(err)
		}
		const writers = 8
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Go(func() {
				e := event(t, "o-1", 2, orders.OrderPaid{Method: "card", Amount: 500})
				_, errs[i] = dbs[i%2].Append(ctx, "o-1", 1, []orders.Event{e})
			})
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
			t.Errorf("%d of %d writers won version 2, want 1", won, writers)
		}
	})
	t.Run("unique constraint", func(t *testing.T) {
		t.Parallel()
		// Without the append lock both writers pass the version check, and
		// the unique (aggregate_id, version) decides: the second insert
		// waits for the first transaction and fails when it commits.
		app := "lagscope-conflict-" + orders.NewID()[:8]
		dsn := pgtest.DSN(t) + "&application_name=" + app
		a, b := open(t, dsn), open(t, dsn)
		postgres.DisableAppendLock(a)
		postgres.DisableAppendLock(b)
		ctx := context.Background()
		var bErr error
		bDone := make(chan struct{})
		postgres.SetBeforeCommit(a, func(ctx context.Context, _ []orders.Event) {
			go func() {
				defer close(bDone)
				_, bErr = b.Append(ctx, "o-1", 0, []orders.Event{created(t, "o-1")})
			}()
			waitFor(t, a, `SELECT count(*) > 0 FROM pg_stat_activity
				WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'`, app)
		})
		if _, err := a.Append(ctx, "o-1", 0, []orders.Event{created(t, "o-1")}); err != nil {
			t.Fatalf("first Append() error = %v", err)
		}
		<-bDone
		if !errors.Is(bErr, orders.ErrVersionConflict) {
			t.Errorf("second Append() error = %v, want ErrVersionConflict", bErr)
		}
	})
}

// waitFor polls a boolean query on db until it is true, failing t after 10s.
func waitFor(t *testing.T, db *postgres.DB, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		if err := db.Pool().QueryRow(context.Background(), query, args...).Scan(&ok); err != nil {
			t.Fatalf("poll %q: %v", query, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still false after 10s: %s", query)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSubscribeWakesOtherProcesses(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	writer, reader := open(t, dsn), open(t, dsn)
	other := open(t, pgtest.DSN(t)) // another schema in the same database
	ch, stop := reader.Subscribe()
	defer stop()
	otherCh, stopOther := other.Subscribe()
	defer stopOther()

	if _, err := writer.Append(context.Background(), "o-1", 0, []orders.Event{created(t, "o-1")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up within 10s of an append by another DB on the same schema")
	}
	// Every notification for this schema has arrived once the reader's own
	// append's has: the other schema's channel got nothing.
	if _, err := reader.Append(context.Background(), "o-2", 0, []orders.Event{created(t, "o-2")}); err != nil {
		t.Fatal(err)
	}
	<-ch
	select {
	case <-otherCh:
		t.Error("an append to one schema woke a subscriber of another schema")
	default:
	}
}

func TestApplyConcurrentProjectors(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	dbs := []*postgres.DB{open(t, dsn), open(t, dsn)}
	// Processes running the same projection apply the same event at once:
	// it must count once, whether or not the checkpoint row exists yet.
	for _, pos := range []int64{1, 2} {
		const workers = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			applied int
		)
		for i := range workers {
			wg.Go(func() {
				ok, err := dbs[i%2].Apply(context.Background(), "p", pos, func(tx orders.ViewTx) error {
					return tx.AddSummary(orders.Summary{Orders: 1})
				})
				if err != nil {
					t.Errorf("Apply(%d) error = %v", pos, err)
				}
				if ok {
					mu.Lock()
					applied++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if applied != 1 {
			t.Errorf("Apply(%d) applied by %d of %d projectors, want 1", pos, applied, workers)
		}
	}
	s, err := dbs[0].Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Orders != 2 {
		t.Errorf("Summary().Orders = %d, want 2: each position counted once", s.Orders)
	}
}

func TestApplyBatchConcurrentProjectors(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	dbs := []*postgres.DB{open(t, dsn), open(t, dsn)}
	// Processes running the same projection apply overlapping batches of
	// different lengths at once, the first ones before the checkpoint row
	// exists: every position must count once.
	events := make([]orders.Event, 20)
	for i := range events {
		events[i] = orders.Event{Position: int64(i + 1)}
	}
	var (
		mu      sync.Mutex
		applied int
	)
	for _, from := range []int{0, 4, 9} {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				n, err := dbs[i%2].ApplyBatch(context.Background(), "p", events[from:from+i+4], func(tx orders.ViewTx, _ orders.Event) error {
					return tx.AddSummary(orders.Summary{Orders: 1})
				})
				if err != nil {
					t.Errorf("ApplyBatch(%d..%d) error = %v", from+1, from+i+4, err)
				}
				mu.Lock()
				applied += n
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	cp, err := dbs[0].Checkpoint(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	s, err := dbs[0].Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cp != 20 || s.Orders != 20 || applied != 20 {
		t.Errorf("checkpoint %d, Summary().Orders %d, sum of applied %d; want 20 each: each position counted once", cp, s.Orders, applied)
	}
}
