package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/sqlsource"
)

// Config is every setting of `lagscope serve`, as read from lagscope.yaml.
// Flags override the file; the file overrides the defaults.
type Config struct {
	OTLP    OTLPConfig    `yaml:"otlp"`
	Web     WebConfig     `yaml:"web"`
	Join    JoinConfig    `yaml:"join"`
	Metrics MetricsConfig `yaml:"metrics"`
	Log     LogConfig     `yaml:"log"`
	// SQLSource, when its DSN is set, polls the event store's head position
	// and each projection's checkpoint (cqrs_projection_position_lag).
	SQLSource SQLSourceConfig `yaml:"sql_source"`
	// AnalysisDisabled wires the receivers to a consumer that drops every
	// request (hidden flag --analysis.disabled): to measure receiving alone.
	AnalysisDisabled bool `yaml:"-"`
}

// OTLPConfig configures the OTLP receivers.
type OTLPConfig struct {
	GRPCEndpoint     string        `yaml:"grpc_endpoint"`
	HTTPEndpoint     string        `yaml:"http_endpoint"`
	MaxRequestBytes  int64         `yaml:"max_request_bytes"`
	MaxInflightBytes int64         `yaml:"max_inflight_bytes"`
	RetryAfter       time.Duration `yaml:"retry_after"`
	// LazyDecode reads only what the analysis needs from protobuf requests.
	LazyDecode bool `yaml:"lazy_decode"`
}

// WebConfig configures the metrics endpoint.
type WebConfig struct {
	ListenAddress string `yaml:"listen_address"`
	TelemetryPath string `yaml:"telemetry_path"`
}

// JoinConfig configures the join of spans into events.
type JoinConfig struct {
	Deadline              time.Duration       `yaml:"deadline"`
	CommandWait           time.Duration       `yaml:"command_wait"`
	Retention             time.Duration       `yaml:"retention"`
	MaxPendingEvents      int                 `yaml:"max_pending_events"`
	MaxPendingProjections int                 `yaml:"max_pending_projections"`
	MaxTraceSpans         int                 `yaml:"max_trace_spans"`
	Expected              map[string][]string `yaml:"expected"`
}

// SQLSourceConfig configures the optional SQL position source.
type SQLSourceConfig struct {
	Driver           string        `yaml:"driver"`
	DSN              string        `yaml:"dsn"`
	Interval         time.Duration `yaml:"interval"`
	Timeout          time.Duration `yaml:"timeout"`
	HeadQuery        string        `yaml:"head_query"`
	CheckpointsQuery string        `yaml:"checkpoints_query"`
	MaxProjections   int           `yaml:"max_projections"`
}

// PositionSource returns the SQL position source's part of c.
func (c Config) PositionSource() sqlsource.Config {
	s := c.SQLSource
	return sqlsource.Config{
		Driver: s.Driver, DSN: s.DSN, Interval: s.Interval, Timeout: s.Timeout,
		HeadQuery: s.HeadQuery, CheckpointsQuery: s.CheckpointsQuery, MaxProjections: s.MaxProjections,
	}
}

// MetricsConfig bounds the exported metrics.
type MetricsConfig struct {
	MaxLabelValues int `yaml:"max_label_values"`
}

// LogConfig configures structured logs.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultConfig returns the defaults of every setting.
func DefaultConfig() Config {
	c := collector.DefaultConfig()
	a := analyzer.DefaultConfig()
	sq := sqlsource.DefaultConfig()
	return Config{
		OTLP: OTLPConfig{
			GRPCEndpoint: c.GRPCEndpoint, HTTPEndpoint: c.HTTPEndpoint,
			MaxRequestBytes: c.MaxRequestBytes, MaxInflightBytes: c.MaxInflightBytes, RetryAfter: c.RetryAfter,
		},
		Web: WebConfig{ListenAddress: "localhost:9464", TelemetryPath: "/metrics"},
		Join: JoinConfig{
			Deadline: a.Deadline, CommandWait: a.CommandWait, Retention: a.Retention,
			MaxPendingEvents: a.MaxPendingEvents, MaxPendingProjections: a.MaxPendingProjections,
			MaxTraceSpans: a.MaxTraceSpans,
		},
		Metrics: MetricsConfig{MaxLabelValues: a.MaxLabelValues},
		Log:     LogConfig{Level: "info", Format: "text"},
		SQLSource: SQLSourceConfig{
			Driver: sq.Driver, Interval: sq.Interval, Timeout: sq.Timeout, HeadQuery: sq.HeadQuery,
			CheckpointsQuery: sq.CheckpointsQuery, MaxProjections: sq.MaxProjections,
		},
	}
}

