package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

// ZipkinPath is the path Zipkin v2 reporters post spans to.
const ZipkinPath = "/api/v2/spans"

// ZipkinConfig configures the Zipkin transport: the YAML section zipkin.
// The zero value is valid and leaves the transport off.
type ZipkinConfig struct {
	// Endpoint (zipkin.endpoint, --zipkin.endpoint) is the host:port that
	// accepts Zipkin v2 spans on POST /api/v2/spans, JSON or protobuf.
	// localhost:9411 is the Zipkin convention; a port of 0 picks a free one.
	// Default "": off.
	Endpoint string `yaml:"endpoint"`

	// TLS (zipkin.tls) serves the endpoint over TLS, and with
	// TLS.ClientCAFile over mutual TLS, as otlp.tls does for OTLP. Default:
	// plaintext.
	TLS TLSConfig `yaml:"tls"`
}

// DefaultZipkinConfig returns the configuration documented on
// ZipkinConfig's fields: the transport off.
func DefaultZipkinConfig() ZipkinConfig { return ZipkinConfig{} }

// Enabled reports whether an endpoint is configured, that is whether the
// Zipkin transport is to run.
func (c ZipkinConfig) Enabled() bool { return c.Endpoint != "" }

// Validate reports every field that cannot be used, joined into one error.
// An empty Endpoint is valid (the transport is off); NewZipkin refuses it.
func (c ZipkinConfig) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		if _, _, err := net.SplitHostPort(c.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("zipkin.endpoint: %w", err))
		}
	}
	if !c.Enabled() && c.TLS.enabled() {
		errs = append(errs, errors.New("zipkin.tls is set without zipkin.endpoint"))
	}
	errs = append(errs, c.TLS.validate("zipkin")...)
	return errors.Join(errs...)
}

// Zipkin accepts Zipkin v2 spans (POST /api/v2/spans; Content-Type
// application/json, the default, or application/x-protobuf; gzip bodies)
// and hands them to the Receiver's Consumer, translated to pdata by the
// OpenTelemetry Collector's own Zipkin translator: Zipkin kinds become span
// kinds, tags attributes, annotations span events, and 64-bit trace ids
// the low half of a 128-bit one. It shares everything else with OTLP/HTTP:
// the Receiver's per-request limits (otlp.max_*_per_request), its in-flight
// budget (429 with Retry-After past it), its timeouts and connection cap,
// its panic recovery and its metrics, under transport="zipkin". Accepted
// requests are answered 202 Accepted with no body, errors in plain text.
//
// The server side of a shared span (Zipkin's "shared": true, the same span
// id as the client's) gets an id of its own, derived from the trace and
// span ids so that a retried request gets the same one, and the client span
// as its parent; spans of the same request and service whose parent is the
// shared id become its children. Without that, lagscope would take it for
// a copy of the client span and ignore it.
//
// Its methods are safe for concurrent use.
type Zipkin struct {
	cfg     ZipkinConfig
	handler *httpTraces
	rcfg    Config // the Receiver's: timeouts, connection cap
	tls     *serverTLS
	logger  *slog.Logger

	mu      sync.Mutex
	started bool
	server  *http.Server
	addr    net.Addr
	serving sync.WaitGroup
}

// NewZipkin returns a Zipkin transport that feeds r's Consumer. It validates
// cfg (Endpoint must be set), reads the files of cfg.TLS and logs to logger
// (discarded if nil). Its metrics are r's. It listens on nothing until
// Start.
func NewZipkin(cfg ZipkinConfig, r *Receiver, logger *slog.Logger) (*Zipkin, error) {
	return newZipkin(cfg, r, logger, defaultReloadInterval)
}

func newZipkin(cfg ZipkinConfig, r *Receiver, logger *slog.Logger, reloadInterval time.Duration) (*Zipkin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid zipkin config: %w", err)
	}
	if !cfg.Enabled() {
		return nil, errors.New("invalid zipkin config: zipkin.endpoint is empty")
	}
	if r == nil {
		return nil, errors.New("collector: nil Receiver")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	z := &Zipkin{
		cfg:     cfg,
		handler: &httpTraces{core: r.core, maxBytes: r.cfg.MaxRequestBytes, transport: transportZipkin},
		rcfg:    r.cfg,
		logger:  logger,
	}
	if cfg.TLS.enabled() {
		var err error
		if z.tls, err = newServerTLS(cfg.TLS, "zipkin", reloadInterval, logger); err != nil {
			return nil, err
		}
	}
	return z, nil
}

