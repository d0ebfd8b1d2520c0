// Package synth generates OTLP traces shaped like those of a CQRS +
// event-sourced system, with lags known in advance: for benchmarks, and for
// `lagscope loadgen` to check that a lagscope reports what it was sent.
//
// Every trace has ten spans: five that lagscope's span conventions give a
// role (a command, the append of one event, two projections of it, a query
// that reads it) and five it ignores (two HTTP server spans and three
// database client spans), the mix of a real service's telemetry.
package synth

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Names used in the generated spans; they are what lagscope's metrics are
// labelled with.
const (
	Command       = "PlaceOrder"
	EventType     = "OrderPlaced"
	AggregateType = "Order"
	Query         = "GetOrder"
)

// Projections are the two read models every event is projected to, in the
// order of Lag's p argument.
var Projections = [2]string{"orders_view", "sales_summary"}

// SpansPerTrace is the number of spans in each trace; CQRSSpansPerTrace of
// them have a role.
const (
	SpansPerTrace     = 10
	CQRSSpansPerTrace = 5
)

// Config configures a Generator.
type Config struct {
	// Stream distinguishes generators that must not produce the same trace,
	// span or event ids (one per load generator worker). Default 0.
	Stream uint32
	// TracesPerRequest is the number of traces in each request. Default 50
	// (500 spans, near the OTel SDK's batch of 512).
	TracesPerRequest int
	// Service is the resource's service.name. Default "orders".
	Service string
}

// Generator builds requests. The n-th trace of a generator (counting from 0)
// is the same whenever it is built, except for its timestamps. Not safe for
// concurrent use: give each goroutine its own Stream.
type Generator struct {
	cfg  Config
	next uint64
}

// New returns a Generator for cfg, with defaults for its zero fields.
func New(cfg Config) *Generator {
	if cfg.TracesPerRequest <= 0 {
		cfg.TracesPerRequest = 50
	}
	if cfg.Service == "" {
		cfg.Service = "orders"
	}
	return &Generator{cfg: cfg}
}

// Batch describes what a request holds, so that a receiver's analysis can be
// checked against it.
type Batch struct {
	Traces, Spans int
	// Events is the number of events appended (one per trace).
	Events int
	// LagSum is the sum of the command-to-projection lags of the batch's
	// events, per projection (index as in Projections).
	LagSum [2]time.Duration
}

// Add adds o's counts to b.
func (b *Batch) Add(o Batch) {
	b.Traces += o.Traces
	b.Spans += o.Spans
	b.Events += o.Events
	b.LagSum[0] += o.LagSum[0]
	b.LagSum[1] += o.LagSum[1]
}

// Lag returns the command-to-projection lag of projection p (0 or 1) for the
// n-th trace: whole milliseconds between 20ms and 119ms, so that sums stay
// exact in a float64 of seconds.
func Lag(n uint64, p int) time.Duration {
	x := n*2654435761 + uint64(p)*40503
	return time.Duration(20+x%100) * time.Millisecond
}

// Next returns the next request, with spans that ended shortly before now.
func (g *Generator) Next(now time.Time) (ptrace.Traces, Batch) {
	td := ptrace.NewTraces()
	b := g.AppendTo(td, now)
	return td, b
}

// AppendTo adds the next request's spans to td, as one more resource, and
// returns what they hold.
func (g *Generator) AppendTo(td ptrace.Traces, now time.Time) Batch {
	rs := td.ResourceSpans().AppendEmpty()
	ra := rs.Resource().Attributes()
	ra.PutStr("service.name", g.cfg.Service)
	ra.PutStr("service.version", "1.4.2")
	ra.PutStr("telemetry.sdk.language", "go")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("github.com/lagscope/lagscope/synth")
	spans := ss.Spans()
	spans.EnsureCapacity(g.cfg.TracesPerRequest * SpansPerTrace)
	var b Batch
	for range g.cfg.TracesPerRequest {
		n := g.next
		g.next++
		b.Add(g.trace(spans, n, now))
	}
	return b
}

