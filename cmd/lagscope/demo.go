package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/lagscope/lagscope/collector/sqlsource"
	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// DemoConfig configures `lagscope demo`: lagscope itself, the reference order
// system it watches, and the load generator that drives the order system.
type DemoConfig struct {
	Lagscope Config
	Orders   app.Config
	Load     load.Config
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
	cfg    DemoConfig
	logger *slog.Logger
	Server *Server
	Orders *app.App
	gen    *load.Generator
	source *sqlsource.Source

	loadDone chan struct{}
	loadSum  load.Summary
	loadErr  error
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewDemo builds the demo's parts; nothing runs until Start.
func NewDemo(cfg DemoConfig, logger *slog.Logger) (*Demo, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = 5 * time.Second
	}
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	s, err := NewServer(cfg.Lagscope, logger.With("component", "lagscope"))
	if err != nil {
		return nil, err
	}
	return &Demo{cfg: cfg, logger: logger, Server: s, loadDone: make(chan struct{})}, nil
}

// Start starts lagscope, then the order system exporting to it, then the
// load. On failure it stops what it started.
func (d *Demo) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Shutdown(context.WithoutCancel(ctx)))
		}
	}()
	if err := d.Server.Start(ctx); err != nil {
		return err
	}
	oc := d.cfg.Orders
	oc.OTLP.Endpoint = d.Server.GRPCAddr().String()
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
		src, err := sqlsource.New(d.cfg.Positions, d.logger.With("component", "sqlsource"), d.Server.Registry)
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
	if err := d.Server.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// header is the first line of every summary.
