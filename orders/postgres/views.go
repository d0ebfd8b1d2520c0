package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lagscope/lagscope/orders"
)

// CheckpointsQuery returns every projection's checkpoint as (projection,
// position) rows. sqlsource runs the same query by default.
const CheckpointsQuery = `SELECT projection, position FROM checkpoints ORDER BY projection`

// Checkpoint implements orders.Views.
func (d *DB) Checkpoint(ctx context.Context, projection string) (int64, error) {
	var pos int64
	err := d.pool.QueryRow(ctx, `SELECT position FROM checkpoints WHERE projection = $1`, projection).Scan(&pos)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint of %s: %w", projection, err)
	}
	return pos, nil
}

// ApplyBatch implements orders.Views: the writes of fn for every event past
// the checkpoint and the checkpoint move commit in one transaction. The
// transaction starts by locking the projection's checkpoint row, creating it
// at 0 if it is missing, and reads the position under that lock. Two
// projectors of the same projection (two processes) therefore never both
// apply one event, whatever their batches: the later one waits for the
// earlier to commit or roll back and then skips what it committed (a plain
// SELECT ... FOR UPDATE would lock nothing while the row does not exist, and
// two first batches of different lengths would overlap).
func (d *DB) ApplyBatch(ctx context.Context, projection string, events []orders.Event, fn func(orders.ViewTx, orders.Event) error) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	last := events[len(events)-1].Position
	if err := checkBatch(events); err != nil {
		return 0, fmt.Errorf("project %s up to %d: %w", projection, last, err)
	}
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("project %s up to %d: begin: %w", projection, last, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	var cp int64
	err = tx.QueryRow(ctx, `INSERT INTO checkpoints AS c (projection, position) VALUES ($1, 0)
		ON CONFLICT (projection) DO UPDATE SET position = c.position
		RETURNING position`, projection).Scan(&cp)
	if err != nil {
		return 0, fmt.Errorf("project %s up to %d: lock checkpoint: %w", projection, last, err)
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
	_, err = tx.Exec(ctx, `UPDATE checkpoints SET position = $2, updated_at = now() WHERE projection = $1`, projection, last)
	if err != nil {
		return 0, fmt.Errorf("project %s up to %d: write checkpoint: %w", projection, last, err)
	}
	if err := tx.Commit(ctx); err != nil {
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

const viewColumns = `id, customer_id, status, items::text, total, payment_method, tracking_number, cancel_reason, version, created_at, updated_at`

func scanView(row pgx.Row) (orders.OrderView, error) {
	var (
		v                orders.OrderView
		items            string
		created, updated int64
	)
	if err := row.Scan(&v.ID, &v.CustomerID, &v.Status, &items, &v.Total, &v.PaymentMethod, &v.TrackingNumber,
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
	v, err := scanView(d.pool.QueryRow(ctx, `SELECT `+viewColumns+` FROM orders_view WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return v, orders.ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("read order view %s: %w", id, err)
	}
	return v, nil
}

// OrdersByCustomer implements orders.Views.
func (d *DB) OrdersByCustomer(ctx context.Context, customerID string, limit int) ([]orders.OrderView, error) {
	rows, err := d.pool.Query(ctx, `SELECT `+viewColumns+` FROM orders_view WHERE customer_id = $1 ORDER BY id LIMIT $2`, customerID, limit)
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
	err := d.pool.QueryRow(ctx, `SELECT orders, created, paid, shipped, cancelled, revenue FROM sales_summary WHERE id = 1`).
		Scan(&s.Orders, &s.Created, &s.Paid, &s.Shipped, &s.Cancelled, &s.Revenue)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("read sales summary: %w", err)
	}
	return s, nil
}

// viewTx implements orders.ViewTx inside an ApplyBatch transaction.
type viewTx struct {
	ctx context.Context
	tx  pgx.Tx
}

func (t *viewTx) Order(id string) (orders.OrderView, bool, error) {
	v, err := scanView(t.tx.QueryRow(t.ctx, `SELECT `+viewColumns+` FROM orders_view WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	_, err = t.tx.Exec(t.ctx, `INSERT INTO orders_view (id, customer_id, status, items, total, payment_method,
			tracking_number, cancel_reason, version, created_at, updated_at)
		VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET
			customer_id = excluded.customer_id, status = excluded.status, items = excluded.items,
			total = excluded.total, payment_method = excluded.payment_method,
			tracking_number = excluded.tracking_number, cancel_reason = excluded.cancel_reason,
			version = excluded.version, created_at = excluded.created_at, updated_at = excluded.updated_at`,
		v.ID, v.CustomerID, string(v.Status), string(items), v.Total, v.PaymentMethod, v.TrackingNumber,
		v.CancelReason, v.Version, v.CreatedAt.UnixNano(), v.UpdatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("write order view %s: %w", v.ID, err)
	}
	return nil
}

func (t *viewTx) AddSummary(s orders.Summary) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO sales_summary AS s (id, orders, created, paid, shipped, cancelled, revenue)
		VALUES (1, $1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET
			orders = s.orders + excluded.orders,
			created = s.created + excluded.created,
			paid = s.paid + excluded.paid,
			shipped = s.shipped + excluded.shipped,
			cancelled = s.cancelled + excluded.cancelled,
			revenue = s.revenue + excluded.revenue`,
		s.Orders, s.Created, s.Paid, s.Shipped, s.Cancelled, s.Revenue)
	if err != nil {
		return fmt.Errorf("update sales summary: %w", err)
	}
	return nil
}
