// Command gen writes lagscope's OTLP/JSON trace fixtures and their README.
//
// Run it from the module root:
//
//	go run ./testdata/gen/main.go -out testdata
//
// Each fixture is a .jsonl file holding one OTLP ExportTraceServiceRequest
// (TracesData) per line, marshaled with pdata's ptrace.JSONMarshaler exactly as
// the OpenTelemetry Collector's file exporter writes it. Ids come from
// per-fixture counters and timestamps from a fixed base time, so the output is
// byte-for-byte reproducible.
//
// After writing, gen reads every file back with ptrace.JSONUnmarshaler, checks
// the span counts, runs a small reference implementation of lagscope's span
// contract over the parsed spans and fails if the result differs from the
// expectations written in this file (which are also what the README states).
// The reference analysis runs twice, once in input order and once in
// projection-span end-time order, and the two must agree: fixtures never depend
// on which of the two orders an analyzer uses for duplicates and out-of-order
// detection.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// base is the start of every fixture's timeline.
var base = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

const ms = time.Millisecond

// Instrumentation scopes, named after the libraries that would emit the spans.
const (
	scHTTP  = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	scApp   = "github.com/lagscope/lagscope/orders"
	scProj  = "github.com/lagscope/lagscope/orders/projection"
	scDB    = "github.com/exaring/otelpgx"
	scCache = "github.com/redis/go-redis/extra/redisotel"
	scKafka = "github.com/twmb/franz-go/plugin/kotel"
	scES    = "github.com/kurrent-io/eventstore/otel"
	scJob   = "github.com/lagscope/lagscope/orders/importer"
)

// resource is a service instance exporting spans.
type resource struct {
	service string
	host    string
}

var (
	resAPI       = &resource{"order-api", "api-1"}
	resProjector = &resource{"order-projector", "projector-1"}
	resES        = &resource{"eventstore", "eventstore-1"}
	resConsumer  = &resource{"orders-view", "orders-view-1"}
	resImporter  = &resource{"order-importer", "importer-1"}
	resGateway   = &resource{"api-gateway", "gateway-1"}
	resCatalog   = &resource{"catalog", "catalog-1"}
)

type kv struct {
	k string
	v any // string or int64
}

func s(k, v string) kv       { return kv{k, v} }
func i(k string, v int64) kv { return kv{k, v} }

type spanEvent struct {
	name  string
	at    time.Duration
	attrs []kv
}

type link struct {
	trace [16]byte
	span  [8]byte
}

type span struct {
	res        *resource
	scope      string
	trace      [16]byte
	id         [8]byte
	parent     [8]byte
	name       string
	kind       ptrace.SpanKind
	start, end time.Duration // offsets from base
	attrs      []kv
	events     []spanEvent
	links      []link
	tracestate string // W3C tracestate, e.g. ot=th:8 (sampled at 1/2)
}

func (sp *span) linkTo() link { return link{sp.trace, sp.id} }

// evt is one domain event appended to the event store.
type evt struct {
	id, typ, aggType, aggID string
	version                 int64
}

func (e evt) attrs() []kv {
	return []kv{
		s("cqrs.event.id", e.id),
		s("cqrs.event.type", e.typ),
		s("cqrs.aggregate.type", e.aggType),
		s("cqrs.aggregate.id", e.aggID),
		i("cqrs.aggregate.version", e.version),
	}
}

// fixture is one .jsonl file: its spans in export order plus what lagscope
// must conclude from them.
type fixture struct {
	file     string
	num      byte
	title    string
	scenario string
	notes    []string
	lines    [][]*span
	expect   []projExpect
	// stale and skew are the expected stale reads by query and clock
	// skews by pair of services (issue 14), sorted.
	stale   []staleExpect
	skew    []skewExpect
	queries int // query spans
	events  int // events appended in the whole file
	// sampled fixtures carry sampling thresholds: their expectations
	// include the weighted counts, and queriesWeighted.
	sampled         bool
	queriesWeighted float64
	// rules, when set, is the reference of the fixture's rules (config
	// in config, written next to the fixture): it gives a span its role
	// and sets the cqrs.* attributes the rule's fields read, or returns
	// "" to leave the span to the conventions.
	rules  func(r *rspan) string
	config string

	nTrace, nSpan uint16
}

type projExpect struct {
	projection             string
	appended, projected    int
	unprojected            []string
	duplicated, outOfOrder int
	clockSkew              int
	// broken counts projection spans joined by event id that are neither
	// in the append's trace nor linked to it (broken propagation).
	broken int
	lags   []lagExpect // first projection span per event, in event order
	// weighted are the counts weighted by the adjusted count of the
	// append span's sampling threshold (fixtures with sampled: true).
	weighted weightedExpect
}

type weightedExpect struct {
	appended, projected, unprojected, duplicated float64
}

// staleExpect is the stale reads of one query: how many, and each one's
// staleness (query start - append end of the newest version it did not
// see), in input order.
type staleExpect struct {
	query     string
	staleness []time.Duration
}

// skewExpect is the clock skews from one service's appends to another's
// projection spans: each projection span that started before its append
// ended, by how much, in input order.
type skewExpect struct {
	from, to string
	skews    []time.Duration
}

type lagExpect struct {
	event, eventType, command string
	lag                       time.Duration // negative: clock skew, not observed
}

func (f *fixture) newTrace() [16]byte {
	f.nTrace++
	var t [16]byte
	t[0] = f.num
	binary.BigEndian.PutUint16(t[14:], f.nTrace)
	return t
}

// span creates a span; parent may be nil for a root span.
func (f *fixture) span(trace [16]byte, parent *span, res *resource, scope, name string, kind ptrace.SpanKind, start, end time.Duration, attrs ...kv) *span {
	f.nSpan++
	sp := &span{res: res, scope: scope, trace: trace, name: name, kind: kind, start: start, end: end, attrs: attrs}
	sp.id[0] = f.num
	binary.BigEndian.PutUint16(sp.id[6:], f.nSpan)
	if parent != nil {
		if parent.trace != trace {
			log.Fatalf("%s: span %q: parent in another trace", f.file, name)
		}
		sp.parent = parent.id
	}
	return sp
}

func (f *fixture) eventID(n int) string { return fmt.Sprintf("evt-%02d-%03d", f.num, n) }
func (f *fixture) orderID(n int) string { return fmt.Sprintf("order-%02d%02d", f.num, n) }

func (f *fixture) line(spans ...*span) { f.lines = append(f.lines, spans) }

// Building blocks shared by the CQRS fixtures.

// flow is one HTTP request that runs a command which appends one event.
type flow struct {
	trace          [16]byte
	http, cmd, app *span
	ev             evt
	cmdStart       time.Duration
	appendEnd      time.Duration
}

// commandFlow starts a trace at t0: HTTP server span -> command -> append.
// The HTTP span ends at t0+40ms; callers may extend it.
func (f *fixture) commandFlow(t0 time.Duration, method, route, command string, ev evt) *flow {
	tr := f.newTrace()
	h := f.span(tr, nil, resAPI, scHTTP, method+" "+route, ptrace.SpanKindServer, t0, t0+40*ms,
		s("http.request.method", method), s("http.route", route), s("url.scheme", "https"),
		i("http.response.status_code", 202))
	c := f.span(tr, h, resAPI, scApp, command, ptrace.SpanKindInternal, t0+2*ms, t0+30*ms,
		s("cqrs.operation", "command"), s("cqrs.command.name", command),
		s("cqrs.aggregate.type", ev.aggType), s("cqrs.aggregate.id", ev.aggID))
	a := f.span(tr, c, resAPI, scApp, "append "+ev.typ, ptrace.SpanKindInternal, t0+8*ms, t0+20*ms,
		append([]kv{s("cqrs.operation", "append")}, ev.attrs()...)...)
	return &flow{trace: tr, http: h, cmd: c, app: a, ev: ev, cmdStart: c.start, appendEnd: a.end}
}

// project creates a projection span in the given trace under parent (nil: a
// root span) that ends at end and took 6ms.
func (f *fixture) project(trace [16]byte, parent *span, res *resource, projection string, ev evt, end time.Duration, links ...link) *span {
	sp := f.span(trace, parent, res, scProj, "project "+projection+" "+ev.typ, ptrace.SpanKindConsumer, end-6*ms, end,
		s("cqrs.operation", "project"), s("cqrs.projection", projection),
		s("cqrs.event.id", ev.id), s("cqrs.event.type", ev.typ))
	sp.links = links
	return sp
}

// projectChild projects fl's event as a child of its append span, lag after
// the command start.
func (f *fixture) projectChild(fl *flow, projection string, lag time.Duration) *span {
	return f.project(fl.trace, fl.app, resProjector, projection, fl.ev, fl.cmdStart+lag)
}

func (f *fixture) order(n int, typ string, version int64, ev int) evt {
	return evt{id: f.eventID(ev), typ: typ, aggType: "Order", aggID: f.orderID(n), version: version}
}

// The fixtures.

func happyPath() *fixture {
	f := &fixture{file: "happy_path.jsonl", events: 3, num: 1, title: "Happy path",
		scenario: "Three order commands, each in its own trace: `POST`/`PUT` HTTP server span (order-api) -> command span -> append span (one event) -> " +
			"two project spans in the order-projector service (another resource), children of the append span, for `orders_view` and `sales_summary` -> " +
			"a `GetOrder` query span under the HTTP span that reads the view once `orders_view` has caught up (read-your-writes wait, so the HTTP span lasts until then). " +
			"Each trace is exported as an order-api line then an order-projector line; the last line carries both resources (a collector batch).",
		queries: 3}
	type o struct {
		t0                 time.Duration
		method, route, cmd string
		ev                 evt
		viewLag, salesLag  time.Duration
	}
	orders := []o{
		{0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1), 120 * ms, 340 * ms},
		{10 * time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2), 250 * ms, 1500 * ms},
		{20 * time.Second, "PUT", "/orders/{id}/payment", "PayOrder", f.order(1, "OrderPaid", 2, 3), 80 * ms, 610 * ms},
	}
	var lastAPI, lastProj []*span
	for n, x := range orders {
		fl := f.commandFlow(x.t0, x.method, x.route, x.cmd, x.ev)
		pv := f.projectChild(fl, "orders_view", x.viewLag)
		ps := f.projectChild(fl, "sales_summary", x.salesLag)
		q := f.span(fl.trace, fl.http, resAPI, scApp, "GetOrder", ptrace.SpanKindInternal, pv.end+5*ms, pv.end+8*ms,
			s("cqrs.operation", "query"), s("cqrs.query.name", "GetOrder"),
			s("cqrs.aggregate.id", x.ev.aggID), i("cqrs.aggregate.version", x.ev.version))
		fl.http.end = q.end + 1*ms
		fl.http.attrs[3] = i("http.response.status_code", 200)
		api := []*span{fl.app, fl.cmd, q, fl.http}
		proj := []*span{pv, ps}
		if n == len(orders)-1 {
			lastAPI, lastProj = api, proj
			continue
		}
		f.line(api...)
		f.line(proj...)
	}
	f.line(append(lastAPI, lastProj...)...)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 3, projected: 3, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 120 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 250 * ms},
			{f.eventID(3), "OrderPaid", "PayOrder", 80 * ms},
		}},
		{projection: "sales_summary", appended: 3, projected: 3, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 340 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 1500 * ms},
			{f.eventID(3), "OrderPaid", "PayOrder", 610 * ms},
		}},
	}
	return f
}

