package collector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestStringSet(t *testing.T) {
	long := strings.Repeat("k", 300)
	s := newStringSet([]string{"a.b", "a.c", "", "a.b", "service.name", long})
	tests := []struct {
		key  string
		want bool
	}{
		{"a.b", true},
		{"a.c", true},
		{"a.d", false},
		{"", true},
		{"service.name", true},
		{"service.nam", false},
		{"service.names", false},
		{long, true},
		{long + "k", false},
		{strings.Repeat("k", 299), false},
		{long[:150] + "x" + long[151:], false}, // the same hash as long
	}
	for _, tt := range tests {
		got, ok := s.get([]byte(tt.key))
		if ok != tt.want || (ok && got != tt.key) {
			t.Errorf("get(%.20q) = %.20q, %v; want %v", tt.key, got, ok, tt.want)
		}
	}
	held := 0
	for _, x := range s.slots {
		if x != "" {
			held++
		}
	}
	if held != 4 {
		t.Errorf("the set holds %d non-empty strings, want 4: a duplicate was added", held)
	}
	key := []byte("a.c")
	if allocs := testing.AllocsPerRun(100, func() { s.get(key) }); allocs != 0 {
		t.Errorf("get allocates %v times, want 0", allocs)
	}
}

// TestSelectionIsTheConsumers checks that the selective decoder keeps what
// its Selection names, whatever that is (rules will name keys the built-in
// conventions do not), and nothing else.
func TestSelectionIsTheConsumers(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "orders")
	rs.Resource().Attributes().PutStr("deployment.environment", "prod")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1})
	sp.SetSpanID(pcommon.SpanID{1})
	sp.Attributes().PutStr("cqrs.operation", "append")
	sp.Attributes().PutStr("evt_id", "e-1")
	sp.Attributes().PutStr("evt_name", "OrderPlaced")
	ev := sp.Events().AppendEmpty()
	ev.SetName("cqrs.event")
	ev.Attributes().PutStr("cqrs.event.id", "e-2")
	ev = sp.Events().AppendEmpty()
	ev.SetName("stored")
	ev.Attributes().PutStr("evt_id", "e-3")
	ev.Attributes().PutStr("cqrs.event.id", "e-4")
	buf := mustMarshal(t, td)

	sel := Selection{
		ResourceAttributes: []string{"deployment.environment"},
		SpanAttributes:     []string{"evt_id"},
		EventNames:         []string{"stored"},
		EventAttributes:    []string{"evt_id"},
		Values:             []string{"e-1"},
	}
	b, fb := newSelectiveDecoder(sel).decode(buf)
	if fb != fallbackNone {
		t.Fatalf("declined: %v", fb)
	}
	got := b.ToTraces()
	if diff := cmp.Diff(relevant(got, nil), relevant(td, &sel)); diff != "" {
		t.Errorf("decoded (-got +want):\n%s", diff)
	}
	if n := got.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().Len(); n != 1 {
		t.Errorf("kept %d span attributes, want 1", n)
	}

	// An empty Selection keeps the span fields only.
	b, fb = newSelectiveDecoder(Selection{}).decode(buf)
	if fb != fallbackNone {
		t.Fatalf("declined: %v", fb)
	}
	got = b.ToTraces()
	empty := Selection{ResourceAttributes: []string{}, SpanAttributes: []string{}, EventNames: []string{}, EventAttributes: []string{}}
	if diff := cmp.Diff(relevant(got, nil), relevant(td, &empty)); diff != "" {
		t.Errorf("decoded with an empty Selection (-got +want):\n%s", diff)
	}
}
