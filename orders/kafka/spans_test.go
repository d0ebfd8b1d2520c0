package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders"
	okafka "github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// TestSpans: the relay's send span (PRODUCER) is a child of the context
// in the event's metadata and carries the messaging attributes and the
// append span's cqrs.* ones; the project span is the process span
// (CONSUMER), a child of the send span through the message's headers,
// with the consumer group; one of each per event.
func TestSpans(t *testing.T) {
	cfg := newCluster(t)
	db := openDB(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	// One event whose metadata holds an "append span" context.
	ctx, appendSpan := tp.Tracer("test").Start(context.Background(), "append")
	e, err := orders.NewEvent("order-1", 1, orders.OrderCreated{CustomerID: "c", Items: []orders.Item{{SKU: "a", Price: 5, Quantity: 1}}, Total: 5}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	telemetry.Inject(ctx, e.Metadata)
	if _, err := db.Append(context.Background(), "order-1", 0, []orders.Event{e}); err != nil {
		t.Fatal(err)
	}
	appendSpan.End()

	relay, err := okafka.NewRelay(cfg, db, db, tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, relay)
	feed, err := okafka.NewFeed(cfg, projection.OrdersView, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	pc := projection.DefaultConfig()
	pc.Projections = []string{projection.OrdersView}
	pc.Feeds = map[string]projection.Feed{projection.OrdersView: feed}
	r, err := projection.New(pc, db, db, tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, r)

	var send, project sdktrace.ReadOnlySpan
	waitFor(t, "a send and a project span", func() (bool, string) {
		send, project = nil, nil
		n := 0
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case trace.SpanKindProducer:
				send = s
				n++
			case trace.SpanKindConsumer:
				project = s
				n++
			}
		}
		return send != nil && project != nil, fmt.Sprintf("%d spans", n)
	})
	if got, want := send.Parent().SpanID(), appendSpan.SpanContext().SpanID(); got != want {
		t.Errorf("send span's parent = %s, want the append span %s", got, want)
	}
	if got, want := project.Parent().SpanID(), send.SpanContext().SpanID(); got != want {
		t.Errorf("project span's parent = %s, want the send span %s", got, want)
	}
	if got, want := project.SpanContext().TraceID(), appendSpan.SpanContext().TraceID(); got != want {
		t.Errorf("project span's trace = %s, want the append's %s", got, want)
	}
	if got, want := send.Name(), "send orders.events"; got != want {
		t.Errorf("send span name = %q, want %q", got, want)
	}
	if got, want := project.Name(), "project orders_view"; got != want {
		t.Errorf("project span name = %q, want %q", got, want)
	}
	wantSend := map[attribute.Key]string{
		"messaging.system": "kafka", "messaging.destination.name": "orders.events",
		"messaging.operation.type": "send", "messaging.operation.name": "send",
		"messaging.message.id": e.ID, "messaging.kafka.message.key": "order-1",
		"cqrs.event.id": e.ID, "cqrs.event.type": "OrderCreated", "cqrs.aggregate.type": "Order",
		"cqrs.aggregate.id": "order-1", "cqrs.aggregate.version": "1",
	}
	if diff := cmp.Diff(attrs(send), wantSend); diff != "" {
		t.Errorf("send span attributes (-got +want):\n%s", diff)
	}
	wantProject := map[attribute.Key]string{
		"messaging.system": "kafka", "messaging.destination.name": "orders.events",
		"messaging.operation.type": "process", "messaging.operation.name": "process",
		"messaging.consumer.group.name": "orders_view",
		"messaging.message.id":          e.ID, "messaging.kafka.message.key": "order-1",
		"messaging.destination.partition.id": "0", "messaging.kafka.offset": "0",
		"cqrs.operation": "project", "cqrs.projection": "orders_view",
		"cqrs.event.id": e.ID, "cqrs.event.type": "OrderCreated",
		"cqrs.aggregate.id": "order-1", "cqrs.aggregate.version": "1",
	}
	if diff := cmp.Diff(attrs(project), wantProject); diff != "" {
		t.Errorf("project span attributes (-got +want):\n%s", diff)
	}
	var sends, projects int
	for _, s := range rec.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindProducer:
			sends++
		case trace.SpanKindConsumer:
			projects++
		}
	}
	if sends != 1 || projects != 1 {
		t.Errorf("%d send and %d project spans, want one of each", sends, projects)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.Emit()
	}
	return m
}

// TestMessageCarriesB3: with OTEL_PROPAGATORS=b3multi the relay's message
// carries the x-b3-* headers and a consumer reads them back.
func TestMessageCarriesB3(t *testing.T) {
	t.Setenv(telemetry.EnvPropagators, "b3multi")
	if err := telemetry.UsePropagatorsFromEnv(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = telemetry.UsePropagatorsFromEnv() })
	tc := map[string]string{"x-b3-traceid": "0102030405060708090a0b0c0d0e0f10", "x-b3-spanid": "0102030405060708", "x-b3-sampled": "1"}
	m, err := okafka.Message(orders.Event{ID: "e1", AggregateID: "o1", Position: 1, Metadata: map[string]string{"traceparent": "00-0102030405060708090a0b0c0d0e0f10-1112131415161718-01"}}, tc)
	if err != nil {
		t.Fatal(err)
	}
	e, err := okafka.Event(m)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tc, e.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
}