func projectionBeforeAppend() *fixture {
	f := &fixture{file: "projection_before_append.jsonl", events: 2, num: 2, title: "Projection spans before the append",
		scenario: "Two `CreateOrder` traces shaped like the happy path (no query). The file starts with the order-projector lines (project spans of both traces), " +
			"then a line with both append spans, then one line per trace with its command and HTTP spans: every projection is read before its event's append, " +
			"and each command span is read after its append span."}
	f1 := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f2 := f.commandFlow(5*time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2))
	v1 := f.projectChild(f1, "orders_view", 200*ms)
	s1 := f.projectChild(f1, "sales_summary", 450*ms)
	v2 := f.projectChild(f2, "orders_view", 95*ms)
	s2 := f.projectChild(f2, "sales_summary", 1250*ms)
	f.line(v1, v2)
	f.line(s1, s2)
	f.line(f1.app, f2.app)
	f.line(f1.cmd, f1.http)
	f.line(f2.cmd, f2.http)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 200 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 95 * ms},
		}},
		{projection: "sales_summary", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 450 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 1250 * ms},
		}},
	}
	return f
}

func missingProjection() *fixture {
	f := &fixture{file: "missing_projection.jsonl", events: 4, num: 3, title: "Missing projection",
		scenario: "Four `CreateOrder` traces, each appending one `OrderCreated`. `orders_view` projects all four; `sales_summary` projects events 1, 2 and 4 " +
			"but never event 3, so event 3 is unprojected for `sales_summary` once the input ends."}
	viewLags := []time.Duration{110 * ms, 130 * ms, 150 * ms, 170 * ms}
	salesLags := []time.Duration{500 * ms, 700 * ms, 0, 900 * ms}
	var pe [2]projExpect
	pe[0] = projExpect{projection: "orders_view", appended: 4, projected: 4}
	pe[1] = projExpect{projection: "sales_summary", appended: 4, projected: 3, unprojected: []string{f.eventID(3)}}
	for n := range 4 {
		fl := f.commandFlow(time.Duration(n)*2*time.Second, "POST", "/orders", "CreateOrder", f.order(n+1, "OrderCreated", 1, n+1))
		f.line(fl.app, fl.cmd, fl.http)
		proj := []*span{f.projectChild(fl, "orders_view", viewLags[n])}
		pe[0].lags = append(pe[0].lags, lagExpect{fl.ev.id, "OrderCreated", "CreateOrder", viewLags[n]})
		if n != 2 {
			proj = append(proj, f.projectChild(fl, "sales_summary", salesLags[n]))
			pe[1].lags = append(pe[1].lags, lagExpect{fl.ev.id, "OrderCreated", "CreateOrder", salesLags[n]})
		}
		f.line(proj...)
	}
	f.expect = pe[:]
	return f
}

func twoProjections() *fixture {
	f := &fixture{file: "two_projections.jsonl", events: 1, num: 4, title: "Two projections, different lags",
		scenario: "One `CreateOrder` trace appending one `OrderCreated`, projected by `orders_view` (fast) and `sales_summary` (slow). " +
			"Lines: order-api spans, then one line per projection span."}
	fl := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f.line(fl.app, fl.cmd, fl.http)
	f.line(f.projectChild(fl, "orders_view", 90*ms))
	f.line(f.projectChild(fl, "sales_summary", 2400*ms))
	f.expect = []projExpect{
		{projection: "orders_view", appended: 1, projected: 1, lags: []lagExpect{{f.eventID(1), "OrderCreated", "CreateOrder", 90 * ms}}},
		{projection: "sales_summary", appended: 1, projected: 1, lags: []lagExpect{{f.eventID(1), "OrderCreated", "CreateOrder", 2400 * ms}}},
	}
	return f
}

func multiEventAppend() *fixture {
	f := &fixture{file: "multi_event_append.jsonl", events: 3, num: 5, title: "One append span, three events",
		scenario: "A `PlaceOrder` command whose single append span writes three events, recorded as three span events named `cqrs.event` " +
			"(`OrderCreated` v1, `OrderLineAdded` v2, `OrderLineAdded` v3 of one order); the append span itself carries only `cqrs.operation=append`, no event id. " +
			"`orders_view` projects all three (children of the append span); `sales_summary` projects only the `OrderCreated`, and since it never projects " +
			"an `OrderLineAdded` anywhere in the input it is not expected to: it has one expected event, not three."}
	tr := f.newTrace()
	h := f.span(tr, nil, resAPI, scHTTP, "POST /orders", ptrace.SpanKindServer, 0, 40*ms,
		s("http.request.method", "POST"), s("http.route", "/orders"), i("http.response.status_code", 202))
	c := f.span(tr, h, resAPI, scApp, "PlaceOrder", ptrace.SpanKindInternal, 3*ms, 32*ms,
		s("cqrs.operation", "command"), s("cqrs.command.name", "PlaceOrder"))
	a := f.span(tr, c, resAPI, scApp, "append Order", ptrace.SpanKindInternal, 10*ms, 22*ms, s("cqrs.operation", "append"))
	evs := []evt{f.order(1, "OrderCreated", 1, 1), f.order(1, "OrderLineAdded", 2, 2), f.order(1, "OrderLineAdded", 3, 3)}
	for n, e := range evs {
		a.events = append(a.events, spanEvent{name: "cqrs.event", at: 20*ms + time.Duration(n)*ms, attrs: e.attrs()})
	}
	fl := &flow{trace: tr, app: a, cmdStart: c.start}
	lags := []time.Duration{100 * ms, 130 * ms, 160 * ms}
	var proj []*span
	pe := projExpect{projection: "orders_view", appended: 3, projected: 3}
	for n, e := range evs {
		fl.ev = e
		proj = append(proj, f.projectChild(fl, "orders_view", lags[n]))
		pe.lags = append(pe.lags, lagExpect{e.id, e.typ, "PlaceOrder", lags[n]})
	}
	fl.ev = evs[0]
	proj = append(proj, f.projectChild(fl, "sales_summary", 420*ms))
	f.line(a, c, h)
	f.line(proj...)
	f.expect = []projExpect{pe,
		{projection: "sales_summary", appended: 1, projected: 1, lags: []lagExpect{{evs[0].id, "OrderCreated", "PlaceOrder", 420 * ms}}},
	}
	return f
}

func spanLink() *fixture {
	f := &fixture{file: "span_link.jsonl", events: 2, num: 6, title: "Projection spans linked, in their own traces",
		scenario: "Two command traces (`CreateOrder` -> `OrderCreated`, `PayOrder` -> `OrderPaid`). The projector starts a NEW trace per event " +
			"(a root span, like batch consumers or Axon event processors) with a span link to the append span; one project span per event. " +
			"The projector's line comes first, in its own trace ids."}
	f1 := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f2 := f.commandFlow(3*time.Second, "PUT", "/orders/{id}/payment", "PayOrder", f.order(1, "OrderPaid", 2, 2))
	p1 := f.project(f.newTrace(), nil, resProjector, "orders_view", f1.ev, f1.cmdStart+400*ms, f1.app.linkTo())
	p2 := f.project(f.newTrace(), nil, resProjector, "orders_view", f2.ev, f2.cmdStart+700*ms, f2.app.linkTo())
	f.line(p1, p2)
	f.line(f1.app, f1.cmd, f1.http, f2.app, f2.cmd, f2.http)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 400 * ms},
			{f.eventID(2), "OrderPaid", "PayOrder", 700 * ms},
		}},
	}
	return f
}

func messagingSemconv() *fixture {
	f := &fixture{file: "messaging_semconv.jsonl", events: 5, num: 7, title: "OTel messaging semantic conventions only",
		scenario: "No `cqrs.*` attribute anywhere. Five Kafka messages on topic `orders`, each produced under an HTTP server span of order-api " +
			"(no command span, so command is `none` and lag runs from the PRODUCER span's end):\n" +
			"  - m1, m2: current names. PRODUCER `send orders` (messaging.system=kafka, messaging.destination.name=orders, messaging.operation.type=send, no message id); " +
			"CONSUMER `process orders` child of it in the orders-view service (messaging.operation.type=process, messaging.consumer.group.name=orders-view).\n" +
			"  - m3: OLD names. PRODUCER with messaging.operation=publish; CONSUMER child with messaging.operation=process and messaging.kafka.consumer.group=orders-view.\n" +
			"  - m4: current names, no message id; the CONSUMER is a root span of its own trace with a span link to the PRODUCER (batch receive).\n" +
			"  - m5: PRODUCER and CONSUMER both carry messaging.message.id=msg-07-005; the CONSUMER is in another trace with no parent or link, and has no consumer group " +
			"attribute, so the projection name falls back to its resource's service.name (`orders-view`).\n" +
			"No event type is recorded, so all five messages share one (absent) event type, whatever fallback an analyzer picks; orders-view projects every message. " +
			"A message without id is identified by its PRODUCER span: `<trace id>/<span id>` in hex.",
		notes: []string{"m5's message id is `msg-07-005`; the others are keyed by PRODUCER span.",
			"m5 is also a broken propagation: its CONSUMER is joined by message id from a trace of its own, with no link to the PRODUCER's."}}
	type m struct {
		old, link, withID bool
		lag               time.Duration // consumer end - producer end
	}
	ms5 := []m{{lag: 60 * ms}, {lag: 75 * ms}, {old: true, lag: 140 * ms}, {link: true, lag: 310 * ms}, {withID: true, lag: 520 * ms}}
	var lines [][]*span
	// m5's CONSUMER names its message by id from another trace, with no
	// link: broken propagation.
	pe := projExpect{projection: "orders-view", appended: 5, projected: 5, broken: 1}
	for n, x := range ms5 {
		t0 := time.Duration(n) * 2 * time.Second
		tr := f.newTrace()
		h := f.span(tr, nil, resAPI, scHTTP, "POST /orders", ptrace.SpanKindServer, t0, t0+30*ms,
			s("http.request.method", "POST"), s("http.route", "/orders"), i("http.response.status_code", 202))
		pattrs := []kv{s("messaging.system", "kafka"), s("messaging.destination.name", "orders")}
		cattrs := []kv{s("messaging.system", "kafka"), s("messaging.destination.name", "orders")}
		if x.old {
			pattrs = append(pattrs, s("messaging.operation", "publish"))
			cattrs = append(cattrs, s("messaging.operation", "process"), s("messaging.kafka.consumer.group", "orders-view"))
		} else {
			pattrs = append(pattrs, s("messaging.operation.type", "send"), s("messaging.operation.name", "send"))
			cattrs = append(cattrs, s("messaging.operation.type", "process"), s("messaging.operation.name", "process"))
			if !x.withID {
				cattrs = append(cattrs, s("messaging.consumer.group.name", "orders-view"))
			}
		}
		msgID := fmt.Sprintf("msg-%02d-%03d", f.num, n+1)
		if x.withID {
			pattrs = append(pattrs, s("messaging.message.id", msgID))
			cattrs = append(cattrs, s("messaging.message.id", msgID))
		}
		pattrs = append(pattrs, s("messaging.kafka.message.key", f.orderID(n+1)))
		p := f.span(tr, h, resAPI, scKafka, "send orders", ptrace.SpanKindProducer, t0+5*ms, t0+12*ms, pattrs...)
		end := p.end + x.lag
		var c *span
		switch {
		case x.link:
			c = f.span(f.newTrace(), nil, resConsumer, scKafka, "process orders", ptrace.SpanKindConsumer, end-8*ms, end, cattrs...)
			c.links = []link{p.linkTo()}
		case x.withID:
			c = f.span(f.newTrace(), nil, resConsumer, scKafka, "process orders", ptrace.SpanKindConsumer, end-8*ms, end, cattrs...)
		default:
			c = f.span(tr, p, resConsumer, scKafka, "process orders", ptrace.SpanKindConsumer, end-8*ms, end, cattrs...)
		}
		lines = append(lines, []*span{p, h}, []*span{c})
		key := hex.EncodeToString(p.trace[:]) + "/" + hex.EncodeToString(p.id[:])
		if x.withID {
			key = msgID
		}
		pe.lags = append(pe.lags, lagExpect{key, "", "none", x.lag})
	}
	// Producer side one line per request; consumer side partly batched.
	f.line(lines[0]...)
	f.line(lines[2]...)
	f.line(append(lines[1], lines[3]...)...)
	f.line(lines[4]...)
	f.line(lines[6]...)
	f.line(append(lines[5], lines[7]...)...)
	f.line(lines[8]...)
	f.line(lines[9]...)
	f.expect = []projExpect{pe}
	return f
}

