// Package telemetry holds the span conventions that lagscope reads from the
// order system (attribute keys and values), the W3C trace-context propagation
// through event metadata, and the construction of an OTLP-exporting tracer
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

// Propagator is the W3C TraceContext propagator used between the command side
// and the projectors, through event metadata.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Inject writes ctx's span context into md as traceparent (and tracestate).
func Inject(ctx context.Context, md map[string]string) {
	Propagator.Inject(ctx, propagation.MapCarrier(md))
}

// Extract returns ctx with the remote span context stored in md, if any.
func Extract(ctx context.Context, md map[string]string) context.Context {
	return Propagator.Extract(ctx, propagation.MapCarrier(md))
}
