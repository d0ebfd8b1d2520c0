// Package server is `lagscope serve` assembled: the OTLP receivers feeding
// the analyzer, the optional SQL position source, and the metrics endpoint,
// configured by one Config whose sections are the components' own Configs.
// cmd/lagscope binds flags to Config and runs a Server; end-to-end tests and
// the demo run it in-process.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"go.opentelemetry.io/collector/featuregate"
	"go.yaml.in/yaml/v3"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/forward"
	"github.com/lagscope/lagscope/kafkalag"
	"github.com/lagscope/lagscope/report"
	"github.com/lagscope/lagscope/sqlsource"
)

// Server is `lagscope serve`: the OTLP receivers feeding the analyzer, and the
// metrics endpoint.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	Registry *prometheus.Registry
	// Analyzer is nil unless the role is all.
	Analyzer *analyzer.Analyzer
	ingest   *ingest             // role ingest only
	join     *join               // role join only
	receiver *collector.Receiver // nil in role join
	kafka    *collector.Kafka    // nil unless kafka.brokers is set
	zipkin   *collector.Zipkin   // nil unless zipkin.endpoint is set
	lag      *kafkalag.Exporter  // likewise
	forward  *forward.Forwarder  // nil unless forward.endpoint is set
	source   *sqlsource.Source   // nil unless sql_source.dsn is set
	web      *http.Server
	webLn    net.Listener
	webDone  chan error
	webTLS   bool // the web config file turns TLS on
	scrapes  *scrapeClock
}

// New builds a Server from a validated config; nothing listens until
// Start.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	links, err := report.NewTraceLinks(cfg.Web.TraceURLTemplate)
	if err != nil {
		return nil, err
	}
	logger = withTraceLinks(logger, links)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	var (
		a    *analyzer.Analyzer
		ing  *ingest
		jn   *join
		next collector.Consumer
	)
	switch cfg.Role {
	case RoleIngest:
		res, err := analyzer.NewResolver(cfg.Analyzer(), reg)
		if err != nil {
			return nil, err
		}
		if ing, err = newIngest(cfg, res, logger.With("component", "ingest"), reg); err != nil {
			return nil, err
		}
		next = ing
	case RoleJoin:
		j, err := analyzer.NewJoiner(cfg.Analyzer(), logger.With("component", "join"), reg)
		if err != nil {
			return nil, err
		}
		if jn, err = newJoin(cfg, j, logger.With("component", "join"), reg); err != nil {
			return nil, err
		}
		return newJoinServer(cfg, logger, reg, jn)
	default:
		if a, err = analyzer.New(cfg.Analyzer(), logger.With("component", "analyzer"), reg); err != nil {
			return nil, err
		}
		next = a
	}
	if cfg.AnalysisDisabled {
		next = collector.Discard
	}
	cfg.OTLP.Keep = collector.Selection(cfg.Analyzer().Reads()) // the selective decoder keeps what the analysis reads
	enablePdataPools()
	r, err := collector.New(cfg.Collector(), next, logger.With("component", "collector"), reg)
	if err != nil {
		return nil, err
	}
	var fwd *forward.Forwarder
	if cfg.Forward.Enabled() {
		if fwd, err = forward.New(cfg.Forward, logger.With("component", "forward"), reg); err != nil {
			return nil, err
		}
		r.SetTee(tee{fwd})
	}
	var zipkin *collector.Zipkin
	if cfg.Zipkin.Enabled() {
		if zipkin, err = collector.NewZipkin(cfg.Zipkin, r, logger.With("component", "zipkin")); err != nil {
			return nil, err
		}
	}
	var kafka *collector.Kafka
	var lag *kafkalag.Exporter
	if cfg.Kafka.Enabled() {
		if kafka, err = collector.NewKafka(cfg.Kafka.KafkaConfig, r, logger.With("component", "kafka"), reg); err != nil {
			return nil, err
		}
		lc := cfg.Kafka.Lag
		lc.Brokers, lc.Conn = cfg.Kafka.Brokers, cfg.Kafka.Conn
		if lag, err = kafkalag.New(lc, logger.With("component", "kafkalag"), reg); err != nil {
			return nil, err
		}
	}
	var source *sqlsource.Source
	if cfg.SQLSource.DSN != "" {
		if source, err = sqlsource.New(cfg.PositionSource(), logger.With("component", "sqlsource"), reg); err != nil {
			return nil, err
		}
	}
	s, err := newWeb(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	s.Analyzer, s.ingest, s.receiver, s.forward, s.kafka, s.lag, s.source = a, ing, r, fwd, kafka, lag, source
	s.zipkin = zipkin
	return s, nil
}

