// Package sqlite implements orders.Store and orders.Views on SQLite through
// modernc.org/sqlite (pure Go, driver name "sqlite").
//
// A file database runs in WAL mode with a busy timeout and takes write
// transactions with BEGIN IMMEDIATE, so several local processes (a command
// process, a projector process, a query process) can share one file. Writers
// are serialised by SQLite, which is what makes global positions grow in
// commit order. An in-memory database lives as long as its DB and uses a
// single connection. The read models and the projectors' checkpoints live in
// the same database as the events.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/lagscope/lagscope/orders"
)

// Memory is the path that Open takes for a private in-memory database.
const Memory = ":memory:"

// BusyTimeout is how long, in milliseconds, a connection waits for another
// connection's (or process's) write lock before it fails with SQLITE_BUSY.
const BusyTimeout = 10_000

// DB is an SQLite database holding events, read models and checkpoints. It
// implements orders.Store and orders.Views and is safe for concurrent use.
type DB struct {
	db *sql.DB

	wake orders.Wakeups
}

var (
	_ orders.Store = (*DB)(nil)
	_ orders.Views = (*DB)(nil)
)

// Open opens (creating if needed) the database at path, or a private
// in-memory database when path is Memory or empty, and creates the schema.
// path must not contain '?'. The caller must Close the DB.
func Open(ctx context.Context, path string) (*DB, error) {
	pragmas := url.Values{}
	pragmas.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout))
	pragmas.Add("_txlock", "immediate")
	var dsn string
	memory := path == "" || path == Memory
	if memory {
		// Each DB gets its own named in-memory database, kept alive by its one
		// connection.
		dsn = "file:orders-" + orders.NewID() + "?mode=memory&" + pragmas.Encode()
	} else {
		if strings.Contains(path, "?") {
			return nil, fmt.Errorf("open sqlite %q: path must not contain '?'", path)
		}
		pragmas.Add("_pragma", "journal_mode(WAL)")
		pragmas.Add("_pragma", "synchronous(NORMAL)")
		dsn = "file:" + path + "?" + pragmas.Encode()
	}
	sqldb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	if memory {
		sqldb.SetMaxOpenConns(1)
		sqldb.SetMaxIdleConns(1)
		sqldb.SetConnMaxLifetime(0)
		sqldb.SetConnMaxIdleTime(0)
	} else {
		sqldb.SetMaxOpenConns(8)
		sqldb.SetMaxIdleConns(8)
	}
	if _, err := sqldb.ExecContext(ctx, schema); err != nil {
		return nil, errors.Join(fmt.Errorf("create sqlite schema in %q: %w", path, err), sqldb.Close())
	}
	return &DB{db: sqldb}, nil
}

// Close closes the database. It does not wait for subscribers.
func (d *DB) Close() error {
	return d.db.Close()
}

const schema = `
CREATE TABLE IF NOT EXISTS events (
	position       INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id       TEXT    NOT NULL UNIQUE,
	aggregate_type TEXT    NOT NULL,
	aggregate_id   TEXT    NOT NULL,
	version        INTEGER NOT NULL,
	type           TEXT    NOT NULL,
	data           TEXT    NOT NULL,
	metadata       TEXT    NOT NULL,
	recorded_at    INTEGER NOT NULL,
	UNIQUE (aggregate_id, version)
);
CREATE TABLE IF NOT EXISTS checkpoints (
	projection TEXT PRIMARY KEY,
	position   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders_view (
	id              TEXT PRIMARY KEY,
	customer_id     TEXT    NOT NULL,
	status          TEXT    NOT NULL,
	items           TEXT    NOT NULL,
	total           INTEGER NOT NULL,
	payment_method  TEXT    NOT NULL,
	tracking_number TEXT    NOT NULL,
	cancel_reason   TEXT    NOT NULL,
	version         INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_view_customer ON orders_view (customer_id, id);
CREATE TABLE IF NOT EXISTS sales_summary (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	orders    INTEGER NOT NULL,
	created   INTEGER NOT NULL,
	paid      INTEGER NOT NULL,
	shipped   INTEGER NOT NULL,
	cancelled INTEGER NOT NULL,
	revenue   INTEGER NOT NULL
);
`

// Subscribe implements orders.Store: the channel receives after every
// successful Append through d.
func (d *DB) Subscribe() (<-chan struct{}, func()) { return d.wake.Subscribe() }

func (d *DB) notify() { d.wake.Notify() }
