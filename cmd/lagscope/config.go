package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/lagscope/lagscope/server"
)

// serveFlags are the flags shared by serve and demo, bound to a Config.
// resolve loads the file first and then applies, over it, the flags that
// were set, so that a flag left at its default does not hide the file's
// value.
type serveFlags struct {
	fs     *flag.FlagSet
	config string
	c      Config
}

func newServeFlags(fs *flag.FlagSet) *serveFlags {
	f := &serveFlags{fs: fs, c: DefaultConfig()}
	fs.StringVar(&f.config, "config", "", "YAML `file` with every setting (flags override it)")
	bindServeFlags(fs, &f.c)
	return f
}

// bindServeFlags defines on fs a flag for every scalar setting of c, bound
// to it. A flag is named after its YAML key, with dashes: join.max_lag is
// --join.max-lag (TestEveryKeyHasAFlag keeps the two in step).
func bindServeFlags(fs *flag.FlagSet, c *Config) {
	o := &c.OTLP
	fs.StringVar(&o.GRPCEndpoint, "otlp.grpc-endpoint", o.GRPCEndpoint, "`host:port` of the OTLP/gRPC receiver (empty disables it)")
	fs.StringVar(&o.HTTPEndpoint, "otlp.http-endpoint", o.HTTPEndpoint, "`host:port` of the OTLP/HTTP receiver (empty disables it)")
	fs.Int64Var(&o.MaxRequestBytes, "otlp.max-request-bytes", o.MaxRequestBytes, "largest OTLP request accepted, after decompression")
	fs.Int64Var(&o.MaxInflightBytes, "otlp.max-inflight-bytes", o.MaxInflightBytes, "bytes of requests being read, decoded and analysed at once, as decoded (past it: 429 / ResourceExhausted)")
	durationVar(fs, &o.RetryAfter, "otlp.retry-after", "back-off advised to clients refused for overload")
	fs.BoolVar(&o.LazyDecode, "otlp.lazy-decode", o.LazyDecode, "decode only the span fields the analysis reads from protobuf requests (faster; falls back to full decoding for anything unusual, counted in lagscope_decode_fallbacks_total); on by default, --otlp.lazy-decode=false decodes everything with pdata")
	fs.IntVar(&o.MaxSpansPerRequest, "otlp.max-spans-per-request", o.MaxSpansPerRequest, "spans in one request at most")
	fs.IntVar(&o.MaxLinksPerRequest, "otlp.max-links-per-request", o.MaxLinksPerRequest, "span links in one request at most")
	fs.IntVar(&o.MaxEventsPerRequest, "otlp.max-events-per-request", o.MaxEventsPerRequest, "span events in one request at most")
	fs.IntVar(&o.MaxAttributesPerRequest, "otlp.max-attributes-per-request", o.MaxAttributesPerRequest, "attributes (of resources, scopes, spans, events, links) in one request at most")
	fs.IntVar(&o.MaxJSONDepth, "otlp.max-json-depth", o.MaxJSONDepth, "nesting of an OTLP/JSON request at most")
	durationVar(fs, &o.ReadTimeout, "otlp.read-timeout", "time a client may take to send one request")
	durationVar(fs, &o.IdleTimeout, "otlp.idle-timeout", "idle connections are closed after this long")
	fs.IntVar(&o.MaxConnections, "otlp.max-connections", o.MaxConnections, "open connections at most, per receiver")
	fs.IntVar(&o.MaxConcurrentStreams, "otlp.max-concurrent-streams", o.MaxConcurrentStreams, "concurrent gRPC streams per connection at most")
	fs.StringVar(&o.TLS.CertFile, "otlp.tls.cert-file", o.TLS.CertFile, "server certificate (PEM) `file` for OTLP gRPC and HTTP; reloaded when it changes")
	fs.StringVar(&o.TLS.KeyFile, "otlp.tls.key-file", o.TLS.KeyFile, "its private key `file`")
	fs.StringVar(&o.TLS.ClientCAFile, "otlp.tls.client-ca-file", o.TLS.ClientCAFile, "require client certificates signed by this CA `file` (mTLS)")
	fs.StringVar(&o.Auth.BearerTokenFile, "otlp.auth.bearer-token-file", o.Auth.BearerTokenFile, "require Authorization: Bearer <this `file`'s content> on OTLP requests")

	fs.StringVar(&c.Web.ListenAddress, "web.listen-address", c.Web.ListenAddress, "`host:port` serving Prometheus metrics")
	fs.StringVar(&c.Web.TelemetryPath, "web.telemetry-path", c.Web.TelemetryPath, "`path` of the metrics endpoint")
	// Named as node_exporter's, not after its key (web.config_file).
	fs.StringVar(&c.Web.ConfigFile, "web.config.file", c.Web.ConfigFile, "exporter-toolkit web config `file` (TLS, client certificates, basic auth) for the metrics endpoint")
	fs.BoolVar(&c.Web.SystemdSocket, "web.systemd-socket", c.Web.SystemdSocket, "serve the metrics on the socket systemd passes (socket activation) instead of --web.listen-address")
	fs.StringVar(&c.Web.TraceURLTemplate, "web.trace-url-template", c.Web.TraceURLTemplate, "`URL` of a trace in a trace viewer, {trace_id} where its id goes (e.g. http://jaeger:16686/trace/{trace_id}): logs naming a trace carry the link")

	j := &c.Join
	durationVar(fs, &j.Deadline, "join.deadline", "how long a projection may take to show an event before it counts as unprojected")
	durationVar(fs, &j.CommandWait, "join.command-wait", "how long an append waits for its command span")
	durationVar(fs, &j.Retention, "join.retention", "how long a joined event is kept to recognise late and duplicated projections")
	durationVar(fs, &j.MaxLag, "join.max-lag", "longest lag believed; longer ones, and spans ending before they start, are counted, not observed")
	fs.IntVar(&j.MaxPendingEvents, "join.max-pending-events", j.MaxPendingEvents, "events held by the join; the oldest are evicted past it")
	fs.IntVar(&j.MaxJoinedEvents, "join.max-joined-events", j.MaxJoinedEvents, "joined events kept to recognise duplicated and late projections; the oldest are forgotten past it")
	fs.IntVar(&j.MaxPendingProjections, "join.max-pending-projections", j.MaxPendingProjections, "projection spans waiting for their event, and appends waiting for their command, at most")
	fs.IntVar(&j.MaxTraceSpans, "join.max-trace-spans", j.MaxTraceSpans, "parent links and command spans remembered to resolve commands")
	fs.IntVar(&j.Shards, "join.shards", j.Shards, "shards of the analysis state (0: 8 per core)")

	m := &c.Metrics
	fs.IntVar(&m.MaxLabelValues, "metrics.max-label-values", m.MaxLabelValues, "distinct values per label before new ones become \"other\"")
	fs.IntVar(&m.MaxLabelLength, "metrics.max-label-length", m.MaxLabelLength, "bytes per label value; longer ones are cut")
	fs.IntVar(&m.MaxSeries, "metrics.max-series", m.MaxSeries, "series per counter family before new label combinations go to \"other\"")
	fs.IntVar(&m.MaxHistogramSeries, "metrics.max-histogram-series", m.MaxHistogramSeries, "series of the lag histogram before new label combinations go to \"other\"")
	fs.Var((*floatListValue)(&m.LagBuckets), "metrics.lag-buckets", "classic bucket bounds (comma-separated `seconds`) of the lag and stage histograms (native buckets are always there); include the lag alert's threshold")

	q := &c.SQLSource
	fs.StringVar(&q.DSN, "sql-source.dsn", q.DSN, "event store to poll for head and checkpoint positions (cqrs_projection_position_lag); empty disables")
	fs.StringVar(&q.Driver, "sql-source.driver", q.Driver, "driver of --sql-source.dsn: pgx (PostgreSQL) or sqlite")
	durationVar(fs, &q.Interval, "sql-source.interval", "time between two polls of the SQL position source")
	durationVar(fs, &q.Timeout, "sql-source.timeout", "time one poll may take")
	fs.StringVar(&q.HeadQuery, "sql-source.head-query", q.HeadQuery, "SQL returning the store's head position")
	fs.StringVar(&q.CheckpointsQuery, "sql-source.checkpoints-query", q.CheckpointsQuery, "SQL returning (projection, position) rows")
	fs.IntVar(&q.MaxProjections, "sql-source.max-projections", q.MaxProjections, "projections exported at most")

	z := &c.Zipkin
	fs.StringVar(&z.Endpoint, "zipkin.endpoint", z.Endpoint, "`host:port` accepting Zipkin v2 spans on POST /api/v2/spans, JSON or protobuf (empty: off; localhost:9411 is Zipkin's)")
	fs.StringVar(&z.TLS.CertFile, "zipkin.tls.cert-file", z.TLS.CertFile, "server certificate (PEM) `file` for the Zipkin endpoint; reloaded when it changes")
	fs.StringVar(&z.TLS.KeyFile, "zipkin.tls.key-file", z.TLS.KeyFile, "its private key `file`")
	fs.StringVar(&z.TLS.ClientCAFile, "zipkin.tls.client-ca-file", z.TLS.ClientCAFile, "require Zipkin clients' certificates signed by this CA `file` (mTLS)")

	w := &c.Forward
	fs.StringVar(&w.Endpoint, "forward.endpoint", w.Endpoint, "`host:port` of a tracing backend (Jaeger, Tempo, a Collector) to send every received span to, over OTLP (empty: off)")
	fs.StringVar(&w.Protocol, "forward.protocol", w.Protocol, "OTLP transport of the forwarding: grpc or http")
	fs.StringVar(&w.Path, "forward.path", w.Path, "URL path of the backend's OTLP/HTTP traces endpoint")
	fs.StringVar(&w.Compression, "forward.compression", w.Compression, "compression of forwarded requests: none or gzip")
	fs.Int64Var(&w.QueueBytes, "forward.queue-bytes", w.QueueBytes, "bytes of requests waiting to be forwarded; past it they are dropped and counted")
	fs.IntVar(&w.Concurrency, "forward.concurrency", w.Concurrency, "requests forwarded at once")
	durationVar(fs, &w.Timeout, "forward.timeout", "time one forwarding attempt may take")
	durationVar(fs, &w.Retry.InitialInterval, "forward.retry.initial-interval", "first back-off of a failed forwarding")
	durationVar(fs, &w.Retry.MaxInterval, "forward.retry.max-interval", "longest back-off")
	durationVar(fs, &w.Retry.MaxElapsedTime, "forward.retry.max-elapsed-time", "time a request is retried before it is dropped (0: one attempt)")
	fs.BoolVar(&w.TLS.Enabled, "forward.tls.enabled", w.TLS.Enabled, "forward over TLS (also on when a CA or client certificate is set)")
	fs.StringVar(&w.TLS.CAFile, "forward.tls.ca-file", w.TLS.CAFile, "CA `file` to verify the backend with")
	fs.StringVar(&w.TLS.CertFile, "forward.tls.cert-file", w.TLS.CertFile, "client certificate `file` (mTLS)")
	fs.StringVar(&w.TLS.KeyFile, "forward.tls.key-file", w.TLS.KeyFile, "its key `file`")
	fs.StringVar(&w.TLS.ServerName, "forward.tls.server-name", w.TLS.ServerName, "server name to verify, if not the endpoint's host")
	fs.BoolVar(&w.TLS.InsecureSkipVerify, "forward.tls.insecure-skip-verify", w.TLS.InsecureSkipVerify, "do not verify the backend's certificate (testing only)")

	k := &c.Kafka
	fs.Var((*listValue)(&k.Brokers), "kafka.brokers", "`host:port,...` of Kafka brokers: consume OTLP traces from kafka.traces_topic and export consumer groups' offset lag (empty: off)")
	fs.StringVar(&k.TracesTopic, "kafka.traces-topic", k.TracesTopic, "topic the OpenTelemetry Collector's kafka exporter writes traces to")
	fs.StringVar(&k.TracesEncoding, "kafka.traces-encoding", k.TracesEncoding, "encoding of its messages: otlp_proto or otlp_json")
	fs.StringVar(&k.GroupID, "kafka.group-id", k.GroupID, "consumer group lagscope consumes the traces topic in")
	fs.StringVar(&k.FactsTopic, "kafka.facts-topic", k.FactsTopic, "topic the ingest role publishes facts to and the join role consumes (in group kafka.group_id + \"-join\")")
	fs.StringVar(&c.Role, "role", c.Role, "`role` of this instance: all (one process), ingest (traces topic -> facts topic) or join (facts topic -> cqrs_* metrics)")
	fs.Var((*listValue)(&k.Lag.Groups), "kafka.lag-groups", "`group,...` whose offset lag to export (empty: every group)")
	durationVar(fs, &k.Lag.Interval, "kafka.lag-interval", "time between two reads of the consumer groups' offsets")
	fs.IntVar(&k.Lag.MaxGroups, "kafka.lag-max-groups", k.Lag.MaxGroups, "consumer groups exported at most")
	fs.IntVar(&k.Lag.MaxTopics, "kafka.lag-max-topics", k.Lag.MaxTopics, "topics per group exported at most")
	fs.IntVar(&k.Lag.MaxPartitions, "kafka.lag-max-partitions", k.Lag.MaxPartitions, "partitions per topic exported at most")
	kt, ks := &k.Conn.TLS, &k.Conn.SASL
	fs.BoolVar(&kt.Enabled, "kafka.tls.enabled", kt.Enabled, "connect to the Kafka brokers over TLS (also on when any other --kafka.tls.* is set)")
	fs.StringVar(&kt.CAFile, "kafka.tls.ca-file", kt.CAFile, "CA `file` (PEM) to verify the Kafka brokers with (default: the system's roots)")
	fs.StringVar(&kt.CertFile, "kafka.tls.cert-file", kt.CertFile, "client certificate `file` (PEM) for brokers that want one (mTLS)")
	fs.StringVar(&kt.KeyFile, "kafka.tls.key-file", kt.KeyFile, "its private key `file`")
	fs.StringVar(&kt.ServerName, "kafka.tls.server-name", kt.ServerName, "`name` to verify in the brokers' certificates, if not each broker's host")
	fs.BoolVar(&kt.InsecureSkipVerify, "kafka.tls.insecure-skip-verify", kt.InsecureSkipVerify, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&ks.Mechanism, "kafka.sasl.mechanism", ks.Mechanism, "SASL `mechanism` to authenticate to the brokers with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&ks.Username, "kafka.sasl.username", ks.Username, "SASL `user`")
	fs.StringVar(&ks.PasswordFile, "kafka.sasl.password-file", ks.PasswordFile, "`file` holding the SASL password (read at each new connection; never a password on the command line)")

	fs.StringVar(&c.Log.Level, "log.level", c.Log.Level, "log `level`: debug, info, warn, error")
	fs.StringVar(&c.Log.Format, "log.format", c.Log.Format, "log format: text or json")
	fs.Int64Var(&c.MemoryLimit, "memory-limit", c.MemoryLimit, "soft limit of the Go runtime's memory in bytes (GC works harder near it; GOMEMLIMIT wins; 0: none)")
	fs.BoolVar(&c.AnalysisDisabled, "analysis.disabled", c.AnalysisDisabled, "(benchmarking) receive and drop spans without analysing them")
}

// listValue is a comma-separated list flag; setting it replaces the list.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	*l = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// floatListValue is a comma-separated list of numbers (seconds).
type floatListValue []float64

func (l *floatListValue) String() string {
	parts := make([]string, len(*l))
	for i, v := range *l {
		parts[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

func (l *floatListValue) Set(s string) error {
	var out []float64
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("parse %q as seconds: %w", v, err)
		}
		out = append(out, f)
	}
	*l = out
	return nil
}

// resolve returns the defaults, overlaid with the config file, overlaid with
// the flags that were set.
func (f *serveFlags) resolve() (Config, error) {
	c := DefaultConfig()
	if f.config != "" {
		if err := server.LoadConfigFile(f.config, &c); err != nil {
			return Config{}, err
		}
	}
	// Set again, on flags bound to c, every flag that was set: each writes
	// its own field and nothing else.
	over := flag.NewFlagSet(f.fs.Name(), flag.ContinueOnError)
	bindServeFlags(over, &c)
	var errs []error
	f.fs.Visit(func(fl *flag.Flag) {
		if over.Lookup(fl.Name) != nil {
			if err := over.Set(fl.Name, fl.Value.String()); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", fl.Name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
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

// Config, Server and their constructors are package server's, under the
// names the commands and tests of this package use.
type (
	Config    = server.Config
	LogConfig = server.LogConfig
	Server    = server.Server
)

// DefaultConfig returns server.DefaultConfig().
func DefaultConfig() Config { return server.DefaultConfig() }

// NewServer returns server.New(cfg, logger).
func NewServer(cfg Config, logger *slog.Logger) (*Server, error) { return server.New(cfg, logger) }

func newLogger(c LogConfig) *slog.Logger { return server.NewLogger(c) }
