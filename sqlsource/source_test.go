package sqlsource_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, as main registers it
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite" // the "sqlite" driver, as main registers it

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/postgres"
	"github.com/lagscope/lagscope/orders/postgres/pgtest"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/sqlite"
	"github.com/lagscope/lagscope/sqlsource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	valid := sqlsource.DefaultConfig()
	valid.DSN = "postgres://lagscope@db/orders"
	tests := []struct {
		name    string
		change  func(*sqlsource.Config)
		wantErr bool
	}{
		{name: "default with dsn", change: func(*sqlsource.Config) {}},
		{name: "sqlite", change: func(c *sqlsource.Config) { c.Driver, c.DSN = sqlsource.DriverSQLite, "/var/lib/orders.db" }},
		{name: "no dsn", change: func(c *sqlsource.Config) { c.DSN = "" }, wantErr: true},
		{name: "unknown driver", change: func(c *sqlsource.Config) { c.Driver = "mysql" }, wantErr: true},
		{name: "zero interval", change: func(c *sqlsource.Config) { c.Interval = 0 }, wantErr: true},
		{name: "zero timeout", change: func(c *sqlsource.Config) { c.Timeout = 0 }, wantErr: true},
		{name: "timeout above interval", change: func(c *sqlsource.Config) { c.Timeout = c.Interval + time.Second }, wantErr: true},
		{name: "timeout equals interval", change: func(c *sqlsource.Config) { c.Timeout = c.Interval }},
		{name: "no head query", change: func(c *sqlsource.Config) { c.HeadQuery = "" }, wantErr: true},
		{name: "no checkpoints query", change: func(c *sqlsource.Config) { c.CheckpointsQuery = "" }, wantErr: true},
		{name: "no projections", change: func(c *sqlsource.Config) { c.MaxProjections = 0 }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			err := cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate() error = %v, want error %v", err, tt.wantErr)
			}
			s, nerr := sqlsource.New(cfg, nil, nil)
			if (nerr != nil) != tt.wantErr {
				t.Errorf("New() error = %v, want error %v", nerr, tt.wantErr)
			}
			if nerr == nil {
				_ = s.Shutdown(context.Background())
			}
		})
	}
	if d := sqlsource.DefaultConfig(); d.Interval != 5*time.Second || d.Timeout != 2*time.Second || d.Driver != "pgx" || d.MaxProjections != 200 {
		t.Errorf("DefaultConfig() = %+v, want pgx, 5s, 2s, 200", d)
	}
}

func newSource(t *testing.T, cfg sqlsource.Config) (*sqlsource.Source, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	s, err := sqlsource.New(cfg, nil, reg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown() error = %v", err)
		}
	})
	return s, reg
}

func poll(t *testing.T, s *sqlsource.Source) {
	t.Helper()
	if err := s.Poll(context.Background()); err != nil {
		t.Fatalf("Poll() error = %v", err)
	}
}

