// Package collector receives OpenTelemetry traces over OTLP/gRPC and OTLP/HTTP,
// and from a Kafka topic written by the OpenTelemetry Collector's kafka
// exporter (Kafka, NewKafka), and hands each accepted request to a Consumer.
//
// All transports share one core: it drops spans that OTLP forbids (all-zero
// trace or span ids) and reports them as partial success, bounds the bytes of
// requests in flight, and maps consumer errors to the retryable statuses OTLP
// exporters retry. The package does not interpret spans beyond that.
//
// The edge is hostile: a request's items are counted, by a scan before it is
// decoded or by the selective decoder as it decodes within a reservation, and
// a request past the per-request limits of Config is refused; the in-flight
// budget holds what has arrived of each body plus an estimate of what
// decoding it allocates; bodies
// and gRPC messages that stall are cut after Config.ReadTimeout, idle
// connections after Config.IdleTimeout; connections and gRPC streams are
// capped; and a panic while handling a request is recovered, logged at Error
// and answered as an internal error.
//
// Both transports can serve TLS, with client certificates required
// (Config.TLS), and require a bearer token (Config.Auth); a request without
// it is refused before its body is read. The files of both are read again
// when they change, so certificates and tokens rotate without a restart.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// readHeaderTimeout bounds how long an HTTP client may take to send its request
// headers, so that idle half-open connections do not pile up.
const readHeaderTimeout = 10 * time.Second

// Receiver serves OTLP trace exports over gRPC and HTTP. Its methods are safe for
// concurrent use.
type Receiver struct {
	cfg    Config
	core   *tracesCore
	logger *slog.Logger
	tls    *serverTLS  // nil without Config.TLS
	auth   *bearerAuth // nil without Config.Auth

	mu         sync.Mutex
	started    bool
	grpcServer *grpc.Server
	grpcAddr   net.Addr
	httpServer *http.Server
	httpAddr   net.Addr
	serving    sync.WaitGroup // the Serve loops of both servers
}

// New returns a Receiver that hands accepted traces to next. It validates cfg,
// registers the receiver's metrics with reg (skipped if reg is nil) and logs per
// request problems at Debug, and panics at Error, to logger (discarded if nil). It listens on nothing
// until Start. It reads the files of cfg.TLS and cfg.Auth, and returns an
// error if they cannot be used.
func New(cfg Config, next Consumer, logger *slog.Logger, reg prometheus.Registerer) (*Receiver, error) {
	return newReceiver(cfg, next, logger, reg, defaultReloadInterval)
}

// newReceiver is New with the interval at which the files of cfg.TLS and
// cfg.Auth are looked at, which tests shorten.
func newReceiver(cfg Config, next Consumer, logger *slog.Logger, reg prometheus.Registerer, reloadInterval time.Duration) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid collector config: %w", err)
	}
	if next == nil {
		return nil, errors.New("collector: nil Consumer")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var srvTLS *serverTLS
	if cfg.TLS.enabled() {
		var err error
		if srvTLS, err = newServerTLS(cfg.TLS, "otlp", reloadInterval, logger); err != nil {
			return nil, err
		}
	}
	var auth *bearerAuth
	if cfg.Auth.enabled() {
		var err error
		if auth, err = newBearerAuth(cfg.Auth, reloadInterval, logger); err != nil {
			return nil, err
		}
		if srvTLS == nil {
			logger.Warn("otlp.auth.bearer_token_file is set without otlp.tls: the token crosses the network in clear")
		}
	}
	// Metrics last: a failure above leaves reg as it was.
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Receiver{
		cfg:    cfg,
		logger: logger,
		tls:    srvTLS,
		auth:   auth,
		core: &tracesCore{
			next:       next,
			limiter:    newByteLimiter(cfg.MaxInflightBytes),
			metrics:    m,
			logger:     logger,
			retryAfter: cfg.RetryAfter,
			selective:  cfg.selectiveDecoder(),
			limits:     cfg.decodeLimits(),
		},
	}, nil
}

// Start binds the configured listeners and starts serving on them. ctx bounds
// only the binding. If either listener cannot be bound, Start stops whatever it
// started and returns the error. Start may be called once.
func (r *Receiver) Start(ctx context.Context) (err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return errors.New("collector: receiver already started")
	}
	r.started = true
	defer func() {
		if err != nil {
			err = errors.Join(err, r.shutdownLocked(ctx))
		}
	}()

	var lc net.ListenConfig
	if r.cfg.GRPCEndpoint != "" {
		ln, err := lc.Listen(ctx, "tcp", r.cfg.GRPCEndpoint)
		if err != nil {
			return fmt.Errorf("listen for OTLP/gRPC on %s: %w", r.cfg.GRPCEndpoint, err)
		}
		srv := grpc.NewServer(r.grpcOptions()...)
		srv.RegisterService(&traceServiceDesc, &grpcTraces{core: r.core})
		r.grpcServer, r.grpcAddr = srv, ln.Addr()
		ln = newLimitListener(ln, r.cfg.MaxConnections)
		r.serving.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				r.logger.Error("OTLP/gRPC server stopped", "err", err)
			}
		})
		r.logger.Info("serving OTLP/gRPC", "addr", r.grpcAddr.String(), "tls", r.tls != nil, "mtls", r.cfg.TLS.ClientCAFile != "", "auth", r.auth != nil)
	}
	if r.cfg.HTTPEndpoint != "" {
		ln, err := lc.Listen(ctx, "tcp", r.cfg.HTTPEndpoint)
		if err != nil {
			return fmt.Errorf("listen for OTLP/HTTP on %s: %w", r.cfg.HTTPEndpoint, err)
		}
		mux := http.NewServeMux()
		mux.Handle(tracesPath, &httpTraces{core: r.core, auth: r.auth, maxBytes: r.cfg.MaxRequestBytes, transport: transportHTTP})
		srv := &http.Server{
			Handler:           withReadDeadline(mux, r.cfg.ReadTimeout),
			ReadHeaderTimeout: min(readHeaderTimeout, r.cfg.ReadTimeout),
			IdleTimeout:       r.cfg.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(r.logger.Handler(), slog.LevelDebug),
		}
		if r.tls != nil {
			srv.TLSConfig = r.tls.config(transportHTTP)
		}
		r.httpServer, r.httpAddr = srv, ln.Addr()
		ln = newLimitListener(ln, r.cfg.MaxConnections)
		r.serving.Go(func() {
			serve := srv.Serve
			if r.tls != nil {
				// The certificates come from srv.TLSConfig, not from files named here.
				serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
			}
			if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.logger.Error("OTLP/HTTP server stopped", "err", err)
			}
		})
		r.logger.Info("serving OTLP/HTTP", "addr", r.httpAddr.String(), "tls", r.tls != nil, "mtls", r.cfg.TLS.ClientCAFile != "", "auth", r.auth != nil)
	}
	return nil
}

