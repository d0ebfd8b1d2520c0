package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/schollz/progressbar/v3"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/lagscope/lagscope/analyzer/synth"
)

// loadgenConfig is what `lagscope loadgen` is asked to do.
type loadgenConfig struct {
	endpoint   string
	protocol   string
	rate       float64 // spans per second; 0: as fast as the target accepts
	duration   time.Duration
	workers    int
	batch      int // traces per request
	metricsURL string
	settle     time.Duration
	timeout    time.Duration
}

// runLoadgen is `lagscope loadgen`: it sends CQRS-shaped traces with known
// lags (analyzer/synth) to a lagscope, then reports the accepted rate, the
// export latencies and, with --metrics-url, whether the target's metrics
// agree with what was sent.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c loadgenConfig
	fs.StringVar(&c.endpoint, "endpoint", "localhost:4317", "`host:port` of the target's OTLP receiver (gRPC or HTTP, see --protocol)")
	fs.StringVar(&c.protocol, "protocol", "grpc", "OTLP transport: grpc or http (protobuf)")
	fs.Float64Var(&c.rate, "rate", 10000, "spans per second to send; 0 sends as fast as the target accepts")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to send")
	fs.IntVar(&c.workers, "workers", 4, "concurrent export requests")
	fs.IntVar(&c.batch, "batch", 50, "traces per request (10 spans each)")
	fs.StringVar(&c.metricsURL, "metrics-url", "", "`URL` of the target's /metrics; when set, check that it agrees with what was sent")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "how long to wait for the target's metrics to count everything sent")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "timeout of one export request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("loadgen takes no arguments, got %q", fs.Args())
	}
	switch {
	case c.protocol != "grpc" && c.protocol != "http":
		return fmt.Errorf("--protocol must be grpc or http, got %q", c.protocol)
	case c.rate < 0:
		return fmt.Errorf("--rate must not be negative, got %v", c.rate)
	case c.duration <= 0:
		return fmt.Errorf("--duration must be positive, got %s", c.duration)
	case c.workers < 1:
		return fmt.Errorf("--workers must be at least 1, got %d", c.workers)
	case c.batch < 1:
		return fmt.Errorf("--batch must be at least 1, got %d", c.batch)
	}
	exp, err := newExporter(c.protocol, c.endpoint)
	if err != nil {
		return err
	}
	defer exp.Close()

	var before metricTotals
	if c.metricsURL != "" {
		if before, err = scrapeTotals(ctx, c.metricsURL); err != nil {
			return fmt.Errorf("scrape the target before sending: %w", err)
		}
	}
	fmt.Fprintf(stderr, "sending CQRS traces (%d spans a request) to %s over %s for %s\n", c.batch*synth.SpansPerTrace, c.endpoint, c.protocol, c.duration)
	res := sendLoad(ctx, exp, c, stderr)
	fmt.Fprintf(stdout, "sent:      %d requests, %d spans (%d traces, %d events) in %s\n",
		res.requests, res.sent.Spans, res.sent.Traces, res.sent.Events, res.elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "accepted:  %d spans, %.0f spans/s\n", res.accepted.Spans, float64(res.accepted.Spans)/res.elapsed.Seconds())
	if res.failed > 0 {
		fmt.Fprintf(stdout, "failed:    %d requests (%d spans); first error: %v\n", res.failed, res.sent.Spans-res.accepted.Spans, res.firstErr)
	}
	if res.rejected > 0 {
		fmt.Fprintf(stdout, "rejected:  %d spans (partial success)\n", res.rejected)
	}
	fmt.Fprintf(stdout, "latency:   p50 %s  p90 %s  p99 %s  max %s\n",
		res.latency(0.5), res.latency(0.9), res.latency(0.99), res.latency(1))
	if c.metricsURL == "" {
		if res.failed > 0 {
			return fmt.Errorf("%d export requests failed", res.failed)
		}
		return nil
	}
	ok, report := checkMetrics(ctx, c.metricsURL, before, res.accepted, c.settle)
	fmt.Fprint(stdout, report)
	if !ok {
		return errors.New("the target's metrics do not agree with what was sent")
	}
	if res.failed > 0 {
		return fmt.Errorf("%d export requests failed", res.failed)
	}
	return nil
}

// loadResult is what sendLoad did.
type loadResult struct {
	sent, accepted   synth.Batch
	requests, failed int
	rejected         int64
	firstErr         error
	elapsed          time.Duration
	latencies        []time.Duration // sorted
}

func (r *loadResult) latency(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := min(len(r.latencies)-1, int(math.Ceil(q*float64(len(r.latencies))))-1)
	return r.latencies[max(i, 0)].Round(10 * time.Microsecond)
}

