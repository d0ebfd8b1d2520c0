package server

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
)

const (
	tracesTopic = "otlp_spans"
	factsTopic  = "lagscope_facts"
	partitions  = 4
	waitFor     = 12 * time.Second
)

// broker starts an in-process Kafka-protocol broker with the traces and
// facts topics, closed at cleanup.
func broker(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, tracesTopic, factsTopic))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(func() {
		testTransport.CloseIdleConnections()
		c.Close()
	})
	return c.ListenAddrs()[0]
}

// testTransport is the test's own clients' (not kafka-go's default, whose
// idle connections would outlive the test).
var testTransport = &kafka.Transport{}

// fixtureMessages returns the messages the Collector's kafka exporter
// (partition_traces_by_id, otlp_proto) writes for the fixtures: one per
// trace of each request, keyed by the trace id in hex; a trace of four
// spans or more is split across two messages. It returns the span count.
func fixtureMessages(t *testing.T, files []string) ([]kafka.Message, int) {
	t.Helper()
	var msgs []kafka.Message
	spans, split := 0, false
	var u ptrace.JSONUnmarshaler
	var m ptrace.ProtoMarshaler
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if len(sc.Bytes()) == 0 {
				continue
			}
			td, err := u.UnmarshalTraces(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			spans += td.SpanCount()
			parts := byTrace(td)
			seen := map[string]bool{}
			for _, part := range parts {
				split = split || seen[part.id]
				seen[part.id] = true
			}
			for _, part := range parts {
				b, err := m.MarshalTraces(part.td)
				if err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, kafka.Message{Key: []byte(part.id), Value: b})
			}
		}
		f.Close()
	}
	if !split {
		t.Fatal("no trace of the fixtures was split across messages")
	}
	return msgs, spans
}

type tracePart struct {
	id string
	td ptrace.Traces
}

// byTrace splits td into one request per trace (two for a trace of four
// spans or more), keeping each span's resource and scope.
func byTrace(td ptrace.Traces) []tracePart {
	type spanAt struct{ r, s, k int }
	var order []string
	at := map[string][]spanAt{}
	rss := td.ResourceSpans()
	for r := range rss.Len() {
		sss := rss.At(r).ScopeSpans()
		for s := range sss.Len() {
			sps := sss.At(s).Spans()
			for k := range sps.Len() {
				id := sps.At(k).TraceID().String()
				if _, ok := at[id]; !ok {
					order = append(order, id)
				}
				at[id] = append(at[id], spanAt{r, s, k})
			}
		}
	}
	var out []tracePart
	for _, id := range order {
		all := at[id]
		chunks := [][]spanAt{all}
		if len(all) >= 4 {
			chunks = [][]spanAt{all[:len(all)/2], all[len(all)/2:]}
		}
		for _, c := range chunks {
			part := ptrace.NewTraces()
			for _, p := range c {
				rs := rss.At(p.r)
				ss := rs.ScopeSpans().At(p.s)
				nrs := part.ResourceSpans().AppendEmpty()
				rs.Resource().CopyTo(nrs.Resource())
				nss := nrs.ScopeSpans().AppendEmpty()
				ss.Scope().CopyTo(nss.Scope())
				ss.Spans().At(p.k).CopyTo(nss.Spans().AppendEmpty())
			}
			out = append(out, tracePart{id, part})
		}
	}
	return out
}

func produceTraces(t *testing.T, addr string, msgs []kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: tracesTopic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll, Transport: testTransport}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce traces: %v", err)
	}
}

func roleConfig(addr, role, group string) Config {
	cfg := DefaultConfig()
	cfg.Role = role
	cfg.OTLP.GRPCEndpoint = "127.0.0.1:0"
	cfg.OTLP.HTTPEndpoint = "127.0.0.1:0"
	cfg.Web.ListenAddress = "127.0.0.1:0"
	cfg.Kafka.Brokers = []string{addr}
	cfg.Kafka.GroupID = group
	cfg.Kafka.Lag.Interval = time.Hour // not under test here
	// Nothing declared unprojected before the end: the stages' delays
	// differ from the single process', Flush decides.
	cfg.Join.Deadline = time.Hour
	cfg.Join.Retention = 2 * time.Hour
	return cfg
}

func startRole(t *testing.T, cfg Config) *Server {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopRole(t, s) })
	return s
}

