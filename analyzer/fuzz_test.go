package analyzer

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

var update = flag.Bool("update", false, "rewrite the seed corpus under testdata/fuzz and testdata/*.golden")

// fuzzConfig has small bounds, so that a fuzzed request reaches all of them.
func fuzzConfig() Config {
	cfg := DefaultConfig()
	cfg.Join.Deadline = time.Second
	cfg.Join.CommandWait = 100 * time.Millisecond
	cfg.Join.Retention = 2 * time.Second
	cfg.Join.MaxPendingEvents = 64
	cfg.Join.MaxPendingProjections = 16
	cfg.Join.MaxTraceSpans = 64
	cfg.Metrics.MaxLabelValues = 4
	cfg.Metrics.MaxLabelLength = minLabelLength
	cfg.Metrics.MaxSeries = 8
	cfg.Metrics.MaxHistogramSeries = 4
	cfg.KeepSamples = true
	cfg.Join.Expected = map[string][]string{"*": {"p"}}
	return cfg
}

// FuzzConsumeTraces feeds the analyzer decoded OTLP export requests, twice
// (the second time as duplicates), ticks and flushes it, and requires a
// clean exposition afterwards: whatever a request holds, it cannot make a
// scrape fail or a label that `promtool check metrics` would refuse.
func FuzzConsumeTraces(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(b); err != nil {
			t.Skip("not an ExportTraceServiceRequest")
		}
		cfg := fuzzConfig()
		reg := prometheus.NewRegistry()
		a, err := New(cfg, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		a.now = func() time.Time { return base }
		for range 2 {
			if err := a.ConsumeTraces(context.Background(), req.Traces()); err != nil {
				t.Fatal(err)
			}
		}
		a.Tick(base.Add(1500 * time.Millisecond))
		a.Flush()
		checkExpositionWith(t, reg, cfg.Metrics.MaxLabelLength, true)
		_ = a.Summary()
	})
}

