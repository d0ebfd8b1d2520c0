// Package demo is `lagscope demo`: a lagscope, the reference order system
// exporting its traces to it, and the order system's load generator, in one
// process, with a live summary of what lagscope measures read from the same
// metrics Prometheus scrapes, and a final report that sets the faults
// injected into the projectors against what lagscope found.
//
// The demo does not build the lagscope it runs: the caller hands it one (in
// `lagscope demo`, the server `lagscope serve` runs) as a Lagscope.
//
// With the Kafka bus (Config.Orders.Bus = app.BusKafka) and no brokers
// configured, the demo starts an in-process Kafka-protocol broker
// (github.com/twmb/franz-go/pkg/kfake) on 127.0.0.1, so that it stays one
// command; with brokers it uses that cluster.
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
	"github.com/twmb/franz-go/pkg/kfake"
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
	// for the join deadline: the demo calls it once every span has arrived
	// and every projector has passed every event.
	Flush()
	// Refresh brings the pending gauges up to date now (they are otherwise
	// refreshed on the analysis' own tick), declaring unprojected only what
	// is past its deadline.
	Refresh()
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
	// DrainTimeout bounds how long Run, once the load has stopped, waits
	// for the projectors to reach the store's head (to show the events
	// their --projector-delay holds) before it stops the order system.
	// Default 10s.
	DrainTimeout time.Duration
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
	broker *kfake.Cluster // the in-process Kafka broker, if the demo started one

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
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
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
	if oc.Bus == app.BusKafka && len(oc.Kafka.Brokers) == 0 {
		broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, "127.0.0.1:0")
		}))
		if err != nil {
			return fmt.Errorf("start in-process Kafka broker: %w", err)
		}
		d.broker = broker
		oc.Kafka.Brokers = broker.ListenAddrs()
	}
	d.cfg.Orders.Kafka.Brokers = oc.Kafka.Brokers // for the header
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
	d.stopBroker()
	if err := d.lagscope.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopBroker stops the in-process Kafka broker, if the demo started one,
// once the order system has stopped.
func (d *Demo) stopBroker() {
	if d.broker != nil {
		d.broker.Close()
		d.broker = nil
	}
}

// header is the first line of every summary.
func (d *Demo) header() string {
	h := fmt.Sprintf("lagscope demo · OTLP grpc %s http %s · metrics %s · orders http://%s",
		d.lagscope.GRPCAddr(), d.lagscope.HTTPAddr(), d.lagscope.MetricsURL(), d.Orders.Addr())
	if oc := d.cfg.Orders; oc.Bus == app.BusKafka {
		where := "in-process broker"
		if d.broker == nil {
			where = "brokers"
		}
		h += fmt.Sprintf(" · kafka topic %s, %s %s", oc.Kafka.Topic, where, strings.Join(oc.Kafka.Brokers, ","))
	}
	return h
}

