// Package collector receives OpenTelemetry traces over OTLP/gRPC and OTLP/HTTP
// and hands each accepted request to a Consumer.
//
// Both transports share one core: it drops spans that OTLP forbids (all-zero
// trace or span ids) and reports them as partial success, bounds the bytes of
// requests in flight, and maps consumer errors to the retryable statuses OTLP
// exporters retry. The package does not interpret spans beyond that.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
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
// request problems at Debug to logger (discarded if nil). It listens on nothing
// until Start.
func New(cfg Config, next Consumer, logger *slog.Logger, reg prometheus.Registerer) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid collector config: %w", err)
	}
	if next == nil {
		return nil, errors.New("collector: nil Consumer")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Receiver{
		cfg:    cfg,
		logger: logger,
		core: &tracesCore{
			next:       next,
			limiter:    newByteLimiter(cfg.MaxInflightBytes),
			metrics:    m,
			logger:     logger,
			retryAfter: cfg.RetryAfter,
			lazy:       cfg.LazyDecode,
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
		srv := grpc.NewServer(
			grpc.MaxRecvMsgSize(int(r.cfg.MaxRequestBytes)),
			grpc.ForceServerCodecV2(newRawCodec()),
			grpc.StatsHandler(grpcStats{core: r.core}),
		)
		srv.RegisterService(&traceServiceDesc, &grpcTraces{core: r.core})
		r.grpcServer, r.grpcAddr = srv, ln.Addr()
		r.serving.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				r.logger.Error("OTLP/gRPC server stopped", "err", err)
			}
		})
		r.logger.Info("serving OTLP/gRPC", "addr", r.grpcAddr.String())
	}
	if r.cfg.HTTPEndpoint != "" {
		ln, err := lc.Listen(ctx, "tcp", r.cfg.HTTPEndpoint)
		if err != nil {
			return fmt.Errorf("listen for OTLP/HTTP on %s: %w", r.cfg.HTTPEndpoint, err)
		}
		mux := http.NewServeMux()
		mux.Handle(tracesPath, &httpTraces{core: r.core, maxBytes: r.cfg.MaxRequestBytes})
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: readHeaderTimeout,
			ErrorLog:          slog.NewLogLogger(r.logger.Handler(), slog.LevelDebug),
		}
		r.httpServer, r.httpAddr = srv, ln.Addr()
		r.serving.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.logger.Error("OTLP/HTTP server stopped", "err", err)
			}
		})
		r.logger.Info("serving OTLP/HTTP", "addr", r.httpAddr.String())
	}
	return nil
}

// Shutdown stops accepting requests and waits for those in flight to finish and
// for both servers' loops to end. When ctx is done first, it closes the remaining
// connections (cancelling the contexts of requests still in the consumer), waits
// for the loops, and returns ctx's error. Shutdown without Start, or twice, does
// nothing.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shutdownLocked(ctx)
}

func (r *Receiver) shutdownLocked(ctx context.Context) error {
	var errs []error
	if r.httpServer != nil {
		if err := r.httpServer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down OTLP/HTTP server: %w", err))
			_ = r.httpServer.Close() // cancels the contexts of the requests left
		}
		r.httpServer = nil
	}
	if r.grpcServer != nil {
		stopped := make(chan struct{})
		go func() {
			r.grpcServer.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			r.grpcServer.Stop() // also ends GracefulStop
			<-stopped
			errs = append(errs, fmt.Errorf("shut down OTLP/gRPC server: %w", ctx.Err()))
		}
		r.grpcServer = nil
	}
	r.serving.Wait()
	return errors.Join(errs...)
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
