// Package demo is `lagscope demo`: a lagscope, the reference order system
// exporting its traces to it, and the order system's load generator, in one
// process, with a live summary of what lagscope measures read from the same
// metrics Prometheus scrapes, and a final report that sets the faults
// injected into the projectors against what lagscope found.
//
// The demo does not build the lagscope it runs: the caller hands it one (in
// `lagscope demo`, the server `lagscope serve` runs) as a Lagscope.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/term"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
	"github.com/lagscope/lagscope/sqlsource"
)

// Lagscope is what the demo needs of the lagscope it runs and watches.
type Lagscope interface {
	// Start listens on every endpoint; Shutdown stops receiving first, so
	// that nothing accepted is lost, and waits within ctx.
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
	// GRPCAddr and HTTPAddr are the OTLP endpoints after Start. The order
	// system exports to GRPCAddr.
	GRPCAddr() net.Addr
	HTTPAddr() net.Addr
	// MetricsURL is the URL Prometheus would scrape, after Start.
	MetricsURL() string
	// Gatherer reads lagscope's metrics, the series behind MetricsURL: the
	// live summary shows what a dashboard would.
	prometheus.Gatherer
	// Flush evaluates every event the analysis holds now, without waiting
	// for the join deadline: the demo calls it once every span has arrived.
	Flush()
}

// Config configures the demo: the reference order system lagscope watches,
// and the load generator that drives the order system.
type Config struct {
	Orders app.Config
	Load   load.Config
	// Interval between two live summaries. Default 2s.
	Interval time.Duration
	// Threshold of the lag alert the summary evaluates. Default 5s.
	Threshold time.Duration
	// Window over which the summary's lag quantiles are computed. Default 30s.
	Window time.Duration
	// Positions, when its DSN is set, polls the order system's store for
	// cqrs_projection_position_lag once the order system has created it.
	Positions sqlsource.Config
}

// Demo runs lagscope, the order system and the load generator in one process.
type Demo struct {
	cfg      Config
	logger   *slog.Logger
	lagscope Lagscope
	reg      prometheus.Registerer
	// Orders is the order system, once Start has started it.
	Orders *app.App
	gen    *load.Generator
	source *sqlsource.Source

	loadDone chan struct{}
	loadSum  load.Summary
	loadErr  error
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// New returns a demo of the order system watched by ls; nothing runs until
// Start. The SQL position source (cfg.Positions) registers its metrics with
// reg, which should be the registry ls gathers, for the summary to show them.
func New(cfg Config, ls Lagscope, logger *slog.Logger, reg prometheus.Registerer) (*Demo, error) {
	if ls == nil {
		return nil, errors.New("demo: nil Lagscope")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = 5 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Demo{cfg: cfg, logger: logger, lagscope: ls, reg: reg, loadDone: make(chan struct{})}, nil
}

// Start starts lagscope, then the order system exporting to it, then the
// load. On failure it stops what it started.
func (d *Demo) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Shutdown(context.WithoutCancel(ctx)))
		}
	}()
	if err := d.lagscope.Start(ctx); err != nil {
		return err
	}
	oc := d.cfg.Orders
	oc.OTLP.Endpoint = d.lagscope.GRPCAddr().String()
	oc.OTLP.Protocol = telemetry.ProtocolGRPC
	orders, err := app.New(oc, d.logger.With("component", "orders"))
	if err != nil {
		return err
	}
	if err := orders.Start(ctx); err != nil {
		return fmt.Errorf("start order system: %w", err)
	}
	d.Orders = orders
	if d.cfg.Positions.DSN != "" {
		src, err := sqlsource.New(d.cfg.Positions, d.logger.With("component", "sqlsource"), d.reg)
		if err != nil {
			return err
		}
		if err := src.Start(ctx); err != nil {
			return fmt.Errorf("start SQL position source: %w", err)
		}
		d.source = src
	}
	lc := d.cfg.Load
	lc.BaseURL = "http://" + orders.Addr()
	gen, err := load.New(lc)
	if err != nil {
		return err
	}
	d.gen = gen
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(d.loadDone)
		d.loadSum, d.loadErr = gen.Run(lctx)
	}()
	return nil
}

// LoadDone is closed when the load generator has finished (its duration or
// count reached, or Shutdown).
func (d *Demo) LoadDone() <-chan struct{} { return d.loadDone }

// LoadSummary returns the load generator's summary once LoadDone is closed.
func (d *Demo) LoadSummary() (load.Summary, error) {
	<-d.loadDone
	return d.loadSum, d.loadErr
}