// Run starts the demo and prints a live summary every Interval until ctx is
// cancelled (Ctrl-C) or the load is done, then a final report. On a
// terminal the summary is redrawn in place, sized to the terminal;
// elsewhere (a pipe, a file) it is plain key=value lines.
//
// Once the load has stopped, Run waits up to DrainTimeout for the
// projectors to show what they hold, so that events delayed by a fault are
// not mistaken for lost ones; what is still not shown then is reported as
// pending, apart from the unprojected events.
func (d *Demo) Run(ctx context.Context, out io.Writer) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	view := &liveView{threshold: d.cfg.Threshold, window: d.cfg.Window, start: time.Now()}
	tty := isTerminal(out)
	width, height := 0, 0
	if tty {
		width, height = terminalSize(out)
	}
	intro := func(width int) []string {
		lines := pack(width, " · ", "  ", strings.Split(d.header(), " · ")...)
		lines = append(lines, "", "Running until Ctrl-C"+d.until()+".")
		return append(append(lines, legend(width)...), "")
	}
	writeLines(out, intro(width))
	// The first snapshot is the start: rates and the clock count from it.
	if s, err := takeSnapshot(d.lagscope, view.start); err == nil {
		view.add(s)
	}
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	drawn := 0 // lines of the frame on screen
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
		now := time.Now()
		s, err := takeSnapshot(d.lagscope, now)
		if err != nil {
			return err
		}
		view.add(s)
		if !tty {
			stamp := now.Format("15:04:05")
			writeLines(out, view.plain(stamp))
			writeLines(out, d.faultsPlain(stamp))
			continue
		}
		var b bytes.Buffer
		if w, h := terminalSize(out); w != width || h != height {
			// Resized: the lines on screen may have been rewrapped, so
			// the rows to move up are unknown. Start over on a clear
			// screen instead (the old one stays in the scrollback).
			width, height, drawn = w, h, 0
			b.WriteString("\x1b[H\x1b[2J")
			writeLines(&b, intro(width))
		}
		lines := view.frame(now.Format("15:04:05"), width)
		lines = append(lines, "")
		lines = append(lines, d.faults(width)...)
		// Every line fits the terminal, so the frame takes as many rows
		// as it has lines, and moving up that many redraws it in place.
		lines = fit(lines, width, height-1)
		if drawn > 0 {
			fmt.Fprintf(&b, "\x1b[%dA\x1b[J", drawn)
		}
		writeLines(&b, lines)
		out.Write(b.Bytes())
		drawn = len(lines)
	}
	fmt.Fprintln(out)
	writeLines(out, pack(width, "", "", fmt.Sprintf("Stopping: the load, then the projectors show what they hold (up to %s), then the order system flushes its spans to lagscope...", d.cfg.DrainTimeout)))
	if d.cancel != nil {
		d.cancel()
	}
	sum, loadErr := d.LoadSummary()
	caughtUp := d.drain(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
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
	d.stopBroker()
	stats := d.Orders.Projections()
	if caughtUp {
		// Every projector has passed every event and every span has
		// arrived: what is still pending now was dropped and will never
		// be shown, so evaluate it without waiting for the join deadline.
		// Otherwise pending events may be held by a delay or a stall, and
		// stay pending in the report rather than be called unprojected.
		d.lagscope.Flush()
	} else {
		d.lagscope.Refresh()
	}
	if s, err := takeSnapshot(d.lagscope, time.Now()); err == nil {
		view.add(s)
	}
	fmt.Fprintln(out, "\n== Final report ==")
	sum.WriteTo(out)
	fmt.Fprintln(out)
	writeLines(out, view.frame("lagscope", width))
	writeFaultReport(out, width, stats, view, caughtUp)
	err := d.lagscope.Shutdown(sctx)
	if loadErr != nil && !errors.Is(loadErr, context.Canceled) {
		err = errors.Join(err, fmt.Errorf("load: %w", loadErr))
	}
	return err
}

