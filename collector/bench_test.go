package collector

import (
	"context"
	"errors"
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
		if _, rerr := core.export(ctx, transportGRPC, decodedRequest{td: td}, nil, false); rerr != nil {
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
			sel := testDecoder(lazy)
			spans := 0
			b.ReportAllocs()
			b.SetBytes(int64(len(reqs[0])))
			for i := 0; b.Loop(); i++ {
				req, fb, err := decodeTraces(reqs[i%len(reqs)], sel)
				if err != nil || fb != fallbackNone {
					b.Fatal(err, fb)
				}
				spans += req.spanCount()
				req.free()
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// BenchmarkReceiverDecode measures the receiver's decode of the synth
// stream with the default limits and the selective decoder: "scan" as it
// was before the one pass (the limits' pre-scan, then the selective
// decoder) and "onepass" as tracesCore.decode does it now, in one run.
func BenchmarkReceiverDecode(b *testing.B) {
	reqs := synthRequests(b, 16)
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	core := &tracesCore{next: Discard, limiter: newByteLimiter(cfg.MaxInflightBytes), metrics: m, selective: analysisDecoder, limits: cfg.decodeLimits()}
	for _, step := range []struct {
		name   string
		decode func([]byte) (decodedRequest, int64, error)
	}{
		{"scan", func(buf []byte) (decodedRequest, int64, error) {
			counts, rerr := scanProto(buf, core.limits)
			if rerr != nil {
				return decodedRequest{}, 0, rerr
			}
			est := counts.decodedSize(len(buf))
			if !core.limiter.tryAcquire(est) {
				return decodedRequest{}, 0, errOrNil(overloaded(0))
			}
			req, fb, err := decodeTraces(buf, core.selective)
			if err == nil && fb != fallbackNone {
				err = errors.New(fb.String())
			}
			return req, est, err
		}},
		{"onepass", func(buf []byte) (decodedRequest, int64, error) {
			req, reserved, rerr := core.decode(buf, false)
			return req, reserved, errOrNil(rerr)
		}},
	} {
		b.Run(step.name, func(b *testing.B) {
			spans := 0
			b.ReportAllocs()
			b.SetBytes(int64(len(reqs[0])))
			for i := 0; b.Loop(); i++ {
				req, reserved, err := step.decode(reqs[i%len(reqs)])
				core.limiter.release(reserved)
				if err != nil {
					b.Fatal(err)
				}
				spans += req.spanCount()
				req.free()
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// BenchmarkExportConsumer measures the receiver core without a transport,
// as lagscope serve runs it (the one pass with the default limits, span
// validation, the hand-off), on the synth stream, to consumers that
// discard: one that takes Batches (Discard) and one that takes pdata only,
// which gets each Batch's ToTraces. Their ratio is what a consumer gains by
// implementing BatchConsumer, before it reads anything.
func BenchmarkExportConsumer(b *testing.B) {
	reqs := synthRequests(b, 16)
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	for _, c := range []struct {
		name string
		next Consumer
	}{
		{"batch", Discard},
		{"pdata", consumerFunc(func(context.Context, ptrace.Traces) error { return nil })},
	} {
		b.Run(c.name, func(b *testing.B) {
			core := &tracesCore{next: c.next, limiter: newByteLimiter(cfg.MaxInflightBytes), metrics: m, selective: analysisDecoder, limits: cfg.decodeLimits()}
			ctx := context.Background()
			spans := 0
			b.ReportAllocs()
			b.SetBytes(int64(len(reqs[0])))
			for i := 0; b.Loop(); i++ {
				req, reserved, rerr := core.decode(reqs[i%len(reqs)], false)
				if rerr != nil || req.batch == nil {
					b.Fatal(rerr, req.batch)
				}
				spans += req.spanCount()
				if _, rerr := core.export(ctx, transportGRPC, req, nil, false); rerr != nil {
					b.Fatal(rerr)
				}
				req.free()
				core.limiter.release(reserved)
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
			core := &tracesCore{next: a, limiter: newByteLimiter(1 << 30), metrics: m, selective: testDecoder(lazy)}
			ctx := context.Background()
			spans := 0
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				req, _, err := decodeTraces(reqs[i%len(reqs)], core.selective)
				if err != nil {
					b.Fatal(err)
				}
				spans += req.spanCount()
				if _, rerr := core.export(ctx, transportGRPC, req, nil, false); rerr != nil {
					b.Fatal(rerr)
				}
				req.free()
			}
			b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
		})
	}
}

// BenchmarkDecodeScan measures the pre-scans (scanProto, scanJSON) against
// pdata's decoding of the same synth requests, in one run: the ratio of
// their ns/op is what the limits cost on the decode path.
func BenchmarkDecodeScan(b *testing.B) {
	reqs := synthRequests(b, 16)
	jsonReqs := make([][]byte, len(reqs))
	for i, r := range reqs {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(r); err != nil {
			b.Fatal(err)
		}
		var err error
		if jsonReqs[i], err = req.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
	limits := DefaultConfig().decodeLimits()
	for _, enc := range []struct {
		name   string
		reqs   [][]byte
		decode func([]byte) error
		scan   func([]byte) error
	}{
		{"proto", reqs,
			func(buf []byte) error { return ptraceotlp.NewExportRequest().UnmarshalProto(buf) },
			func(buf []byte) error { _, err := scanProto(buf, limits); return errOrNil(err) }},
		{"json", jsonReqs,
			func(buf []byte) error { return ptraceotlp.NewExportRequest().UnmarshalJSON(buf) },
			func(buf []byte) error { _, err := scanJSON(buf, limits); return errOrNil(err) }},
	} {
		for _, step := range []struct {
			name string
			f    func([]byte) error
		}{{"pdata", enc.decode}, {"scan", enc.scan}} {
			b.Run(enc.name+"/"+step.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(enc.reqs[0])))
				for i := 0; b.Loop(); i++ {
					if err := step.f(enc.reqs[i%len(enc.reqs)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// errOrNil keeps a nil *requestError from becoming a non-nil error.
func errOrNil(e *requestError) error {
	if e == nil {
		return nil
	}
	return e
}

// BenchmarkHostileDecode measures what decoding the hostile
// requests allocates: with pdata alone, as the receiver did before its
// limits, and with the receiver's decode, which refuses them after the
// pre-scan, or after the one pass stopped early (receiver, with the
// selective decoder as lagscope serve has it). B/op is the figure.
func BenchmarkHostileDecode(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	core := &tracesCore{next: Discard, limiter: newByteLimiter(DefaultConfig().MaxInflightBytes), metrics: m, limits: DefaultConfig().decodeLimits()}
	for _, req := range []struct {
		name string
		body []byte
		json bool
	}{
		{"1M empty links", linkFlood(1_000_000), false},
		{"JSON nested 100k deep", deepJSON(100_000), true},
	} {
		b.Run(req.name+"/pdata", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := ptraceotlp.NewExportRequest()
				if req.json {
					_ = r.UnmarshalJSON(req.body) // fails past jsoniter's depth of 10000, after allocating
				} else if err := r.UnmarshalProto(req.body); err != nil {
					b.Fatal(err)
				}
			}
		})
		// As lagscope serve decodes it, and without the selective decoder
		// (the one pass).
		for _, sel := range []*selectiveDecoder{analysisDecoder, nil} {
			name := "/receiver"
			if sel == nil {
				name += "-pdata"
			}
			b.Run(req.name+name, func(b *testing.B) {
				core.selective = sel
				b.ReportAllocs()
				for b.Loop() {
					dec, reserved, rerr := core.decode(req.body, req.json)
					core.limiter.release(reserved)
					dec.free()
					if rerr == nil || rerr.reason != reasonTooLarge {
						b.Fatalf("decode = %v, want too large", rerr)
					}
				}
			})
		}
	}
}

func decoderName(lazy bool) string {
	if lazy {
		return "lazy"
	}
	return "pdata"
}
