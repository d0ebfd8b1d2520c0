package analyzer

import (
	"encoding/binary"
	"maps"
	"slices"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// base is the start of the synthetic timeline used by the tests.
var base = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func traceID(n int) pcommon.TraceID {
	var id pcommon.TraceID
	binary.BigEndian.PutUint64(id[8:], uint64(n)+1)
	return id
}

func spanID(n int) pcommon.SpanID {
	var id pcommon.SpanID
	binary.BigEndian.PutUint64(id[:], uint64(n)+1)
	return id
}

// spanSpec describes one span of a test request.
type spanSpec struct {
	trace, span, parent int // parent -1: root
	kind                ptrace.SpanKind
	start, end          time.Duration // offsets from base
	attrs               map[string]any
	links               [][2]int // (trace, span)
	events              []map[string]any
}

// traces builds one export request of a service's spans.
func traces(service string, specs ...spanSpec) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	ss := rs.ScopeSpans().AppendEmpty()
	for _, s := range specs {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(traceID(s.trace))
		sp.SetSpanID(spanID(s.span))
		if s.parent >= 0 {
			sp.SetParentSpanID(spanID(s.parent))
		}
		sp.SetName("span")
		sp.SetKind(s.kind)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(base.Add(s.start)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(base.Add(s.end)))
		putAttrs(sp.Attributes(), s.attrs)
		for _, l := range s.links {
			ln := sp.Links().AppendEmpty()
			ln.SetTraceID(traceID(l[0]))
			ln.SetSpanID(spanID(l[1]))
		}
		for _, e := range s.events {
			ev := sp.Events().AppendEmpty()
			ev.SetName("cqrs.event")
			putAttrs(ev.Attributes(), e)
		}
	}
	return td
}

// putAttrs puts attrs in m in the order of their keys, so that a request
// built twice encodes the same (the seed corpus is compared byte for byte).
func putAttrs(m pcommon.Map, attrs map[string]any) {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if err := m.PutEmpty(k).FromRaw(attrs[k]); err != nil {
			panic(err)
		}
	}
}

func command(trace, span int, name string, start, end time.Duration) spanSpec {
	return spanSpec{trace: trace, span: span, parent: -1, start: start, end: end,
		attrs: map[string]any{"cqrs.operation": "command", "cqrs.command.name": name}}
}

func appendSpan(trace, span, parent int, id, typ string, start, end time.Duration) spanSpec {
	return spanSpec{trace: trace, span: span, parent: parent, start: start, end: end,
		attrs: map[string]any{"cqrs.operation": "append", "cqrs.event.id": id, "cqrs.event.type": typ,
			"cqrs.aggregate.type": "Order", "cqrs.aggregate.id": "order-" + id, "cqrs.aggregate.version": int64(1)}}
}

func project(trace, span, parent int, id, typ, projection string, start, end time.Duration) spanSpec {
	return spanSpec{trace: trace, span: span, parent: parent, kind: ptrace.SpanKindConsumer, start: start, end: end,
		attrs: map[string]any{"cqrs.operation": "project", "cqrs.event.id": id, "cqrs.event.type": typ, "cqrs.projection": projection}}
}
