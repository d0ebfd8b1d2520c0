// Package sqlsource is an optional lagscope source for event stores kept in a
// SQL database: it polls the store's head position and every projection's
// checkpoint with two configured queries, and exports how many events each
// projection is behind the head (cqrs_projection_position_lag{projection}),
// the head itself (cqrs_store_head_position) and its own health
// (lagscope_sqlsource_errors_total, lagscope_sqlsource_skipped_rows_total,
// lagscope_sqlsource_last_success_timestamp_seconds).
//
// Position lag needs no traces and sees a projection that has stopped
// altogether; the trace-based lag in seconds says how stale reads are. Both
// belong on one dashboard.
//
// A poll runs the checkpoints query, then the head query, in that order: the
// head read second is at least every checkpoint read first, so a lag is
// never negative (at worst it counts events appended between the two
// queries). A poll that fails (connection, timeout, bad rows) counts one
// error under the query that failed and changes no gauge: Prometheus keeps
// scraping the last values, as it does for any exporter whose backend is
// briefly away, and lagscope_sqlsource_last_success_timestamp_seconds says
// how old they are (alert on time() minus it). Deleting the series instead
// would make the lag alerts resolve while the database is unreachable.
// Projections missing from a successful poll's rows lose their series.
//
// The package registers no database driver: the program that uses it imports
// the one its Config.Driver names (github.com/jackc/pgx/v5/stdlib for "pgx",
// modernc.org/sqlite for "sqlite"), as cmd/lagscope does, so that a library
// user links only the driver it needs.
package sqlsource

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source polls an event store's positions. Start it once, then Shutdown it;
// Poll may also be called directly. Its methods are safe for concurrent use.
type Source struct {
	cfg     Config
	logger  *slog.Logger
	db      *sql.DB
	metrics *metrics

	pollMu   sync.Mutex      // one poll at a time; guards exported and failing
	exported map[string]bool // projections with a position lag series
	failing  bool            // the last poll failed (log state changes only)

	mu      sync.Mutex // guards started and cancel
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New validates cfg and returns a Source that registers its metrics with reg
// (nil registers nothing). It does not connect: the first poll does. logger
// may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid sqlsource config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, err := sql.Open(cfg.Driver, cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", cfg.Driver, err)
	}
	// Polls run one query at a time.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	m, err := newMetrics(reg)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &Source{cfg: cfg, logger: logger, db: db, metrics: m, exported: map[string]bool{}}, nil
}

// Start polls once at once and then every Interval, in a goroutine, until
// Shutdown. A failing poll does not stop it. Start returns an error only if
// the Source was already started.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("sqlsource: already started")
	}
	s.started = true
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Go(func() { s.run(runCtx) })
	return nil
}

func (s *Source) run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		_ = s.Poll(ctx) // counted and logged by Poll
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Shutdown stops the polling goroutine, waiting for a poll in progress (at
// most Timeout) or until ctx ends, and closes the database. It returns ctx's
// error if ctx ended first. Calling it again does nothing more.
func (s *Source) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("stop sqlsource: %w", ctx.Err())
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s database: %w", s.cfg.Driver, err)
	}
	return nil
}

// checkpoint is one row of the checkpoints query.
type checkpoint struct {
	projection string
	position   int64
}

// Poll runs one round of both queries within Timeout and updates the
// metrics. On error it counts it, leaves every gauge as it was, and returns
// it.
func (s *Source) Poll(ctx context.Context) error {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	cps, skipped, err := s.checkpoints(ctx)
	if err != nil {
		return s.failed(queryCheckpoints, err)
	}
	var head int64
	if err := s.db.QueryRowContext(ctx, s.cfg.HeadQuery).Scan(&head); err != nil {
		return s.failed(queryHead, fmt.Errorf("run head query: %w", err))
	}

	for reason, n := range skipped {
		s.metrics.skipped.WithLabelValues(reason).Add(float64(n))
	}
	s.metrics.head.WithLabelValues().Set(float64(head))
	seen := make(map[string]bool, len(cps))
	for _, cp := range cps {
		seen[cp.projection] = true
		s.exported[cp.projection] = true
		// Clamped: a checkpoint past the head means the two queries look at
		// different stores, not a projection ahead of the events.
		s.metrics.positionLag.WithLabelValues(cp.projection).Set(float64(max(head-cp.position, 0)))
	}
	for p := range s.exported {
		if !seen[p] {
			s.metrics.positionLag.DeleteLabelValues(p)
			delete(s.exported, p)
		}
	}
	s.metrics.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
	if s.failing {
		s.failing = false
		s.logger.Info("sqlsource polls succeed again", "driver", s.cfg.Driver)
	}
	return nil
}

// checkpoints runs the checkpoints query and returns the rows to export and
// the number of rows skipped by reason. Projections already exported keep
// their slot; new ones take free slots in row order.
func (s *Source) checkpoints(ctx context.Context) ([]checkpoint, map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, s.cfg.CheckpointsQuery)
	if err != nil {
		return nil, nil, fmt.Errorf("run checkpoints query: %w", err)
	}
	defer rows.Close()
	var (
		all     []checkpoint
		skipped = map[string]int{}
		seen    = map[string]bool{}
	)
	for rows.Next() {
		var (
			name string
			pos  sql.NullInt64
		)
		if err := rows.Scan(&name, &pos); err != nil {
			return nil, nil, fmt.Errorf("read checkpoints row: %w", err)
		}
		switch {
		case name == "":
			skipped[reasonEmptyProjection]++
		case !pos.Valid:
			skipped[reasonNullPosition]++
		case seen[name]:
			skipped[reasonDuplicate]++
		default:
			seen[name] = true
			all = append(all, checkpoint{projection: name, position: pos.Int64})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read checkpoints: %w", err)
	}
	// Slots: exported projections first, then new ones while there is room.
	keep := make([]checkpoint, 0, min(len(all), s.cfg.MaxProjections))
	used := 0
	for _, cp := range all {
		if s.exported[cp.projection] {
			used++
		}
	}
	free := s.cfg.MaxProjections - used
	for _, cp := range all {
		switch {
		case s.exported[cp.projection]:
			keep = append(keep, cp)
		case free > 0:
			keep = append(keep, cp)
			free--
		default:
			skipped[reasonTooManyProjections]++
		}
	}
	return keep, skipped, nil
}

func (s *Source) failed(query string, err error) error {
	s.metrics.errors.WithLabelValues(query).Inc()
	if !s.failing {
		s.failing = true
		s.logger.Warn("sqlsource poll failed; the position metrics keep their last values", "query", query, "err", err)
	} else {
		s.logger.Debug("sqlsource poll failed", "query", query, "err", err)
	}
	return err
}
