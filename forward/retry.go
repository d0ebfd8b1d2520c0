package forward

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sendError is a failed attempt, classified as OTLP prescribes.
type sendError struct {
	retryable bool
	// after is the wait the server advised, 0 if none.
	after time.Duration
	err   error
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// grpcError classifies the error of a gRPC export as the OTLP specification
// does (otlp.md, "Failures"): Canceled, DeadlineExceeded, Aborted,
// OutOfRange, Unavailable and DataLoss are retryable, ResourceExhausted only
// with RetryInfo (the server says it can recover), everything else is not.
func grpcError(err error) *sendError {
	st := status.Convert(err)
	e := &sendError{err: err}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			e.after = max(ri.GetRetryDelay().AsDuration(), 0)
		}
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		e.retryable = true
	case codes.ResourceExhausted:
		e.retryable = hasRetryInfo(st)
	}
	return e
}

func hasRetryInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// httpError classifies an OTLP/HTTP answer that is not a success: 429, 502,
// 503 and 504 are retryable, with the wait of their Retry-After header;
// every other status is not.
func httpError(resp *http.Response, err error, now time.Time) *sendError {
	e := &sendError{err: err}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		e.retryable = true
		e.after = retryAfter(resp.Header.Get("Retry-After"), now)
	}
	return e
}

// retryAfter parses a Retry-After header (RFC 9110 section 10.2.3): a number
// of seconds or an HTTP date. It returns 0 for none or garbage.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(maxAdvice/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxAdvice)
	}
	return 0
}

// maxAdvice bounds what a server's advice can make a sender wait, before
// max_elapsed_time does: a day is already past any sensible setting.
const maxAdvice = 24 * time.Hour

// errTransport marks an attempt that got no answer (connection refused,
// reset, timed out): retryable.
var errTransport = errors.New("no answer from the backend")

// backoff is the exponential backoff of one request.
type backoff struct {
	next, max time.Duration
}

// wait returns the next wait, with ±20% jitter so that senders that failed
// together do not retry together, and doubles the one after.
func (b *backoff) wait() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	jitter := time.Duration(rand.Int64N(int64(d)/5*2+1)) - d/5
	return d + jitter
}