// newJoinServer is New for role join: no OTLP receivers, the facts
// consumer, and the offset lag exporter.
func newJoinServer(cfg Config, logger *slog.Logger, reg *prometheus.Registry, jn *join) (*Server, error) {
	lc := cfg.Kafka.Lag
	lc.Brokers, lc.Conn = cfg.Kafka.Brokers, cfg.Kafka.Conn
	lag, err := kafkalag.New(lc, logger.With("component", "kafkalag"), reg)
	if err != nil {
		return nil, err
	}
	s, err := newWeb(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	s.join, s.lag = jn, lag
	return s, nil
}

// newWeb returns a Server with its metrics endpoint and nothing else.
func newWeb(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	mux := http.NewServeMux()
	scrapes := &scrapeClock{}
	mux.Handle(cfg.Web.TelemetryPath, scrapes.wrap(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// Exemplars (trace ids) are only in the OpenMetrics exposition.
		EnableOpenMetrics: true,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
		Registry:          reg,
	})))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "lagscope is healthy.") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "lagscope is ready.") })
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "<html><head><title>lagscope</title></head><body><h1>lagscope</h1><p><a href=%q>Metrics</a></p></body></html>\n", cfg.Web.TelemetryPath)
	})
	webTLS, err := webConfigHasTLS(cfg.Web.ConfigFile)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg: cfg, logger: logger, Registry: reg, scrapes: scrapes, webTLS: webTLS,
		web: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
	}, nil
}

// Start listens on every endpoint. On failure it shuts down what it started.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Shutdown(context.WithoutCancel(ctx)))
		}
	}()
	if s.Analyzer != nil {
		if err := s.Analyzer.Start(ctx); err != nil {
			return fmt.Errorf("start analyzer: %w", err)
		}
	}
	ln, err := s.webListener()
	if err != nil {
		return err
	}
	s.webLn = ln
	s.webDone = make(chan error, 1)
	// The exporter-toolkit serves TLS, client certificates and basic auth
	// as its web config file says (node_exporter's --web.config.file), and
	// reloads the certificates on new connections.
	webFlags := &web.FlagConfig{
		WebListenAddresses: &[]string{ln.Addr().String()},
		WebSystemdSocket:   new(bool),
		WebConfigFile:      &s.cfg.Web.ConfigFile,
	}
	go func() {
		err := web.Serve(ln, s.web, webFlags, s.logger.With("component", "web"))
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.webDone <- err
	}()
	if s.source != nil {
		if err := s.source.Start(ctx); err != nil {
			return fmt.Errorf("start SQL position source: %w", err)
		}
	}
	if s.forward != nil {
		if err := s.forward.Start(ctx); err != nil {
			return fmt.Errorf("start forwarding to %s: %w", s.cfg.Forward.Endpoint, err)
		}
	}
	if s.join != nil {
		if err := s.join.start(ctx); err != nil {
			return fmt.Errorf("start the join of %s: %w", s.cfg.Kafka.FactsTopic, err)
		}
		if err := s.lag.Start(ctx); err != nil {
			return fmt.Errorf("start the Kafka offset lag exporter: %w", err)
		}
		s.logger.Info("lagscope serving", "role", RoleJoin, "facts_topic", s.cfg.Kafka.FactsTopic, "metrics", s.MetricsURL(), "join_deadline", s.cfg.Join.Deadline)
		return nil
	}
	if s.ingest != nil {
		s.ingest.start()
	}
	if err := s.receiver.Start(ctx); err != nil {
		return fmt.Errorf("start OTLP receivers: %w", err)
	}
	if s.zipkin != nil {
		if err := s.zipkin.Start(ctx); err != nil {
			return fmt.Errorf("start the Zipkin receiver: %w", err)
		}
	}
	if s.kafka != nil {
		if err := s.kafka.Start(ctx); err != nil {
			return fmt.Errorf("start the Kafka consumer of %s: %w", s.cfg.Kafka.TracesTopic, err)
		}
		if err := s.lag.Start(ctx); err != nil {
			return fmt.Errorf("start the Kafka offset lag exporter: %w", err)
		}
	}
	s.logger.Info("lagscope serving", "role", s.cfg.Role,
		"otlp_grpc", addrString(s.receiver.GRPCAddr()), "otlp_http", addrString(s.receiver.HTTPAddr()),
		"metrics", s.MetricsURL(), "join_deadline", s.cfg.Join.Deadline)
	return nil
}

