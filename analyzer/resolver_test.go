package analyzer

import (
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// byteRange is the memory of one string of a request.
type byteRange struct{ lo, hi uintptr }

// requestStrings returns where the strings of td live.
func requestStrings(td ptrace.Traces) []byteRange {
	var out []byteRange
	add := func(s string) {
		if s != "" {
			p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
			out = append(out, byteRange{p, p + uintptr(len(s))})
		}
	}
	attrs := func(m pcommon.Map) {
		for _, v := range m.All() {
			if v.Type() == pcommon.ValueTypeStr {
				add(v.Str())
			}
		}
	}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		attrs(rss.At(i).Resource().Attributes())
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				add(sp.Name())
				attrs(sp.Attributes())
				for e := 0; e < sp.Events().Len(); e++ {
					add(sp.Events().At(e).Name())
					attrs(sp.Events().At(e).Attributes())
				}
			}
		}
	}
	return out
}

// TestResolveFactsOwnStrings: no string of a fact Resolve gives points into
// the request it came from, on every fixture.
func TestResolveFactsOwnStrings(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		r, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, td := range readRequests(t, file) {
			ranges := requestStrings(td)
			for _, f := range r.Resolve(nil, td, time.Now()) {
				for name, s := range map[string]string{
					"EventID": f.EventID, "EventType": f.EventType, "AggregateType": f.AggregateType,
					"AggregateID": f.AggregateID, "Command": f.Command, "Projection": f.Projection, "Query": f.Query,
				} {
					if s == "" {
						continue
					}
					checked++
					p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
					for _, br := range ranges {
						if p >= br.lo && p < br.hi {
							t.Fatalf("%s: fact %s %q points into the request", filepath.Base(file), name, s)
						}
					}
				}
			}
		}
		if checked == 0 {
			t.Errorf("%s: no fact strings checked", filepath.Base(file))
		}
	}
}

// TestResolveView: ResolveView gives the facts Resolve gives, on every
// fixture (span links, multi-event producers and parked facts included).
func TestResolveView(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			owned, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			view, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(1795780800, 0)
			n := 0
			for i, td := range readRequests(t, file) {
				want := owned.Resolve(nil, td, now)
				got := view.ResolveView(nil, td, now)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("request %d: ResolveView differs from Resolve (-Resolve +ResolveView):\n%s", i, diff)
				}
				n += len(got)
			}
			if n == 0 {
				t.Error("no facts: the comparison compared nothing")
			}
		})
	}
}
