package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// httpResult is what a test inspects of an HTTP response.
type httpResult struct {
	code   int
	header http.Header
	body   []byte
}

// doHTTP sends req on a connection of its own, so that no idle connection
// outlives the test.
func doHTTP(req *http.Request) (httpResult, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitTimeout}
	resp, err := client.Do(req)
	if err != nil {
		return httpResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return httpResult{code: resp.StatusCode, header: resp.Header, body: body}, err
}

func postTraces(r *Receiver, contentType, contentEncoding string, body []byte) (httpResult, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+r.HTTPAddr().String()+tracesPath, bytes.NewReader(body))
	if err != nil {
		return httpResult{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if contentEncoding != "" {
		req.Header.Set("Content-Encoding", contentEncoding)
	}
	return doHTTP(req)
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipBomb returns n MiB of zero bytes gzip-compressed, as n copies of one
// gzip member: a valid multi-member stream, cheap to build.
func gzipBomb(t testing.TB, n int) []byte {
	t.Helper()
	member := gzipped(t, make([]byte, 1<<20))
	return bytes.Repeat(member, n)
}

// invalidIDTraces returns traces with one valid span, two with a zero trace id
// and one with a zero span id.
func invalidIDTraces() ptrace.Traces {
	td := newTraces(1, 4)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.At(1).SetTraceID(pcommon.TraceID{})
	spans.At(2).SetTraceID(pcommon.TraceID{})
	spans.At(2).SetSpanID(pcommon.SpanID{})
	spans.At(3).SetSpanID(pcommon.SpanID{})
	return td
}

func mustMarshalJSON(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeStatus decodes a google.rpc.Status body in the given content type.
func decodeStatus(t *testing.T, contentType string, body []byte) *spb.Status {
	t.Helper()
	st := &spb.Status{}
	var err error
	switch contentType {
	case "application/x-protobuf":
		err = proto.Unmarshal(body, st)
	case "application/json":
		err = protojson.Unmarshal(body, st)
	default:
		t.Fatalf("no status decoder for %q", contentType)
	}
	if err != nil {
		t.Fatalf("decode google.rpc.Status from %q body: %v", contentType, err)
	}
	return st
}

// decodeResponse decodes an ExportTraceServiceResponse body in the given content type.
func decodeResponse(t *testing.T, contentType string, body []byte) ptraceotlp.ExportResponse {
	t.Helper()
	resp := ptraceotlp.NewExportResponse()
	var err error
	switch contentType {
	case "application/x-protobuf":
		err = resp.UnmarshalProto(body)
	case "application/json":
		err = resp.UnmarshalJSON(body)
	default:
		t.Fatalf("no response decoder for %q", contentType)
	}
	if err != nil {
		t.Fatalf("decode response from %q body: %v", contentType, err)
	}
	return resp
}

func TestHTTPRequests(t *testing.T) {
	good := mustMarshal(t, newTraces(2, 3))
	goodJSON := mustMarshalJSON(t, newTraces(2, 3))
	badHexJSON := strings.Replace(string(goodJSON), `"traceId":"01`, `"traceId":"zz`, 1)
	if badHexJSON == string(goodJSON) {
		t.Fatal("test setup: no traceId to corrupt in the JSON body")
	}
	cfg := testConfig() // MaxRequestBytes: 1 MiB

	type want struct {
		code         int
		contentType  string
		statusCode   codes.Code // for error responses with a google.rpc.Status body
		rejectedSpan int64      // for 200 responses: partial_success.rejected_spans
		reason       reason     // the rejected_requests_total reason counted, for errors
		consumed     int        // spans handed to the consumer
		header       map[string]string
	}
	tests := []struct {
		name            string
		method          string
		path            string
		contentType     string
		contentEncoding string
		body            []byte
		want            want
	}{
		{name: "protobuf", contentType: "application/x-protobuf", body: good,
			want: want{code: 200, contentType: "application/x-protobuf", consumed: 6}},
		{name: "json with charset", contentType: "application/json; charset=utf-8", body: goodJSON,
			want: want{code: 200, contentType: "application/json", consumed: 6}},
		{name: "protobuf gzip", contentType: "application/x-protobuf", contentEncoding: "gzip", body: gzipped(t, good),
			want: want{code: 200, contentType: "application/x-protobuf", consumed: 6}},
		{name: "json identity encoding", contentType: "application/json", contentEncoding: "identity", body: goodJSON,
			want: want{code: 200, contentType: "application/json", consumed: 6}},
		{name: "empty request", contentType: "application/x-protobuf", body: nil,
			want: want{code: 200, contentType: "application/x-protobuf"}},
		{name: "zero trace and span ids", contentType: "application/x-protobuf", body: mustMarshal(t, invalidIDTraces()),
			want: want{code: 200, contentType: "application/x-protobuf", rejectedSpan: 3, consumed: 1}},
		{name: "zero ids json", contentType: "application/json", body: mustMarshalJSON(t, invalidIDTraces()),
			want: want{code: 200, contentType: "application/json", rejectedSpan: 3, consumed: 1}},
		{name: "every span rejected", contentType: "application/x-protobuf", body: mustMarshal(t, func() ptrace.Traces {
			td := newTraces(1, 2)
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetTraceID(pcommon.TraceID{})
			td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1).SetSpanID(pcommon.SpanID{})
			return td
		}()), want: want{code: 200, contentType: "application/x-protobuf", rejectedSpan: 2}},
		{name: "truncated protobuf", contentType: "application/x-protobuf", body: good[:len(good)-1],
			want: want{code: 400, contentType: "application/x-protobuf", statusCode: codes.InvalidArgument, reason: reasonDecodeError}},
		{name: "invalid json", contentType: "application/json", body: []byte(`{"resourceSpans": [`),
			want: want{code: 400, contentType: "application/json", statusCode: codes.InvalidArgument, reason: reasonDecodeError}},
		{name: "bad hex trace id in json", contentType: "application/json", body: []byte(badHexJSON),
			want: want{code: 400, contentType: "application/json", statusCode: codes.InvalidArgument, reason: reasonDecodeError}},
		{name: "invalid gzip", contentType: "application/x-protobuf", contentEncoding: "gzip", body: good,
			want: want{code: 400, contentType: "application/x-protobuf", statusCode: codes.InvalidArgument, reason: reasonDecodeError}},
		{name: "truncated gzip", contentType: "application/x-protobuf", contentEncoding: "gzip", body: gzipped(t, good)[:40],
			want: want{code: 400, contentType: "application/x-protobuf", statusCode: codes.InvalidArgument, reason: reasonDecodeError}},
		{name: "wrong content type", contentType: "text/plain", body: good,
			want: want{code: 415, contentType: "text/plain; charset=utf-8", reason: reasonUnsupportedMediaType}},
		{name: "no content type", body: good,
			want: want{code: 415, contentType: "text/plain; charset=utf-8", reason: reasonUnsupportedMediaType}},
		{name: "unsupported content encoding", contentType: "application/x-protobuf", contentEncoding: "br", body: good,
			want: want{code: 415, contentType: "application/x-protobuf", statusCode: codes.InvalidArgument, reason: reasonUnsupportedMediaType,
				header: map[string]string{"Accept-Encoding": "gzip, identity"}}},
		{name: "oversized body", contentType: "application/x-protobuf", body: make([]byte, cfg.MaxRequestBytes+1),
			want: want{code: 413, contentType: "application/x-protobuf", statusCode: codes.ResourceExhausted, reason: reasonTooLarge}},
		{name: "body of exactly the maximum", contentType: "application/x-protobuf",
			// A valid request padded with an unknown field to exactly MaxRequestBytes.
			body: padProto(t, good, int(cfg.MaxRequestBytes)),
			want: want{code: 200, contentType: "application/x-protobuf", consumed: 6}},
		{name: "gzip bomb", contentType: "application/x-protobuf", contentEncoding: "gzip", body: gzipBomb(t, 100),
			want: want{code: 413, contentType: "application/x-protobuf", statusCode: codes.ResourceExhausted, reason: reasonTooLarge}},
		{name: "GET", method: http.MethodGet,
			want: want{code: 405, contentType: "text/plain; charset=utf-8", reason: reasonMethodNotAllowed,
				header: map[string]string{"Allow": "POST"}}},
		{name: "PUT protobuf", method: http.MethodPut, contentType: "application/x-protobuf", body: good,
			want: want{code: 405, contentType: "application/x-protobuf", statusCode: codes.Unimplemented, reason: reasonMethodNotAllowed,
				header: map[string]string{"Allow": "POST"}}},
		{name: "other path", path: "/v1/metrics", contentType: "application/x-protobuf", body: good,
			want: want{code: 404, contentType: "text/plain; charset=utf-8"}},
	}

	rec := &recorder{}
	r, _ := startReceiver(t, cfg, rec)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := tt.method, tt.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = tracesPath
			}
			req, err := http.NewRequest(method, "http://"+r.HTTPAddr().String()+path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.contentEncoding != "" {
				req.Header.Set("Content-Encoding", tt.contentEncoding)
			}
			spansBefore := len(rec.got())
			var rejectedBefore float64
			if tt.want.code != 200 && tt.want.code != 404 {
				rejectedBefore = testutil.ToFloat64(r.core.metrics.rejectedRequests[transportHTTP][tt.want.reason])
			}

			got, err := doHTTP(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if got.code != tt.want.code {
				t.Errorf("status = %d, want %d (body %q)", got.code, tt.want.code, got.body)
			}
			if ct := got.header.Get("Content-Type"); ct != tt.want.contentType {
				t.Errorf("Content-Type = %q, want %q", ct, tt.want.contentType)
			}
			for k, v := range tt.want.header {
				if gotV := got.header.Get(k); gotV != v {
					t.Errorf("header %s = %q, want %q", k, gotV, v)
				}
			}
			switch {
			case got.code == 200:
				resp := decodeResponse(t, tt.want.contentType, got.body)
				ps := resp.PartialSuccess()
				if ps.RejectedSpans() != tt.want.rejectedSpan {
					t.Errorf("partial_success.rejected_spans = %d, want %d", ps.RejectedSpans(), tt.want.rejectedSpan)
				}
				if gotMsg := ps.ErrorMessage() != ""; gotMsg != (tt.want.rejectedSpan > 0) {
					t.Errorf("partial_success.error_message = %q, want one iff spans were rejected", ps.ErrorMessage())
				}
			case tt.want.statusCode != codes.OK:
				st := decodeStatus(t, tt.want.contentType, got.body)
				if codes.Code(st.GetCode()) != tt.want.statusCode || st.GetMessage() == "" {
					t.Errorf("status body = %v, want code %v with a message", st, tt.want.statusCode)
				}
			}
			if gotSpans := len(rec.got()) - spansBefore; gotSpans != tt.want.consumed {
				t.Errorf("consumer got %d spans, want %d", gotSpans, tt.want.consumed)
			}
			if tt.want.code != 200 && tt.want.code != 404 {
				if d := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportHTTP][tt.want.reason]) - rejectedBefore; d != 1 {
					t.Errorf("rejected_requests_total{reason=%q} rose by %v, want 1", tt.want.reason, d)
				}
			}

			// The server keeps serving.
			after, err := postTraces(r, "application/x-protobuf", "", good)
			if err != nil || after.code != 200 {
				t.Fatalf("good request after %s: %v, status %d", tt.name, err, after.code)
			}
			if used := r.core.limiter.inUse(); used != 0 {
				t.Errorf("in-flight bytes after the requests = %d, want 0", used)
			}
		})
	}
}

