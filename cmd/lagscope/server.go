package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/sqlsource"
)

// Server is `lagscope serve`: the OTLP receivers feeding the analyzer, and the
// metrics endpoint. End-to-end tests and the demo run it in-process.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	Registry *prometheus.Registry
	Analyzer *analyzer.Analyzer
	receiver *collector.Receiver
	source   *sqlsource.Source // nil unless sql_source.dsn is set
	web      *http.Server
	webLn    net.Listener
	webDone  chan error
}

// NewServer builds a Server from a validated config; nothing listens until
// Start.
func NewServer(cfg Config, logger *slog.Logger) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	a, err := analyzer.New(cfg.Analyzer(), logger.With("component", "analyzer"), reg)
	if err != nil {
		return nil, err
	}
	var next collector.Consumer = a
	if cfg.AnalysisDisabled {
		next = collector.Discard
	}
	r, err := collector.New(cfg.Collector(), next, logger.With("component", "collector"), reg)
	if err != nil {
		return nil, err
	}
	var source *sqlsource.Source
	if cfg.SQLSource.DSN != "" {
		if source, err = sqlsource.New(cfg.PositionSource(), logger.With("component", "sqlsource"), reg); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle(cfg.Web.TelemetryPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// Exemplars (trace ids) are only in the OpenMetrics exposition.
		EnableOpenMetrics: true,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
		Registry:          reg,
	}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "lagscope is healthy.") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "lagscope is ready.") })
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "<html><head><title>lagscope</title></head><body><h1>lagscope</h1><p><a href=%q>Metrics</a></p></body></html>\n", cfg.Web.TelemetryPath)
	})
	return &Server{
		cfg: cfg, logger: logger, Registry: reg, Analyzer: a, receiver: r, source: source,
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
	if err := s.Analyzer.Start(ctx); err != nil {
		return fmt.Errorf("start analyzer: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.Web.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", s.cfg.Web.ListenAddress, err)
	}
	s.webLn = ln
	s.webDone = make(chan error, 1)
	go func() {
		err := s.web.Serve(ln)
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
	if err := s.receiver.Start(ctx); err != nil {
		return fmt.Errorf("start OTLP receivers: %w", err)
	}
	s.logger.Info("lagscope serving",
		"otlp_grpc", addrString(s.receiver.GRPCAddr()), "otlp_http", addrString(s.receiver.HTTPAddr()),
		"metrics", "http://"+ln.Addr().String()+s.cfg.Web.TelemetryPath, "join_deadline", s.cfg.Join.Deadline)
	return nil
}

// Shutdown stops receiving first, so that nothing accepted is lost, then the
// analyzer, then the metrics endpoint. It waits for each, within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if err := s.receiver.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop OTLP receivers: %w", err))
	}
	if err := s.Analyzer.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.source != nil {
		if err := s.source.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop SQL position source: %w", err))
		}
	}
	if s.webLn != nil {
		if err := s.web.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop metrics endpoint: %w", err))
		}
		if err := <-s.webDone; err != nil {
			errs = append(errs, fmt.Errorf("serve metrics: %w", err))
		}
		s.webLn = nil
	}
	return errors.Join(errs...)
}

// Run starts the server and serves until ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	s.logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return s.Shutdown(sctx)
}

// MetricsURL is the URL of the metrics endpoint after Start.
func (s *Server) MetricsURL() string {
	return "http://" + s.webLn.Addr().String() + s.cfg.Web.TelemetryPath
}

// GRPCAddr and HTTPAddr are the OTLP endpoints after Start.
func (s *Server) GRPCAddr() net.Addr { return s.receiver.GRPCAddr() }

// HTTPAddr is the OTLP/HTTP endpoint after Start.
func (s *Server) HTTPAddr() net.Addr { return s.receiver.HTTPAddr() }

func addrString(a net.Addr) string {
	if a == nil {
		return "disabled"
	}
	return a.String()
}
