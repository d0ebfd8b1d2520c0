package collector

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// tracesPath is the OTLP/HTTP path for traces.
const tracesPath = "/v1/traces"

// httpTraces is the OTLP/HTTP transport of tracesCore: it serves POST
// /v1/traces. With transport transportZipkin it serves Zipkin v2 spans
// instead (POST /api/v2/spans, zipkin.go) through the same reading, limits
// and budget: only decoding and the answers differ.
type httpTraces struct {
	core      *tracesCore
	auth      *bearerAuth // nil: no authentication
	maxBytes  int64
	transport transport // transportHTTP (OTLP) or transportZipkin
}

// httpEncoding is one of the two OTLP/HTTP payload encodings.
type httpEncoding struct {
	contentType     string
	marshalResponse func(ptraceotlp.ExportResponse) ([]byte, error)
	marshalStatus   func(proto.Message) ([]byte, error)
}

var (
	protoEncoding = &httpEncoding{
		contentType:     "application/x-protobuf",
		marshalResponse: ptraceotlp.ExportResponse.MarshalProto,
		marshalStatus:   proto.Marshal,
	}
	jsonEncoding = &httpEncoding{
		contentType:     "application/json",
		marshalResponse: ptraceotlp.ExportResponse.MarshalJSON,
		marshalStatus:   protojson.Marshal,
	}
)

// encodingFor returns the encoding a Content-Type names, ignoring parameters such
// as charset, or nil if it names none that OTLP/HTTP knows.
func encodingFor(contentType string) *httpEncoding {
	mediaType, _, _ := strings.Cut(contentType, ";")
	mediaType = strings.TrimSpace(mediaType)
	switch {
	case strings.EqualFold(mediaType, protoEncoding.contentType):
		return protoEncoding
	case strings.EqualFold(mediaType, jsonEncoding.contentType):
		return jsonEncoding
	}
	return nil
}

