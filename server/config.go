package server

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/configfile"
	"github.com/lagscope/lagscope/forward"
	"github.com/lagscope/lagscope/kafkalag"
	"github.com/lagscope/lagscope/report"
	"github.com/lagscope/lagscope/sqlsource"
)

// Config is every setting of `lagscope serve`, as read from lagscope.yaml:
// each component's own Config, under its section. Defaults come from the
// components; the file overrides them, and set flags override the file.
type Config struct {
	// OTLP configures the OTLP receivers (otlp.*).
	OTLP collector.Config `yaml:"otlp"`
	// Web configures the metrics endpoint (web.*).
	Web WebConfig `yaml:"web"`
	// Config configures the analysis (join.*, metrics.*).
	analyzer.Config `yaml:",inline"`
	// SQLSource, when its DSN is set, polls the event store's head position
	// and each projection's checkpoint (cqrs_projection_position_lag).
	SQLSource sqlsource.Config `yaml:"sql_source"`
	// Kafka, when kafka.brokers is set, consumes OTLP traces from a topic
	// as the Collector's kafka exporter writes them, and exports the offset
	// lag of consumer groups (kafka.*).
	Kafka KafkaConfig `yaml:"kafka"`
	// Zipkin, when zipkin.endpoint is set, accepts Zipkin v2 spans on
	// POST /api/v2/spans through the OTLP receiver's limits (zipkin.*).
	Zipkin collector.ZipkinConfig `yaml:"zipkin"`
	// Forward, when forward.endpoint is set, sends every span received,
	// unchanged, to a tracing backend over OTLP (forward.*).
	Forward forward.Config `yaml:"forward"`
	// Log configures structured logs (log.*).
	Log LogConfig `yaml:"log"`
	// Role (role, --role) is what this instance does: all (resolve and join
	// in one process), ingest (consume kafka.traces_topic, publish facts to
	// kafka.facts_topic) or join (consume kafka.facts_topic in consumer
	// group kafka.group_id + "-join", own the cqrs_* metrics). ingest and
	// join need kafka.brokers. Default all.
	Role string `yaml:"role"`
	// MemoryLimit (memory_limit, --memory-limit) is the soft limit on the Go
	// runtime's memory, in bytes, that lagscope serve sets
	// (runtime/debug.SetMemoryLimit): the GC works harder as the heap nears
	// it, so that the peak RSS stays near it at full load. The default
	// bounds' state is at most about 180 MB, mostly pointer-free tables the
	// GC does not scan, so collecting more often costs little; raise it
	// with the join bounds (README, Sizing). It is not a hard cap. The
	// GOMEMLIMIT environment variable, when set, wins; 0 sets none. Default
	// 224 MiB.
	MemoryLimit int64 `yaml:"memory_limit"`
	// AnalysisDisabled wires the receivers to a consumer that drops every
	// request (hidden flag --analysis.disabled): to measure receiving alone.
	AnalysisDisabled bool `yaml:"-"`
}

// WebConfig configures the metrics endpoint.
type WebConfig struct {
	// ListenAddress is the host:port serving /metrics. Default
	// localhost:9464.
	ListenAddress string `yaml:"listen_address"`
	// TelemetryPath is the path of the metrics. Default /metrics.
	TelemetryPath string `yaml:"telemetry_path"`
	// ConfigFile is a Prometheus exporter-toolkit web config file: TLS,
	// client certificates and basic auth (bcrypt hashes) for /metrics,
	// /-/healthy and /-/ready, exactly as node_exporter's
	// --web.config.file. Default "" (plain HTTP, no auth).
	ConfigFile string `yaml:"config_file"`
	// SystemdSocket (web.systemd_socket, --web.systemd-socket) serves the
	// metrics on the one socket systemd passes (socket activation, as
	// node_exporter's flag of that name), in place of ListenAddress.
	// Default false.
	SystemdSocket bool `yaml:"systemd_socket"`
	// TraceURLTemplate (web.trace_url_template, --web.trace-url-template)
	// is the URL of a trace in a trace viewer, with {trace_id} where its
	// id goes: http://jaeger:16686/trace/{trace_id}, or a Grafana Explore
	// URL for Tempo. Logs that name a trace (a trace_id attribute) get a
	// trace_url beside it, and analyze and explain print the links of
	// unprojected and slowest events. Default "": no links.
	TraceURLTemplate string `yaml:"trace_url_template"`
}