// Collector returns the collector's part of c.
func (c Config) Collector() collector.Config {
	return collector.Config{
		GRPCEndpoint: c.OTLP.GRPCEndpoint, HTTPEndpoint: c.OTLP.HTTPEndpoint,
		MaxRequestBytes: c.OTLP.MaxRequestBytes, MaxInflightBytes: c.OTLP.MaxInflightBytes,
		RetryAfter: c.OTLP.RetryAfter, LazyDecode: c.OTLP.LazyDecode,
	}
}

// Analyzer returns the analyzer's part of c.
func (c Config) Analyzer() analyzer.Config {
	a := analyzer.DefaultConfig()
	a.Deadline, a.CommandWait, a.Retention = c.Join.Deadline, c.Join.CommandWait, c.Join.Retention
	a.MaxPendingEvents, a.MaxPendingProjections = c.Join.MaxPendingEvents, c.Join.MaxPendingProjections
	a.MaxTraceSpans, a.Expected = c.Join.MaxTraceSpans, c.Join.Expected
	a.MaxLabelValues = c.Metrics.MaxLabelValues
	return a
}

// Validate reports every setting out of range, naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := c.Collector().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("otlp: %w", err))
	}
	if err := c.Analyzer().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Web.ListenAddress == "" {
		errs = append(errs, errors.New("web.listen_address must be set"))
	}
	if c.Web.TelemetryPath == "" || c.Web.TelemetryPath[0] != '/' {
		errs = append(errs, fmt.Errorf("web.telemetry_path must start with /, got %q", c.Web.TelemetryPath))
	}
	if c.SQLSource.DSN != "" {
		if err := c.PositionSource().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("sql_source: %w", err))
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format must be text or json, got %q", c.Log.Format))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log.level: %w", err)
	}
	return l, nil
}

// loadConfigFile reads a YAML config over the defaults; unknown keys and
// values of the wrong type are errors that name the key and line.
func loadConfigFile(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // an empty file is an empty config
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	return nil
}

// serveFlags are the flags shared by serve and demo. They are registered on
// fs and applied over the file config only when set, so that a flag left at
// its default does not hide the file's value.
type serveFlags struct {
	fs     *flag.FlagSet
	config string
	c      Config
}

func newServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{fs: fs, c: DefaultConfig()}
	fs.StringVar(&f.config, "config", "", "YAML `file` with every setting (flags override it)")
	fs.StringVar(&f.c.OTLP.GRPCEndpoint, "otlp.grpc-endpoint", f.c.OTLP.GRPCEndpoint, "`host:port` of the OTLP/gRPC receiver (empty disables it)")
	fs.StringVar(&f.c.OTLP.HTTPEndpoint, "otlp.http-endpoint", f.c.OTLP.HTTPEndpoint, "`host:port` of the OTLP/HTTP receiver (empty disables it)")
	fs.Int64Var(&f.c.OTLP.MaxRequestBytes, "otlp.max-request-bytes", f.c.OTLP.MaxRequestBytes, "largest OTLP request accepted, after decompression")
	fs.BoolVar(&f.c.OTLP.LazyDecode, "otlp.lazy-decode", false, "decode only the span fields the analysis reads from protobuf requests (faster; falls back to full decoding for anything unusual)")
	fs.StringVar(&f.c.Web.ListenAddress, "web.listen-address", f.c.Web.ListenAddress, "`host:port` serving Prometheus metrics")
	fs.StringVar(&f.c.Web.TelemetryPath, "web.telemetry-path", f.c.Web.TelemetryPath, "`path` of the metrics endpoint")
	durationVar(fs, &f.c.Join.Deadline, "join.deadline", "how long a projection may take to show an event before it counts as unprojected")
	durationVar(fs, &f.c.Join.CommandWait, "join.command-wait", "how long an append waits for its command span")
	fs.IntVar(&f.c.Join.MaxPendingEvents, "join.max-pending-events", f.c.Join.MaxPendingEvents, "events held by the join; the oldest are evicted past it")
	fs.IntVar(&f.c.Metrics.MaxLabelValues, "metrics.max-label-values", f.c.Metrics.MaxLabelValues, "distinct values per label before new ones become \"other\"")
	fs.StringVar(&f.c.SQLSource.DSN, "sql-source.dsn", "", "event store to poll for head and checkpoint positions (cqrs_projection_position_lag); empty disables")
	fs.StringVar(&f.c.SQLSource.Driver, "sql-source.driver", f.c.SQLSource.Driver, "driver of --sql-source.dsn: pgx (PostgreSQL) or sqlite")
	durationVar(fs, &f.c.SQLSource.Interval, "sql-source.interval", "time between two polls of the SQL position source")
	fs.StringVar(&f.c.Log.Level, "log.level", f.c.Log.Level, "log `level`: debug, info, warn, error")
	fs.StringVar(&f.c.Log.Format, "log.format", f.c.Log.Format, "log format: text or json")
	fs.BoolVar(&f.c.AnalysisDisabled, "analysis.disabled", false, "(benchmarking) receive and drop spans without analysing them")
	return f
}

// resolve returns the defaults, overlaid with the config file, overlaid with
// the flags that were set.
func (f *serveFlags) resolve() (Config, error) {
	c := DefaultConfig()
	if f.config != "" {
		if err := loadConfigFile(f.config, &c); err != nil {
			return Config{}, err
		}
	}
	flagged := f.c
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "otlp.grpc-endpoint":
			c.OTLP.GRPCEndpoint = flagged.OTLP.GRPCEndpoint
		case "otlp.http-endpoint":
			c.OTLP.HTTPEndpoint = flagged.OTLP.HTTPEndpoint
		case "otlp.max-request-bytes":
			c.OTLP.MaxRequestBytes = flagged.OTLP.MaxRequestBytes
		case "otlp.lazy-decode":
			c.OTLP.LazyDecode = flagged.OTLP.LazyDecode
		case "web.listen-address":
			c.Web.ListenAddress = flagged.Web.ListenAddress
		case "web.telemetry-path":
			c.Web.TelemetryPath = flagged.Web.TelemetryPath
		case "join.deadline":
			c.Join.Deadline = flagged.Join.Deadline
		case "join.command-wait":
			c.Join.CommandWait = flagged.Join.CommandWait
		case "join.max-pending-events":
			c.Join.MaxPendingEvents = flagged.Join.MaxPendingEvents
		case "metrics.max-label-values":
			c.Metrics.MaxLabelValues = flagged.Metrics.MaxLabelValues
		case "sql-source.dsn":
			c.SQLSource.DSN = flagged.SQLSource.DSN
		case "sql-source.driver":
			c.SQLSource.Driver = flagged.SQLSource.Driver
		case "sql-source.interval":
			c.SQLSource.Interval = flagged.SQLSource.Interval
		case "log.level":
			c.Log.Level = flagged.Log.Level
		case "log.format":
			c.Log.Format = flagged.Log.Format
		case "analysis.disabled":
			c.AnalysisDisabled = flagged.AnalysisDisabled
		}
	})
	if c.Join.Retention < c.Join.Deadline {
		// A short deadline from a flag should not trip over the default
		// retention; a long one raises retention with it.
		c.Join.Retention = max(c.Join.Retention, 10*c.Join.Deadline)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return c, nil
}

func newLogger(c LogConfig) *slog.Logger {
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
