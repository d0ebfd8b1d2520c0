package collector

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/synth"
)

// synthRequests returns n encoded export requests of the synth stream
// (50 ten-span CQRS traces each).
func synthRequests(b *testing.B, n int) [][]byte {
	b.Helper()
	g := synth.New(synth.Config{})
	td, _ := g.Next(time.Now())
	var m ptrace.ProtoMarshaler
	reqs := make([][]byte, n)
	for i := range reqs {
		if i > 0 {
			g.Refill(td, time.Now())
		}
		var err error
		if reqs[i], err = m.MarshalTraces(td); err != nil {
			b.Fatal(err)
		}
	}
	return reqs
}

// BenchmarkUnmarshal measures pdata decoding an OTLP request of the synth
// stream: the floor under what any receiver built on pdata can accept.
func BenchmarkUnmarshal(b *testing.B) {
	reqs := synthRequests(b, 16)
	spans := 0
	b.ReportAllocs()
	b.SetBytes(int64(len(reqs[0])))
	for i := 0; b.Loop(); i++ {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		spans += req.Traces().SpanCount()
	}
	b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
	b.ReportMetric(float64(len(reqs[0]))/float64(50*synth.SpansPerTrace), "bytes/span")
}

// BenchmarkExport measures the receiver core without a transport: decode,
// validate, hand to a consumer that discards.
func BenchmarkExport(b *testing.B) {
	reqs := synthRequests(b, 16)
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	core := &tracesCore{next: Discard, limiter: newByteLimiter(1 << 30), metrics: m, logger: nil}
	ctx := context.Background()
	spans := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		td := req.Traces()
		spans += td.SpanCount()
		if _, rerr := core.export(ctx, transportGRPC, td); rerr != nil {
			b.Fatal(rerr)
		}
	}
	b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkDecode compares pdata's decoding of the synth stream with the
// lazy decoder's (Config.LazyDecode).
func BenchmarkDecode(b *testing.B) {
	reqs := synthRequests(b, 16)
	for _, lazy := range []bool{false, true} {
		b.Run(decoderName(lazy), func(b *testing.B) {
			spans := 0
			b.ReportAllocs()
			b.SetBytes(int64(len(reqs[0])))
			for i := 0; b.Loop(); i++ {
				td, err := decodeTraces(reqs[i%len(reqs)], lazy)
				if err != nil {
					b.Fatal(err)
				}
				spans += td.SpanCount()
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// BenchmarkExportAnalyze measures the receiver core without a transport
// handing the synth stream to the analyzer (decode, validate, analyse), with
// pdata's and with the lazy decoder. The requests are replayed, so from the
// second round the join sees duplicated appends and projections.
func BenchmarkExportAnalyze(b *testing.B) {
	reqs := synthRequests(b, 64)
	for _, lazy := range []bool{false, true} {
		b.Run(decoderName(lazy), func(b *testing.B) {
			a, err := analyzer.New(analyzer.DefaultConfig(), nil, prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			m, err := newMetrics(nil)
			if err != nil {
				b.Fatal(err)
			}
			core := &tracesCore{next: a, limiter: newByteLimiter(1 << 30), metrics: m, lazy: lazy}
			ctx := context.Background()
			spans := 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				td, err := decodeTraces(reqs[i%len(reqs)], lazy)
				if err != nil {
					b.Fatal(err)
				}
				spans += td.SpanCount()
				if _, rerr := core.export(ctx, transportGRPC, td); rerr != nil {
					b.Fatal(rerr)
				}
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

func decoderName(lazy bool) string {
	if lazy {
		return "lazy"
	}
	return "pdata"
}
