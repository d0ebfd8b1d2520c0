// Package loadgen is `lagscope loadgen`: it sends CQRS-shaped traces with
// known lags (package synth) to a lagscope over OTLP, then reports the
// accepted rate, the export latencies and, when asked, whether the target's
// metrics agree with what was sent.
package loadgen

import (
	"bytes"
	"context"
	"errors"
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
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/progress"
	"github.com/lagscope/lagscope/synth"
)

// Config is what a run sends, and where it checks the outcome.
type Config struct {
	// Endpoint is the host:port of the target's OTLP receiver, gRPC or
	// HTTP as Protocol says. Default "localhost:4317".
	Endpoint string
	// Protocol is the OTLP transport: "grpc" or "http" (protobuf). Default
	// "grpc".
	Protocol string
	// Rate is the spans per second to send; 0 sends as fast as the target
	// accepts. Default 10000.
	Rate float64
	// Duration is how long to send. Default 10s.
	Duration time.Duration
	// Workers is the number of concurrent export requests. Default 4.
	Workers int
	// Batch is the number of traces per request (synth.SpansPerTrace spans
	// each). Default 50.
	Batch int
	// MetricsURL is the URL of the target's /metrics; when set, Run checks
	// that it agrees with what was sent. Default empty: no check.
	MetricsURL string
	// Settle is how long to wait for the target's metrics to count
	// everything sent. Default 30s.
	Settle time.Duration
	// Timeout bounds one export request. Default 10s.
	Timeout time.Duration
}

// DefaultConfig returns the defaults of every setting.
func DefaultConfig() Config {
	return Config{
		Endpoint: "localhost:4317", Protocol: "grpc", Rate: 10000, Duration: 10 * time.Second,
		Workers: 4, Batch: 50, Settle: 30 * time.Second, Timeout: 10 * time.Second,
	}
}

// Validate reports the first setting out of range. Its errors name the
// settings by the `lagscope loadgen` flags that set them.
func (c Config) Validate() error {
	switch {
	case c.Protocol != "grpc" && c.Protocol != "http":
		return fmt.Errorf("--protocol must be grpc or http, got %q", c.Protocol)
	case c.Rate < 0:
		return fmt.Errorf("--rate must not be negative, got %v", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("--duration must be positive, got %s", c.Duration)
	case c.Workers < 1:
		return fmt.Errorf("--workers must be at least 1, got %d", c.Workers)
	case c.Batch < 1:
		return fmt.Errorf("--batch must be at least 1, got %d", c.Batch)
	}
	return nil
}

// Run validates c, sends load as it says, and writes its report to out and
// its progress to progress, which may be nil: a line, then a progress bar
// if progress is a terminal, plain lines every 10s otherwise.
// It returns an error when c is invalid, when export requests failed, or
// when the target's metrics (c.MetricsURL) do not agree with what was sent.
func Run(ctx context.Context, c Config, out, progress io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	exp, err := NewExporter(c.Protocol, c.Endpoint)
	if err != nil {
		return err
	}
	defer exp.Close()

	var before metricTotals
	if c.MetricsURL != "" {
		if before, err = scrapeTotals(ctx, c.MetricsURL); err != nil {
			return fmt.Errorf("scrape the target before sending: %w", err)
		}
	}
	if progress != nil {
		fmt.Fprintf(progress, "sending CQRS traces (%d spans a request) to %s over %s for %s\n", c.Batch*synth.SpansPerTrace, c.Endpoint, c.Protocol, c.Duration)
	}
	res := sendLoad(ctx, exp, c, progress)
	fmt.Fprintf(out, "sent:      %d requests, %d spans (%d traces, %d events) in %s\n",
		res.requests, res.sent.Spans, res.sent.Traces, res.sent.Events, res.elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "accepted:  %d spans, %.0f spans/s\n", res.accepted.Spans, float64(res.accepted.Spans)/res.elapsed.Seconds())
	if res.failed > 0 {
		fmt.Fprintf(out, "failed:    %d requests (%d spans); first error: %v\n", res.failed, res.sent.Spans-res.accepted.Spans, res.firstErr)
	}
	if res.rejected > 0 {
		fmt.Fprintf(out, "rejected:  %d spans (partial success)\n", res.rejected)
	}
	fmt.Fprintf(out, "latency:   p50 %s  p90 %s  p99 %s  max %s\n",
		res.latency(0.5), res.latency(0.9), res.latency(0.99), res.latency(1))
	if c.MetricsURL == "" {
		if res.failed > 0 {
			return fmt.Errorf("%d export requests failed", res.failed)
		}
		return nil
	}
	ok, report := checkMetrics(ctx, c.MetricsURL, before, res.accepted, c.Settle)
	fmt.Fprint(out, report)
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

// sendLoad runs c.Workers exporters for c.Duration at c.Rate, each with its
// own synth stream, and returns what they sent.
func sendLoad(ctx context.Context, exp Exporter, c Config, w io.Writer) loadResult {
	spansPerReq := c.Batch * synth.SpansPerTrace
	total := int64(-1)
	if c.Rate > 0 {
		total = int64(c.Rate * c.Duration.Seconds())
	}
	var prog *progress.Bar
	if w != nil {
		prog = progress.New(w, total, "spans", 200*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	begin := time.Now()
	var issued atomic.Int64 // requests handed out, for the rate
	var mu sync.Mutex
	var res loadResult
	// Streams of a run differ from those of earlier runs, so that a target
	// never takes this run's events for duplicates of an earlier run's.
	streams := rand.Uint32()
	var wg sync.WaitGroup
	for w := range c.Workers {
		wg.Go(func() {
			g := synth.New(synth.Config{Stream: streams + uint32(w), TracesPerRequest: c.Batch})
			td, b := g.Next(time.Now())
			first := true
			var m ptrace.ProtoMarshaler
			var local loadResult
			var buf []byte
			for {
				n := issued.Add(1) - 1
				if c.Rate > 0 {
					due := begin.Add(time.Duration(float64(n*int64(spansPerReq)) / c.Rate * float64(time.Second)))
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
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.Timeout)
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
				if prog != nil {
					prog.Add(b.Spans)
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
	if prog != nil {
		prog.Finish()
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

// Exporter sends encoded OTLP ExportTraceServiceRequests to one target.
// Its methods are safe for concurrent use.
type Exporter interface {
	// Export sends one request, which it may keep, and returns the spans
	// the target rejected as partial success.
	Export(ctx context.Context, req []byte) (rejected int64, err error)
	// Close releases the connections.
	Close() error
}

// NewExporter returns an Exporter to endpoint (host:port; over HTTP, a URL
// too) over protocol, "grpc" or "http" (protobuf). It does not connect: the
// first Export does.
func NewExporter(protocol, endpoint string) (Exporter, error) {
	if protocol == "http" {
		url := endpoint
		if !strings.Contains(url, "://") {
			url = "http://" + url
		}
		if !strings.HasSuffix(url, collector.TracesHTTPPath) {
			url = strings.TrimSuffix(url, "/") + collector.TracesHTTPPath
		}
		return &httpExporter{url: url, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}, nil
	}
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(collector.ClientCodec()), grpc.MaxCallRecvMsgSize(64<<20)))
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
	if err := e.conn.Invoke(ctx, collector.TracesGRPCMethod, &req, &resp); err != nil {
		return 0, err
	}
	return rejectedSpans(resp, ptraceotlp.ExportResponse.UnmarshalProto)
}

func (e *grpcExporter) Close() error { return e.conn.Close() }

// httpExporter POSTs protobuf requests to the OTLP/HTTP traces path.
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
