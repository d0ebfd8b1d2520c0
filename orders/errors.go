package orders

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNotFound means the order has no events (it was never created).
	ErrNotFound = errors.New("order not found")
	// ErrVersionConflict means another writer appended to the aggregate since
	// it was loaded: the expected version is no longer the current one.
	ErrVersionConflict = errors.New("version conflict")
	// ErrOrderCancelled means the command is not allowed on a cancelled order.
	ErrOrderCancelled = errors.New("order is cancelled")
	// ErrAlreadyPaid means the order was already paid.
	ErrAlreadyPaid = errors.New("order is already paid")
	// ErrNotPaid means the order must be paid before it can ship.
	ErrNotPaid = errors.New("order is not paid")
	// ErrAlreadyShipped means the order has shipped: it cannot ship again nor
	// be cancelled.
	ErrAlreadyShipped = errors.New("order is already shipped")
	// ErrAlreadyExists means an order with that id already exists.
	ErrAlreadyExists = errors.New("order already exists")
)

// Validation sentinels; each is wrapped in an *InvalidError naming the field.
var (
	ErrInvalidID             = errors.New("invalid order id")
	ErrInvalidCustomerID     = errors.New("invalid customer id")
	ErrInvalidItems          = errors.New("invalid items")
	ErrInvalidSKU            = errors.New("invalid sku")
	ErrInvalidPrice          = errors.New("invalid price")
	ErrInvalidQuantity       = errors.New("invalid quantity")
	ErrInvalidMethod         = errors.New("invalid payment method")
	ErrInvalidTrackingNumber = errors.New("invalid tracking number")
	ErrInvalidReason         = errors.New("invalid cancel reason")
)

// InvalidError reports a command field that failed validation. Err is one of
// the ErrInvalid... sentinels, so errors.Is(err, ErrInvalidPrice) works on it;
// Field names the JSON field, e.g. "items[2].price".
type InvalidError struct {
	Field  string
	Err    error
	Reason string
}

func (e *InvalidError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("%s: %v", e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Field, e.Err, e.Reason)
}

// Unwrap returns the ErrInvalid... sentinel.
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(field string, err error, reason string) error {
	return &InvalidError{Field: field, Err: err, Reason: reason}
}

// IsInvariant reports whether err is a business-rule violation (a command that
// is well formed but not allowed in the order's current state).
func IsInvariant(err error) bool {
	return errors.Is(err, ErrOrderCancelled) || errors.Is(err, ErrAlreadyPaid) ||
		errors.Is(err, ErrNotPaid) || errors.Is(err, ErrAlreadyShipped) ||
		errors.Is(err, ErrAlreadyExists)
}