// fuzzSeeds are the seed corpus of FuzzConsumeTraces: hostile requests and
// a couple of valid CQRS traces.
func fuzzSeeds() map[string]ptrace.Traces {
	ms := time.Millisecond
	cmd := command(1, 1, "C", 0, 50*ms)
	app := appendSpan(1, 2, 1, "e1", "T", 10*ms, 20*ms)
	with := func(s spanSpec, kv ...any) spanSpec {
		attrs := map[string]any{}
		for k, v := range s.attrs {
			attrs[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			attrs[kv[i].(string)] = kv[i+1]
		}
		s.attrs = attrs
		return s
	}
	proj := project(1, 3, 2, "e1", "T", "p", 30*ms, 100*ms)
	huge := strings.Repeat("h", 4096)
	seeds := map[string]ptrace.Traces{
		"valid_cqrs": traces("orders", cmd, app, proj, project(1, 4, 2, "e1", "T", "q", 30*ms, 200*ms),
			spanSpec{trace: 1, span: 5, parent: -1, start: 300 * ms, end: 301 * ms,
				attrs: map[string]any{"cqrs.query.name": "GetOrder", "cqrs.aggregate.id": "order-e1", "cqrs.aggregate.version": int64(1)}}),
		"valid_messaging": traces("shop",
			spanSpec{trace: 2, span: 1, parent: -1, kind: ptrace.SpanKindProducer, end: 5 * ms,
				attrs: map[string]any{"messaging.system": "kafka", "messaging.destination.name": "orders", "messaging.message.id": "m1"}},
			spanSpec{trace: 2, span: 2, parent: 1, kind: ptrace.SpanKindConsumer, start: 10 * ms, end: 20 * ms,
				attrs: map[string]any{"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.message.id": "m1",
					"messaging.consumer.group.name": "orders-view"}}),
		"invalid_utf8_projection": traces("shop", cmd, app, project(1, 3, 2, "e1", "T", badUTF8, 30*ms, 100*ms)),
		"invalid_utf8_names": traces(badUTF8, with(cmd, "cqrs.command.name", badUTF8),
			with(app, "cqrs.event.type", badUTF8, "cqrs.aggregate.type", badUTF8),
			spanSpec{trace: 1, span: 3, parent: 2, kind: ptrace.SpanKindConsumer, start: 30 * ms, end: 100 * ms,
				attrs: map[string]any{"cqrs.operation": "project", "cqrs.event.id": "e1"}},
			spanSpec{trace: 1, span: 4, parent: -1, attrs: map[string]any{"cqrs.query.name": badUTF8}}),
		"huge_strings": traces("shop", with(cmd, "cqrs.command.name", huge),
			with(app, "cqrs.event.type", huge+"\xff", "cqrs.event.id", huge, "cqrs.aggregate.id", huge, "cqrs.aggregate.type", huge),
			project(1, 3, 2, huge, huge, strings.Repeat("é", 2048), 30*ms, 100*ms)),
		"huge_versions": traces("shop",
			with(appendSpan(1, 2, -1, "e1", "T", 0, ms), "cqrs.aggregate.version", "18446744073709551625"),
			with(appendSpan(2, 2, -1, "e2", "T", ms, 2*ms), "cqrs.aggregate.version", 1e300),
			with(appendSpan(3, 2, -1, "e3", "T", 2*ms, 3*ms), "cqrs.aggregate.version", math.NaN()),
			with(appendSpan(4, 2, -1, "e4", "T", 3*ms, 4*ms), "cqrs.aggregate.version", int64(math.MinInt64)),
			project(1, 3, 2, "e1", "T", "p", 10*ms, 20*ms), project(2, 3, 2, "e2", "T", "p", 11*ms, 21*ms),
			spanSpec{trace: 5, span: 1, parent: -1, attrs: map[string]any{"cqrs.query.name": "Q", "cqrs.aggregate.id": "order-e1",
				"cqrs.aggregate.version": "-9223372036854775809"}}),
		"many_labels": manyLabels(12),
	}
	absurd := traces("shop", cmd, app, proj, project(1, 4, 2, "e1", "T", "q", 30*ms, 100*ms), appendSpan(1, 5, 1, "e2", "T", 20*ms, 10*ms))
	spans := absurd.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.At(2).SetEndTimestamp(pcommon.Timestamp(math.MaxUint64))
	spans.At(3).SetStartTimestamp(0)
	spans.At(0).SetStartTimestamp(pcommon.Timestamp(math.MaxUint64))
	seeds["absurd_timestamps"] = absurd
	return seeds
}

// manyLabels is a request with n commands, event types, aggregate types and
// projections: past the label and series bounds of fuzzConfig.
func manyLabels(n int) ptrace.Traces {
	var specs []spanSpec
	for i := range n {
		id := fmt.Sprintf("e%d", i)
		a := appendSpan(i, 2, 1, id, fmt.Sprintf("T%d", i), 10*time.Millisecond, 20*time.Millisecond)
		a.attrs["cqrs.aggregate.type"] = fmt.Sprintf("A%d", i)
		specs = append(specs, command(i, 1, fmt.Sprintf("C%d", i), 0, time.Millisecond), a,
			project(i, 3, 2, id, "", fmt.Sprintf("p%d", i), 30*time.Millisecond, 40*time.Millisecond))
	}
	return traces("shop", specs...)
}

// corpusFile is a seed in the format of go test's fuzzing corpus.
func corpusFile(b []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n")
}

// TestFuzzCorpus: the committed seed corpus is fuzzSeeds' (-update rewrites
// it).
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzConsumeTraces")
	seeds := fuzzSeeds()
	names := make([]string, 0, len(seeds))
	for name := range seeds {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		b, err := ptraceotlp.NewExportRequestFromTraces(seeds[name]).MarshalProto()
		if err != nil {
			t.Fatal(err)
		}
		want, path := corpusFile(b), filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestFuzzCorpus -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from fuzzSeeds()[%q] (run go test -run TestFuzzCorpus -update)", path, name)
		}
	}
}
