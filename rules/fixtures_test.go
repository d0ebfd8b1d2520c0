package rules

import (
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

const (
	serverKind = ptrace.SpanKindServer
	client     = ptrace.SpanKindClient
	producer   = ptrace.SpanKindProducer
	consumer   = ptrace.SpanKindConsumer
	internal   = ptrace.SpanKindInternal
)

// handInstrumented is issue 12's shape: three orders, projected by
// query-service (all three) and billing (orders 1 and 2: order 3 is
// unprojected), plus a cache invalidation sent PRODUCER -> CONSUMER that is
// no event: lagscope's conventions count it (every PRODUCER is an append,
// every CONSUMER a projection); the profile's strict rules ignore it.
func handInstrumented() fixture {
	otel := map[string]any{"telemetry.sdk.language": "go", "telemetry.sdk.name": "opentelemetry"}
	f := fixture{tag: 0x21}
	// start: command start (ms); lags: process_event end - command start,
	// query-service then billing (0: billing never shows it).
	orders := []struct {
		start       float64
		query, bill float64
	}{{0, 45, 150}, {100, 80, 210}, {200, 60, 0}}
	for i, o := range orders {
		tr := uint16(i + 1)
		id := fmt.Sprintf("6f1c2a4e-0000-4000-8000-00000000000%d", i+1)
		agg := fmt.Sprintf("order-%d", 1001+i)
		s := o.start
		f.spans = append(f.spans,
			span{svc: "command-service", res: otel, scope: "command-service", name: "handle_create_order", kind: serverKind, trace: tr, id: 1,
				start: s, end: s + 30, attrs: map[string]any{"command.type": "CreateOrder", "order.customer_id": "c-42"}},
			span{svc: "command-service", res: otel, scope: "command-service", name: "validate_command", kind: internal, trace: tr, id: 2, parent: 1,
				start: s + 1, end: s + 4},
			span{svc: "command-service", res: otel, scope: "command-service", name: "create_aggregate", kind: internal, trace: tr, id: 3, parent: 1,
				start: s + 5, end: s + 15, attrs: map[string]any{"order.id": agg, "order.total": 4990}},
			span{svc: "command-service", res: otel, scope: "command-service", name: "store_event", kind: producer, trace: tr, id: 4, parent: 1,
				start: s + 16, end: s + 25, attrs: map[string]any{"event.type": "OrderCreated", "event.id": id}},
			span{svc: "query-service", res: otel, scope: "query-service", name: "process_event", kind: consumer, trace: tr, id: 5, parent: 4,
				start: s + o.query - 10, end: s + o.query, attrs: map[string]any{"event.type": "OrderCreated", "event.aggregate_id": agg}},
			span{svc: "query-service", res: otel, scope: "query-service", name: "project_read_model", kind: internal, trace: tr, id: 6, parent: 5,
				start: s + o.query - 8, end: s + o.query - 1},
		)
		if o.bill != 0 {
			f.spans = append(f.spans, span{svc: "billing", res: otel, scope: "billing", name: "process_event", kind: consumer, trace: tr, id: 7, parent: 4,
				start: s + o.bill - 20, end: s + o.bill, attrs: map[string]any{"event.type": "OrderCreated", "event.aggregate_id": agg}})
		}
	}
	f.spans = append(f.spans,
		span{svc: "command-service", res: otel, scope: "cache", name: "publish_invalidation", kind: producer, trace: 9, id: 1,
			start: 300, end: 302, attrs: map[string]any{"cache.key": "customers/c-42"}},
		span{svc: "query-service", res: otel, scope: "cache", name: "cache_invalidate", kind: consumer, trace: 9, id: 2, parent: 1,
			start: 305, end: 306, attrs: map[string]any{"cache.key": "customers/c-42"}},
	)
	return f
}

// kurrentDB: order-api (KurrentDB.Client, db.system=kurrent) appends one
// event per streams.append; orders-projector (a catch-up subscription, the
// same client) shows all three, sales-projector (an older EventStore.Client,
// db.eventstoredb.*, a persistent subscription) orders 1 and 2,
// shipping-projector (Python's kurrentdbclient, db.kurrentdb.*) all three. The
// subscribe spans are children of the append span (the $traceId/$spanId
// the client wrote into the event's metadata) in the writer's trace.
func kurrentDB() fixture {
	dotnet := map[string]any{"telemetry.sdk.language": "dotnet", "telemetry.sdk.name": "opentelemetry"}
	python := map[string]any{"telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry"}
	f := fixture{tag: 0x22}
	orders := []struct {
		start              float64
		orders, sale, ship float64 // subscribe span time - append start
	}{{0, 30, 120, 25}, {100, 55, 90, 35}, {200, 40, 0, 45}}
	for i, o := range orders {
		tr := uint16(i + 1)
		stream := fmt.Sprintf("order-%d", 2001+i)
		eventID := fmt.Sprintf("0b7c3f0e-0000-4000-8000-00000000000%d", i+1)
		s := o.start
		f.spans = append(f.spans,
			span{svc: "order-api", res: dotnet, scope: "Microsoft.AspNetCore", name: "POST /orders", kind: serverKind, trace: tr, id: 1,
				start: s, end: s + 20, attrs: map[string]any{"http.request.method": "POST", "http.route": "/orders", "http.response.status_code": 201}},
			span{svc: "order-api", res: dotnet, scope: "kurrent", name: "streams.append", kind: client, trace: tr, id: 2, parent: 1,
				start: s + 5, end: s + 15, attrs: map[string]any{
					"db.system": "kurrent", "db.operation": "streams.append", "db.kurrent.stream": stream,
					"server.address": "kurrentdb.internal", "server.port": 2113, "db.user": "admin"}},
			span{svc: "orders-projector", res: dotnet, scope: "kurrent", name: "streams.subscribe", kind: consumer, trace: tr, id: 3, parent: 2,
				start: s + 5 + o.orders, end: s + 5 + o.orders, attrs: map[string]any{
					"db.system": "kurrent", "db.operation": "streams.subscribe", "db.kurrent.stream": stream,
					"db.kurrent.subscription.id": "2f9a61d4-5c1e-4b7a-9d0e-8a3b1c2d4e5f",
					"db.kurrent.event.id":        eventID, "db.kurrent.event.type": "OrderPlaced",
					"server.address": "kurrentdb.internal", "server.port": 2113, "db.user": "admin"}},
		)
		f.spans = append(f.spans, span{svc: "shipping-projector", res: python, scope: "kurrentdbclient", name: "streams.subscribe", kind: consumer, trace: tr, id: 5, parent: 2,
			start: s + 5 + o.ship, end: s + 5 + o.ship, attrs: map[string]any{
				"db.system": "kurrentdb", "db.operation": "streams.subscribe", "db.kurrentdb.stream": stream,
				"db.kurrentdb.subscription.id": "shipping", "db.kurrentdb.event.id": eventID, "db.kurrentdb.event.type": "OrderPlaced",
				"server.address": "kurrentdb.internal", "server.port": 2113}})
		if o.sale != 0 {
			f.spans = append(f.spans, span{svc: "sales-projector", res: dotnet, scope: "eventstoredb", name: "streams.subscribe", kind: consumer, trace: tr, id: 4, parent: 2,
				start: s + 5 + o.sale, end: s + 5 + o.sale, attrs: map[string]any{
					"db.system": "eventstoredb", "db.operation": "streams.subscribe", "db.eventstoredb.stream": stream,
					"db.eventstoredb.subscription.id": "$ce-order::sales",
					"db.eventstoredb.event.id":        eventID, "db.eventstoredb.event.type": "OrderPlaced",
					"server.address": "kurrentdb.internal", "server.port": 2113}})
		}
	}
	return f
}

// lambdaDynamoDBStreams: order-api (Go, otelaws) writes one event item per
// order with PutItem; two Lambda functions read the table's stream:
// orders-projector (all three, in two invocations) and sales-projector
// (orders 1 and 2). No trace context crosses the stream: each invocation
// is a trace of its own, joined by the event id the item holds. The
// invocation span is otellambda's (SERVER, no faas.trigger); the record
// spans are the function's own.
func lambdaDynamoDBStreams() fixture {
	goSDK := map[string]any{"telemetry.sdk.language": "go", "telemetry.sdk.name": "opentelemetry", "cloud.provider": "aws", "cloud.region": "eu-west-1"}
	lambdaRes := func(fn string) map[string]any {
		return map[string]any{"telemetry.sdk.language": "go", "telemetry.sdk.name": "opentelemetry", "cloud.provider": "aws",
			"cloud.platform": "aws_lambda", "cloud.region": "eu-west-1", "faas.name": fn, "faas.version": "$LATEST"}
	}
	f := fixture{tag: 0x23}
	type order struct {
		start float64
		id    string
		agg   string
	}
	var orders []order
	for i, s := range []float64{0, 100, 200} {
		tr := uint16(i + 1)
		o := order{s, fmt.Sprintf("01JD3Q0000000000000000000%d", i+1), fmt.Sprintf("ORDER#%d", 3001+i)}
		orders = append(orders, o)
		f.spans = append(f.spans,
			span{svc: "order-api", res: goSDK, scope: "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", name: "POST /orders", kind: serverKind, trace: tr, id: 1,
				start: s, end: s + 40, attrs: map[string]any{"http.request.method": "POST", "http.route": "/orders", "command.type": "PlaceOrder"}},
			span{svc: "order-api", res: goSDK, scope: "go.opentelemetry.io/contrib/instrumentation/github.com/aws/aws-sdk-go-v2/otelaws", name: "DynamoDB.PutItem", kind: client, trace: tr, id: 2, parent: 1,
				start: s + 10, end: s + 30, attrs: map[string]any{
					"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "PutItem", "aws.region": "eu-west-1", "db.system": "dynamodb",
					"aws.dynamodb.table_names": []string{"orders-events"}, "aws.request_id": fmt.Sprintf("R%d", i+1),
					"event.id": o.id, "event.type": "OrderPlaced", "event.aggregate_id": o.agg}},
		)
	}
	// invocation: the records of one Lambda invocation, with the time each
	// record's span ends (ms after the order's command started).
	type rec struct {
		order int
		lag   float64
	}
	invoke := func(fn string, tr uint16, start, end float64, recs []rec) {
		arn := "arn:aws:lambda:eu-west-1:123456789012:function:" + fn
		f.spans = append(f.spans, span{svc: fn, res: lambdaRes(fn), scope: "go.opentelemetry.io/contrib/instrumentation/github.com/aws/aws-lambda-go/otellambda",
			name: fn, kind: serverKind, trace: tr, id: 1, start: start, end: end, attrs: map[string]any{
				"faas.execution": fmt.Sprintf("inv-%s-%d", fn, tr), "faas.id": arn, "cloud.account.id": "123456789012"}})
		for j, r := range recs {
			o := orders[r.order]
			f.spans = append(f.spans, span{svc: fn, res: lambdaRes(fn), scope: fn, name: "dynamodb-record", kind: internal,
				trace: tr, id: uint16(j + 2), parent: 1, start: o.start + r.lag - 5, end: o.start + r.lag, attrs: map[string]any{
					"faas.trigger": "datasource", "faas.document.collection": "orders-events", "faas.document.operation": "insert",
					"faas.document.name": o.agg, "event.id": o.id, "event.type": "OrderPlaced"}})
		}
	}
	invoke("orders-projector", 101, 250, 400, []rec{{0, 380}, {1, 295}})
	invoke("orders-projector", 102, 400, 500, []rec{{2, 290}})
	invoke("sales-projector", 103, 600, 700, []rec{{0, 690}, {1, 595}})
	return f
}

// axon: order-service dispatches CreateOrderCommand (a local command bus:
// INTERNAL spans), its aggregate publishes OrderCreatedEvent; two tracking
// (streaming) processors in other services project it: order-projection
// (all three), order-analytics (orders 1 and 2). Each processor's spans are
// in its batch's trace; the join is by axon_message_id.
func axon() fixture {
	java := map[string]any{"telemetry.sdk.language": "java", "telemetry.sdk.name": "opentelemetry"}
	const scope = "AxonFramework-OpenTelemetry"
	f := fixture{tag: 0x24}
	type order struct {
		start   float64
		msgID   string
		agg     string
		proj, a float64 // handler span end - dispatch start; 0: never
	}
	orders := []order{
		{0, "3e0b8d7a-1c2f-4b5e-9a6d-000000000001", "a9f1c7e2-0001", 70, 260},
		{100, "3e0b8d7a-1c2f-4b5e-9a6d-000000000002", "a9f1c7e2-0002", 95, 330},
		{200, "3e0b8d7a-1c2f-4b5e-9a6d-000000000003", "a9f1c7e2-0003", 50, 0},
	}
	evAttrs := func(o order) map[string]any {
		return map[string]any{"axon_message_id": o.msgID, "axon_message_type": "GenericDomainEventMessage",
			"axon_payload_type": "com.example.orders.OrderCreatedEvent", "axon_message_name": "com.example.orders.OrderCreatedEvent",
			"axon_aggregate_identifier": o.agg}
	}
	for i, o := range orders {
		tr := uint16(i + 1)
		s := o.start
		f.spans = append(f.spans,
			span{svc: "order-service", res: java, scope: "io.opentelemetry.spring-webmvc-6.0", name: "POST /orders", kind: serverKind, trace: tr, id: 1,
				start: s - 2, end: s + 30, attrs: map[string]any{"http.request.method": "POST", "http.route": "/orders"}},
			span{svc: "order-service", res: java, scope: scope, name: "CommandBus.dispatchCommand(CreateOrderCommand)", kind: internal, trace: tr, id: 2, parent: 1,
				start: s, end: s + 28, attrs: map[string]any{"axon_message_id": fmt.Sprintf("c-%d", i+1), "axon_message_type": "GenericCommandMessage",
					"axon_payload_type": "com.example.orders.CreateOrderCommand", "axon_message_name": "com.example.orders.CreateOrderCommand"}},
			span{svc: "order-service", res: java, scope: scope, name: "CommandBus.handleCommand(CreateOrderCommand)", kind: internal, trace: tr, id: 3, parent: 2,
				start: s + 1, end: s + 27, attrs: map[string]any{"axon_message_id": fmt.Sprintf("c-%d", i+1), "axon_message_type": "GenericCommandMessage",
					"axon_payload_type": "com.example.orders.CreateOrderCommand"}},
			span{svc: "order-service", res: java, scope: scope, name: "EventBus.publishEvent(OrderCreatedEvent)", kind: producer, trace: tr, id: 4, parent: 3,
				start: s + 10, end: s + 12, attrs: evAttrs(o)},
		)
	}
	// One batch per processor: a root INTERNAL span, a CONSUMER handler
	// span per event, an INTERNAL EventProcessor.process inside it.
	batch := func(svc string, tr uint16, lag func(order) float64) {
		f.spans = append(f.spans, span{svc: svc, res: java, scope: scope, name: "StreamingEventProcessor.batch", kind: internal, trace: tr, id: 1,
			start: 40, end: 600})
		for j, o := range orders {
			l := lag(o)
			if l == 0 {
				continue
			}
			id := uint16(2 * (j + 1))
			f.spans = append(f.spans,
				span{svc: svc, res: java, scope: scope, name: "StreamingEventProcessor.process(OrderCreatedEvent)", kind: consumer, trace: tr, id: id, parent: 1,
					start: o.start + l - 6, end: o.start + l, attrs: evAttrs(o)},
				span{svc: svc, res: java, scope: scope, name: "EventProcessor.process(OrderCreatedEvent)", kind: internal, trace: tr, id: id + 1, parent: id,
					start: o.start + l - 5, end: o.start + l - 1, attrs: evAttrs(o)},
			)
		}
	}
	batch("order-projection", 201, func(o order) float64 { return o.proj })
	batch("order-analytics", 202, func(o order) float64 { return o.a })
	return f
}