// Shutdown stops receiving first, on both transports at once, so that
// nothing accepted is lost: requests in flight finish within ctx and stalled
// ones are cut when it ends. Then it stops the analyzer and runs its last tick,
// so that every accepted span is in the counters; waits (within ctx) for the
// final scrape when Prometheus has been scraping (see finalScrape); and stops
// the metrics endpoint last. Cutting stalled clients is logged, not an error:
// it is what the shutdown budget is for.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.join != nil {
		// Applies the batch in hand, commits what was applied.
		if err := s.join.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.kafka != nil {
		// Before the receiver: the consumer hands its messages to the
		// receiver's core, and commits what it finished.
		if err := s.kafka.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the Kafka consumer: %w", err))
		}
	}
	if s.lag != nil {
		if err := s.lag.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the Kafka offset lag exporter: %w", err))
		}
	}
	if s.zipkin != nil {
		// Before the receiver, as Kafka: it hands its requests to the
		// receiver's core.
		if err := s.zipkin.Shutdown(ctx); err != nil {
			s.logger.Warn("cut Zipkin requests still in flight at the end of the shutdown budget", "err", err)
		}
	}
	if s.receiver != nil {
		if err := s.receiver.Shutdown(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				s.logger.Warn("cut OTLP requests still in flight at the end of the shutdown budget", "err", err)
			} else {
				errs = append(errs, fmt.Errorf("stop OTLP receivers: %w", err))
			}
		}
	}
	if s.ingest != nil {
		// After every consumer of the traces: what they resolved is
		// published, then the appends still waiting for their command.
		if err := s.ingest.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop the ingest role: %w", err))
		}
	}
	if s.forward != nil {
		// Half the budget at most: the analysis' last tick and the final
		// scrape must fit after it. What is left is counted as dropped.
		fctx, cancel := context.WithTimeout(ctx, ShutdownBudget/2)
		if err := s.forward.Shutdown(fctx); err != nil {
			s.logger.Warn("dropped spans still queued for forwarding at the end of its shutdown budget", "err", err)
		}
		cancel()
	}
	if s.Analyzer != nil {
		if err := s.Analyzer.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		s.Analyzer.Tick(time.Now())
	}
	if s.source != nil {
		if err := s.source.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop SQL position source: %w", err))
		}
	}
	if s.webLn != nil {
		s.scrapes.awaitFinal(ctx, time.Now())
		if err := s.web.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop metrics endpoint: %w", err))
			_ = s.web.Close()
		}
		if err := <-s.webDone; err != nil {
			errs = append(errs, fmt.Errorf("serve metrics: %w", err))
		}
		s.webLn = nil
	}
	return errors.Join(errs...)
}