func clockSkew() *fixture {
	f := &fixture{file: "clock_skew.jsonl", events: 3, num: 8, title: "Clock skew",
		scenario: "Two `CreateOrder` traces, each projected by `orders_view`. The first is projected on projector-1 normally. " +
			"The second is projected on projector-2 (same service, another `host.name`) whose clock runs 2s behind: its project span " +
			"ends 250ms BEFORE the command span starts, a lag of -250ms, which is counted as clock skew and not observed as a lag: its span started 274ms before the append ended. " +
			"A third trace (`RefundOrder`, `OrderRefunded`, a type no other fixture has, so that no other projection expects it when fixtures are analysed together) is projected by `sales_summary` in the sales-projector service, whose clock runs a little behind: its 6ms project span " +
			"starts 5ms before the append ends. Its lag (19ms) is positive, so it is observed, and short by the skew: the clock-skew histogram counts it, the clock-skew column does not."}
	resSkewed := &resource{"order-projector", "projector-2"}
	resSales := &resource{"sales-projector", "sales-1"}
	f1 := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f2 := f.commandFlow(4*time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2))
	f3 := f.commandFlow(8*time.Second, "POST", "/orders/{id}/refund", "RefundOrder", f.order(1, "OrderRefunded", 2, 3))
	p1 := f.projectChild(f1, "orders_view", 300*ms)
	p2 := f.project(f2.trace, f2.app, resSkewed, "orders_view", f2.ev, f2.cmdStart-250*ms)
	p3 := f.project(f3.trace, f3.app, resSales, "sales_summary", f3.ev, f3.appendEnd+1*ms)
	f.line(f1.app, f1.cmd, f1.http, f2.app, f2.cmd, f2.http)
	f.line(p1)
	f.line(p2)
	f.line(f3.app, f3.cmd, f3.http)
	f.line(p3)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 2, projected: 2, clockSkew: 1, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 300 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", -250 * ms},
		}},
		{projection: "sales_summary", appended: 1, projected: 1, lags: []lagExpect{
			{f.eventID(3), "OrderRefunded", "RefundOrder", 19 * ms},
		}},
	}
	f.skew = []skewExpect{
		{from: "order-api", to: "order-projector", skews: []time.Duration{274 * ms}},
		{from: "order-api", to: "sales-projector", skews: []time.Duration{5 * ms}},
	}
	return f
}

func noise() *fixture {
	f := &fixture{file: "noise.jsonl", events: 3, num: 9, title: "Noise around a few CQRS spans",
		scenario: "Seven unrelated traces (gateway/catalog HTTP, SQL, Redis, a health check, an error) interleaved with two CQRS traces. " +
			"CQRS trace 1 uses `cqrs.operation` attributes and has a SQL span under the command next to the append. CQRS trace 2 is marked by " +
			"rule 2 only: its command span has `cqrs.command.name` and no `cqrs.operation`, and its `GetOrder` query span only `cqrs.query.name`. " +
			"Decoys that give no projection: a PRODUCER span with neither `messaging.system` nor a message id (an in-process event bus; a PRODUCER span " +
			"is an append by its kind alone since issue 12, so it appends one event of no type, keyed by the span, that nothing projects), a root CONSUMER " +
			"span with `messaging.system=kafka` but no message id, parent or link (a projection span that names no event: no fact), and a CLIENT span " +
			"that carries `messaging.message.id` but no messaging operation (ignored).",
		queries: 1}
	t := time.Duration(0)
	noiseTrace := func(t0 time.Duration, kind int) []*span {
		tr := f.newTrace()
		switch kind {
		case 0: // catalog browse: gateway -> catalog -> SQL + cache
			g := f.span(tr, nil, resGateway, scHTTP, "GET /products", ptrace.SpanKindServer, t0, t0+48*ms,
				s("http.request.method", "GET"), s("http.route", "/products"), i("http.response.status_code", 200))
			c := f.span(tr, g, resCatalog, scHTTP, "GET /products", ptrace.SpanKindServer, t0+3*ms, t0+45*ms,
				s("http.request.method", "GET"), s("http.route", "/products"), i("http.response.status_code", 200))
			r := f.span(tr, c, resCatalog, scCache, "GET", ptrace.SpanKindClient, t0+4*ms, t0+5*ms,
				s("db.system.name", "redis"), s("db.operation.name", "GET"))
			q := f.span(tr, c, resCatalog, scDB, "SELECT products", ptrace.SpanKindClient, t0+6*ms, t0+40*ms,
				s("db.system.name", "postgresql"), s("db.operation.name", "SELECT"), s("db.collection.name", "products"))
			return []*span{r, q, c, g}
		case 1: // health check
			h := f.span(tr, nil, resAPI, scHTTP, "GET /healthz", ptrace.SpanKindServer, t0, t0+1*ms,
				s("http.request.method", "GET"), s("http.route", "/healthz"), i("http.response.status_code", 200))
			return []*span{h}
		case 2: // failed lookup with an in-process event bus publish (decoy PRODUCER)
			h := f.span(tr, nil, resAPI, scHTTP, "GET /orders/{id}", ptrace.SpanKindServer, t0, t0+9*ms,
				s("http.request.method", "GET"), s("http.route", "/orders/{id}"), i("http.response.status_code", 404))
			b := f.span(tr, h, resAPI, scApp, "publish NotFound", ptrace.SpanKindProducer, t0+6*ms, t0+7*ms, s("bus", "in-process"))
			return []*span{b, h}
		case 3: // stray Kafka consumer with no identity (decoy CONSUMER)
			c := f.span(tr, nil, resConsumer, scKafka, "process inventory", ptrace.SpanKindConsumer, t0, t0+15*ms,
				s("messaging.system", "kafka"), s("messaging.destination.name", "inventory"),
				s("messaging.operation.type", "process"), s("messaging.consumer.group.name", "orders-view"))
			return []*span{c}
		case 4: // outbound webhook with a message id but no messaging role (decoy CLIENT)
			h := f.span(tr, nil, resAPI, scHTTP, "POST", ptrace.SpanKindClient, t0, t0+120*ms,
				s("http.request.method", "POST"), s("server.address", "hooks.example.com"),
				s("messaging.message.id", "hook-1"), i("http.response.status_code", 500))
			return []*span{h}
		}
		return nil
	}
	var all [][]*span
	for n, k := range []int{0, 1, 2, 0, 3, 4, 1} {
		all = append(all, noiseTrace(t+time.Duration(n)*700*ms, k))
	}
	// CQRS trace 1: command with a SQL span (outbox read) next to the append.
	f1 := f.commandFlow(1*time.Second, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	sql := f.span(f1.trace, f1.cmd, resAPI, scDB, "SELECT orders", ptrace.SpanKindClient, f1.cmdStart+1*ms, f1.cmdStart+4*ms,
		s("db.system.name", "postgresql"), s("db.operation.name", "SELECT"))
	v1 := f.projectChild(f1, "orders_view", 210*ms)
	s1 := f.projectChild(f1, "sales_summary", 380*ms)
	// CQRS trace 2: rule-2 command and query.
	f2 := f.commandFlow(3*time.Second, "PUT", "/orders/{id}/payment", "PayOrder", f.order(1, "OrderPaid", 2, 2))
	f2.cmd.attrs = []kv{s("cqrs.command.name", "PayOrder"), s("cqrs.aggregate.id", f2.ev.aggID)}
	v2 := f.projectChild(f2, "orders_view", 160*ms)
	s2 := f.projectChild(f2, "sales_summary", 520*ms)
	q := f.span(f2.trace, f2.http, resAPI, scApp, "GetOrder", ptrace.SpanKindInternal, v2.end+3*ms, v2.end+5*ms,
		s("cqrs.query.name", "GetOrder"), s("cqrs.aggregate.id", f2.ev.aggID), i("cqrs.aggregate.version", 2))
	f2.http.end = q.end + 1*ms
	f.line(append(all[0], all[1]...)...)
	f.line(append([]*span{sql, f1.app, f1.cmd, f1.http}, all[2]...)...)
	f.line(all[3]...)
	f.line(append([]*span{v1, s1}, all[4]...)...)
	f.line(append(all[5], f2.app, f2.cmd)...)
	f.line(v2, s2)
	f.line(append([]*span{q, f2.http}, all[6]...)...)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 210 * ms},
			{f.eventID(2), "OrderPaid", "PayOrder", 160 * ms},
		}},
		{projection: "sales_summary", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 380 * ms},
			{f.eventID(2), "OrderPaid", "PayOrder", 520 * ms},
		}},
	}
	return f
}

func duplicatesOutOfOrder() *fixture {
	f := &fixture{file: "duplicates_out_of_order.jsonl", events: 3, num: 10, title: "Duplicate and out-of-order projection",
		scenario: "Three command traces: `CreateOrder` for order-1001 (`OrderCreated` v1, evt-10-001), `CreateOrder` for order-1002 (v1, evt-10-002) " +
			"and 300ms later `PayOrder` for order-1002 (`OrderPaid` v2, evt-10-003). `orders_view` projects evt-10-001 twice (a redelivery 700ms after the first, " +
			"later in the file too): one duplicate. It projects order-1002's v2 before its v1 (earlier in the file AND earlier in time): one out-of-order. " +
			"`sales_summary` projects everything once and in order.",
		notes: []string{"For `orders_view` the lag of evt-10-001 is the FIRST projection span's (200ms); the duplicate (ending at 900ms) adds no lag observation. " +
			"The out-of-order evt-10-002 is still projected, and its lag is observed."}}
	f1 := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f2 := f.commandFlow(2*time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2))
	f3 := f.commandFlow(2*time.Second+300*ms, "PUT", "/orders/{id}/payment", "PayOrder", f.order(2, "OrderPaid", 2, 3))
	v1 := f.projectChild(f1, "orders_view", 200*ms)
	v1dup := f.projectChild(f1, "orders_view", 900*ms)
	s1 := f.projectChild(f1, "sales_summary", 450*ms)
	v3 := f.projectChild(f3, "orders_view", 150*ms)  // ends at 2.452s
	v2 := f.projectChild(f2, "orders_view", 1200*ms) // ends at 3.202s, after v3
	s2 := f.projectChild(f2, "sales_summary", 350*ms)
	s3 := f.projectChild(f3, "sales_summary", 400*ms)
	f.line(f1.app, f1.cmd, f1.http)
	f.line(v1, s1)
	f.line(v1dup)
	f.line(f2.app, f2.cmd, f2.http, f3.app, f3.cmd, f3.http)
	f.line(s2, v3, s3)
	f.line(v2)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 3, projected: 3, duplicated: 1, outOfOrder: 1, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 200 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 1200 * ms},
			{f.eventID(3), "OrderPaid", "PayOrder", 150 * ms},
		}},
		{projection: "sales_summary", appended: 3, projected: 3, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 450 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 350 * ms},
			{f.eventID(3), "OrderPaid", "PayOrder", 400 * ms},
		}},
	}
	return f
}

