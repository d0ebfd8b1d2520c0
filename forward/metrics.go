package forward

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// reason is why forwarded spans were dropped: the bounded values of the
// reason label of lagscope_forward_dropped_spans_total.
type reason int

const (
	// reasonQueueFull: the request did not fit in forward.queue_bytes.
	reasonQueueFull reason = iota
	// reasonRejected: the backend answered with a status OTLP says not to
	// retry (HTTP 400, gRPC InvalidArgument, ...).
	reasonRejected
	// reasonRetriesExhausted: retryable failures went on past
	// forward.retry.max_elapsed_time, or the server advised a wait past it.
	reasonRetriesExhausted
	// reasonShutdown: still queued or being sent when Shutdown's context
	// ended, or handed to Forward after Shutdown began.
	reasonShutdown
	// reasonPartialSuccess: the backend accepted the request but rejected
	// these spans (partial_success.rejected_spans).
	reasonPartialSuccess
	// reasonMalformed: an OTLP/JSON request that does not convert to
	// protobuf for gRPC.
	reasonMalformed
	numReasons
)

func (r reason) String() string {
	switch r {
	case reasonQueueFull:
		return "queue_full"
	case reasonRejected:
		return "rejected"
	case reasonRetriesExhausted:
		return "retries_exhausted"
	case reasonShutdown:
		return "shutdown"
	case reasonPartialSuccess:
		return "partial_success"
	case reasonMalformed:
		return "malformed"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// metrics are the Forwarder's Prometheus collectors.
type metrics struct {
	sent    prometheus.Counter
	dropped [numReasons]prometheus.Counter
	retries prometheus.Counter
}

// newMetrics builds the metrics of q and registers them with reg, unless reg
// is nil. Every reason is created at 0, so that a rate over it exists
// before the first drop.
func newMetrics(reg prometheus.Registerer, q *queue) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lagscope_forward_sent_spans_total",
			Help: "Spans the forwarding backend accepted.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lagscope_forward_retries_total",
			Help: "Attempts to send a forwarded request again after a retryable failure.",
		}),
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_forward_dropped_spans_total",
		Help: "Spans received but not forwarded, by reason.",
	}, []string{"reason"})
	for r := range numReasons {
		m.dropped[r] = dropped.WithLabelValues(r.String())
	}
	queueBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lagscope_forward_queue_bytes",
		Help: "Bytes of forwarded requests held: queued or being sent (bounded by forward.queue_bytes).",
	}, func() float64 { b, _ := q.size(); return float64(b) })
	queueRequests := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lagscope_forward_queue_requests",
		Help: "Forwarded requests held: queued or being sent.",
	}, func() float64 { _, n := q.size(); return float64(n) })
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sent, dropped, m.retries, queueBytes, queueRequests} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register forward metrics: %w", err)
			}
		}
	}
	return m, nil
}