// drain waits, up to DrainTimeout, until every projector that is not
// stalled has reached the store's head, and reports whether every projector
// has (a stalled one cannot, and is not waited for).
func (d *Demo) drain(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.DrainTimeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		head, err := d.Orders.Store().Head(ctx)
		if err != nil {
			d.logger.Warn("read the store's head", "err", err)
			return false
		}
		all, waiting := true, false
		for _, s := range d.Orders.Projections() {
			if s.Checkpoint < head {
				all = false
				waiting = waiting || !s.Stalled
			}
		}
		if all || !waiting {
			return all
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
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

// faults shows, under the live table, what the fault knobs did, so the
// reader can compare injected faults with what lagscope detected.
func (d *Demo) faults(width int) []string {
	c := d.gen.Counters()
	lines := pack(width, ", ", "  ",
		fmt.Sprintf("load: %d commands (%d failed)", c.Commands, c.Failed),
		fmt.Sprintf("%d reads after write (%d stale, %d not yet projected)", c.Reads, c.Stale, c.Missing),
		fmt.Sprintf("%d in flight", c.InFlight))
	for _, s := range d.Orders.Projections() {
		if s.Dropped+s.Duplicated+s.Stalls > 0 {
			state := ""
			if s.Stalled {
				state = " (stalled now)"
			}
			lines = append(lines, pack(width, ", ", "  ", "injected in "+s.Projection+": "+
				fmt.Sprintf("%d dropped", s.Dropped), fmt.Sprintf("%d duplicated", s.Duplicated), fmt.Sprintf("%d stall(s)%s", s.Stalls, state))...)
		}
	}
	return lines
}

// faultsPlain is faults as key=value lines.
func (d *Demo) faultsPlain(stamp string) []string {
	c := d.gen.Counters()
	lines := []string{fmt.Sprintf("%s load commands=%d failed=%d reads=%d stale=%d not_yet_projected=%d in_flight=%d",
		stamp, c.Commands, c.Failed, c.Reads, c.Stale, c.Missing, c.InFlight)}
	for _, s := range d.Orders.Projections() {
		if s.Dropped+s.Duplicated+s.Stalls > 0 {
			lines = append(lines, fmt.Sprintf("%s injected projection=%s dropped=%d duplicated=%d stalls=%d stalled=%t",
				stamp, s.Projection, s.Dropped, s.Duplicated, s.Stalls, s.Stalled))
		}
	}
	return lines
}

// writeFaultReport sets what the projectors did against what lagscope
// found. caughtUp says whether every projector reached the store's head
// before the order system stopped (see Run).
func writeFaultReport(w io.Writer, width int, stats []projection.Stats, view *liveView, caughtUp bool) {
	_, _, rows := view.rows()
	byName := map[string]projRow{}
	for _, r := range rows {
		byName[r.name] = r
	}
	note := "the projectors did not all catch up with the store: pending events were not shown when the demo stopped (held by a delay or a stall), and are not counted as unprojected"
	if caughtUp {
		note = "the projectors caught up with the store: an event still not shown will never be, and counts as unprojected"
	}
	fmt.Fprintln(w)
	writeLines(w, pack(width, " ", "", "Injected faults vs lagscope's findings ("+note+"):"))
	for _, s := range stats {
		r := byName[s.Projection]
		writeLines(w, pack(width, "; ", "      ",
			fmt.Sprintf("  %-14s projected by the projector %d, seen by lagscope %.0f", s.Projection, s.Projected, r.projected),
			fmt.Sprintf("dropped %d, unprojected %.0f", s.Dropped, r.unprojected),
			fmt.Sprintf("duplicated %d, duplicates seen %.0f", s.Duplicated, r.duplicated),
			fmt.Sprintf("pending at stop %.0f", r.pending)))
	}
}

// StorePositions returns the config of a SQL position source that polls the
// order system's store (app.Config.Store) every second, for
// cqrs_projection_position_lag. Its DSN is empty when the store cannot be
// polled from outside (an in-memory database).
func StorePositions(store string) sqlsource.Config {
	c := sqlsource.DefaultConfig()
	c.Interval, c.Timeout = time.Second, time.Second
	// The Kafka bus's outbox relay keeps its checkpoint among the
	// projections' (orders/kafka.CheckpointName): it is no projection.
	c.CheckpointsQuery = `SELECT projection, position FROM checkpoints WHERE projection NOT LIKE 'relay:%' ORDER BY projection`
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

// terminalSize returns the size of the terminal w is, 80x24 if it cannot
// be read.
func terminalSize(w io.Writer) (width, height int) {
	if f, ok := w.(*os.File); ok {
		if width, height, err := term.GetSize(int(f.Fd())); err == nil && width > 0 && height > 0 {
			return width, height
		}
	}
	return 80, 24
}

func writeLines(w io.Writer, lines []string) {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	w.Write(b.Bytes())
}
