package analyzer

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// TestBatchEquivalence checks, for every fixture and with and without
// rules, that ConsumeBatch of the fixture's requests as batches gives the
// metrics and Summary that ConsumeTraces of them gives: with the Batch a
// selective decoder makes (the Filter of Config.Reads), and with one that
// keeps everything (a nil Filter), so that the filter loses nothing the
// analysis reads.
func TestBatchEquivalence(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob(filepath.Join("..", "testdata", "rules", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) < 15 {
		t.Fatalf("%d fixtures, want every one of testdata", len(files))
	}
	configs := []struct{ name, rules string }{
		{"conventions", ""},
		{"custom rules", "custom.yaml"},
		{"hand_instrumented rules", "hand_instrumented.yaml"},
	}
	modes := []struct {
		name    string
		consume func(a *Analyzer, td ptrace.Traces) error
	}{
		{"batch of Reads", func(a *Analyzer, td ptrace.Traces) error {
			var b spanbatch.Batch
			b.FromTraces(td, a.cfg.Reads().Filter())
			return a.ConsumeBatch(context.Background(), &b)
		}},
		{"batch of everything", func(a *Analyzer, td ptrace.Traces) error {
			var b spanbatch.Batch
			b.FromTraces(td, nil)
			return a.ConsumeBatch(context.Background(), &b)
		}},
	}
	for _, file := range files {
		reqs := readRequests(t, file)
		for _, c := range configs {
			name := strings.TrimSuffix(filepath.Base(file), ".jsonl") + "/" + c.name
			t.Run(name, func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.KeepSamples = true
				if c.rules != "" {
					cfg.Rules = rulesOf(t, filepath.Join("..", "testdata", "rules", c.rules))
				}
				analyze := func(consume func(a *Analyzer, td ptrace.Traces) error) ([]byte, Summary) {
					t.Helper()
					reg := prometheus.NewRegistry()
					a, err := New(cfg, nil, reg)
					if err != nil {
						t.Fatal(err)
					}
					a.now = (&clock{t: base}).now // no wall time in the metrics
					for _, td := range reqs {
						if err := consume(a, td); err != nil {
							t.Fatal(err)
						}
					}
					a.Flush()
					return scrape(t, reg, acceptText).body, a.Summary()
				}
				wantBody, wantSum := analyze(func(a *Analyzer, td ptrace.Traces) error {
					return a.ConsumeTraces(context.Background(), td)
				})
				if !strings.Contains(string(wantBody), "lagscope_spans_total") {
					t.Fatalf("scrape without lagscope_spans_total:\n%s", wantBody)
				}
				for _, m := range modes {
					gotBody, gotSum := analyze(m.consume)
					if diff := cmp.Diff(string(gotBody), string(wantBody)); diff != "" {
						t.Errorf("%s: metrics differ from ConsumeTraces' (-got +want):\n%s", m.name, diff)
					}
					if diff := cmp.Diff(gotSum, wantSum); diff != "" {
						t.Errorf("%s: Summary differs from ConsumeTraces' (-got +want):\n%s", m.name, diff)
					}
				}
			})
		}
	}
}

// TestConsumeBatchAllocs: a warm analyzer consuming a batch of spans
// without a role allocates nothing, as ConsumeTraces of pdata did
// (BenchmarkConsumeUnrelated).
func TestConsumeBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	a, err := New(DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var specs []spanSpec
	for i := range 100 {
		specs = append(specs, spanSpec{trace: i, span: 1, parent: 7, kind: ptrace.SpanKindServer,
			attrs: map[string]any{"http.route": "/x", "cqrs.aggregate.version": "3", "messaging.system": "kafka"}})
	}
	var b spanbatch.Batch
	b.FromTraces(traces("svc", specs...), nil)
	ctx := context.Background()
	if err := a.ConsumeBatch(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := a.ConsumeBatch(ctx, &b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ConsumeBatch of spans without a role: %v allocations, want 0", n)
	}
}
