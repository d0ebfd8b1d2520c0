package spanbatch_test

import (
	"testing"
	"time"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/spanbatch"
	"github.com/lagscope/lagscope/synth"
)

// BenchmarkFromTraces converts synth requests (50 ten-span traces) with
// the analysis's filter: what ConsumeTraces pays before the analysis on
// the paths that still decode pdata (OTLP/JSON, the decoder's fallbacks,
// Zipkin, trace files).
func BenchmarkFromTraces(b *testing.B) {
	td, _ := synth.New(synth.Config{}).Next(time.Now())
	f := analyzer.DefaultConfig().Reads().Filter()
	var bt spanbatch.Batch
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		bt.Reset()
		bt.FromTraces(td, f)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*td.SpanCount()), "ns/span")
}
