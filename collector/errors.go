package collector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// requestError is why a request was refused. Transports turn it into an HTTP or
// gRPC status with statusCodes.
type requestError struct {
	reason reason
	// retryAfter is the delay to advise the client; set for overloaded and consumer_error.
	retryAfter time.Duration
	err        error
}

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// newRequestError returns a requestError for reason r that says msg.
func newRequestError(r reason, msg string) *requestError {
	return &requestError{reason: r, err: errors.New(msg)}
}

// overloaded returns the error for a request refused because the receiver is full.
func overloaded(retryAfter time.Duration) *requestError {
	return &requestError{reason: reasonOverloaded, retryAfter: retryAfter, err: errors.New("receiver is overloaded, retry later")}
}

// errPanicked is the error for a request whose handling panicked. The
// client is told no more: the panic's value and stack go to the log.
var errPanicked = errors.New("internal error handling the request")

// retryAfterer is what a consumer error implements to ask for a back-off.
type retryAfterer interface {
	RetryAfter() time.Duration
}

// consumerError classifies an error returned by the Consumer. Every consumer error
// is retryable: overload if it names a delay, unavailable otherwise, so that
// exporters retry and nothing is silently lost. fallback is the delay advised when
// the error names none.
func consumerError(err error, fallback time.Duration) *requestError {
	var ra retryAfterer
	if errors.As(err, &ra) {
		d := ra.RetryAfter()
		if d <= 0 {
			d = fallback
		}
		return &requestError{reason: reasonOverloaded, retryAfter: d, err: fmt.Errorf("consume traces: %w", err)}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &requestError{reason: reasonConsumerError, retryAfter: fallback, err: fmt.Errorf("consume traces: request ended: %w", err)}
	}
	return &requestError{reason: reasonConsumerError, retryAfter: fallback, err: fmt.Errorf("consume traces: %w", err)}
}

// statusCodes maps a rejection reason to the HTTP status and gRPC code that OTLP
// prescribes for it. It is the only place that does.
func statusCodes(r reason) (int, codes.Code) {
	switch r {
	case reasonDecodeError:
		return http.StatusBadRequest, codes.InvalidArgument
	case reasonTooLarge:
		return http.StatusRequestEntityTooLarge, codes.ResourceExhausted
	case reasonUnsupportedMediaType:
		return http.StatusUnsupportedMediaType, codes.InvalidArgument
	case reasonMethodNotAllowed:
		return http.StatusMethodNotAllowed, codes.Unimplemented
	case reasonOverloaded:
		return http.StatusTooManyRequests, codes.ResourceExhausted
	case reasonUnauthenticated:
		return http.StatusUnauthorized, codes.Unauthenticated
	case reasonPanic:
		// Not retryable on purpose: a request that crashed its handler would
		// crash it again.
		return http.StatusInternalServerError, codes.Internal
	default: // reasonConsumerError and anything unforeseen: retryable.
		return http.StatusServiceUnavailable, codes.Unavailable
	}
}

// grpcStatus returns e as a gRPC status error. Overload carries a
// google.rpc.RetryInfo detail, which makes OTLP exporters retry ResourceExhausted.
func (e *requestError) grpcStatus() error {
	_, code := statusCodes(e.reason)
	st := status.New(code, e.Error())
	if e.reason == reasonOverloaded {
		if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(e.retryAfter)}); err == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// retryAfterSeconds formats d for a Retry-After header: whole seconds, rounded
// up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	secs := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(secs, 1), 10)
}
