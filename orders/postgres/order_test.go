package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/postgres"
	"github.com/lagscope/lagscope/orders/postgres/pgtest"
	"github.com/lagscope/lagscope/orders/projection"
)

// These tests are about the global order: a projector that resumes after the
// last position it read must see every event exactly once, however appends
// interleave and whenever the projector stops.

// TestAppendLockOrdersCommits pins the sequence-gap bug down with two appends
// and shows the append lock prevents it: A takes a position and has not
// committed when B, which takes the next position, wants to commit.
func TestAppendLockOrdersCommits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lock bool
	}{
		{name: "without lock the reader skips A", lock: false},
		{name: "with lock B waits for A", lock: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := "lagscope-order-" + orders.NewID()[:8]
			dsn := pgtest.DSN(t) + "&application_name=" + app
			a, b, reader := open(t, dsn), open(t, dsn), open(t, dsn)
			if !tt.lock {
				postgres.DisableAppendLock(a)
				postgres.DisableAppendLock(b)
			}
			ctx := context.Background()
			inA, releaseA := make(chan int64), make(chan struct{})
			postgres.SetBeforeCommit(a, func(_ context.Context, stored []orders.Event) {
				inA <- stored[0].Position
				<-releaseA
			})
			aDone := make(chan error, 1)
			go func() {
				_, err := a.Append(ctx, "o-a", 0, []orders.Event{created(t, "o-a")})
				aDone <- err
			}()
			posA := <-inA // A holds position posA, uncommitted

			bDone := make(chan error, 1)
			var stored []orders.Event
			go func() {
				var err error
				stored, err = b.Append(ctx, "o-b", 0, []orders.Event{created(t, "o-b")})
				bDone <- err
			}()
			if tt.lock {
				// B waits for the lock: a reader now sees neither event.
				waitFor(t, reader, `SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
					WHERE a.application_name = $1 AND l.locktype = 'advisory' AND NOT l.granted
					AND l.classid::bigint = $2`, app, postgres.AppendLockClass)
				if got := read(t, reader, 0); len(got) != 0 {
					t.Fatalf("ReadAll(0) while A is uncommitted and B waits = %v, want none", got)
				}
			} else {
				if err := <-bDone; err != nil {
					t.Fatal(err)
				}
			}
			// The projector reads what is visible and moves its checkpoint.
			checkpoint := int64(0)
			if got := read(t, reader, 0); len(got) > 0 {
				checkpoint = got[len(got)-1]
			}
			close(releaseA)
			if err := <-aDone; err != nil {
				t.Fatal(err)
			}
			if tt.lock {
				if err := <-bDone; err != nil {
					t.Fatal(err)
				}
			}
			posB := stored[0].Position
			after := read(t, reader, checkpoint)
			seen := read(t, reader, 0)
			t.Logf("A at %d, B at %d; checkpoint before A committed %d; read after it %v", posA, posB, checkpoint, after)
			if tt.lock {
				if posA >= posB || !slices.Equal(after, []int64{posA, posB}) {
					t.Errorf("with lock: A at %d, B at %d, reader resumed after %d and read %v; want A before B, both read", posA, posB, checkpoint, after)
				}
				return
			}
			// Without the lock: B (posA+1) was visible before A, the reader
			// moved past A's position and never reads it, though it is stored.
			if checkpoint != posB || len(after) != 0 || !slices.Equal(seen, []int64{posA, posB}) {
				t.Errorf("without lock: checkpoint %d (B at %d), read after it %v, stored %v; the bug this test shows did not happen", checkpoint, posB, after, seen)
			}
		})
	}
}

// read returns the positions of all events after pos.
func read(t *testing.T, db *postgres.DB, after int64) []int64 {
	t.Helper()
	evs, err := db.ReadAll(context.Background(), after, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Position
	}
	return out
}

// tailResult is what tailConcurrentAppends observed.
type tailResult struct {
	stored      []int64          // every stored position, ascending
	seen        []int64          // what the tailing reader read, in order
	applied     map[string][]int // positions each projection applied, as indexes into stored
	liveReads   int              // reads that returned events while appends were running
	appendCalls int
	elapsed     time.Duration
}

