// Package httpapi is the HTTP edge of the order system: JSON commands that go
// to a command.Handler and queries that read orders.Views, each route traced
// by otelhttp with a command or query span inside the server span.
//
// Routes (Go 1.22 ServeMux patterns):
//
//	POST /orders              {"customer_id", "items": [{"sku", "price", "quantity"}]} -> 201 {"id", "version"}
//	POST /orders/{id}/pay     {"method"}          -> 200 {"id", "version"}
//	POST /orders/{id}/ship    {"tracking_number"} -> 200 {"id", "version"}
//	POST /orders/{id}/cancel  {"reason"}          -> 200 {"id", "version"}
//	GET  /orders/{id}                             -> 200 orders.OrderView (from orders_view)
//	GET  /orders?customer_id=cust-1[&limit=100]   -> 200 {"orders": [orders.OrderView]}
//	GET  /orders/summary                          -> 200 orders.Summary
//
// The edge is hostile: a body is at most MaxBodyBytes (413 past it) and must
// be UTF-8 JSON with no field the route does not know; path ids and
// customer ids are 1 to 64 letters, digits, '-' or '_'; text fields are at
// most MaxTextBytes without control characters. These checks come first, so
// that nothing else reaches spans, logs or the store whatever the order's
// state; the order package then applies its own rules (formats, ranges,
// enumerations) to commands, also answered with 400 naming the field.
//
// Errors are JSON {"error": "...", "field": "..."} with status 400 for bad
// input (field names the offending JSON field), 413 for a body too large,
// 404 for an unknown order, 409
// for a command the order's state does not allow (business invariant) or a
// version conflict that outlived the retries, and 500 otherwise. We chose 409
// over 422 for invariants: the request is well formed but conflicts with the
// resource's current state.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/command"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// MaxBodyBytes bounds a request body: the largest command, an order of
// orders.MaxItems items, takes under 10 KiB.
const MaxBodyBytes = 64 << 10

// MaxTextBytes bounds every text field of a command (sku, method,
// tracking_number, reason) at the edge; the order package has tighter
// limits of its own for some.
const MaxTextBytes = 256

// Config configures a Server.
type Config struct {
	// Commands serves the command routes; nil leaves them out (query role).
	Commands *command.Handler
	// Views serves the query routes; nil leaves them out (command role).
	Views orders.Views
	// TracerProvider traces requests. Default: a no-op provider.
	TracerProvider trace.TracerProvider
	// Logger logs internal errors. Default: discard.
	Logger *slog.Logger
}

// Server is the HTTP API. It is safe for concurrent use.
type Server struct {
	mux    *http.ServeMux
	cmds   *command.Handler
	views  orders.Views
	tp     trace.TracerProvider
	tracer trace.Tracer
	logger *slog.Logger
}

// New returns a Server with the routes that cfg has handlers for.
func New(cfg Config) *Server {
	s := &Server{
		mux:    http.NewServeMux(),
		cmds:   cfg.Commands,
		views:  cfg.Views,
		tp:     cfg.TracerProvider,
		logger: cfg.Logger,
	}
	if s.tp == nil {
		s.tp = noop.NewTracerProvider()
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.tracer = s.tp.Tracer(telemetry.ScopeName)
	if s.cmds != nil {
		s.handle("POST /orders", s.createOrder)
		s.handle("POST /orders/{id}/pay", s.payOrder)
		s.handle("POST /orders/{id}/ship", s.shipOrder)
		s.handle("POST /orders/{id}/cancel", s.cancelOrder)
	}
	if s.views != nil {
		s.handle("GET /orders/{id}", s.getOrder)
		s.handle("GET /orders", s.listOrders)
		s.handle("GET /orders/summary", s.getSummary)
	}
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// handle registers fn under pattern inside an otelhttp server span named
// after the pattern.
func (s *Server) handle(pattern string, fn func(http.ResponseWriter, *http.Request) error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			s.writeError(w, err)
		}
	})
	s.mux.Handle(pattern, otelhttp.NewHandler(h, pattern,
		otelhttp.WithTracerProvider(s.tp),
		otelhttp.WithPropagators(telemetry.Propagator),
	))
}

