package orders

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
)

// AggregateType is the aggregate type of every event this package defines.
const AggregateType = "Order"

// Event type names, as stored in Event.Type and reported in spans.
const (
	TypeOrderCreated   = "OrderCreated"
	TypeOrderPaid      = "OrderPaid"
	TypeOrderShipped   = "OrderShipped"
	TypeOrderCancelled = "OrderCancelled"
)

// Metadata keys for the W3C trace context that the command side injects into
// every stored event and projectors extract.
const (
	MetaTraceparent = "traceparent"
	MetaTracestate  = "tracestate"
)

// Event is one stored event: the envelope around a domain event's JSON payload.
// Store implementations set Position; everything else is set by the writer.
type Event struct {
	// ID is a random UUID v4 string, unique across the store.
	ID string
	// AggregateType is always AggregateType ("Order") here.
	AggregateType string
	// AggregateID is the order id.
	AggregateID string
	// Version is the 1-based position of the event in its aggregate's stream.
	Version int64
	// Type is the domain event type name, e.g. "OrderCreated".
	Type string
	// Data is the JSON encoding of the domain event.
	Data json.RawMessage
	// Metadata carries the W3C trace context (traceparent, tracestate).
	Metadata map[string]string
	// RecordedAt is when the writer recorded the event.
	RecordedAt time.Time
	// Position is the event's 1-based global position in the store, assigned
	// by the store on append; positions grow in commit order.
	Position int64
}

// Data is a domain event payload: OrderCreated, OrderPaid, OrderShipped or
// OrderCancelled.
type Data interface {
	// EventType returns the event type name stored in Event.Type.
	EventType() string
}

// Item is one line of an order. Price is in integer minor units (cents).
type Item struct {
	SKU      string `json:"sku"`
	Price    int64  `json:"price"`
	Quantity int64  `json:"quantity"`
}

// OrderCreated records a new order.
type OrderCreated struct {
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
	// Total is the sum of price × quantity over Items, in minor units.
	Total int64 `json:"total"`
}

// OrderPaid records the payment of an order's total.
type OrderPaid struct {
	Method string `json:"method"`
	// Amount is the amount paid, the order total, in minor units.
	Amount int64 `json:"amount"`
}

// OrderShipped records the shipment of a paid order.
type OrderShipped struct {
	TrackingNumber string `json:"tracking_number"`
}

// OrderCancelled records a cancellation.
type OrderCancelled struct {
	Reason string `json:"reason"`
	// Refunded is the amount paid back, in minor units: the total when the
	// order was paid, zero otherwise.
	Refunded int64 `json:"refunded"`
}

// EventType implements Data.
func (OrderCreated) EventType() string { return TypeOrderCreated }

// EventType implements Data.
func (OrderPaid) EventType() string { return TypeOrderPaid }

// EventType implements Data.
func (OrderShipped) EventType() string { return TypeOrderShipped }

// EventType implements Data.
func (OrderCancelled) EventType() string { return TypeOrderCancelled }

// NewEvent wraps a domain event into a stored Event for the order id at the
// given version, with a fresh event id and an empty metadata map. Position is
// left for the store to assign.
func NewEvent(aggregateID string, version int64, d Data, recordedAt time.Time) (Event, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", d.EventType(), err)
	}
	return Event{
		ID:            NewID(),
		AggregateType: AggregateType,
		AggregateID:   aggregateID,
		Version:       version,
		Type:          d.EventType(),
		Data:          b,
		Metadata:      map[string]string{},
		RecordedAt:    recordedAt,
	}, nil
}

// Decode returns the domain event held by e.
func (e Event) Decode() (Data, error) {
	var d Data
	switch e.Type {
	case TypeOrderCreated:
		var v OrderCreated
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, err)
		}
		d = v
	case TypeOrderPaid:
		var v OrderPaid
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, err)
		}
		d = v
	case TypeOrderShipped:
		var v OrderShipped
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, err)
		}
		d = v
	case TypeOrderCancelled:
		var v OrderCancelled
		if err := json.Unmarshal(e.Data, &v); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", e.Type, e.ID, err)
		}
		d = v
	default:
		return nil, fmt.Errorf("decode event %s: unknown type %q", e.ID, e.Type)
	}
	return d, nil
}

// NewID returns a random (version 4) UUID string from crypto/rand.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j] = hex[c>>4]
		s[j+1] = hex[c&0xf]
		j += 2
	}
	return string(s[:])
}