// padProto appends an unknown length-delimited field to a protobuf message so
// that it is exactly size bytes long; decoders skip it.
func padProto(t *testing.T, msg []byte, size int) []byte {
	t.Helper()
	// Field 15, wire type 2: tag byte 0x7a, then a varint length, then the bytes.
	for n := size - len(msg) - 1 - 4; n < size; n++ {
		var b []byte
		b = append(b, msg...)
		b = append(b, 0x7a)
		for v := uint64(n); ; v >>= 7 {
			if v < 0x80 {
				b = append(b, byte(v))
				break
			}
			b = append(b, byte(v)|0x80)
		}
		if len(b)+n == size {
			return append(b, make([]byte, n)...)
		}
	}
	t.Fatalf("cannot pad %d bytes to %d", len(msg), size)
	return nil
}

func TestHTTPGzipBombMemoryIsBounded(t *testing.T) {
	cfg := testConfig() // MaxRequestBytes: 1 MiB
	r, _ := startReceiver(t, cfg, &recorder{})
	bomb := gzipBomb(t, 100)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := postTraces(r, "application/x-protobuf", "gzip", bomb)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got.code != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", got.code)
	}
	// Everything allocated while serving, client included: a few times
	// MaxRequestBytes at most, far from the bomb's 100 MiB.
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("serving the bomb allocated %d KiB", allocated>>10)
	if allocated > 16<<20 {
		t.Errorf("serving a gzip bomb allocated %d MiB, want under 16 MiB", allocated>>20)
	}
}