// KafkaConfig is the kafka: section: the collector's Kafka transport and
// the offset lag exporter, which reads the same brokers.
type KafkaConfig struct {
	collector.KafkaConfig `yaml:",inline"`
	// FactsTopic (kafka.facts_topic, --kafka.facts-topic) is the topic the
	// ingest role publishes facts to and the join role consumes, one
	// factwire batch per message keyed by event (aggregate for queries).
	// Default "lagscope_facts".
	FactsTopic string          `yaml:"facts_topic"`
	Lag        kafkalag.Config `yaml:",inline"`
}

// LogConfig configures structured logs.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// DefaultConfig returns the defaults of every setting: the components'.
func DefaultConfig() Config {
	return Config{
		OTLP:      collector.DefaultConfig(),
		Web:       WebConfig{ListenAddress: "localhost:9464", TelemetryPath: "/metrics"},
		Config:    analyzer.DefaultConfig(),
		SQLSource: sqlsource.DefaultConfig(),
		Forward:   forward.DefaultConfig(),
		Zipkin:    collector.DefaultZipkinConfig(),
		Kafka:     KafkaConfig{KafkaConfig: collector.DefaultKafkaConfig(), FactsTopic: "lagscope_facts", Lag: kafkalag.DefaultConfig()},
		Role:      RoleAll,
		Log:       LogConfig{Level: "info", Format: "text"},

		MemoryLimit: 224 << 20,
	}
}

// Collector returns the collector's part of c.
func (c Config) Collector() collector.Config { return c.OTLP }

// Analyzer returns the analyzer's part of c.
func (c Config) Analyzer() analyzer.Config { return c.Config }

// PositionSource returns the SQL position source's part of c.
func (c Config) PositionSource() sqlsource.Config { return c.SQLSource }

// Validate reports every setting out of range, naming its key.
func (c Config) Validate() error {
	var errs []error
	if err := c.OTLP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("memory_limit must not be negative, got %d", c.MemoryLimit))
	}
	if c.Web.ListenAddress == "" {
		errs = append(errs, errors.New("web.listen_address must be set"))
	}
	if c.Web.TelemetryPath == "" || c.Web.TelemetryPath[0] != '/' {
		errs = append(errs, fmt.Errorf("web.telemetry_path must start with /, got %q", c.Web.TelemetryPath))
	}
	if _, err := report.NewTraceLinks(c.Web.TraceURLTemplate); err != nil {
		errs = append(errs, err)
	}
	if c.Forward.Enabled() {
		if err := c.Forward.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Kafka.KafkaConfig.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Zipkin.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Zipkin.Enabled() && c.Role == RoleJoin {
		errs = append(errs, errors.New("zipkin.endpoint is set, but role join receives no spans"))
	}
	if c.Kafka.Enabled() {
		if err := c.Kafka.Lag.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.Role {
	case RoleAll, "": // "": a Config not from DefaultConfig
	case RoleIngest, RoleJoin:
		if !c.Kafka.Enabled() {
			errs = append(errs, fmt.Errorf("role %s needs kafka.brokers", c.Role))
		}
	default:
		errs = append(errs, fmt.Errorf("role must be %s, %s or %s, got %q", RoleAll, RoleIngest, RoleJoin, c.Role))
	}
	if c.Kafka.FactsTopic == "" {
		errs = append(errs, errors.New("kafka.facts_topic is empty"))
	}
	if c.SQLSource.DSN != "" {
		if err := c.SQLSource.Validate(); err != nil {
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

// LoadConfigFile reads a YAML config over c; unknown keys and values of the
// wrong kind are errors that name the key and line.
func LoadConfigFile(path string, c *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := configfile.Decode(b, c); err != nil {
		return fmt.Errorf("config %s:\n%w", path, err)
	}
	return nil
}

// NewLogger returns the structured logger c configures, writing to stderr.
func NewLogger(c LogConfig) *slog.Logger {
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
