package collector

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/collector/pdata/xpdata/pref"

	"github.com/lagscope/lagscope/spanbatch"
)

// tracesCore is what the gRPC and HTTP transports share: the in-flight limiter,
// span validation, the hand-off to the consumer and the metrics of both.
// It is safe for concurrent use.
type tracesCore struct {
	next       Consumer
	limiter    *byteLimiter
	metrics    *metrics
	logger     *slog.Logger
	retryAfter time.Duration
	selective  *selectiveDecoder // decodes protobuf first when not nil (Config.LazyDecode)
	limits     decodeLimits
	tee        Tee // gets the bytes of every request consumed, when set
}

// Tee is what a forwarder (package forward) implements to receive, unchanged,
// the encoded request of every export the consumer accepted: body is the
// ExportTraceServiceRequest as received (decompressed), OTLP/JSON if json,
// else protobuf, holding spans spans. Forward must copy body (the receiver
// reuses it) and must not block: it reports whether it kept the request.
type Tee interface {
	Forward(body []byte, json bool, spans int) bool
}

// decode scans an encoded request (OTLP/JSON if json, else protobuf) against
// the per-request limits, reserves from the limiter an estimate from above of
// what decoding it allocates, and decodes it. The caller releases the
// returned reservation once it is done with the request, also on error,
// and frees the request.
//
// A protobuf request the selective decoder takes is decoded in one pass
// instead (decodeOnePass); when that declines, the scan decides as before.
// What the selective decoder takes is a Batch, whichever way it went.
//
// The estimates are of what pdata allocates for every item of the request.
// A Batch holds only the items the Selection keeps, each in less than
// pdata's cost of it (a Span is 120 bytes, against spanCost's 264), so the
// reservation bounds it from above too. For a consumer of pdata (no
// BatchConsumer), ToTraces adds the pdata of those kept items; with the
// Batch that stays under the estimate for requests of realistic spans
// (attributes, events, links not kept are charged and not held), though
// not for ones of spans with nothing else: then the two together may pass
// it by some bytes per span.
func (c *tracesCore) decode(buf []byte, json bool) (req decodedRequest, reserved int64, _ *requestError) {
	var declined fallbackReason // why the one pass declined for good, if it did
	if !json && c.selective != nil {
		var fb fallbackReason
		var b *spanbatch.Batch
		if b, reserved, fb = c.decodeOnePass(buf); fb == fallbackNone {
			return decodedRequest{batch: b}, reserved, nil
		}
		if fb != overLimit {
			declined = fb
		}
	}
	var counts requestCounts
	var rerr *requestError
	if json {
		counts, rerr = scanJSON(buf, c.limits)
	} else {
		counts, rerr = scanProto(buf, c.limits)
	}
	if rerr != nil {
		return decodedRequest{}, 0, rerr
	}
	est := counts.decodedSize(len(buf))
	if rerr := c.reserve(est); rerr != nil {
		return decodedRequest{}, 0, rerr
	}
	var err error
	switch {
	case json:
		preq := ptraceotlp.NewExportRequest()
		err = preq.UnmarshalJSON(buf)
		req = decodedRequest{td: preq.Traces()}
	case declined != fallbackNone:
		// The selective decoder would decline it again, for the same reason.
		req, _, err = decodeTraces(buf, nil)
		c.metrics.decodeFallbacks[declined].Inc()
	default:
		var fb fallbackReason
		if req, fb, err = decodeTraces(buf, c.selective); fb != fallbackNone {
			c.metrics.decodeFallbacks[fb].Inc()
		}
	}
	if err != nil {
		return decodedRequest{}, est, &requestError{reason: reasonDecodeError, err: fmt.Errorf("decode OTLP request: %w", err)}
	}
	return req, est, nil
}

// Without the scan, the selective decoder must reserve before it decodes:
// it reserves onePassBytes(len(buf)) and declines (overLimit) once the
// estimate of what pdata would allocate, which bounds what it allocates,
// passes that, or passes the same bytes per byte of the items it counted so
// far (onePassBudget): so a bomb (a million empty links in 2 MB) is left to
// the scan after a few hundred items. The bound holds the synth stream's
// requests with room to spare (TestOnePassBound).
const (
	onePassPerByte = 24       // bytes reserved per encoded byte
	onePassSlack   = 64 << 10 // and per request, for small requests' fixed costs
)

func onePassBytes(encoded int) int64 { return int64(encoded)*onePassPerByte + onePassSlack }

// receiverBudget is what decodeOnePass lets the decoder count of a request
// of encoded bytes.
func receiverBudget(encoded int) onePassBudget {
	return onePassBudget{bound: onePassBytes(encoded), perByte: onePassPerByte, slack: onePassSlack}
}

// decodeOnePass decodes a protobuf request with the selective decoder,
// counting against the limits as it goes instead of scanning first, and
// returns what it reserved: exactly what the scan would have (the estimate
// of the same counts). It declines, having reserved nothing, with overLimit
// when the request may pass a limit or its bound, or when the bound does not
// fit the budget (the scan decides then), or with the reason the selective
// decoder declined it.
func (c *tracesCore) decodeOnePass(buf []byte) (*spanbatch.Batch, int64, fallbackReason) {
	bound := onePassBytes(len(buf))
	// The decoder checks the depth of attribute values only: the messages
	// above them nest less deep than any valid limit.
	if c.limits.depth < minJSONDepth || bound > c.limiter.max || !c.limiter.tryAcquire(bound) {
		return nil, 0, overLimit
	}
	b, counts, fb := c.selective.decodeWithin(buf, c.limits, receiverBudget(len(buf)))
	if fb != fallbackNone {
		c.limiter.release(bound)
		return nil, 0, fb
	}
	est := counts.decodedSize(len(buf))
	c.limiter.release(bound - est)
	return b, est, fallbackNone
}