func TestHTTPConsumerErrors(t *testing.T) {
	tests := []struct {
		name           string
		err            error
		wantCode       int
		wantRetryAfter string
		wantReason     reason
	}{
		{"overload with delay", fmtWrap(overloadError{after: 2500 * time.Millisecond}), 429, "3", reasonOverloaded},
		{"overload with sub-second delay", overloadError{after: 10 * time.Millisecond}, 429, "1", reasonOverloaded},
		{"overload without delay", overloadError{}, 429, "2", reasonOverloaded}, // Config.RetryAfter
		{"other error", errors.New("disk full"), 503, "2", reasonConsumerError},
		{"cancelled", context.Canceled, 503, "2", reasonConsumerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.RetryAfter = 2 * time.Second
			r, _ := startReceiver(t, cfg, consumerFunc(func(context.Context, ptrace.Traces) error { return tt.err }))

			got, err := postTraces(r, "application/json", "", mustMarshalJSON(t, newTraces(1, 3)))
			if err != nil {
				t.Fatal(err)
			}
			if got.code != tt.wantCode {
				t.Errorf("status = %d, want %d", got.code, tt.wantCode)
			}
			if ra := got.header.Get("Retry-After"); ra != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", ra, tt.wantRetryAfter)
			}
			st := decodeStatus(t, "application/json", got.body)
			_, wantGRPC := statusCodes(tt.wantReason)
			if codes.Code(st.GetCode()) != wantGRPC {
				t.Errorf("status body code = %v, want %v", codes.Code(st.GetCode()), wantGRPC)
			}
			m := r.core.metrics
			if n := testutil.ToFloat64(m.rejectedRequests[transportHTTP][tt.wantReason]); n != 1 {
				t.Errorf("rejected_requests_total{reason=%q} = %v, want 1", tt.wantReason, n)
			}
			if n := testutil.ToFloat64(m.rejectedSpans[tt.wantReason]); n != 3 {
				t.Errorf("rejected_spans_total{reason=%q} = %v, want 3", tt.wantReason, n)
			}
		})
	}
}

