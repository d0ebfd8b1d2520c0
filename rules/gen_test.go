package rules

import (
	"bytes"
	"encoding/binary"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// update rewrites the fixtures from the builders below:
// go test ./rules/ -run TestProfiles -update
var update = flag.Bool("update", false, "rewrite rules/testdata/*.jsonl from the fixture builders")

// epoch is the fixtures' time zero (2026-11-26T00:00:00Z, as the repository's
// other fixtures).
var epoch = time.Unix(1795780800, 0)

// span is one span of a fixture: times in ms after epoch, ids small numbers
// made unique per fixture by fixture.tag.
type span struct {
	svc        string
	res        map[string]any // resource attributes besides service.name
	scope      string
	name       string
	kind       ptrace.SpanKind
	trace      uint16
	id, parent uint16
	start, end float64 // ms
	attrs      map[string]any
	links      [][2]uint16 // (trace, span)
}

type fixture struct {
	tag   byte
	spans []span
}

func (f fixture) traceID(t uint16) pcommon.TraceID {
	var id pcommon.TraceID
	id[0] = f.tag
	binary.BigEndian.PutUint16(id[14:], t)
	return id
}

func (f fixture) spanID(t, s uint16) pcommon.SpanID {
	var id pcommon.SpanID
	id[0] = f.tag
	binary.BigEndian.PutUint16(id[4:], t)
	binary.BigEndian.PutUint16(id[6:], s)
	return id
}

func ts(ms float64) pcommon.Timestamp {
	return pcommon.NewTimestampFromTime(epoch.Add(time.Duration(ms * float64(time.Millisecond))))
}

func putAttrs(m pcommon.Map, attrs map[string]any) {
	// Sorted: the fixture bytes must not depend on map order.
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		switch v := attrs[k].(type) {
		case string:
			m.PutStr(k, v)
		case int:
			m.PutInt(k, int64(v))
		case bool:
			m.PutBool(k, v)
		case []string:
			s := m.PutEmptySlice(k)
			for _, e := range v {
				s.AppendEmpty().SetStr(e)
			}
		default:
			panic("fixture attribute of unknown type: " + k)
		}
	}
}

// jsonl encodes the fixture one span per request (line), in the order
// given: lagscope must join them in any order and request.
func (f fixture) jsonl(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	var m ptrace.JSONMarshaler
	for _, s := range f.spans {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", s.svc)
		putAttrs(rs.Resource().Attributes(), s.res)
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName(s.scope)
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(f.traceID(s.trace))
		sp.SetSpanID(f.spanID(s.trace, s.id))
		if s.parent != 0 {
			sp.SetParentSpanID(f.spanID(s.trace, s.parent))
		}
		sp.SetName(s.name)
		sp.SetKind(s.kind)
		sp.SetStartTimestamp(ts(s.start))
		sp.SetEndTimestamp(ts(s.end))
		putAttrs(sp.Attributes(), s.attrs)
		for _, l := range s.links {
			ln := sp.Links().AppendEmpty()
			ln.SetTraceID(f.traceID(l[0]))
			ln.SetSpanID(f.spanID(l[0], l[1]))
		}
		b, err := m.MarshalTraces(td)
		if err != nil {
			t.Fatalf("encode fixture: %v", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// fixturePath returns the fixture file of a profile, first rewriting it
// with -update. Without -update the file must hold what the builder gives
// (a fixture edited by hand, or a builder changed without -update, fails).
func fixturePath(t *testing.T, name string, f fixture) string {
	t.Helper()
	path := filepath.Join("testdata", name+".jsonl")
	want := f.jsonl(t)
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatalf("write fixture: %v", err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read fixture (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from its builder: run go test ./rules/ -update", path)
	}
	return path
}
