package forward

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// httpSender POSTs requests to the OTLP/HTTP traces path, protobuf as
// application/x-protobuf and OTLP/JSON as application/json, as they came.
type httpSender struct {
	url     string
	headers http.Header
	client  *http.Client
	gzip    bool
}

func newHTTPSender(cfg Config, tc *tls.Config) *httpSender {
	scheme := "http"
	if tc != nil {
		scheme = "https"
	}
	h := http.Header{}
	for k, v := range cfg.Headers {
		h.Set(k, v)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	tr.Proxy = nil // a backend next to lagscope; an environment's proxy is not meant for it
	return &httpSender{
		url:     scheme + "://" + cfg.Endpoint + cfg.Path,
		headers: h,
		client:  &http.Client{Transport: tr},
		gzip:    cfg.Compression == CompressionGzip,
	}
}

func (s *httpSender) send(ctx context.Context, r *request) (rejected int64, _ error) {
	body := r.body
	if s.gzip {
		if len(r.gz) == 0 {
			// Compressed once, at the first attempt, and kept for the retries.
			r.gz = gzipAppend(r.gz[:0], r.body)
		}
		body = r.gz
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, errMalformed{fmt.Errorf("build OTLP/HTTP request: %w", err)}
	}
	for k, v := range s.headers {
		req.Header[k] = v
	}
	if s.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if r.enc == JSON {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, &sendError{retryable: true, err: fmt.Errorf("%w: %w", errTransport, err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode/100 != 2 {
		return 0, httpError(resp, fmt.Errorf("backend answered %s: %s", resp.Status, errorMessage(resp, answer)), time.Now())
	}
	if err != nil {
		// The backend took the request; retrying would duplicate it.
		return 0, nil
	}
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return rejectedSpans(answer, mediaType == "application/json")
}

var gzipWriterPool = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// gzipAppend appends b, gzipped, to dst.
func gzipAppend(dst, b []byte) []byte {
	buf := bytes.NewBuffer(dst)
	zw := gzipWriterPool.Get().(*gzip.Writer)
	defer gzipWriterPool.Put(zw)
	zw.Reset(buf)
	_, _ = zw.Write(b) // a bytes.Buffer does not fail
	_ = zw.Close()
	return buf.Bytes()
}

func (s *httpSender) close() error {
	s.client.CloseIdleConnections()
	return nil
}

// errorMessage returns the message of an error answer, for a log line: an
// OTLP server's google.rpc.Status, or the start of a text body.
func errorMessage(resp *http.Response, body []byte) string {
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var st spb.Status
	switch mediaType {
	case "application/x-protobuf":
		if proto.Unmarshal(body, &st) == nil {
			return st.GetMessage()
		}
	case "application/json":
		if protojson.Unmarshal(body, &st) == nil {
			return st.GetMessage()
		}
	}
	s, _, _ := strings.Cut(string(body[:min(len(body), 256)]), "\n")
	return strings.ToValidUTF8(s, "?")
}
