package analyzer

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer/synth"
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
// cycling over them never replays an event the join already holds. It
// replaces the prefix of an earlier cycle rather than adding to it, so that
// ids keep their length however long the benchmark runs.
func renumber(reqs []ptrace.Traces, cycle int) {
	for _, td := range reqs {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			spans := rss.At(i).ScopeSpans().At(0).Spans()
			for k := 0; k < spans.Len(); k++ {
				attrs := spans.At(k).Attributes()
				for _, name := range []string{"cqrs.event.id", "cqrs.aggregate.id"} {
					if v, ok := attrs.Get(name); ok {
						s := v.Str()
						if i := strings.IndexByte(s, '|'); i >= 0 {
							s = s[i+1:]
						}
						v.SetStr(fmt.Sprintf("c%d|%s", cycle, s))
					}
				}
			}
		}
	}
}

// consumeLoop feeds the analyzer b.N requests, calling refill (timer
// stopped) whenever it has gone through all of them, and reports spans/s and
// allocations per span.
func consumeLoop(b *testing.B, a *Analyzer, reqs []ptrace.Traces, refill func(cycle int)) {
	ctx := context.Background()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	b.ReportAllocs()
	b.ResetTimer()
	spans := 0
	for i := 0; i < b.N; i++ {
		if i > 0 && i%len(reqs) == 0 {
			b.StopTimer()
			runtime.ReadMemStats(&ms)
			before := ms.Mallocs
			refill(i / len(reqs))
			a.Tick(time.Now())
			runtime.ReadMemStats(&ms)
			mallocs += ms.Mallocs - before // not the benchmark's
			b.StartTimer()
		}
		td := reqs[i%len(reqs)]
		if err := a.ConsumeTraces(ctx, td); err != nil {
			b.Fatal(err)
		}
		spans += td.SpanCount()
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
	b.ReportMetric(float64(spans)/float64(b.N), "spans/op")
	b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(spans), "allocs/span")
}

