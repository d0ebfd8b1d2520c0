package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/synth"
)

// TestIngestConsumeBatch: the ingest role's ConsumeBatch (what the
// collector's selective decoder calls) publishes exactly the facts its
// ConsumeTraces publishes of the same requests, also when the brokers
// refuse publishes and the facts are kept for the retry, with the batch
// reused between requests as a decoder reuses it.
func TestIngestConsumeBatch(t *testing.T) {
	gen := synth.New(synth.Config{TracesPerRequest: 5})
	reqs := make([]ptrace.Traces, 8)
	for i := range reqs {
		reqs[i], _ = gen.Next(time.Now())
	}
	var b spanbatch.Batch // reused, as a decoder reuses its batch
	consumers := []struct {
		name    string
		consume func(ctx context.Context, g *ingest, td ptrace.Traces) error
	}{
		{"ConsumeTraces", func(ctx context.Context, g *ingest, td ptrace.Traces) error {
			return g.ConsumeTraces(ctx, td)
		}},
		{"ConsumeBatch", func(ctx context.Context, g *ingest, td ptrace.Traces) error {
			b.Reset()
			b.FromTraces(td, g.filter)
			err := g.ConsumeBatch(ctx, &b)
			b.Reset()
			return err
		}},
	}
	for _, refused := range []int32{0, 1, 3} {
		t.Run(fmt.Sprintf("%d publishes refused", refused), func(t *testing.T) {
			want := ingestFacts(t, refused, reqs, consumers[0].consume)
			if len(want) == 0 {
				t.Fatal("the requests resolve to no facts")
			}
			t.Logf("%d facts", len(want))
			for _, c := range consumers[1:] {
				got := ingestFacts(t, refused, reqs, c.consume)
				if diff := cmp.Diff(got, want); diff != "" {
					t.Errorf("%s published other facts than %s (-got +want):\n%s", c.name, consumers[0].name, diff)
				}
			}
		})
	}
}

// ingestFacts runs an ingest role on a cluster of its own that refuses the
// first refused publishes, feeds it reqs with consume (retrying a request
// whose publish failed, as the Kafka transport does), shuts it down, and
// returns the facts on the facts topic.
func ingestFacts(t *testing.T, refused int32, reqs []ptrace.Traces, consume func(context.Context, *ingest, ptrace.Traces) error) []analyzer.Fact {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, tracesTopic, factsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if refused > 0 {
		refuseProduce(c, refused)
	}
	addr := c.ListenAddrs()[0]
	cfg := roleConfig(addr, RoleIngest, "ingest")
	cfg.Kafka.FactsTopic = factsTopic
	r, err := analyzer.NewResolver(cfg.Analyzer(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	g, err := newIngest(cfg, r, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	failed := int32(0)
	for _, td := range reqs {
		for consume(ctx, g, td) != nil {
			if failed++; failed > refused {
				t.Fatalf("publish failed %d times, want %d", failed, refused)
			}
		}
	}
	if err := g.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	n := int(testutil.ToFloat64(g.pub.m.published.WithLabelValues("facts")))
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: factsTopic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	var facts []analyzer.Fact
	for len(facts) < n {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read facts (%d of %d): %v", len(facts), n, err)
		}
		if _, facts, err = factwire.Decode(facts, m.Value); err != nil {
			t.Fatalf("decode facts: %v", err)
		}
	}
	return facts
}
