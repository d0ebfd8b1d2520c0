package analyzer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// cqrsRequests builds n export requests of tracesPer traces each, shaped like
// a CQRS system's: command, append, two projections, a query, and as many
// unrelated spans (HTTP server and DB client) in every trace.
func cqrsRequests(n, tracesPer int) []ptrace.Traces {
	var out []ptrace.Traces
	ms := time.Millisecond
	for r := 0; r < n; r++ {
		var specs []spanSpec
		for i := 0; i < tracesPer; i++ {
			tr := r*tracesPer + i
			id := fmt.Sprintf("evt-%08d", tr)
			specs = append(specs,
				spanSpec{trace: tr, span: 1, parent: -1, kind: ptrace.SpanKindServer, end: 60 * ms, attrs: map[string]any{"http.route": "/orders", "http.request.method": "POST"}},
				command(tr, 2, "CreateOrder", ms, 50*ms),
				spanSpec{trace: tr, span: 3, parent: 2, kind: ptrace.SpanKindClient, start: 2 * ms, end: 9 * ms, attrs: map[string]any{"db.system": "sqlite", "db.operation.name": "SELECT"}},
				appendSpan(tr, 4, 2, id, "OrderCreated", 10*ms, 20*ms),
				spanSpec{trace: tr, span: 5, parent: 4, kind: ptrace.SpanKindClient, start: 11 * ms, end: 19 * ms, attrs: map[string]any{"db.system": "sqlite", "db.operation.name": "INSERT"}},
				project(tr, 6, 4, id, "OrderCreated", "orders_view", 30*ms, 40*ms),
				project(tr, 7, 4, id, "OrderCreated", "sales_summary", 30*ms, 45*ms),
				spanSpec{trace: tr, span: 8, parent: 6, kind: ptrace.SpanKindClient, start: 31 * ms, end: 39 * ms, attrs: map[string]any{"db.system": "sqlite"}},
				spanSpec{trace: tr, span: 9, parent: -1, kind: ptrace.SpanKindServer, start: 50 * ms, end: 55 * ms, attrs: map[string]any{"http.route": "/orders/{id}"}},
				spanSpec{trace: tr, span: 10, parent: 9, start: 51 * ms, end: 54 * ms,
					attrs: map[string]any{"cqrs.operation": "query", "cqrs.query.name": "GetOrder", "cqrs.aggregate.id": "order-" + id, "cqrs.aggregate.version": int64(1)}},
			)
		}
		out = append(out, traces("orders", specs...))
	}
	return out
}

// renumber gives every event of the requests a new id, so that a benchmark
// cycling over them never replays an event the join already holds.
func renumber(reqs []ptrace.Traces, cycle int) {
	for _, td := range reqs {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			spans := rss.At(i).ScopeSpans().At(0).Spans()
			for k := 0; k < spans.Len(); k++ {
				attrs := spans.At(k).Attributes()
				if v, ok := attrs.Get("cqrs.event.id"); ok {
					v.SetStr(fmt.Sprintf("c%d-%s", cycle, v.Str()))
				}
				if v, ok := attrs.Get("cqrs.aggregate.id"); ok {
					v.SetStr(fmt.Sprintf("c%d-%s", cycle, v.Str()))
				}
			}
		}
	}
}

func benchmarkConsume(b *testing.B, reqs []ptrace.Traces) {
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	spansPer := 0
	for _, td := range reqs {
		spansPer += td.SpanCount()
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	spans := 0
	for i := 0; i < b.N; i++ {
		if i > 0 && i%len(reqs) == 0 {
			b.StopTimer()
			renumber(reqs, i/len(reqs))
			a.Tick(time.Now())
			b.StartTimer()
		}
		td := reqs[i%len(reqs)]
		if err := a.ConsumeTraces(ctx, td); err != nil {
			b.Fatal(err)
		}
		spans += td.SpanCount()
	}
	b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
	b.ReportMetric(float64(spans)/float64(b.N), "spans/op")
}

// BenchmarkConsumeCQRS measures analysis alone (decoded traces in, join state
// and metrics updated) on a CQRS-shaped stream: half the spans have a role.
func BenchmarkConsumeCQRS(b *testing.B) {
	benchmarkConsume(b, cqrsRequests(200, 10))
}

// BenchmarkConsumeUnrelated measures spans without a role: the cost lagscope
// adds to telemetry it has nothing to do with. It should allocate nothing.
func BenchmarkConsumeUnrelated(b *testing.B) {
	var reqs []ptrace.Traces
	for r := 0; r < 100; r++ {
		var specs []spanSpec
		for i := 0; i < 100; i++ {
			specs = append(specs, spanSpec{trace: r*100 + i, span: 1, parent: 7, kind: ptrace.SpanKindServer,
				attrs: map[string]any{"http.route": "/x", "http.request.method": "GET", "server.address": "a", "url.scheme": "http"}})
		}
		reqs = append(reqs, traces("svc", specs...))
	}
	benchmarkConsume(b, reqs)
}
