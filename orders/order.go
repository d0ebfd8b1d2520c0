package orders

import (
	"fmt"
	"regexp"
	"unicode/utf8"
)

// Status is the state of an order in its lifecycle.
type Status string

// Order statuses. An order starts created, may be paid, then shipped; it may
// be cancelled before it ships.
const (
	StatusCreated   Status = "created"
	StatusPaid      Status = "paid"
	StatusShipped   Status = "shipped"
	StatusCancelled Status = "cancelled"
)

// Limits on command input.
const (
	MaxItems    = 100
	MaxQuantity = 10_000
	// MaxPrice bounds a unit price (minor units) so that a total never
	// overflows int64: MaxItems × MaxQuantity × MaxPrice < 2^63.
	MaxPrice      = 1_000_000_000
	maxSKU        = 64
	maxReason     = 256
	maxTrackingNo = 64
)

// PaymentMethods are the accepted values of PayOrder.Method.
var PaymentMethods = []string{"card", "paypal", "bank_transfer", "invoice"}

var (
	customerIDRE = regexp.MustCompile(`^cust-[0-9]{1,18}$`)
	trackingRE   = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// Commands, named as reported in the cqrs.command.name span attribute.
type (
	// CreateOrder creates an order for a customer.
	CreateOrder struct {
		CustomerID string
		Items      []Item
	}
	// PayOrder pays an order's total.
	PayOrder struct{ Method string }
	// ShipOrder ships a paid order.
	ShipOrder struct{ TrackingNumber string }
	// CancelOrder cancels an order that has not shipped.
	CancelOrder struct{ Reason string }
)

// Order is the order aggregate. Its fields are unexported: an Order is built
// by NewOrder or Rebuild and changes only by applying events. An Order is not
// safe for concurrent use.
type Order struct {
	id         string
	customerID string
	items      []Item
	total      int64
	status     Status
	version    int64
}

// NewOrder returns a validated order as it stands once created (version 1),
// or an *InvalidError naming the bad field.
func NewOrder(id, customerID string, items []Item) (*Order, error) {
	if id == "" || len(id) > 64 {
		return nil, invalid("id", ErrInvalidID, "must be 1 to 64 characters")
	}
	if !customerIDRE.MatchString(customerID) {
		return nil, invalid("customer_id", ErrInvalidCustomerID, `must be "cust-" followed by digits`)
	}
	if len(items) == 0 {
		return nil, invalid("items", ErrInvalidItems, "at least one item is required")
	}
	if len(items) > MaxItems {
		return nil, invalid("items", ErrInvalidItems, fmt.Sprintf("at most %d items", MaxItems))
	}
	var total int64
	for i, it := range items {
		switch {
		case it.SKU == "" || len(it.SKU) > maxSKU || !utf8.ValidString(it.SKU):
			return nil, invalid(fmt.Sprintf("items[%d].sku", i), ErrInvalidSKU, "must be 1 to 64 characters")
		case it.Price <= 0 || it.Price > MaxPrice:
			return nil, invalid(fmt.Sprintf("items[%d].price", i), ErrInvalidPrice, "must be positive minor units")
		case it.Quantity <= 0 || it.Quantity > MaxQuantity:
			return nil, invalid(fmt.Sprintf("items[%d].quantity", i), ErrInvalidQuantity, "must be positive")
		}
		total += it.Price * it.Quantity
	}
	return &Order{
		id:         id,
		customerID: customerID,
		items:      append([]Item(nil), items...),
		total:      total,
		status:     StatusCreated,
		version:    1,
	}, nil
}

// ID returns the order id.
func (o *Order) ID() string { return o.id }

// CustomerID returns the id of the customer who placed the order.
func (o *Order) CustomerID() string { return o.customerID }

// Items returns a copy of the order lines.
func (o *Order) Items() []Item { return append([]Item(nil), o.items...) }

// Total returns the order total in minor units.
func (o *Order) Total() int64 { return o.total }

// Status returns the order's current status.
func (o *Order) Status() Status { return o.status }

// Version returns the version of the last event applied (0 for none).
func (o *Order) Version() int64 { return o.version }

// Create decides a CreateOrder command for a new order id: it returns the
// OrderCreated event, or an *InvalidError.
func Create(id string, c CreateOrder) (OrderCreated, error) {
	o, err := NewOrder(id, c.CustomerID, c.Items)
	if err != nil {
		return OrderCreated{}, err
	}
	return OrderCreated{CustomerID: o.customerID, Items: o.Items(), Total: o.total}, nil
}

// Pay decides a PayOrder command. It returns ErrOrderCancelled or
// ErrAlreadyPaid when the order cannot be paid, or an *InvalidError.
func (o *Order) Pay(c PayOrder) (OrderPaid, error) {
	if !validMethod(c.Method) {
		return OrderPaid{}, invalid("method", ErrInvalidMethod, "must be one of card, paypal, bank_transfer, invoice")
	}
	switch o.status {
	case StatusCancelled:
		return OrderPaid{}, ErrOrderCancelled
	case StatusPaid, StatusShipped:
		return OrderPaid{}, ErrAlreadyPaid
	}
	return OrderPaid{Method: c.Method, Amount: o.total}, nil
}

// Ship decides a ShipOrder command. It returns ErrOrderCancelled, ErrNotPaid
// or ErrAlreadyShipped when the order cannot ship, or an *InvalidError.
func (o *Order) Ship(c ShipOrder) (OrderShipped, error) {
	if !trackingRE.MatchString(c.TrackingNumber) {
		return OrderShipped{}, invalid("tracking_number", ErrInvalidTrackingNumber, "must be 1 to 64 letters, digits or dashes")
	}
	switch o.status {
	case StatusCancelled:
		return OrderShipped{}, ErrOrderCancelled
	case StatusCreated:
		return OrderShipped{}, ErrNotPaid
	case StatusShipped:
		return OrderShipped{}, ErrAlreadyShipped
	}
	return OrderShipped{TrackingNumber: c.TrackingNumber}, nil
}

// Cancel decides a CancelOrder command. It returns ErrOrderCancelled or
// ErrAlreadyShipped when the order cannot be cancelled, or an *InvalidError.
// A paid order is refunded in full.
func (o *Order) Cancel(c CancelOrder) (OrderCancelled, error) {
	if c.Reason == "" || len(c.Reason) > maxReason || !utf8.ValidString(c.Reason) {
		return OrderCancelled{}, invalid("reason", ErrInvalidReason, "must be 1 to 256 characters")
	}
	switch o.status {
	case StatusCancelled:
		return OrderCancelled{}, ErrOrderCancelled
	case StatusShipped:
		return OrderCancelled{}, ErrAlreadyShipped
	}
	var refund int64
	if o.status == StatusPaid {
		refund = o.total
	}
	return OrderCancelled{Reason: c.Reason, Refunded: refund}, nil
}

func validMethod(m string) bool {
	for _, v := range PaymentMethods {
		if m == v {
			return true
		}
	}
	return false
}

// Rebuild returns the order that results from applying events in order. It
// returns ErrNotFound for no events, and an error for a stream that is out of
// order, belongs to another aggregate or does not start with OrderCreated.
func Rebuild(events []Event) (*Order, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	var o *Order
	for _, e := range events {
		d, err := e.Decode()
		if err != nil {
			return nil, err
		}
		if o == nil {
			c, ok := d.(OrderCreated)
			if !ok || e.Version != 1 {
				return nil, fmt.Errorf("rebuild order %s: stream starts with %s version %d", e.AggregateID, e.Type, e.Version)
			}
			if o, err = NewOrder(e.AggregateID, c.CustomerID, c.Items); err != nil {
				return nil, fmt.Errorf("rebuild order %s: %w", e.AggregateID, err)
			}
			continue
		}
		if e.AggregateID != o.id || e.Version != o.version+1 {
			return nil, fmt.Errorf("rebuild order %s: event %s is %s version %d after version %d", o.id, e.ID, e.AggregateID, e.Version, o.version)
		}
		if err := o.apply(d); err != nil {
			return nil, fmt.Errorf("rebuild order %s: %w", o.id, err)
		}
	}
	return o, nil
}

// apply changes o by one event that follows its current version.
func (o *Order) apply(d Data) error {
	switch d.(type) {
	case OrderPaid:
		o.status = StatusPaid
	case OrderShipped:
		o.status = StatusShipped
	case OrderCancelled:
		o.status = StatusCancelled
	default:
		return fmt.Errorf("cannot apply %s to an existing order", d.EventType())
	}
	o.version++
	return nil
}