func (h *httpTraces) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { h.core.metrics.requestDuration[h.transport].Observe(time.Since(start).Seconds()) }()
	req := &httpRequest{w: w, r: r, rc: http.NewResponseController(w)}
	// Registered first so that it runs last: the releases deferred below
	// have run by then, so that neither a panic nor a drain holds budget.
	defer func() {
		if v := recover(); v != nil {
			h.fail(req, h.core.recovered(r.Context(), h.transport, v))
		}
		if req.drain {
			// The answer goes out now, after the releases, then the rest of
			// the body is read.
			_ = req.rc.Flush()
			_ = req.rc.SetReadDeadline(time.Now().Add(drainTimeout))
			limit := min(2*h.maxBytes, maxDrainBytes)
			if req.unauthenticated {
				limit = maxUnauthenticatedDrainBytes
			}
			_, _ = io.CopyN(io.Discard, r.Body, limit)
		}
	}()

	req.enc = encodingFor(r.Header.Get("Content-Type"))
	if req.enc == nil && h.transport == transportZipkin && r.Header.Get("Content-Type") == "" {
		req.enc = jsonEncoding // Zipkin's default, as its own server has it
	}
	// Before anything else is looked at, and before the body is read.
	if h.auth != nil && !h.auth.authorized(r.Header.Values("Authorization")) {
		req.unauthenticated = true
		w.Header().Set("WWW-Authenticate", "Bearer")
		h.fail(req, unauthenticated())
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(req, newRequestError(reasonMethodNotAllowed, "method "+r.Method+" is not allowed, use POST"))
		return
	}
	if req.enc == nil {
		h.fail(req, newRequestError(reasonUnsupportedMediaType,
			fmt.Sprintf("unsupported Content-Type %q, use application/x-protobuf or application/json", r.Header.Get("Content-Type"))))
		return
	}
	if r.ContentLength > h.maxBytes {
		h.fail(req, tooLarge(h.maxBytes))
		return
	}

	// The compressed body is bounded as well as the decompressed one.
	var body io.Reader = http.MaxBytesReader(w, r.Body, h.maxBytes)
	sizeHint := r.ContentLength
	switch ce := r.Header.Get("Content-Encoding"); strings.ToLower(ce) {
	case "", "identity":
	case "gzip", "x-gzip":
		zr := gzipReaderPool.Get().(*gzip.Reader)
		defer gzipReaderPool.Put(zr)
		if err := zr.Reset(body); err != nil {
			h.fail(req, readError(err, h.maxBytes))
			return
		}
		body, sizeHint = zr, -1
	default:
		// RFC 9110 section 15.5.16: 415 is the answer to a content coding the
		// server does not support, with Accept-Encoding saying which it does.
		w.Header().Set("Accept-Encoding", "gzip, identity")
		h.fail(req, newRequestError(reasonUnsupportedMediaType,
			fmt.Sprintf("unsupported Content-Encoding %q, use gzip or identity", ce)))
		return
	}

	buf := rawMessagePool.Get().(*rawMessage)
	defer buf.free()
	reserved, rerr := h.readBody(body, sizeHint, buf)
	defer h.core.limiter.release(reserved)
	if rerr != nil {
		h.fail(req, rerr)
		return
	}
	req.bodyRead = true
	// The body is in: the read deadline set by withReadDeadline is not the
	// consumer's (net/http cancels the request's context when a read
	// waiting for the next request times out).
	_ = req.rc.SetReadDeadline(time.Time{})

	if h.transport == transportZipkin {
		h.serveZipkin(req, buf.b)
		return
	}
	dec, decoded, rerr := h.core.decode(buf.b, req.enc == jsonEncoding)
	defer h.core.limiter.release(decoded)
	defer dec.free()
	if rerr != nil {
		h.fail(req, rerr)
		return
	}
	resp, rerr := h.core.export(r.Context(), transportHTTP, dec, buf.b, req.enc == jsonEncoding)
	if rerr != nil {
		h.fail(req, rerr)
		return
	}
	b, err := req.enc.marshalResponse(resp)
	if err != nil {
		h.core.logger.ErrorContext(r.Context(), "cannot encode OTLP response", "err", err)
		http.Error(w, "cannot encode OTLP response", http.StatusInternalServerError)
		return
	}
	writeBody(w, http.StatusOK, req.enc.contentType, b)
}

// httpRequest is what fail needs to know of a request being served.
type httpRequest struct {
	w        http.ResponseWriter
	r        *http.Request
	rc       *http.ResponseController
	enc      *httpEncoding // nil if the Content-Type names none we know
	bodyRead bool          // to its end
	drain    bool          // answered before its body was read: read the rest before closing

	unauthenticated bool // refused for want of the token: drain less of it
}

// withReadDeadline bounds the time a client has to send a request's body
// (its headers are bounded by http.Server.ReadHeaderTimeout), on every path:
// one that stalls holds a connection, and for /v1/traces some of the
// in-flight budget, for at most timeout.
func withReadDeadline(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
		next.ServeHTTP(w, r)
	})
}

// maxDrainBytes bounds what fail reads of a refused body.
const maxDrainBytes = 64 << 20

// maxUnauthenticatedDrainBytes bounds what fail reads of the body of a
// request refused for want of the token, as net/http does of a body its
// handler left: a client without the token gets no more of our bandwidth
// than that.
const maxUnauthenticatedDrainBytes = 256 << 10

// drainTimeout bounds how long fail reads a refused body after answering.
const drainTimeout = time.Second

// minReadStep is the first reservation of a body; later ones double what is
// reserved, so that what is reserved and allocated follows what arrives.
const minReadStep = 64 << 10

