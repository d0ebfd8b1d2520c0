package analyzer_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/proto"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/synth"
)

// readFixture returns the export requests of one OTLP JSON lines fixture.
func readFixture(t *testing.T, path string) []ptrace.Traces {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var u ptrace.JSONUnmarshaler
	var out []ptrace.Traces
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, td)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// exposition returns what g gathers as the text format, which holds no
// exemplars or created timestamps (their clocks differ between runs), less
// the families in skip. With round, histogram sums are rounded to the
// nanosecond: a sum of float seconds depends in its last digits on the
// order of the observations, which concurrent requests change.
func exposition(t *testing.T, g prometheus.Gatherer, round bool, skip ...string) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
families:
	for _, mf := range mfs {
		for _, s := range skip {
			if mf.GetName() == s {
				continue families
			}
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil && round {
				h.SampleSum = proto.Float64(math.Round(h.GetSampleSum()*1e9) / 1e9)
			}
		}
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	return buf.String()
}

// familyNames returns the names of the families g gathers.
func familyNames(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

// TestResolverJoinerAsAnalyzer drives the two steps through the exported
// API, each in a registry of its own as two processes would run them
// (resolve, then join facts that own their strings), and checks that they
// expose exactly the metrics of one Analyzer on every fixture, with
// several shards and with one.
func TestResolverJoinerAsAnalyzer(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, shards := range []int{1, 4} {
		for _, file := range files {
			name := strings.TrimSuffix(filepath.Base(file), ".jsonl")
			t.Run(fmt.Sprintf("%s/shards=%d", name, shards), func(t *testing.T) {
				cfg := analyzer.DefaultConfig()
				cfg.Join.Shards = shards
				reqs := readFixture(t, file)

				regA := prometheus.NewRegistry()
				a, err := analyzer.New(cfg, nil, regA)
				if err != nil {
					t.Fatal(err)
				}
				for _, td := range reqs {
					if err := a.ConsumeTraces(context.Background(), td); err != nil {
						t.Fatal(err)
					}
				}
				a.Flush()

				regR, regJ := prometheus.NewRegistry(), prometheus.NewRegistry()
				r, err := analyzer.NewResolver(cfg, regR)
				if err != nil {
					t.Fatal(err)
				}
				j, err := analyzer.NewJoiner(cfg, nil, regJ)
				if err != nil {
					t.Fatal(err)
				}
				var facts []analyzer.Fact
				for _, td := range reqs {
					now := time.Now()
					facts = r.Resolve(facts[:0], td, now)
					j.Apply(facts, now)
				}
				now := time.Now()
				j.Apply(r.Expire(nil, now, true), now)
				j.Flush()
				if got := r.Waiting(); got != 0 {
					t.Errorf("Waiting() after Expire(flush) = %d, want 0", got)
				}

				split := prometheus.Gatherers{regR, regJ}
				got, want := exposition(t, split, false), exposition(t, regA, false, "lagscope_panics_total")
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("resolver+joiner exposition differs from the analyzer's (-analyzer +resolver+joiner):\n%s", diff)
				}
				// Nothing the Analyzer exposes is missing from the
				// comparison, and the split exposes nothing more.
				if got, want := len(familyNames(t, split)), len(familyNames(t, regA))-1; got != want {
					t.Errorf("resolver+joiner expose %d families, want %d (the analyzer's less lagscope_panics_total)", got, want)
				}
			})
		}
	}
}

// TestResolverJoinerConcurrent drives one Resolver and one Joiner from
// several goroutines at once, ticking meanwhile, and checks that they
// expose what one Analyzer exposes for the same requests analysed one after
// another: both are safe for concurrent use and lock their own shards.
func TestResolverJoinerConcurrent(t *testing.T) {
	cfg := analyzer.DefaultConfig()
	cfg.Join.Shards = 8
	const workers, requests = 4, 25
	reqs := make([][]ptrace.Traces, workers)
	for w := range reqs {
		g := synth.New(synth.Config{Stream: uint32(w), TracesPerRequest: 20})
		for range requests {
			td, _ := g.Next(time.Now())
			reqs[w] = append(reqs[w], td)
		}
	}
	regA := prometheus.NewRegistry()
	a, err := analyzer.New(cfg, nil, regA)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range reqs {
		for _, td := range rs {
			if err := a.ConsumeTraces(context.Background(), td); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.Flush()

	reg := prometheus.NewRegistry()
	r, err := analyzer.NewResolver(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	j, err := analyzer.NewJoiner(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		for {
			select {
			case <-done:
				return
			default:
			}
			now := time.Now()
			j.Apply(r.Expire(nil, now, false), now)
			j.Tick(now)
			_ = r.Waiting() + j.Entries()
		}
	}()
	for _, rs := range reqs {
		wg.Go(func() {
			var facts []analyzer.Fact
			for _, td := range rs {
				now := time.Now()
				facts = r.Resolve(facts[:0], td, now)
				j.Apply(facts, now)
			}
		})
	}
	wg.Wait()
	close(done)
	<-ticked
	now := time.Now()
	j.Apply(r.Expire(nil, now, true), now)
	j.Flush()

	got, want := exposition(t, reg, true), exposition(t, regA, true, "lagscope_panics_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("concurrent resolver+joiner exposition differs from the analyzer's (-analyzer +resolver+joiner):\n%s", diff)
	}
}