// Start binds the endpoint and starts serving on it. ctx bounds only the
// binding. Start may be called once.
func (z *Zipkin) Start(ctx context.Context) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.started {
		return errors.New("collector: zipkin transport already started")
	}
	z.started = true
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", z.cfg.Endpoint)
	if err != nil {
		return fmt.Errorf("listen for Zipkin on %s: %w", z.cfg.Endpoint, err)
	}
	mux := http.NewServeMux()
	mux.Handle(ZipkinPath, z.handler)
	srv := &http.Server{
		Handler:           withReadDeadline(mux, z.rcfg.ReadTimeout),
		ReadHeaderTimeout: min(readHeaderTimeout, z.rcfg.ReadTimeout),
		IdleTimeout:       z.rcfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(z.logger.Handler(), slog.LevelDebug),
	}
	if z.tls != nil {
		srv.TLSConfig = z.tls.config(transportHTTP)
	}
	z.server, z.addr = srv, ln.Addr()
	ln = newLimitListener(ln, z.rcfg.MaxConnections)
	z.serving.Go(func() {
		serve := srv.Serve
		if z.tls != nil {
			serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			z.logger.Error("Zipkin server stopped", "err", err)
		}
	})
	z.logger.Info("serving Zipkin v2 spans", "addr", z.addr.String(), "path", ZipkinPath, "tls", z.tls != nil, "mtls", z.cfg.TLS.ClientCAFile != "")
	return nil
}

// Shutdown stops accepting connections and waits for the requests in flight
// and the server's loop. When ctx is done first, it closes the remaining
// connections, waits for the loop and returns ctx's error. Shutdown without
// Start, or twice, does nothing.
func (z *Zipkin) Shutdown(ctx context.Context) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	srv := z.server
	if srv == nil {
		return nil
	}
	z.server = nil
	var err error
	if serr := srv.Shutdown(ctx); serr != nil {
		err = fmt.Errorf("shut down Zipkin server: %w", serr)
		_ = srv.Close()
	}
	z.serving.Wait()
	return err
}

// Addr returns the address the Zipkin server is bound to, or nil before
// Start.
func (z *Zipkin) Addr() net.Addr {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.addr
}

// serveZipkin decodes, hands on and answers a Zipkin request whose body has
// been read into body. ServeHTTP's deferred recovery covers it.
func (h *httpTraces) serveZipkin(req *httpRequest, body []byte) {
	td, reserved, rerr := h.core.decodeZipkin(body, req.enc == jsonEncoding)
	defer h.core.limiter.release(reserved)
	if rerr != nil {
		h.fail(req, rerr)
		return
	}
	var otlp []byte
	if h.core.tee != nil {
		// A forwarder sends OTLP: the request's own bytes are Zipkin's.
		// Encoded before the consumer sees td, which it may keep.
		var err error
		if otlp, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td); err != nil {
			h.core.logger.ErrorContext(req.r.Context(), "cannot encode Zipkin spans as OTLP for forwarding", "err", err)
			otlp = nil
		}
	}
	if _, rerr := h.core.export(req.r.Context(), transportZipkin, decodedRequest{td: td}, otlp, false); rerr != nil {
		h.fail(req, rerr)
		return
	}
	// What Zipkin's own server answers: no body.
	req.w.Header().Set("Content-Length", "0")
	req.w.WriteHeader(http.StatusAccepted)
}

// Bytes that decoding one Zipkin item allocates, on top of the request's own
// bytes (counted once more, for the strings): a span is charged its
// zipkin-go model, the translator's copy of its tags map, and a pdata span
// with a resource and a scope of its own (a request whose spans all name
// different services gets one of each per span); a tag, its entry in both
// maps and its pdata attribute; an annotation, its model and pdata event.
// Measured with runtime.MemStats.TotalAlloc (TestZipkinDecodeCostsBoundAllocations,
// 2026-12): about 1300 bytes per empty span, 330 per tag and 510 per
// annotation; the constants leave room above that.
const (
	zipkinSpanCost       = 2048
	zipkinTagCost        = 512
	zipkinAnnotationCost = 768
)

// zipkinCounts is what a scan found in a Zipkin request.
type zipkinCounts struct {
	spans, annotations, tags int
}

