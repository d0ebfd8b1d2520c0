package command

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/sqlite"
	"github.com/lagscope/lagscope/orders/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), sqlite.Memory)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newRecorder() (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	rec := tracetest.NewSpanRecorder()
	return rec, sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
}

var validCreate = orders.CreateOrder{CustomerID: "cust-1", Items: []orders.Item{{SKU: "a", Price: 250, Quantity: 4}}}

func TestLifecycle(t *testing.T) {
	type step struct {
		do      func(h *Handler, id string) (Result, error)
		want    int64
		wantErr error
	}
	pay := func(h *Handler, id string) (Result, error) {
		return h.Pay(context.Background(), id, orders.PayOrder{Method: "card"})
	}
	ship := func(h *Handler, id string) (Result, error) {
		return h.Ship(context.Background(), id, orders.ShipOrder{TrackingNumber: "T-1"})
	}
	cancel := func(h *Handler, id string) (Result, error) {
		return h.Cancel(context.Background(), id, orders.CancelOrder{Reason: "r"})
	}
	unknown := func(f func(*Handler, string) (Result, error)) func(*Handler, string) (Result, error) {
		return func(h *Handler, _ string) (Result, error) { return f(h, "missing") }
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "pay then ship", steps: []step{{do: pay, want: 2}, {do: ship, want: 3}, {do: cancel, wantErr: orders.ErrAlreadyShipped}}},
		{name: "ship unpaid", steps: []step{{do: ship, wantErr: orders.ErrNotPaid}, {do: pay, want: 2}}},
		{name: "cancel then pay", steps: []step{{do: cancel, want: 2}, {do: pay, wantErr: orders.ErrOrderCancelled}}},
		{name: "pay twice", steps: []step{{do: pay, want: 2}, {do: pay, wantErr: orders.ErrAlreadyPaid}}},
		{name: "unknown order", steps: []step{{do: unknown(pay), wantErr: orders.ErrNotFound}, {do: unknown(ship), wantErr: orders.ErrNotFound}, {do: unknown(cancel), wantErr: orders.ErrNotFound}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(newStore(t), trace.NewNoopTracerProvider(), DefaultConfig())
			created, err := h.Create(context.Background(), validCreate)
			if err != nil {
				t.Fatalf("Create() error = %v", err)
			}
			if created.Version != 1 || created.ID == "" {
				t.Fatalf("Create() = %+v, want version 1 and an id", created)
			}
			for i, s := range tt.steps {
				got, err := s.do(h, created.ID)
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d error = %v, want %v", i, err, s.wantErr)
				}
				if s.wantErr == nil && got.Version != s.want {
					t.Errorf("step %d version = %d, want %d", i, got.Version, s.want)
				}
			}
		})
	}
}

func TestCreateInvalid(t *testing.T) {
	h := New(newStore(t), trace.NewNoopTracerProvider(), DefaultConfig())
	_, err := h.Create(context.Background(), orders.CreateOrder{CustomerID: "bob", Items: validCreate.Items})
	var ie *orders.InvalidError
	if !errors.As(err, &ie) || ie.Field != "customer_id" {
		t.Errorf("Create(bad customer) error = %v, want *InvalidError on customer_id", err)
	}
}

// conflictingStore fails the first n Appends with ErrVersionConflict.
type conflictingStore struct {
	orders.Store
	n atomic.Int64
}

func (s *conflictingStore) Append(ctx context.Context, id string, v int64, evs []orders.Event) ([]orders.Event, error) {
	if s.n.Add(-1) >= 0 {
		return nil, orders.ErrVersionConflict
	}
	return s.Store.Append(ctx, id, v, evs)
}