// positions returns the head and the position lag by projection.
func positions(t *testing.T, reg *prometheus.Registry) (head float64, lag map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	lag = map[string]float64{}
	head = -1
	for _, mf := range mfs {
		switch mf.GetName() {
		case "cqrs_store_head_position":
			head = mf.GetMetric()[0].GetGauge().GetValue()
		case "cqrs_projection_position_lag":
			for _, m := range mf.GetMetric() {
				lag[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return head, lag
}

func appendOrders(t *testing.T, s orders.Store, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("o-%04d", i)
		e, err := orders.NewEvent(id, 1, orders.OrderCreated{CustomerID: "c", Items: []orders.Item{{SKU: "a", Price: 1, Quantity: 1}}, Total: 1}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(context.Background(), id, 0, []orders.Event{e}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCaughtUp waits until every projection's checkpoint is at head.
func waitCaughtUp(t *testing.T, v orders.Views, head int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, name := range projection.Names {
		for {
			cp, err := v.Checkpoint(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			if cp == head {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint of %s = %d after 30s, want %d", name, cp, head)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func startProjectors(t *testing.T, store orders.Store, views orders.Views) *projection.Runner {
	t.Helper()
	cfg := projection.DefaultConfig()
	cfg.PollInterval = 10 * time.Millisecond
	r, err := projection.New(cfg, store, views, noop.NewTracerProvider(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPositionLagWithStalledProjector runs the default queries against the
// order system's PostgreSQL schema: the lag grows by exactly the events
// appended while the projectors are stopped, and returns to 0 once they
// catch up.
func TestPositionLagWithStalledProjector(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	db, err := postgres.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := sqlsource.DefaultConfig()
	cfg.DSN = dsn
	src, reg := newSource(t, cfg)

	// Before any projector ran: no checkpoints, no lag series, head 0.
	poll(t, src)
	if head, lag := positions(t, reg); head != 0 || len(lag) != 0 {
		t.Fatalf("empty store: head %v, lag %v; want 0 and no series", head, lag)
	}

	r := startProjectors(t, db, db)
	appendOrders(t, db, 0, 20)
	waitCaughtUp(t, db, 20)
	poll(t, src)
	want := map[string]float64{projection.OrdersView: 0, projection.SalesSummary: 0}
	if head, lag := positions(t, reg); head != 20 || !equal(lag, want) {
		t.Fatalf("caught up: head %v, lag %v; want 20, %v", head, lag, want)
	}

	// The projectors stall; 30 more events arrive.
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendOrders(t, db, 20, 30)
	poll(t, src)
	want = map[string]float64{projection.OrdersView: 30, projection.SalesSummary: 30}
	if head, lag := positions(t, reg); head != 50 || !equal(lag, want) {
		t.Fatalf("stalled: head %v, lag %v; want 50, %v", head, lag, want)
	}
	appendOrders(t, db, 50, 5)
	poll(t, src)
	want = map[string]float64{projection.OrdersView: 35, projection.SalesSummary: 35}
	if head, lag := positions(t, reg); head != 55 || !equal(lag, want) {
		t.Fatalf("still stalled: head %v, lag %v; want 55, %v", head, lag, want)
	}

	// They restart and catch up.
	r = startProjectors(t, db, db)
	defer func() { _ = r.Shutdown(context.Background()) }()
	waitCaughtUp(t, db, 55)
	poll(t, src)
	want = map[string]float64{projection.OrdersView: 0, projection.SalesSummary: 0}
	if head, lag := positions(t, reg); head != 55 || !equal(lag, want) {
		t.Fatalf("caught up again: head %v, lag %v; want 55, %v", head, lag, want)
	}
	if got := testutil.ToFloat64(errorsCounter(t, reg, "checkpoints")) + testutil.ToFloat64(errorsCounter(t, reg, "head")); got != 0 {
		t.Errorf("errors = %v, want 0", got)
	}
}

func equal(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// errorsCounter returns a collector of one lagscope_sqlsource_errors_total
// series, for testutil.ToFloat64.
func errorsCounter(t *testing.T, reg *prometheus.Registry, query string) prometheus.Collector {
	t.Helper()
	return gathered{reg: reg, name: "lagscope_sqlsource_errors_total", label: query}
}

// gathered adapts one series of a registry to testutil.ToFloat64.
type gathered struct {
	reg         *prometheus.Registry
	name, label string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}

func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == g.label {
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "h", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
			}
		}
	}
}

// sqliteStore opens the order system on an SQLite file and returns it with
// the file's path.
func sqliteStore(t *testing.T) (*sqlite.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "orders.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, path
}

func sqliteConfig(path string) sqlsource.Config {
	cfg := sqlsource.DefaultConfig()
	cfg.Driver, cfg.DSN = sqlsource.DriverSQLite, path
	return cfg
}

// TestSQLiteDefaults runs the default queries against the order system's
// SQLite schema.
func TestSQLiteDefaults(t *testing.T) {
	t.Parallel()
	db, path := sqliteStore(t)
	appendOrders(t, db, 0, 12)
	for name, pos := range map[string]int64{projection.OrdersView: 12, projection.SalesSummary: 4} {
		if _, err := db.Apply(context.Background(), name, pos, nil); err != nil {
			t.Fatal(err)
		}
	}
	src, reg := newSource(t, sqliteConfig(path))
	poll(t, src)
	want := `
# HELP cqrs_projection_position_lag Events a projection is behind the event store's head: head position minus the projection's checkpoint, as of the last successful poll.
# TYPE cqrs_projection_position_lag gauge
cqrs_projection_position_lag{projection="orders_view"} 0
cqrs_projection_position_lag{projection="sales_summary"} 8
# HELP cqrs_store_head_position Global position of the newest event in the event store, as of the last successful poll.
# TYPE cqrs_store_head_position gauge
cqrs_store_head_position 12
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cqrs_projection_position_lag", "cqrs_store_head_position"); err != nil {
		t.Error(err)
	}
}

// TestQueryErrorKeepsLastValues: a failing query is counted, the gauges and
// the last success time stay as they were, and the next good poll updates
// them.
func TestQueryErrorKeepsLastValues(t *testing.T) {
	t.Parallel()
	db, path := sqliteStore(t)
	appendOrders(t, db, 0, 3)
	if _, err := db.Apply(context.Background(), "p", 1, nil); err != nil {
		t.Fatal(err)
	}
	src, reg := newSource(t, sqliteConfig(path))
	poll(t, src)
	lastSuccess := func() float64 {
		return testutil.ToFloat64(gatheredGauge{reg: reg, name: "lagscope_sqlsource_last_success_timestamp_seconds"})
	}
	first := lastSuccess()
	if first <= 0 {
		t.Fatalf("last success = %v after a good poll", first)
	}

	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	steps := []struct {
		name       string
		sql        string
		wantErr    bool
		wantErrors map[string]float64
		wantHead   float64
		wantLag    float64
	}{
		{name: "checkpoints table gone", sql: `ALTER TABLE checkpoints RENAME TO cp_away`, wantErr: true,
			wantErrors: map[string]float64{"checkpoints": 1, "head": 0}, wantHead: 3, wantLag: 2},
		{name: "events table gone too", sql: `ALTER TABLE cp_away RENAME TO checkpoints; ALTER TABLE events RENAME TO ev_away`, wantErr: true,
			wantErrors: map[string]float64{"checkpoints": 1, "head": 1}, wantHead: 3, wantLag: 2},
		{name: "back, with a moved checkpoint", sql: `ALTER TABLE ev_away RENAME TO events; UPDATE checkpoints SET position = 3`,
			wantErrors: map[string]float64{"checkpoints": 1, "head": 1}, wantHead: 3, wantLag: 0},
	}
	for _, st := range steps {
		exec(st.sql)
		err := src.Poll(context.Background())
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: Poll() error = %v, want error %v", st.name, err, st.wantErr)
		}
		for q, want := range st.wantErrors {
			if got := testutil.ToFloat64(errorsCounter(t, reg, q)); got != want {
				t.Errorf("%s: errors{query=%q} = %v, want %v", st.name, q, got, want)
			}
		}
		head, lag := positions(t, reg)
		if head != st.wantHead || lag["p"] != st.wantLag || len(lag) != 1 {
			t.Errorf("%s: head %v, lag %v; want %v, p=%v", st.name, head, lag, st.wantHead, st.wantLag)
		}
		if got := lastSuccess(); st.wantErr && got != first {
			t.Errorf("%s: last success moved from %v to %v on a failed poll", st.name, first, got)
		} else if !st.wantErr && got < first {
			t.Errorf("%s: last success %v before %v after a good poll", st.name, got, first)
		}
	}
}

type gatheredGauge struct {
	reg  *prometheus.Registry
	name string
}

func (g gatheredGauge) Describe(chan<- *prometheus.Desc) {}

func (g gatheredGauge) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == g.name {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "h", nil, nil), prometheus.GaugeValue, mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
}

// TestProjectionLabelsBounded: projections beyond MaxProjections are skipped
// and counted, exported ones keep their slot, and a projection that
// disappears frees its slot and loses its series.
func TestProjectionLabelsBounded(t *testing.T) {
	t.Parallel()
	db, path := sqliteStore(t)
	appendOrders(t, db, 0, 10)
	apply := func(name string, pos int64) {
		t.Helper()
		if _, err := db.Apply(context.Background(), name, pos, nil); err != nil {
			t.Fatal(err)
		}
	}
	apply("b", 5)
	apply("c", 6)
	cfg := sqliteConfig(path)
	cfg.MaxProjections = 2
	src, reg := newSource(t, cfg)
	poll(t, src) // b and c take the slots
	apply("a", 7)
	poll(t, src) // a comes first in row order but finds no free slot
	if _, lag := positions(t, reg); !equal(lag, map[string]float64{"b": 5, "c": 4}) {
		t.Errorf("lag = %v, want b=5 c=4 (a skipped)", lag)
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`DELETE FROM checkpoints WHERE projection = 'b'`); err != nil {
		t.Fatal(err)
	}
	poll(t, src)
	if _, lag := positions(t, reg); !equal(lag, map[string]float64{"a": 3, "c": 4}) {
		t.Errorf("lag = %v after b went away, want a=3 c=4", lag)
	}
	want := `
# HELP lagscope_sqlsource_skipped_rows_total Rows of the checkpoints query that were not exported, by reason.
# TYPE lagscope_sqlsource_skipped_rows_total counter
lagscope_sqlsource_skipped_rows_total{reason="duplicate_projection"} 0
lagscope_sqlsource_skipped_rows_total{reason="empty_projection"} 0
lagscope_sqlsource_skipped_rows_total{reason="null_position"} 0
lagscope_sqlsource_skipped_rows_total{reason="too_many_projections"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lagscope_sqlsource_skipped_rows_total"); err != nil {
		t.Error(err)
	}
}

func TestBadRowsSkipped(t *testing.T) {
	t.Parallel()
	_, path := sqliteStore(t)
	cfg := sqliteConfig(path)
	cfg.HeadQuery = `SELECT 10`
	cfg.CheckpointsQuery = `SELECT '', 1 UNION ALL SELECT 'x', NULL UNION ALL SELECT 'y', 2 UNION ALL SELECT 'y', 3`
	src, reg := newSource(t, cfg)
	poll(t, src)
	if head, lag := positions(t, reg); head != 10 || !equal(lag, map[string]float64{"y": 8}) {
		t.Errorf("head %v, lag %v; want 10, y=8 (first row of y)", head, lag)
	}
	want := `
# HELP lagscope_sqlsource_skipped_rows_total Rows of the checkpoints query that were not exported, by reason.
# TYPE lagscope_sqlsource_skipped_rows_total counter
lagscope_sqlsource_skipped_rows_total{reason="duplicate_projection"} 1
lagscope_sqlsource_skipped_rows_total{reason="empty_projection"} 1
lagscope_sqlsource_skipped_rows_total{reason="null_position"} 1
lagscope_sqlsource_skipped_rows_total{reason="too_many_projections"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lagscope_sqlsource_skipped_rows_total"); err != nil {
		t.Error(err)
	}
}

func TestStartPollsUntilShutdown(t *testing.T) {
	t.Parallel()
	db, path := sqliteStore(t)
	appendOrders(t, db, 0, 2)
	cfg := sqliteConfig(path)
	cfg.Interval, cfg.Timeout = 20*time.Millisecond, 20*time.Millisecond
	reg := prometheus.NewPedanticRegistry()
	src, err := sqlsource.New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err == nil {
		t.Error("second Start() error = nil, want an error")
	}
	waitHead := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if head, _ := positions(t, reg); head == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no poll saw head %v within 10s", want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitHead(2) // the first poll, at Start
	appendOrders(t, db, 2, 1)
	waitHead(3) // a later poll
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() error = %v", err)
	}
	if err := src.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown() error = %v", err)
	}
}

// TestPollTimeout: a query slower than Timeout fails the poll in about
// Timeout and is counted.
func TestPollTimeout(t *testing.T) {
	t.Parallel()
	cfg := sqlsource.DefaultConfig()
	cfg.DSN = pgtest.DSN(t)
	cfg.Timeout = 200 * time.Millisecond
	cfg.HeadQuery = `SELECT 1 FROM pg_sleep(30)`
	cfg.CheckpointsQuery = `SELECT 'p', 0`
	src, reg := newSource(t, cfg)
	start := time.Now()
	if err := src.Poll(context.Background()); err == nil {
		t.Fatal("Poll() error = nil, want a timeout")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Poll() took %v with a %v timeout", took, cfg.Timeout)
	}
	if got := testutil.ToFloat64(errorsCounter(t, reg, "head")); got != 1 {
		t.Errorf("errors{query=head} = %v, want 1", got)
	}
	if head, lag := positions(t, reg); head != -1 || len(lag) != 0 {
		t.Errorf("head %v, lag %v after only a failed poll; want no series", head, lag)
	}
}