func (d *Demo) header() string {
	return fmt.Sprintf("lagscope demo · OTLP grpc %s http %s · metrics %s · orders http://%s",
		d.Server.GRPCAddr(), d.Server.HTTPAddr(), d.Server.MetricsURL(), d.Orders.Addr())
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
		s, err := takeSnapshot(d.Server.Registry, time.Now())
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
	d.Server.Analyzer.Flush()
	if s, err := takeSnapshot(d.Server.Registry, time.Now()); err == nil {
		view.add(s)
	}
	fmt.Fprintln(out, "\n== Final report ==")
	sum.WriteTo(out)
	fmt.Fprintln(out)
	view.render(out, "lagscope")
	writeFaultReport(out, stats, view)
	err := d.Server.Shutdown(sctx)
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

// positionSource returns the SQL position source's driver and DSN for an
// order system store, or empty strings when it cannot be polled from outside
// (an in-memory database).
func positionSource(store string) (driver, dsn string) {
	switch {
	case strings.HasPrefix(store, "postgres://"), strings.HasPrefix(store, "postgresql://"):
		return sqlsource.DriverPostgres, store
	case strings.HasPrefix(store, "sqlite:") && !strings.Contains(store, ":memory:"):
		return sqlsource.DriverSQLite, strings.TrimPrefix(store, "sqlite:")
	}
	return "", ""
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// perProjection is a flag value "[PROJECTION=]VALUE[,...]": a value without a
// projection applies to every projection.
type perProjection struct {
	name   string
	values map[string]string // "" = every projection
}

func (p *perProjection) String() string {
	var parts []string
	for k, v := range p.values {
		if k == "" {
			parts = append(parts, v)
		} else {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (p *perProjection) Set(s string) error {
	if p.values == nil {
		p.values = map[string]string{}
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			k, v = "", part
		}
		if v == "" {
			return fmt.Errorf("empty value in %q", s)
		}
		p.values[k] = v
	}
	return nil
}

// each calls f for every projection with its value.
func (p *perProjection) each(projections []string, f func(projection, value string) error) error {
	for k := range p.values {
		if k == "" {
			continue
		}
		if !contains(projections, k) {
			return fmt.Errorf("--%s: unknown projection %q (have %s)", p.name, k, strings.Join(projections, ", "))
		}
	}
	for _, proj := range projections {
		v, ok := p.values[proj]
		if !ok {
			v, ok = p.values[""]
		}
		if !ok {
			continue
		}
		if err := f(proj, v); err != nil {
			return fmt.Errorf("--%s: %s: %w", p.name, proj, err)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := newServeFlags(fs)
	oc := app.DefaultConfig()
	oc.Store = ""
	fs.StringVar(&oc.Store, "store", oc.Store, "order system's store: sqlite:PATH, sqlite::memory: or postgres://... (default: a SQLite file in a temporary directory)")
	fs.StringVar(&oc.Listen, "orders.listen", oc.Listen, "`host:port` of the order system's HTTP API")
	lc := load.DefaultConfig()
	lc.Rate = 20
	fs.Float64Var(&lc.Rate, "rate", lc.Rate, "commands per second the load generator sends")
	fs.DurationVar(&lc.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fs.Int64Var(&lc.Count, "count", 0, "stop after this many commands (0: no limit)")
	fs.IntVar(&lc.Concurrency, "concurrency", lc.Concurrency, "requests in flight at most")
	delay := &perProjection{name: "projector-delay"}
	drop := &perProjection{name: "drop-rate"}
	dup := &perProjection{name: "duplicate-rate"}
	stall := &perProjection{name: "stall"}
	fs.Var(delay, "projector-delay", "`[PROJECTION=]D` or D1..D2 (random) delay inside every projection span, e.g. 6s or sales_summary=1s..8s")
	fs.Var(drop, "drop-rate", "`[PROJECTION=]P` probability that a projector skips an event")
	fs.Var(dup, "duplicate-rate", "`[PROJECTION=]P` probability that a projector processes an event twice")
	fs.Var(stall, "stall", "`[PROJECTION=][AFTER+]FOR` a projector stops for FOR, AFTER (default 10s) after start, e.g. sales_summary=20s+30s")
	var dc DemoConfig
	fs.DurationVar(&dc.Interval, "interval", 2*time.Second, "time between live summaries")
	fs.DurationVar(&dc.Threshold, "lag-threshold", 5*time.Second, "lag alert threshold the summary evaluates")
	fs.DurationVar(&dc.Window, "window", 30*time.Second, "window of the summary's lag quantiles")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo takes no arguments, got %q", fs.Args())
	}
	cfg, err := sf.resolve()
	if err != nil {
		return err
	}
	projections := oc.Projection.Projections
	if len(projections) == 0 {
		projections = []string{projection.OrdersView, projection.SalesSummary}
	}
	faults := map[string]projection.Faults{}
	for proj, f := range oc.Projection.Faults {
		faults[proj] = f
	}
	set := func(p *perProjection, apply func(*projection.Faults, string) error) error {
		return p.each(projections, func(proj, v string) error {
			f := faults[proj]
			if err := apply(&f, v); err != nil {
				return err
			}
			faults[proj] = f
			return nil
		})
	}
	errs := []error{
		set(delay, func(f *projection.Faults, v string) error {
			lo, hi, isRange := strings.Cut(v, "..")
			d, err := time.ParseDuration(lo)
			if err != nil {
				return err
			}
			f.Delay = d
			if isRange {
				if f.DelayMax, err = time.ParseDuration(hi); err != nil {
					return err
				}
			}
			return nil
		}),
		set(drop, func(f *projection.Faults, v string) (err error) {
			f.DropRate, err = strconv.ParseFloat(v, 64)
			return err
		}),
		set(dup, func(f *projection.Faults, v string) (err error) {
			f.DuplicateRate, err = strconv.ParseFloat(v, 64)
			return err
		}),
		set(stall, func(f *projection.Faults, v string) error {
			after, forS, ok := strings.Cut(v, "+")
			if !ok {
				after, forS = "10s", v
			}
			var err error
			if f.StallAfter, err = time.ParseDuration(after); err != nil {
				return err
			}
			f.StallFor, err = time.ParseDuration(forS)
			return err
		}),
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	oc.Projection.Faults = faults
	for proj, f := range faults {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("faults of %s: %w", proj, err)
		}
	}
	if isTerminal(stdout) {
		lc.Progress = nil // the live summary is the progress display
	}
	if oc.Store == "" {
		dir, err := os.MkdirTemp("", "lagscope-demo-")
		if err != nil {
			return fmt.Errorf("create the demo's store directory: %w", err)
		}
		defer os.RemoveAll(dir)
		oc.Store = "sqlite:" + filepath.Join(dir, "orders.db")
	}
	if cfg.SQLSource.DSN == "" {
		// Watch the store's positions too: cqrs_projection_position_lag.
		dc.Positions = sqlsource.DefaultConfig()
		dc.Positions.Interval, dc.Positions.Timeout = time.Second, time.Second
		dc.Positions.Driver, dc.Positions.DSN = positionSource(oc.Store)
	}
	if cfg.Join.Expected == nil {
		// The demo knows its projections: every event must reach both, from
		// the first one on (otherwise lagscope learns them as they show up).
		cfg.Join.Expected = map[string][]string{"*": projections}
	}
	dc.Lagscope, dc.Orders, dc.Load = cfg, oc, lc
	logger := newLogger(LogConfig{Level: "warn", Format: cfg.Log.Format})
	if cfg.Log.Level != "info" {
		logger = newLogger(cfg.Log)
	}
	d, err := NewDemo(dc, logger)
	if err != nil {
		return err
	}
	return d.Run(ctx, stdout)
}
