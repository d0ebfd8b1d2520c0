package analyzer

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.yaml.in/yaml/v3"

	"github.com/lagscope/lagscope/spanbatch"
)

// issueRules is the example of issue 12, as a config file writes it.
const issueRules = `
rules:
  - name: appends
    match:
      span_name: EventStore.Append
      kind: client
      service: order-service
      attributes: {db.system: postgresql, evt_id: "*"}
    role: append
    fields:
      event_id: evt_id
      event_type: evt_name
      aggregate_id: stream_id
      aggregate_version: stream_rev
  - name: handlers
    match:
      span_name_regex: '^handle_(.+)$'
    role: command
    fields:
      command: $1
  - name: projectors
    match:
      service_regex: '-projector$'
      kind: consumer
    role: project
    fields:
      event_id: evt_id
      projection: resource:service.namespace
  - name: health
    match:
      span_name: GET /health
    role: ignore
`

func issueConfig(t testing.TB) Config {
	t.Helper()
	cfg := DefaultConfig()
	if err := yaml.Unmarshal([]byte(issueRules), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ruleSpan is a span for the rule tests, of a resource with resAttrs.
type ruleSpan struct {
	service  string
	resAttrs map[string]any
	name     string
	kind     ptrace.SpanKind
	attrs    map[string]any
}

func (s ruleSpan) build() (pcommon.Map, string, ptrace.Span) {
	res := pcommon.NewMap()
	res.PutStr("service.name", s.service)
	putAttrs(res, s.resAttrs)
	sp := ptrace.NewSpan()
	sp.SetName(s.name)
	sp.SetKind(s.kind)
	putAttrs(sp.Attributes(), s.attrs)
	return res, s.service, sp
}

// ruleBatch returns the Batch of one span sp of a resource with attributes
// res, everything kept.
func ruleBatch(res pcommon.Map, sp ptrace.Span) *spanbatch.Batch {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	res.CopyTo(rs.Resource().Attributes())
	sp.CopyTo(rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty())
	b := new(spanbatch.Batch)
	b.FromTraces(td, nil)
	return b
}

func TestRules(t *testing.T) {
	cfg := issueConfig(t)
	rules, err := compileRules(cfg.Rules)
	if err != nil {
		t.Fatal(err)
	}
	append1 := ruleSpan{service: "order-service", name: "EventStore.Append", kind: ptrace.SpanKindClient,
		attrs: map[string]any{"db.system": "postgresql", "evt_id": "e-1", "evt_name": "OrderPlaced", "stream_id": "order-1", "stream_rev": int64(4)}}
	with := func(s ruleSpan, f func(*ruleSpan)) ruleSpan {
		s.attrs = clone2(s.attrs)
		f(&s)
		return s
	}
	type want struct {
		Role                                     Role
		Rule                                     string
		EventID, EventType, AggID, Command, Proj string
		Version                                  int64
	}
	tests := []struct {
		name string
		span ruleSpan
		want want
	}{
		{"issue example", append1, want{RoleAppend, "appends", "e-1", "OrderPlaced", "order-1", "", "", 4}},
		{"wrong kind", with(append1, func(s *ruleSpan) { s.kind = ptrace.SpanKindServer }), want{Role: RoleNone}},
		{"wrong service", with(append1, func(s *ruleSpan) { s.service = "billing" }), want{Role: RoleNone}},
		{"attribute value differs", with(append1, func(s *ruleSpan) { s.attrs["db.system"] = "mysql" }), want{Role: RoleNone}},
		{"required attribute missing", with(append1, func(s *ruleSpan) { delete(s.attrs, "evt_id") }), want{Role: RoleNone}},
		{"rule wins over cqrs.operation", with(append1, func(s *ruleSpan) { s.attrs["cqrs.operation"] = "query" }),
			want{RoleAppend, "appends", "e-1", "OrderPlaced", "order-1", "", "", 4}},
		{"field unset: read by the conventions", with(append1, func(s *ruleSpan) { delete(s.attrs, "evt_name"); s.attrs["cqrs.event.type"] = "T" }),
			want{RoleAppend, "appends", "e-1", "T", "order-1", "", "", 4}},
		{"capture group", ruleSpan{service: "api", name: "handle_CreateOrder", kind: ptrace.SpanKindServer},
			want{Role: RoleCommand, Rule: "handlers", Command: "CreateOrder"}},
		{"regex does not match", ruleSpan{service: "api", name: "xhandle_CreateOrder", kind: ptrace.SpanKindServer}, want{Role: RoleNone}},
		{"first match wins", ruleSpan{service: "api", name: "handle_GET /health"}, want{Role: RoleCommand, Rule: "handlers", Command: "GET /health"}},
		{"ignore wins over the conventions", ruleSpan{service: "api", name: "GET /health", kind: ptrace.SpanKindProducer}, want{Role: RoleNone, Rule: "health"}},
		{"service regex and resource field", ruleSpan{service: "orders-projector", resAttrs: map[string]any{"service.namespace": "shop"}, name: "on event",
			kind: ptrace.SpanKindConsumer, attrs: map[string]any{"evt_id": "e-1"}}, want{Role: RoleProject, Rule: "projectors", EventID: "e-1", Proj: "shop"}},
		{"no rule: conventions", ruleSpan{service: "api", name: "store", kind: ptrace.SpanKindProducer, attrs: map[string]any{"event.id": "e-2"}},
			want{Role: RoleAppend, EventID: "e-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, service, sp := tt.span.build()
			b := ruleBatch(res, sp)
			bs, attrs := &b.Spans[0], b.SpanAttributes(&b.Spans[0])
			var rsc ruleScratch
			rules.resource(&rsc, b.ResourceAttributes(b.Resources[0]), service)
			var a spanAttrs
			a.read(attrs)
			role, i := classifyRules(rules, &rsc, bs, attrs, &a)
			got := want{Role: role, EventID: a.eventID, EventType: a.eventType, AggID: a.aggID, Command: a.command, Proj: a.projection, Version: a.version}
			if i >= 0 {
				got.Rule = rules.rules[i].name
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
}

func clone2(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestRuleValidation checks every error Validate gives for rules against
// testdata/rule_errors.golden (-update rewrites it): each names the rule
// and key.
func TestRuleValidation(t *testing.T) {
	tests := []struct {
		name, yaml string
	}{
		{"no name", `[{role: append}]`},
		{"duplicate name", `[{name: a, role: append}, {name: a, role: project}]`},
		{"unknown role", `[{name: appends, role: apend}]`},
		{"unknown kind", `[{name: appends, role: append, match: {kind: clinet}}]`},
		{"bad span regex", `[{name: appends, role: append, match: {span_name_regex: "("}}]`},
		{"bad service regex", `[{name: appends, role: append, match: {service_regex: "[a-"}}]`},
		{"name and regex", `[{name: appends, role: append, match: {span_name: a, span_name_regex: b}}]`},
		{"service and regex", `[{name: appends, role: append, match: {service: a, service_regex: b}}]`},
		{"unknown field", `[{name: appends, role: append, fields: {event: evt_id}}]`},
		{"empty field", `[{name: appends, role: append, fields: {event_id: ""}}]`},
		{"group without regex", `[{name: appends, role: append, fields: {event_id: $1}}]`},
		{"group out of range", `[{name: appends, role: append, match: {span_name_regex: "^a(b)$"}, fields: {event_id: $2}}]`},
		{"not a group", `[{name: appends, role: append, match: {span_name_regex: "^a(b)$"}, fields: {event_id: $x}}]`},
		{"empty resource key", `[{name: appends, role: append, fields: {event_id: "resource:"}}]`},
		{"empty attribute key", `[{name: appends, role: append, match: {attributes: {"": x}}}]`},
	}
	var b strings.Builder
	for _, tt := range tests {
		cfg := DefaultConfig()
		if err := yaml.Unmarshal([]byte(tt.yaml), &cfg.Rules); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		err := cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate() = nil, want an error", tt.name)
			continue
		}
		b.WriteString("# " + tt.name + "\n" + err.Error() + "\n\n")
	}
	path := filepath.Join("testdata", "rule_errors.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b.String(), string(want)); diff != "" {
		t.Errorf("rule errors differ from %s (-got +want):\n%s", path, diff)
	}
}

// TestReadsIncludesRules: the selective decoder keeps what rules read.
func TestReadsIncludesRules(t *testing.T) {
	sel := issueConfig(t).Reads()
	for _, k := range []string{"db.system", "evt_id", "evt_name", "stream_id", "stream_rev"} {
		if !contains(sel.SpanAttributes, k) {
			t.Errorf("Reads().SpanAttributes lacks %q", k)
		}
	}
	if !contains(sel.ResourceAttributes, "service.namespace") || !contains(sel.ResourceAttributes, "service.name") {
		t.Errorf("Reads().ResourceAttributes = %v, want service.name and service.namespace", sel.ResourceAttributes)
	}
	if got, want := len(DefaultConfig().Reads().SpanAttributes), len(spanAttributeKeys); got != want {
		t.Errorf("with no rules, %d span attributes read, want %d", got, want)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRuleNameCacheBounded: long span names are matched but not cached,
// so hostile names cannot grow the per-scratch cache past its bound.
func TestRuleNameCacheBounded(t *testing.T) {
	rules, err := compileRules([]Rule{{Name: "handlers", Match: RuleMatch{SpanNameRegex: `^handle_(.+)$`}, Role: "command", Fields: map[string]string{"command": "$1"}}})
	if err != nil {
		t.Fatal(err)
	}
	var rsc ruleScratch
	rules.resource(&rsc, nil, "svc")
	for n := range 3 * maxNameCache {
		name := "handle_" + strings.Repeat("x", n%2*maxCachedName) + strconv.Itoa(n)
		sp := &spanbatch.Span{Name: name}
		if i, _ := rules.match(&rsc, sp, nil); i != 0 {
			t.Fatalf("%q: rule %d, want 0", name, i)
		}
	}
	if got := len(rsc.names); got > maxNameCache {
		t.Errorf("cache holds %d names, want at most %d", got, maxNameCache)
	}
	for k := range rsc.names {
		if len(k.name) > maxCachedName {
			t.Fatalf("cached a %d-byte name", len(k.name))
		}
	}
}

// TestAttrCondHolds checks a rule's attribute condition against a value of
// every attribute type, as a Batch holds it: a value compares as its type
// reads the condition; maps, slices, bytes and empty values only match
// "*".
func TestAttrCondHolds(t *testing.T) {
	pmap := pcommon.NewValueMap()
	pmap.Map().PutStr("a", "b")
	pslice := pcommon.NewValueSlice()
	pslice.Slice().AppendEmpty().SetStr("a")
	mapV, sliceV := spanbatch.ValueOf(pmap), spanbatch.ValueOf(pslice)
	tests := []struct {
		name string
		cond string
		v    spanbatch.Value
		want bool
	}{
		{"string equal", "postgresql", spanbatch.StrValue("postgresql"), true},
		{"string differs", "postgresql", spanbatch.StrValue("mysql"), false},
		{"string of digits", "3", spanbatch.StrValue("3"), true},
		{"string any", "*", spanbatch.StrValue(""), true},
		{"int equal", "3", spanbatch.IntValue(3), true},
		{"int differs", "3", spanbatch.IntValue(4), false},
		{"int against a float", "3.0", spanbatch.IntValue(3), false},
		{"int against a word", "three", spanbatch.IntValue(3), false},
		{"int any", "*", spanbatch.IntValue(0), true},
		{"double equal", "1.5", spanbatch.DoubleValue(1.5), true},
		{"double of an integer", "3", spanbatch.DoubleValue(3), true},
		{"double differs", "1.5", spanbatch.DoubleValue(2), false},
		{"double NaN", "NaN", spanbatch.DoubleValue(math.NaN()), true},
		{"double against a word", "x", spanbatch.DoubleValue(0), false},
		{"bool true", "true", spanbatch.BoolValue(true), true},
		{"bool as 1", "1", spanbatch.BoolValue(true), true},
		{"bool false", "false", spanbatch.BoolValue(false), true},
		{"bool differs", "false", spanbatch.BoolValue(true), false},
		{"bool against a word", "yes", spanbatch.BoolValue(true), false},
		{"bytes never equal", "abc", spanbatch.BytesValue([]byte("abc")), false},
		{"bytes any", "*", spanbatch.BytesValue([]byte("abc")), true},
		{"map never equal", mapV.AsString(), mapV, false},
		{"map any", "*", mapV, true},
		{"slice never equal", sliceV.AsString(), sliceV, false},
		{"slice any", "*", sliceV, true},
		{"empty never equal", "", spanbatch.Value{}, false},
		{"empty any", "*", spanbatch.Value{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newAttrCond(0, tt.cond)
			if got := c.holds(tt.v); got != tt.want {
				t.Errorf("condition %q holds for %v (%s) = %v, want %v", tt.cond, tt.v.AsString(), tt.v.Type, got, tt.want)
			}
		})
	}
}
