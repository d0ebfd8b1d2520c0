package collector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed exports
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// The OTLP/gRPC transport registers its own descriptor of
// opentelemetry.proto.collector.trace.v1.TraceService instead of
// ptraceotlp.RegisterGRPCServer, and receives the request as raw bytes through
// rawCodec. Decoding with ptraceotlp ourselves lets us
//   - answer an undecodable request with InvalidArgument, as OTLP says (grpc-go
//     answers Internal when its codec fails) and count it as decode_error;
//   - reserve the request's bytes from the in-flight limiter before decoding,
//     as the HTTP transport does.
const (
	traceServiceName = "opentelemetry.proto.collector.trace.v1.TraceService"
	traceExportPath  = "/" + traceServiceName + "/Export"
)

// grpcTraces is the OTLP/gRPC transport of tracesCore.
type grpcTraces struct {
	core *tracesCore
}

// traceService is what traceServiceDesc needs of its server.
type traceService interface {
	export(ctx context.Context, req *rawMessage) (*rawMessage, error)
}

var traceServiceDesc = grpc.ServiceDesc{
	ServiceName: traceServiceName,
	HandlerType: (*traceService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Export",
		Handler:    traceExportHandler,
	}},
	Metadata: "opentelemetry/proto/collector/trace/v1/trace_service.proto",
}

func traceExportHandler(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	req := rawMessagePool.Get().(*rawMessage)
	defer req.free()
	if err := dec(req); err != nil {
		return nil, err // grpcStats counts it
	}
	if st, ok := ctx.Value(rpcStateKey{}).(*rpcState); ok {
		if !st.received() {
			// The receive deadline cut the stream as the message completed.
			return nil, status.Error(codes.DeadlineExceeded, "request message not received within the read timeout")
		}
	}
	return srv.(traceService).export(ctx, req)
}

func (g *grpcTraces) export(ctx context.Context, raw *rawMessage) (_ *rawMessage, err error) {
	start := time.Now()
	defer func() { g.core.metrics.requestDuration[transportGRPC].Observe(time.Since(start).Seconds()) }()
	// Registered before the releases below so that it runs after them: a
	// panic frees the request's budget too.
	defer func() {
		if v := recover(); v != nil {
			err = g.fail(ctx, g.core.recovered(ctx, transportGRPC, v))
		}
	}()

	// grpc has already bounded the message by MaxRecvMsgSize, after decompression.
	size := int64(len(raw.b))
	if !g.core.limiter.tryAcquire(size) {
		return nil, g.fail(ctx, overloaded(g.core.retryAfter))
	}
	defer g.core.limiter.release(size)

	req, decoded, rerr := g.core.decode(raw.b, false)
	defer g.core.limiter.release(decoded)
	defer req.free()
	if rerr != nil {
		return nil, g.fail(ctx, rerr)
	}
	resp, rerr := g.core.export(ctx, transportGRPC, req, raw.b, false)
	if rerr != nil {
		return nil, g.fail(ctx, rerr)
	}
	b, err := resp.MarshalProto()
	if err != nil {
		return nil, fmt.Errorf("encode OTLP response: %w", err)
	}
	return &rawMessage{b: b}, nil
}

// fail counts and logs a refused request and returns its gRPC status.
func (g *grpcTraces) fail(ctx context.Context, e *requestError) error {
	g.core.metrics.rejectedRequests[transportGRPC][e.reason].Inc()
	g.core.logger.DebugContext(ctx, "refused OTLP/gRPC request", "reason", e.reason.String(), "err", e)
	return e.grpcStatus()
}

// grpcStats counts the export requests that grpc refuses before traceExportHandler
// gets them: messages over MaxRecvMsgSize (also after decompression) and ones
// that do not decompress. It is a stats.Handler, the only hook grpc offers there.
type grpcStats struct {
	core *tracesCore
}

// rpcState rides in an export's context from grpcAdmission.tap, when its
// stream opens, to its End event.
type rpcState struct {
	// deadline cuts the stream if its message has not arrived within
	// Config.ReadTimeout; stopping it in time marks the message received.
	deadline *time.Timer
	mu       sync.Mutex
	got      bool // the handler got the message; it counts its own refusals
	timedOut bool // deadline fired before
}

type rpcStateKey struct{}

