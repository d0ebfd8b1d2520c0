package spanbatch_test

import (
	"errors"
	"io"
	"math"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/tracefile"
)

// TestValueAsString checks that a Value reads and formats as the pdata
// value it was made of.
func TestValueAsString(t *testing.T) {
	m := pcommon.NewMap()
	m.PutStr("str", "a")
	m.PutStr("empty-str", "")
	m.PutInt("int", -42)
	m.PutInt("int-max", math.MaxInt64)
	m.PutDouble("double", 1.5)
	m.PutDouble("double-big", 1e21)
	m.PutDouble("double-nan", math.NaN())
	m.PutDouble("double-inf", math.Inf(-1))
	m.PutBool("true", true)
	m.PutBool("false", false)
	m.PutEmptyBytes("bytes").FromRaw([]byte{0, 1, 0xff})
	m.PutEmpty("empty")
	m.PutEmptyMap("map").PutStr("k", "v")
	m.PutEmptySlice("slice").AppendEmpty().SetInt(3)
	for k, v := range m.All() {
		t.Run(k, func(t *testing.T) {
			got := spanbatch.ValueOf(v)
			if got.Type != v.Type() {
				t.Errorf("Type = %v, want %v", got.Type, v.Type())
			}
			if got.AsString() != v.AsString() {
				t.Errorf("AsString = %q, want %q", got.AsString(), v.AsString())
			}
			if got.Str() != v.Str() || got.Int() != v.Int() || got.Bool() != v.Bool() {
				t.Errorf("Str, Int, Bool = %q, %d, %v, want %q, %d, %v", got.Str(), got.Int(), got.Bool(), v.Str(), v.Int(), v.Bool())
			}
			if d, w := got.Double(), v.Double(); d != w && !(math.IsNaN(d) && math.IsNaN(w)) {
				t.Errorf("Double = %v, want %v", d, w)
			}
			if v.Type() == pcommon.ValueTypeBytes && string(got.Bytes()) != string(v.Bytes().AsRaw()) {
				t.Errorf("Bytes = %v, want %v", got.Bytes(), v.Bytes().AsRaw())
			}
		})
	}
}

// keep names what a Filter keeps.
type keep struct{ res, span, events, eventAttrs map[string]bool }

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func (k keep) filter() spanbatch.Filter {
	return spanbatch.NewKeys(keys(k.res), keys(k.span), keys(k.events), keys(k.eventAttrs))
}

// TestRoundTrip checks, on every fixture, that ToTraces keeps all a Batch
// holds (FromTraces of it is the Batch again) and that a Filter keeps what
// it names and nothing else.
func TestRoundTrip(t *testing.T) {
	files, err := filepath.Glob("../testdata/*.jsonl")
	if err != nil || len(files) < 5 {
		t.Fatalf("fixtures: %v, %d files", err, len(files))
	}
	f := keep{
		res:        map[string]bool{"service.name": true},
		span:       map[string]bool{"cqrs.operation": true, "cqrs.event.id": true, "event.id": true, "messaging.operation.type": true},
		events:     map[string]bool{"cqrs.event": true},
		eventAttrs: map[string]bool{"cqrs.event.id": true},
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r, err := tracefile.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			spans := 0
			for {
				td, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, flt := range []spanbatch.Filter{nil, f.filter()} {
					var b, again spanbatch.Batch
					b.FromTraces(td, flt)
					if b.SpanCount() != td.SpanCount() {
						t.Fatalf("SpanCount = %d, want %d", b.SpanCount(), td.SpanCount())
					}
					again.FromTraces(b.ToTraces(), nil)
					if diff := cmp.Diff(b, again, cmp.AllowUnexported(spanbatch.Value{})); diff != "" {
						t.Fatalf("FromTraces(ToTraces(b)) differs (-b +again):\n%s", diff)
					}
					b.Reset()
					if b.SpanCount() != 0 || len(b.SpanAttrs) != 0 || len(b.Resources) != 0 {
						t.Fatal("Reset left items")
					}
				}
				var b spanbatch.Batch
				b.FromTraces(td, f.filter())
				checkFiltered(t, &b, f)
				spans += td.SpanCount()
			}
			if spans == 0 {
				t.Fatal("no spans read")
			}
		})
	}
}

func checkFiltered(t *testing.T, b *spanbatch.Batch, f keep) {
	t.Helper()
	for _, kv := range b.ResourceAttrs {
		if !f.res[kv.Key] {
			t.Errorf("resource attribute %q kept", kv.Key)
		}
	}
	for _, kv := range b.SpanAttrs {
		if !f.span[kv.Key] {
			t.Errorf("span attribute %q kept", kv.Key)
		}
	}
	for _, e := range b.Events {
		if !f.events[e.Name] {
			t.Errorf("event %q kept", e.Name)
		}
	}
}

// TestTraceState checks that only a tracestate that may carry a sampling
// threshold is kept.
func TestTraceState(t *testing.T) {
	td := ptrace.NewTraces()
	spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	for _, ts := range []string{"", "vendor=x", "ot=th:8;rv:1", "a=b,ot=th:c"} {
		sp := spans.AppendEmpty()
		sp.SetSpanID([8]byte{1})
		sp.TraceState().FromRaw(ts)
	}
	var b spanbatch.Batch
	b.FromTraces(td, nil)
	want := []string{"", "", "ot=th:8;rv:1", "a=b,ot=th:c"}
	for i, s := range b.Spans {
		if s.TraceState != want[i] {
			t.Errorf("span %d: TraceState = %q, want %q", i, s.TraceState, want[i])
		}
	}
}

// TestKeys checks that a Keys filter keeps exactly the names it was given,
// among keys that share their length, their first or last 8 bytes.
func TestKeys(t *testing.T) {
	named := []string{"cqrs.event.id", "cqrs.event.type", "service.name", "a", "", "messaging.message.id", "x.y"}
	other := []string{"cqrs.event.ix", "cqrs.event.idd", "cqrs.Event.id", "service.namf", "b", "aa", "messaging.message.idx", "y.x", "cqrs.operation"}
	k := spanbatch.NewKeys(named, named, named, named)
	for _, s := range named {
		if !k.ResourceAttribute(s) || !k.SpanAttribute(s) || !k.EventName(s) || !k.EventAttribute(s) {
			t.Errorf("%q not kept", s)
		}
	}
	for _, s := range other {
		if k.ResourceAttribute(s) || k.SpanAttribute(s) || k.EventName(s) || k.EventAttribute(s) {
			t.Errorf("%q kept", s)
		}
	}
	none := spanbatch.NewKeys(nil, nil, nil, nil)
	for _, s := range append(named, other...) {
		if none.SpanAttribute(s) {
			t.Errorf("%q kept by an empty filter", s)
		}
	}
}

// TestSizes holds the sizes the package and the README state: a Batch's
// memory is mostly its spans and attributes.
func TestSizes(t *testing.T) {
	for _, c := range []struct {
		what      string
		got, want uintptr
	}{
		{"Value", unsafe.Sizeof(spanbatch.Value{}), 32},
		{"KeyValue", unsafe.Sizeof(spanbatch.KeyValue{}), 48},
		{"Span", unsafe.Sizeof(spanbatch.Span{}), 120},
	} {
		if c.got != c.want {
			t.Errorf("%s is %d bytes, want %d", c.what, c.got, c.want)
		}
	}
}