func brokenPropagation() *fixture {
	f := &fixture{file: "broken_propagation.jsonl", events: 3, num: 11, title: "Broken context propagation",
		scenario: "Three `CreateOrder` traces. For the first two the projector lost the trace context: each of its four project spans (2 events x `orders_view`, `sales_summary`) " +
			"is the root of its own new trace, with no parent and no span link. Only `cqrs.event.id` ties a projection to its event: " +
			"For the third, `orders_view`'s project span is the root of its own trace WITH a span link to the append span (a batch consumer done right: not broken), " +
			"and `sales_summary`'s links to the HTTP span of the FIRST trace (a context carried to the wrong event: broken). Every lag is still counted.",
		notes: []string{"Broken propagation: `orders_view` 2 of 3 spans, `sales_summary` 3 of 3; the lags are those of a correctly propagated trace."}}
	f1 := f.commandFlow(0, "POST", "/orders", "CreateOrder", f.order(1, "OrderCreated", 1, 1))
	f2 := f.commandFlow(3*time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2))
	f3 := f.commandFlow(6*time.Second, "POST", "/orders", "CreateOrder", f.order(3, "OrderCreated", 1, 3))
	v1 := f.project(f.newTrace(), nil, resProjector, "orders_view", f1.ev, f1.cmdStart+180*ms)
	s1 := f.project(f.newTrace(), nil, resProjector, "sales_summary", f1.ev, f1.cmdStart+520*ms)
	v2 := f.project(f.newTrace(), nil, resProjector, "orders_view", f2.ev, f2.cmdStart+260*ms)
	s2 := f.project(f.newTrace(), nil, resProjector, "sales_summary", f2.ev, f2.cmdStart+1100*ms)
	v3 := f.project(f.newTrace(), nil, resProjector, "orders_view", f3.ev, f3.cmdStart+140*ms, f3.app.linkTo())
	s3 := f.project(f.newTrace(), nil, resProjector, "sales_summary", f3.ev, f3.cmdStart+700*ms, f1.http.linkTo())
	f.line(f1.app, f1.cmd, f1.http)
	f.line(v1, s1)
	f.line(f2.app, f2.cmd, f2.http)
	f.line(v2, s2)
	f.line(f3.app, f3.cmd, f3.http)
	f.line(v3, s3)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 3, projected: 3, broken: 2, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 180 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 260 * ms},
			{f.eventID(3), "OrderCreated", "CreateOrder", 140 * ms},
		}},
		{projection: "sales_summary", appended: 3, projected: 3, broken: 3, lags: []lagExpect{
			{f.eventID(1), "OrderCreated", "CreateOrder", 520 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 1100 * ms},
			{f.eventID(3), "OrderCreated", "CreateOrder", 700 * ms},
		}},
	}
	return f
}

func staleReads() *fixture {
	f := &fixture{file: "stale_reads.jsonl", events: 5, num: 16, title: "Stale reads (read after write)",
		scenario: "Two draft orders, each written then read by a user who expects to see the write (event types no other fixture has, so that no other projection expects them when fixtures are analysed together). " +
			"order-1601: `DraftOrder` (v1) at 0s, `ConfirmOrder` (v2) at 2s, " +
			"whose projection by `orders_view` is slow (1.5s). `GetOrder` reads v1 at 2.010s, while v2's append is still running (it ends at 2.020s): fresh, " +
			"v2 was not appended yet; again at 2.300s: stale, 280ms after v2's append ended; and v2 at 4s: fresh. order-1602: `DraftOrder` (v1) at 6s, " +
			"`AddNote` (v2) at 6.5s, `AddNote` (v3) at 7s; `GetOrderSummary` reads v1 at 7.010s, before v3's append ended but after v2's: stale by 490ms, " +
			"measured from v2, the newest version appended before the query started. Each read is a query span under its own `GET` HTTP span.",
		queries: 4}
	type w struct {
		t0            time.Duration
		method, route string
		cmd           string
		ev            evt
		lag           time.Duration
	}
	writes := []w{
		{0, "POST", "/drafts", "DraftOrder", f.order(1, "OrderDrafted", 1, 1), 100 * ms},
		{2 * time.Second, "PUT", "/drafts/{id}/confirmation", "ConfirmOrder", f.order(1, "OrderConfirmed", 2, 2), 1500 * ms},
		{6 * time.Second, "POST", "/drafts", "DraftOrder", f.order(2, "OrderDrafted", 1, 3), 100 * ms},
		{6500 * ms, "POST", "/drafts/{id}/notes", "AddNote", f.order(2, "OrderNoteAdded", 2, 4), 900 * ms},
		{7 * time.Second, "POST", "/drafts/{id}/notes", "AddNote", f.order(2, "OrderNoteAdded", 3, 5), 600 * ms},
	}
	var apps, projs []*span
	pe := projExpect{projection: "orders_view", appended: 5, projected: 5}
	for _, x := range writes {
		fl := f.commandFlow(x.t0, x.method, x.route, x.cmd, x.ev)
		apps = append(apps, fl.app, fl.cmd, fl.http)
		projs = append(projs, f.projectChild(fl, "orders_view", x.lag))
		pe.lags = append(pe.lags, lagExpect{x.ev.id, x.ev.typ, x.cmd, x.lag})
	}
	read := func(at time.Duration, query string, order int, version int64) []*span {
		tr := f.newTrace()
		h := f.span(tr, nil, resAPI, scHTTP, "GET /orders/{id}", ptrace.SpanKindServer, at-1*ms, at+6*ms,
			s("http.request.method", "GET"), s("http.route", "/orders/{id}"), i("http.response.status_code", 200))
		q := f.span(tr, h, resAPI, scApp, query, ptrace.SpanKindInternal, at, at+4*ms,
			s("cqrs.operation", "query"), s("cqrs.query.name", query),
			s("cqrs.aggregate.id", f.orderID(order)), i("cqrs.aggregate.version", version))
		return []*span{q, h}
	}
	// The writes first (the order-api line), then the reads, then the
	// projector's line: the join has seen every append when it judges a
	// read, as a live join has by the time a user reads.
	f.line(apps...)
	f.line(read(2010*ms, "GetOrder", 1, 1)...)
	f.line(read(2300*ms, "GetOrder", 1, 1)...)
	f.line(read(4*time.Second, "GetOrder", 1, 2)...)
	f.line(read(7010*ms, "GetOrderSummary", 2, 1)...)
	f.line(projs...)
	f.expect = []projExpect{pe}
	f.stale = []staleExpect{
		{query: "GetOrder", staleness: []time.Duration{280 * ms}},
		{query: "GetOrderSummary", staleness: []time.Duration{490 * ms}},
	}
	return f
}

func noCommand() *fixture {
	f := &fixture{file: "no_command.jsonl", events: 2, num: 12, title: "Append without a command",
		scenario: "Trace 1 is a batch import job (order-importer): a root `import orders` span -> append span (`OrderImported`, evt-12-001), " +
			"no command span anywhere in the trace, so the command is `none` and lag runs from the append span's END. " +
			"Trace 2 is a normal `CreateOrder` trace for contrast (lag from the command's start). `orders_view` projects both."}
	tr := f.newTrace()
	job := f.span(tr, nil, resImporter, scJob, "import orders", ptrace.SpanKindInternal, 0, 60*ms, s("job.name", "nightly-import"))
	ev1 := f.order(1, "OrderImported", 1, 1)
	a := f.span(tr, job, resImporter, scApp, "append OrderImported", ptrace.SpanKindInternal, 10*ms, 25*ms,
		append([]kv{s("cqrs.operation", "append")}, ev1.attrs()...)...)
	p1 := f.project(tr, a, resProjector, "orders_view", ev1, a.end+180*ms)
	f2 := f.commandFlow(2*time.Second, "POST", "/orders", "CreateOrder", f.order(2, "OrderCreated", 1, 2))
	p2 := f.projectChild(f2, "orders_view", 240*ms)
	f.line(a, job)
	f.line(p1)
	f.line(f2.app, f2.cmd, f2.http)
	f.line(p2)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 2, projected: 2, lags: []lagExpect{
			{f.eventID(1), "OrderImported", "none", 180 * ms},
			{f.eventID(2), "OrderCreated", "CreateOrder", 240 * ms},
		}},
	}
	return f
}

func intermediateSpans() *fixture {
	f := &fixture{file: "intermediate_spans.jsonl", events: 1, num: 13, title: "Command reached through intermediate spans",
		scenario: "One trace: HTTP server span -> `CancelOrder` command span -> `OrderService.Cancel` service span -> `AppendToStream` gRPC CLIENT span " +
			"(all order-api) -> append span in the eventstore service (a SERVER span, another resource). Each of the five spans is in its own export line, " +
			"in end order (append first, HTTP last), then the projector line. The command is found by walking the parent chain from the append span " +
			"up three levels. `orders_view` and `sales_summary` project the event."}
	tr := f.newTrace()
	h := f.span(tr, nil, resAPI, scHTTP, "POST /orders/{id}/cancel", ptrace.SpanKindServer, 0, 50*ms,
		s("http.request.method", "POST"), s("http.route", "/orders/{id}/cancel"), i("http.response.status_code", 202))
	c := f.span(tr, h, resAPI, scApp, "CancelOrder", ptrace.SpanKindInternal, 4*ms, 45*ms,
		s("cqrs.operation", "command"), s("cqrs.command.name", "CancelOrder"))
	svc := f.span(tr, c, resAPI, scApp, "OrderService.Cancel", ptrace.SpanKindInternal, 6*ms, 42*ms, s("code.function.name", "OrderService.Cancel"))
	rpc := f.span(tr, svc, resAPI, scES, "AppendToStream", ptrace.SpanKindClient, 12*ms, 38*ms,
		s("rpc.system", "grpc"), s("rpc.service", "event_store.client.streams.Streams"), s("rpc.method", "Append"),
		s("db.system.name", "kurrentdb"))
	ev := f.order(1, "OrderCancelled", 3, 1)
	a := f.span(tr, rpc, resES, scES, "append OrderCancelled", ptrace.SpanKindServer, 15*ms, 35*ms,
		append([]kv{s("cqrs.operation", "append")}, ev.attrs()...)...)
	fl := &flow{trace: tr, app: a, ev: ev, cmdStart: c.start}
	pv := f.projectChild(fl, "orders_view", 330*ms)
	ps := f.projectChild(fl, "sales_summary", 780*ms)
	f.line(a)
	f.line(rpc)
	f.line(svc)
	f.line(c)
	f.line(h)
	f.line(pv, ps)
	f.expect = []projExpect{
		{projection: "orders_view", appended: 1, projected: 1, lags: []lagExpect{{f.eventID(1), "OrderCancelled", "CancelOrder", 330 * ms}}},
		{projection: "sales_summary", appended: 1, projected: 1, lags: []lagExpect{{f.eventID(1), "OrderCancelled", "CancelOrder", 780 * ms}}},
	}
	return f
}

// Marshaling.

