package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/lagscope/lagscope/demo"
	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
)

// runDemo is `lagscope demo`: see package demo.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [flags]", stdout)
	sf := newServeFlags(fs)
	oc := app.DefaultConfig()
	oc.Store = ""
	fs.StringVar(&oc.Store, "store", oc.Store, "order system's store: sqlite:PATH, sqlite::memory: or postgres://... (default: a SQLite file in a temporary directory)")
	fs.StringVar(&oc.Listen, "orders.listen", oc.Listen, "`host:port` of the order system's HTTP API")
	bus := string(app.BusStore)
	fs.StringVar(&bus, "bus", bus, "how events reach the projectors: store (they read the store) or kafka (an outbox relay publishes them to --kafka.topic, each projection consumes it with its consumer group)")
	// lagscope serve's own flags may name Kafka brokers too (for its
	// traces): then the demo's bus uses the same cluster.
	brokers, topic := "", oc.Kafka.Topic
	if fs.Lookup("kafka.brokers") == nil {
		fs.StringVar(&brokers, "kafka.brokers", "", "`host:port,...` of the Kafka cluster of --bus kafka (default: an in-process broker on 127.0.0.1)")
	}
	if fs.Lookup("kafka.topic") == nil {
		fs.StringVar(&topic, "kafka.topic", topic, "topic of the order system's events with --bus kafka")
	}
	lc := load.DefaultConfig()
	lc.Rate = 20
	fs.Float64Var(&lc.Rate, "rate", lc.Rate, "commands per second the load generator sends; 0 sends as fast as --concurrency requests go")
	durationVar(fs, &lc.Duration, "duration", "stop after this long (0: until Ctrl-C)")
	fs.Int64Var(&lc.Count, "count", 0, "stop after this many commands (0: no limit)")
	fs.IntVar(&lc.Concurrency, "concurrency", lc.Concurrency, "requests in flight at most")
	var ff demo.FaultFlags
	ff.Register(fs)
	var dc demo.Config
	dc.Interval, dc.Threshold, dc.Window = 2*time.Second, 5*time.Second, 30*time.Second
	durationVar(fs, &dc.Interval, "interval", "time between live summaries")
	durationVar(fs, &dc.Threshold, "lag-threshold", "lag alert threshold the summary evaluates")
	durationVar(fs, &dc.Window, "window", "window of the summary's lag quantiles")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: "demo", err: fmt.Errorf("demo takes no arguments, got %q", fs.Args())}
	}
	if err := checkDemoFlags(lc, dc); err != nil {
		return err
	}
	brokers = fs.Lookup("kafka.brokers").Value.String()
	topic = fs.Lookup("kafka.topic").Value.String()
	switch oc.Bus = app.Bus(bus); {
	case oc.Bus != app.BusStore && oc.Bus != app.BusKafka:
		return demoFlagError("bus", fmt.Errorf("want store or kafka, got %q", bus))
	case oc.Bus == app.BusStore && brokers != "":
		return demoFlagError("kafka.brokers", errors.New("needs --bus kafka"))
	case topic == "":
		return demoFlagError("kafka.topic", errors.New("must not be empty"))
	}
	oc.Kafka.Brokers, oc.Kafka.Topic = kafka.ParseBrokers(brokers), topic
	if lc.Rate == 0 {
		lc.NoRateLimit = true // as `lagscope loadgen --rate=0`
	}
	cfg, err := sf.resolve()
	if err != nil {
		return err
	}
	// In the demo --kafka.brokers names the order system's bus; lagscope
	// receives the spans over OTLP and reads no trace topic.
	cfg.Kafka.Brokers = nil
	// The bus connects as lagscope's Kafka clients would (--kafka.tls.*,
	// --kafka.sasl.*).
	kt, ks := cfg.Kafka.Conn.TLS, cfg.Kafka.Conn.SASL
	oc.Kafka.TLS = kafka.TLSConfig{Enabled: kt.Enabled, CAFile: kt.CAFile, CertFile: kt.CertFile, KeyFile: kt.KeyFile, ServerName: kt.ServerName, InsecureSkipVerify: kt.InsecureSkipVerify}
	oc.Kafka.SASL = kafka.SASLConfig{Mechanism: ks.Mechanism, Username: ks.Username, PasswordFile: ks.PasswordFile}
	projections := oc.Projection.Projections
	if len(projections) == 0 {
		projections = []string{projection.OrdersView, projection.SalesSummary}
	}
	faults, err := ff.Faults(projections, oc.Projection.Faults)
	if fe, ok := errors.AsType[*demo.FlagError](err); ok {
		return demoFlagError(fe.Flag, fe.Err)
	} else if err != nil {
		return &usageError{cmd: "demo", err: err}
	}
	oc.Projection.Faults = faults
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
		dc.Positions = demo.StorePositions(oc.Store)
	}
	if cfg.Join.Expected == nil {
		// The demo knows its projections: every event must reach both, from
		// the first one on (otherwise lagscope learns them as they show up).
		cfg.Join.Expected = map[string][]string{"*": projections}
	}
	dc.Orders, dc.Load = oc, lc
	logger := newLogger(LogConfig{Level: "warn", Format: cfg.Log.Format})
	if cfg.Log.Level != "info" {
		logger = newLogger(cfg.Log)
	}
	d, _, err := newDemo(dc, cfg, logger)
	if err != nil {
		return err
	}
	return d.Run(ctx, stdout)
}

// checkDemoFlags rejects, before anything starts, the values of the demo's
// own flags that would otherwise be replaced by a default or run a
// different demo than asked for.
func checkDemoFlags(lc load.Config, dc demo.Config) error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"interval", dc.Interval},
		{"lag-threshold", dc.Threshold},
		{"window", dc.Window},
	} {
		if d.v <= 0 {
			return demoFlagError(d.flag, fmt.Errorf("must be positive, got %s", d.v))
		}
	}
	switch {
	case lc.Rate < 0:
		return demoFlagError("rate", fmt.Errorf("must not be negative, got %v (0 sends as fast as possible)", lc.Rate))
	case lc.Duration < 0:
		return demoFlagError("duration", fmt.Errorf("must not be negative, got %s", lc.Duration))
	case lc.Count < 0:
		return demoFlagError("count", fmt.Errorf("must not be negative, got %d", lc.Count))
	case lc.Concurrency < 1:
		return demoFlagError("concurrency", fmt.Errorf("must be at least 1, got %d", lc.Concurrency))
	}
	return nil
}

// demoFlagError is a bad value of a demo flag: exit 2, naming the flag.
func demoFlagError(flag string, err error) error {
	return &usageError{cmd: "demo", err: fmt.Errorf("--%s: %w", flag, err)}
}

// newDemo returns a demo that runs and watches a Server of cfg, and the
// Server.
func newDemo(dc demo.Config, cfg Config, logger *slog.Logger) (*demo.Demo, *Server, error) {
	s, err := NewServer(cfg, logger.With("component", "lagscope"))
	if err != nil {
		return nil, nil, err
	}
	d, err := demo.New(dc, demoLagscope{s}, logger, s.Registry)
	return d, s, err
}

// demoLagscope is a Server as the demo sees it.
type demoLagscope struct{ *Server }

func (l demoLagscope) Gather() ([]*dto.MetricFamily, error) { return l.Registry.Gather() }
func (l demoLagscope) Flush()                               { l.Analyzer.Flush() }
func (l demoLagscope) Refresh()                             { l.Analyzer.Tick(time.Now()) }