type itemJSON struct {
	SKU      string `json:"sku"`
	Price    int64  `json:"price"`
	Quantity int64  `json:"quantity"`
}

type createRequest struct {
	CustomerID string     `json:"customer_id"`
	Items      []itemJSON `json:"items"`
}

func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkID("customer_id", req.CustomerID); err != nil {
		return err
	}
	items := make([]orders.Item, len(req.Items))
	for i, it := range req.Items {
		if err := checkText(fmt.Sprintf("items[%d].sku", i), it.SKU); err != nil {
			return err
		}
		items[i] = orders.Item(it)
	}
	res, err := s.cmds.Create(r.Context(), orders.CreateOrder{CustomerID: req.CustomerID, Items: items})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}

func (s *Server) payOrder(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Method string `json:"method"`
	}
	id := r.PathValue("id")
	if err := checkID("id", id); err != nil {
		return err
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("method", req.Method); err != nil {
		return err
	}
	return s.result(w)(s.cmds.Pay(r.Context(), id, orders.PayOrder{Method: req.Method}))
}

func (s *Server) shipOrder(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		TrackingNumber string `json:"tracking_number"`
	}
	id := r.PathValue("id")
	if err := checkID("id", id); err != nil {
		return err
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("tracking_number", req.TrackingNumber); err != nil {
		return err
	}
	return s.result(w)(s.cmds.Ship(r.Context(), id, orders.ShipOrder{TrackingNumber: req.TrackingNumber}))
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Reason string `json:"reason"`
	}
	id := r.PathValue("id")
	if err := checkID("id", id); err != nil {
		return err
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("reason", req.Reason); err != nil {
		return err
	}
	return s.result(w)(s.cmds.Cancel(r.Context(), id, orders.CancelOrder{Reason: req.Reason}))
}

func (s *Server) result(w http.ResponseWriter) func(command.Result, error) error {
	return func(res command.Result, err error) error {
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := checkID("id", id); err != nil {
		return err
	}
	return s.query(r.Context(), "GetOrder", func(ctx context.Context, span trace.Span) error {
		span.SetAttributes(telemetry.AggregateID.String(id))
		v, err := s.views.Order(ctx, id)
		if err != nil {
			return err
		}
		span.SetAttributes(telemetry.AggregateVersion.Int64(v.Version))
		writeJSON(w, http.StatusOK, v)
		return nil
	})
}

// MaxList bounds GET /orders?limit=; the default limit is 100.
const MaxList = 1000

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request) error {
	customer := r.URL.Query().Get("customer_id")
	if customer == "" {
		return &orders.InvalidError{Field: "customer_id", Err: orders.ErrInvalidCustomerID, Reason: "query parameter is required"}
	}
	if err := checkID("customer_id", customer); err != nil {
		return err
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxList {
			return &badRequest{field: "limit", msg: fmt.Sprintf("limit must be 1 to %d", MaxList)}
		}
		limit = n
	}
	return s.query(r.Context(), "ListOrders", func(ctx context.Context, _ trace.Span) error {
		list, err := s.views.OrdersByCustomer(ctx, customer, limit)
		if err != nil {
			return err
		}
		if list == nil {
			list = []orders.OrderView{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"orders": list})
		return nil
	})
}

func (s *Server) getSummary(w http.ResponseWriter, r *http.Request) error {
	return s.query(r.Context(), "GetSummary", func(ctx context.Context, _ trace.Span) error {
		sum, err := s.views.Summary(ctx)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, sum)
		return nil
	})
}