// reserve takes est bytes, what decoding a request will allocate, from the
// in-flight budget: a request that would need more than all of it is too
// large (413), one that does not fit now is overload (429 / retry later).
func (c *tracesCore) reserve(est int64) *requestError {
	if est > c.limiter.max {
		return newRequestError(reasonTooLarge, "request would decode into about "+strconv.FormatInt(est, 10)+
			" bytes, more than the receiver's in-flight budget of "+strconv.FormatInt(c.limiter.max, 10)+" (otlp.max_inflight_bytes)")
	}
	if !c.limiter.tryAcquire(est) {
		return overloaded(c.retryAfter)
	}
	return nil
}

// recovered logs a panic, of value v, met handling a request that arrived on
// t, and returns the error to answer it with.
func (c *tracesCore) recovered(ctx context.Context, t transport, v any) *requestError {
	c.logger.ErrorContext(ctx, "panic handling an OTLP request", "transport", t.String(), "panic", v, "stack", string(debug.Stack()))
	return &requestError{reason: reasonPanic, err: errPanicked}
}

// export validates the spans of a decoded request, hands the valid ones to the
// consumer (consume) and returns the response to send. It modifies req, and
// does not free it. It counts the spans it refuses; the transport counts a
// refused request.
//
// When a Tee is set, body (the request req was decoded from, OTLP/JSON if
// json) goes to it once the consumer accepted req: not before, so that a
// request the client retries after a consumer error is not forwarded twice.
func (c *tracesCore) export(ctx context.Context, t transport, req decodedRequest, body []byte, json bool) (ptraceotlp.ExportResponse, *requestError) {
	if req.batch == nil {
		// The consumer does not keep td (Consumer): give its memory back to
		// pdata's pools, which the server enables (server.New). A Batch
		// goes back to its pool when its transport frees it.
		defer pref.UnrefTraces(req.td)
	}
	received := req.spanCount()
	c.metrics.receivedSpans[t].Add(float64(received))

	resp := ptraceotlp.NewExportResponse()
	badTrace, badSpan := req.removeInvalidSpans()
	if rejected := badTrace + badSpan; rejected > 0 {
		c.metrics.rejectedSpans[reasonInvalidTraceID].Add(float64(badTrace))
		c.metrics.rejectedSpans[reasonInvalidSpanID].Add(float64(badSpan))
		msg := invalidSpansMessage(badTrace, badSpan)
		ps := resp.PartialSuccess()
		ps.SetRejectedSpans(int64(rejected))
		ps.SetErrorMessage(msg)
		c.logger.DebugContext(ctx, "rejected spans", "transport", t.String(), "rejected", rejected, "received", received, "cause", msg)
	}

	accepted := received - badTrace - badSpan
	if accepted == 0 {
		return resp, nil
	}
	if err := c.consume(ctx, req); err != nil {
		rerr := consumerError(err, c.retryAfter)
		c.metrics.rejectedSpans[rerr.reason].Add(float64(accepted))
		return ptraceotlp.ExportResponse{}, rerr
	}
	if c.tee != nil && body != nil {
		c.tee.Forward(body, json, received)
	}
	return resp, nil
}

// consume hands req to the consumer: a Batch to a BatchConsumer's
// ConsumeBatch, else pdata to ConsumeTraces (a Batch's ToTraces).
func (c *tracesCore) consume(ctx context.Context, req decodedRequest) error {
	if req.batch == nil {
		return c.next.ConsumeTraces(ctx, req.td)
	}
	if bc, ok := c.next.(BatchConsumer); ok {
		return bc.ConsumeBatch(ctx, req.batch)
	}
	td := req.batch.ToTraces()
	defer pref.UnrefTraces(td) // as export does of a request's pdata
	return c.next.ConsumeTraces(ctx, td)
}

// removeInvalidSpans removes the spans whose trace or span id is all zeros, which
// OTLP forbids, then the scopes and resources with no span left. It returns how many
// spans it removed for each cause; a span with both ids zero counts once, as a bad
// trace id.
func removeInvalidSpans(td ptrace.Traces) (badTrace, badSpan int) {
	if !hasInvalidSpan(td) {
		return 0, 0 // the usual case: no allocation, nothing rewritten
	}
	isInvalid := func(s ptrace.Span) bool {
		switch {
		case s.TraceID().IsEmpty():
			badTrace++
			return true
		case s.SpanID().IsEmpty():
			badSpan++
			return true
		}
		return false
	}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			sss.At(j).Spans().RemoveIf(isInvalid)
		}
		sss.RemoveIf(func(ss ptrace.ScopeSpans) bool { return ss.Spans().Len() == 0 })
	}
	rss.RemoveIf(func(rs ptrace.ResourceSpans) bool { return rs.ScopeSpans().Len() == 0 })
	return badTrace, badSpan
}

func hasInvalidSpan(td ptrace.Traces) bool {
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				s := spans.At(k)
				if s.TraceID().IsEmpty() || s.SpanID().IsEmpty() {
					return true
				}
			}
		}
	}
	return false
}

// invalidSpansMessage is the partial_success error_message for removed spans.
func invalidSpansMessage(badTrace, badSpan int) string {
	switch {
	case badSpan == 0:
		return fmt.Sprintf("rejected %d spans with an all-zero trace_id", badTrace)
	case badTrace == 0:
		return fmt.Sprintf("rejected %d spans with an all-zero span_id", badSpan)
	default:
		return fmt.Sprintf("rejected %d spans with an all-zero trace_id and %d spans with an all-zero span_id", badTrace, badSpan)
	}
}
