package collector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

var updateCaptures = flag.Bool("update", false, "rewrite the real-client captures under testdata/captures")

// capturesDir holds ExportTraceServiceRequests as real clients sent them:
// the OpenTelemetry Go SDK's OTLP/gRPC and OTLP/HTTP exporters, which encode
// with the proto/otlp types (golang/protobuf), not pdata.
const capturesDir = "testdata/captures"

// TestCaptures checks the committed captures against the selective decoder
// (none may be declined), and rewrites them from the SDK with -update.
func TestCaptures(t *testing.T) {
	if *updateCaptures {
		if err := os.MkdirAll(capturesDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range sdkCaptures(t) {
			if err := os.WriteFile(filepath.Join(capturesDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	caps := loadCaptures(t)
	if len(caps) < 2 {
		t.Fatalf("%d captures under %s, want the gRPC and the HTTP exporter's (go test -run TestCaptures -update)", len(caps), capturesDir)
	}
	for name, b := range caps {
		if fb := checkLazy(t, b); fb != fallbackNone {
			t.Errorf("%s: the selective decoder declined a real client's request: %v", name, fb)
		}
	}
}

func loadCaptures(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(capturesDir, "*.binpb"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// sdkCaptures exports CQRS-shaped spans with the SDK's gRPC and HTTP
// exporters to servers that keep the request bytes.
func sdkCaptures(t *testing.T) map[string][]byte {
	var mu sync.Mutex
	var got [][]byte
	keep := func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, bytes.Clone(b))
	}
	out := map[string][]byte{}
	take := func(prefix string) {
		mu.Lock()
		defer mu.Unlock()
		for i, b := range got {
			out[fmt.Sprintf("%s-%d.binpb", prefix, i)] = b
		}
		got = nil
	}

	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		keep(b)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	hexp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(hs.Listener.Addr().String()), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	exportCQRSWithSDK(t, hexp)
	take("otel-go-sdk-http")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(newRawCodec()), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		var m rawMessage
		if err := st.RecvMsg(&m); err != nil {
			return err
		}
		keep(m.b)
		return st.SendMsg(&rawMessage{})
	}))
	go gs.Serve(lis) //nolint:errcheck // ends with Stop below
	defer gs.Stop()
	gexp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(lis.Addr().String()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	exportCQRSWithSDK(t, gexp)
	take("otel-go-sdk-grpc")
	return out
}

// exportCQRSWithSDK exports, in two batches, a command, an append with its
// event, a consumer with a link, and a query, with attributes of every type.
func exportCQRSWithSDK(t *testing.T, exp sdktrace.SpanExporter) {
	t.Helper()
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithMaxExportBatchSize(3), sdktrace.WithBatchTimeout(time.Hour)),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "orders"), attribute.Int("process.pid", 7))),
	)
	tr := tp.Tracer("github.com/lagscope/lagscope/orders", trace.WithInstrumentationVersion("1.0.0"))
	cctx, cmd := tr.Start(ctx, "PlaceOrder", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("cqrs.operation", "command"), attribute.String("cqrs.command.name", "PlaceOrder"),
		attribute.String("cqrs.aggregate.type", "Order"), attribute.String("cqrs.aggregate.id", "order-1")))
	actx, app := tr.Start(cctx, "append OrderPlaced", trace.WithAttributes(
		attribute.String("cqrs.operation", "append"), attribute.String("cqrs.event.type", "OrderPlaced"),
		attribute.String("cqrs.aggregate.type", "Order"), attribute.String("cqrs.aggregate.id", "order-1"),
		attribute.Int64("cqrs.aggregate.version", 3), attribute.Float64("ratio", 0.5), attribute.Bool("flag", true),
		attribute.StringSlice("tags", []string{"a", "b"}), attribute.Int64Slice("ints", []int64{1, 2})))
	app.AddEvent("cqrs.event", trace.WithAttributes(attribute.String("cqrs.event.id", "6f1c2b7e-0a4d-4c3b-9a55-2d6e4f1b8c90"),
		attribute.String("cqrs.event.type", "OrderPlaced")))
	app.End()
	cmd.End()
	_, pub := tr.Start(actx, "orders publish", trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.type", "send"),
		attribute.String("messaging.message.id", "m-1")))
	pub.End()
	_, con := tr.Start(ctx, "orders process", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(trace.Link{SpanContext: pub.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("k", "v")}}),
		trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", "m-1"), attribute.String("cqrs.projection.name", "orders_view")))
	con.RecordError(errors.New("retry"))
	con.SetStatus(codes.Error, "retried")
	con.End()
	_, q := tr.Start(ctx, "GetOrder", trace.WithAttributes(attribute.String("cqrs.operation", "query"),
		attribute.String("cqrs.query.name", "GetOrder"), attribute.String("cqrs.aggregate.id", "order-1"),
		attribute.Int64("cqrs.aggregate.version", 3)))
	q.End()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatalf("shut down tracer provider: %v", err)
	}
}