// query runs fn inside a query span.
func (s *Server) query(ctx context.Context, name string, fn func(context.Context, trace.Span) error) error {
	ctx, span := s.tracer.Start(ctx, name, trace.WithAttributes(
		telemetry.Operation.String(telemetry.OpQuery),
		telemetry.QueryName.String(name),
	))
	defer span.End()
	err := fn(ctx, span)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// badRequest is a request that could not be decoded.
type badRequest struct {
	field string
	msg   string
}

func (e *badRequest) Error() string { return e.msg }

// errTooLarge is a body past MaxBodyBytes.
var errTooLarge = fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)

// decode reads the JSON body into v: at most MaxBodyBytes, UTF-8 (which
// encoding/json would otherwise turn into U+FFFD silently), one value, with
// no field that v does not have.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > MaxBodyBytes {
		return errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errTooLarge
		}
		return &badRequest{msg: "cannot read body: " + err.Error()}
	}
	if !utf8.Valid(body) {
		return &badRequest{msg: "invalid JSON body: not UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &badRequest{field: te.Field, msg: fmt.Sprintf("%s must be a JSON %s", te.Field, te.Type)}
		}
		// encoding/json has no error type for an unknown field: its message
		// is the only place that names it.
		if name, ok := strings.CutPrefix(err.Error(), `json: unknown field `); ok {
			if field, uerr := strconv.Unquote(name); uerr == nil {
				return &badRequest{field: field, msg: fmt.Sprintf("unknown field %q", field)}
			}
		}
		return &badRequest{msg: "invalid JSON body: " + err.Error()}
	}
	if dec.More() {
		return &badRequest{msg: "invalid JSON body: trailing data"}
	}
	return nil
}

// idRE is what an order id or a customer id may be at the edge: the order
// package's ids (UUIDs, "cust-" and digits) and nothing that needs quoting.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkID refuses an id that is not 1 to 64 letters, digits, '-' or '_'.
func checkID(field, v string) error {
	if !idRE.MatchString(v) {
		return &badRequest{field: field, msg: field + " must be 1 to 64 letters, digits, '-' or '_'"}
	}
	return nil
}

// checkText refuses a text field longer than MaxTextBytes, not UTF-8, or
// holding control characters. An empty one is left to the order package,
// which knows which are required.
func checkText(field, v string) error {
	switch {
	case len(v) > MaxTextBytes:
		return &badRequest{field: field, msg: fmt.Sprintf("%s must be at most %d bytes", field, MaxTextBytes)}
	case !utf8.ValidString(v):
		return &badRequest{field: field, msg: field + " must be UTF-8"}
	case strings.ContainsFunc(v, unicode.IsControl):
		return &badRequest{field: field, msg: field + " must not hold control characters"}
	}
	return nil
}

type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// status maps an error to its HTTP status and body: the one place where
// domain errors become user-facing codes.
func status(err error) (int, errorBody) {
	var ie *orders.InvalidError
	var br *badRequest
	switch {
	case errors.As(err, &ie):
		return http.StatusBadRequest, errorBody{Error: ie.Error(), Field: ie.Field}
	case errors.As(err, &br):
		return http.StatusBadRequest, errorBody{Error: br.msg, Field: br.field}
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, errorBody{Error: err.Error()}
	case errors.Is(err, orders.ErrNotFound):
		return http.StatusNotFound, errorBody{Error: orders.ErrNotFound.Error()}
	case orders.IsInvariant(err), errors.Is(err, orders.ErrVersionConflict):
		return http.StatusConflict, errorBody{Error: err.Error()}
	default:
		return http.StatusInternalServerError, errorBody{Error: "internal error"}
	}
}

func (s *Server) writeError(w http.ResponseWriter, err error) {
	code, body := status(err)
	if code == http.StatusInternalServerError {
		s.logger.Error("request failed", "err", err)
	}
	writeJSON(w, code, body)
}

// writeJSON writes v with status code. A failed write means the client went
// away: there is no one to tell.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
