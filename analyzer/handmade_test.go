package analyzer

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const handEventID = "0d7a3c1e-5b2f-4c1a-9e8d-2f4b6a8c0e12"

// handCommand, handProducer and handConsumer are the hand-instrumented
// shape of issue 12: no cqrs.* attribute, the roles from the span kinds
// and aliases.
func handCommand(trace, span int) spanSpec {
	return spanSpec{trace: trace, span: span, parent: -1, kind: ptrace.SpanKindServer, start: 0, end: 6 * time.Millisecond,
		attrs: map[string]any{"command.type": "CreateOrder"}}
}

func handProducer(trace, span, parent int) spanSpec {
	return spanSpec{trace: trace, span: span, parent: parent, kind: ptrace.SpanKindProducer, start: 3 * time.Millisecond, end: 5 * time.Millisecond,
		attrs: map[string]any{"event.type": "OrderCreated", "event.id": handEventID}}
}

func handConsumer(trace, span, parent int, links ...[2]int) spanSpec {
	return spanSpec{trace: trace, span: span, parent: parent, kind: ptrace.SpanKindConsumer, start: 16 * time.Millisecond, end: 20 * time.Millisecond,
		attrs: map[string]any{"event.type": "OrderCreated", "event.aggregate_id": "o-1"}, links: links}
}

// handFact is what the tests compare of a fact.
type handFact struct {
	Kind       FactKind
	Event      EventKey
	Command    string
	Projection string
}

func handFacts(fs []Fact) []handFact {
	var out []handFact
	for _, f := range fs {
		out = append(out, handFact{f.Kind, f.Event, f.Command, f.Projection})
	}
	return out
}

// TestConsumerProjectsProducerEvent: a CONSUMER span without event id
// projects the event its parent (or linked) PRODUCER span appended, whatever
// the order the two arrive in, in one request or two, across resolver
// shards; until its producer arrives it waits, and after join.command_wait
// it keeps the producer span's key.
func TestConsumerProjectsProducerEvent(t *testing.T) {
	event := KeyOf(handEventID)
	appendFact := handFact{FactAppend, event, "CreateOrder", ""}
	projected := handFact{FactProject, event, "", "query-service"}
	cmdReq := traces("command-service", handCommand(1, 1), handProducer(1, 2, 1))
	tests := []struct {
		name  string
		reqs  []ptrace.Traces
		flush bool
		want  []handFact
	}{
		{"producer first", []ptrace.Traces{cmdReq, traces("query-service", handConsumer(1, 3, 2))},
			false, []handFact{appendFact, projected}},
		{"consumer first", []ptrace.Traces{traces("query-service", handConsumer(1, 3, 2)), cmdReq},
			false, []handFact{projected, appendFact}},
		{"one request, consumer first", []ptrace.Traces{traces("svc", handConsumer(1, 3, 2), handProducer(1, 2, 1), handCommand(1, 1))},
			false, []handFact{{FactProject, event, "", "svc"}, appendFact}},
		{"link to another trace, producer first", []ptrace.Traces{cmdReq, traces("query-service", handConsumer(7, 3, -1, [2]int{1, 2}))},
			false, []handFact{appendFact, projected}},
		{"link to another trace, consumer first", []ptrace.Traces{traces("query-service", handConsumer(7, 3, -1, [2]int{1, 2})), cmdReq},
			false, []handFact{projected, appendFact}},
		{"producer never comes", []ptrace.Traces{traces("query-service", handConsumer(1, 3, 2))},
			true, []handFact{{FactProject, keyOfSpan(traceID(1), spanID(2)), "", "query-service"}}},
		{"parent is not a producer", []ptrace.Traces{traces("query-service", spanSpec{trace: 1, span: 2, parent: -1}, handConsumer(1, 3, 2))},
			false, []handFact{{FactProject, keyOfSpan(traceID(1), spanID(2)), "", "query-service"}}},
	}
	for _, shards := range []int{1, 16} {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.Join.Shards = shards
				r, err := NewResolver(cfg, prometheus.NewRegistry())
				if err != nil {
					t.Fatal(err)
				}
				t1, t7 := [16]byte(traceID(1)), [16]byte(traceID(7))
				if shards > 1 && traceShard(&t1, len(r.shards)) == traceShard(&t7, len(r.shards)) {
					t.Fatal("traces 1 and 7 share a shard: the link cases test no routing")
				}
				var facts []Fact
				for i, td := range tt.reqs {
					facts = r.Resolve(facts, td, base.Add(time.Duration(i)*time.Second))
				}
				if tt.flush {
					facts = r.Expire(facts, base.Add(time.Minute), true)
				}
				if diff := cmp.Diff(handFacts(facts), tt.want); diff != "" {
					t.Errorf("facts (-got +want):\n%s", diff)
				}
				if got := r.Waiting(); got != 0 {
					t.Errorf("Waiting() = %d, want 0", got)
				}
			})
		}
	}
}

// TestConsumerWaitsBounded: a consumer waiting for its producer is held up
// to join.command_wait, then keyed by the producer span.
func TestConsumerWaitsBounded(t *testing.T) {
	cfg := DefaultConfig()
	r, err := NewResolver(cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Resolve(nil, traces("q", handConsumer(1, 3, 2)), base); len(got) != 0 {
		t.Fatalf("Resolve gave %v before the producer came", handFacts(got))
	}
	if got := r.Waiting(); got != 1 {
		t.Fatalf("Waiting() = %d, want 1", got)
	}
	if got := r.Expire(nil, base.Add(cfg.Join.CommandWait-time.Nanosecond), false); len(got) != 0 {
		t.Fatalf("Expire gave %v before join.command_wait", handFacts(got))
	}
	got := handFacts(r.Expire(nil, base.Add(cfg.Join.CommandWait), false))
	want := []handFact{{FactProject, keyOfSpan(traceID(1), spanID(2)), "", "q"}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Expire at join.command_wait (-got +want):\n%s", diff)
	}
}

// TestRetriedSpans: a request sent again gives no facts and no span
// counts, only lagscope_duplicate_spans_total; a second projection span of
// another span id is still a projection (the Joiner counts it duplicated).
func TestRetriedSpans(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := NewResolver(DefaultConfig(), reg)
	if err != nil {
		t.Fatal(err)
	}
	req := traces("svc", handCommand(1, 1), handProducer(1, 2, 1), handConsumer(1, 3, 2))
	first := handFacts(r.Resolve(nil, req, base))
	if len(first) != 2 {
		t.Fatalf("first copy gave %v, want an append and a projection", first)
	}
	if got := r.Resolve(nil, req, base.Add(time.Second)); len(got) != 0 {
		t.Errorf("the retry gave facts %v, want none", handFacts(got))
	}
	again := handFacts(r.Resolve(nil, traces("svc", handConsumer(1, 4, 2)), base.Add(2*time.Second)))
	if diff := cmp.Diff(again, first[1:]); diff != "" {
		t.Errorf("another projection span of the event (-got +want):\n%s", diff)
	}
	if got := testutil.ToFloat64(r.m.duplicateSpans); got != 3 {
		t.Errorf("lagscope_duplicate_spans_total = %v, want 3", got)
	}
	for role, want := range map[Role]float64{RoleCommand: 1, RoleAppend: 1, RoleProject: 2} {
		if got := testutil.ToFloat64(r.m.roleCounts[role]); got != want {
			t.Errorf("lagscope_spans_total{role=%q} = %v, want %v", role, got, want)
		}
	}
}
