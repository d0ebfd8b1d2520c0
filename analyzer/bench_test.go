package analyzer

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/synth"
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

// renumber gives every event of the requests a new id, and every span a new
// trace id, so that a benchmark cycling over them never replays an event the
// join already holds, nor a span the resolver would take for a retry. It
// replaces the prefix of an earlier cycle rather than adding to it, so that
// ids keep their length however long the benchmark runs.
func renumber(reqs []ptrace.Traces, cycle int) {
	for _, td := range reqs {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			spans := rss.At(i).ScopeSpans().At(0).Spans()
			for k := 0; k < spans.Len(); k++ {
				tid := spans.At(k).TraceID()
				binary.BigEndian.PutUint32(tid[:4], uint32(cycle))
				spans.At(k).SetTraceID(tid)
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
	consumeEach(b, a, reqs, refill, func(ctx context.Context, td ptrace.Traces) (int, error) {
		return td.SpanCount(), a.ConsumeTraces(ctx, td)
	})
}

// consumeBatchLoop is consumeLoop of batches.
func consumeBatchLoop(b *testing.B, a *Analyzer, reqs []*spanbatch.Batch, refill func(cycle int)) {
	consumeEach(b, a, reqs, refill, func(ctx context.Context, sb *spanbatch.Batch) (int, error) {
		return sb.SpanCount(), a.ConsumeBatch(ctx, sb)
	})
}

// consumeEach is consumeLoop of requests of type R, which consume hands to
// the analyzer and reports the spans of.
func consumeEach[R any](b *testing.B, a *Analyzer, reqs []R, refill func(cycle int), consume func(context.Context, R) (int, error)) {
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
		n, err := consume(ctx, reqs[i%len(reqs)])
		if err != nil {
			b.Fatal(err)
		}
		spans += n
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

// BenchmarkConsumeBatch is BenchmarkConsumeSynth with the requests given
// as the batches the collector's selective decoder makes (converted with
// FromTraces outside the timer): the analysis alone, without pdata.
func BenchmarkConsumeBatch(b *testing.B) {
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	g := synth.New(synth.Config{})
	reqs := synthRequests(g, 64, time.Now())
	filter := a.cfg.Reads().Filter()
	batches := make([]*spanbatch.Batch, len(reqs))
	convert := func() {
		for i, td := range reqs {
			if batches[i] == nil {
				batches[i] = new(spanbatch.Batch)
			}
			batches[i].Reset()
			batches[i].FromTraces(td, filter)
		}
	}
	convert()
	consumeBatchLoop(b, a, batches, func(int) {
		now := time.Now()
		for _, td := range reqs {
			g.Refill(td, now)
		}
		convert()
	})
}

// BenchmarkSynthRefill measures what giving a request new traces costs: the
// scaling benchmarks do it untimed, between phases.
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
	cfg.Join.Expected = map[string][]string{"OrderPlaced": {"orders_view", "sales_summary"}}
	cfg.Join.Shards = 1
	cfg.Join.MaxPendingEvents = n
	facts := make([]Fact, 1024)
	var perEvent float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		jn, err := NewJoiner(cfg, nil, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		j := jn.shards[0]
		at := time.Now()
		now := at.UnixNano()
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
			jn.Apply(facts, at)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := j.recent.len(); got != n {
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

// phaseWorkers is the number of concurrent requests in a phase of the
// scaling benchmarks, as from several receiver streams, and phaseRequests
// the requests each analyses in a phase.
const (
	phaseWorkers  = 4
	phaseRequests = 16
)

// phase is one side of a benchmark that compares two ways of running the
// analysis in alternating phases of one run.
type phase struct {
	procs int  // GOMAXPROCS during the phase
	spin  bool // spinLocks during the phase
	a     *Analyzer
	ws    []phaseWorker
	d     time.Duration
	spans int // per phase
}

type phaseWorker struct {
	g    *synth.Generator
	reqs []ptrace.Traces
}

// newPhase returns a phase that runs with procs on a, from its own synth
// streams (base+1 onwards).
func newPhase(procs int, a *Analyzer, base uint32) *phase {
	ph := &phase{procs: procs, a: a, ws: make([]phaseWorker, phaseWorkers)}
	now := time.Now()
	for i := range ph.ws {
		g := synth.New(synth.Config{Stream: base + uint32(i) + 1})
		ph.ws[i] = phaseWorker{g: g, reqs: synthRequests(g, phaseRequests, now)}
		for _, td := range ph.ws[i].reqs {
			ph.spans += td.SpanCount()
		}
	}
	return ph
}

// run analyses the phase's requests from its workers with GOMAXPROCS set,
// and adds the time it took to ph.d.
func (ph *phase) run(b *testing.B) {
	runtime.GOMAXPROCS(ph.procs)
	spinLocks = ph.spin
	defer func() { spinLocks = false }()
	ctx := context.Background()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ph.ws {
		wg.Go(func() {
			for _, td := range ph.ws[i].reqs {
				if err := ph.a.ConsumeTraces(ctx, td); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	ph.d += time.Since(start)
}

// refill gives the phase's requests new traces.
func (ph *phase) refill() {
	now := time.Now()
	for _, w := range ph.ws {
		for _, td := range w.reqs {
			w.g.Refill(td, now)
		}
	}
}

// rate returns the phase's spans per second over n rounds.
func (ph *phase) rate(n int) float64 { return float64(ph.spans*n) / ph.d.Seconds() }

// alternate runs b.N rounds of the phases, one after the other, refilling
// a phase's requests before it runs (untimed) so that no trace is analysed
// twice, and restores GOMAXPROCS.
func alternate(b *testing.B, phases ...*phase) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, ph := range phases {
			b.StopTimer()
			ph.refill()
			b.StartTimer()
			ph.run(b)
		}
	}
	b.StopTimer()
}

// BenchmarkConsumeScaling measures how analysis scales from one core to two,
// as a ratio in one run: each op is a round in which the same workers
// analyse new requests with GOMAXPROCS=1, then with GOMAXPROCS=2, into one
// analyzer made with GOMAXPROCS=2 (so with that default number of shards);
// each phase is timed alone, so that other work on the machine slows both
// alike. It reports both rates and their ratio (speedup); the target is 1.7
// or more on two free cores. With GOMAXPROCS=1 lagscope runs one shard, not
// the 16 of this analyzer: BenchmarkConsumeShards measures what that
// changes on one core.
func BenchmarkConsumeScaling(b *testing.B) {
	prev := runtime.GOMAXPROCS(2)
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	runtime.GOMAXPROCS(prev)
	if err != nil {
		b.Fatal(err)
	}
	one, two := newPhase(1, a, 0), newPhase(2, a, 0)
	two.ws = one.ws // the same workers and streams
	alternate(b, one, two)
	b.ReportMetric(one.rate(b.N), "spans/s-1cpu")
	b.ReportMetric(two.rate(b.N), "spans/s-2cpu")
	b.ReportMetric(two.rate(b.N)/one.rate(b.N), "speedup")
}

// BenchmarkConsumeShards measures, on one core and as a ratio in one run,
// the analysis with the shards lagscope runs at GOMAXPROCS=2 (16) against
// the one shard it runs at GOMAXPROCS=1: alternating phases, each into its
// own analyzer.
func BenchmarkConsumeShards(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Join.Shards = 1
	a1, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	prev := runtime.GOMAXPROCS(2)
	a16, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	runtime.GOMAXPROCS(prev)
	if err != nil {
		b.Fatal(err)
	}
	one, many := newPhase(1, a1, 0), newPhase(1, a16, phaseWorkers)
	alternate(b, one, many)
	b.ReportMetric(float64(len(a16.joiner.shards)), "shards")
	b.ReportMetric(one.rate(b.N), "spans/s-1shard")
	b.ReportMetric(many.rate(b.N), "spans/s-shards")
	b.ReportMetric(many.rate(b.N)/one.rate(b.N), "ratio")
}

// BenchmarkLocking measures, as ratios in one run, what spinning locks
// (spinLocks) would earn against the plain locking the analysis uses: the
// Resolver taking the shards a request needs in the order they come free
// (TryLock) and every lock spinning a while before it blocks, against plain
// Lock calls in shard order. Alternating phases at GOMAXPROCS=1 and 2, each variant into
// its own analyzer made with GOMAXPROCS=2 (16 shards), from the same
// workers and streams. It reports the rates and the ratios spin/plain.
func BenchmarkLocking(b *testing.B) {
	var as [4]*Analyzer
	prev := runtime.GOMAXPROCS(2)
	for i := range as {
		a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
		if err != nil {
			runtime.GOMAXPROCS(prev)
			b.Fatal(err)
		}
		as[i] = a
	}
	runtime.GOMAXPROCS(prev)
	spin1, plain1 := newPhase(1, as[0], 0), newPhase(1, as[1], 0)
	spin2, plain2 := newPhase(2, as[2], 0), newPhase(2, as[3], 0)
	spin1.spin, spin2.spin = true, true
	plain1.ws, spin2.ws, plain2.ws = spin1.ws, spin1.ws, spin1.ws // the same workers and streams
	alternate(b, spin1, plain1, spin2, plain2)
	b.ReportMetric(spin1.rate(b.N), "spans/s-spin-1cpu")
	b.ReportMetric(plain1.rate(b.N), "spans/s-plain-1cpu")
	b.ReportMetric(spin2.rate(b.N), "spans/s-spin-2cpu")
	b.ReportMetric(plain2.rate(b.N), "spans/s-plain-2cpu")
	b.ReportMetric(spin1.rate(b.N)/plain1.rate(b.N), "spin/plain-1cpu")
	b.ReportMetric(spin2.rate(b.N)/plain2.rate(b.N), "spin/plain-2cpu")
}

// BenchmarkResolveApply measures, as a ratio in one run, the exported
// two-step path (Resolver.Resolve, whose facts own their strings, then
// Joiner.Apply), as a process of the split would run it less the
// transport, against Analyzer.ConsumeTraces, which passes a request's facts
// without copying them: each op is a round of 16 synth requests through
// each, on one goroutine, alternating, with new traces every round
// (untimed) and a tick after it. It reports both rates and the cost of the
// two-step path per span relative to the Analyzer's (cost).
func BenchmarkResolveApply(b *testing.B) {
	cfg := DefaultConfig()
	a, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := NewResolver(cfg, reg)
	if err != nil {
		b.Fatal(err)
	}
	j, err := NewJoiner(cfg, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	ga, gs := synth.New(synth.Config{Stream: 1}), synth.New(synth.Config{Stream: 2})
	now := time.Now()
	reqsA, reqsS := synthRequests(ga, 16, now), synthRequests(gs, 16, now)
	spans := 0
	for _, td := range reqsA {
		spans += td.SpanCount()
	}
	ctx := context.Background()
	var facts []Fact
	var dA, dS time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		now := time.Now()
		for k := range reqsA {
			ga.Refill(reqsA[k], now)
			gs.Refill(reqsS[k], now)
		}
		b.StartTimer()
		start := time.Now()
		for _, td := range reqsA {
			if err := a.ConsumeTraces(ctx, td); err != nil {
				b.Fatal(err)
			}
		}
		mid := time.Now()
		for _, td := range reqsS {
			facts = r.Resolve(facts[:0], td, mid)
			j.Apply(facts, mid)
		}
		dA, dS = dA+mid.Sub(start), dS+time.Since(mid)
		b.StopTimer()
		a.Tick(time.Now())
		j.Apply(r.Expire(facts[:0], time.Now(), false), time.Now())
		j.Tick(time.Now())
		b.StartTimer()
	}
	b.StopTimer()
	rateA, rateS := float64(spans*b.N)/dA.Seconds(), float64(spans*b.N)/dS.Seconds()
	b.ReportMetric(rateA, "spans/s-analyzer")
	b.ReportMetric(rateS, "spans/s-two-step")
	b.ReportMetric(rateA/rateS, "cost")
}

// benchRules are a handful of rules of the kinds a config file holds: one
// with a regular expression and a capture group, one on the service, and
// attribute conditions, one of which matches spans of cqrsRequests.
var benchRules = []Rule{
	{Name: "appends", Match: RuleMatch{SpanName: "EventStore.Append", Kind: "client", Attributes: map[string]string{"db.system": "postgresql", "evt_id": "*"}},
		Role: "append", Fields: map[string]string{"event_id": "evt_id", "event_type": "evt_name"}},
	{Name: "handlers", Match: RuleMatch{SpanNameRegex: `^handle_(.+)$`}, Role: "command", Fields: map[string]string{"command": "$1"}},
	{Name: "projectors", Match: RuleMatch{ServiceRegex: `-projector$`, Kind: "consumer"}, Role: "project", Fields: map[string]string{"projection": "resource:service.namespace"}},
	{Name: "health", Match: RuleMatch{SpanName: "GET /health"}, Role: "ignore"},
	{Name: "inserts", Match: RuleMatch{Kind: "client", Attributes: map[string]string{"db.system": "sqlite", "db.operation.name": "INSERT"}}, Role: "ignore"},
}

// BenchmarkConsumeRules is BenchmarkConsumeCQRS without rules and with
// benchRules, to compare in one run: what rules cost a span.
func BenchmarkConsumeRules(b *testing.B) {
	for _, bc := range []struct {
		name  string
		rules []Rule
	}{{"none", nil}, {"five", benchRules}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Rules = bc.rules
			a, err := New(cfg, nil, prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			reqs := cqrsRequests(200, 10)
			consumeLoop(b, a, reqs, func(cycle int) { renumber(reqs, cycle) })
		})
	}
}

// BenchmarkJoinedEvents measures the memory of a full joined store: events
// that both expected projections have shown, as BenchmarkPendingEvents's are
// before they do. With aggregates=unique every event has its own aggregate,
// as BenchmarkPendingEvents's, so B/event includes the per-aggregate state
// (the latest version and the last version each projection applied), which
// join.max_pending_events bounds separately; aggregates=none leaves it out:
// the store alone.
func BenchmarkJoinedEvents(b *testing.B) {
	for _, aggs := range []string{"unique", "none"} {
		b.Run("aggregates="+aggs, func(b *testing.B) { benchmarkJoinedEvents(b, aggs == "unique") })
	}
}

func benchmarkJoinedEvents(b *testing.B, aggs bool) {
	const n = 1 << 22
	cfg := DefaultConfig()
	cfg.Join.Expected = map[string][]string{"OrderPlaced": {"orders_view", "sales_summary"}}
	cfg.Join.Shards = 1
	cfg.Join.MaxJoinedEvents = n
	facts := make([]Fact, 3*1024)
	var perEvent float64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		jn, err := NewJoiner(cfg, nil, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		j := jn.shards[0]
		at := time.Now()
		now := at.UnixNano()
		for k := 0; k < n; k += len(facts) / 3 {
			for x := 0; x < len(facts); x += 3 {
				id := uint64(k + x/3)
				f := &facts[x]
				*f = Fact{Kind: FactAppend, EventType: "OrderPlaced", AggregateType: "Order", Version: 1,
					Command: "PlaceOrder", CommandStart: now - 20e6, Start: now - 15e6, End: now - 10e6}
				if aggs {
					f.AggregateID = "order-" + strconv.FormatUint(id, 10)
				}
				putUint64(f.Event[:8], mix64(id))
				putUint64(f.Event[8:], id)
				f.TraceID = f.Event
				for p, name := range []string{"orders_view", "sales_summary"} {
					facts[x+1+p] = Fact{Kind: FactProject, Event: f.Event, TraceID: f.Event, EventType: "OrderPlaced",
						AggregateID: f.AggregateID, Version: 1, Projection: name, Start: now - 5e6, End: now - 1e6}
				}
			}
			jn.Apply(facts, at)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := j.joined.events.len(); got != n {
			b.Fatalf("joined store holds %d events, want %d", got, n)
		}
		if j.recent.live != 0 {
			b.Fatalf("%d events still pending, want 0", j.recent.live)
		}
		perEvent = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(j)
	}
	b.ReportMetric(perEvent, "B/event")
}