// diffInputs is the number of generated inputs TestLazyDifferential checks:
// LAGSCOPE_DIFF_INPUTS, or a CI-sized default.
func diffInputs(t *testing.T) int {
	s := os.Getenv("LAGSCOPE_DIFF_INPUTS")
	if s == "" {
		if testing.Short() || raceEnabled {
			return 2000 // a few seconds under the race detector
		}
		return 20000 // about 7 s on one core, the check against the pre-scan included
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("LAGSCOPE_DIFF_INPUTS=%q: want a count", s)
	}
	return n
}

// TestLazyDifferential compares the selective decoder with pdata on every
// fixture, every real-client capture, the seeds, and generated inputs:
// mutations of those (fields reordered, repeated, dropped, re-typed or
// packed, unknown fields and groups inserted, varints overlong, bytes
// flipped, truncated, spliced). For each input, what the selective decoder
// accepts pdata must accept and decode the same way in all the analysis
// reads; what it declines as malformed pdata must reject; decodeTraces must
// fail exactly when pdata does. LAGSCOPE_DIFF_INPUTS sets the number of
// generated inputs (LAGSCOPE_DIFF_INPUTS=10000000 for the long run),
// LAGSCOPE_DIFF_SEED the generator's seed. A difference writes the input
// under $TMPDIR and fails.
func TestLazyDifferential(t *testing.T) {
	var corpus [][]byte
	corpus = append(corpus, lazySeeds(t)...)
	for _, reqs := range fixtureRequests(t) {
		corpus = append(corpus, reqs...)
	}
	for _, b := range loadCaptures(t) {
		corpus = append(corpus, b)
	}
	for _, tt := range fallbackCases(t) {
		corpus = append(corpus, tt.buf)
	}
	corpus = append(corpus, synthStream(t, 1)...)
	var fixed [numFallbackReasons]int
	for _, b := range corpus {
		fb, err := diffLazy(b)
		if err != nil {
			failDiff(t, b, err)
		}
		fixed[fb]++
	}

	n := diffInputs(t)
	seed := uint64(1)
	if s := os.Getenv("LAGSCOPE_DIFF_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("LAGSCOPE_DIFF_SEED=%q: %v", s, err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x1a2b))
	var gen [numFallbackReasons]int
	start := time.Now()
	var buf []byte
	for i := range n {
		buf = mutate(rng, corpus, buf[:0])
		fb, err := diffLazy(buf)
		if err != nil {
			t.Logf("generated input %d (seed %d)", i, seed)
			failDiff(t, buf, err)
		}
		gen[fb]++
		if (i+1)%1_000_000 == 0 {
			t.Logf("%d inputs in %v, no difference; declined by reason: %v", i+1, time.Since(start).Round(time.Second), reasons(gen[:]))
		}
	}
	t.Logf("%d fixed inputs, %d generated (seed %d) in %v: no difference; by reason: fixed %v, generated %v",
		len(corpus), n, seed, time.Since(start).Round(time.Millisecond), reasons(fixed[:]), reasons(gen[:]))
	// A generator whose inputs all fall back, or all fail, compares nothing.
	if n >= 1000 && (gen[fallbackNone] < n/20 || gen[fallbackMalformed] < n/20) {
		t.Errorf("generated inputs: %d decoded selectively, %d malformed of %d; want at least 5%% of each", gen[fallbackNone], gen[fallbackMalformed], n)
	}
}

func reasons(counts []int) string {
	var b bytes.Buffer
	for r, c := range counts {
		if c > 0 {
			fmt.Fprintf(&b, "%v=%d ", fallbackReason(r), c)
		}
	}
	return string(bytes.TrimSpace(b.Bytes()))
}

func failDiff(t *testing.T, buf []byte, err error) {
	t.Helper()
	sum := sha256.Sum256(buf)
	name := filepath.Join(os.TempDir(), "lagscope-diff-"+hex.EncodeToString(sum[:8]))
	if werr := os.WriteFile(name, buf, 0o644); werr != nil {
		t.Logf("write %s: %v", name, werr)
	}
	t.Fatalf("%v\ninput (%d bytes) written to %s", err, len(buf), name)
}

// diffLazy is checkLazy returning the difference rather than failing, and
// comparing with cmp.Equal first (cmp.Diff only on a difference): at ten
// million inputs it is the cost of the run. What the selective decoder
// accepts, its Batch must be the one FromTraces makes of pdata's decoding
// with the same Selection.
func diffLazy(buf []byte) (fallbackReason, error) {
	req := ptraceotlp.NewExportRequest()
	perr := req.UnmarshalProto(buf)
	got, fb := analysisDecoder.decode(buf)
	switch {
	case fb == fallbackNone && perr != nil:
		return fb, fmt.Errorf("selective decoder accepted a request pdata rejects (%v)", perr)
	case fb == fallbackMalformed && perr == nil:
		return fb, errors.New("selective decoder declined as malformed a request pdata decodes")
	case fb == fallbackNone:
		g, w := relevant(got.ToTraces(), nil), relevant(req.Traces(), &analysisSel)
		if !cmp.Equal(g, w) {
			return fb, fmt.Errorf("selective decoder differs from pdata (-selective +pdata):\n%s", cmp.Diff(g, w))
		}
		if diff := diffBatch(got, req.Traces(), analysisKeys); diff != "" {
			return fb, fmt.Errorf("selective decoder's Batch differs from FromTraces of pdata's (-selective +pdata):\n%s", diff)
		}
		putBatch(got)
	}
	dec, dfb, err := decodeTraces(buf, analysisDecoder)
	dec.free()
	if (err != nil) != (perr != nil) || dfb != fb {
		return fb, fmt.Errorf("decodeTraces: error %v, fallback %v; pdata's error %v, selective fallback %v", err, dfb, perr, fb)
	}
	var pdata *ptrace.Traces
	if perr == nil {
		td := req.Traces()
		pdata = &td
	}
	return fb, diffOnePass(buf, pdata, onePassLimits...)
}

// onePassLimits are the limits diffOnePass decodes with: the default ones,
// and ones small enough for generated inputs to cross.
var onePassLimits = []decodeLimits{DefaultConfig().decodeLimits(), fuzzLimits}

// diffOnePass compares the one-pass decoding (decodeWithin) with the scan
// it replaces: what it accepts the scan accepts with the same counts, and
// it stops at a limit only where the scan refuses the request; with a
// bound, it never estimates past it. Then the receiver's decode
// (tracesCore.decode) must answer as it answered with the scan first: the
// same error, reason and message, the same reservation; and when it makes
// a Batch, the one FromTraces makes of pdata's decoding, pdata (nil when
// pdata rejects buf).
func diffOnePass(buf []byte, pdata *ptrace.Traces, limits ...decodeLimits) error {
	for _, l := range limits {
		counts, serr := scanProto(buf, l)
		b, got, fb := analysisDecoder.decodeWithin(buf, l, onePassBudget{bound: math.MaxInt64})
		if b != nil {
			putBatch(b)
		}
		switch {
		case fb == fallbackNone && serr != nil:
			return fmt.Errorf("limits %+v: the one pass accepted a request the scan refuses (%v)", l, serr)
		case fb == fallbackNone && got != counts:
			return fmt.Errorf("limits %+v: the one pass counted %+v, the scan %+v", l, got, counts)
		case fb == overLimit && serr == nil:
			return fmt.Errorf("limits %+v: the one pass stopped at a limit the scan does not refuse", l)
		}
		bound := 2 * int64(len(buf)) // crossed by most requests
		b, got, fb = analysisDecoder.decodeWithin(buf, l, onePassBudget{bound: bound})
		if b != nil {
			putBatch(b)
		}
		if fb == fallbackNone && got.decodedSize(len(buf)) > bound {
			return fmt.Errorf("limits %+v: the one pass estimated %d bytes past its bound of %d", l, got.decodedSize(len(buf)), bound)
		}

		core := onePassCore(l)
		req, reserved, rerr := core.decode(buf, false)
		core.limiter.release(reserved)
		wreq, wreserved, werr := scanThenDecode(core, buf)
		core.limiter.release(wreserved)
		err := diffDecoded(req, rerr, reserved, wreq, werr, wreserved, pdata)
		req.free()
		wreq.free()
		if err != nil {
			return fmt.Errorf("limits %+v: %w", l, err)
		}
	}
	return nil
}

// diffDecoded compares tracesCore.decode's answer (req, rerr, reserved)
// with scanThenDecode's (wreq, werr, wreserved), and a Batch of req with
// the one FromTraces makes of pdata.
func diffDecoded(req decodedRequest, rerr *requestError, reserved int64, wreq decodedRequest, werr *requestError, wreserved int64, pdata *ptrace.Traces) error {
	switch {
	case (rerr == nil) != (werr == nil):
		return fmt.Errorf("decode = %v, with the scan first %v", rerr, werr)
	case rerr != nil && (rerr.reason != werr.reason || rerr.Error() != werr.Error()):
		return fmt.Errorf("decode = %v (%v), with the scan first %v (%v)", rerr, rerr.reason, werr, werr.reason)
	case reserved != wreserved:
		return fmt.Errorf("decode reserved %d, with the scan first %d", reserved, wreserved)
	case rerr != nil:
		return nil
	case !cmp.Equal(relevant(req.traces(), &analysisSel), relevant(wreq.traces(), &analysisSel)):
		return errors.New("decode differs from decoding with the scan first")
	case req.batch == nil:
		return nil
	case pdata == nil:
		return errors.New("decode made a Batch of a request pdata rejects")
	}
	if diff := diffBatch(req.batch, *pdata, analysisKeys); diff != "" {
		return fmt.Errorf("decode's Batch differs from FromTraces of pdata's (-decode +pdata):\n%s", diff)
	}
	return nil
}

// onePassCore returns a core decoding with the selective decoder within l
// and a budget that a few generated inputs exceed.
func onePassCore(l decodeLimits) *tracesCore {
	m, err := fuzzMetrics()
	if err != nil {
		panic(err)
	}
	return &tracesCore{next: Discard, limiter: newByteLimiter(4 << 20), metrics: m, selective: analysisDecoder, limits: l}
}

// scanThenDecode is tracesCore.decode of a protobuf request as it was
// before the one pass: the scan, the reservation, then the selective
// decoder, which pdata backs.
func scanThenDecode(c *tracesCore, buf []byte) (decodedRequest, int64, *requestError) {
	counts, rerr := scanProto(buf, c.limits)
	if rerr != nil {
		return decodedRequest{}, 0, rerr
	}
	est := counts.decodedSize(len(buf))
	if est > c.limiter.max {
		return decodedRequest{}, 0, newRequestError(reasonTooLarge, "request would decode into about "+strconv.FormatInt(est, 10)+
			" bytes, more than the receiver's in-flight budget of "+strconv.FormatInt(c.limiter.max, 10)+" (otlp.max_inflight_bytes)")
	}
	if !c.limiter.tryAcquire(est) {
		return decodedRequest{}, 0, overloaded(c.retryAfter)
	}
	req, _, err := decodeTraces(buf, c.selective)
	if err != nil {
		return req, est, &requestError{reason: reasonDecodeError, err: fmt.Errorf("decode OTLP request: %w", err)}
	}
	return req, est, nil
}

// maxGenerated bounds a generated input: splices would otherwise grow.
const maxGenerated = 256 << 10

// mutate appends to dst a mutation of a corpus input: one to three edits
// of its parsed field tree, or of its bytes.
func mutate(rng *rand.Rand, corpus [][]byte, dst []byte) []byte {
	src := corpus[rng.IntN(len(corpus))]
	if len(src) > 32<<10 && rng.IntN(8) != 0 {
		src = corpus[rng.IntN(len(corpus))] // big ones (synth) less often: they are slow
	}
	msg := parseFields(src, 0)
	for range 1 + rng.IntN(3) {
		editFields(rng, msg, corpus, 0)
	}
	dst = appendFields(dst, msg)
	switch rng.IntN(10) {
	case 0: // truncated
		if len(dst) > 0 {
			dst = dst[:rng.IntN(len(dst))]
		}
	case 1: // a byte changed
		if len(dst) > 0 {
			dst[rng.IntN(len(dst))] = byte(rng.Uint32())
		}
	case 2: // spliced with another input
		if o := corpus[rng.IntN(len(corpus))]; len(dst)+len(o) <= maxGenerated {
			dst = append(dst, o...)
		}
	}
	return dst
}

// field is one field of an encoded message: its number, wire type and
// value; sub holds the fields of a length-delimited value that parses as a
// message (a string may: then the edits change the string, still a valid
// input to compare on).
type field struct {
	num  protowire.Number
	typ  protowire.Type
	raw  []byte // the value's bytes (a varint, fixed, or length-delimited content)
	sub  []field
	over int // bytes of padding in the tag varint (overlong encoding)
}

// parseFields parses b as a message; nil when it does not parse or is
// nested too deeply to bother.
func parseFields(b []byte, depth int) []field {
	var out []field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		var raw []byte
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil
			}
			raw, n = v, m
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil
			}
			raw, n = b[:m], m
		}
		b = b[n:]
		f := field{num: num, typ: typ, raw: raw}
		if typ == protowire.BytesType && depth < 12 && len(raw) > 0 {
			f.sub = parseFields(raw, depth+1)
		}
		out = append(out, f)
	}
	if out == nil {
		out = []field{}
	}
	return out
}

