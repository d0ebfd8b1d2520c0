package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lagscope/lagscope/orders"
)

// Checkpoint implements orders.Views.
func (d *DB) Checkpoint(ctx context.Context, projection string) (int64, error) {
	var pos int64
	err := d.db.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE projection = ?`, projection).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", projection, err)
	}
	return pos, nil
}

// ApplyBatch implements orders.Views: the writes of fn for every event past
// the checkpoint and the checkpoint move commit in one transaction, taken
// with BEGIN IMMEDIATE, so a projector in another process that shares the
// file waits for it and then finds the checkpoint moved.
func (d *DB) ApplyBatch(ctx context.Context, projection string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	last := events[len(events)-1].Position
	if err := checkBatch(events); err != nil {
		return 0, fmt.Errorf("project %s up to %d: %w", projection, last, err)
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("project %s up to %d: begin: %w", projection, last, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var cp int64
	err = tx.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE projection = ?`, projection).Scan(&cp)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("project %s up to %d: read checkpoint: %w", projection, last, err)
	}
	todo := pastCheckpoint(events, cp)
	if len(todo) == 0 {
		return 0, nil
	}
	if fn != nil {
		vt := &viewTx{ctx: ctx, tx: tx}
		for _, e := range todo {
			if err := fn(vt, e); err != nil {
				return 0, err
			}
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO checkpoints (projection, position) VALUES (?, ?)
		ON CONFLICT (projection) DO UPDATE SET position = excluded.position`, projection, last)
	if err != nil {
		return 0, fmt.Errorf("project %s up to %d: write checkpoint: %w", projection, last, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("project %s up to %d: commit: %w", projection, last, err)
	}
	return len(todo), nil
}

// Apply implements orders.Views.
func (d *DB) Apply(ctx context.Context, projection string, position int64, fn func(orders.ViewTx) error) (bool, error) {
	n, err := d.ApplyBatch(ctx, projection, []orders.Event{{Position: position}}, ignoreEvent(fn))
	return n > 0, err
}

// checkBatch reports a batch whose positions do not strictly ascend.
func checkBatch(events []orders.Event) error {
	for i := 1; i < len(events); i++ {
		if events[i].Position <= events[i-1].Position {
			return fmt.Errorf("batch not in position order: %d after %d", events[i].Position, events[i-1].Position)
		}
	}
	return nil
}

// pastCheckpoint returns the events of an ordered batch after position cp.
func pastCheckpoint(events []orders.Event, cp int64) []orders.Event {
	i := 0
	for i < len(events) && events[i].Position <= cp {
		i++
	}
	return events[i:]
}

// ignoreEvent adapts Apply's fn to ApplyBatch's.
func ignoreEvent(fn func(orders.ViewTx) error) func(orders.ViewTx, orders.Event) error {
	if fn == nil {
		return nil
	}
	return func(tx orders.ViewTx, _ orders.Event) error { return fn(tx) }
}

const viewColumns = `id, customer_id, status, items, total, payment_method, tracking_number, cancel_reason, version, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanView(s scanner) (orders.OrderView, error) {
	var (
		v                orders.OrderView
		items            string
		created, updated int64
	)
	if err := s.Scan(&v.ID, &v.CustomerID, &v.Status, &items, &v.Total, &v.PaymentMethod, &v.TrackingNumber,
		&v.CancelReason, &v.Version, &created, &updated); err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(items), &v.Items); err != nil {
		return v, fmt.Errorf("decode items of order %s: %w", v.ID, err)
	}
	v.CreatedAt = time.Unix(0, created).UTC()
	v.UpdatedAt = time.Unix(0, updated).UTC()
	return v, nil
}

// Order implements orders.Views.
func (d *DB) Order(ctx context.Context, id string) (orders.OrderView, error) {
	v, err := scanView(d.db.QueryRowContext(ctx, `SELECT `+viewColumns+` FROM orders_view WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return v, orders.ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("read order view %s: %w", id, err)
	}
	return v, nil
}

// OrdersByCustomer implements orders.Views.
func (d *DB) OrdersByCustomer(ctx context.Context, customerID string, limit int) ([]orders.OrderView, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+viewColumns+` FROM orders_view WHERE customer_id = ? ORDER BY id LIMIT ?`, customerID, limit)
	if err != nil {
		return nil, fmt.Errorf("list orders of %s: %w", customerID, err)
	}
	defer rows.Close()
	var out []orders.OrderView
	for rows.Next() {
		v, err := scanView(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders of %s: %w", customerID, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list orders of %s: %w", customerID, err)
	}
	return out, nil
}

// Summary implements orders.Views.
func (d *DB) Summary(ctx context.Context) (orders.Summary, error) {
	var s orders.Summary
	err := d.db.QueryRowContext(ctx, `SELECT orders, created, paid, shipped, cancelled, revenue FROM sales_summary WHERE id = 1`).
		Scan(&s.Orders, &s.Created, &s.Paid, &s.Shipped, &s.Cancelled, &s.Revenue)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("read sales summary: %w", err)
	}
	return s, nil
}

// viewTx implements orders.ViewTx inside an ApplyBatch transaction.
type viewTx struct {
	ctx context.Context
	tx  *sql.Tx
}

func (t *viewTx) Order(id string) (orders.OrderView, bool, error) {
	v, err := scanView(t.tx.QueryRowContext(t.ctx, `SELECT `+viewColumns+` FROM orders_view WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("read order view %s: %w", id, err)
	}
	return v, true, nil
}

func (t *viewTx) PutOrder(v orders.OrderView) error {
	items, err := json.Marshal(v.Items)
	if err != nil {
		return fmt.Errorf("encode items of order %s: %w", v.ID, err)
	}
	if v.Items == nil {
		items = []byte("[]")
	}
	_, err = t.tx.ExecContext(t.ctx, `INSERT OR REPLACE INTO orders_view (`+viewColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.CustomerID, string(v.Status), string(items), v.Total, v.PaymentMethod, v.TrackingNumber,
		v.CancelReason, v.Version, v.CreatedAt.UnixNano(), v.UpdatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("write order view %s: %w", v.ID, err)
	}
	return nil
}

func (t *viewTx) AddSummary(s orders.Summary) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO sales_summary (id, orders, created, paid, shipped, cancelled, revenue)
		VALUES (1, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			orders = orders + excluded.orders,
			created = created + excluded.created,
			paid = paid + excluded.paid,
			shipped = shipped + excluded.shipped,
			cancelled = cancelled + excluded.cancelled,
			revenue = revenue + excluded.revenue`,
		s.Orders, s.Created, s.Paid, s.Shipped, s.Cancelled, s.Revenue)
	if err != nil {
		return fmt.Errorf("update sales summary: %w", err)
	}
	return nil
}
