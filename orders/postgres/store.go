package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lagscope/lagscope/orders"
)

// Append implements orders.Store.
//
// Positions come from an identity column, and a sequence hands out numbers in
// the order transactions ask, not the order they commit: if transaction A
// takes position 7 and B takes 8, B may commit first, and a projector that
// reads "position > 6" then sees 8, moves its checkpoint to 8 and never reads
// 7, which commits a moment later. Append prevents that by taking a
// transaction-level advisory lock (on this schema's events table) before it
// reads the stream version and inserts; the lock is released only after the
// commit is visible, so the next append gets higher positions and commits
// later. Positions therefore grow in commit order, ReadAll can keep the
// single-integer "position > after" contract of orders.Store and
// orders.Views checkpoints, and head minus checkpoint is exactly the number
// of events a projector is behind (gaps come only from failed inserts).
//
// The alternative that Marten, Eventuous and transactional outboxes use
// (record the transaction id as xid8, read in (xid, position) order, and
// hide rows whose xid is not below pg_snapshot_xmin(pg_current_snapshot()))
// keeps appends concurrent, but a reader's checkpoint becomes an (xid,
// position) pair, which neither orders.Views nor a position-lag metric can
// hold. Serialising costs append throughput: one append transaction (a
// handful of short statements) at a time per schema, which is far above what
// the order system needs; optimistic concurrency still decides conflicts,
// and the version check under the lock is exact.
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
	// Read committed: after the lock is granted, the next statement's
	// snapshot sees the previous holder's commit.
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("append to %s: begin: %w", aggregateID, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	if d.serialize {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClassAppend, d.lockKey); err != nil {
			return nil, fmt.Errorf("append to %s: lock: %w", aggregateID, err)
		}
	}
	var current int64
	err = tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = $1`, aggregateID).Scan(&current)
	if err != nil {
		return nil, fmt.Errorf("append to %s: read version: %w", aggregateID, err)
	}
	if current != expectedVersion {
		return nil, fmt.Errorf("append to %s at version %d, stream is at %d: %w", aggregateID, expectedVersion, current, orders.ErrVersionConflict)
	}
	stored := make([]orders.Event, len(events))
	for i, e := range events {
		md := e.Metadata
		if md == nil {
			md = map[string]string{}
		}
		mdJSON, err := json.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("append to %s: encode metadata: %w", aggregateID, err)
		}
		typ := e.AggregateType
		if typ == "" {
			typ = orders.AggregateType
		}
		// Text parameters cast in SQL: the payload is stored as written.
		err = tx.QueryRow(ctx, `INSERT INTO events
			(event_id, aggregate_type, aggregate_id, version, type, data, metadata, recorded_at)
			VALUES ($1, $2, $3, $4, $5, $6::text::json, $7::text::jsonb, $8)
			RETURNING position`,
			e.ID, typ, e.AggregateID, e.Version, e.Type, string(e.Data), string(mdJSON), e.RecordedAt.UnixNano(),
		).Scan(&e.Position)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_stream_version" {
				return nil, fmt.Errorf("append to %s: %w", aggregateID, orders.ErrVersionConflict)
			}
			return nil, fmt.Errorf("append to %s: insert event %s: %w", aggregateID, e.ID, err)
		}
		e.AggregateType = typ
		e.Metadata = cloneMap(e.Metadata)
		stored[i] = e
	}
	if d.beforeCommit != nil {
		d.beforeCommit(ctx, stored)
	}
	// Delivered to listeners at commit, not before.
	head := strconv.FormatInt(stored[len(stored)-1].Position, 10)
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, d.channel, head); err != nil {
		return nil, fmt.Errorf("append to %s: notify: %w", aggregateID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("append to %s: commit: %w", aggregateID, err)
	}
	d.notify()
	return stored, nil
}

const eventColumns = `position, event_id, aggregate_type, aggregate_id, version, type, data::text, metadata::text, recorded_at`

// Load implements orders.Store.
func (d *DB) Load(ctx context.Context, aggregateID string) ([]orders.Event, error) {
	evs, err := d.query(ctx, `SELECT `+eventColumns+` FROM events WHERE aggregate_id = $1 ORDER BY version`, aggregateID)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", aggregateID, err)
	}
	if len(evs) == 0 {
		return nil, orders.ErrNotFound
	}
	return evs, nil
}

// ReadAll implements orders.Store. Every event it returns committed after
// all events of lower positions did (see Append).
func (d *DB) ReadAll(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	evs, err := d.query(ctx, `SELECT `+eventColumns+` FROM events WHERE position > $1 ORDER BY position LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return evs, nil
}

// HeadQuery is the query Head runs: the highest stored position, 0 for an
// empty store. sqlsource runs the same query by default.
const HeadQuery = `SELECT COALESCE(MAX(position), 0) FROM events`

// Head implements orders.Store.
func (d *DB) Head(ctx context.Context) (int64, error) {
	var head int64
	if err := d.pool.QueryRow(ctx, HeadQuery).Scan(&head); err != nil {
		return 0, fmt.Errorf("read head position: %w", err)
	}
	return head, nil
}

func (d *DB) query(ctx context.Context, q string, args ...any) ([]orders.Event, error) {
	rows, err := d.pool.Query(ctx, q, args...)
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
