package analyzer

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// Role is what a span is in a CQRS system. Each span has at most one.
type Role uint8

// The span roles, in the order of the span conventions.
const (
	RoleNone Role = iota
	RoleCommand
	RoleAppend
	RoleProject
	RoleQuery
)

var roleNames = [...]string{"ignored", "command", "append", "project", "query"}

func (r Role) String() string { return roleNames[r] }

// Attribute names of lagscope's span conventions and of the OpenTelemetry
// messaging semantic conventions (current and older names).
const (
	attrOperation     = "cqrs.operation"
	attrCommandName   = "cqrs.command.name"
	attrQueryName     = "cqrs.query.name"
	attrEventID       = "cqrs.event.id"
	attrEventType     = "cqrs.event.type"
	attrAggregateType = "cqrs.aggregate.type"
	attrAggregateID   = "cqrs.aggregate.id"
	attrVersion       = "cqrs.aggregate.version"
	attrProjection    = "cqrs.projection"
	eventNameCQRS     = "cqrs.event"

	attrMsgID           = "messaging.message.id"
	attrMsgOpType       = "messaging.operation.type"
	attrMsgOpOld        = "messaging.operation"
	attrMsgSystem       = "messaging.system"
	attrMsgDest         = "messaging.destination.name"
	attrMsgGroup        = "messaging.consumer.group.name"
	attrMsgSubscription = "messaging.destination.subscription.name"
	attrMsgKafkaGroup   = "messaging.kafka.consumer.group"
	attrMsgKafkaGroupV0 = "messaging.kafka.consumer_group"
	attrMsgRabbitQueue  = "messaging.rabbitmq.destination.routing_key"
	attrServiceName     = "service.name"
)

// Aliases of the cqrs.* attributes that hand-instrumented systems commonly
// set, read after the cqrs.* names (which win when both are set).
const (
	attrAliasEventID        = "event.id"
	attrAliasEventIDU       = "event_id"
	attrAliasEventType      = "event.type"
	attrAliasEventTypeU     = "event_type"
	attrAliasEventAggID     = "event.aggregate_id"
	attrAliasAggregateID    = "aggregate.id"
	attrAliasAggregateIDU   = "aggregate_id"
	attrAliasAggregateType  = "aggregate.type"
	attrAliasVersion        = "aggregate.version"
	attrAliasCommandType    = "command.type"
	attrAliasCommandName    = "command.name"
	attrAliasProjection     = "projection"
	attrAliasProjectionName = "projection.name"
)

// Attribute values the classifier compares with: of cqrs.operation, and of
// messaging.operation.type (or messaging.operation).
const (
	opCommand = "command"
	opAppend  = "append"
	opProject = "project"
	opQuery   = "query"

	msgOpCreate  = "create"
	msgOpSend    = "send"
	msgOpPublish = "publish"
	msgOpProcess = "process"
	msgOpDeliver = "deliver"
	msgOpReceive = "receive"
	msgOpSettle  = "settle"
)

// spanAttrs holds the attributes the classifier reads, collected in one pass
// over the span's attributes. Strings point into the request.
type spanAttrs struct {
	op, command, query                 string
	eventID, eventType, aggType, aggID string
	projection                         string
	version                            int64

	msgID, msgOpType, msgSystem, msgDest string
	msgGroup, msgSubscription            string
}

// read reads the attributes of kvs that the conventions name, in their
// order (the order a pcommon.Map of them iterates in). Every
// key it reads is listed in spanAttributeKeys (conventions.go), which tells
// the collector what to keep: TestReadsListsEveryKey checks the two agree.
func (a *spanAttrs) read(kvs []spanbatch.KeyValue) {
	for i := range kvs {
		k, v := kvs[i].Key, kvs[i].Value
		if len(k) < 6 {
			continue
		}
		switch k[0] {
		case 'c':
			switch k {
			case attrOperation:
				a.op = v.Str()
			case attrCommandName:
				a.command = v.AsString()
			case attrQueryName:
				a.query = v.AsString()
			case attrEventID:
				a.eventID = v.AsString()
			case attrEventType:
				a.eventType = v.Str()
			case attrAggregateType:
				a.aggType = v.Str()
			case attrAggregateID:
				a.aggID = v.AsString()
			case attrVersion:
				a.version = intValue(v)
			case attrProjection:
				a.projection = v.Str()
			case attrAliasCommandType, attrAliasCommandName:
				if a.command == "" {
					a.command = v.AsString()
				}
			}
		// An alias fills a field only while it is empty, and the cqrs.*
		// names above overwrite it: the cqrs.* name wins in any order,
		// with no second copy of the fields to merge.
		case 'e':
			switch k {
			case attrAliasEventID, attrAliasEventIDU:
				if a.eventID == "" {
					a.eventID = v.AsString()
				}
			case attrAliasEventType, attrAliasEventTypeU:
				if a.eventType == "" {
					a.eventType = v.Str()
				}
			case attrAliasEventAggID:
				if a.aggID == "" {
					a.aggID = v.AsString()
				}
			}
		case 'a':
			switch k {
			case attrAliasAggregateID, attrAliasAggregateIDU:
				if a.aggID == "" {
					a.aggID = v.AsString()
				}
			case attrAliasAggregateType:
				if a.aggType == "" {
					a.aggType = v.Str()
				}
			case attrAliasVersion:
				if a.version == 0 {
					a.version = intValue(v)
				}
			}
		case 'p':
			switch k {
			case attrAliasProjection, attrAliasProjectionName:
				if a.projection == "" {
					a.projection = v.Str()
				}
			}
		case 'm':
			switch k {
			case attrMsgID:
				a.msgID = v.AsString()
			case attrMsgOpType:
				a.msgOpType = v.Str()
			case attrMsgOpOld:
				if a.msgOpType == "" {
					a.msgOpType = v.Str()
				}
			case attrMsgSystem:
				a.msgSystem = v.Str()
			case attrMsgDest:
				a.msgDest = v.Str()
			case attrMsgGroup:
				a.msgGroup = v.Str()
			case attrMsgKafkaGroup, attrMsgKafkaGroupV0:
				if a.msgGroup == "" {
					a.msgGroup = v.Str()
				}
			case attrMsgSubscription:
				a.msgSubscription = v.Str()
			}
		}
	}
}