// tailConcurrentAppends runs appenders×perAppender appends, each sleeping a
// random 0-2ms inside its transaction after its events took their positions,
// while a reader tails the store through another DB (another process) and,
// when project is set, a projection.Runner projects both projections.
func tailConcurrentAppends(t *testing.T, appenders, perAppender int, lock, project bool) tailResult {
	t.Helper()
	// Enough connections that every appender's transaction is open at once:
	// they queue in PostgreSQL, not in the pool.
	dsn := pgtest.DSN(t) + fmt.Sprintf("&pool_max_conns=%d", appenders+4)
	w, r := open(t, dsn), open(t, dsn)
	if !lock {
		postgres.DisableAppendLock(w)
	}
	postgres.SetBeforeCommit(w, func(context.Context, []orders.Event) {
		time.Sleep(time.Duration(rand.Int64N(int64(2 * time.Millisecond))))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var views *recordingViews
	var runner *projection.Runner
	if project {
		views = &recordingViews{Views: r, applied: map[string][]int64{}}
		cfg := projection.DefaultConfig()
		cfg.PollInterval = 20 * time.Millisecond
		cfg.BatchSize = 50
		var err error
		runner, err = projection.New(cfg, r, views, noop.NewTracerProvider(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := runner.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := runner.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}

	var (
		appending atomic.Bool
		finalHead atomic.Int64
		res       tailResult
	)
	appending.Store(true)
	finalHead.Store(-1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		wake, stop := r.Subscribe()
		defer stop()
		pos := int64(0)
		for ctx.Err() == nil {
			live := appending.Load()
			evs, err := r.ReadAll(ctx, pos, 64)
			if err != nil {
				t.Errorf("ReadAll(%d) error = %v", pos, err)
				return
			}
			for _, e := range evs {
				res.seen = append(res.seen, e.Position)
				pos = e.Position
			}
			if len(evs) > 0 {
				if live {
					res.liveReads++
				}
				continue
			}
			if h := finalHead.Load(); h >= 0 && pos >= h {
				return
			}
			select {
			case <-wake:
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for j := range appenders {
		wg.Go(func() {
			for i := range perAppender {
				id := fmt.Sprintf("o-%02d-%04d", j, i/2)
				e := created(t, id)
				if i%2 == 1 {
					e = event(t, id, 2, orders.OrderPaid{Method: "card", Amount: 500})
				}
				if _, err := w.Append(ctx, id, e.Version-1, []orders.Event{e}); err != nil {
					t.Errorf("Append(%s v%d) error = %v", id, e.Version, err)
					return
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.appendCalls = appenders * perAppender
	appending.Store(false)
	head, err := w.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	finalHead.Store(head)
	<-readerDone

	rows, err := w.Pool().Query(ctx, `SELECT position FROM events ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int64
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		res.stored = append(res.stored, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	if project {
		waitCheckpoints(t, r, head)
		res.applied = map[string][]int{}
		views.mu.Lock()
		for name, ps := range views.applied {
			for _, p := range ps {
				i, ok := slices.BinarySearch(res.stored, p)
				if !ok {
					i = -1
				}
				res.applied[name] = append(res.applied[name], i)
			}
		}
		views.mu.Unlock()
	}
	return res
}

// waitCheckpoints waits until every projection's checkpoint is at head.
func waitCheckpoints(t *testing.T, v orders.Views, head int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, name := range projection.Names {
		for {
			cp, err := v.Checkpoint(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			if cp >= head {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint of %s is %d after 1m, want %d", name, cp, head)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// recordingViews records the positions that ApplyBatch applied, per
// projection.
type recordingViews struct {
	orders.Views
	mu      sync.Mutex
	applied map[string][]int64
}

func (v *recordingViews) ApplyBatch(ctx context.Context, projection string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	n, err := v.Views.ApplyBatch(ctx, projection, events, fn)
	if n > 0 && err == nil {
		v.mu.Lock()
		for _, e := range events[len(events)-n:] {
			v.applied[projection] = append(v.applied[projection], e.Position)
		}
		v.mu.Unlock()
	}
	return n, err
}

func TestConcurrentAppendersProjectedExactlyOnce(t *testing.T) {
	t.Parallel()
	const appenders, perAppender = 16, 200
	res := tailConcurrentAppends(t, appenders, perAppender, true, true)
	t.Logf("%d appends by %d goroutines in %v (%.0f/s); the tailing reader read %d events in %d reads made while appends ran",
		res.appendCalls, appenders, res.elapsed.Round(time.Millisecond), float64(res.appendCalls)/res.elapsed.Seconds(), len(res.seen), res.liveReads)
	if len(res.stored) != res.appendCalls {
		t.Fatalf("stored %d events, want %d", len(res.stored), res.appendCalls)
	}
	if res.liveReads < 10 {
		t.Errorf("the reader read events only %d times while appends ran: it did not tail them", res.liveReads)
	}
	if !slices.Equal(res.seen, res.stored) {
		missed, twice := diffPositions(res.seen, res.stored)
		t.Errorf("tailing reader: %d events missed (e.g. %v), %d read twice (e.g. %v)", len(missed), head(missed), len(twice), head(twice))
	}
	want := make([]int, len(res.stored))
	for i := range want {
		want[i] = i
	}
	for _, name := range projection.Names {
		if !slices.Equal(res.applied[name], want) {
			t.Errorf("projection %s applied %d events, want each of the %d stored events once, in order", name, len(res.applied[name]), len(want))
		}
	}
}

// TestConcurrentAppendersWithoutLockSkip shows that the concurrent-appenders
// test can fail: without the append lock the same workload makes the
// tailing reader miss events. Skips are a race, so it tries a few times.
func TestConcurrentAppendersWithoutLockSkip(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 3; attempt++ {
		res := tailConcurrentAppends(t, 16, 50, false, false)
		missed, _ := diffPositions(res.seen, res.stored)
		t.Logf("attempt %d without lock: %d of %d events missed by the tailing reader", attempt, len(missed), len(res.stored))
		if len(missed) > 0 {
			return
		}
	}
	t.Error("without the append lock the tailing reader never missed an event: the concurrent-appenders test proves nothing")
}

// diffPositions returns the positions of stored missing from seen, and those
// seen more than once.
func diffPositions(seen, stored []int64) (missed, twice []int64) {
	count := map[int64]int{}
	for _, p := range seen {
		count[p]++
	}
	for _, p := range stored {
		if count[p] == 0 {
			missed = append(missed, p)
		}
	}
	for p, n := range count {
		if n > 1 {
			twice = append(twice, p)
		}
	}
	slices.Sort(twice)
	return missed, twice
}

func head(ps []int64) []int64 { return ps[:min(len(ps), 5)] }

var errCrashed = errors.New("process crashed")

// crashingViews kills the connections of its process in the middle of a
// batch: inside an ApplyBatch transaction, right after the crashAt-th event
// that either projector applied (after its read-model writes, before the
// rest of the batch and the checkpoint write). It fails every ApplyBatch
// after it, like a dead process.
type crashingViews struct {
	recordingViews
	crashAt int
	kill    func()
	events  int
	crashed chan crash // receives the interrupted batch
	dead    atomic.Bool
}

// crash describes the batch that crashingViews interrupted.
type crash struct {
	projection string
	batch      []int64 // positions
	at         int64   // position of the last event applied before the crash
}

func (v *crashingViews) ApplyBatch(ctx context.Context, projection string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	if v.dead.Load() {
		return 0, errCrashed
	}
	var crashed bool
	c := crash{projection: projection}
	n, err := v.recordingViews.ApplyBatch(ctx, projection, events, func(tx orders.ViewTx, e orders.Event) error {
		if fn != nil {
			if err := fn(tx, e); err != nil {
				return err
			}
		}
		v.mu.Lock()
		v.events++
		crashed = v.events == v.crashAt
		v.mu.Unlock()
		if crashed {
			c.at = e.Position
			v.dead.Store(true)
			v.kill()
		}
		return nil
	})
	if !crashed {
		return n, err
	}
	for _, e := range events {
		c.batch = append(c.batch, e.Position)
	}
	v.crashed <- c
	if err == nil {
		return n, fmt.Errorf("batch survived the crash (applied %d)", n)
	}
	return 0, errCrashed
}

func TestProjectorCrashMidBatch(t *testing.T) {
	t.Parallel()
	base := pgtest.DSN(t)
	app := "lagscope-crash-" + orders.NewID()[:8]
	w := open(t, base)
	ctx := context.Background()

	// 100 orders: all created, every third paid, every fifth cancelled
	// (refunded when paid), paid ones that are not cancelled shipped when
	// even.
	type state struct {
		status  orders.Status
		version int64
	}
	want := map[string]state{}
	var sum orders.Summary
	for i := range 100 {
		id := fmt.Sprintf("o-%03d", i)
		evs := []orders.Event{created(t, id)}
		st := state{status: orders.StatusCreated, version: 1}
		sum.Orders++
		paid := i%3 == 0
		if paid {
			evs = append(evs, event(t, id, 2, orders.OrderPaid{Method: "card", Amount: 500}))
			st = state{status: orders.StatusPaid, version: 2}
		}
		switch {
		case i%5 == 0:
			refund := int64(0)
			if paid {
				refund = 500
			}
			evs = append(evs, event(t, id, st.version+1, orders.OrderCancelled{Reason: "r", Refunded: refund}))
			st = state{status: orders.StatusCancelled, version: st.version + 1}
			sum.Cancelled++
		case paid && i%2 == 0:
			evs = append(evs, event(t, id, 3, orders.OrderShipped{TrackingNumber: "T"}))
			st = state{status: orders.StatusShipped, version: 3}
			sum.Shipped++
			sum.Revenue += 500
		case paid:
			sum.Paid++
			sum.Revenue += 500
		default:
			sum.Created++
		}
		want[id] = st
		for _, e := range evs { // one append per event interleaves the orders
			if _, err := w.Append(ctx, id, e.Version-1, []orders.Event{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
	headPos, err := w.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Process 1 runs both projectors and dies inside a batch transaction,
	// after the 137th event they applied: in the middle of a batch of 50.
	crashDB := open(t, base+"&application_name="+app)
	cv := &crashingViews{
		recordingViews: recordingViews{Views: crashDB, applied: map[string][]int64{}},
		crashAt:        137,
		crashed:        make(chan crash, 1),
		kill: func() {
			_, err := w.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app)
			if err != nil {
				t.Errorf("terminate the crashing process's connections: %v", err)
			}
		},
	}
	cfg := projection.DefaultConfig()
	cfg.BatchSize = 50
	cfg.PollInterval = 20 * time.Millisecond
	r1, err := projection.New(cfg, crashDB, cv, noop.NewTracerProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var crashed crash
	select {
	case crashed = <-cv.crashed:
	case <-time.After(time.Minute):
		t.Fatal("no crash within 1m")
	}
	if err := r1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	before := map[string]int64{}
	for _, name := range projection.Names {
		before[name], _ = w.Checkpoint(ctx, name)
	}
	t.Logf("%s crashed after applying position %d of its batch %d..%d (head %d); checkpoints after the crash %v",
		crashed.projection, crashed.at, crashed.batch[0], crashed.batch[len(crashed.batch)-1], headPos, before)
	if got, want := before[crashed.projection], crashed.batch[0]-1; got != want {
		t.Errorf("%s checkpoint after the crash = %d, want %d: the interrupted batch rolls back whole", crashed.projection, got, want)
	}

	// Process 2 restarts from the checkpoints and catches up.
	rv := &recordingViews{Views: w, applied: map[string][]int64{}}
	r2, err := projection.New(cfg, w, rv, noop.NewTracerProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitCheckpoints(t, w, headPos)
	if err := r2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	for _, name := range projection.Names {
		all := append(slices.Clone(cv.applied[name]), rv.applied[name]...)
		wantAll := make([]int64, headPos)
		for i := range wantAll {
			wantAll[i] = int64(i + 1)
		}
		if !slices.Equal(all, wantAll) {
			t.Errorf("%s applied %d events before and %d after the crash, want 1..%d once each in order", name, len(cv.applied[name]), len(rv.applied[name]), headPos)
		}
	}
	gotSum, err := w.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gotSum != sum {
		t.Errorf("Summary() = %+v, want %+v", gotSum, sum)
	}
	for id, st := range want {
		v, err := w.Order(ctx, id)
		if err != nil {
			t.Fatalf("Order(%s) error = %v", id, err)
		}
		if v.Status != st.status || v.Version != st.version {
			t.Errorf("Order(%s) = %s v%d, want %s v%d", id, v.Status, v.Version, st.status, st.version)
		}
	}
}
