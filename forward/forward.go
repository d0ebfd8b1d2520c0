// Package forward sends every span lagscope receives, unchanged, to an OTLP
// backend (Jaeger v2, Grafana Tempo, an OpenTelemetry Collector), so that
// users keep their trace backend without running a collector in front of
// lagscope.
//
// The receiver hands the Forwarder each accepted request's bytes as they
// arrived; protobuf is sent as it is, over OTLP/gRPC or OTLP/HTTP, and
// OTLP/JSON as it is over HTTP, or converted to protobuf once for gRPC.
// Forward copies the bytes into a queue bounded in bytes and returns at
// once; senders deliver the queue with retries and exponential backoff,
// honouring the server's advice (HTTP Retry-After, gRPC RetryInfo) and
// retrying only what OTLP says is retryable. When the backend is down or
// slow the queue fills and further requests are dropped: receiving and
// analysis never wait for the backend. Every span dropped is counted in
// lagscope_forward_dropped_spans_total under a bounded reason.
//
// Delivery is at least once while a request is retried (an attempt that
// timed out may have reached the backend) and at most once past the queue's
// bound and the retry budget.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Encoding is the encoding of a request body given to Forward.
type Encoding uint8

const (
	// Protobuf is a serialized
	// opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.
	Protobuf Encoding = iota
	// JSON is the same request in OTLP/JSON.
	JSON
)

// sender sends one request to the backend.
type sender interface {
	// send makes one attempt. It returns the spans the backend rejected as
	// partial success, or a *sendError, or an errMalformed.
	send(ctx context.Context, r *request) (rejected int64, err error)
	close() error
}

// Forwarder queues requests and sends them to the backend. Its methods are
// safe for concurrent use.
type Forwarder struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	queue   *queue
	sender  sender

	// sendCtx is the senders' context: cancelled when Shutdown's context
	// ends, it cuts attempts and waits in progress.
	sendCtx    context.Context
	cancelSend context.CancelFunc
	draining   chan struct{} // closed when Shutdown begins: senders end once the queue is empty

	// full is set by a queue_full drop and cleared by a queued request, so
	// that the queue filling up is logged once, not once per request.
	full atomic.Bool
	// lastWarn is when drop last logged each reason at Warn (Unix ns).
	lastWarn [numReasons]atomic.Int64

	mu       sync.Mutex
	started  bool
	shutdown bool
	senders  sync.WaitGroup
}

// New returns a Forwarder to cfg.Endpoint. It validates cfg, reads its TLS
// files, registers the forwarder's metrics with reg (skipped if reg is nil)
// and logs failed sends to logger (discarded if nil). It connects to nothing
// until the first send after Start; Forward queues already before Start.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid forward config: %w", err)
	}
	if !cfg.Enabled() {
		return nil, errors.New("forward: forward.endpoint is empty: nothing to forward to")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tc, err := cfg.TLS.config()
	if err != nil {
		return nil, err
	}
	q := newQueue(cfg.QueueBytes)
	m, err := newMetrics(reg, q)
	if err != nil {
		return nil, err
	}
	var s sender
	if cfg.Protocol == ProtocolHTTP {
		s = newHTTPSender(cfg, tc)
	} else if s, err = newGRPCSender(cfg, tc); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{
		cfg: cfg, logger: logger, metrics: m, queue: q, sender: s,
		sendCtx: ctx, cancelSend: cancel, draining: make(chan struct{}),
	}, nil
}

// Start starts the senders (forward.concurrency of them). ctx is not
// retained: Shutdown stops them. Start may be called once, and not after
// Shutdown.
func (f *Forwarder) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.started:
		return errors.New("forward: forwarder already started")
	case f.shutdown:
		return errors.New("forward: forwarder shut down")
	}
	f.started = true
	for range f.cfg.Concurrency {
		f.senders.Go(f.run)
	}
	f.logger.Info("forwarding traces", "endpoint", f.cfg.Endpoint, "protocol", f.cfg.Protocol, "tls", f.cfg.TLS.on())
	return nil
}

