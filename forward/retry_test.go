package forward

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestGRPCErrorClassification(t *testing.T) {
	withRetryInfo := func(c codes.Code, d time.Duration) error {
		st, err := status.New(c, "x").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	tests := []struct {
		name      string
		err       error
		retryable bool
		after     time.Duration
	}{
		{"unavailable", status.Error(codes.Unavailable, "x"), true, 0},
		{"unavailable with advice", withRetryInfo(codes.Unavailable, 2*time.Second), true, 2 * time.Second},
		{"deadline exceeded", status.Error(codes.DeadlineExceeded, "x"), true, 0},
		{"aborted", status.Error(codes.Aborted, "x"), true, 0},
		{"resource exhausted without retry info", status.Error(codes.ResourceExhausted, "x"), false, 0},
		{"resource exhausted with retry info", withRetryInfo(codes.ResourceExhausted, time.Second), true, time.Second},
		{"invalid argument", status.Error(codes.InvalidArgument, "x"), false, 0},
		{"unauthenticated", status.Error(codes.Unauthenticated, "x"), false, 0},
		{"unimplemented", status.Error(codes.Unimplemented, "x"), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := grpcError(tt.err)
			if e.retryable != tt.retryable || e.after != tt.after {
				t.Errorf("grpcError() = retryable %v after %v, want %v after %v", e.retryable, e.after, tt.retryable, tt.after)
			}
		})
	}
}

func TestHTTPErrorClassification(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		status     int
		retryAfter string
		retryable  bool
		after      time.Duration
	}{
		{http.StatusTooManyRequests, "3", true, 3 * time.Second},
		{http.StatusBadGateway, "", true, 0},
		{http.StatusServiceUnavailable, now.Add(90 * time.Second).Format(http.TimeFormat), true, 90 * time.Second},
		{http.StatusServiceUnavailable, "soon", true, 0},
		{http.StatusServiceUnavailable, "-5", true, 0},
		{http.StatusGatewayTimeout, "99999999999", true, maxAdvice},
		{http.StatusBadRequest, "3", false, 0},
		{http.StatusUnauthorized, "", false, 0},
		{http.StatusNotFound, "", false, 0},
		{http.StatusRequestEntityTooLarge, "", false, 0},
		{http.StatusInternalServerError, "", false, 0},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status)+"/"+tt.retryAfter, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
			if tt.retryAfter != "" {
				resp.Header.Set("Retry-After", tt.retryAfter)
			}
			e := httpError(resp, nil, now)
			if e.retryable != tt.retryable || e.after != tt.after {
				t.Errorf("httpError() = retryable %v after %v, want %v after %v", e.retryable, e.after, tt.retryable, tt.after)
			}
		})
	}
}

func TestBackoffDoublesUpToItsMaximum(t *testing.T) {
	b := backoff{next: 100 * time.Millisecond, max: 500 * time.Millisecond}
	for i, want := range []time.Duration{100, 200, 400, 500, 500} {
		want *= time.Millisecond
		got := b.wait()
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("wait %d = %v, want %v ±20%%", i, got, want)
		}
	}
}
