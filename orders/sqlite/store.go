package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lagscope/lagscope/orders"
)

// Append implements orders.Store.
func (d *DB) Append(ctx context.Context, aggregateID string, expectedVersion int64, events []orders.Event) ([]orders.Event, error) {
	if len(events) == 0 {
		return nil, errors.New("append: no events")
	}
	for i, e := range events {
		if e.AggregateID != aggregateID || e.Version != expectedVersion+int64(i)+1 || e.ID == "" || e.Type == "" {
			return nil, fmt.Errorf("append to %s at version %d: event %d is %s version %d (id %q, type %q)",
				aggregateID, expectedVersion, i, e.AggregateID, e.Version, e.ID, e.Type)
		}
	}
	tx, err := d.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: see _txlock in Open
	if err != nil {
		return nil, fmt.Errorf("append to %s: begin: %w", aggregateID, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit

	var current int64
	err = tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = ?`, aggregateID).Scan(&current)
	if err != nil {
		return nil, fmt.Errorf("append to %s: read version: %w", aggregateID, err)
	}
	if current != expectedVersion {
		return nil, fmt.Errorf("append to %s at version %d, stream is at %d: %w", aggregateID, expectedVersion, current, orders.ErrVersionConflict)
	}
	stored := make([]orders.Event, len(events))
	for i, e := range events {
		md, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("append to %s: encode metadata: %w", aggregateID, err)
		}
		typ := e.AggregateType
		if typ == "" {
			typ = orders.AggregateType
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO events
			(event_id, aggregate_type, aggregate_id, version, type, data, metadata, recorded_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			e.ID, typ, e.AggregateID, e.Version, e.Type, string(e.Data), string(md), e.RecordedAt.UnixNano())
		if err != nil {
			if strings.Contains(err.Error(), "events.version") {
				return nil, fmt.Errorf("append to %s: %w", aggregateID, orders.ErrVersionConflict)
			}
			return nil, fmt.Errorf("append to %s: insert event %s: %w", aggregateID, e.ID, err)
		}
		pos, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("append to %s: read position: %w", aggregateID, err)
		}
		e.AggregateType = typ
		e.Position = pos
		e.Metadata = cloneMap(e.Metadata)
		stored[i] = e
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("append to %s: commit: %w", aggregateID, err)
	}
	d.notify()
	return stored, nil
}

const eventColumns = `position, event_id, aggregate_type, aggregate_id, version, type, data, metadata, recorded_at`

// Load implements orders.Store.
func (d *DB) Load(ctx context.Context, aggregateID string) ([]orders.Event, error) {
	evs, err := d.query(ctx, `SELECT `+eventColumns+` FROM events WHERE aggregate_id = ? ORDER BY version`, aggregateID)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", aggregateID, err)
	}
	if len(evs) == 0 {
		return nil, orders.ErrNotFound
	}
	return evs, nil
}

// ReadAll implements orders.Store.
func (d *DB) ReadAll(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	evs, err := d.query(ctx, `SELECT `+eventColumns+` FROM events WHERE position > ? ORDER BY position LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return evs, nil
}

// Head implements orders.Store.
func (d *DB) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := d.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, fmt.Errorf("read head position: %w", err)
	}
	return head, nil
}

func (d *DB) query(ctx context.Context, q string, args ...any) ([]orders.Event, error) {
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []orders.Event
	for rows.Next() {
		var (
			e        orders.Event
			data, md string
			recorded int64
		)
		if err := rows.Scan(&e.Position, &e.ID, &e.AggregateType, &e.AggregateID, &e.Version, &e.Type, &data, &md, &recorded); err != nil {
			return nil, err
		}
		e.Data = json.RawMessage(data)
		if err := json.Unmarshal([]byte(md), &e.Metadata); err != nil {
			return nil, fmt.Errorf("decode metadata of event %s: %w", e.ID, err)
		}
		e.RecordedAt = time.Unix(0, recorded).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
