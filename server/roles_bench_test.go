package server

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/synth"
)

// BenchmarkStages compares, on the synth stream and with the broker
// excluded, the CPU per span of one process (all: Analyzer.ConsumeTraces)
// with the two stages' (ingest: resolve, group by partition, encode; join:
// decode, apply). The ratio (ingest+join)/all is the two-stage overhead.
func BenchmarkStages(b *testing.B) {
	const reqs = 64
	cfg := analyzer.DefaultConfig()
	var tds []ptrace.Traces
	spans := 0
	g := synth.New(synth.Config{TracesPerRequest: 20})
	for range reqs {
		td, batch := g.Next(time.Now())
		tds = append(tds, td)
		spans += batch.Spans
	}
	perSpan := func(b *testing.B, n int) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/span")
	}
	b.Run("all", func(b *testing.B) {
		a, err := analyzer.New(cfg, nil, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for i := 0; b.Loop(); i++ {
			if err := a.ConsumeTraces(context.Background(), tds[i%reqs]); err != nil {
				b.Fatal(err)
			}
			n += tds[i%reqs].SpanCount()
		}
		perSpan(b, n)
	})
	// The batches the ingest stage writes, for the join stage to read.
	var batches [][]byte
	b.Run("ingest", func(b *testing.B) {
		r, err := analyzer.NewResolver(cfg, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		sc := &ingestScratch{}
		n := 0
		for i := 0; b.Loop(); i++ {
			sc.facts = r.Resolve(sc.facts[:0], tds[i%reqs], time.Now())
			batches = encodeGroups(b, sc, partitions, batches[:0])
			n += tds[i%reqs].SpanCount()
		}
		perSpan(b, n)
	})
	b.Run("join", func(b *testing.B) {
		r, err := analyzer.NewResolver(cfg, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		j, err := analyzer.NewJoiner(cfg, nil, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		sc := &ingestScratch{}
		var encoded [][][]byte
		for _, td := range tds {
			sc.facts = r.Resolve(sc.facts[:0], td, time.Now())
			encoded = append(encoded, encodeGroups(b, sc, partitions, nil))
		}
		var facts []analyzer.Fact
		n := 0
		for i := 0; b.Loop(); i++ {
			for _, batch := range encoded[i%reqs] {
				if _, facts, err = factwire.Decode(facts[:0], batch); err != nil {
					b.Fatal(err)
				}
				j.Apply(facts, time.Now())
			}
			n += tds[i%reqs].SpanCount()
		}
		perSpan(b, n)
	})
}

// encodeGroups is publish without the write.
func encodeGroups(b *testing.B, sc *ingestScratch, n int, dst [][]byte) [][]byte {
	if _, err := sc.batches(n, func() factwire.Header { return factwire.Header{Producer: 1, Seq: 1} }); err != nil {
		b.Fatal(err)
	}
	for _, m := range sc.msgs {
		dst = append(dst, m.Value)
	}
	return dst
}