func (f *fixture) marshal() ([]byte, int, error) {
	var buf bytes.Buffer
	var m ptrace.JSONMarshaler
	total := 0
	for _, line := range f.lines {
		td := ptrace.NewTraces()
		resIdx := map[*resource]ptrace.ResourceSpans{}
		scopeIdx := map[*resource]map[string]ptrace.ScopeSpans{}
		for _, sp := range line {
			rs, ok := resIdx[sp.res]
			if !ok {
				rs = td.ResourceSpans().AppendEmpty()
				ra := rs.Resource().Attributes()
				ra.PutStr("service.name", sp.res.service)
				ra.PutStr("service.namespace", "shop")
				ra.PutStr("host.name", sp.res.host)
				ra.PutStr("telemetry.sdk.name", "opentelemetry")
				ra.PutStr("telemetry.sdk.language", "go")
				ra.PutStr("telemetry.sdk.version", "1.47.0")
				resIdx[sp.res] = rs
				scopeIdx[sp.res] = map[string]ptrace.ScopeSpans{}
			}
			ss, ok := scopeIdx[sp.res][sp.scope]
			if !ok {
				ss = rs.ScopeSpans().AppendEmpty()
				ss.Scope().SetName(sp.scope)
				scopeIdx[sp.res][sp.scope] = ss
			}
			sp.fill(ss.Spans().AppendEmpty())
			total++
		}
		b, err := m.MarshalTraces(td)
		if err != nil {
			return nil, 0, fmt.Errorf("marshal %s: %w", f.file, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), total, nil
}

func ts(d time.Duration) pcommon.Timestamp { return pcommon.NewTimestampFromTime(base.Add(d)) }

func putAttrs(m pcommon.Map, attrs []kv) {
	for _, a := range attrs {
		switch v := a.v.(type) {
		case string:
			m.PutStr(a.k, v)
		case int64:
			m.PutInt(a.k, v)
		default:
			log.Fatalf("attribute %s: unsupported type %T", a.k, a.v)
		}
	}
}

func (sp *span) fill(out ptrace.Span) {
	out.SetTraceID(pcommon.TraceID(sp.trace))
	out.SetSpanID(pcommon.SpanID(sp.id))
	out.SetParentSpanID(pcommon.SpanID(sp.parent))
	out.SetName(sp.name)
	out.SetKind(sp.kind)
	out.SetStartTimestamp(ts(sp.start))
	out.SetEndTimestamp(ts(sp.end))
	out.TraceState().FromRaw(sp.tracestate)
	putAttrs(out.Attributes(), sp.attrs)
	for _, e := range sp.events {
		oe := out.Events().AppendEmpty()
		oe.SetName(e.name)
		oe.SetTimestamp(ts(e.at))
		putAttrs(oe.Attributes(), e.attrs)
	}
	for _, l := range sp.links {
		ol := out.Links().AppendEmpty()
		ol.SetTraceID(pcommon.TraceID(l.trace))
		ol.SetSpanID(pcommon.SpanID(l.span))
	}
	if code, ok := attrInt(sp.attrs, "http.response.status_code"); ok && code >= 500 {
		out.Status().SetCode(ptrace.StatusCodeError)
	}
}

func attrInt(attrs []kv, k string) (int64, bool) {
	for _, a := range attrs {
		if v, ok := a.v.(int64); ok && a.k == k {
			return v, true
		}
	}
	return 0, false
}

// handInstrumented is the shape of issue 12: a hand-instrumented CQRS
// system with no cqrs.* attribute, roles by span kind and aliases.
func handInstrumented() *fixture {
	f := &fixture{file: "hand_instrumented.jsonl", events: 4, num: 14, title: "Hand-instrumented CQRS system, no configuration",
		scenario: "No `cqrs.*` or messaging attribute: the instrumentation of issue 12. command-service: `handle_create_order` SERVER span " +
			"(`command.type=CreateOrder`, a command by that alias) -> `validate_command`, `create_aggregate` (`order.id`), and `store_event` " +
			"PRODUCER (`event.type`, `event.id`: an append by its kind). query-service: `process_event` CONSUMER (a projection by its kind, " +
			"named after its service) with `event.type` and `event.aggregate_id` but no event id, a child of `store_event` (its trace context " +
			"carried in the event's metadata), so it projects the event `store_event` appended -> `project_read_model`.\n" +
			"  - e1: the command side is exported first.\n" +
			"  - e2: the query side is exported first (the projection waits for its producer span).\n" +
			"  - e3: `handle_pay_order` with `command.name=PayOrder`, `store_event` with `event_id`/`event_type`/`aggregate_id`; the consumer " +
			"is the root of its own trace with a span link to `store_event` and `projection.name=billing`.\n" +
			"  - e4: both lines of the order are exported twice (a retried export): the copies are ignored.\n" +
			"Lag = `process_event` end - `handle_*` start.",
		notes: []string{"e4's two lines are each exported twice: 30 spans in the file, 24 distinct; lagscope_duplicate_spans_total counts the 6 copies."}}
	resCmd := &resource{"command-service", "command-1"}
	resQuery := &resource{"query-service", "query-1"}
	type o struct {
		t0                        time.Duration
		command, handle           string
		typ                       string
		lag                       time.Duration
		link, first, retry, under bool
	}
	orders := []o{
		{0, "CreateOrder", "handle_create_order", "OrderCreated", 45 * ms, false, false, false, false},
		{2 * time.Second, "CreateOrder", "handle_create_order", "OrderCreated", 80 * ms, false, true, false, false},
		{4 * time.Second, "PayOrder", "handle_pay_order", "OrderPaid", 150 * ms, true, false, false, true},
		{6 * time.Second, "CreateOrder", "handle_create_order", "OrderCreated", 60 * ms, false, false, true, false},
	}
	created := projExpect{projection: "query-service"}
	billing := projExpect{projection: "billing"}
	for n, x := range orders {
		tr := f.newTrace()
		t0 := x.t0
		id, agg := f.eventID(n+1), f.orderID(n+1)
		cmdAttr := s("command.type", x.command)
		if x.under {
			cmdAttr = s("command.name", x.command)
		}
		h := f.span(tr, nil, resCmd, scHTTP, x.handle, ptrace.SpanKindServer, t0, t0+6*ms, cmdAttr, s("order.customer_id", fmt.Sprintf("c-%d", n+1)))
		v := f.span(tr, h, resCmd, scApp, "validate_command", ptrace.SpanKindInternal, t0+1*ms, t0+2*ms)
		c := f.span(tr, h, resCmd, scApp, "create_aggregate", ptrace.SpanKindInternal, t0+2*ms, t0+3*ms, s("order.id", agg), i("order.total", 4200))
		evAttrs := []kv{s("event.type", x.typ), s("event.id", id)}
		if x.under {
			evAttrs = []kv{s("event_type", x.typ), s("event_id", id), s("aggregate_id", agg)}
		}
		st := f.span(tr, h, resCmd, scApp, "store_event", ptrace.SpanKindProducer, t0+3*ms, t0+5*ms, evAttrs...)
		end := t0 + x.lag
		var pe *span
		if x.link {
			pe = f.span(f.newTrace(), nil, resQuery, scProj, "process_event", ptrace.SpanKindConsumer, end-4*ms, end,
				s("event.type", x.typ), s("event.aggregate_id", agg), s("projection.name", "billing"))
			pe.links = []link{st.linkTo()}
		} else {
			pe = f.span(tr, st, resQuery, scProj, "process_event", ptrace.SpanKindConsumer, end-4*ms, end,
				s("event.type", x.typ), s("event.aggregate_id", agg))
		}
		pr := f.span(pe.trace, pe, resQuery, scProj, "project_read_model", ptrace.SpanKindInternal, end-3*ms, end-1*ms)
		cmdLine, queryLine := []*span{v, c, st, h}, []*span{pr, pe}
		switch {
		case x.first:
			f.line(queryLine...)
			f.line(cmdLine...)
		case x.retry:
			f.line(cmdLine...)
			f.line(cmdLine...)
			f.line(queryLine...)
			f.line(queryLine...)
		default:
			f.line(cmdLine...)
			f.line(queryLine...)
		}
		l := lagExpect{id, x.typ, x.command, x.lag}
		if x.link {
			billing.appended++
			billing.projected++
			billing.lags = append(billing.lags, l)
		} else {
			created.appended++
			created.projected++
			created.lags = append(created.lags, l)
		}
	}
	f.expect = []projExpect{billing, created}
	return f
}

// multiEventConsumer is issue 12's consumer of a multi-event producer: a
// CONSUMER span without an event id, the child of (or linked to) a PRODUCER
// span that appended several events, projects every one of them.
func multiEventConsumer() *fixture {
	f := &fixture{file: "multi_event_consumer.jsonl", events: 6, num: 21, title: "Consumers without event id of a producer span that appended several events",
		scenario: "The hand-instrumented shape (fixture 14) with a `store_events` PRODUCER span that appends several events, recorded as span events " +
			"named `cqrs.event` (as fixture 5), under `handle_place_order` (`command.type=PlaceOrder`). query-service's `process_events` CONSUMER span " +
			"carries no event id and is a child of `store_events`: it projects every event that span appended (issue 12: \"projects the event of " +
			"the producer span\"; all of them when there are several), each with the lag `process_events` end - `handle_place_order` start.\n" +
			"  - o1: three events (`OrderCreated` v1, `OrderLineAdded` v2, v3); also a billing CONSUMER span, the root of its own trace with a span " +
			"link to `store_events` and `projection.name=billing`: it projects the three too.\n" +
			"  - o2: two events (`OrderCreated` v1, `OrderLineAdded` v2); query-service's line is exported before the command side (the consumer " +
			"waits for its producer span, then projects both). billing never sees o2: its two events are unprojected for billing, which projects " +
			"both types elsewhere.\n" +
			"  - o3: one event (`OrderCreated` v1), projected by both consumers as in fixture 14 (and billing, having shown an event appended " +
			"after o2's, is not stalled: its oldest-pending gauge is 0)."}
	resCmd := &resource{"command-service", "command-1"}
	resQuery := &resource{"query-service", "query-1"}
	type o struct {
		t0               time.Duration
		types            []string
		lag, billingLag  time.Duration
		queryFirst, bill bool
	}
	orders := []o{
		{0, []string{"OrderCreated", "OrderLineAdded", "OrderLineAdded"}, 70 * ms, 210 * ms, false, true},
		{3 * time.Second, []string{"OrderCreated", "OrderLineAdded"}, 95 * ms, 0, true, false},
		{6 * time.Second, []string{"OrderCreated"}, 55 * ms, 120 * ms, false, true},
	}
	query := projExpect{projection: "query-service"}
	billing := projExpect{projection: "billing"}
	ev := 0
	for n, x := range orders {
		tr := f.newTrace()
		t0 := x.t0
		agg := f.orderID(n + 1)
		h := f.span(tr, nil, resCmd, scHTTP, "handle_place_order", ptrace.SpanKindServer, t0, t0+8*ms, s("command.type", "PlaceOrder"))
		st := f.span(tr, h, resCmd, scApp, "store_events", ptrace.SpanKindProducer, t0+3*ms, t0+6*ms, s("aggregate.type", "Order"))
		var evs []evt
		for k, typ := range x.types {
			ev++
			e := f.order(n+1, typ, int64(k+1), ev)
			e.aggID = agg
			evs = append(evs, e)
			st.events = append(st.events, spanEvent{name: "cqrs.event", at: t0 + 5*ms, attrs: e.attrs()})
		}
		end := t0 + x.lag
		pe := f.span(tr, st, resQuery, scProj, "process_events", ptrace.SpanKindConsumer, end-5*ms, end, s("event.aggregate_id", agg))
		pr := f.span(tr, pe, resQuery, scProj, "project_read_model", ptrace.SpanKindInternal, end-4*ms, end-1*ms)
		cmdLine, queryLine := []*span{st, h}, []*span{pr, pe}
		if x.queryFirst {
			f.line(queryLine...)
			f.line(cmdLine...)
		} else {
			f.line(cmdLine...)
			f.line(queryLine...)
		}
		if x.bill {
			bend := t0 + x.billingLag
			b := f.span(f.newTrace(), nil, resQuery, scProj, "process_events", ptrace.SpanKindConsumer, bend-4*ms, bend, s("projection.name", "billing"))
			b.links = []link{st.linkTo()}
			f.line(b)
		}
		for _, e := range evs {
			query.appended++
			query.projected++
			query.lags = append(query.lags, lagExpect{e.id, e.typ, "PlaceOrder", x.lag})
			billing.appended++
			if x.bill {
				billing.projected++
				billing.lags = append(billing.lags, lagExpect{e.id, e.typ, "PlaceOrder", x.billingLag})
			} else {
				billing.unprojected = append(billing.unprojected, e.id)
			}
		}
	}
	f.expect = []projExpect{billing, query}
	return f
}

// sampled is head sampling with the OpenTelemetry threshold in tracestate:
// each trace's spans carry the threshold their root was sampled with.
func sampled() *fixture {
	f := &fixture{file: "sampled.jsonl", events: 5, num: 22, title: "Probability-sampled traces (tracestate ot=th)", sampled: true, queries: 1,
		scenario: "Five order commands shaped like the happy path, each trace sampled at its root by the OpenTelemetry consistent probability " +
			"sampler, so that every span of a trace carries the same W3C `tracestate` (`ot=th:...`; adjusted count = 2^56 / (2^56 - threshold)). " +
			"lagscope counts each event with its append span's adjusted count, and a query with its own.\n" +
			"  - s1 `ot=th:8` (kept at 1/2, counts 2): both projections, a `GetOrder` query (2), and a second `orders_view` span for the same " +
			"event (a duplicate: 2).\n" +
			"  - s2 `ot=th:c` (1/4, counts 4): `orders_view` only: unprojected for `sales_summary` (4).\n" +
			"  - s3 no tracestate (counts 1): both.\n" +
			"  - s4 `ShipOrder` `ot=th:4` (3/4, counts 4/3, not an integer): `orders_view` only (`sales_summary` projects no `OrderShipped`, in this file or any other: so that whatever other input lagscope reads, it does not learn to expect one).\n" +
			"  - s5 `ot=th:8;rv:00000000000001`: an explicit randomness below the threshold, which the specification calls inconsistent: " +
			"the adjusted count is unknown and the event counts 1; both.\n" +
			"The lag histogram is not weighted (client_golang has no weighted observation): one observation per kept event.",
		queriesWeighted: 2}
	type o struct {
		t0                time.Duration
		cmd               string
		ev                evt
		ts                string
		viewLag, salesLag time.Duration // 0: no projection span
		weight            float64
	}
	orders := []o{
		{0, "CreateOrder", f.order(1, "OrderCreated", 1, 1), "ot=th:8", 110 * ms, 300 * ms, 2},
		{2 * time.Second, "CreateOrder", f.order(2, "OrderCreated", 1, 2), "ot=th:c", 140 * ms, 0, 4},
		{4 * time.Second, "CreateOrder", f.order(3, "OrderCreated", 1, 3), "", 90 * ms, 260 * ms, 1},
		{6 * time.Second, "ShipOrder", f.order(1, "OrderShipped", 2, 4), "ot=th:4", 75 * ms, 0, 4.0 / 3},
		{8 * time.Second, "CreateOrder", f.order(4, "OrderCreated", 1, 5), "ot=th:8;rv:00000000000001", 130 * ms, 410 * ms, 1},
	}
	view := projExpect{projection: "orders_view"}
	sales := projExpect{projection: "sales_summary"}
	var redelivery *span
	for n, x := range orders {
		fl := f.commandFlow(x.t0, "POST", "/orders", x.cmd, x.ev)
		api := []*span{fl.app, fl.cmd, fl.http}
		var proj []*span
		pv := f.projectChild(fl, "orders_view", x.viewLag)
		proj = append(proj, pv)
		view.appended++
		view.projected++
		view.weighted.appended += x.weight
		view.weighted.projected += x.weight
		view.lags = append(view.lags, lagExpect{x.ev.id, x.ev.typ, x.cmd, x.viewLag})
		if n == 0 {
			q := f.span(fl.trace, fl.http, resAPI, scApp, "GetOrder", ptrace.SpanKindInternal, pv.end+5*ms, pv.end+8*ms,
				s("cqrs.operation", "query"), s("cqrs.query.name", "GetOrder"),
				s("cqrs.aggregate.id", x.ev.aggID), i("cqrs.aggregate.version", x.ev.version))
			fl.http.end = q.end + 1*ms
			api = append(api, q)
			// A redelivery, exported in a later request as it would be
			// (in the same one, a transport that reorders spans, as the
			// Zipkin translator does, would make it the first).
			redelivery = f.projectChild(fl, "orders_view", x.viewLag+50*ms)
			view.duplicated++
			view.weighted.duplicated += x.weight
		}
		if x.ev.typ == "OrderCreated" {
			sales.appended++
			sales.weighted.appended += x.weight
			if x.salesLag > 0 {
				proj = append(proj, f.projectChild(fl, "sales_summary", x.salesLag))
				sales.projected++
				sales.weighted.projected += x.weight
				sales.lags = append(sales.lags, lagExpect{x.ev.id, x.ev.typ, x.cmd, x.salesLag})
			} else {
				sales.unprojected = append(sales.unprojected, x.ev.id)
				sales.weighted.unprojected += x.weight
			}
		}
		for _, sp := range append(api, proj...) {
			sp.tracestate = x.ts
		}
		f.line(api...)
		f.line(proj...)
		if redelivery != nil {
			redelivery.tracestate = x.ts
			f.line(redelivery)
			redelivery = nil
		}
	}
	f.expect = []projExpect{view, sales}
	return f
}

// customRules is a system that neither the span conventions nor the
// aliases describe, read with the rules of rules/custom.yaml.
func customRules() *fixture {
	f := &fixture{file: "rules/custom.jsonl", config: customRulesConfig, events: 2, num: 15, title: "A system described by rules (rules/custom.yaml)",
		scenario: "Read with the rules in `rules/custom.yaml` (`lagscope analyze` without them sees no CQRS span but one decoy). order-service: " +
			"`handle_PlaceOrder` / `handle_CancelOrder` SERVER spans (rule `handlers`: command = capture group 1) -> `EventStore.Append` CLIENT " +
			"(`db.system=postgresql`, `evt_id`, `evt_name`, `stream_id`, `stream_rev`: rule `appends`). orders-projector: `Projector.Handle` " +
			"INTERNAL spans, children of the append spans, with `evt_id`/`evt_name` (rule `projectors`; the projection is the resource attribute " +
			"`service.namespace`, `shop`). An `OrderQueries.GetOrder` SERVER span (rule `queries`: `order_id`, `order_rev`) reads version 2 " +
			"after it was appended. Decoys: a `GET /health` PRODUCER span (rule `health`: ignored, where the span kind alone would make it an " +
			"append) and an `EventStore.Append` CLIENT span with `db.system=mysql` (matches no rule; ignored).",
		queries: 1}
	resOrders := &resource{"order-service", "orders-1"}
	resProj := &resource{"orders-projector", "orders-projector-1"}
	pe := projExpect{projection: "shop", appended: 2, projected: 2}
	type o struct {
		t0       time.Duration
		cmd, typ string
		rev      int64
		lag      time.Duration
	}
	for n, x := range []o{{0, "PlaceOrder", "OrderPlaced", 1, 90 * ms}, {3 * time.Second, "CancelOrder", "OrderCancelled", 2, 130 * ms}} {
		tr := f.newTrace()
		id := f.eventID(n + 1)
		h := f.span(tr, nil, resOrders, scHTTP, "handle_"+x.cmd, ptrace.SpanKindServer, x.t0, x.t0+20*ms)
		a := f.span(tr, h, resOrders, scES, "EventStore.Append", ptrace.SpanKindClient, x.t0+5*ms, x.t0+12*ms,
			s("db.system", "postgresql"), s("evt_id", id), s("evt_name", x.typ), s("stream_id", f.orderID(1)), i("stream_rev", x.rev))
		p := f.span(tr, a, resProj, scProj, "Projector.Handle", ptrace.SpanKindInternal, x.t0+x.lag-10*ms, x.t0+x.lag,
			s("evt_id", id), s("evt_name", x.typ))
		f.line(a, h)
		f.line(p)
		pe.lags = append(pe.lags, lagExpect{id, x.typ, x.cmd, x.lag})
	}
	tr := f.newTrace()
	q := f.span(tr, nil, resOrders, scHTTP, "OrderQueries.GetOrder", ptrace.SpanKindServer, 4*time.Second, 4*time.Second+3*ms,
		s("order_id", f.orderID(1)), i("order_rev", 2))
	hl := f.span(f.newTrace(), nil, resOrders, scApp, "GET /health", ptrace.SpanKindProducer, 5*time.Second, 5*time.Second+ms)
	my := f.span(f.newTrace(), nil, resOrders, scDB, "EventStore.Append", ptrace.SpanKindClient, 5*time.Second, 5*time.Second+2*ms,
		s("db.system", "mysql"), s("evt_id", "x-1"))
	f.line(q, hl, my)
	f.expect = []projExpect{pe}
	f.rules = func(r *rspan) string {
		switch {
		case r.name == "GET /health":
			return "ignored"
		case strings.HasPrefix(r.name, "handle_") && r.kind == ptrace.SpanKindServer:
			r.attrs["cqrs.command.name"] = strings.TrimPrefix(r.name, "handle_")
			return "command"
		case r.name == "EventStore.Append" && r.kind == ptrace.SpanKindClient && r.svc == "order-service" && r.str("db.system") == "postgresql" && r.has("evt_id"):
			r.attrs["cqrs.event.id"], r.attrs["cqrs.event.type"] = r.attrs["evt_id"], r.attrs["evt_name"]
			r.attrs["cqrs.aggregate.id"], r.attrs["cqrs.aggregate.version"] = r.attrs["stream_id"], r.attrs["stream_rev"]
			return "append"
		case r.name == "Projector.Handle" && strings.HasSuffix(r.svc, "-projector"):
			r.attrs["cqrs.event.id"], r.attrs["cqrs.event.type"] = r.attrs["evt_id"], r.attrs["evt_name"]
			r.attrs["cqrs.projection"] = r.res["service.namespace"]
			return "project"
		case strings.HasPrefix(r.name, "OrderQueries."):
			return "query"
		}
		return ""
	}
	return f
}

// customRulesConfig is rules/custom.yaml: the rules customRules' spans are
// read with, in lagscope's config file format.
const customRulesConfig = `# The rules testdata/rules/custom.jsonl is read with (see testdata/README.md).
rules:
  - name: health
    match: {span_name: GET /health}
    role: ignore
  - name: handlers
    match:
      span_name_regex: '^handle_(.+)$'
      kind: server
    role: command
    fields: {command: $1}
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
  - name: projectors
    match:
      span_name: Projector.Handle
      service_regex: '-projector$'
    role: project
    fields:
      event_id: evt_id
      event_type: evt_name
      projection: resource:service.namespace
  - name: queries
    match: {span_name_regex: '^OrderQueries\.(\w+)$'}
    role: query
    fields: {query: $1, aggregate_id: order_id, aggregate_version: order_rev}
`

func main() {
	out := flag.String("out", "testdata", "directory to write the fixtures and README.md into")
	flag.Parse()
	fixtures := []*fixture{
		happyPath(), projectionBeforeAppend(), missingProjection(), twoProjections(), multiEventAppend(),
		spanLink(), messagingSemconv(), clockSkew(), noise(), duplicatesOutOfOrder(), brokenPropagation(),
		noCommand(), intermediateSpans(), handInstrumented(), customRules(), staleReads(),
		multiEventConsumer(), sampled(),
	}
	failed := false
	for _, f := range fixtures {
		b, n, err := f.marshal()
		if err != nil {
			log.Fatal(err)
		}
		path := filepath.Join(*out, f.file)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			log.Fatal(err)
		}
		if f.config != "" {
			if err := os.WriteFile(strings.TrimSuffix(path, ".jsonl")+".yaml", []byte(f.config), 0o644); err != nil {
				log.Fatal(err)
			}
		}
		if err := verify(f, path, n); err != nil {
			log.Printf("%s: %v", f.file, err)
			failed = true
		}
	}
	if err := os.WriteFile(filepath.Join(*out, "README.md"), readme(fixtures), 0o644); err != nil {
		log.Fatal(err)
	}
	if failed {
		os.Exit(1)
	}
}

// Read-back and reference analysis.

type rspan struct {
	svc        string
	trace      [16]byte
	id, parent [8]byte
	kind       ptrace.SpanKind
	name       string
	start, end time.Time
	attrs      map[string]any
	events     []map[string]any // attributes of cqrs.event span events
	links      []link
	seq        int // input order
	role       string
	res        map[string]any // resource attributes
	weight     float64        // adjusted count of the tracestate's threshold; 1 when none
}

func (r *rspan) str(k string) string {
	v, _ := r.attrs[k].(string)
	return v
}

func (r *rspan) has(k string) bool { _, ok := r.attrs[k]; return ok }

func verify(f *fixture, path string, want int) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	var u ptrace.JSONUnmarshaler
	var spans []*rspan
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	lines := 0
	type sk struct {
		t [16]byte
		s [8]byte
	}
	seen := map[sk]bool{}
	for sc.Scan() {
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			return fmt.Errorf("line %d: %w", lines+1, err)
		}
		if got, want := td.SpanCount(), len(f.lines[lines]); got != want {
			return fmt.Errorf("line %d: read %d spans, wrote %d", lines+1, got, want)
		}
		lines++
		for _, rs := range td.ResourceSpans().All() {
			svc, _ := rs.Resource().Attributes().Get("service.name")
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					// A retried export: the same span again is ignored.
					if k := (sk{sp.TraceID(), sp.SpanID()}); seen[k] {
						want--
						continue
					} else {
						seen[k] = true
					}
					r := &rspan{svc: svc.Str(), res: rs.Resource().Attributes().AsRaw(), trace: sp.TraceID(), id: sp.SpanID(), parent: sp.ParentSpanID(),
						kind: sp.Kind(), name: sp.Name(), start: sp.StartTimestamp().AsTime(), end: sp.EndTimestamp().AsTime(),
						attrs: sp.Attributes().AsRaw(), seq: len(spans), weight: refWeight(sp.TraceState().AsRaw())}
					for _, e := range sp.Events().All() {
						if e.Name() == "cqrs.event" {
							r.events = append(r.events, e.Attributes().AsRaw())
						}
					}
					for _, l := range sp.Links().All() {
						r.links = append(r.links, link{l.TraceID(), l.SpanID()})
					}
					spans = append(spans, r)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if lines != len(f.lines) || len(spans) != want {
		return fmt.Errorf("read %d lines / %d spans, wrote %d / %d", lines, len(spans), len(f.lines), want)
	}
	byInput := analyze(spans, f.rules, func(a, b *rspan) int { return a.seq - b.seq })
	byEnd := analyze(spans, f.rules, func(a, b *rspan) int { return a.end.Compare(b.end) })
	if d := diff(byInput, byEnd); d != "" {
		return fmt.Errorf("input order and end-time order disagree (ambiguous fixture):\n%s", d)
	}
	if !f.sampled {
		for i := range byInput.proj {
			byInput.proj[i].weighted = weightedExpect{}
		}
		byInput.queriesW = 0
	}
	if d := diff(byInput.proj, f.expect); d != "" {
		return fmt.Errorf("reference analysis differs from expectation:\n%s", d)
	}
	if byInput.queriesW != f.queriesWeighted {
		return fmt.Errorf("weighted queries %v, want %v", byInput.queriesW, f.queriesWeighted)
	}
	if d := diff(byInput.stale, f.stale); d != "" {
		return fmt.Errorf("reference stale reads differ from expectation:\n%s", d)
	}
	if d := diff(byInput.skew, f.skew); d != "" {
		return fmt.Errorf("reference clock skews differ from expectation:\n%s", d)
	}
	if byInput.orphans != 0 || byInput.queries != f.queries || byInput.events != f.events {
		return fmt.Errorf("orphan projections %d (want 0), queries %d (want %d), events %d (want %d)",
			byInput.orphans, byInput.queries, f.queries, byInput.events, f.events)
	}
	fmt.Printf("%-32s %2d lines %3d spans ok\n", f.file, lines, len(spans))
	return nil
}

type appended struct {
	key, typ, aggID, command string
	version                  int64
	base                     time.Time
	weight                   float64 // the append span's
	// trace, svc and end are the append span's: for broken propagation,
	// clock skew and stale reads.
	trace [16]byte
	svc   string
	end   time.Time
}

type analysis struct {
	proj     []projExpect
	stale    []staleExpect
	skew     []skewExpect
	orphans  int
	queries  int
	queriesW float64
	events   int
}

// refWeight is the reference reading of a tracestate's OpenTelemetry
// sampling threshold (https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/):
// th is 1 to 14 lowercase hex digits, padded with zeros to 14, T; the
// adjusted count is 2^56/(2^56-T); an rv below T, or a value that cannot be
// read, leaves it unknown: 1.
func refWeight(ts string) float64 {
	for _, m := range strings.Split(ts, ",") {
		v, ok := strings.CutPrefix(strings.TrimSpace(m), "ot=")
		if !ok {
			continue
		}
		var th, rv string
		for _, kv := range strings.Split(v, ";") {
			if x, ok := strings.CutPrefix(kv, "th:"); ok {
				th = x
			}
			if x, ok := strings.CutPrefix(kv, "rv:"); ok {
				rv = x
			}
		}
		if th == "" || len(th) > 14 || strings.ToLower(th) != th {
			return 1
		}
		t, err := strconv.ParseUint(th+strings.Repeat("0", 14-len(th)), 16, 64)
		if err != nil || t == 0 {
			return 1
		}
		if rv != "" {
			r, err := strconv.ParseUint(rv, 16, 64)
			if err != nil || len(rv) != 14 || r < t {
				return 1
			}
		}
		return float64(uint64(1)<<56) / float64(uint64(1)<<56-t)
	}
	return 1
}

func diff(a, b any) string {
	x, y := fmt.Sprintf("%+v", a), fmt.Sprintf("%+v", b)
	if x == y {
		return ""
	}
	return "  got  " + x + "\n  want " + y
}

func idKey(t [16]byte, s [8]byte) string {
	return hex.EncodeToString(t[:]) + "/" + hex.EncodeToString(s[:])
}

// analyze applies lagscope's span contract (see testdata/README.md) to spans,
// ordering projection spans with cmp for duplicate and out-of-order detection.
func analyze(spans []*rspan, rules func(*rspan) string, cmp func(a, b *rspan) int) analysis {
	type sk struct {
		t [16]byte
		s [8]byte
	}
	byID := map[sk]*rspan{}
	for _, r := range spans {
		byID[sk{r.trace, r.id}] = r
	}
	producerLike := func(r *rspan) bool {
		ot, old := r.str("messaging.operation.type"), r.str("messaging.operation")
		return r.kind == ptrace.SpanKindProducer || ot == "create" || ot == "send" || old == "publish"
	}
	consumerLike := func(r *rspan) bool {
		ot, old := r.str("messaging.operation.type"), r.str("messaging.operation")
		return r.kind == ptrace.SpanKindConsumer || ot == "process" || old == "deliver" || old == "process"
	}
	// The aliases of issue 12, read after the cqrs.* names.
	aliases := [][]string{
		{"cqrs.event.id", "event.id", "event_id"},
		{"cqrs.event.type", "event.type", "event_type"},
		{"cqrs.aggregate.id", "event.aggregate_id", "aggregate.id", "aggregate_id"},
		{"cqrs.aggregate.type", "aggregate.type"},
		{"cqrs.aggregate.version", "aggregate.version"},
		{"cqrs.command.name", "command.type", "command.name"},
		{"cqrs.projection", "projection", "projection.name"},
	}
	for _, r := range spans {
		r.role = ""
		if rules != nil {
			if r.role = rules(r); r.role != "" {
				continue
			}
		}
		for _, al := range aliases {
			if r.has(al[0]) {
				continue
			}
			for _, k := range al[1:] {
				if v, ok := r.attrs[k]; ok {
					r.attrs[al[0]] = v
					break
				}
			}
		}
		messaging := r.has("messaging.message.id") || r.has("messaging.system")
		ot, old := r.str("messaging.operation.type"), r.str("messaging.operation")
		switch op := r.str("cqrs.operation"); {
		case op == "command" || op == "append" || op == "project" || op == "query":
			r.role = op
		case r.has("cqrs.command.name"):
			r.role = "command"
		case r.has("cqrs.query.name"):
			r.role = "query"
		case messaging && (ot == "receive" || ot == "settle" || old == "receive" || old == "settle"):
		case producerLike(r) && messaging:
			r.role = "append"
		case consumerLike(r) && messaging && (r.has("messaging.message.id") || ot == "process" || old == "process" || old == "deliver"):
			r.role = "project"
		case r.kind == ptrace.SpanKindProducer:
			r.role = "append" // issue 12: by kind alone
		case r.kind == ptrace.SpanKindConsumer:
			r.role = "project"
		}
	}
	// A projection span without event id projects the events of the
	// producer span it links to, or else is a child of: the events that
	// span appended (all of them when it appended several), else the span
	// itself.
	producerKeys := func(p *rspan) []string {
		if p == nil || p.role != "append" {
			return nil
		}
		var keys []string
		for _, e := range p.events {
			if k, _ := e["cqrs.event.id"].(string); k != "" {
				keys = append(keys, k)
			}
		}
		switch {
		case len(keys) > 0:
			return keys
		case p.str("cqrs.event.id") != "":
			return []string{p.str("cqrs.event.id")}
		case p.str("messaging.message.id") != "":
			return []string{p.str("messaging.message.id")}
		}
		return []string{idKey(p.trace, p.id)}
	}
	projEvent := map[*rspan][]string{}
	for _, r := range spans {
		if r.role != "project" || r.has("cqrs.event.id") || r.has("messaging.message.id") || len(r.events) > 0 {
			continue
		}
		if len(r.links) > 0 {
			projEvent[r] = producerKeys(byID[sk{r.links[0].trace, r.links[0].span}])
		} else if r.parent != ([8]byte{}) {
			projEvent[r] = producerKeys(byID[sk{r.trace, r.parent}])
		}
		if len(projEvent[r]) == 0 {
			r.role = "" // names no event: no fact
		}
	}
	var res analysis
	events := map[string]*appended{}
	var order []string
	for _, r := range spans {
		switch r.role {
		case "query":
			res.queries++
			res.queriesW += r.weight
		case "append":
			command, base := "none", r.end
			for p := byID[sk{r.trace, r.parent}]; p != nil; p = byID[sk{p.trace, p.parent}] {
				if p.role == "command" {
					command, base = p.str("cqrs.command.name"), p.start
					if command == "" {
						command = p.name
					}
					break
				}
			}
			add := func(a map[string]any, fallback string) {
				key, _ := a["cqrs.event.id"].(string)
				if key == "" {
					key, _ = a["messaging.message.id"].(string)
				}
				if key == "" {
					key = fallback
				}
				typ, _ := a["cqrs.event.type"].(string)
				agg, _ := a["cqrs.aggregate.id"].(string)
				v, _ := a["cqrs.aggregate.version"].(int64)
				events[key] = &appended{key: key, typ: typ, aggID: agg, version: v, command: command, base: base, weight: r.weight, trace: r.trace, svc: r.svc, end: r.end}
				order = append(order, key)
			}
			if len(r.events) > 0 {
				for _, e := range r.events {
					add(e, "")
				}
			} else {
				add(r.attrs, idKey(r.trace, r.id))
			}
		}
	}
	res.events = len(order)
	type pspan struct {
		r          *rspan
		projection string
		ev         *appended
	}
	var ps []pspan
	types := map[string]map[string]bool{}
	for _, r := range spans {
		if r.role != "project" {
			continue
		}
		name := r.str("cqrs.projection")
		for _, k := range []string{"messaging.consumer.group.name", "messaging.kafka.consumer.group", "messaging.destination.subscription.name"} {
			if name == "" {
				name = r.str(k)
			}
		}
		if name == "" {
			name = r.svc
		}
		keys := projEvent[r]
		if len(keys) == 0 {
			keys = []string{first(r.str("cqrs.event.id"), r.str("messaging.message.id"))}
		}
		for _, key := range keys {
			ev := events[key]
			if ev == nil {
				res.orphans++
				continue
			}
			if types[name] == nil {
				types[name] = map[string]bool{}
			}
			types[name][ev.typ] = true
			ps = append(ps, pspan{r, name, ev})
		}
	}
	// Broken propagation and clock skew, per projection span in input
	// order (neither depends on the order).
	broken := map[string]int{}
	skews := map[[2]string][]time.Duration{}
	for _, p := range ps {
		linked := false
		for _, l := range p.r.links {
			linked = linked || l.trace == p.ev.trace
		}
		if p.r.trace != p.ev.trace && !linked {
			broken[p.projection]++
		}
		if d := p.ev.end.Sub(p.r.start); d > 0 {
			k := [2]string{p.ev.svc, p.r.svc}
			skews[k] = append(skews[k], d)
		}
	}
	var pairs [][2]string
	for k := range skews {
		pairs = append(pairs, k)
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1]) })
	for _, k := range pairs {
		res.skew = append(res.skew, skewExpect{from: k[0], to: k[1], skews: skews[k]})
	}
	// Stale reads: a query that read version v of an aggregate although a
	// version w > v was appended (append span ended) before it started;
	// its staleness runs from the end of the newest such append.
	stale := map[string][]time.Duration{}
	var staleQueries []string
	for _, r := range spans {
		if r.role != "query" {
			continue
		}
		agg := r.str("cqrs.aggregate.id")
		read, _ := r.attrs["cqrs.aggregate.version"].(int64)
		if agg == "" || read == 0 {
			continue
		}
		var newest *appended
		for _, key := range order {
			ev := events[key]
			if ev.aggID == agg && ev.version > read && !ev.end.After(r.start) && (newest == nil || ev.version > newest.version) {
				newest = ev
			}
		}
		if newest == nil {
			continue
		}
		q := r.str("cqrs.query.name")
		if q == "" {
			q = r.name
		}
		if stale[q] == nil {
			staleQueries = append(staleQueries, q)
		}
		stale[q] = append(stale[q], r.start.Sub(newest.end))
	}
	sort.Strings(staleQueries)
	for _, q := range staleQueries {
		res.stale = append(res.stale, staleExpect{query: q, staleness: stale[q]})
	}
	slices.SortStableFunc(ps, func(a, b pspan) int { return cmp(a.r, b.r) })
	var names []string
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pe := projExpect{projection: name, broken: broken[name]}
		first := map[string]*rspan{}
		maxV := map[string]int64{}
		for _, p := range ps {
			if p.projection != name {
				continue
			}
			if first[p.ev.key] != nil {
				pe.duplicated++
				pe.weighted.duplicated += p.ev.weight
			} else {
				first[p.ev.key] = p.r
			}
			if p.ev.version < maxV[p.ev.aggID] {
				pe.outOfOrder++
			}
			maxV[p.ev.aggID] = max(maxV[p.ev.aggID], p.ev.version)
		}
		for _, key := range order {
			ev := events[key]
			if !types[name][ev.typ] {
				continue
			}
			pe.appended++
			pe.weighted.appended += ev.weight
			r := first[key]
			if r == nil {
				pe.unprojected = append(pe.unprojected, key)
				pe.weighted.unprojected += ev.weight
				continue
			}
			pe.projected++
			pe.weighted.projected += ev.weight
			lag := r.end.Sub(ev.base)
			if lag < 0 {
				pe.clockSkew++
			}
			pe.lags = append(pe.lags, lagExpect{key, ev.typ, ev.command, lag})
		}
		res.proj = append(res.proj, pe)
	}
	return res
}

