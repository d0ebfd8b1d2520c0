package collector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// transport names the protocol a request arrived on; it indexes per-transport metrics.
type transport uint8

const (
	transportGRPC transport = iota
	transportHTTP
	transportKafka
	transportZipkin
	numTransports
)

func (t transport) String() string {
	return [...]string{"grpc", "http", "kafka", "zipkin"}[t]
}

// reason names why spans or a request were refused; its String is the metrics label value.
type reason uint8

const (
	reasonInvalidTraceID reason = iota
	reasonInvalidSpanID
	reasonDecodeError
	reasonTooLarge
	reasonUnsupportedMediaType
	reasonMethodNotAllowed
	reasonOverloaded
	reasonConsumerError
	reasonPanic
	reasonUnauthenticated
	numReasons
)

func (r reason) String() string {
	return [...]string{
		"invalid_trace_id",
		"invalid_span_id",
		"decode_error",
		"too_large",
		"unsupported_media_type",
		"method_not_allowed",
		"overloaded",
		"consumer_error",
		"panic",
		"unauthenticated",
	}[r]
}

// Reasons that apply to spans and to requests; every pair is exported from the
// start so that rates over them exist before the first rejection.
var (
	spanReasons    = []reason{reasonInvalidTraceID, reasonInvalidSpanID, reasonOverloaded, reasonConsumerError}
	requestReasons = []reason{reasonDecodeError, reasonTooLarge, reasonUnsupportedMediaType, reasonMethodNotAllowed, reasonOverloaded, reasonConsumerError, reasonPanic, reasonUnauthenticated}
	// A Kafka message has no media type, no method and no token to refuse.
	kafkaReasons = []reason{reasonDecodeError, reasonTooLarge, reasonOverloaded, reasonConsumerError, reasonPanic}
	// The Zipkin endpoint asks for no token (zipkin.tls.client_ca_file
	// authenticates clients in the handshake, before any request).
	zipkinReasons = []reason{reasonDecodeError, reasonTooLarge, reasonUnsupportedMediaType, reasonMethodNotAllowed, reasonOverloaded, reasonConsumerError, reasonPanic}
)

// reasons returns the request reasons that apply to t.
func (t transport) reasons() []reason {
	switch t {
	case transportKafka:
		return kafkaReasons
	case transportZipkin:
		return zipkinReasons
	}
	return requestReasons
}

// metrics holds the receiver's metrics. Label children are resolved once here so
// that the request path does no label lookups.
type metrics struct {
	receivedSpans    [numTransports]prometheus.Counter
	rejectedSpans    [numReasons]prometheus.Counter
	rejectedRequests [numTransports][numReasons]prometheus.Counter
	requestDuration  [numTransports]prometheus.Observer
	decodeFallbacks  [numFallbackReasons]prometheus.Counter
}

// newMetrics builds the receiver's metrics and registers them with reg, unless reg is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_received_spans_total",
		Help: "Spans in OTLP export requests that decoded, whether accepted or not.",
	}, []string{"transport"})
	rejectedSpans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_rejected_spans_total",
		Help: "Decoded spans that were not handed on, by reason.",
	}, []string{"reason"})
	rejectedRequests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_rejected_requests_total",
		Help: "OTLP export requests answered with an error, by transport and reason.",
	}, []string{"transport", "reason"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lagscope_request_duration_seconds",
		Help:    "Time taken to read, decode and consume an OTLP export request.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8), // 0.5ms to ~8s
	}, []string{"transport"})
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_decode_fallbacks_total",
		Help: "OTLP protobuf requests that the selective decoder (otlp.lazy_decode) declined and left to pdata, by reason; pdata refuses the malformed ones too.",
	}, []string{"reason"})

	if reg != nil {
		cs := []prometheus.Collector{received, rejectedSpans, rejectedRequests, duration, fallbacks}
		for i, c := range cs {
			if err := reg.Register(c); err != nil {
				// Undo the partial registration so that New can be retried on reg.
				for _, done := range cs[:i] {
					reg.Unregister(done)
				}
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}

	m := &metrics{}
	for t := range numTransports {
		m.receivedSpans[t] = received.WithLabelValues(t.String())
		m.requestDuration[t] = duration.WithLabelValues(t.String())
		for _, r := range t.reasons() {
			m.rejectedRequests[t][r] = rejectedRequests.WithLabelValues(t.String(), r.String())
		}
	}
	for _, r := range spanReasons {
		m.rejectedSpans[r] = rejectedSpans.WithLabelValues(r.String())
	}
	for r := fallbackNone + 1; r < numFallbackReasons; r++ {
		m.decodeFallbacks[r] = fallbacks.WithLabelValues(r.String())
	}
	return m, nil
}