// sendLoad runs c.workers exporters for c.duration at c.rate, each with its
// own synth stream, and returns what they sent.
func sendLoad(ctx context.Context, exp exporter, c loadgenConfig, progress io.Writer) loadResult {
	spansPerReq := c.batch * synth.SpansPerTrace
	total := int64(-1)
	if c.rate > 0 {
		total = int64(c.rate * c.duration.Seconds())
	}
	var bar *progressbar.ProgressBar
	if progress != nil {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(progress),
			progressbar.OptionSetDescription("spans"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("spans"),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetSpinnerChangeInterval(0),
		)
	}
	ctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	begin := time.Now()
	var issued atomic.Int64 // requests handed out, for the rate
	var mu sync.Mutex
	var res loadResult
	// Streams of a run differ from those of earlier runs, so that a target
	// never takes this run's events for duplicates of an earlier run's.
	streams := rand.Uint32()
	var wg sync.WaitGroup
	for w := range c.workers {
		wg.Go(func() {
			g := synth.New(synth.Config{Stream: streams + uint32(w), TracesPerRequest: c.batch})
			td, b := g.Next(time.Now())
			first := true
			var m ptrace.ProtoMarshaler
			var local loadResult
			var buf []byte
			for {
				n := issued.Add(1) - 1
				if c.rate > 0 {
					due := begin.Add(time.Duration(float64(n*int64(spansPerReq)) / c.rate * float64(time.Second)))
					if !sleepUntil(ctx, due) {
						break
					}
				} else if ctx.Err() != nil {
					break
				}
				if !first {
					b = g.Refill(td, time.Now())
				}
				first = false
				var err error
				buf, err = m.MarshalTraces(td) // a fresh slice each time: the exporter may keep it
				if err != nil {
					panic(err) // pdata marshals what it built
				}
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
				start := time.Now()
				rejected, err := exp.Export(rctx, buf)
				local.latencies = append(local.latencies, time.Since(start))
				rcancel()
				local.requests++
				local.sent.Add(b)
				local.rejected += rejected
				if err != nil {
					local.failed++
					if local.firstErr == nil {
						local.firstErr = err
					}
				} else if rejected == 0 {
					local.accepted.Add(b)
				}
				if bar != nil {
					_ = bar.Add(b.Spans)
				}
			}
			mu.Lock()
			res.requests += local.requests
			res.failed += local.failed
			res.rejected += local.rejected
			res.sent.Add(local.sent)
			res.accepted.Add(local.accepted)
			if res.firstErr == nil {
				res.firstErr = local.firstErr
			}
			res.latencies = append(res.latencies, local.latencies...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(begin)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(progress)
	}
	slices.Sort(res.latencies)
	return res
}

// sleepUntil waits until t or ctx's end, and reports whether t came first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// exporter sends one encoded ExportTraceServiceRequest and returns the
// spans the target rejected as partial success.
type exporter interface {
	Export(ctx context.Context, req []byte) (rejected int64, err error)
	Close() error
}

func newExporter(protocol, endpoint string) (exporter, error) {
	if protocol == "http" {
		url := endpoint
		if !strings.Contains(url, "://") {
			url = "http://" + url
		}
		if !strings.HasSuffix(url, "/v1/traces") {
			url = strings.TrimSuffix(url, "/") + "/v1/traces"
		}
		return &httpExporter{url: url, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}, nil
	}
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bytesCodec{}), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	return &grpcExporter{conn: conn}, nil
}

// grpcExporter calls TraceService/Export with requests already encoded.
type grpcExporter struct {
	conn *grpc.ClientConn
}

func (e *grpcExporter) Export(ctx context.Context, req []byte) (int64, error) {
	var resp []byte
	if err := e.conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &req, &resp); err != nil {
		return 0, err
	}
	return rejectedSpans(resp, ptraceotlp.ExportResponse.UnmarshalProto)
}

func (e *grpcExporter) Close() error { return e.conn.Close() }

// bytesCodec passes encoded messages through gRPC as they are.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("bytesCodec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec cannot unmarshal into %T", v)
	}
	*b = data.Materialize()
	return nil
}

func (bytesCodec) Name() string { return "proto" }

// httpExporter POSTs protobuf requests to /v1/traces.
type httpExporter struct {
	url    string
	client *http.Client
}

func (e *httpExporter) Export(ctx context.Context, req []byte) (int64, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(req))
	if err != nil {
		return 0, err
	}
	r.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := e.client.Do(r)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("export: %s", resp.Status)
	}
	return rejectedSpans(body, ptraceotlp.ExportResponse.UnmarshalProto)
}

