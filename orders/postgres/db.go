// Package postgres implements orders.Store and orders.Views on PostgreSQL
// through pgx (github.com/jackc/pgx/v5).
//
// Events live in one append-only table, events, with a global position (an
// identity column), a unique (aggregate_id, version) for optimistic
// concurrency, the payload as json (kept byte for byte) and the metadata,
// which carries the command's W3C trace context, as jsonb. The projectors'
// checkpoints and the read models (orders_view, sales_summary) live in the
// same database, in the schema that the connection's search_path selects,
// so several order systems (or tests) can share a database in separate
// schemas. Open applies the embedded, versioned migrations (Migrations) and
// records them in schema_migrations.
//
// Appends are serialised by a transaction-level advisory lock, which makes
// positions grow in commit order: see DB.Append for why. Every append also
// sends a NOTIFY on the schema's channel, which wakes Subscribe channels in
// every process that has the database open, so projectors in another process
// follow appends without tight polling; they keep a fallback poll for
// notifications lost while the listening connection reconnects.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lagscope/lagscope/orders"
)

// Advisory lock classes (the first key of the two-key advisory locks), so that
// lagscope's locks do not collide with an application's one-key locks. The
// second key names the schema.
const (
	lockClassAppend  int32 = 0x6c61_6701 // "lag" 1
	lockClassMigrate int32 = 0x6c61_6702 // "lag" 2
)

// DB is a PostgreSQL database (one schema of it) holding events, read models
// and checkpoints. It implements orders.Store and orders.Views, is safe for
// concurrent use, and may be shared with other processes that open the same
// schema.
type DB struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	channel string // NOTIFY channel of this schema
	lockKey int32  // second key of the append lock: the events table's oid

	wake orders.Wakeups

	cancel context.CancelFunc
	wg     sync.WaitGroup

	// serialize is false only in the test that shows what goes wrong
	// without the append lock; beforeCommit, when set (by tests), runs in
	// every Append transaction after the events are inserted.
	serialize    bool
	beforeCommit func(ctx context.Context, stored []orders.Event)
}

var (
	_ orders.Store = (*DB)(nil)
	_ orders.Views = (*DB)(nil)
)

// Open connects to the database at dsn, a PostgreSQL URL
// (postgres://user@host:5432/db?sslmode=disable) or key=value string, as
// pgxpool reads it: pool_max_conns and the other pool_ parameters apply, and
// search_path selects the schema (which must exist). It applies the
// migrations and starts listening for appends by other processes before it
// returns. logger (may be nil) receives the listener's reconnections. The
// caller must Close the DB.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err) // pgx redacts the password
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	d := &DB{pool: pool, logger: logger, serialize: true}
	if err := d.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

func (d *DB) init(ctx context.Context) error {
	if err := migrate(ctx, d.pool); err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	var (
		schema string
		oid    uint32
	)
	err := d.pool.QueryRow(ctx, `SELECT current_schema(), 'events'::regclass::oid`).Scan(&schema, &oid)
	if err != nil {
		return fmt.Errorf("open postgres: read schema: %w", err)
	}
	d.lockKey = int32(oid) // the two-key advisory lock takes int4; oids wrap
	d.channel = channelName(schema)

	// The first LISTEN happens before Open returns, so that an append made
	// by anyone after Open wakes this DB's subscribers.
	conn, err := d.listenConn(ctx)
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.listen(lctx, conn)
	}()
	return nil
}

// channelName returns the NOTIFY channel of a schema. Channel names are
// identifiers of at most 63 bytes; a long schema name is hashed.
func channelName(schema string) string {
	const prefix = "orders_events."
	if len(prefix)+len(schema) <= 63 {
		return prefix + schema
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return prefix + strconv.FormatUint(h.Sum64(), 16)
}

// Close stops the listener, waits for it, and closes the connections. It
// does not wait for subscribers.
func (d *DB) Close() error {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	d.pool.Close()
	return nil
}

// Pool returns the connection pool, for callers that run their own queries
// (tests, tools). Closing the DB closes it.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// listenConn opens a connection outside the pool (it is held for as long as
// the DB is open) and LISTENs on the schema's channel.
func (d *DB) listenConn(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, d.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect listener: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{d.channel}.Sanitize()); err != nil {
		return nil, errors.Join(fmt.Errorf("listen on %s: %w", d.channel, err), conn.Close(ctx))
	}
	return conn, nil
}

// Listener reconnection backoff bounds.
const (
	listenRetryMin = 100 * time.Millisecond
	listenRetryMax = 5 * time.Second
)

// listen wakes the subscribers on every notification until ctx ends. When the
// connection fails it reconnects with a growing delay, and wakes the
// subscribers once it is back, since it may have missed notifications.
func (d *DB) listen(ctx context.Context, conn *pgx.Conn) {
	retry := listenRetryMin
	for {
		for conn != nil {
			_, err := conn.WaitForNotification(ctx)
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
				if ctx.Err() != nil {
					return
				}
				d.logger.Warn("postgres listener lost its connection; reconnecting", "channel", d.channel, "err", err)
				break
			}
			retry = listenRetryMin
			d.notify()
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, listenRetryMax)
		var err error
		conn, err = d.listenConn(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.logger.Warn("postgres listener cannot reconnect", "channel", d.channel, "err", err)
			continue
		}
		d.logger.Info("postgres listener reconnected", "channel", d.channel)
		d.notify()
	}
}

// Subscribe implements orders.Store: the channel receives after every Append
// through d and, through LISTEN/NOTIFY, after appends by other DB values and
// processes on the same schema.
func (d *DB) Subscribe() (<-chan struct{}, func()) { return d.wake.Subscribe() }

func (d *DB) notify() { d.wake.Notify() }
