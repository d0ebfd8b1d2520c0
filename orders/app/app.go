// Package app runs the order system as one process with a role: all (every
// part), command (the command API), projector (the projectors) or query (the
// query API). The demo embeds it; cmd/orders wraps it in flags.
//
// Events reach the projectors over a bus (Config.Bus): the store itself by
// default, or Kafka (orders/kafka), where the command and all roles run the
// outbox relay and the projector and all roles consume the topic with a
// consumer group per projection.
//
// Besides the API of orders/httpapi, an App serves GET /healthz and, when it
// runs projectors, GET /projections with the projectors' counters
// ([]projection.Stats as JSON).
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/command"
	"github.com/lagscope/lagscope/orders/httpapi"
	"github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/postgres"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/sqlite"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// App is one process of the order system. Start it once, then Shutdown it
// (or use Run). Its methods are safe for concurrent use after Start.
type App struct {
	cfg    Config
	logger *slog.Logger
	db     database
	tp     trace.TracerProvider
	ownTP  interface{ Shutdown(context.Context) error }
	runner *projection.Runner
	relay  *kafka.Relay
	feeds  []*kafka.Feed
	srv    *http.Server

	ln       net.Listener
	wg       sync.WaitGroup
	serveMu  sync.Mutex
	serveErr error
	done     chan struct{} // closed when the HTTP server stops serving

	shutdownOnce sync.Once
	shutdownErr  error

	newMu    sync.Mutex
	newConns map[net.Conn]struct{} // accepted, no request read yet
}

// trackNew keeps the connections that have not sent a request yet.
// http.Server.Shutdown takes such a connection for idle only once it is 5s
// old, and a client's Transport leaves one behind whenever a dial it
// started lost the race to a connection that became idle: Shutdown then
// waited 5s for nothing.
func (a *App) trackNew(c net.Conn, s http.ConnState) {
	a.newMu.Lock()
	defer a.newMu.Unlock()
	if s == http.StateNew {
		if a.newConns == nil {
			a.newConns = map[net.Conn]struct{}{}
		}
		a.newConns[c] = struct{}{}
		return
	}
	delete(a.newConns, c)
}

// closeNew closes the connections that have sent no request.
func (a *App) closeNew() {
	a.newMu.Lock()
	defer a.newMu.Unlock()
	for c := range a.newConns {
		c.Close()
	}
}

// database is what both store implementations provide.
type database interface {
	orders.Store
	orders.Views
	Close() error
}

// openStore opens the store that cfg.Store names.
func openStore(ctx context.Context, store string, logger *slog.Logger) (database, error) {
	if isPostgres(store) {
		return postgres.Open(ctx, store, logger)
	}
	path, err := sqlitePath(store)
	if err != nil {
		return nil, err
	}
	return sqlite.Open(ctx, path)
}

// New opens the store and builds the parts that cfg.Role needs. It listens
// and starts nothing: see Start. logger may be nil.
func New(cfg Config, logger *slog.Logger) (*App, error) {
	if cfg.Role == "" {
		cfg.Role = RoleAll
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("orders config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Every part propagates the trace context as OTEL_PROPAGATORS says
	// (W3C trace context by default, B3 with b3 or b3multi).
	if err := telemetry.UsePropagatorsFromEnv(); err != nil {
		return nil, fmt.Errorf("orders config: %w", err)
	}
	a := &App{cfg: cfg, logger: logger, done: make(chan struct{})}
	ctx := context.Background()
	a.tp = cfg.TracerProvider
	if a.tp == nil {
		otlp := cfg.OTLP
		if otlp.ServiceName == "" {
			otlp.ServiceName = cfg.Role.ServiceName()
		}
		tp, err := telemetry.NewTracerProvider(ctx, otlp)
		if err != nil {
			return nil, err
		}
		a.tp, a.ownTP = tp, tp
	}
	db, err := openStore(ctx, cfg.Store, logger)
	if err != nil {
		return nil, errors.Join(err, a.closeTP(ctx))
	}
	a.db = db
	if cfg.Bus == BusKafka && cfg.Role.commands() {
		a.relay, err = kafka.NewRelay(cfg.Kafka, db, db, a.tp, logger.With("component", "relay"))
		if err != nil {
			return nil, errors.Join(err, db.Close(), a.closeTP(ctx))
		}
	}
	if cfg.Role.projectors() {
		pc := cfg.Projection
		if cfg.Bus == BusKafka {
			if pc, err = a.kafkaFeeds(pc); err != nil {
				return nil, errors.Join(err, a.closeFeeds(), db.Close(), a.closeTP(ctx))
			}
		}
		a.runner, err = projection.New(pc, db, db, a.tp, logger)
		if err != nil {
			return nil, errors.Join(err, a.closeFeeds(), db.Close(), a.closeTP(ctx))
		}
	}
	if cfg.Listen != "" {
		api := httpapi.Config{TracerProvider: a.tp, Logger: logger}
		if cfg.Role.commands() {
			api.Commands = command.New(db, a.tp, cfg.Command)
		}
		if cfg.Role.queries() {
			api.Views = db
		}
		mux := http.NewServeMux()
		mux.Handle("/", httpapi.New(api))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, "{\"status\":\"ok\",\"role\":%q}\n", cfg.Role)
		})
		if a.runner != nil {
			mux.HandleFunc("GET /projections", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(a.runner.Stats())
			})
		}
		a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
			ConnState: a.trackNew}
	}
	return a, nil
}

