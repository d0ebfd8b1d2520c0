package sqlsource

import (
	"errors"
	"fmt"
	"time"
)

// Drivers that Config.Driver accepts. The program registers the one it uses
// by importing its package (see the package comment).
const (
	// DriverPostgres is pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib).
	DriverPostgres = "pgx"
	// DriverSQLite is modernc.org/sqlite's driver.
	DriverSQLite = "sqlite"
)

// Default queries. They fit the schema of lagscope's order system on both
// drivers (orders/postgres and orders/sqlite name their tables and columns
// alike): events(position) is the global position and checkpoints(projection,
// position) the projectors' checkpoints. Point them at your own tables when
// your event store differs, e.g. for Marten:
//
//	head_query: SELECT COALESCE(MAX(seq_id), 0) FROM mt_events
//	checkpoints_query: SELECT name, last_seq_id FROM mt_event_progression
const (
	// DefaultHeadQuery returns the store's head position.
	DefaultHeadQuery = `SELECT COALESCE(MAX(position), 0) FROM events`
	// DefaultCheckpointsQuery returns one (projection, position) row per
	// projection.
	DefaultCheckpointsQuery = `SELECT projection, position FROM checkpoints ORDER BY projection`
)

// Config configures a Source. The zero value is not usable; start from
// DefaultConfig and set DSN.
type Config struct {
	// Driver is the database/sql driver: DriverPostgres ("pgx") or
	// DriverSQLite ("sqlite"). Default "pgx".
	Driver string `yaml:"driver"`
	// DSN is the data source name. For pgx, a PostgreSQL URL or key=value
	// string (postgres://lagscope@db:5432/orders?sslmode=disable; add
	// search_path=SCHEMA to pick a schema). For sqlite, a file path or
	// file: URI of the event store's database; it is read, never written.
	// Required; it may hold a password, which errors and logs never show.
	DSN string `yaml:"dsn"`
	// Interval is the time between two polls. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one poll (both queries). At most Interval. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// HeadQuery returns one row with one integer column: the position of
	// the newest event in the store. Default DefaultHeadQuery.
	HeadQuery string `yaml:"head_query"`
	// CheckpointsQuery returns rows of (projection text, position integer):
	// the position up to which each projection has handled events. Default
	// DefaultCheckpointsQuery.
	CheckpointsQuery string `yaml:"checkpoints_query"`
	// MaxProjections bounds the projection label values exported. Rows of
	// further projections are skipped and counted
	// (lagscope_sqlsource_skipped_rows_total{reason="too_many_projections"});
	// a projection keeps its slot while it is returned. Default 200.
	MaxProjections int `yaml:"max_projections"`
}

// DefaultConfig returns the defaults documented on Config; DSN is empty.
func DefaultConfig() Config {
	return Config{
		Driver:           DriverPostgres,
		Interval:         5 * time.Second,
		Timeout:          2 * time.Second,
		HeadQuery:        DefaultHeadQuery,
		CheckpointsQuery: DefaultCheckpointsQuery,
		MaxProjections:   200,
	}
}

// Validate reports every field that cannot be used, joined into one error.
func (c Config) Validate() error {
	var errs []error
	if c.Driver != DriverPostgres && c.Driver != DriverSQLite {
		errs = append(errs, fmt.Errorf("driver %q: want %q or %q", c.Driver, DriverPostgres, DriverSQLite))
	}
	if c.DSN == "" {
		errs = append(errs, errors.New("dsn must not be empty"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval must be positive, got %s", c.Interval))
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		errs = append(errs, fmt.Errorf("timeout must be positive and at most the interval (%s), got %s", c.Interval, c.Timeout))
	}
	if c.HeadQuery == "" {
		errs = append(errs, errors.New("head query must not be empty"))
	}
	if c.CheckpointsQuery == "" {
		errs = append(errs, errors.New("checkpoints query must not be empty"))
	}
	if c.MaxProjections <= 0 {
		errs = append(errs, fmt.Errorf("max projections must be positive, got %d", c.MaxProjections))
	}
	return errors.Join(errs...)
}
