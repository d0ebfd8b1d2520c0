package forward

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"

	"github.com/lagscope/lagscope/collector"
)

// grpcSender calls TraceService/Export with the request's protobuf bytes,
// through the collector's raw codec: nothing is decoded or encoded again.
type grpcSender struct {
	conn *grpc.ClientConn
	md   metadata.MD
	opts []grpc.CallOption // per call: compression
}

// maxResponseBytes bounds an export response: a partial_success with its
// message.
const maxResponseBytes = 4 << 20

func newGRPCSender(cfg Config, tc *tls.Config) (*grpcSender, error) {
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(cfg.Endpoint,
		grpc.WithTransportCredentials(creds),
		// gRPC's own reconnection backoff grows to 120s: a backend back
		// after an outage would stay unreachable that long while our
		// retries fail fast and run out. It follows forward.retry instead.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay:  cfg.Retry.InitialInterval,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   cfg.Retry.MaxInterval,
			},
			MinConnectTimeout: cfg.Timeout,
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(collector.ClientCodec()), grpc.MaxCallRecvMsgSize(maxResponseBytes)))
	if err != nil {
		return nil, fmt.Errorf("create gRPC client for %s: %w", cfg.Endpoint, err)
	}
	md := metadata.MD{}
	for k, v := range cfg.Headers {
		md.Append(strings.ToLower(k), v)
	}
	var opts []grpc.CallOption
	if cfg.Compression == CompressionGzip {
		opts = append(opts, grpc.UseCompressor(gzip.Name))
	}
	return &grpcSender{conn: conn, md: md, opts: opts}, nil
}

func (s *grpcSender) send(ctx context.Context, r *request) (rejected int64, _ error) {
	body := r.body
	if r.enc == JSON {
		if len(r.proto) == 0 && len(r.body) > 0 {
			// Converted once, at the first attempt, and kept for the retries.
			req := ptraceotlp.NewExportRequest()
			if err := req.UnmarshalJSON(r.body); err != nil {
				return 0, errMalformed{fmt.Errorf("decode OTLP/JSON request: %w", err)}
			}
			b, err := req.MarshalProto()
			if err != nil {
				return 0, errMalformed{fmt.Errorf("encode OTLP request: %w", err)}
			}
			r.proto = b
		}
		body = r.proto
	}
	if len(s.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, s.md)
	}
	var resp []byte
	if err := s.conn.Invoke(ctx, collector.TracesGRPCMethod, &body, &resp, s.opts...); err != nil {
		return 0, grpcError(err)
	}
	return rejectedSpans(resp, false)
}

func (s *grpcSender) close() error { return s.conn.Close() }

// errMalformed is a request that cannot be sent at all.
type errMalformed struct{ err error }

func (e errMalformed) Error() string { return e.err.Error() }
func (e errMalformed) Unwrap() error { return e.err }

// rejectedSpans reads partial_success.rejected_spans from an export response
// (OTLP/JSON if json, else protobuf). An empty response is a full success.
// A response that does not decode counts as a success too: the backend said
// 200/OK, and retrying would duplicate what it took.
func rejectedSpans(b []byte, json bool) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	resp := ptraceotlp.NewExportResponse()
	var err error
	if json {
		err = resp.UnmarshalJSON(b)
	} else {
		err = resp.UnmarshalProto(b)
	}
	if err != nil {
		return 0, nil
	}
	return max(resp.PartialSuccess().RejectedSpans(), 0), nil
}