func stopRole(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// sample returns the sum over gs of the samples of family name whose labels
// include the label pairs in match ("k=v").
func sample(t *testing.T, name string, gs ...prometheus.Gatherer) float64 {
	t.Helper()
	var sum float64
	for _, g := range gs {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// perAggregate are the cqrs_* families that depend on state per aggregate,
// not per event: the freshness of a query needs the aggregate's appends,
// the order of a projection its earlier events, on the same join instance,
// and facts are partitioned by event. cqrs compares queries summed over
// results (exact: each query fact is applied once, by the instance of its
// aggregate's partition), and not the out-of-order count (see the
// README's Scale-out), nor the stale reads and their staleness, freshness
// by another name. That is why stale_reads.jsonl passes on every
// assignment, by construction: its results are not even fixed for one
// process, which sees the appends and queries of the traces topic's
// partitions in the order its consumers happen to take them (with the
// results compared, the reference alone gave three different views in
// three runs).

// cqrs flattens the cqrs_* counters and histograms of gs, summed by
// series: the view of N join instances a PromQL sum gives.
func cqrs(t *testing.T, gs ...prometheus.Gatherer) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, g := range gs {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "cqrs_") {
				continue
			}
			switch mf.GetName() {
			case "cqrs_events_out_of_order_total", "cqrs_stale_reads_total", "cqrs_read_staleness_seconds":
				continue
			}
			for _, m := range mf.GetMetric() {
				ls := m.GetLabel()
				if mf.GetName() == "cqrs_queries_total" {
					ls = without(ls, "result")
				}
				key := mf.GetName() + labelString(ls)
				switch mf.GetType() {
				case dto.MetricType_COUNTER:
					out[key] += m.GetCounter().GetValue()
				case dto.MetricType_HISTOGRAM:
					out[key+"_count"] += float64(m.GetHistogram().GetSampleCount())
					out[key+"_sum"] += m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	for k, v := range out {
		if v == 0 {
			delete(out, k) // a series one instance touched and another did not
		} else {
			out[k] = math.Round(v*1e9) / 1e9
		}
	}
	return out
}

func without(ls []*dto.LabelPair, name string) []*dto.LabelPair {
	var out []*dto.LabelPair
	for _, l := range ls {
		if l.GetName() != name {
			out = append(out, l)
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	var parts []string
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// waitUntil polls cond until it holds or waitFor passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMembers returns the number of members of a consumer group that
// have partitions assigned.
func groupMembers(t *testing.T, addr, group string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(addr), Transport: testTransport}
	resp, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(resp.Groups) == 0 || resp.Groups[0].GroupState != "Stable" {
		return 0
	}
	n := 0
	for _, m := range resp.Groups[0].Members {
		if len(m.MemberAssignments.Topics) > 0 {
			n++
		}
	}
	return n
}

// histogramCount sums the observations of histogram family name in g.
func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

func received(t *testing.T, gs ...prometheus.Gatherer) float64 {
	return sample(t, "lagscope_received_spans_total", gs...)
}

// reference runs one `all` instance on the traces topic's messages
// (spans spans in them), consuming it in a group of its own, and returns
// its cqrs_* view after Flush. It flushes once every message is analysed,
// not only received: the spans of the last one are counted received
// before the Analyzer has joined them, and a Flush in between declares
// their events unprojected and then their projections late.
func reference(t *testing.T, addr string, spans, messages int) map[string]float64 {
	t.Helper()
	s := startRole(t, roleConfig(addr, RoleAll, "reference"))
	waitUntil(t, "the reference to receive every span", func() bool { return received(t, s.Registry) == float64(spans) })
	waitUntil(t, "the reference to analyse every message", func() bool {
		return histogramCount(t, s.Registry, "lagscope_request_duration_seconds") == uint64(messages)
	})
	s.Analyzer.Flush()
	return cqrs(t, s.Registry)
}

// stages is a two-stage deployment: ingest and join instances, and the
// stopped ones, whose metrics still count.
type stages struct {
	t               *testing.T
	addr            string
	ingests, joins  []*Server
	stoppedI, stopJ []*Server
}

func (st *stages) ingestRegs() []prometheus.Gatherer {
	return regs(append(append([]*Server(nil), st.ingests...), st.stoppedI...))
}

func (st *stages) joinRegs() []prometheus.Gatherer {
	return regs(append(append([]*Server(nil), st.joins...), st.stopJ...))
}

func regs(ss []*Server) []prometheus.Gatherer {
	var gs []prometheus.Gatherer
	for _, s := range ss {
		gs = append(gs, s.Registry)
	}
	return gs
}

// settle waits until every running instance has partitions assigned.
func (st *stages) settle() {
	waitUntil(st.t, "the consumer groups to settle", func() bool {
		return groupMembers(st.t, st.addr, "lagscope") == len(st.ingests) && groupMembers(st.t, st.addr, "lagscope"+JoinGroupSuffix) == len(st.joins)
	})
}

// drained waits until the ingest instances received spans and the join
// instances applied every fact published: by the ingest instances, and by
// the join instances themselves (re-keyed projections, learned
// expectations, projections handed over at a stop). A join instance counts
// a batch applied only once what it published for it is acknowledged, so
// the two sums are equal only when nothing is in flight. An ingest instance
// publishes a batch of traces messages' facts after the batch (Flush), so
// it must hold none unpublished either.
func (st *stages) drained(spans int) {
	waitUntil(st.t, fmt.Sprintf("the ingest role to receive %d spans", spans), func() bool { return received(st.t, st.ingestRegs()...) >= float64(spans) })
	waitUntil(st.t, "the join role to apply every published fact", func() bool {
		for _, s := range st.ingests {
			if unflushed(s) {
				return false
			}
		}
		pub := 0.0
		for _, g := range append(st.ingestRegs(), st.joinRegs()...) {
			pub += counterWith(st.t, g, "lagscope_facts_published_total", "facts")
		}
		got := sample(st.t, "lagscope_facts_applied_total", st.joinRegs()...) + sample(st.t, "lagscope_replayed_facts_total", st.joinRegs()...)
		return got == pub
	})
}

// unflushed reports whether the ingest instance s holds facts that its
// Kafka transport's Flush has not published yet.
func unflushed(s *Server) bool {
	s.ingest.pendingMu.Lock()
	defer s.ingest.pendingMu.Unlock()
	return len(s.ingest.pending) > 0
}

func counterWith(t *testing.T, g prometheus.Gatherer, name, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// finish stops the ingest instances (publishing the appends still waiting
// for their command), waits for the joins to apply everything, flushes
// them and returns their summed cqrs_* view.
func (st *stages) finish(spans int) map[string]float64 {
	st.drained(spans)
	for _, s := range st.ingests {
		stopRole(st.t, s)
	}
	st.stoppedI, st.ingests = append(st.stoppedI, st.ingests...), nil
	st.drained(spans)
	// What waits for its producer span's alias now waits in vain: joined
	// keyed by the span, as at the end of join.command_wait.
	for _, s := range st.joins {
		s.join.expire(context.Background(), time.Now(), true)
	}
	st.drained(spans)
	for _, s := range append(st.joins, st.stopJ...) {
		s.join.j.Flush()
	}
	return cqrs(st.t, st.joinRegs()...)
}

func fixtures(t *testing.T) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(all) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	return all
}

// TestTwoStagesEqualOneInstance runs 2 ingest and 2 join instances on every
// fixture (span links and broken propagation included: joins across
// traces, so across ingest instances) and wants the join instances' summed
// cqrs_* counters and histograms to equal one `all` instance's.
func TestTwoStagesEqualOneInstance(t *testing.T) {
	addr := broker(t)
	msgs, spans := fixtureMessages(t, fixtures(t))
	st := &stages{t: t, addr: addr}
	for range 2 {
		st.ingests = append(st.ingests, startRole(t, roleConfig(addr, RoleIngest, "lagscope")))
		st.joins = append(st.joins, startRole(t, roleConfig(addr, RoleJoin, "lagscope")))
	}
	st.settle()
	produceTraces(t, addr, msgs)
	want := reference(t, addr, spans, len(msgs))
	got := st.finish(spans)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("2 ingest + 2 join instances differ from one instance (-all +summed joins):\n%s", diff)
	}
	if len(want) < 5 {
		t.Errorf("the reference counted almost nothing: %v", want)
	}
	// The fixtures that only the re-keying and the shared expectations
	// join: what they count is compared above.
	for _, k := range []string{
		"cqrs_events_projected_total{event_type=OrderPaid,projection=billing}",      // hand_instrumented
		"cqrs_events_projected_total{event_type=OrderLineAdded,projection=billing}", // multi_event_consumer
		"cqrs_events_unprojected_total{event_type=OrderCreated,projection=billing}", // learned by one instance
		"cqrs_events_projected_total{event_type=orders,projection=orders-view}",     // messaging_semconv
		"cqrs_queries_total{query=GetOrderSummary}",                                 // stale_reads
	} {
		if want[k] == 0 {
			t.Errorf("the reference has no %s: the fixture no longer tests what it should", k)
		}
	}
	if got := sample(t, "lagscope_replayed_facts_total", st.joinRegs()...); got != 0 {
		t.Errorf("lagscope_replayed_facts_total = %v with no restart, want 0", got)
	}
}

// TestGracefulRestartLosesAndDoublesNothing stops an ingest and a join
// instance gracefully between two halves of the input, starts new ones,
// and wants the same metrics as one instance on the whole input.
func TestGracefulRestartLosesAndDoublesNothing(t *testing.T) {
	addr := broker(t)
	files := fixtures(t)
	// The first half teaches the joins every expected projection they
	// learn from traffic (multi_event_consumer's billing consumer makes
	// billing a projection of OrderCreated): a stopped instance learns
	// nothing after its stop, and its pending events, which finish
	// flushes, would be judged without what the second half teaches.
	first, spans1 := fixtureMessages(t, files[:10])
	second, spans2 := fixtureMessages(t, files[10:])
	if filepath.Base(files[9]) != "multi_event_consumer.jsonl" {
		t.Fatalf("the first half ends with %s, want multi_event_consumer.jsonl", files[9])
	}
	st := &stages{t: t, addr: addr}
	for range 2 {
		st.ingests = append(st.ingests, startRole(t, roleConfig(addr, RoleIngest, "lagscope")))
		st.joins = append(st.joins, startRole(t, roleConfig(addr, RoleJoin, "lagscope")))
	}
	st.settle()
	produceTraces(t, addr, first)
	st.drained(spans1)

	stopRole(t, st.ingests[0])
	stopRole(t, st.joins[0])
	st.stoppedI, st.stopJ = append(st.stoppedI, st.ingests[0]), append(st.stopJ, st.joins[0])
	st.ingests[0] = startRole(t, roleConfig(addr, RoleIngest, "lagscope"))
	st.joins[0] = startRole(t, roleConfig(addr, RoleJoin, "lagscope"))
	st.settle()

	produceTraces(t, addr, second)
	want := reference(t, addr, spans1+spans2, len(first)+len(second))
	got := st.finish(spans1 + spans2)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after a graceful restart, the stages differ from one instance (-all +summed joins):\n%s", diff)
	}
}

// TestJoinSkipsUndecodableAndReplayedBatches feeds the join role a batch
// of an unknown version, a malformed one, and the same batch twice.
func TestJoinSkipsUndecodableAndReplayedBatches(t *testing.T) {
	reg := prometheus.NewRegistry()
	j, err := analyzer.NewJoiner(analyzer.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	jn, err := newJoin(DefaultConfig(), j, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	var enc factwire.Encoder
	facts := []analyzer.Fact{{Kind: analyzer.FactAppend, Event: analyzer.KeyOf("e1"), EventID: "e1", EventType: "OrderPlaced", AggregateType: "order", AggregateID: "o1", Command: "none", Start: 1e18, End: 1e18 + 5}}
	batch, err := enc.Append(nil, factwire.Header{Producer: 9, Seq: 1}, facts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{append([]byte{99}, batch[1:]...), batch[:len(batch)-1], batch, batch} {
		if _, err := jn.handle(context.Background(), nil, kafka.Message{Partition: 1, Value: b}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]float64{
		"version":   counterWith(t, reg, "lagscope_fact_batches_rejected_total", "version"),
		"malformed": counterWith(t, reg, "lagscope_fact_batches_rejected_total", "malformed"),
		"applied":   sample(t, "lagscope_facts_applied_total", reg),
		"replayed":  sample(t, "lagscope_replayed_facts_total", reg),
		"appended":  sample(t, "cqrs_events_appended_total", reg),
	}
	want := map[string]float64{"version": 1, "malformed": 1, "applied": 1, "replayed": 1, "appended": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("join counters (-want +got):\n%s", diff)
	}
}

func TestRoleConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"default", func(*Config) {}, true},
		{"ingest without brokers", func(c *Config) { c.Role = RoleIngest }, false},
		{"join with brokers", func(c *Config) { c.Role = RoleJoin; c.Kafka.Brokers = []string{"127.0.0.1:9092"} }, true},
		{"unknown role", func(c *Config) { c.Role = "both" }, false},
		{"empty facts topic", func(c *Config) { c.Kafka.FactsTopic = "" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %t", err, tt.ok)
			}
		})
	}
}