// ShutdownBudget is how long Run gives Shutdown after SIGTERM: in-flight
// requests, the final scrape and the rest must fit in it.
const ShutdownBudget = 10 * time.Second

// Run starts the server and serves until ctx is cancelled, then shuts down
// within ShutdownBudget.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	s.logger.Info("shutting down", "budget", ShutdownBudget)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownBudget)
	defer cancel()
	err := s.Shutdown(sctx)
	if err == nil {
		s.logger.Info("shut down cleanly")
	}
	return err
}

// webListener listens on web.listen_address, or takes the socket systemd
// passed (web.systemd_socket).
func (s *Server) webListener() (net.Listener, error) {
	if !s.cfg.Web.SystemdSocket {
		ln, err := net.Listen("tcp", s.cfg.Web.ListenAddress)
		if err != nil {
			return nil, fmt.Errorf("listen for metrics on %s: %w", s.cfg.Web.ListenAddress, err)
		}
		return ln, nil
	}
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("take the metrics socket from systemd: %w", err)
	}
	if len(ls) != 1 || ls[0] == nil {
		for _, l := range ls {
			if l != nil {
				l.Close()
			}
		}
		return nil, fmt.Errorf("web.systemd_socket: want one stream socket from systemd (LISTEN_FDS), got %d", len(ls))
	}
	return ls[0], nil
}

// MetricsURL is the URL of the metrics endpoint after Start.
func (s *Server) MetricsURL() string {
	scheme := "http"
	if s.webTLS {
		scheme = "https"
	}
	return scheme + "://" + s.webLn.Addr().String() + s.cfg.Web.TelemetryPath
}

// GRPCAddr and HTTPAddr are the OTLP endpoints after Start.
// Both are nil in role join, which receives no OTLP.
func (s *Server) GRPCAddr() net.Addr {
	if s.receiver == nil {
		return nil
	}
	return s.receiver.GRPCAddr()
}

// HTTPAddr is the OTLP/HTTP endpoint after Start.
func (s *Server) HTTPAddr() net.Addr {
	if s.receiver == nil {
		return nil
	}
	return s.receiver.HTTPAddr()
}

// ZipkinAddr is the Zipkin endpoint after Start, nil without
// zipkin.endpoint.
func (s *Server) ZipkinAddr() net.Addr {
	if s.zipkin == nil {
		return nil
	}
	return s.zipkin.Addr()
}

func addrString(a net.Addr) string {
	if a == nil {
		return "disabled"
	}
	return a.String()
}

// tee hands the receiver's requests to the forwarder.
type tee struct{ f *forward.Forwarder }

func (t tee) Forward(body []byte, json bool, spans int) bool {
	enc := forward.Protobuf
	if json {
		enc = forward.JSON
	}
	return t.f.Forward(body, enc, spans)
}

// webConfigHasTLS checks the exporter-toolkit web config file at path, as
// the toolkit will read it, and reports whether it turns TLS on.
func webConfigHasTLS(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	if err := web.Validate(path); err != nil {
		return false, fmt.Errorf("web.config_file %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read web.config_file: %w", err)
	}
	var c struct {
		TLS struct {
			CertFile string `yaml:"cert_file"`
		} `yaml:"tls_server_config"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return false, fmt.Errorf("web.config_file %s: %w", path, err)
	}
	return c.TLS.CertFile != "", nil
}

// enablePdataPools switches on pdata's memory pools (its alpha feature gate
// pdata.useProtoPooling, off by default in the Collector): the receiver
// gives each request's pdata back once its consumer returns, which no
// consumer here keeps (collector.Consumer), and the next request reuses
// it. BenchmarkCollector's ratio: 0.85-0.89 without, 0.91-0.96 with
// (alternating pairs). The gate is process-wide and set once.
var enablePdataPools = sync.OnceFunc(func() {
	_ = featuregate.GlobalRegistry().Set("pdata.useProtoPooling", true)
})
