// Package telemetry holds the span conventions that lagscope reads from the
// order system (attribute keys and values), the trace-context propagation
// through HTTP, event metadata and Kafka headers (W3C by default, B3 and
// others as OTEL_PROPAGATORS says), and the construction of an OTLP-exporting tracer
// provider.
//
// The conventions, which are lagscope's public contract:
//
//   - command span, child of the HTTP server span, named after the command
//     (e.g. "CreateOrder"): cqrs.operation=command, cqrs.command.name.
//   - append span, child of the command span, around the event store write:
//     cqrs.operation=append, cqrs.aggregate.type, cqrs.aggregate.id and, for a
//     single event, cqrs.event.id, cqrs.event.type, cqrs.aggregate.version; for
//     several events one span event "cqrs.event" per stored event with those
//     attributes. The traceparent stored in each event's metadata is the
//     append span's context.
//   - project span, one per projection per event, child of the context stored
//     in the event's metadata, kind CONSUMER, named "project <projection>":
//     cqrs.operation=project, cqrs.projection, cqrs.event.id, cqrs.event.type,
//     cqrs.aggregate.id, cqrs.aggregate.version. Projectors apply a batch of
//     events in one read model transaction; every span of the batch ends after
//     that transaction commits (when the read model shows the event), or with
//     status Error if it failed.
//   - query span, child of the HTTP server span: cqrs.operation=query,
//     cqrs.query.name and, for GetOrder, cqrs.aggregate.id and the
//     cqrs.aggregate.version that the read model returned.
//
// On the Kafka bus (orders/kafka) two things follow the OpenTelemetry
// messaging semantic conventions:
//
//   - send span, kind PRODUCER, one per event the outbox relay publishes,
//     child of the context in the event's metadata (the append span), named
//     "send <topic>": messaging.system=kafka, messaging.destination.name,
//     messaging.operation.type=send, messaging.operation.name=send,
//     messaging.message.id (the event id), messaging.kafka.message.key (the
//     aggregate id), and the cqrs.event.* / cqrs.aggregate.* attributes of
//     the append span. lagscope classifies it as an append of the same event
//     id, which its join counts once.
//   - the project span is the process span: kind CONSUMER, child of the send
//     span (the message's traceparent header), with the cqrs.* attributes
//     above plus messaging.system=kafka, messaging.destination.name,
//     messaging.operation.type=process, messaging.operation.name=process,
//     messaging.consumer.group.name (the projection), messaging.message.id,
//     messaging.kafka.message.key, messaging.destination.partition.id and
//     messaging.kafka.offset. There is no second consumer span, which
//     lagscope would count as a duplicate projection.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
)

// ScopeName is the instrumentation scope of the order system's tracers.
const ScopeName = "github.com/lagscope/lagscope/orders"

// Attribute keys of the span conventions.
const (
	Operation        = attribute.Key("cqrs.operation")
	CommandName      = attribute.Key("cqrs.command.name")
	QueryName        = attribute.Key("cqrs.query.name")
	Projection       = attribute.Key("cqrs.projection")
	AggregateType    = attribute.Key("cqrs.aggregate.type")
	AggregateID      = attribute.Key("cqrs.aggregate.id")
	AggregateVersion = attribute.Key("cqrs.aggregate.version")
	EventID          = attribute.Key("cqrs.event.id")
	EventType        = attribute.Key("cqrs.event.type")
)

// Attribute keys of the OpenTelemetry messaging semantic conventions that
// the Kafka bus sets.
const (
	MessagingSystem        = attribute.Key("messaging.system")
	MessagingDestination   = attribute.Key("messaging.destination.name")
	MessagingOperationType = attribute.Key("messaging.operation.type")
	MessagingOperationName = attribute.Key("messaging.operation.name")
	MessagingConsumerGroup = attribute.Key("messaging.consumer.group.name")
	MessagingMessageID     = attribute.Key("messaging.message.id")
	MessagingPartition     = attribute.Key("messaging.destination.partition.id")
	MessagingKafkaKey      = attribute.Key("messaging.kafka.message.key")
	MessagingKafkaOffset   = attribute.Key("messaging.kafka.offset")
)

// Values of the messaging attributes.
const (
	SystemKafka = "kafka"
	OpSend      = "send"
	OpProcess   = "process"
)

// Values of the cqrs.operation attribute.
const (
	OpCommand = "command"
	OpAppend  = "append"
	OpProject = "project"
	OpQuery   = "query"
)

// EventName is the name of the span event that an append span carries for
// each stored event when it writes several.
const EventName = "cqrs.event"

// Propagator is the propagator between the order system's parts: HTTP
// requests (the API server and the load generator), event metadata (the
// command side to the projectors) and Kafka message headers. It is the one
// the OTEL_PROPAGATORS environment variable names (tracecontext, baggage,
// b3, b3multi, jaeger, xray, ottrace, none, comma-separated; default
// tracecontext,baggage), read when the program starts and again by
// UsePropagatorsFromEnv. It is safe for concurrent use, and a value taken
// from it follows later changes.
var Propagator propagation.TextMapPropagator = current

// current is what Propagator delegates to.
var current = func() *switchable {
	s := &switchable{}
	p, err := PropagatorFromEnv()
	if err != nil {
		p = defaultPropagator() // the error is UsePropagatorsFromEnv's to report
	}
	s.p.Store(&p)
	return s
}()

// PropagatorFromEnv returns the propagator OTEL_PROPAGATORS names, built by
// go.opentelemetry.io/contrib/propagators/autoprop, or tracecontext,baggage
// when it is unset or empty. It returns an error naming an unknown value.
func PropagatorFromEnv() (propagation.TextMapPropagator, error) {
	v := strings.TrimSpace(os.Getenv(EnvPropagators))
	if v == "" {
		return defaultPropagator(), nil
	}
	var names []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", EnvPropagators, v, err)
	}
	return p, nil
}

// EnvPropagators is the environment variable that names the propagators.
const EnvPropagators = "OTEL_PROPAGATORS"

// UsePropagatorsFromEnv makes Propagator the one OTEL_PROPAGATORS names now
// (see PropagatorFromEnv), and returns an error, leaving it as it was, if
// the variable names an unknown propagator.
func UsePropagatorsFromEnv() error {
	p, err := PropagatorFromEnv()
	if err != nil {
		return err
	}
	current.p.Store(&p)
	return nil
}

func defaultPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// switchable is a TextMapPropagator whose implementation can be replaced
// while it is in use.
type switchable struct {
	p atomic.Pointer[propagation.TextMapPropagator]
}

func (s *switchable) Inject(ctx context.Context, c propagation.TextMapCarrier) {
	(*s.p.Load()).Inject(ctx, c)
}

func (s *switchable) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	return (*s.p.Load()).Extract(ctx, c)
}

func (s *switchable) Fields() []string { return (*s.p.Load()).Fields() }

// Inject writes ctx's span context into md, under the keys of Propagator
// (traceparent and tracestate by default; x-b3-* with b3multi, b3 with b3).
func Inject(ctx context.Context, md map[string]string) {
	Propagator.Inject(ctx, propagation.MapCarrier(md))
}

// Extract returns ctx with the remote span context stored in md, if any.
func Extract(ctx context.Context, md map[string]string) context.Context {
	return Propagator.Extract(ctx, propagation.MapCarrier(md))
}
