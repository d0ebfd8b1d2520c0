package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	okafka "github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newCluster starts an in-process Kafka-protocol broker on an ephemeral
// loopback port and returns a config pointing at it.
func newCluster(t *testing.T) okafka.Config {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := okafka.DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.PollInterval = 10 * time.Millisecond
	cfg.MaxWait = 50 * time.Millisecond
	return cfg
}

func openDB(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// appendOrders appends, for each of n orders, a created and a paid event
// (2n events), interleaving the orders.
func appendOrders(t *testing.T, store orders.Store, from, n int) {
	t.Helper()
	ctx := context.Background()
	for v := int64(1); v <= 2; v++ {
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("order-%03d", i)
			var d orders.Data = orders.OrderCreated{CustomerID: "c", Items: []orders.Item{{SKU: "a", Price: 100, Quantity: 1}}, Total: 100}
			if v == 2 {
				d = orders.OrderPaid{Method: "card", Amount: 100}
			}
			e, err := orders.NewEvent(id, v, d, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.Append(ctx, id, v-1, []orders.Event{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// readUntil reads the topic from the start until it has seen the event at
// position last, and returns every message's event.
func readUntil(t *testing.T, cfg okafka.Config, last int64) []orders.Event {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []orders.Event
	for len(out) == 0 || out[len(out)-1].Position != last {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read message %d: %v", len(out)+1, err)
		}
		e, err := okafka.Event(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(m.Key); got != e.AggregateID {
			t.Errorf("message key %q, want the aggregate id %q", got, e.AggregateID)
		}
		out = append(out, e)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last state: %s", what, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startRelay(t *testing.T, cfg okafka.Config, store orders.Store, views orders.Views) *okafka.Relay {
	t.Helper()
	r, err := okafka.NewRelay(cfg, store, views, noop.NewTracerProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func shutdown(t *testing.T, s interface{ Shutdown(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// failingCheckpoints is Views whose Apply of the relay's checkpoint fails
// once armed: a relay that crashes after a write and before its
// checkpoint.
type failingCheckpoints struct {
	orders.Views
	fail atomic.Bool
}

var errCrash = errors.New("crash before the checkpoint")

func (v *failingCheckpoints) Apply(ctx context.Context, projection string, position int64, fn func(orders.ViewTx) error) (bool, error) {
	if v.fail.Load() {
		return false, errCrash
	}
	return v.Views.Apply(ctx, projection, position, fn)
}

// TestRelayRestart: a relay that publishes, fails to move its checkpoint
// (a crash after the write), and is replaced by a new one mid-stream loses
// nothing and reorders nothing per aggregate; what it publishes twice is
// exactly what it wrote after its last checkpoint, and a consumer that
// skips what is at or below the last position it applied sees every event
// once, in store order.
func TestRelayRestart(t *testing.T) {
	cfg := newCluster(t)
	db := openDB(t)
	views := &failingCheckpoints{Views: db}
	appendOrders(t, db, 0, 20) // positions 1..40
	r1 := startRelay(t, cfg, db, views)
	waitFor(t, "the first relay to checkpoint 40", func() (bool, string) {
		s := r1.Stats()
		return s.Checkpoint == 40, fmt.Sprintf("%+v", s)
	})
	views.fail.Store(true)
	appendOrders(t, db, 20, 10) // 41..60: published, never checkpointed
	waitFor(t, "the first relay to publish 60", func() (bool, string) {
		s := r1.Stats()
		return s.Published >= 60 && s.Errors > 0, fmt.Sprintf("%+v", s)
	})
	shutdown(t, r1)
	published := r1.Stats().Published
	if cp, _ := db.Checkpoint(context.Background(), okafka.CheckpointName(cfg.Topic)); cp != 40 {
		t.Fatalf("relay checkpoint in the store = %d, want 40", cp)
	}
	views.fail.Store(false)
	appendOrders(t, db, 30, 10) // 61..80
	r2 := startRelay(t, cfg, db, views)
	defer shutdown(t, r2)
	waitFor(t, "the second relay to checkpoint 80", func() (bool, string) {
		s := r2.Stats()
		return s.Checkpoint == 80, fmt.Sprintf("%+v", s)
	})
	got := readUntil(t, cfg, 80)
	var deduped []int64
	hi := int64(0)
	versions := map[string]int64{}
	for _, e := range got {
		if e.Position <= hi {
			if e.Position <= 40 {
				t.Errorf("position %d published again, but it was checkpointed", e.Position)
			}
			continue
		}
		hi = e.Position
		deduped = append(deduped, e.Position)
		if want := versions[e.AggregateID] + 1; e.Version != want {
			t.Errorf("%s: version %d after %d", e.AggregateID, e.Version, want-1)
		}
		versions[e.AggregateID] = e.Version
	}
	want := make([]int64, 80)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if diff := cmp.Diff(deduped, want); diff != "" {
		t.Errorf("positions in the topic, re-publications skipped (-got +want):\n%s", diff)
	}
	if len(got) == 80 {
		t.Errorf("nothing published twice: the crash after the write was not exercised")
	}
	t.Logf("%d messages for 80 events (%d acknowledged to the first relay)", len(got), published)
}

// gatedViews holds the read-model transaction of the batch that holds
// position gate: it signals entered and waits for release before the
// transaction, then commits it, signals committed, and "crashes" before
// the projector can commit its offsets: it returns only when the runner's
// context ends.
type gatedViews struct {
	orders.Views
	gate                       int64
	entered, release, commited chan struct{}
	from                       atomic.Int64 // first position of the gated batch
}

func (v *gatedViews) ApplyBatch(ctx context.Context, name string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	if len(events) == 0 || events[len(events)-1].Position < v.gate || events[0].Position > v.gate {
		return v.Views.ApplyBatch(ctx, name, events, fn)
	}
	v.from.Store(events[0].Position)
	close(v.entered)
	<-v.release
	if _, err := v.Views.ApplyBatch(ctx, name, events, fn); err != nil {
		return 0, err
	}
	close(v.commited)
	<-ctx.Done()
	return 0, ctx.Err()
}

func startProjector(t *testing.T, cfg okafka.Config, db *sqlite.DB, views orders.Views) (*projection.Runner, *okafka.Feed) {
	t.Helper()
	feed, err := okafka.NewFeed(cfg, projection.SalesSummary, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc := projection.DefaultConfig()
	pc.Projections = []string{projection.SalesSummary}
	pc.Feeds = map[string]projection.Feed{projection.SalesSummary: feed}
	pc.BatchSize, pc.PollInterval = 10, 10*time.Millisecond
	r, err := projection.New(pc, db, views, noop.NewTracerProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, feed
}

// committedOffset reads the group's committed offset of the topic's
// partition with kafka-go's OffsetFetch (-1: never committed).
func committedOffset(t *testing.T, cfg okafka.Config, group string) int64 {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}
	resp, err := c.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{cfg.Topic: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	if errors.Is(resp.Error, kafka.GroupIdNotFound) {
		return -1 // the group has not joined yet
	}
	ps := resp.Topics[cfg.Topic]
	if len(ps) != 1 || ps[0].Error != nil {
		t.Fatalf("offset fetch of %s: %+v", group, resp)
	}
	return ps[0].CommittedOffset
}

// TestProjectorRedelivery: a projector commits its consumer group's
// offsets only after the read-model transaction of a batch; killed after
// the transaction and before the offset commit, its replacement gets the
// batch again and the checkpoint skips it: the read model counts nothing
// twice.
func TestProjectorRedelivery(t *testing.T) {
	cfg := newCluster(t)
	db := openDB(t)
	appendOrders(t, db, 0, 20) // 40 events: 20 orders created, then paid
	relay := startRelay(t, cfg, db, db)
	defer shutdown(t, relay)
	waitFor(t, "the relay to publish 40", func() (bool, string) {
		s := relay.Stats()
		return s.Checkpoint == 40, fmt.Sprintf("%+v", s)
	})

	gated := &gatedViews{Views: db, gate: 40, entered: make(chan struct{}), release: make(chan struct{}), commited: make(chan struct{})}
	r1, f1 := startProjector(t, cfg, db, gated)
	select {
	case <-gated.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the last batch never reached its transaction")
	}
	from := gated.from.Load()
	t.Logf("the killed batch starts at position %d", from)
	// Inside the transaction: the group has committed the batches before,
	// not this one, though the reader has fetched it.
	if got, want := committedOffset(t, cfg, projection.SalesSummary), from-1; got != want {
		t.Errorf("committed offset during the last batch's transaction = %d, want %d (positions up to %d applied)", got, want, from-1)
	}
	close(gated.release)
	<-gated.commited
	if got, want := committedOffset(t, cfg, projection.SalesSummary), from-1; got != want {
		t.Errorf("committed offset after the transaction, before the (killed) commit = %d, want %d", got, want)
	}
	shutdown(t, r1)
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	if cp, _ := db.Checkpoint(context.Background(), projection.SalesSummary); cp != 40 {
		t.Fatalf("checkpoint after the killed projector = %d, want 40", cp)
	}

	r2, f2 := startProjector(t, cfg, db, db)
	defer func() {
		shutdown(t, r2)
		if err := f2.Close(); err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the replacement to commit every offset", func() (bool, string) {
		got := committedOffset(t, cfg, projection.SalesSummary)
		return got == 40, fmt.Sprintf("committed offset %d, redelivered %d", got, f2.Redelivered())
	})
	if got, want := f2.Redelivered(), 40-from+1; got != want {
		t.Errorf("redelivered = %d, want the killed batch's %d", got, want)
	}
	sum, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sum, orders.Summary{Orders: 20, Paid: 20, Revenue: 2000}); diff != "" {
		t.Errorf("sales summary after redelivery (-got +want):\n%s", diff)
	}
	if st := r2.Stats()[0]; st.Projected != 0 || st.Redelivered != f2.Redelivered() {
		t.Errorf("the replacement's stats = %+v, want 0 projected (all redelivered) and %d redelivered", st, f2.Redelivered())
	}
}

// TestFeedSkipsUndecodable: a message that holds no event (another
// producer's, or garbage) is counted and committed past, never retried
// forever; the events around it are applied.
func TestFeedSkipsUndecodable(t *testing.T) {
	cfg := newCluster(t)
	db := openDB(t)
	if err := okafka.EnsureTopic(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.Topic, Transport: tr, BatchTimeout: time.Millisecond}
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("x"), Value: []byte("not an event")}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	appendOrders(t, db, 0, 5) // 10 events, offsets 1..10
	relay := startRelay(t, cfg, db, db)
	defer shutdown(t, relay)
	r, f := startProjector(t, cfg, db, db)
	defer func() {
		shutdown(t, r)
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "every offset committed", func() (bool, string) {
		got := committedOffset(t, cfg, projection.SalesSummary)
		return got == 11, fmt.Sprintf("committed offset %d, undecodable %d", got, f.Undecodable())
	})
	if got := f.Undecodable(); got != 1 {
		t.Errorf("undecodable = %d, want 1", got)
	}
	sum, err := db.Summary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sum, orders.Summary{Orders: 5, Paid: 5, Revenue: 500}); diff != "" {
		t.Errorf("sales summary (-got +want):\n%s", diff)
	}
}