func appendFields(dst []byte, fs []field) []byte {
	for _, f := range fs {
		tag := protowire.EncodeTag(f.num, f.typ)
		if f.over > 0 {
			dst = appendOverlong(dst, tag, f.over)
		} else {
			dst = protowire.AppendVarint(dst, tag)
		}
		switch {
		case f.typ == protowire.BytesType && f.sub != nil:
			inner := appendFields(nil, f.sub)
			dst = protowire.AppendBytes(dst, inner)
		case f.typ == protowire.BytesType:
			dst = protowire.AppendBytes(dst, f.raw)
		default:
			dst = append(dst, f.raw...)
		}
	}
	return dst
}

// appendOverlong appends v as a varint padded with extra continuation
// bytes, at most 10 bytes in all (protobuf's limit; more is malformed).
func appendOverlong(dst []byte, v uint64, extra int) []byte {
	b := protowire.AppendVarint(nil, v)
	for range extra {
		b[len(b)-1] |= 0x80
		b = append(b, 0)
	}
	return append(dst, b...)
}

// editFields applies one random edit to msg or to a message nested in it.
func editFields(rng *rand.Rand, msg []field, corpus [][]byte, depth int) []field {
	// Descend into a random sub-message most of the time.
	if len(msg) > 0 && rng.IntN(3) != 0 {
		i := rng.IntN(len(msg))
		if msg[i].sub != nil {
			msg[i].sub = editFields(rng, msg[i].sub, corpus, depth+1)
			return msg
		}
	}
	switch rng.IntN(11) {
	case 0: // shuffled
		rng.Shuffle(len(msg), func(i, j int) { msg[i], msg[j] = msg[j], msg[i] })
	case 1: // a field repeated
		if len(msg) > 0 {
			i := rng.IntN(len(msg))
			msg = append(msg, msg[i])
			msg[i], msg[len(msg)-1] = msg[len(msg)-1], msg[i]
		}
	case 2: // a field dropped
		if len(msg) > 0 {
			i := rng.IntN(len(msg))
			msg = append(msg[:i:i], msg[i+1:]...)
		}
	case 3: // an unknown field of any wire type
		msg = append(msg, randomField(rng))
	case 4: // a group, well-formed or not
		num := protowire.Number(1 + rng.IntN(20))
		msg = append(msg, field{num: num, typ: protowire.StartGroupType})
		if rng.IntN(2) == 0 {
			msg = append(msg, field{num: num, typ: protowire.EndGroupType})
		}
	case 5: // a varint field packed into bytes, or bytes read as varints
		if i := pick(rng, msg); i >= 0 {
			f := &msg[i]
			if f.typ == protowire.VarintType {
				f.typ, f.sub = protowire.BytesType, nil
				f.raw = append(append([]byte(nil), f.raw...), f.raw...)
			} else if f.typ == protowire.BytesType {
				f.sub = nil
				f.raw = protowire.AppendVarint(nil, uint64(len(f.raw)))
				f.typ = protowire.VarintType
			}
		}
	case 6: // another wire type, same bytes
		if i := pick(rng, msg); i >= 0 {
			msg[i].typ = []protowire.Type{protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type, protowire.BytesType}[rng.IntN(4)]
			if msg[i].typ != protowire.BytesType {
				msg[i].sub = nil
				msg[i].raw = randomValue(rng, msg[i].typ)
			}
		}
	case 7: // an overlong tag
		if i := pick(rng, msg); i >= 0 {
			msg[i].over = 1 + rng.IntN(9)
		}
	case 8: // another value of the same wire type
		if i := pick(rng, msg); i >= 0 {
			f := &msg[i]
			if f.typ == protowire.BytesType {
				f.sub = nil
				f.raw = randomBytes(rng)
			} else if f.typ != protowire.StartGroupType && f.typ != protowire.EndGroupType {
				f.raw = randomValue(rng, f.typ)
			}
		}
	case 9: // a message of another input nested here
		o := parseFields(corpus[rng.IntN(len(corpus))], 0)
		if o != nil && len(o) > 0 {
			msg = append(msg, o[rng.IntN(len(o))])
		}
	case 10: // another field number
		if i := pick(rng, msg); i >= 0 {
			msg[i].num = protowire.Number(1 + rng.IntN(20))
		}
	}
	return msg
}

