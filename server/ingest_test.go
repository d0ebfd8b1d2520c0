package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/lagscope/lagscope/analyzer"
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
