package collector

import (
	"context"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
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

// BatchConsumer is implemented by a Consumer that also takes a request as a
// spanbatch.Batch, which is optional. The selective decoder (Config.LazyDecode)
// decodes a protobuf request into a Batch: a BatchConsumer gets it as such,
// by ConsumeBatch; any other Consumer gets its ToTraces by ConsumeTraces.
// A request that pdata decodes (OTLP/JSON, one the selective decoder
// declines, Zipkin) goes to ConsumeTraces either way.
//
// ConsumeBatch has ConsumeTraces's contract: it is called concurrently, it
// must not retain b (nor its slices) after it returns, for the receiver
// reuses b, and its error is answered exactly as ConsumeTraces's. The
// strings of b are ordinary strings, safe to keep.
type BatchConsumer interface {
	ConsumeBatch(ctx context.Context, b *spanbatch.Batch) error
}

// Discard is a Consumer, and a BatchConsumer, that accepts every request and
// does nothing with it: a receiver with the analysis switched off, to
// measure what receiving alone costs.
var Discard Consumer = discard{}

type discard struct{}

func (discard) ConsumeTraces(context.Context, ptrace.Traces) error { return nil }

func (discard) ConsumeBatch(context.Context, *spanbatch.Batch) error { return nil }

// Flusher is implemented by a Consumer that can hold back the work of the
// requests it accepts until Flush: the Kafka transport hands it a batch of
// messages, calls Flush, and commits the batch only once Flush returned nil
// (retrying Flush with backoff while it fails). A Consumer that publishes
// what it consumes publishes the batch with one round trip instead of one a
// message.
//
// ConsumeTraces learns from FlushFollows(ctx) whether a Flush will follow;
// the other transports never call Flush, so without that mark it must
// finish each request's work before it returns, as any Consumer.
type Flusher interface {
	// Flush finishes the work of the requests consumed since the last
	// Flush that returned nil. After an error, it is called again (nothing
	// of the batch is committed meanwhile), so what it could not finish
	// must be kept for that call.
	Flush(ctx context.Context) error
}

type flushFollowsKey struct{}

// withFlushFollows marks ctx as that of requests whose transport calls Flush
// after them.
func withFlushFollows(ctx context.Context) context.Context {
	return context.WithValue(ctx, flushFollowsKey{}, true)
}

// FlushFollows reports whether ctx is that of a request after which the
// transport calls the Consumer's Flush before it counts the request as done:
// a Flusher may then leave its work to Flush.
func FlushFollows(ctx context.Context) bool {
	v, _ := ctx.Value(flushFollowsKey{}).(bool)
	return v
}