// intValue reads an integer attribute that instrumentations sometimes send as
// a string or a double. A value int64 cannot hold (or not a number) is 0,
// "no version": never a wrapped number, which would compare as older or
// newer than it is.
func intValue(v spanbatch.Value) int64 {
	switch v.Type {
	case pcommon.ValueTypeInt:
		return v.Int()
	case pcommon.ValueTypeDouble:
		// -2^63 <= d < 2^63, false for NaN: int64(d) is defined.
		if d := v.Double(); d >= -(1<<63) && d < 1<<63 {
			return int64(d)
		}
		return 0
	case pcommon.ValueTypeStr:
		return parseInt(v.Str())
	}
	return 0
}

// parseInt parses an optionally negative decimal integer; 0 when s is not
// one or does not fit an int64.
func parseInt(s string) int64 {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if s == "" {
		return 0
	}
	var n uint64 // magnitude, up to 2^63 for -2^63
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		if n > (1<<63)/10 {
			return 0
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<63 {
			return 0
		}
	}
	switch {
	case neg:
		return int64(-n) // -2^63 too: its magnitude wraps to itself
	case n > math.MaxInt64:
		return 0
	}
	return int64(n)
}

// classify returns the role of a span under the span conventions (first match
// wins): cqrs.operation; then cqrs.command.name / cqrs.query.name (or the
// command aliases); then the messaging semantic conventions; then the span
// kind alone: PRODUCER is an append, CONSUMER a projection, as the
// OpenTelemetry specification defines those kinds.
func classify(kind ptrace.SpanKind, a *spanAttrs) Role {
	r, _ := classifyWhy(kind, a)
	return r
}

// Conventions that classifyWhy names, for Explain.
const (
	whyOperation = "convention: cqrs.operation"
	whyCommand   = "convention: command name"
	whyQuery     = "convention: cqrs.query.name"
	whyMsgOp     = "convention: messaging.operation.type"
	whyMsgKind   = "convention: messaging span kind"
	whyProducer  = "convention: span kind PRODUCER"
	whyConsumer  = "convention: span kind CONSUMER"
	whyNone      = "convention: none"
)

// classifyWhy is classify, with the convention that gave the role.
func classifyWhy(kind ptrace.SpanKind, a *spanAttrs) (Role, string) {
	switch a.op {
	case opCommand:
		return RoleCommand, whyOperation
	case opAppend:
		return RoleAppend, whyOperation
	case opProject:
		return RoleProject, whyOperation
	case opQuery:
		return RoleQuery, whyOperation
	}
	if a.command != "" {
		return RoleCommand, whyCommand
	}
	if a.query != "" {
		return RoleQuery, whyQuery
	}
	if a.msgID != "" || a.msgSystem != "" {
		switch a.msgOpType {
		case msgOpCreate, msgOpSend, msgOpPublish:
			return RoleAppend, whyMsgOp
		case msgOpProcess, msgOpDeliver:
			return RoleProject, whyMsgOp
		case msgOpReceive, msgOpSettle:
			// A receive span is not the processing: the read model is
			// not updated yet. Let the process span carry the
			// projection.
			return RoleNone, whyMsgOp
		}
	}
	switch kind {
	case ptrace.SpanKindProducer:
		return RoleAppend, whyProducer
	case ptrace.SpanKindConsumer:
		if a.msgOpType == msgOpReceive || a.msgOpType == msgOpSettle {
			return RoleNone, whyMsgOp
		}
		return RoleProject, whyConsumer
	}
	return RoleNone, whyNone
}

// isMessaging reports whether the span was classified by the messaging
// conventions rather than lagscope's own.
func (a *spanAttrs) isMessaging() bool {
	return a.op == "" && a.command == "" && a.query == ""
}