// kafkaFeeds returns pc with a Kafka feed for each of its projections,
// consumer group = projection name.
func (a *App) kafkaFeeds(pc projection.Config) (projection.Config, error) {
	names := pc.Projections
	if len(names) == 0 {
		names = projection.Names
	}
	pc.Feeds = make(map[string]projection.Feed, len(names))
	for _, name := range names {
		f, err := kafka.NewFeed(a.cfg.Kafka, name, a.logger.With("component", "feed", "group", name))
		if err != nil {
			return pc, err
		}
		a.feeds = append(a.feeds, f)
		pc.Feeds[name] = f
	}
	return pc, nil
}

func (a *App) closeFeeds() error {
	var errs []error
	for _, f := range a.feeds {
		errs = append(errs, f.Close())
	}
	a.feeds = nil
	return errors.Join(errs...)
}

// Start starts the projectors, the outbox relay (Kafka bus) and the HTTP
// server, and returns once the server listens. On error it rolls back what
// it started.
func (a *App) Start(ctx context.Context) error {
	if len(a.feeds) > 0 {
		// The projectors may start before any relay created the topic.
		if err := kafka.EnsureTopic(ctx, a.cfg.Kafka); err != nil {
			return errors.Join(err, a.Shutdown(ctx))
		}
	}
	if a.relay != nil {
		if err := a.relay.Start(ctx); err != nil {
			return errors.Join(err, a.Shutdown(ctx))
		}
	}
	if a.runner != nil {
		if err := a.runner.Start(ctx); err != nil {
			return errors.Join(err, a.Shutdown(ctx))
		}
	}
	if a.srv == nil {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s: %w", a.cfg.Listen, err), a.Shutdown(ctx))
	}
	a.ln = ln
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveMu.Lock()
			a.serveErr = fmt.Errorf("serve http: %w", err)
			a.serveMu.Unlock()
		}
	}()
	a.logger.Info("orders started", "role", a.cfg.Role, "addr", ln.Addr().String(), "store", redactStore(a.cfg.Store))
	return nil
}

// Addr returns the address the HTTP server listens on ("" before Start or
// without HTTP).
func (a *App) Addr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Store returns the event store (for tests and the demo).
func (a *App) Store() orders.Store { return a.db }

// Views returns the read models (for tests and the demo).
func (a *App) Views() orders.Views { return a.db }

// Projections returns the projectors' counters, or nil when this role runs
// none. Compare Dropped and Duplicated with what lagscope reports.
func (a *App) Projections() []projection.Stats {
	if a.runner == nil {
		return nil
	}
	return a.runner.Stats()
}

// Relay returns the outbox relay's counters, and false when this process
// runs no relay (the store bus, or a role without commands).
func (a *App) Relay() (kafka.RelayStats, bool) {
	if a.relay == nil {
		return kafka.RelayStats{}, false
	}
	return a.relay.Stats(), true
}

// Shutdown stops the HTTP server (waiting for requests in flight), then the
// projectors (and their Kafka feeds, leaving their consumer groups), then
// the relay, flushes spans (shutting down the tracer provider it built) and
// closes the store. It honours ctx's deadline, returns the first error, and
// is idempotent.
func (a *App) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() {
		var errs []error
		if a.srv != nil && a.ln != nil {
			a.srv.SetKeepAlivesEnabled(false)
			a.closeNew()
			errs = append(errs, a.srv.Shutdown(ctx))
			a.wg.Wait()
		}
		if a.runner != nil {
			errs = append(errs, a.runner.Shutdown(ctx))
		}
		errs = append(errs, a.closeFeeds())
		if a.relay != nil {
			errs = append(errs, a.relay.Shutdown(ctx))
		}
		errs = append(errs, a.closeTP(ctx), a.db.Close())
		for _, err := range errs {
			if err != nil {
				a.shutdownErr = err
				break
			}
		}
	})
	return a.shutdownErr
}

func (a *App) closeTP(ctx context.Context) error {
	if a.ownTP != nil {
		if err := a.ownTP.Shutdown(ctx); err != nil {
			return fmt.Errorf("shut down tracer provider: %w", err)
		}
		return nil
	}
	if f, ok := a.tp.(interface{ ForceFlush(context.Context) error }); ok {
		if err := f.ForceFlush(ctx); err != nil {
			return fmt.Errorf("flush spans: %w", err)
		}
	}
	return nil
}

// ShutdownTimeout bounds the Shutdown that Run does after ctx ends.
const ShutdownTimeout = 10 * time.Second

// Run starts the App, waits until ctx ends or the HTTP server fails, then
// shuts down within ShutdownTimeout. It returns nil after a clean stop.
func (a *App) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	var serverDone <-chan struct{} // nil without HTTP: wait for ctx only
	if a.srv != nil {
		serverDone = a.done
	}
	select {
	case <-ctx.Done():
	case <-serverDone:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := a.Shutdown(sctx)
	a.serveMu.Lock()
	defer a.serveMu.Unlock()
	return errors.Join(a.serveErr, err)
}
