package orders

import (
	"context"
	"time"
)

// Store is an append-only event store with optimistic concurrency and a
// global order. Implementations are safe for concurrent use by several
// goroutines (and, where documented, several processes), and pass the
// contract suite in orders/storetest.
type Store interface {
	// Append stores events at the end of the aggregate's stream if its current
	// version is expectedVersion (0 for a new aggregate). events must belong to
	// aggregateID and carry versions expectedVersion+1, +2, ... in order.
	// Either all events are stored or none. It returns the stored events with
	// Position set, or ErrVersionConflict when the stream is at another version
	// (including when a concurrent Append won the same version).
	Append(ctx context.Context, aggregateID string, expectedVersion int64, events []Event) ([]Event, error)
	// Load returns the aggregate's events in version order, or ErrNotFound.
	Load(ctx context.Context, aggregateID string) ([]Event, error)
	// ReadAll returns up to limit events with Position > after, in position
	// order. An event is never visible before every event with a lower
	// position is, so a reader that resumes after the last position it saw
	// misses none.
	ReadAll(ctx context.Context, after int64, limit int) ([]Event, error)
	// Head returns the highest stored position, 0 for an empty store.
	Head(ctx context.Context) (int64, error)
	// Subscribe returns a channel that receives a value (coalesced, capacity
	// one) after appends made through this Store value, and a function that
	// stops the subscription. Appends by other processes are not signalled:
	// readers also poll.
	Subscribe() (<-chan struct{}, func())
}

// OrderView is the orders_view read model of one order.
type OrderView struct {
	ID             string    `json:"id"`
	CustomerID     string    `json:"customer_id"`
	Status         Status    `json:"status"`
	Items          []Item    `json:"items"`
	Total          int64     `json:"total"`
	PaymentMethod  string    `json:"payment_method,omitempty"`
	TrackingNumber string    `json:"tracking_number,omitempty"`
	CancelReason   string    `json:"cancel_reason,omitempty"`
	Version        int64     `json:"version"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Summary is the sales_summary read model: counts of orders by current status
// and revenue (paid minus refunded, in minor units). Used as a delta it holds
// the amounts to add.
type Summary struct {
	Orders    int64 `json:"orders"`
	Created   int64 `json:"created"`
	Paid      int64 `json:"paid"`
	Shipped   int64 `json:"shipped"`
	Cancelled int64 `json:"cancelled"`
	Revenue   int64 `json:"revenue"`
}

// Views stores the read models and the projectors' checkpoints. Implementations
// are safe for concurrent use.
type Views interface {
	// Checkpoint returns the global position up to which the named projection
	// has handled events, 0 if it never ran.
	Checkpoint(ctx context.Context, projection string) (int64, error)
	// ApplyBatch applies a batch of events to the named projection's read
	// model and moves its checkpoint to the last event's position, in one
	// transaction that commits both or neither. events must be in strictly
	// ascending position order (as ReadAll returns them); an empty batch does
	// nothing. Events at or before the checkpoint are skipped, which makes
	// projectors idempotent: fn is called, in order, only for the events past
	// it, which are always the last applied of the batch, and ApplyBatch
	// reports that number (0 when the checkpoint was already at or past the
	// last event, and then nothing is written). fn may be nil to advance the
	// checkpoint only; an fn that writes nothing for an event (a dropped one)
	// still moves the checkpoint past it. If fn fails, or the transaction
	// does, ApplyBatch returns the error and the read model and checkpoint are
	// left as they were. ApplyBatch returns after the commit.
	ApplyBatch(ctx context.Context, projection string, events []Event, fn func(tx ViewTx, e Event) error) (applied int, err error)
	// Apply is ApplyBatch of a single position with fn called without the
	// event: it runs fn in one transaction that also moves the projection's
	// checkpoint to position, unless the checkpoint is already at or past
	// position (then it calls nothing and returns false). fn may be nil.
	// Apply returns after the commit.
	Apply(ctx context.Context, projection string, position int64, fn func(ViewTx) error) (applied bool, err error)
	// Order returns the view of one order, or ErrNotFound.
	Order(ctx context.Context, id string) (OrderView, error)
	// OrdersByCustomer returns a customer's orders ordered by id, at most limit.
	OrdersByCustomer(ctx context.Context, customerID string, limit int) ([]OrderView, error)
	// Summary returns the sales summary.
	Summary(ctx context.Context) (Summary, error)
}

// ViewTx is the read-model side of one Views.ApplyBatch (or Apply)
// transaction. It is valid only inside the fn given to that call, and sees
// the writes made earlier in the same transaction (by earlier events of the
// batch).
type ViewTx interface {
	// Order returns the stored view of an order and whether it exists.
	Order(id string) (OrderView, bool, error)
	// PutOrder inserts or replaces an order view.
	PutOrder(v OrderView) error
	// AddSummary adds delta to the sales summary.
	AddSummary(delta Summary) error
}