func (c zipkinCounts) decodedSize(encoded int) int64 {
	return 2*int64(encoded) + int64(c.spans)*zipkinSpanCost + int64(c.tags)*zipkinTagCost + int64(c.annotations)*zipkinAnnotationCost
}

// check returns the error of the first limit c exceeds, or nil. Tags are
// counted against the attribute limit, annotations against the event one.
func (c zipkinCounts) check(l decodeLimits) *requestError {
	switch {
	case c.spans > l.spans:
		return limitExceeded("spans", l.spans, "otlp.max_spans_per_request")
	case c.annotations > l.events:
		return limitExceeded("annotations", l.events, "otlp.max_events_per_request")
	case c.tags > l.attrs:
		return limitExceeded("tags", l.attrs, "otlp.max_attributes_per_request")
	}
	return nil
}

// decodeZipkin scans a Zipkin v2 request (JSON if json, else protobuf
// ListOfSpans) against the per-request limits, reserves an estimate from
// above of what decoding it allocates, and translates it to pdata. The
// caller releases the returned reservation once it is done with td, also on
// error.
func (c *tracesCore) decodeZipkin(buf []byte, json bool) (td ptrace.Traces, reserved int64, _ *requestError) {
	var counts zipkinCounts
	var rerr *requestError
	if json {
		counts, rerr = scanZipkinJSON(buf, c.limits)
	} else {
		counts, rerr = scanZipkinProto(buf, c.limits)
	}
	if rerr != nil {
		return td, 0, rerr
	}
	est := counts.decodedSize(len(buf))
	if rerr := c.reserve(est); rerr != nil {
		return td, 0, rerr
	}
	spans, err := parseZipkin(buf, json)
	if err != nil {
		return td, est, &requestError{reason: reasonDecodeError, err: fmt.Errorf("decode Zipkin request: %w", err)}
	}
	splitSharedSpans(spans)
	// Tags stay strings, as Zipkin sends them (the collector's default).
	td, err = zipkinv2.ToTranslator{}.ToTraces(spans)
	if err != nil {
		return td, est, &requestError{reason: reasonDecodeError, err: fmt.Errorf("translate Zipkin spans: %w", err)}
	}
	return td, est, nil
}

// parseZipkin decodes a Zipkin v2 list of spans, leaving out null ones.
func parseZipkin(buf []byte, isJSON bool) ([]*zipkinmodel.SpanModel, error) {
	var spans []*zipkinmodel.SpanModel
	var err error
	if isJSON {
		err = json.Unmarshal(buf, &spans)
	} else {
		// debugWasSet only forces the debug flag, which lagscope ignores.
		spans, err = zipkin_proto3.ParseSpans(buf, false)
	}
	if err != nil {
		return nil, err
	}
	kept := spans[:0]
	for _, s := range spans {
		if s != nil {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// splitSharedSpans gives the server side of each shared span (Zipkin's
// B3 "join": client and server report the same span id) an id of its own
// and the client span as its parent, and moves to it the spans of the same
// request and local service whose parent is the shared id. Children sent in
// another request keep the client span as their parent.
func splitSharedSpans(spans []*zipkinmodel.SpanModel) {
	type key struct {
		trace zipkinmodel.TraceID
		id    zipkinmodel.ID
	}
	var moved map[key]map[string]zipkinmodel.ID // shared id -> local service -> new id
	for _, s := range spans {
		if !s.Shared || s.ID == 0 {
			continue
		}
		if moved == nil {
			moved = make(map[key]map[string]zipkinmodel.ID)
		}
		orig := s.ID
		s.ID = sharedSpanID(s.TraceID, orig)
		s.ParentID = &orig
		k := key{s.TraceID, orig}
		if moved[k] == nil {
			moved[k] = make(map[string]zipkinmodel.ID, 1)
		}
		moved[k][localService(s)] = s.ID
	}
	if moved == nil {
		return
	}
	for _, s := range spans {
		if s.ParentID == nil || s.Shared {
			continue
		}
		if ids, ok := moved[key{s.TraceID, *s.ParentID}]; ok {
			if id, ok := ids[localService(s)]; ok && id != s.ID {
				s.ParentID = &id
			}
		}
	}
}

func localService(s *zipkinmodel.SpanModel) string {
	if s.LocalEndpoint == nil {
		return ""
	}
	return s.LocalEndpoint.ServiceName
}

// sharedSpanID derives the id of the server side of shared span id: a
// function of the ids (splitmix64's finalizer over their mix), so that the
// same span sent twice is still a copy of itself, never 0 or id itself.
func sharedSpanID(trace zipkinmodel.TraceID, id zipkinmodel.ID) zipkinmodel.ID {
	x := uint64(id) ^ trace.Low ^ (trace.High * 0x9e3779b97f4a7c15) ^ 0x5a17_ed5e_4e55_a1de
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	if x == 0 || x == uint64(id) {
		x = ^uint64(id)
	}
	return zipkinmodel.ID(x)
}

// Field numbers of zipkin.proto (proto3), the messages scanZipkinProto
// reads.
const (
	listOfSpansSpans protowire.Number = 1  // ListOfSpans.spans: repeated Span
	zSpanAnnotations protowire.Number = 10 // Span.annotations: repeated Annotation
	zSpanTags        protowire.Number = 11 // Span.tags: map<string, string>
)

// scanZipkinProto counts the spans, annotations and tags of a protobuf
// ListOfSpans and refuses it as too large past a limit. It stops without
// error at the first malformed field: decoding refuses the request there.
func scanZipkinProto(b []byte, l decodeLimits) (zipkinCounts, *requestError) {
	var c zipkinCounts
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return c, nil
		}
		b = b[n:]
		if num != listOfSpansSpans || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return c, nil
			}
			b = b[n:]
			continue
		}
		span, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return c, nil
		}
		b = b[n:]
		c.spans++
		for len(span) > 0 {
			num, typ, n := protowire.ConsumeTag(span)
			if n < 0 {
				break
			}
			span = span[n:]
			if n = protowire.ConsumeFieldValue(num, typ, span); n < 0 {
				break
			}
			span = span[n:]
			if typ == protowire.BytesType {
				switch num {
				case zSpanAnnotations:
					c.annotations++
				case zSpanTags:
					c.tags++
				}
			}
		}
		if err := c.check(l); err != nil {
			return c, err
		}
	}
	return c, nil
}