func (e *httpExporter) Close() error {
	e.client.CloseIdleConnections()
	return nil
}

func rejectedSpans(body []byte, unmarshal func(ptraceotlp.ExportResponse, []byte) error) (int64, error) {
	resp := ptraceotlp.NewExportResponse()
	if err := unmarshal(resp, body); err != nil {
		return 0, fmt.Errorf("decode export response: %w", err)
	}
	return resp.PartialSuccess().RejectedSpans(), nil
}

// metricTotals are the target's series that synth traffic moves.
type metricTotals struct {
	appended  float64
	projected [2]float64
	lagCount  [2]float64
	lagSum    [2]float64 // seconds
}

func (t metricTotals) minus(o metricTotals) metricTotals {
	t.appended -= o.appended
	for p := range 2 {
		t.projected[p] -= o.projected[p]
		t.lagCount[p] -= o.lagCount[p]
		t.lagSum[p] -= o.lagSum[p]
	}
	return t
}

// scrapeTotals reads the synth series from a text scrape of url.
func scrapeTotals(ctx context.Context, url string) (metricTotals, error) {
	var t metricTotals
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return t, fmt.Errorf("parse scrape of %s: %w", url, err)
	}
	label := func(labels map[string]string, name string) string { return labels[name] }
	for _, m := range mfs["cqrs_events_appended_total"].GetMetric() {
		l := labelMap(m.GetLabel())
		if label(l, "event_type") == synth.EventType && label(l, "aggregate_type") == synth.AggregateType {
			t.appended += m.GetCounter().GetValue()
		}
	}
	for p, name := range synth.Projections {
		for _, m := range mfs["cqrs_events_projected_total"].GetMetric() {
			l := labelMap(m.GetLabel())
			if l["event_type"] == synth.EventType && l["projection"] == name {
				t.projected[p] += m.GetCounter().GetValue()
			}
		}
		for _, m := range mfs["cqrs_command_to_projection_lag_seconds"].GetMetric() {
			l := labelMap(m.GetLabel())
			if l["command"] == synth.Command && l["event_type"] == synth.EventType && l["projection"] == name {
				t.lagCount[p] += float64(m.GetHistogram().GetSampleCount())
				t.lagSum[p] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return t, nil
}

func labelMap[L interface {
	GetName() string
	GetValue() string
}](ls []L) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.GetName()] = l.GetValue()
	}
	return m
}

// checkMetrics waits (up to settle) for the target's counts to include
// everything accepted, then compares counts (equal) and mean lags (within
// 1ms) with what was sent. It returns whether they agree and a report.
func checkMetrics(ctx context.Context, url string, before metricTotals, sent synth.Batch, settle time.Duration) (bool, string) {
	deadline := time.Now().Add(settle)
	var got metricTotals
	var err error
	events := float64(sent.Events)
	for {
		var now metricTotals
		now, err = scrapeTotals(ctx, url)
		if err == nil {
			got = now.minus(before)
			if got.appended >= events && got.lagCount[0] >= events && got.lagCount[1] >= events {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "metrics:   cannot scrape %s: %v\n", url, err)
		return false, b.String()
	}
	ok := true
	check := func(what string, got, want float64) {
		mark := "ok"
		if got != want {
			mark, ok = "MISMATCH", false
		}
		fmt.Fprintf(&b, "  %-44s %12.0f  sent %12.0f  %s\n", what, got, want, mark)
	}
	fmt.Fprintf(&b, "metrics at %s (changes since the start):\n", url)
	check("cqrs_events_appended_total", got.appended, events)
	for p, name := range synth.Projections {
		check("cqrs_events_projected_total{"+name+"}", got.projected[p], events)
		check("lag histogram count{"+name+"}", got.lagCount[p], events)
		if events == 0 || got.lagCount[p] == 0 {
			continue
		}
		wantMean := sent.LagSum[p].Seconds() / events
		gotMean := got.lagSum[p] / got.lagCount[p]
		mark := "ok"
		if math.Abs(gotMean-wantMean) > 0.001 {
			mark, ok = "MISMATCH", false
		}
		fmt.Fprintf(&b, "  %-44s %11.3fms  sent %11.3fms  %s\n", "mean lag{"+name+"}", gotMean*1e3, wantMean*1e3, mark)
	}
	if ok {
		b.WriteString("metrics agree with what was sent\n")
	} else {
		b.WriteString("metrics DO NOT agree with what was sent\n")
	}
	return ok, b.String()
}