// fmtWrap wraps err so that only errors.As finds its RetryAfter.
func fmtWrap(err error) error { return errors.Join(errors.New("export"), err) }

func TestHTTPInflightLimiter(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRequestBytes = 1 << 20
	cfg.MaxInflightBytes = 2 << 20 // a body and what it decodes into: about 1.2 MiB
	cfg.RetryAfter = 5 * time.Second
	c := newBlockingConsumer()
	r, _ := startReceiver(t, cfg, c)

	// Each body with its decoded estimate is over half the budget, so two
	// cannot be in flight at once.
	body := padProto(t, mustMarshal(t, newTraces(1, 1)), 600<<10)
	first := make(chan httpResult, 1)
	go func() {
		got, _ := postTraces(r, "application/x-protobuf", "", body)
		first <- got
	}()
	c.waitEntered(t)

	got, err := postTraces(r, "application/x-protobuf", "", body)
	if err != nil {
		t.Fatal(err)
	}
	if got.code != http.StatusTooManyRequests || got.header.Get("Retry-After") != "5" {
		t.Errorf("second request: status %d, Retry-After %q; want 429, \"5\"", got.code, got.header.Get("Retry-After"))
	}
	if n := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportHTTP][reasonOverloaded]); n != 1 {
		t.Errorf("rejected_requests_total{transport=http,reason=overloaded} = %v, want 1", n)
	}

	close(c.release)
	select {
	case got := <-first:
		if got.code != http.StatusOK {
			t.Errorf("first request: status %d, want 200", got.code)
		}
	case <-time.After(waitTimeout):
		t.Fatal("first request did not finish after the consumer was released")
	}
	if got, err := postTraces(r, "application/x-protobuf", "", body); err != nil || got.code != http.StatusOK {
		t.Errorf("request after the budget was freed: %v, status %d; want 200", err, got.code)
	}
	if used := r.core.limiter.inUse(); used != 0 {
		t.Errorf("in-flight bytes at rest = %d, want 0", used)
	}
}

