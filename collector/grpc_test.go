package collector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// dialGRPC returns a client connection to r's gRPC server, closed when the test ends.
func dialGRPC(t testing.TB, r *Receiver) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(r.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// exportGRPC sends an encoded ExportTraceServiceRequest as it is, on a
// connection of its own.
func exportGRPC(t testing.TB, r *Receiver, body []byte) (ptraceotlp.ExportResponse, error) {
	conn, err := grpc.NewClient(r.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return ptraceotlp.ExportResponse{}, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out := &rawMessage{}
	if err := conn.Invoke(ctx, traceExportPath, &rawMessage{b: body}, out, grpc.ForceCodecV2(newRawCodec())); err != nil {
		return ptraceotlp.ExportResponse{}, err
	}
	resp := ptraceotlp.NewExportResponse()
	return resp, resp.UnmarshalProto(out.b)
}

func TestGRPCRequests(t *testing.T) {
	cfg := testConfig() // MaxRequestBytes: 1 MiB
	good := mustMarshal(t, newTraces(2, 3))
	tests := []struct {
		name         string
		body         []byte
		wantCode     codes.Code
		wantRejected int64
		wantConsumed int
		wantReason   reason // counted in rejected_requests_total when wantCode is not OK
	}{
		{name: "valid", body: good, wantConsumed: 6},
		{name: "empty", body: nil},
		{name: "zero ids", body: mustMarshal(t, invalidIDTraces()), wantRejected: 3, wantConsumed: 1},
		{name: "undecodable", body: good[:len(good)-1], wantCode: codes.InvalidArgument, wantReason: reasonDecodeError},
		// grpc refuses it before our handler runs; grpcStats counts it.
		{name: "oversized", body: padProto(t, good, int(cfg.MaxRequestBytes)+1), wantCode: codes.ResourceExhausted, wantReason: reasonTooLarge},
		{name: "exactly the maximum", body: padProto(t, good, int(cfg.MaxRequestBytes)), wantConsumed: 6},
	}
	rec := &recorder{}
	r, _ := startReceiver(t, cfg, rec)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spansBefore := len(rec.got())
			resp, err := exportGRPC(t, r, tt.body)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("Export error = %v, want code %v", err, tt.wantCode)
			}
			if err == nil {
				ps := resp.PartialSuccess()
				if ps.RejectedSpans() != tt.wantRejected || (ps.ErrorMessage() != "") != (tt.wantRejected > 0) {
					t.Errorf("partial_success = {%d, %q}, want %d rejected spans with a message iff any",
						ps.RejectedSpans(), ps.ErrorMessage(), tt.wantRejected)
				}
			}
			if got := len(rec.got()) - spansBefore; got != tt.wantConsumed {
				t.Errorf("consumer got %d spans, want %d", got, tt.wantConsumed)
			}
			if tt.wantCode != codes.OK {
				if n := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportGRPC][tt.wantReason]); n != 1 {
					t.Errorf("rejected_requests_total{transport=grpc,reason=%q} = %v, want 1", tt.wantReason, n)
				}
			}
			if _, err := exportGRPC(t, r, good); err != nil {
				t.Fatalf("good request after %s: %v", tt.name, err)
			}
		})
	}
}

func TestGRPCPdataClient(t *testing.T) {
	// ptraceotlp's own client goes through pdata's codec, not ours.
	rec := &recorder{}
	r, _ := startReceiver(t, testConfig(), rec)
	client := ptraceotlp.NewGRPCClient(dialGRPC(t, r))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	if _, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(newTraces(2, 2))); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if got := len(rec.got()); got != 4 {
		t.Errorf("consumer got %d spans, want 4", got)
	}
	resp, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(invalidIDTraces()))
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if got := resp.PartialSuccess().RejectedSpans(); got != 3 {
		t.Errorf("partial_success.rejected_spans = %d, want 3", got)
	}
	if n := testutil.ToFloat64(r.core.metrics.receivedSpans[transportGRPC]); n != 8 {
		t.Errorf("received_spans_total{transport=grpc} = %v, want 8", n)
	}
}

func TestGRPCConsumerErrors(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantCode      codes.Code
		wantRetryInfo time.Duration // 0: no RetryInfo detail
	}{
		{"overload with delay", fmtWrap(overloadError{after: 2500 * time.Millisecond}), codes.ResourceExhausted, 2500 * time.Millisecond},
		{"overload without delay", overloadError{}, codes.ResourceExhausted, 2 * time.Second},
		{"other error", errors.New("disk full"), codes.Unavailable, 0},
		{"deadline", context.DeadlineExceeded, codes.Unavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.RetryAfter = 2 * time.Second
			r, _ := startReceiver(t, cfg, consumerFunc(func(context.Context, ptrace.Traces) error { return tt.err }))

			_, err := exportGRPC(t, r, mustMarshal(t, newTraces(1, 2)))
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.wantCode {
				t.Fatalf("Export error = %v, want code %v", err, tt.wantCode)
			}
			if got := retryInfo(st); got != tt.wantRetryInfo {
				t.Errorf("RetryInfo delay = %v, want %v", got, tt.wantRetryInfo)
			}
		})
	}
}

// retryInfo returns the delay of st's google.rpc.RetryInfo detail, or 0.
func retryInfo(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func TestGRPCInflightLimiterSharedWithHTTP(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRequestBytes = 1 << 20
	cfg.MaxInflightBytes = 2 << 20 // a body and what it decodes into: about 1.2 MiB
	c := newBlockingConsumer()
	r, _ := startReceiver(t, cfg, c)

	body := padProto(t, mustMarshal(t, newTraces(1, 1)), 600<<10)
	first := make(chan httpResult, 1)
	go func() {
		got, _ := postTraces(r, "application/x-protobuf", "", body)
		first <- got
	}()
	c.waitEntered(t)

	_, err := exportGRPC(t, r, body)
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || retryInfo(st) != cfg.RetryAfter {
		t.Errorf("gRPC export while HTTP holds the budget = %v, want ResourceExhausted with RetryInfo %v", err, cfg.RetryAfter)
	}
	if n := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportGRPC][reasonOverloaded]); n != 1 {
		t.Errorf("rejected_requests_total{transport=grpc,reason=overloaded} = %v, want 1", n)
	}

	close(c.release)
	select {
	case got := <-first:
		if got.code != 200 {
			t.Errorf("HTTP request: status %d, want 200", got.code)
		}
	case <-time.After(waitTimeout):
		t.Fatal("HTTP request did not finish after the consumer was released")
	}
	if _, err := exportGRPC(t, r, body); err != nil {
		t.Errorf("gRPC export after the budget was freed: %v", err)
	}
}

func BenchmarkGRPCExport(b *testing.B) {
	const traces, spansPer = 100, 5
	cfg := testConfig()
	cfg.HTTPEndpoint = ""
	r, _ := startReceiver(b, cfg, consumerFunc(func(context.Context, ptrace.Traces) error { return nil }))
	client := ptraceotlp.NewGRPCClient(dialGRPC(b, r))
	req := ptraceotlp.NewExportRequestFromTraces(newTraces(traces, spansPer))
	ctx := context.Background()

	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Export(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*traces*spansPer)/b.Elapsed().Seconds(), "spans/s")
}