// zipkinJSONLevel is one open array or object of scanZipkinJSON.
type zipkinJSONLevel struct {
	array  bool
	counts *int // the count each element (array) or member (object) adds to, or nil
	expect bool // an array's next value is a new element
}

// scanZipkinJSON counts the spans (elements of the top-level array),
// annotations (elements of arrays keyed "annotations") and tags (members of
// objects keyed "tags") of a Zipkin v2 JSON request, and measures its
// nesting, refusing it as too large past a limit. Keys are matched at any
// depth: counting too much is safe. It does not validate the JSON (the
// decoder does) and does not allocate beyond its stack.
func scanZipkinJSON(b []byte, l decodeLimits) (zipkinCounts, *requestError) {
	var c zipkinCounts
	stack := make([]zipkinJSONLevel, 0, 8)
	var last []byte // the last string read: the key of a value that follows
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch ch {
		case ' ', '\t', '\n', '\r':
			continue
		case ':':
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].counts != nil {
				*stack[n-1].counts++ // one colon per member
				if err := c.check(l); err != nil {
					return c, err
				}
			}
			continue
		case ',':
			if n := len(stack); n > 0 && stack[n-1].array {
				stack[n-1].expect = true
			}
			continue
		case ']', '}':
			if n := len(stack); n > 0 {
				stack = stack[:n-1]
			}
			continue
		}
		// A value, or a key, starts at i.
		if n := len(stack); n > 0 && stack[n-1].array && stack[n-1].expect {
			stack[n-1].expect = false
			if stack[n-1].counts != nil {
				*stack[n-1].counts++
				if err := c.check(l); err != nil {
					return c, err
				}
			}
		}
		switch ch {
		case '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(b) {
				return c, nil // unterminated: the decoder refuses it
			}
			last = b[i+1 : j]
			i = j
		case '[', '{':
			if len(stack) >= l.depth {
				return c, tooDeep(l.depth)
			}
			lv := zipkinJSONLevel{array: ch == '['}
			switch {
			case len(stack) == 0 && lv.array:
				lv.counts = &c.spans
			case lv.array && string(last) == "annotations":
				lv.counts = &c.annotations
			case !lv.array && string(last) == "tags":
				lv.counts = &c.tags
			}
			lv.expect = lv.array
			stack = append(stack, lv)
			last = nil
		}
	}
	return c, nil
}