func TestRetryOnConflict(t *testing.T) {
	tests := []struct {
		name      string
		conflicts int64
		wantErr   error
	}{
		{name: "no conflict", conflicts: 0},
		{name: "within retries", conflicts: 3},
		{name: "retries exhausted", conflicts: 4, wantErr: orders.ErrVersionConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &conflictingStore{Store: newStore(t)}
			h := New(store, trace.NewNoopTracerProvider(), Config{MaxRetries: 3})
			created, err := h.Create(context.Background(), validCreate)
			if err != nil {
				t.Fatal(err)
			}
			store.n.Store(tt.conflicts)
			got, err := h.Pay(context.Background(), created.ID, orders.PayOrder{Method: "card"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Pay() error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && got.Version != 2 {
				t.Errorf("Pay() version = %d, want 2", got.Version)
			}
		})
	}
}

func attrs(kvs []attribute.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func TestSpans(t *testing.T) {
	rec, tp := newRecorder()
	store := newStore(t)
	h := New(store, tp, DefaultConfig())
	ctx, parent := tp.Tracer("test").Start(context.Background(), "http")
	res, err := h.Create(ctx, validCreate)
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3 (append, command, parent)", len(spans))
	}
	appendSpan, cmdSpan := spans[0], spans[1]
	if cmdSpan.Name() != "CreateOrder" || cmdSpan.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("command span %q has parent %s, want CreateOrder under %s", cmdSpan.Name(), cmdSpan.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if appendSpan.Parent().SpanID() != cmdSpan.SpanContext().SpanID() {
		t.Errorf("append span parent = %s, want the command span %s", appendSpan.Parent().SpanID(), cmdSpan.SpanContext().SpanID())
	}
	evs, err := store.Load(context.Background(), res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(attrs(cmdSpan.Attributes()), map[string]any{"cqrs.operation": "command", "cqrs.command.name": "CreateOrder"}); diff != "" {
		t.Errorf("command span attributes (-got +want):\n%s", diff)
	}
	want := map[string]any{
		"cqrs.operation": "append", "cqrs.aggregate.type": "Order", "cqrs.aggregate.id": res.ID,
		"cqrs.event.id": evs[0].ID, "cqrs.event.type": "OrderCreated", "cqrs.aggregate.version": int64(1),
	}
	if diff := cmp.Diff(attrs(appendSpan.Attributes()), want); diff != "" {
		t.Errorf("append span attributes (-got +want):\n%s", diff)
	}
	remote := trace.SpanContextFromContext(telemetry.Extract(context.Background(), evs[0].Metadata))
	if remote.SpanID() != appendSpan.SpanContext().SpanID() || remote.TraceID() != appendSpan.SpanContext().TraceID() {
		t.Errorf("stored traceparent %q is not the append span %s", evs[0].Metadata["traceparent"], appendSpan.SpanContext().SpanID())
	}
}

func TestAppendSeveralEvents(t *testing.T) {
	rec, tp := newRecorder()
	h := New(newStore(t), tp, DefaultConfig())
	created, _ := orders.Create("o-1", validCreate)
	stored, err := h.append(context.Background(), "o-1", 0, []orders.Data{created, orders.OrderPaid{Method: "card", Amount: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("got %d spans, want 1", len(spans))
	}
	if diff := cmp.Diff(attrs(spans[0].Attributes()), map[string]any{
		"cqrs.operation": "append", "cqrs.aggregate.type": "Order", "cqrs.aggregate.id": "o-1",
	}); diff != "" {
		t.Errorf("append span attributes (-got +want):\n%s", diff)
	}
	var got []map[string]any
	for _, e := range spans[0].Events() {
		if e.Name != telemetry.EventName {
			t.Errorf("span event %q, want %q", e.Name, telemetry.EventName)
		}
		got = append(got, attrs(e.Attributes))
	}
	var want []map[string]any
	for _, e := range stored {
		want = append(want, map[string]any{
			"cqrs.event.id": e.ID, "cqrs.event.type": e.Type, "cqrs.aggregate.type": "Order",
			"cqrs.aggregate.id": "o-1", "cqrs.aggregate.version": e.Version,
		})
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("span events (-got +want):\n%s", diff)
	}
}

func TestFailedAppendNamesNoEvent(t *testing.T) {
	rec, tp := newRecorder()
	store := &conflictingStore{Store: newStore(t)}
	h := New(store, tp, Config{MaxRetries: 1})
	created, err := h.Create(context.Background(), validCreate)
	if err != nil {
		t.Fatal(err)
	}
	store.n.Store(1)
	if _, err := h.Pay(context.Background(), created.ID, orders.PayOrder{Method: "card"}); err != nil {
		t.Fatal(err)
	}
	var withEvent, appends int
	for _, s := range rec.Ended() {
		a := attrs(s.Attributes())
		if a["cqrs.operation"] == "append" {
			appends++
			if _, ok := a["cqrs.event.id"]; ok {
				withEvent++
			}
		}
	}
	if appends != 3 || withEvent != 2 {
		t.Errorf("got %d append spans, %d naming an event; want 3 and 2", appends, withEvent)
	}
}
