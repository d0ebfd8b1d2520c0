package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// startServer runs `lagscope serve` in-process on ephemeral ports.
func startServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.OTLP.GRPCEndpoint = "127.0.0.1:0"
	cfg.OTLP.HTTPEndpoint = "127.0.0.1:0"
	cfg.Web.ListenAddress = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s
}

// scrape returns the metric families of a plain-text scrape.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	return mfs
}

// value sums the samples of a counter or gauge family whose labels include
// match.
func value(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	mf, ok := mfs[name]
	if !ok {
		return 0
	}
	for _, m := range mf.GetMetric() {
		if !labelsMatch(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func histSum(mfs map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		if labelsMatch(m, match) && m.Histogram != nil {
			sum += m.Histogram.GetSampleSum()
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, match map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := match[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(match)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeEndToEnd sends a CQRS system's spans to `lagscope serve` with the
// OpenTelemetry Go SDK's exporters (the command service over gRPC, the
// projector over HTTP, as two real services would), and checks the metrics
// a Prometheus scrape sees: exact counts, lag within 1ms, and exemplars.
func TestServeEndToEnd(t *testing.T) {
	for _, lazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lazy_decode=%v", lazy), func(t *testing.T) { testServeEndToEnd(t, lazy) })
	}
}

func testServeEndToEnd(t *testing.T, lazy bool) {
	s := startServer(t, func(c *Config) {
		c.Join.Deadline = time.Second
		c.Join.Retention = time.Minute
		c.OTLP.LazyDecode = lazy
	})
	ctx := context.Background()

	grpcExp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(s.GRPCAddr().String()), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithCompressor("gzip"))
	if err != nil {
		t.Fatal(err)
	}
	httpExp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(s.HTTPAddr().String()), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	provider := func(exp sdktrace.SpanExporter, service string) *sdktrace.TracerProvider {
		res := resource.NewSchemaless(attribute.String("service.name", service))
		return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	}
	cmdTP := provider(grpcExp, "orders-command")
	projTP := provider(httpExp, "orders-projector")
	defer cmdTP.Shutdown(ctx)
	defer projTP.Shutdown(ctx)
	cmdTracer, projTracer := cmdTP.Tracer("test"), projTP.Tracer("test")

	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	const events = 5
	var wantLag = map[string]float64{}
	var traceIDs []string
	for i := 0; i < events; i++ {
		t0 := base.Add(time.Duration(i) * time.Second)
		id := fmt.Sprintf("evt-e2e-%03d", i)
		cctx, cmd := cmdTracer.Start(ctx, "CreateOrder", trace.WithTimestamp(t0),
			trace.WithAttributes(attribute.String("cqrs.operation", "command"), attribute.String("cqrs.command.name", "CreateOrder")))
		actx, app := cmdTracer.Start(cctx, "append", trace.WithTimestamp(t0.Add(10*time.Millisecond)),
			trace.WithAttributes(attribute.String("cqrs.operation", "append"), attribute.String("cqrs.event.id", id),
				attribute.String("cqrs.event.type", "OrderCreated"), attribute.String("cqrs.aggregate.type", "Order"),
				attribute.String("cqrs.aggregate.id", fmt.Sprintf("order-%d", i)), attribute.Int64("cqrs.aggregate.version", 1)))
		app.End(trace.WithTimestamp(t0.Add(20 * time.Millisecond)))
		cmd.End(trace.WithTimestamp(t0.Add(30 * time.Millisecond)))
		traceIDs = append(traceIDs, app.SpanContext().TraceID().String())
		for j, projection := range []string{"orders_view", "sales_summary"} {
			if projection == "sales_summary" && i == events-1 {
				continue // the last event never reaches sales_summary
			}
			lag := time.Duration(100*(i+1)+1000*j) * time.Millisecond
			_, p := projTracer.Start(actx, "project "+projection, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithTimestamp(t0.Add(lag-5*time.Millisecond)),
				trace.WithAttributes(attribute.String("cqrs.operation", "project"), attribute.String("cqrs.projection", projection),
					attribute.String("cqrs.event.id", id), attribute.String("cqrs.event.type", "OrderCreated")))
			p.End(trace.WithTimestamp(t0.Add(lag)))
			wantLag[projection] += lag.Seconds()
		}
	}
	if err := cmdTP.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := projTP.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	url := s.MetricsURL()
	waitFor(t, 15*time.Second, "the unprojected event to be declared", func() (bool, string) {
		mfs := scrape(t, url)
		u := value(mfs, "cqrs_events_unprojected_total", nil)
		return u >= 1, fmt.Sprintf("unprojected=%v", u)
	})
	mfs := scrape(t, url)
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"lagscope_received_spans_total", map[string]string{"transport": "grpc"}, 2 * events},
		{"lagscope_received_spans_total", map[string]string{"transport": "http"}, 2*events - 1},
		{"lagscope_spans_total", map[string]string{"role": "command"}, events},
		{"lagscope_spans_total", map[string]string{"role": "project"}, 2*events - 1},
		{"cqrs_events_appended_total", map[string]string{"event_type": "OrderCreated", "aggregate_type": "Order"}, events},
		{"cqrs_events_projected_total", map[string]string{"projection": "orders_view"}, events},
		{"cqrs_events_projected_total", map[string]string{"projection": "sales_summary"}, events - 1},
		{"cqrs_events_unprojected_total", map[string]string{"projection": "sales_summary", "event_type": "OrderCreated"}, 1},
		{"cqrs_events_unprojected_total", map[string]string{"projection": "orders_view"}, 0},
		{"cqrs_command_to_projection_lag_seconds", map[string]string{"projection": "orders_view", "command": "CreateOrder"}, events},
		{"cqrs_projection_pending_events", map[string]string{"projection": "sales_summary"}, 0},
		{"cqrs_stage_duration_seconds", map[string]string{"stage": "command"}, events},
	} {
		if got := value(mfs, c.name, c.match); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.match, got, c.want)
		}
	}
	for projection, want := range wantLag {
		got := histSum(mfs, "cqrs_command_to_projection_lag_seconds", map[string]string{"projection": projection})
		if math.Abs(got-want) > 0.001 {
			t.Errorf("lag sum for %s = %.6fs, want %.6fs within 1ms", projection, got, want)
		}
	}

	// Exemplars carry the trace id, in the OpenMetrics exposition.
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("content type %q, want OpenMetrics", ct)
	}
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "cqrs_command_to_projection_lag_seconds_bucket") && strings.Contains(line, "# {trace_id=\"") {
			for _, id := range traceIDs {
				if strings.Contains(line, id) {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no lag bucket carries an exemplar with one of the sent trace ids %v", traceIDs)
	}
}