// ids derives the trace id and event id of trace n.
func (g *Generator) ids(n uint64) (pcommon.TraceID, string) {
	var t pcommon.TraceID
	binary.BigEndian.PutUint32(t[0:4], g.cfg.Stream+1)
	binary.BigEndian.PutUint32(t[4:8], 0x5ca1ab1e)
	binary.BigEndian.PutUint64(t[8:], mix(n))
	// A version 4 UUID made of the trace id's bits.
	var u [16]byte
	copy(u[:], t[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return t, string(s[:])
}

// EventID returns the event id of trace n of a generator with cfg.
func EventID(cfg Config, n uint64) string {
	_, id := New(cfg).ids(n)
	return id
}

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func spanID(n uint64, i int) pcommon.SpanID {
	var s pcommon.SpanID
	binary.BigEndian.PutUint64(s[:], mix(n)^uint64(i+1)<<56|1)
	return s
}

func (g *Generator) trace(spans ptrace.SpanSlice, n uint64, now time.Time) Batch {
	off := spans.Len()
	for range SpansPerTrace {
		spans.AppendEmpty()
	}
	return g.fill(spans, off, n, now, true)
}

// Refill rewrites a request that AppendTo or Next built into the next
// request, as if built at now: new ids, lags and timestamps, the same
// layout. It allocates only the new event and aggregate ids, so that a
// benchmark or load generator spends its time sending, not building. td must
// be unchanged since this generator built it.
func (g *Generator) Refill(td ptrace.Traces, now time.Time) Batch {
	var b Batch
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		spans := rss.At(i).ScopeSpans().At(0).Spans()
		for off := 0; off+SpansPerTrace <= spans.Len(); off += SpansPerTrace {
			n := g.next
			g.next++
			b.Add(g.fill(spans, off, n, now, false))
		}
	}
	return b
}

// fill writes trace n into spans[off:off+SpansPerTrace]. When fresh, the
// spans are empty and get every field; otherwise they hold an earlier trace
// and get only what differs between traces.
func (g *Generator) fill(spans ptrace.SpanSlice, off int, n uint64, now time.Time, fresh bool) Batch {
	tid, eventID := g.ids(n)
	lag0, lag1 := Lag(n, 0), Lag(n, 1)
	ms := time.Millisecond
	// The trace ends 10ms after its last projection, which ends before now.
	t0 := now.Add(-max(lag0, lag1) - 30*ms)
	agg := "order-" + strconv.FormatUint(uint64(g.cfg.Stream), 10) + "-" + strconv.FormatUint(n, 10)
	ts := func(d time.Duration) pcommon.Timestamp { return pcommon.NewTimestampFromTime(t0.Add(d)) }
	// set writes the i-th span of the trace (i doubles as the span id's
	// salt); its name and kind only when fresh.
	set := func(i, parent int, name string, kind ptrace.SpanKind, start, end time.Duration) (ptrace.Span, pcommon.Map) {
		sp := spans.At(off + i)
		sp.SetTraceID(tid)
		sp.SetSpanID(spanID(n, i))
		if parent >= 0 {
			sp.SetParentSpanID(spanID(n, parent))
		}
		sp.SetStartTimestamp(ts(start))
		sp.SetEndTimestamp(ts(end))
		if fresh {
			sp.SetName(name)
			sp.SetKind(kind)
		}
		return sp, sp.Attributes()
	}
	// Command side: HTTP -> command -> append -> INSERT.
	_, ha := set(0, -1, "POST /orders", ptrace.SpanKindServer, 0, 22*ms)
	_, ca := set(1, 0, Command, ptrace.SpanKindInternal, 1*ms, 20*ms)
	_, aa := set(2, 1, "append "+EventType, ptrace.SpanKindInternal, 5*ms, 15*ms)
	_, ia := set(3, 2, "INSERT events", ptrace.SpanKindClient, 6*ms, 14*ms)
	aa.PutStr("cqrs.event.id", eventID)
	aa.PutStr("cqrs.aggregate.id", agg)
	if fresh {
		ha.PutStr("http.request.method", "POST")
		ha.PutStr("http.route", "/orders")
		ha.PutInt("http.response.status_code", 201)
		ca.PutStr("cqrs.operation", "command")
		ca.PutStr("cqrs.command.name", Command)
		aa.PutStr("cqrs.operation", "append")
		aa.PutStr("cqrs.event.type", EventType)
		aa.PutStr("cqrs.aggregate.type", AggregateType)
		aa.PutInt("cqrs.aggregate.version", 1)
		ia.PutStr("db.system.name", "postgresql")
		ia.PutStr("db.operation.name", "INSERT")
	}
	// Projections, children of the append; each ends at its known lag
	// after the command's start.
	for p, lag := range [2]time.Duration{lag0, lag1} {
		i := 4 + 2*p
		end := 1*ms + lag
		_, pa := set(i, 2, "project "+Projections[p], ptrace.SpanKindConsumer, end-3*ms, end)
		_, ua := set(i+1, i, "UPDATE "+Projections[p], ptrace.SpanKindClient, end-2*ms, end-1*ms)
		pa.PutStr("cqrs.event.id", eventID)
		if fresh {
			pa.PutStr("cqrs.operation", "project")
			pa.PutStr("cqrs.event.type", EventType)
			pa.PutStr("cqrs.projection", Projections[p])
			ua.PutStr("db.system.name", "postgresql")
			ua.PutStr("db.operation.name", "UPDATE")
		}
	}
	// Query side: HTTP GET -> query, once both projections are done.
	qs := 1*ms + max(lag0, lag1) + 2*ms
	_, ga := set(8, -1, "GET /orders/{id}", ptrace.SpanKindServer, qs, qs+5*ms)
	_, qa := set(9, 8, Query, ptrace.SpanKindInternal, qs+1*ms, qs+4*ms)
	qa.PutStr("cqrs.aggregate.id", agg)
	if fresh {
		ga.PutStr("http.request.method", "GET")
		ga.PutStr("http.route", "/orders/{id}")
		ga.PutInt("http.response.status_code", 200)
		qa.PutStr("cqrs.operation", "query")
		qa.PutStr("cqrs.query.name", Query)
		qa.PutInt("cqrs.aggregate.version", 1)
	}
	return Batch{Traces: 1, Spans: SpansPerTrace, Events: 1, LagSum: [2]time.Duration{lag0, lag1}}
}

// String describes a batch for logs.
func (b Batch) String() string {
	return fmt.Sprintf("%d traces, %d spans, %d events", b.Traces, b.Spans, b.Events)
}