// readBody reads r into buf, reserving bytes from the in-flight limiter before it
// reads them, and stops one byte past MaxRequestBytes so that a compression bomb
// is never expanded further. Reservations and the buffer grow in doubling steps
// as data arrives, never to a declared length that has not arrived: a client
// announcing 16 MiB and sending nothing holds minReadStep. sizeHint is the body's
// length if known, else -1; it only keeps the last step from overshooting. The
// caller releases the returned reservation, also on error.
func (h *httpTraces) readBody(r io.Reader, sizeHint int64, buf *rawMessage) (reserved int64, _ *requestError) {
	limit := h.maxBytes + 1 // one byte more tells "too large" from "exactly the maximum"
	if sizeHint >= 0 {
		limit = min(limit, sizeHint+1) // +1 to read the EOF without another reservation
	}
	b := buf.b[:0]
	for {
		if int64(len(b)) == reserved {
			if reserved == limit {
				buf.b = b
				if limit > h.maxBytes {
					return reserved, tooLarge(h.maxBytes)
				}
				// More than the Content-Length: net/http does not let that happen.
				return reserved, &requestError{reason: reasonDecodeError, err: errors.New("read request body: longer than its Content-Length")}
			}
			step := min(max(reserved, minReadStep), limit-reserved)
			if !h.core.limiter.tryAcquire(step) {
				buf.b = b
				return reserved, overloaded(h.core.retryAfter)
			}
			reserved += step
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, int(reserved)-len(b))
		}
		n, err := r.Read(b[len(b):min(cap(b), int(reserved))])
		b = b[:len(b)+n]
		if err == io.EOF {
			buf.b = b
			if int64(len(b)) > h.maxBytes {
				return reserved, tooLarge(h.maxBytes)
			}
			return reserved, nil
		}
		if err != nil {
			buf.b = b
			return reserved, readError(err, h.maxBytes)
		}
	}
}

func tooLarge(maxBytes int64) *requestError {
	return newRequestError(reasonTooLarge, "request body is larger than "+strconv.FormatInt(maxBytes, 10)+" bytes")
}

// readError classifies an error met reading or decompressing a request body.
func readError(err error, maxBytes int64) *requestError {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return tooLarge(maxBytes)
	}
	return &requestError{reason: reasonDecodeError, err: fmt.Errorf("read request body: %w", err)}
}

var gzipReaderPool = sync.Pool{New: func() any { return new(gzip.Reader) }}

// fail counts, logs and answers a refused request. The body is a google.rpc.Status
// in the request's encoding, as OTLP says, or plain text if it has none we know.
func (h *httpTraces) fail(req *httpRequest, e *requestError) {
	w, r := req.w, req.r
	h.core.metrics.rejectedRequests[h.transport][e.reason].Inc()
	h.core.logger.DebugContext(r.Context(), "refused request", "transport", h.transport.String(), "reason", e.reason.String(), "err", e)

	// A body not read to its end is answered first, so that an overloaded or
	// refused client learns it before sending the rest, and the connection is
	// closed after. A client still sending gets a reset instead of the answer
	// if the server closes on it, so ServeHTTP reads the rest (without keeping
	// it) for a bounded time and size after answering, its budget released.
	drain := !req.bodyRead && r.ContentLength != 0
	if drain {
		w.Header().Set("Connection", "close")
		_ = req.rc.EnableFullDuplex()
	}
	httpCode, grpcCode := statusCodes(e.reason)
	if e.reason == reasonOverloaded || e.reason == reasonConsumerError {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	var b []byte
	contentType := "text/plain; charset=utf-8"
	if req.enc != nil && h.transport != transportZipkin { // Zipkin's errors are plain text
		var err error
		if b, err = req.enc.marshalStatus(status.New(grpcCode, e.Error()).Proto()); err == nil {
			contentType = req.enc.contentType
		}
	}
	if b == nil || contentType == "text/plain; charset=utf-8" {
		b = []byte(e.Error())
	}
	writeBody(w, httpCode, contentType, b)
	req.drain = drain
}

func writeBody(w http.ResponseWriter, code int, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b) // a client that went away is no error of ours
}
