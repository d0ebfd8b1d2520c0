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

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// tracesPath is the OTLP/HTTP path for traces.
const tracesPath = "/v1/traces"

// httpTraces is the OTLP/HTTP transport of tracesCore: it serves POST /v1/traces.
type httpTraces struct {
	core     *tracesCore
	maxBytes int64
}

// httpEncoding is one of the two OTLP/HTTP payload encodings.
type httpEncoding struct {
	contentType     string
	unmarshal       func(ptraceotlp.ExportRequest, []byte) error
	marshalResponse func(ptraceotlp.ExportResponse) ([]byte, error)
	marshalStatus   func(proto.Message) ([]byte, error)
}

var (
	protoEncoding = &httpEncoding{
		contentType:     "application/x-protobuf",
		unmarshal:       ptraceotlp.ExportRequest.UnmarshalProto,
		marshalResponse: ptraceotlp.ExportResponse.MarshalProto,
		marshalStatus:   proto.Marshal,
	}
	jsonEncoding = &httpEncoding{
		contentType:     "application/json",
		unmarshal:       ptraceotlp.ExportRequest.UnmarshalJSON,
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
	defer func() { h.core.metrics.requestDuration[transportHTTP].Observe(time.Since(start).Seconds()) }()

	enc := encodingFor(r.Header.Get("Content-Type"))
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, enc, newRequestError(reasonMethodNotAllowed, "method "+r.Method+" is not allowed, use POST"))
		return
	}
	if enc == nil {
		h.fail(w, r, nil, newRequestError(reasonUnsupportedMediaType,
			fmt.Sprintf("unsupported Content-Type %q, use application/x-protobuf or application/json", r.Header.Get("Content-Type"))))
		return
	}
	if r.ContentLength > h.maxBytes {
		h.fail(w, r, enc, tooLarge(h.maxBytes))
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
			h.fail(w, r, enc, readError(err, h.maxBytes))
			return
		}
		body, sizeHint = zr, -1
	default:
		// RFC 9110 section 15.5.16: 415 is the answer to a content coding the
		// server does not support, with Accept-Encoding saying which it does.
		w.Header().Set("Accept-Encoding", "gzip, identity")
		h.fail(w, r, enc, newRequestError(reasonUnsupportedMediaType,
			fmt.Sprintf("unsupported Content-Encoding %q, use gzip or identity", ce)))
		return
	}

	buf := rawMessagePool.Get().(*rawMessage)
	defer buf.free()
	reserved, rerr := h.readBody(body, sizeHint, buf)
	defer h.core.limiter.release(reserved)
	if rerr != nil {
		h.fail(w, r, enc, rerr)
		return
	}

	var td ptrace.Traces
	var err error
	if enc == protoEncoding {
		td, err = decodeTraces(buf.b, h.core.lazy)
	} else {
		req := ptraceotlp.NewExportRequest()
		err = enc.unmarshal(req, buf.b)
		td = req.Traces()
	}
	if err != nil {
		h.fail(w, r, enc, &requestError{reason: reasonDecodeError, err: fmt.Errorf("decode OTLP request: %w", err)})
		return
	}
	resp, rerr := h.core.export(r.Context(), transportHTTP, td)
	if rerr != nil {
		h.fail(w, r, enc, rerr)
		return
	}
	b, err := enc.marshalResponse(resp)
	if err != nil {
		h.core.logger.ErrorContext(r.Context(), "cannot encode OTLP response", "err", err)
		http.Error(w, "cannot encode OTLP response", http.StatusInternalServerError)
		return
	}
	writeBody(w, http.StatusOK, enc.contentType, b)
}

// maxDrainBytes bounds what fail reads of a refused body.
const maxDrainBytes = 64 << 20

// minReadStep is the first reservation when the body's size is unknown; later
// ones double what is reserved.
const minReadStep = 64 << 10

// readBody reads r into buf, reserving bytes from the in-flight limiter before it
// reads them, and stops one byte past MaxRequestBytes so that a compression bomb
// is never expanded further. sizeHint is the body's length if known, else -1. The
// caller releases the returned reservation, also on error.
func (h *httpTraces) readBody(r io.Reader, sizeHint int64, buf *rawMessage) (reserved int64, _ *requestError) {
	limit := h.maxBytes + 1 // one byte more tells "too large" from "exactly the maximum"
	b := buf.b[:0]
	for {
		if int64(len(b)) == reserved {
			if reserved == limit {
				buf.b = b
				return reserved, tooLarge(h.maxBytes)
			}
			step := max(reserved, minReadStep)
			if reserved == 0 && sizeHint >= 0 {
				step = sizeHint + 1 // +1 to read the EOF without another reservation
			}
			step = min(step, limit-reserved)
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
func (h *httpTraces) fail(w http.ResponseWriter, r *http.Request, enc *httpEncoding, e *requestError) {
	// A client still sending a body we refused gets a reset instead of the
	// answer if the server closes on it: read (without keeping) a bounded
	// rest of the body first, so that exporters see the 413/429 and its
	// retry advice rather than a broken pipe.
	_, _ = io.CopyN(io.Discard, r.Body, min(2*h.maxBytes, maxDrainBytes))
	h.core.metrics.rejectedRequests[transportHTTP][e.reason].Inc()
	h.core.logger.DebugContext(r.Context(), "refused OTLP/HTTP request", "reason", e.reason.String(), "err", e)

	httpCode, grpcCode := statusCodes(e.reason)
	if e.reason == reasonOverloaded || e.reason == reasonConsumerError {
		w.Header().Set("Retry-After", retryAfterSeconds(e.retryAfter))
	}
	if enc == nil {
		writeBody(w, httpCode, "text/plain; charset=utf-8", []byte(e.Error()))
		return
	}
	b, err := enc.marshalStatus(status.New(grpcCode, e.Error()).Proto())
	if err != nil {
		writeBody(w, httpCode, "text/plain; charset=utf-8", []byte(e.Error()))
		return
	}
	writeBody(w, httpCode, enc.contentType, b)
}

func writeBody(w http.ResponseWriter, code int, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b) // a client that went away is no error of ours
}
