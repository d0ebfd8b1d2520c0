package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/synth"
)

// TestIngestKeepsTheFactsOfAFailedPublish: when the brokers refuse a
// publish, the Kafka transport retries the traces message; the Resolver
// then takes its spans for retries, so the facts must come from what the
// failed publish kept, or they are lost.
func TestIngestKeepsTheFactsOfAFailedPublish(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, tracesTopic, factsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var refuse atomic.Int32
	refuse.Store(1)
	c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if refuse.Add(-1) < 0 {
			return nil, nil, false
		}
		r := req.(*kmsg.ProduceRequest)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, 29 // TOPIC_AUTHORIZATION_FAILED: not retried by the Writer
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	cfg := roleConfig(c.ListenAddrs()[0], RoleIngest, "ingest")
	cfg.Kafka.FactsTopic = factsTopic
	td, _ := synth.New(synth.Config{TracesPerRequest: 20}).Next(time.Now())
	want := 0
	{ // what one publish of td holds
		r, err := analyzer.NewResolver(cfg.Analyzer(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range r.Resolve(nil, td, time.Now()) {
			if f.Kind != 0 {
				want++
			}
		}
	}
	if want == 0 {
		t.Fatal("the request resolves to no facts")
	}

	r, err := analyzer.NewResolver(cfg.Analyzer(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	g, err := newIngest(cfg, r, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.shutdown(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := g.ConsumeTraces(ctx, td); err == nil {
		t.Fatal("publish succeeded although the broker refused it")
	}
	if got := testutil.ToFloat64(g.pub.m.published.WithLabelValues("facts")); got != 0 {
		t.Fatalf("facts published after a refused publish = %v, want 0", got)
	}
	// The transport's retry of the same message.
	if err := g.ConsumeTraces(ctx, td); err != nil {
		t.Fatalf("retried publish: %v", err)
	}
	if got := testutil.ToFloat64(g.pub.m.published.WithLabelValues("facts")); got != float64(want) {
		t.Errorf("facts published after the retry = %v, want %d (those of the refused publish)", got, want)
	}
}

// refuseProduce makes c answer the first n produce requests with
// TOPIC_AUTHORIZATION_FAILED (not retried by the Writer) on every partition,
// and counts the produce requests it lets through.
func refuseProduce(c *kfake.Cluster, n int32) (accepted *atomic.Int32) {
	var refuse, ok atomic.Int32
	refuse.Store(n)
	c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if refuse.Add(-1) < 0 {
			ok.Add(1)
			return nil, nil, false
		}
		r := req.(*kmsg.ProduceRequest)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, 29
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &ok
}

// TestIngestPublishesABatchOnce: the ingest role behind the Kafka transport
// publishes the facts of a batch of traces messages in one produce request
// (not one a message), and when that publish is refused, the transport
// commits nothing until the retried Flush succeeds, and every fact reaches
// the facts topic exactly once. One partition each, so that the messages
// resolve in the order a reference Resolver sees them, and so that a
// publish is one produce request: none can half succeed.
func TestIngestPublishesABatchOnce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, tracesTopic, factsTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testTransport.CloseIdleConnections()
		c.Close()
	})
	addr := c.ListenAddrs()[0]
	cfg := roleConfig(addr, RoleIngest, "batch")
	cfg.Kafka.FactsTopic = factsTopic

	const messages = 200
	ref, err := analyzer.NewResolver(cfg.Analyzer(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ref.MarkSpanKeyed()
	var facts []analyzer.Fact
	var msgs []kafka.Message
	g := synth.New(synth.Config{TracesPerRequest: 1})
	var m ptrace.ProtoMarshaler
	for range messages {
		td, _ := g.Next(time.Now())
		facts = ref.Resolve(facts, td, time.Now())
		v, err := m.MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Value: v})
	}
	facts = ref.Expire(facts, time.Now(), true) // as the ingest's shutdown
	want := 0
	for _, f := range facts {
		if f.Kind != 0 {
			want++
		}
	}
	produceTraces(t, addr, msgs)

	accepted := refuseProduce(c, 1) // the first publish
	s := startRole(t, cfg)
	waitUntil(t, "a refused Flush", func() bool {
		return kafkaRejected(t, s.Registry, "consumer_error") >= 1
	})
	waitUntil(t, "every message committed", func() bool { return committedTraces(t, addr, "batch") == messages })
	stopRole(t, s)

	if got := committedTraces(t, addr, "batch"); got != messages {
		t.Errorf("committed offset of the traces topic = %d, want %d", got, messages)
	}
	if got := testutil.ToFloat64(s.ingest.pub.m.published.WithLabelValues("facts")); got != float64(want) {
		t.Errorf("facts published = %v, want %d", got, want)
	}
	produced := int(accepted.Load())
	if produced >= messages {
		t.Errorf("%d produce requests for %d traces messages, want fewer", produced, messages)
	}
	t.Logf("%d traces messages, %d facts, %d produce requests accepted", messages, want, produced)
	if got := factsOnTopic(t, addr, produced); got != want {
		t.Errorf("facts on the facts topic = %d, want %d (each once)", got, want)
	}
}

// committedTraces returns the offset group committed on partition 0 of the
// traces topic (-1 if none).
func committedTraces(t *testing.T, addr, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(addr), Transport: testTransport}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{tracesTopic: {0}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	for _, p := range resp.Topics[tracesTopic] {
		return p.CommittedOffset
	}
	return -1
}

// factsOnTopic reads the first n messages of partition 0 of the facts topic
// and returns the number of facts they hold.
func factsOnTopic(t *testing.T, addr string, n int) int {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: factsTopic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sum := 0
	for range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read facts: %v", err)
		}
		_, fs, err := factwire.Decode(nil, m.Value)
		if err != nil {
			t.Fatalf("decode facts: %v", err)
		}
		sum += len(fs)
	}
	return sum
}

// kafkaRejected returns lagscope_rejected_requests_total{transport="kafka",reason=reason}.
func kafkaRejected(t *testing.T, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lagscope_rejected_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			ls := map[string]string{}
			for _, l := range m.GetLabel() {
				ls[l.GetName()] = l.GetValue()
			}
			if ls["transport"] == "kafka" && ls["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
