package projection

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/lagscope/lagscope/orders"
)

// Feed is where a projector reads its events from. By default a projector
// reads the store (storeFeed); orders/kafka's Feed reads a topic with a
// consumer group instead. A Feed is used by one projector goroutine only.
type Feed interface {
	// Next returns up to limit events with a position above after, in the
	// order they are to be applied (ascending positions), waiting until
	// there is at least one or ctx ends. Events returned and not yet
	// committed (see Committed) are returned again by the next call with
	// the same after: a batch that failed is retried, not lost.
	Next(ctx context.Context, after int64, limit int) ([]orders.Event, error)
	// Committed tells the feed that the read model's checkpoint reached
	// checkpoint, after the transaction that moved it committed: a feed
	// with offsets of its own (Kafka) commits them then, never before.
	Committed(ctx context.Context, checkpoint int64) error
	// Attributes returns the attributes that e's project span carries
	// besides lagscope's cqrs.* conventions (the messaging.* ones of a
	// Kafka feed); nil for none.
	Attributes(e orders.Event) []attribute.KeyValue
}

// storeFeed reads the store's global order: woken by in-process appends
// (Store.Subscribe) or PostgreSQL notifications, polling otherwise.
type storeFeed struct {
	store orders.Store
	poll  time.Duration
	wake  <-chan struct{}
	stop  func()
	tick  *time.Ticker
}

func newStoreFeed(store orders.Store, poll time.Duration) *storeFeed {
	wake, stop := store.Subscribe()
	return &storeFeed{store: store, poll: poll, wake: wake, stop: stop, tick: time.NewTicker(poll)}
}

func (f *storeFeed) Next(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	for {
		events, err := f.store.ReadAll(ctx, after, limit)
		if err != nil || len(events) > 0 {
			return events, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.wake:
		case <-f.tick.C:
		}
	}
}

func (f *storeFeed) Committed(context.Context, int64) error { return nil }

func (f *storeFeed) Attributes(orders.Event) []attribute.KeyValue { return nil }

func (f *storeFeed) close() {
	f.stop()
	f.tick.Stop()
}
