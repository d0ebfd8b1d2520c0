package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders/command"
	"github.com/lagscope/lagscope/orders/httpapi"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	srv *httptest.Server
	db  *sqlite.DB
	rec *tracetest.SpanRecorder
}

// newFixture serves the API over a real in-memory store with both
// projectors running.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cfg := projection.DefaultConfig()
	cfg.PollInterval = 10 * time.Millisecond
	runner, err := projection.New(cfg, db, db, tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(httpapi.Config{
		Commands:       command.New(db, tp, command.DefaultConfig()),
		Views:          db,
		TracerProvider: tp,
	}))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := runner.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	return &fixture{srv: srv, db: db, rec: rec}
}

func (f *fixture) do(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 && resp.StatusCode != http.StatusMethodNotAllowed {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, b, err)
		}
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusMethodNotAllowed && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, out
}

// create makes an order and waits until orders_view shows its version.
func (f *fixture) create(t *testing.T) string {
	t.Helper()
	code, body := f.do(t, "POST", "/orders", `{"customer_id":"cust-1","items":[{"sku":"a","price":500,"quantity":2}]}`)
	if code != http.StatusCreated {
		t.Fatalf("POST /orders = %d %v", code, body)
	}
	return body["id"].(string)
}

func (f *fixture) waitProjected(t *testing.T, id string, version float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := f.do(t, "GET", "/orders/"+id, "")
		if code == http.StatusOK && body["version"] == version {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s not at version %v in orders_view: %d %v", id, version, code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStatusCodes(t *testing.T) {
	f := newFixture(t)
	paidID := f.create(t)
	if code, _ := f.do(t, "POST", "/orders/"+paidID+"/pay", `{"method":"card"}`); code != http.StatusOK {
		t.Fatalf("pay = %d", code)
	}
	freshID := f.create(t)
	f.waitProjected(t, paidID, 2)

	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		wantCode int
		// wantBody holds the keys to compare; "error" is only checked for
		// presence (messages are not API).
		wantBody map[string]any
	}{
		{name: "create", method: "POST", path: "/orders", body: `{"customer_id":"cust-9","items":[{"sku":"x","price":1,"quantity":1}]}`, wantCode: 201, wantBody: map[string]any{"version": 1.0}},
		{name: "create bad customer", method: "POST", path: "/orders", body: `{"customer_id":"bob","items":[{"sku":"x","price":1,"quantity":1}]}`, wantCode: 400, wantBody: map[string]any{"field": "customer_id"}},
		{name: "create no items", method: "POST", path: "/orders", body: `{"customer_id":"cust-1","items":[]}`, wantCode: 400, wantBody: map[string]any{"field": "items"}},
		{name: "create zero quantity", method: "POST", path: "/orders", body: `{"customer_id":"cust-1","items":[{"sku":"x","price":1,"quantity":0}]}`, wantCode: 400, wantBody: map[string]any{"field": "items[0].quantity"}},
		{name: "create negative price", method: "POST", path: "/orders", body: `{"customer_id":"cust-1","items":[{"sku":"x","price":-1,"quantity":1}]}`, wantCode: 400, wantBody: map[string]any{"field": "items[0].price"}},
		{name: "create float price", method: "POST", path: "/orders", body: `{"customer_id":"cust-1","items":[{"sku":"x","price":1.5,"quantity":1}]}`, wantCode: 400, wantBody: map[string]any{"field": "items.price"}},
		{name: "create malformed JSON", method: "POST", path: "/orders", body: `{"customer_id":`, wantCode: 400, wantBody: map[string]any{}},
		{name: "create unknown field", method: "POST", path: "/orders", body: `{"customer":"cust-1"}`, wantCode: 400, wantBody: map[string]any{}},
		{name: "pay", method: "POST", path: "/orders/" + freshID + "/pay", body: `{"method":"paypal"}`, wantCode: 200, wantBody: map[string]any{"id": freshID, "version": 2.0}},
		{name: "pay again", method: "POST", path: "/orders/" + paidID + "/pay", body: `{"method":"card"}`, wantCode: 409, wantBody: map[string]any{}},
		{name: "pay bad method", method: "POST", path: "/orders/" + paidID + "/pay", body: `{"method":"gold"}`, wantCode: 400, wantBody: map[string]any{"field": "method"}},
		{name: "pay unknown order", method: "POST", path: "/orders/nope/pay", body: `{"method":"card"}`, wantCode: 404, wantBody: map[string]any{}},
		{name: "ship paid", method: "POST", path: "/orders/" + paidID + "/ship", body: `{"tracking_number":"TRK-1"}`, wantCode: 200, wantBody: map[string]any{"id": paidID, "version": 3.0}},
		{name: "cancel shipped", method: "POST", path: "/orders/" + paidID + "/cancel", body: `{"reason":"late"}`, wantCode: 409, wantBody: map[string]any{}},
		{name: "cancel without reason", method: "POST", path: "/orders/" + freshID + "/cancel", body: `{}`, wantCode: 400, wantBody: map[string]any{"field": "reason"}},
		{name: "ship bad tracking number", method: "POST", path: "/orders/" + freshID + "/ship", body: `{"tracking_number":"a b"}`, wantCode: 400, wantBody: map[string]any{"field": "tracking_number"}},
		{name: "cancel paid", method: "POST", path: "/orders/" + freshID + "/cancel", body: `{"reason":"changed mind"}`, wantCode: 200, wantBody: map[string]any{"version": 3.0}},
		{name: "get", method: "GET", path: "/orders/" + paidID, wantCode: 200, wantBody: map[string]any{"id": paidID, "customer_id": "cust-1", "total": 1000.0}},
		{name: "get unknown", method: "GET", path: "/orders/nope", wantCode: 404, wantBody: map[string]any{}},
		{name: "list without customer", method: "GET", path: "/orders", wantCode: 400, wantBody: map[string]any{"field": "customer_id"}},
		{name: "list bad limit", method: "GET", path: "/orders?customer_id=cust-1&limit=0", wantCode: 400, wantBody: map[string]any{"field": "limit"}},
		{name: "summary", method: "GET", path: "/orders/summary", wantCode: 200, wantBody: map[string]any{}},
		{name: "wrong method", method: "DELETE", path: "/orders/" + paidID, wantCode: 405, wantBody: map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := f.do(t, tt.method, tt.path, tt.body)
			if code != tt.wantCode {
				t.Fatalf("%s %s = %d %v, want %d", tt.method, tt.path, code, body, tt.wantCode)
			}
			got := map[string]any{}
			for k := range tt.wantBody {
				got[k] = body[k]
			}
			if diff := cmp.Diff(got, tt.wantBody); diff != "" {
				t.Errorf("body mismatch (-got +want):\n%s", diff)
			}
			if code >= 400 && code != 405 {
				if msg, _ := body["error"].(string); msg == "" {
					t.Errorf("error body %v has no error message", body)
				}
			}
		})
	}
}