// received stops the receive deadline and reports whether it had not fired.
func (st *rpcState) received() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.timedOut {
		st.deadline.Stop()
		st.got = true
	}
	return st.got
}

func (st *rpcState) state() (got, timedOut bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.got, st.timedOut
}

// grpcAdmission admits the streams of the trace service before gRPC reads
// their message. It is a tap.ServerInHandle, the one hook that runs before
// the stream's reader takes its context: a deadline set in it, unlike one
// set by a stats.Handler or the handler, cuts a stream stalled mid-message.
type grpcAdmission struct {
	core        *tracesCore
	auth        *bearerAuth // nil: no authentication
	readTimeout time.Duration
}

// streamCost is what each open export stream reserves from the in-flight
// budget until it ends, for its goroutine and transport state: 50,000
// header-only streams took 608 MiB, about 12 KiB each.
const streamCost = 16 << 10

func (a grpcAdmission) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	// Every method, not only Export, before the message is read.
	if a.auth != nil && !a.auth.authorized(info.Header.Get("authorization")) {
		e := unauthenticated()
		a.core.metrics.rejectedRequests[transportGRPC][e.reason].Inc()
		a.core.logger.DebugContext(ctx, "refused OTLP/gRPC request", "reason", e.reason.String(), "method", info.FullMethodName)
		return nil, e.grpcStatus()
	}
	if info.FullMethodName != traceExportPath {
		return ctx, nil
	}
	if !a.core.limiter.tryAcquire(streamCost) {
		a.core.metrics.rejectedRequests[transportGRPC][reasonOverloaded].Inc()
		return nil, overloaded(a.core.retryAfter).grpcStatus()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	st := &rpcState{}
	st.deadline = time.AfterFunc(a.readTimeout, func() {
		st.mu.Lock()
		if !st.got {
			st.timedOut = true
		}
		st.mu.Unlock()
		if st.timedOut {
			cancel(errReceiveTimeout)
		}
	})
	// gRPC cancels the stream's context when the stream ends, however it
	// ends; the deadline's cancel ends it too.
	context.AfterFunc(ctx, func() {
		st.deadline.Stop()
		a.core.limiter.release(streamCost)
	})
	return context.WithValue(ctx, rpcStateKey{}, st), nil
}

var errReceiveTimeout = errors.New("request message not received within the read timeout")

func (h grpcStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (h grpcStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil {
		return
	}
	st, ok := ctx.Value(rpcStateKey{}).(*rpcState)
	if !ok {
		return
	}
	got, timedOut := st.state()
	if got {
		return
	}
	var r reason
	switch code := status.Code(end.Error); {
	case timedOut:
		r = reasonDecodeError // as an HTTP body that times out
	case code == codes.ResourceExhausted:
		r = reasonTooLarge
	case code == codes.Internal, code == codes.InvalidArgument:
		r = reasonDecodeError
	case code == codes.Unimplemented:
		r = reasonUnsupportedMediaType // a grpc-encoding we have no decompressor for
	default:
		return // the client went away or gave up: not a refusal
	}
	h.core.metrics.rejectedRequests[transportGRPC][r].Inc()
	h.core.logger.DebugContext(ctx, "refused OTLP/gRPC request", "reason", r.String(), "err", end.Error)
}

func (grpcStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (grpcStats) HandleConn(context.Context, stats.ConnStats)                       {}

// rawMessage is an undecoded protobuf message that rawCodec passes through.
type rawMessage struct {
	b []byte
}

var rawMessagePool = sync.Pool{New: func() any { return new(rawMessage) }}

// maxPooledBytes keeps the pools from pinning the buffers of the rare huge request.
const maxPooledBytes = 4 << 20

func (m *rawMessage) free() {
	if cap(m.b) > maxPooledBytes {
		return
	}
	m.b = m.b[:0]
	rawMessagePool.Put(m)
}

// rawCodec is the gRPC server's codec: it copies a *rawMessage in and out as
// bytes and hands every other message to gRPC's proto codec.
type rawCodec struct {
	proto encoding.CodecV2
}

func newRawCodec() rawCodec {
	return rawCodec{proto: encoding.GetCodecV2("proto")}
}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		n := data.Len()
		m.b = slices.Grow(m.b[:0], n)[:n]
		data.CopyTo(m.b)
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }
