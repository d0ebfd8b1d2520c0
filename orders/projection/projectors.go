package projection

import (
	"fmt"

	"github.com/lagscope/lagscope/orders"
)

// applyFunc applies one decoded event to a read model inside a transaction.
type applyFunc func(tx orders.ViewTx, e orders.Event, d orders.Data) error

var appliers = map[string]applyFunc{
	OrdersView:   applyOrdersView,
	SalesSummary: applySalesSummary,
}

// applyOrdersView updates the order's view. An event at or below the stored
// version is ignored, so replays are harmless even without the checkpoint.
// After a dropped event the view still moves forward, from what the later
// event says.
func applyOrdersView(tx orders.ViewTx, e orders.Event, d orders.Data) error {
	v, ok, err := tx.Order(e.AggregateID)
	if err != nil {
		return err
	}
	if ok && v.Version >= e.Version {
		return nil
	}
	if !ok {
		v = orders.OrderView{ID: e.AggregateID, CreatedAt: e.RecordedAt}
	}
	switch d := d.(type) {
	case orders.OrderCreated:
		v.CustomerID, v.Items, v.Total, v.Status = d.CustomerID, d.Items, d.Total, orders.StatusCreated
		v.CreatedAt = e.RecordedAt
	case orders.OrderPaid:
		v.Status, v.PaymentMethod = orders.StatusPaid, d.Method
		if v.Total == 0 {
			v.Total = d.Amount
		}
	case orders.OrderShipped:
		v.Status, v.TrackingNumber = orders.StatusShipped, d.TrackingNumber
	case orders.OrderCancelled:
		v.Status, v.CancelReason = orders.StatusCancelled, d.Reason
	default:
		return fmt.Errorf("orders_view: unexpected event %s", e.Type)
	}
	v.Version, v.UpdatedAt = e.Version, e.RecordedAt
	return tx.PutOrder(v)
}

// applySalesSummary moves the counts by status and the revenue. It relies on
// the checkpoint for idempotency.
func applySalesSummary(tx orders.ViewTx, e orders.Event, d orders.Data) error {
	var delta orders.Summary
	switch d := d.(type) {
	case orders.OrderCreated:
		delta = orders.Summary{Orders: 1, Created: 1}
	case orders.OrderPaid:
		delta = orders.Summary{Created: -1, Paid: 1, Revenue: d.Amount}
	case orders.OrderShipped:
		delta = orders.Summary{Paid: -1, Shipped: 1}
	case orders.OrderCancelled:
		delta = orders.Summary{Created: -1, Cancelled: 1}
		if d.Refunded > 0 {
			delta = orders.Summary{Paid: -1, Cancelled: 1, Revenue: -d.Refunded}
		}
	default:
		return fmt.Errorf("sales_summary: unexpected event %s", e.Type)
	}
	return tx.AddSummary(delta)
}