// README.

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// fmtW writes a weighted count: exact when it is an integer, else to 6
// significant digits.
func fmtW(w float64) string { return strconv.FormatFloat(w, 'g', 6, 64) }

func fmtLag(d time.Duration) string {
	if d < 0 {
		return fmt.Sprintf("%s (%d ms) — clock skew, counted, not observed", d, d.Milliseconds())
	}
	return fmt.Sprintf("%s (%d ms)", d, d.Milliseconds())
}

// fmtDurations writes durations as "280ms (280 ms), ...".
func fmtDurations(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s (%g ms)", d, float64(d)/float64(ms)))
	}
	return strings.Join(out, ", ")
}

func readme(fixtures []*fixture) []byte {
	var b strings.Builder
	b.WriteString(`# lagscope trace fixtures

Generated by ` + "`go run ./testdata/gen/main.go -out testdata`" + ` (run from the module root); do not edit by hand, edit
the generator and rerun it. The generator reads every file back with ` + "`ptrace.JSONUnmarshaler`" + `, checks span counts,
and checks the expected results below with a small reference implementation of the span contract.

Every ` + "`.jsonl`" + ` file holds one OTLP ` + "`ExportTraceServiceRequest`" + ` (TracesData) JSON per line, written by pdata's
` + "`ptrace.JSONMarshaler`" + ` exactly as the OpenTelemetry Collector's file exporter writes it (hex trace and span ids).
Spans of one trace are spread over several lines and several resources (` + "`service.name`" + `), as real services export them.

Conventions shared by all fixtures:

- Time starts at 2026-11-27T12:00:00Z (` + "`1795780800000000000`" + ` ns); traces in a fixture start seconds apart.
- Trace id: first byte = fixture number, last two bytes = trace counter (fixture 7, trace 3: ` + "`07000000000000000000000000000003`" + `).
  Span id: first byte = fixture number, last two bytes = span counter (` + "`0700000000000004`" + `). Nothing is random.
- Event ids: ` + "`evt-NN-XXX`" + ` (NN = fixture number); aggregates: ` + "`order-NNXX`" + `.
- Lag = projection span end − command span start (append span end when the trace has no command span: command ` + "`none`" + `).
- "Appended" per projection = events expected by it: events of every type that projection projects somewhere in the input.
  Unprojected = appended − projected (offline analysis flushes at end of input).
- The lag of an (event, projection) is the first projection span's; later ones are duplicates and add no lag.
  Duplicates and out-of-order projections come out the same whether projection spans are ordered by input position or by end time.
- A negative lag is clock skew: counted in the clock-skew count, never observed as a lag. The (event, projection) still counts as projected.
- No fixture has a projection span for an event that was never appended.
- Broken propagation (issue 14) counts the projection spans joined to their event by event id that are neither in the
  append span's trace nor linked to it (every such span, duplicates included); their lags are still counted.
- A stale read is a query span that read version v of an aggregate although a version w > v was appended (its append
  span ended) before the query started; its staleness is the query's start minus the end of the newest such append.
- Clock skew per pair of services (issue 14) is how far a projection span STARTED before the end of the append it projects,
  by (append's service, projection's service); the clock-skew column counts only projections that ENDED before their command started.

`)
	for n, f := range fixtures {
		fmt.Fprintf(&b, "## %d. `%s` — %s\n\n%s\n\n", n+1, f.file, f.title, f.scenario)
		total := 0
		for _, l := range f.lines {
			total += len(l)
		}
		fmt.Fprintf(&b, "%d lines, %d spans", len(f.lines), total)
		fmt.Fprintf(&b, ", events appended: %d", f.events)
		switch f.queries {
		case 0:
		case 1:
			b.WriteString(", 1 query span")
		default:
			fmt.Fprintf(&b, ", %d query spans", f.queries)
		}
		b.WriteString(".\n\n")
		b.WriteString("| projection | appended | projected | unprojected | duplicated | out-of-order | clock skew | broken propagation |\n|---|---|---|---|---|---|---|---|\n")
		for _, p := range f.expect {
			fmt.Fprintf(&b, "| `%s` | %d | %d | %d | %d | %d | %d | %d |\n", p.projection, p.appended, p.projected,
				len(p.unprojected), p.duplicated, p.outOfOrder, p.clockSkew, p.broken)
		}
		if f.sampled {
			b.WriteString("\nWeighted by the adjusted count of each append span's sampling threshold (what the `cqrs_*` counters hold):\n\n" +
				"| projection | appended | projected | unprojected | duplicated |\n|---|---|---|---|---|\n")
			for _, p := range f.expect {
				w := p.weighted
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", p.projection, fmtW(w.appended), fmtW(w.projected), fmtW(w.unprojected), fmtW(w.duplicated))
			}
			fmt.Fprintf(&b, "\nQueries weighted: %s.\n", fmtW(f.queriesWeighted))
		}
		b.WriteString("\nLags (first projection span per event):\n\n| event | type | command | projection | lag |\n|---|---|---|---|---|\n")
		for _, p := range f.expect {
			for _, l := range p.lags {
				typ := "`" + l.eventType + "`"
				if l.eventType == "" {
					typ = "(none)"
				}
				fmt.Fprintf(&b, "| `%s` | %s | `%s` | `%s` | %s |\n", l.event, typ, l.command, p.projection, fmtLag(l.lag))
			}
		}
		var unproj []string
		for _, p := range f.expect {
			for _, e := range p.unprojected {
				unproj = append(unproj, fmt.Sprintf("`%s` for `%s`", e, p.projection))
			}
		}
		if len(unproj) == 0 {
			b.WriteString("\nUnprojected events: none.\n")
		} else {
			fmt.Fprintf(&b, "\nUnprojected events: %s.\n", strings.Join(unproj, ", "))
		}
		if len(f.stale) > 0 {
			b.WriteString("\nStale reads:\n\n| query | stale reads | staleness |\n|---|---|---|\n")
			for _, q := range f.stale {
				fmt.Fprintf(&b, "| `%s` | %d | %s |\n", q.query, len(q.staleness), fmtDurations(q.staleness))
			}
		} else {
			b.WriteString("\nStale reads: none.\n")
		}
		if len(f.skew) > 0 {
			b.WriteString("\nClock skew by pair of services (projection start before append end):\n\n| from_service | to_service | count | skews |\n|---|---|---|---|\n")
			for _, c := range f.skew {
				fmt.Fprintf(&b, "| `%s` | `%s` | %d | %s |\n", c.from, c.to, len(c.skews), fmtDurations(c.skews))
			}
		}
		for _, note := range f.notes {
			fmt.Fprintf(&b, "\nNote: %s\n", note)
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}