func benchmarkConsume(b *testing.B, reqs []ptrace.Traces) {
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	consumeLoop(b, a, reqs, func(cycle int) { renumber(reqs, cycle) })
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

// synthRequests returns n requests from g, built at now.
func synthRequests(g *synth.Generator, n int, now time.Time) []ptrace.Traces {
	reqs := make([]ptrace.Traces, n)
	for i := range reqs {
		reqs[i], _ = g.Next(now)
	}
	return reqs
}

// BenchmarkConsumeSynth measures analysis alone on the stream `lagscope
// loadgen` sends: requests of 50 ten-span traces, half the spans with a
// role, UUID event ids.
func BenchmarkConsumeSynth(b *testing.B) {
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	g := synth.New(synth.Config{})
	reqs := synthRequests(g, 64, time.Now())
	consumeLoop(b, a, reqs, func(int) {
		now := time.Now()
		for _, td := range reqs {
			g.Refill(td, now)
		}
	})
}

// BenchmarkConsumeParallel measures analysis from concurrent requests, as
// the receivers call it: run with -cpu 1,2 to see how it scales.
func BenchmarkConsumeParallel(b *testing.B) {
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	var stream atomic.Uint32
	var spans atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := synth.New(synth.Config{Stream: stream.Add(1)})
		// One request, refilled with new traces before each call: cheap
		// next to the analysis (see BenchmarkSynthRefill), and outside
		// the analyzer's locks, like a receiver's decoding.
		td, _ := g.Next(time.Now())
		n := 0
		ctx := context.Background()
		for pb.Next() {
			if n > 0 {
				g.Refill(td, time.Now())
			}
			if err := a.ConsumeTraces(ctx, td); err != nil {
				b.Error(err)
				return
			}
			spans.Add(int64(td.SpanCount()))
			n++
		}
	})
	b.ReportMetric(float64(spans.Load())/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkSynthRefill measures what BenchmarkConsumeParallel spends
// outside the analyzer on each request.
func BenchmarkSynthRefill(b *testing.B) {
	g := synth.New(synth.Config{})
	td, _ := g.Next(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		g.Refill(td, time.Now())
	}
	b.ReportMetric(float64(b.N*td.SpanCount())/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkPendingEvents measures the memory of the join store holding a
// million appended events that no projection has shown yet (the events are
// expected by two projections), in bytes per pending event after a GC. Each
// iteration fills a new joiner.
func BenchmarkPendingEvents(b *testing.B) {
	const n = 1 << 20
	cfg := DefaultConfig()
	cfg.Expected = map[string][]string{"OrderPlaced": {"orders_view", "sales_summary"}}
	facts := make([]Fact, 1024)
	var perEvent float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m, err := newMetrics(prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		j := newJoiner(cfg, m)
		now := time.Now().UnixNano()
		for k := 0; k < n; k += len(facts) {
			for x := range facts {
				id := uint64(k + x)
				f := &facts[x]
				*f = Fact{Kind: FactAppend, EventType: "OrderPlaced", AggregateType: "Order",
					AggregateID: "order-" + strconv.FormatUint(id, 10), Version: 1, Command: "PlaceOrder",
					CommandStart: now - 20e6, Start: now - 15e6, End: now - 10e6}
				putUint64(f.Event[:8], mix64(id))
				putUint64(f.Event[8:], id)
				f.TraceID = f.Event
			}
			j.Apply(facts, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := j.events.len(); got != n {
			b.Fatalf("join holds %d events, want %d (evicted)", got, n)
		}
		if p, _ := j.projections.lookup("orders_view"); j.pending[p] != n {
			got := j.pending[p]
			b.Fatalf("orders_view has %d pending, want %d", got, n)
		}
		perEvent = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(j)
	}
	b.ReportMetric(perEvent, "B/event")
}

// BenchmarkConsumeScaling measures how analysis scales from one core to two
// as a ratio in one run: each op is a round that has the same workers
// analyse new requests with GOMAXPROCS=1, then with GOMAXPROCS=2, timing
// each phase alone, so that other work on the machine slows both alike.
// Requests are refilled between phases, untimed. It reports both rates and
// their ratio (speedup); the target is 1.7 or more on two free cores.
func BenchmarkConsumeScaling(b *testing.B) {
	const (
		workers    = 4  // concurrent requests, as from several receiver streams
		perWorker  = 16 // requests each worker analyses in a phase
		phaseProcs = 2
	)
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	type worker struct {
		g    *synth.Generator
		reqs []ptrace.Traces
	}
	ws := make([]worker, workers)
	now := time.Now()
	for i := range ws {
		ws[i].g = synth.New(synth.Config{Stream: uint32(i + 1)})
		ws[i].reqs = synthRequests(ws[i].g, perWorker, now)
	}
	refill := func() {
		now := time.Now()
		for i := range ws {
			for _, td := range ws[i].reqs {
				ws[i].g.Refill(td, now)
			}
		}
	}
	spansPerPhase := 0
	for i := range ws {
		for _, td := range ws[i].reqs {
			spansPerPhase += td.SpanCount()
		}
	}
	phase := func(procs int) time.Duration {
		runtime.GOMAXPROCS(procs)
		ctx := context.Background()
		var wg sync.WaitGroup
		start := time.Now()
		for i := range ws {
			wg.Go(func() {
				for _, td := range ws[i].reqs {
					if err := a.ConsumeTraces(ctx, td); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var d [phaseProcs + 1]time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for procs := 1; procs <= phaseProcs; procs++ {
			b.StopTimer()
			if i > 0 || procs > 1 {
				refill()
			}
			b.StartTimer()
			d[procs] += phase(procs)
		}
	}
	b.StopTimer()
	spans := float64(spansPerPhase * b.N)
	r1, r2 := spans/d[1].Seconds(), spans/d[2].Seconds()
	b.ReportMetric(r1, "spans/s-1cpu")
	b.ReportMetric(r2, "spans/s-2cpu")
	b.ReportMetric(r2/r1, "speedup")
}