// Forward queues a copy of body, an export request of spans spans in
// encoding enc, to be sent to the backend, and reports whether it was
// queued. It never blocks on the backend: a request that does not fit in
// forward.queue_bytes, or that comes after Shutdown began, is dropped and
// counted (reasons queue_full, shutdown). The caller may reuse body once
// Forward returns. spans is what the drop and sent counters count.
func (f *Forwarder) Forward(body []byte, enc Encoding, spans int) bool {
	n := int64(len(body))
	fits, open := f.queue.reserve(n)
	if !fits {
		r := reasonQueueFull
		if !open {
			r = reasonShutdown
		}
		f.metrics.dropped[r].Add(float64(spans))
		if r == reasonQueueFull && !f.full.Swap(true) {
			f.logger.Warn("forwarding queue is full: dropping spans until it drains", "queue_bytes", f.cfg.QueueBytes)
		}
		return false
	}
	if f.full.Load() {
		f.full.Store(false)
	}
	r := requestPool.Get().(*request)
	r.body = append(r.body[:0], body...)
	r.enc, r.spans = enc, spans
	if !f.queue.push(r) {
		// Shutdown closed the queue between the two.
		f.metrics.dropped[reasonShutdown].Add(float64(spans))
		r.free()
		return false
	}
	return true
}

// Shutdown stops queueing, lets the senders deliver what is queued until
// ctx ends, then cuts the attempts in progress, counts what was not
// delivered as dropped (reason shutdown), waits for the senders to end and
// closes the connections. It returns ctx's error if ctx ended before the
// queue was delivered. A request cut mid-attempt is counted as dropped
// though the backend may have taken it.
// Shutdown twice does nothing; without Start, it drops what was queued.
func (f *Forwarder) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutdown {
		return nil
	}
	f.shutdown = true
	f.queue.close()
	close(f.draining)

	done := make(chan struct{})
	go func() {
		f.senders.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		f.cancelSend()
		<-done
		err = fmt.Errorf("shut down forwarder: %w", ctx.Err())
	}
	// Whatever is still queued: nothing was started, or ctx ended first.
	left := 0
	for r := f.queue.take(); r != nil; r = f.queue.take() {
		left += r.spans
		f.queue.done(r)
		r.free()
	}
	if left > 0 {
		f.metrics.dropped[reasonShutdown].Add(float64(left))
	}
	f.cancelSend()
	return errors.Join(err, f.sender.close())
}

// run is a sender: it takes requests from the queue and delivers them until
// the queue is empty once Shutdown has begun, or Shutdown's context ends.
func (f *Forwarder) run() {
	for {
		r := f.queue.take()
		if r == nil {
			select {
			case <-f.queue.wake:
				continue
			case <-f.draining:
				if f.queue.empty() {
					return
				}
				continue
			case <-f.sendCtx.Done():
				return
			}
		}
		f.deliver(f.sendCtx, r)
		f.queue.done(r)
		r.free()
	}
}

// deliver sends r, retrying as Config.Retry says, and counts the outcome.
func (f *Forwarder) deliver(ctx context.Context, r *request) {
	start := time.Now()
	b := backoff{next: f.cfg.Retry.InitialInterval, max: f.cfg.Retry.MaxInterval}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		actx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
		rejected, err := f.sender.send(actx, r)
		cancel()
		if err == nil {
			rejected = min(rejected, int64(r.spans))
			f.metrics.sent.Add(float64(int64(r.spans) - rejected))
			if rejected > 0 {
				f.metrics.dropped[reasonPartialSuccess].Add(float64(rejected))
				f.logger.Debug("backend rejected forwarded spans", "rejected", rejected, "spans", r.spans)
			}
			return
		}
		if ctx.Err() != nil {
			f.metrics.dropped[reasonShutdown].Add(float64(r.spans))
			return
		}
		var malformed errMalformed
		if errors.As(err, &malformed) {
			f.drop(reasonMalformed, r, err)
			return
		}
		var se *sendError
		if !errors.As(err, &se) || !se.retryable {
			f.drop(reasonRejected, r, err)
			return
		}
		wait := b.wait()
		if se.after > 0 {
			wait = se.after // the server knows better than our guess
		}
		if time.Since(start)+wait > f.cfg.Retry.MaxElapsedTime {
			f.drop(reasonRetriesExhausted, r, err)
			return
		}
		f.logger.Debug("retrying forwarded request", "in", wait, "err", err)
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			f.metrics.dropped[reasonShutdown].Add(float64(r.spans))
			return
		}
		f.metrics.retries.Inc()
	}
}

// dropLogInterval is how often drops of one reason are logged at Warn; the
// others go to Debug. A backend that refuses everything (a wrong token)
// would otherwise log every request.
const dropLogInterval = 10 * time.Second

// drop counts and logs a request given up for reason.
func (f *Forwarder) drop(reason reason, r *request, err error) {
	f.metrics.dropped[reason].Add(float64(r.spans))
	level := slog.LevelDebug
	now := time.Now().UnixNano()
	if last := f.lastWarn[reason].Load(); now-last >= int64(dropLogInterval) && f.lastWarn[reason].CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	f.logger.Log(context.Background(), level, "dropped forwarded spans", "reason", reason.String(), "spans", r.spans, "err", err)
}