func TestList(t *testing.T) {
	f := newFixture(t)
	a, b := f.create(t), f.create(t)
	f.waitProjected(t, a, 1)
	f.waitProjected(t, b, 1)
	code, body := f.do(t, "GET", "/orders?customer_id=cust-1", "")
	if code != 200 {
		t.Fatalf("list = %d %v", code, body)
	}
	if n := len(body["orders"].([]any)); n != 2 {
		t.Errorf("list returned %d orders, want 2", n)
	}
	code, body = f.do(t, "GET", "/orders?customer_id=cust-2", "")
	if code != 200 || len(body["orders"].([]any)) != 0 {
		t.Errorf("list of a customer without orders = %d %v, want an empty list", code, body)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes() {
		if strings.HasPrefix(string(kv.Key), "cqrs.") {
			m[string(kv.Key)] = kv.Value.AsInterface()
		}
	}
	return m
}

func TestSpans(t *testing.T) {
	f := newFixture(t)
	id := f.create(t)
	f.do(t, "POST", "/orders/"+id+"/pay", `{"method":"card"}`)
	f.waitProjected(t, id, 2)
	// Wait until both projections ended their spans for both events: a
	// project span ends just after its commit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, s := range f.rec.Ended() {
			if strings.HasPrefix(s.Name(), "project ") {
				n++
			}
		}
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d project spans ended, want 4", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	evs, err := f.db.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}

	spans := f.rec.Ended()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
	}
	find := func(name string, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
		t.Helper()
		for _, s := range f.rec.Ended() {
			if s.Name() == name && match(s) {
				return s
			}
		}
		t.Fatalf("no span %q", name)
		return nil
	}
	anySpan := func(sdktrace.ReadOnlySpan) bool { return true }
	version := func(v int64) func(sdktrace.ReadOnlySpan) bool {
		return func(s sdktrace.ReadOnlySpan) bool { return attrs(s)["cqrs.aggregate.version"] == v }
	}

	server := find("POST /orders", anySpan)
	cmdSpan := find("CreateOrder", anySpan)
	appendSpan := find("append Order", version(1))
	if cmdSpan.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("CreateOrder parent is %v, want the HTTP server span", byID[cmdSpan.Parent().SpanID()])
	}
	if appendSpan.Parent().SpanID() != cmdSpan.SpanContext().SpanID() {
		t.Errorf("append parent is not the CreateOrder span")
	}
	if diff := cmp.Diff(attrs(cmdSpan), map[string]any{"cqrs.operation": "command", "cqrs.command.name": "CreateOrder"}); diff != "" {
		t.Errorf("command span (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(attrs(appendSpan), map[string]any{
		"cqrs.operation": "append", "cqrs.aggregate.type": "Order", "cqrs.aggregate.id": id,
		"cqrs.event.id": evs[0].ID, "cqrs.event.type": "OrderCreated", "cqrs.aggregate.version": int64(1),
	}); diff != "" {
		t.Errorf("append span (-got +want):\n%s", diff)
	}

	payCmd := find("PayOrder", anySpan)
	payAppend := find("append Order", version(2))
	if payCmd.Parent().SpanID() != find("POST /orders/{id}/pay", anySpan).SpanContext().SpanID() || payAppend.Parent().SpanID() != payCmd.SpanContext().SpanID() {
		t.Errorf("PayOrder spans are not server -> command -> append")
	}

	for _, name := range projection.Names {
		for _, ap := range []sdktrace.ReadOnlySpan{appendSpan, payAppend} {
			v := attrs(ap)["cqrs.aggregate.version"].(int64)
			p := find("project "+name, version(v))
			if p.Parent().SpanID() != ap.SpanContext().SpanID() || p.SpanContext().TraceID() != ap.SpanContext().TraceID() {
				t.Errorf("project %s v%d parent %s, want the append span %s", name, v, p.Parent().SpanID(), ap.SpanContext().SpanID())
			}
			ev := evs[v-1]
			if diff := cmp.Diff(attrs(p), map[string]any{
				"cqrs.operation": "project", "cqrs.projection": name, "cqrs.event.id": ev.ID,
				"cqrs.event.type": ev.Type, "cqrs.aggregate.id": id, "cqrs.aggregate.version": v,
			}); diff != "" {
				t.Errorf("project %s v%d (-got +want):\n%s", name, v, diff)
			}
			// The commit happens inside the append span, and a woken projector
			// may finish before the append span ends: only the start order is
			// certain.
			if p.StartTime().Before(ap.StartTime()) {
				t.Errorf("project %s v%d started before its append span", name, v)
			}
		}
	}

	// The last GET (waitProjected) saw version 2.
	var get sdktrace.ReadOnlySpan
	for _, s := range f.rec.Ended() {
		if s.Name() == "GetOrder" {
			get = s
		}
	}
	if get == nil {
		t.Fatal("no GetOrder span")
	}
	if diff := cmp.Diff(attrs(get), map[string]any{
		"cqrs.operation": "query", "cqrs.query.name": "GetOrder", "cqrs.aggregate.id": id, "cqrs.aggregate.version": int64(2),
	}); diff != "" {
		t.Errorf("GetOrder span (-got +want):\n%s", diff)
	}
	if byID[get.Parent().SpanID()] == nil || byID[get.Parent().SpanID()].Name() != "GET /orders/{id}" {
		t.Errorf("GetOrder parent is not the HTTP server span")
	}

	f.do(t, "GET", "/orders/summary", "")
	f.do(t, "GET", "/orders?customer_id=cust-1", "")
	for _, name := range []string{"GetSummary", "ListOrders"} {
		s := find(name, anySpan)
		if diff := cmp.Diff(attrs(s), map[string]any{"cqrs.operation": "query", "cqrs.query.name": name}); diff != "" {
			t.Errorf("%s span (-got +want):\n%s", name, diff)
		}
	}
}
