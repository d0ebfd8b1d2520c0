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

// Apply implements orders.Views.
func (d *DB) Apply(ctx context.Context, projection string, position int64, fn func(orders.ViewTx) error) (bool, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("project %s at %d: begin: %w", projection, position, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var cp int64
	err = tx.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE projection = ?`, projection).Scan(&cp)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("project %s at %d: read checkpoint: %w", projection, position, err)
	}
	if cp >= position {
		return false, nil
	}
	if fn != nil {
		if err := fn(&viewTx{ctx: ctx, tx: tx}); err != nil {
			return false, err
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO checkpoints (projection, position) VALUES (?, ?)
		ON CONFLICT (projection) DO UPDATE SET position = excluded.position`, projection, position)
	if err != nil {
		return false, fmt.Errorf("project %s at %d: write checkpoint: %w", projection, position, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("project %s at %d: commit: %w", projection, position, err)
	}
	return true, nil
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

// viewTx implements orders.ViewTx inside an Apply transaction.
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
