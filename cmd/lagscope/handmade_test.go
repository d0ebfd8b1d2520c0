package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/server"
)

func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// TestServeHandInstrumented sends, with the OpenTelemetry Go SDK, exactly the
// instrumentation of a hand-instrumented CQRS system (issue 12): a command
// service's handle_create_order SERVER span with command.type, its
// store_event PRODUCER span with event.id, the trace context injected into the
// event's metadata with B3 multi-header propagation, and a query service's
// process_event CONSUMER span whose parent is extracted from that metadata and
// that carries no event id. lagscope must count every event appended and
// projected with no configuration, and measure process_event end minus
// handle_create_order start, labelled command="CreateOrder", within 1ms. The
// query service's spans are exported first: projections before their events.
func TestServeHandInstrumented(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Join.Deadline = time.Second
		c.Join.Retention = time.Minute
	})
	ctx := context.Background()
	grpcExp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(s.GRPCAddr().String()), otlptracegrpc.WithInsecure())
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
	commands := provider(grpcExp, "command-service")
	queries := provider(httpExp, "query-service")
	defer commands.Shutdown(ctx)
	defer queries.Shutdown(ctx)
	cmdTracer, queryTracer := commands.Tracer("command-service"), queries.Tracer("query-service")
	prop := b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader))

	const events = 50
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	wantLag := 0.0
	for i := range events {
		t0 := base.Add(time.Duration(i) * 100 * time.Millisecond)
		cctx, handle := cmdTracer.Start(ctx, "handle_create_order", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(t0),
			trace.WithAttributes(attribute.String("command.type", "CreateOrder"), attribute.String("order.customer_id", fmt.Sprintf("c-%d", i))))
		_, validate := cmdTracer.Start(cctx, "validate_command", trace.WithTimestamp(t0.Add(time.Millisecond)))
		validate.End(trace.WithTimestamp(t0.Add(2 * time.Millisecond)))
		_, create := cmdTracer.Start(cctx, "create_aggregate", trace.WithTimestamp(t0.Add(2*time.Millisecond)),
			trace.WithAttributes(attribute.String("order.id", fmt.Sprintf("o-%d", i)), attribute.Int64("order.total", 4200)))
		create.End(trace.WithTimestamp(t0.Add(3 * time.Millisecond)))
		sctx, store := cmdTracer.Start(cctx, "store_event", trace.WithSpanKind(trace.SpanKindProducer), trace.WithTimestamp(t0.Add(3*time.Millisecond)),
			trace.WithAttributes(attribute.String("event.type", "OrderCreated"), attribute.String("event.id", uuid())))
		metadata := map[string]string{} // the event's metadata in the store
		prop.Inject(sctx, propagation.MapCarrier(metadata))
		store.End(trace.WithTimestamp(t0.Add(5 * time.Millisecond)))
		handle.End(trace.WithTimestamp(t0.Add(6 * time.Millisecond)))
		if _, ok := metadata["x-b3-traceid"]; !ok {
			t.Fatalf("B3 multi-header propagation injected %v", metadata)
		}

		// The query service reads the event, and its metadata, later.
		lag := time.Duration(20+i) * time.Millisecond
		pctx := prop.Extract(ctx, propagation.MapCarrier(metadata))
		pctx, process := queryTracer.Start(pctx, "process_event", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(t0.Add(lag-4*time.Millisecond)),
			trace.WithAttributes(attribute.String("event.type", "OrderCreated"), attribute.String("event.aggregate_id", fmt.Sprintf("o-%d", i))))
		_, project := queryTracer.Start(pctx, "project_read_model", trace.WithTimestamp(t0.Add(lag-3*time.Millisecond)))
		project.End(trace.WithTimestamp(t0.Add(lag - time.Millisecond)))
		process.End(trace.WithTimestamp(t0.Add(lag)))
		wantLag += lag.Seconds()
	}
	// Projections first.
	if err := queries.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := commands.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	url := s.MetricsURL()
	match := map[string]string{"command": "CreateOrder", "event_type": "OrderCreated", "projection": "query-service"}
	waitFor(t, 15*time.Second, "every event projected and the deadline passed", func() (bool, string) {
		mfs := scrape(t, url)
		p := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": "query-service"})
		l := value(mfs, "cqrs_command_to_projection_lag_seconds", match)
		pending := value(mfs, "cqrs_projection_pending_events", map[string]string{"projection": "query-service"})
		return p == events && l == events && pending == 0, fmt.Sprintf("projected=%v lags=%v pending=%v", p, l, pending)
	})
	mfs := scrape(t, url)
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
	}{
		{"lagscope_spans_total", map[string]string{"role": "command"}, events},
		{"lagscope_spans_total", map[string]string{"role": "append"}, events},
		{"lagscope_spans_total", map[string]string{"role": "project"}, events},
		{"cqrs_events_appended_total", map[string]string{"event_type": "OrderCreated"}, events},
		{"cqrs_events_projected_total", map[string]string{"event_type": "OrderCreated", "projection": "query-service"}, events},
		{"cqrs_events_duplicated_total", nil, 0},
		{"cqrs_command_to_projection_lag_seconds", match, events},
	} {
		if got := value(mfs, c.name, c.match); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.match, got, c.want)
		}
	}
	if got := histSum(mfs, "cqrs_command_to_projection_lag_seconds", match); math.Abs(got-wantLag) > 0.001 {
		t.Errorf("lag sum %.6fs, want %.6fs within 1ms", got, wantLag)
	}
	waitFor(t, 10*time.Second, "the deadline to pass with nothing unprojected", func() (bool, string) {
		mfs := scrape(t, url)
		u := value(mfs, "cqrs_events_unprojected_total", nil)
		pending := value(mfs, "cqrs_projection_pending_events", nil)
		return u == 0 && pending == 0, fmt.Sprintf("unprojected=%v pending=%v", u, pending)
	})
}

// TestAnalyzeRetriedRequests sends every request of happy_path.jsonl twice,
// as an exporter that retries a request whose answer was lost does: the
// counts must be exactly those of sending it once (issue 12).
func TestAnalyzeRetriedRequests(t *testing.T) {
	b, err := os.ReadFile("../../testdata/happy_path.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var twice []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			twice = append(append(twice, line...), line...)
		}
	}
	path := filepath.Join(t.TempDir(), "retried.jsonl")
	if err := os.WriteFile(path, twice, 0o644); err != nil {
		t.Fatal(err)
	}
	report := func(file string) analyzeReport {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"analyze", "--format", "json", file}, &out, &errOut); err != nil {
			t.Fatal(err)
		}
		var rep analyzeReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		rep.Input = analyzeInput{}
		return rep
	}
	once, retried := report("../../testdata/happy_path.jsonl"), report(path)
	if diff := cmp.Diff(once, retried); diff != "" {
		t.Errorf("every request sent twice changes the analysis (-once +twice):\n%s", diff)
	}
}

// TestConfigFileRules: the rules: key of lagscope's config file reaches
// analyzer.Config.Rules (issue 12), and Validate accepts the fixture's.
func TestConfigFileRules(t *testing.T) {
	c := DefaultConfig()
	if err := server.LoadConfigFile("../../testdata/rules/custom.yaml", &c); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range c.Analyzer().Rules {
		names = append(names, r.Name)
	}
	if diff := cmp.Diff(names, []string{"health", "handlers", "appends", "projectors", "queries"}); diff != "" {
		t.Errorf("rules read (-got +want):\n%s", diff)
	}
	if err := c.Analyzer().Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