func TestMetricsExposition(t *testing.T) {
	r, reg := startReceiver(t, testConfig(), &recorder{})
	if got, err := postTraces(r, "application/x-protobuf", "", mustMarshal(t, invalidIDTraces())); err != nil || got.code != 200 {
		t.Fatalf("export: %v, status %d", err, got.code)
	}
	if got, err := postTraces(r, "text/plain", "", nil); err != nil || got.code != 415 {
		t.Fatalf("export: %v, status %d", err, got.code)
	}

	const want = `
# HELP lagscope_received_spans_total Spans in OTLP export requests that decoded, whether accepted or not.
# TYPE lagscope_received_spans_total counter
lagscope_received_spans_total{transport="grpc"} 0
lagscope_received_spans_total{transport="http"} 4
lagscope_received_spans_total{transport="kafka"} 0
lagscope_received_spans_total{transport="zipkin"} 0
# HELP lagscope_rejected_spans_total Decoded spans that were not handed on, by reason.
# TYPE lagscope_rejected_spans_total counter
lagscope_rejected_spans_total{reason="consumer_error"} 0
lagscope_rejected_spans_total{reason="invalid_span_id"} 1
lagscope_rejected_spans_total{reason="invalid_trace_id"} 2
lagscope_rejected_spans_total{reason="overloaded"} 0
# HELP lagscope_rejected_requests_total OTLP export requests answered with an error, by transport and reason.
# TYPE lagscope_rejected_requests_total counter
lagscope_rejected_requests_total{reason="consumer_error",transport="grpc"} 0
lagscope_rejected_requests_total{reason="consumer_error",transport="http"} 0
lagscope_rejected_requests_total{reason="consumer_error",transport="kafka"} 0
lagscope_rejected_requests_total{reason="consumer_error",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="decode_error",transport="grpc"} 0
lagscope_rejected_requests_total{reason="decode_error",transport="http"} 0
lagscope_rejected_requests_total{reason="decode_error",transport="kafka"} 0
lagscope_rejected_requests_total{reason="decode_error",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="method_not_allowed",transport="grpc"} 0
lagscope_rejected_requests_total{reason="method_not_allowed",transport="http"} 0
lagscope_rejected_requests_total{reason="method_not_allowed",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="overloaded",transport="grpc"} 0
lagscope_rejected_requests_total{reason="overloaded",transport="http"} 0
lagscope_rejected_requests_total{reason="overloaded",transport="kafka"} 0
lagscope_rejected_requests_total{reason="overloaded",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="panic",transport="grpc"} 0
lagscope_rejected_requests_total{reason="panic",transport="http"} 0
lagscope_rejected_requests_total{reason="panic",transport="kafka"} 0
lagscope_rejected_requests_total{reason="panic",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="too_large",transport="grpc"} 0
lagscope_rejected_requests_total{reason="too_large",transport="http"} 0
lagscope_rejected_requests_total{reason="too_large",transport="kafka"} 0
lagscope_rejected_requests_total{reason="too_large",transport="zipkin"} 0
lagscope_rejected_requests_total{reason="unauthenticated",transport="grpc"} 0
lagscope_rejected_requests_total{reason="unauthenticated",transport="http"} 0
lagscope_rejected_requests_total{reason="unsupported_media_type",transport="grpc"} 0
lagscope_rejected_requests_total{reason="unsupported_media_type",transport="http"} 1
lagscope_rejected_requests_total{reason="unsupported_media_type",transport="zipkin"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"lagscope_received_spans_total", "lagscope_rejected_spans_total", "lagscope_rejected_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "lagscope_request_duration_seconds"); n != 4 {
		t.Errorf("lagscope_request_duration_seconds has %d series, want 4", n)
	}
}

func BenchmarkHTTPExportProto(b *testing.B) {
	const traces, spansPer = 100, 5
	cfg := testConfig()
	cfg.GRPCEndpoint = ""
	r, _ := startReceiver(b, cfg, consumerFunc(func(context.Context, ptrace.Traces) error { return nil }))
	body := mustMarshal(b, newTraces(traces, spansPer))
	url := "http://" + r.HTTPAddr().String() + tracesPath
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.ReportMetric(float64(b.N*traces*spansPer)/b.Elapsed().Seconds(), "spans/s")
}
