package analyzer

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// kvsOf returns the attributes of m as a Batch holds them.
func kvsOf(m pcommon.Map) []spanbatch.KeyValue {
	var kvs []spanbatch.KeyValue
	for k, v := range m.All() {
		kvs = append(kvs, spanbatch.KeyValue{Key: k, Value: spanbatch.ValueOf(v)})
	}
	return kvs
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name  string
		kind  ptrace.SpanKind
		attrs map[string]any
		want  Role
	}{
		{"cqrs.operation command", 0, map[string]any{"cqrs.operation": "command"}, RoleCommand},
		{"cqrs.operation wins over messaging", ptrace.SpanKindConsumer, map[string]any{"cqrs.operation": "append", "messaging.message.id": "m"}, RoleAppend},
		{"cqrs.operation project", 0, map[string]any{"cqrs.operation": "project"}, RoleProject},
		{"cqrs.operation query", 0, map[string]any{"cqrs.operation": "query"}, RoleQuery},
		{"command name alone", 0, map[string]any{"cqrs.command.name": "Pay"}, RoleCommand},
		{"query name alone", 0, map[string]any{"cqrs.query.name": "GetOrder"}, RoleQuery},
		{"command name wins over messaging", ptrace.SpanKindProducer, map[string]any{"cqrs.command.name": "Pay", "messaging.system": "kafka"}, RoleCommand},
		{"producer with message id", ptrace.SpanKindProducer, map[string]any{"messaging.message.id": "m"}, RoleAppend},
		{"producer kafka without id", ptrace.SpanKindProducer, map[string]any{"messaging.system": "kafka"}, RoleAppend},
		// Issue 12: the span kinds alone say append and projection.
		{"producer without messaging", ptrace.SpanKindProducer, map[string]any{"http.method": "GET"}, RoleAppend},
		{"consumer without messaging", ptrace.SpanKindConsumer, map[string]any{"event.type": "OrderCreated"}, RoleProject},
		{"consumer receive without system", ptrace.SpanKindConsumer, map[string]any{"messaging.operation.type": "receive"}, RoleNone},
		{"command.type", ptrace.SpanKindServer, map[string]any{"command.type": "CreateOrder"}, RoleCommand},
		{"command.name", ptrace.SpanKindInternal, map[string]any{"command.name": "CreateOrder"}, RoleCommand},
		{"command alias wins over kind", ptrace.SpanKindProducer, map[string]any{"command.type": "CreateOrder"}, RoleCommand},
		{"cqrs.operation wins over command alias", ptrace.SpanKindProducer, map[string]any{"command.type": "CreateOrder", "cqrs.operation": "append"}, RoleAppend},
		{"operation type send", ptrace.SpanKindInternal, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "send"}, RoleAppend},
		{"operation type create", ptrace.SpanKindInternal, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "create"}, RoleAppend},
		{"old operation publish", ptrace.SpanKindInternal, map[string]any{"messaging.system": "rabbitmq", "messaging.operation": "publish"}, RoleAppend},
		{"consumer with message id", ptrace.SpanKindConsumer, map[string]any{"messaging.message.id": "m"}, RoleProject},
		{"operation type process", ptrace.SpanKindInternal, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "process"}, RoleProject},
		{"old operation deliver", ptrace.SpanKindInternal, map[string]any{"messaging.system": "kafka", "messaging.operation": "deliver"}, RoleProject},
		{"receive is not processing", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "receive"}, RoleNone},
		{"client span with message id", ptrace.SpanKindClient, map[string]any{"messaging.message.id": "m"}, RoleNone},
		{"unrelated", ptrace.SpanKindServer, map[string]any{"http.route": "/orders"}, RoleNone},
		{"unknown cqrs.operation falls through", ptrace.SpanKindServer, map[string]any{"cqrs.operation": "other"}, RoleNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := pcommon.NewMap()
			if err := m.FromRaw(tt.attrs); err != nil {
				t.Fatal(err)
			}
			var a spanAttrs
			a.read(kvsOf(m))
			if got := classify(tt.kind, &a); got != tt.want {
				t.Errorf("classify = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestAliases checks that every alias is read, and read after its cqrs.*
// name.
func TestAliases(t *testing.T) {
	tests := []struct {
		name  string
		attrs map[string]any
		want  spanAttrs
	}{
		{"event.id", map[string]any{"event.id": "e1"}, spanAttrs{eventID: "e1"}},
		{"event_id", map[string]any{"event_id": "e1"}, spanAttrs{eventID: "e1"}},
		{"cqrs.event.id wins", map[string]any{"event.id": "e1", "cqrs.event.id": "e0"}, spanAttrs{eventID: "e0"}},
		{"event.type", map[string]any{"event.type": "T"}, spanAttrs{eventType: "T"}},
		{"event_type", map[string]any{"event_type": "T"}, spanAttrs{eventType: "T"}},
		{"cqrs.event.type wins", map[string]any{"event_type": "T", "cqrs.event.type": "U"}, spanAttrs{eventType: "U"}},
		{"event.aggregate_id", map[string]any{"event.aggregate_id": "o-1"}, spanAttrs{aggID: "o-1"}},
		{"aggregate.id", map[string]any{"aggregate.id": "o-1"}, spanAttrs{aggID: "o-1"}},
		{"aggregate_id", map[string]any{"aggregate_id": "o-1"}, spanAttrs{aggID: "o-1"}},
		{"cqrs.aggregate.id wins", map[string]any{"aggregate.id": "o-1", "cqrs.aggregate.id": "o-0"}, spanAttrs{aggID: "o-0"}},
		{"aggregate.type", map[string]any{"aggregate.type": "Order"}, spanAttrs{aggType: "Order"}},
		{"aggregate.version", map[string]any{"aggregate.version": int64(3)}, spanAttrs{version: 3}},
		{"aggregate.version string", map[string]any{"aggregate.version": "4"}, spanAttrs{version: 4}},
		{"cqrs.aggregate.version wins", map[string]any{"aggregate.version": int64(3), "cqrs.aggregate.version": int64(5)}, spanAttrs{version: 5}},
		{"command.type", map[string]any{"command.type": "Pay"}, spanAttrs{command: "Pay"}},
		{"command.name", map[string]any{"command.name": "Pay"}, spanAttrs{command: "Pay"}},
		{"cqrs.command.name wins", map[string]any{"command.type": "Pay", "cqrs.command.name": "Ship"}, spanAttrs{command: "Ship"}},
		{"projection", map[string]any{"projection": "v"}, spanAttrs{projection: "v"}},
		{"projection.name", map[string]any{"projection.name": "v"}, spanAttrs{projection: "v"}},
		{"cqrs.projection wins", map[string]any{"projection": "v", "cqrs.projection": "w"}, spanAttrs{projection: "w"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := pcommon.NewMap()
			if err := m.FromRaw(tt.attrs); err != nil {
				t.Fatal(err)
			}
			var got spanAttrs
			got.read(kvsOf(m))
			if got != tt.want {
				t.Errorf("read(%v) = %+v, want %+v", tt.attrs, got, tt.want)
			}
		})
	}
}

func TestProjectionName(t *testing.T) {
	tests := []struct {
		name  string
		attrs map[string]any
		want  string
	}{
		{"cqrs.projection", map[string]any{"cqrs.operation": "project", "cqrs.event.id": "e", "cqrs.projection": "view", "messaging.consumer.group.name": "g"}, "view"},
		{"consumer group", map[string]any{"messaging.message.id": "e", "messaging.consumer.group.name": "g", "messaging.operation.type": "process"}, "g"},
		{"old kafka group", map[string]any{"messaging.message.id": "e", "messaging.kafka.consumer.group": "old", "messaging.operation.type": "process"}, "old"},
		{"subscription", map[string]any{"messaging.message.id": "e", "messaging.destination.subscription.name": "sub", "messaging.operation.type": "process"}, "sub"},
		{"service name", map[string]any{"messaging.message.id": "e", "messaging.operation.type": "process"}, "svc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := traces("svc", spanSpec{trace: 1, span: 1, parent: -1, kind: ptrace.SpanKindConsumer, attrs: tt.attrs})
			r, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			facts := r.Resolve(nil, td, time.Unix(0, 0))
			if len(facts) != 1 || facts[0].Projection != tt.want {
				t.Fatalf("facts = %+v, want one projection %q", facts, tt.want)
			}
		})
	}
}

func TestKeyOf(t *testing.T) {
	u := "123e4567-e89b-12d3-a456-426614174000"
	k := KeyOf(u)
	if k[0] != 0x12 || k[15] != 0x00 || k[1] != 0x3e {
		t.Errorf("UUID key = %x, want the UUID's bytes", k)
	}
	if KeyOf("evt-1") == KeyOf("evt-2") || KeyOf("evt-1") != KeyOf("evt-1") {
		t.Error("hashed keys must be stable and distinct")
	}
	if KeyOf("123E4567-E89B-12D3-A456-426614174000") != k {
		t.Error("an upper-case UUID must give the same key")
	}
	for _, bad := range []string{"123e4567-e89b-12d3-a456-42661417400g", "z23e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a4:6-426614174000"} {
		var got EventKey
		if parseUUID(bad, &got) || KeyOf(bad) == k {
			t.Errorf("%q: a non-hex UUID-shaped id must not parse as a UUID", bad)
		}
	}
}