// Shutdown stops accepting connections on both transports at once, and waits
// for the requests in flight to finish and for both servers' loops to end.
// When ctx is done first, it closes the remaining connections (cutting
// stalled bodies and streams, and cancelling the contexts of requests still
// in the consumer), waits for the loops, and returns ctx's error. Shutdown
// without Start, or twice, does nothing.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shutdownLocked(ctx)
}

func (r *Receiver) shutdownLocked(ctx context.Context) error {
	// Both servers stop at once: each closes its listener first, so that
	// neither accepts a connection once Shutdown has begun.
	var stopping sync.WaitGroup
	var httpErr, grpcErr error
	if srv := r.httpServer; srv != nil {
		stopping.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				httpErr = fmt.Errorf("shut down OTLP/HTTP server: %w", err)
				_ = srv.Close() // cancels the contexts of the requests left and cuts stalled bodies
			}
		})
		r.httpServer = nil
	}
	if srv := r.grpcServer; srv != nil {
		stopping.Go(func() {
			stopped := make(chan struct{})
			go func() {
				srv.GracefulStop()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-ctx.Done():
				srv.Stop() // also ends GracefulStop, and cuts stalled streams
				<-stopped
				grpcErr = fmt.Errorf("shut down OTLP/gRPC server: %w", ctx.Err())
			}
		})
		r.grpcServer = nil
	}
	stopping.Wait()
	r.serving.Wait()
	return errors.Join(httpErr, grpcErr)
}

// grpcOptions returns the gRPC server's options: the limits of Config, and
// the hooks through which the receiver decodes and counts requests itself.
func (r *Receiver) grpcOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(r.cfg.MaxRequestBytes)),
		grpc.ForceServerCodecV2(newRawCodec()),
		grpc.StatsHandler(grpcStats{core: r.core}),
		grpc.InTapHandle(grpcAdmission{core: r.core, auth: r.auth, readTimeout: r.cfg.ReadTimeout}.tap),
		grpc.MaxConcurrentStreams(uint32(r.cfg.MaxConcurrentStreams)),
		// Streams run on long-lived workers rather than a goroutine each,
		// whose stack grew again for every request (copystack was 2 % of
		// the CPU under BenchmarkCollector's load; 2-3 % less CPU per span
		// with workers, 3 alternating pairs). Past them, gRPC still
		// starts a goroutine per stream.
		grpc.NumStreamWorkers(uint32(max(16, 4*runtime.GOMAXPROCS(0)))),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: r.cfg.IdleTimeout,
			// Ping a connection silent for that long, and close it if the
			// peer does not answer: a vanished client's connection goes.
			Time:    r.cfg.IdleTimeout,
			Timeout: keepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Exporters that keep their connection alive with pings are
			// common (the Collector's configgrpc offers it); more often than
			// this is abuse, answered with GOAWAY.
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
		// Static windows turn off the BDP estimator, which grows a
		// connection's window up to 16 MiB of data buffered before any
		// handler reads it. gRPC still enlarges a stream's window to the
		// length of the message being read, so a message in progress is
		// bounded by MaxRequestBytes and ReadTimeout, not by these.
		grpc.InitialWindowSize(grpcStreamWindow),
		grpc.InitialConnWindowSize(grpcConnWindow),
	}
	if r.tls != nil {
		opts = append(opts,
			grpc.Creds(credentials.NewTLS(r.tls.config(transportGRPC))),
			// The handshake is bounded as HTTP's is by ReadHeaderTimeout,
			// not by gRPC's default of 120s.
			grpc.ConnectionTimeout(min(readHeaderTimeout, r.cfg.ReadTimeout)))
	}
	return opts
}

// gRPC transport settings that are not worth a Config field.
const (
	keepaliveTimeout = 20 * time.Second
	keepaliveMinTime = 10 * time.Second
	grpcStreamWindow = 256 << 10
	grpcConnWindow   = 1 << 20
)

// SetTee makes the receiver hand the bytes of every consumed request to t
// (all transports, Kafka included), for forwarding. Call it before Start.
func (r *Receiver) SetTee(t Tee) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.core.tee = t
}

// GRPCAddr returns the address the OTLP/gRPC server is bound to, or nil before
// Start or if gRPC is disabled.
func (r *Receiver) GRPCAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grpcAddr
}

// HTTPAddr returns the address the OTLP/HTTP server is bound to, or nil before
// Start or if HTTP is disabled.
func (r *Receiver) HTTPAddr() net.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.httpAddr
}
