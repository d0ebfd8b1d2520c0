package collector

import (
	"context"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Consumer receives the traces of one accepted export request. ConsumeTraces is called
// concurrently; it must not retain td after it returns.
//
// If the returned error (checked with errors.As) implements
// interface{ RetryAfter() time.Duration }, the request is answered as overload:
// HTTP 429 or gRPC ResourceExhausted, advising that delay. Any other error is
// answered as HTTP 503 or gRPC Unavailable, which OTLP exporters retry.
type Consumer interface {
	ConsumeTraces(ctx context.Context, td ptrace.Traces) error
}

// Discard is a Consumer that accepts every request and does nothing with it:
// a receiver with the analysis switched off, to measure what receiving alone
// costs.
var Discard Consumer = discard{}

type discard struct{}

func (discard) ConsumeTraces(context.Context, ptrace.Traces) error { return nil }