// Shutdown stops the load, then the order system (which flushes its spans to
// lagscope), then lagscope.
func (d *Demo) Shutdown(ctx context.Context) error {
	var errs []error
	if d.cancel != nil {
		d.cancel()
		d.wg.Wait()
	}
	if d.source != nil {
		if err := d.source.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Orders != nil {
		if err := d.Orders.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop order system: %w", err))
		}
	}
	if err := d.lagscope.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// header is the first line of every summary.
func (d *Demo) header() string {
	return fmt.Sprintf("lagscope demo · OTLP grpc %s http %s · metrics %s · orders http://%s",
		d.lagscope.GRPCAddr(), d.lagscope.HTTPAddr(), d.lagscope.MetricsURL(), d.Orders.Addr())
}

// Run starts the demo and prints a live summary every Interval until ctx is
// cancelled (Ctrl-C) or the load is done, then a final report.
func (d *Demo) Run(ctx context.Context, out io.Writer) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\n\nRunning until Ctrl-C%s.\n\n", d.header(), d.until())
	view := &liveView{threshold: d.cfg.Threshold, window: d.cfg.Window}
	tty := isTerminal(out)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	drawn := 0
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
			continue
		case <-d.loadDone:
			running = false
			continue
		case <-t.C:
		}
		s, err := takeSnapshot(d.lagscope, time.Now())
		if err != nil {
			return err
		}
		view.add(s)
		var b bytes.Buffer
		view.render(&b, time.Now().Format("15:04:05"))
		d.renderFaults(&b)
		if tty && drawn > 0 {
			fmt.Fprintf(out, "\x1b[%dA\x1b[J", drawn) // redraw in place
		} else if drawn > 0 {
			fmt.Fprintln(out)
		}
		out.Write(b.Bytes())
		drawn = countLines(b.String())
	}
	fmt.Fprintln(out, "\nStopping: load first, then the order system flushes its spans to lagscope...")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if d.cancel != nil {
		d.cancel()
	}
	sum, loadErr := d.LoadSummary()
	if d.source != nil {
		_ = d.source.Poll(sctx) // the final positions, for the report
		if err := d.source.Shutdown(sctx); err != nil {
			d.logger.Warn("stop SQL position source", "err", err)
		}
		d.source = nil
	}
	if err := d.Orders.Shutdown(sctx); err != nil {
		d.logger.Warn("stop order system", "err", err)
	}
	stats := d.Orders.Projections()
	// Every span the order system will ever send has arrived: what is still
	// pending now will never be shown, so evaluate it without waiting for the
	// join deadline.
	d.lagscope.Flush()
	if s, err := takeSnapshot(d.lagscope, time.Now()); err == nil {
		view.add(s)
	}
	fmt.Fprintln(out, "\n== Final report ==")
	sum.WriteTo(out)
	fmt.Fprintln(out)
	view.render(out, "lagscope")
	writeFaultReport(out, stats, view)
	err := d.lagscope.Shutdown(sctx)
	if loadErr != nil && !errors.Is(loadErr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("load: %w", loadErr))
	}
	return err
}

func (d *Demo) until() string {
	var parts []string
	if d.cfg.Load.Duration > 0 {
		parts = append(parts, "for "+d.cfg.Load.Duration.String())
	}
	if d.cfg.Load.Count > 0 {
		parts = append(parts, fmt.Sprintf("%d commands", d.cfg.Load.Count))
	}
	if len(parts) == 0 {
		return ""
	}
	return " or " + strings.Join(parts, " or ")
}

// renderFaults shows, under the live table, what the fault knobs did, so the
// reader can compare injected faults with what lagscope detected.
func (d *Demo) renderFaults(w io.Writer) {
	c := d.gen.Counters()
	fmt.Fprintf(w, "\nload: %d commands (%d failed), %d reads after write (%d stale, %d not yet projected), %d in flight\n",
		c.Commands, c.Failed, c.Reads, c.Stale, c.Missing, c.InFlight)
	for _, s := range d.Orders.Projections() {
		if s.Dropped+s.Duplicated+s.Stalls > 0 {
			state := ""
			if s.Stalled {
				state = " (stalled now)"
			}
			fmt.Fprintf(w, "injected in %s: %d dropped, %d duplicated, %d stall(s)%s\n", s.Projection, s.Dropped, s.Duplicated, s.Stalls, state)
		}
	}
}

func writeFaultReport(w io.Writer, stats []projection.Stats, view *liveView) {
	_, _, rows := view.rows()
	byName := map[string]projRow{}
	for _, r := range rows {
		byName[r.name] = r
	}
	fmt.Fprintln(w, "\nInjected faults vs lagscope's findings (at the end, every event a projection has not shown counts as unprojected):")
	for _, s := range stats {
		r := byName[s.Projection]
		fmt.Fprintf(w, "  %-14s projected by the projector %d, seen by lagscope %.0f; dropped %d, unprojected %.0f; duplicated %d, duplicates seen %.0f\n",
			s.Projection, s.Projected, r.projected, s.Dropped, r.unprojected, s.Duplicated, r.duplicated)
	}
}

// StorePositions returns the config of a SQL position source that polls the
// order system's store (app.Config.Store) every second, for
// cqrs_projection_position_lag. Its DSN is empty when the store cannot be
// polled from outside (an in-memory database).
func StorePositions(store string) sqlsource.Config {
	c := sqlsource.DefaultConfig()
	c.Interval, c.Timeout = time.Second, time.Second
	switch {
	case strings.HasPrefix(store, "postgres://"), strings.HasPrefix(store, "postgresql://"):
		c.Driver, c.DSN = sqlsource.DriverPostgres, store
	case strings.HasPrefix(store, "sqlite:") && !strings.Contains(store, ":memory:"):
		c.Driver, c.DSN = sqlsource.DriverSQLite, strings.TrimPrefix(store, "sqlite:")
	default:
		c.Driver, c.DSN = "", ""
	}
	return c
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