func pick(rng *rand.Rand, msg []field) int {
	if len(msg) == 0 {
		return -1
	}
	return rng.IntN(len(msg))
}

func randomField(rng *rand.Rand) field {
	nums := []protowire.Number{1, 2, 3, 7, 15, 16, 99, 1000, protowire.MaxValidNumber}
	typ := []protowire.Type{protowire.VarintType, protowire.Fixed32Type, protowire.Fixed64Type, protowire.BytesType}[rng.IntN(4)]
	f := field{num: nums[rng.IntN(len(nums))], typ: typ}
	if typ == protowire.BytesType {
		f.raw = randomBytes(rng)
	} else {
		f.raw = randomValue(rng, typ)
	}
	return f
}

func randomValue(rng *rand.Rand, typ protowire.Type) []byte {
	switch typ {
	case protowire.Fixed32Type:
		return protowire.AppendFixed32(nil, rng.Uint32())
	case protowire.Fixed64Type:
		return protowire.AppendFixed64(nil, rng.Uint64())
	default:
		vals := []uint64{0, 1, 2, 5, 127, 128, 1 << 31, 1<<63 + 1, rng.Uint64()}
		return protowire.AppendVarint(nil, vals[rng.IntN(len(vals))])
	}
}

func randomBytes(rng *rand.Rand) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		b := make([]byte, 8)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	case 2:
		b := make([]byte, 16)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	default:
		return []byte("\xff\xfe invalid utf-8 \xc3")
	}
}
