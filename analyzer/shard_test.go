package analyzer

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lagscope/lagscope/synth"
)

// TestShardsAgree: the analysis of every fixture, one request after
// another, is the same whatever the number of shards.
func TestShardsAgree(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".jsonl"), func(t *testing.T) {
			var want Summary
			for i, shards := range []int{1, 2, 7, 64} {
				cfg := DefaultConfig()
				cfg.KeepSamples = true
				cfg.Join.Shards = shards
				if got := cfg.shards(); got != shards {
					t.Fatalf("cfg.shards() = %d, want %d", got, shards)
				}
				a, _ := analyzeFile(t, file, cfg)
				got := a.Summary()
				if i == 0 {
					want = got
					continue
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%d shards: summary differs from 1 shard (-1 shard +%d):\n%s", shards, shards, diff)
				}
			}
		})
	}
}

// TestShardCount: small bounds get one shard, so that eviction order stays
// global; the default follows GOMAXPROCS.
func TestShardCount(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   int
	}{
		{"explicit", func(c *Config) { c.Join.Shards = 8 }, 8},
		{"at most 64", func(c *Config) { c.Join.Shards = 1000 }, 64},
		{"tiny event bound", func(c *Config) { c.Join.Shards = 8; c.Join.MaxPendingEvents = 2 }, 1},
		{"event bound splits in 3", func(c *Config) { c.Join.Shards = 8; c.Join.MaxPendingEvents = 3 * minShardEntries }, 3},
		{"tiny projection bound", func(c *Config) { c.Join.Shards = 8; c.Join.MaxPendingProjections = 100 }, 1},
		{"tiny trace bound", func(c *Config) { c.Join.Shards = 8; c.Join.MaxTraceSpans = 1000 }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			if got := cfg.shards(); got != tt.want {
				t.Errorf("shards() = %d, want %d", got, tt.want)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.Join.Shards = -1
	if cfg.Validate() == nil {
		t.Error("Validate accepts Shards = -1")
	}
}

// TestConcurrentConsume analyses synth streams from several goroutines at
// once and checks every count and lag sum against what was sent: with
// several shards, and with one, whose lock then guards the per-aggregate
// state as well (joinShared.oneLock; -race checks it).
func TestConcurrentConsume(t *testing.T) {
	for _, shards := range []int{8, 1} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) { testConcurrentConsume(t, shards) })
	}
}

func testConcurrentConsume(t *testing.T, shards int) {
	cfg := DefaultConfig()
	cfg.Join.Shards = shards
	a, err := New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const workers, requests = 4, 40
	var mu sync.Mutex
	var sent synth.Batch
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			g := synth.New(synth.Config{Stream: uint32(w), TracesPerRequest: 20})
			var mine synth.Batch
			for range requests {
				td, b := g.Next(time.Now())
				mine.Add(b)
				if err := a.ConsumeTraces(context.Background(), td); err != nil {
					t.Error(err)
				}
			}
			mu.Lock()
			sent.Add(mine)
			mu.Unlock()
		})
	}
	// Requests of queries alone, of an aggregate nothing appends (so
	// unknown): the first fact of a request is then a query, which takes
	// the aggregates' lock with no other lock held.
	const lonely = 10
	wg.Go(func() {
		for r := range requests {
			var specs []spanSpec
			for i := range lonely {
				specs = append(specs, spanSpec{trace: r*lonely + i, span: 1, parent: -1,
					attrs: map[string]any{"cqrs.operation": "query", "cqrs.query.name": "GetOrder", "cqrs.aggregate.id": "lonely", "cqrs.aggregate.version": int64(1)}})
			}
			if err := a.ConsumeTraces(context.Background(), traces("reader", specs...)); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	a.Flush()
	s := a.Summary()
	events := uint64(sent.Events)
	if got, want := s.Spans, (SpanCounts{Command: events, Append: events, Project: 2 * events, Query: events + requests*lonely, Ignored: 5 * events}); got != want {
		t.Errorf("spans = %+v, want %+v", got, want)
	}
	if got, want := s.EventTypes, []EventTypeSummary{{Name: synth.EventType, Appended: events}}; !cmp.Equal(got, want) {
		t.Errorf("event types = %+v, want %+v", got, want)
	}
	if got, want := s.Queries, (QueryCounts{Fresh: events, Unknown: requests * lonely}); got != want {
		t.Errorf("queries = %+v, want %+v", got, want)
	}
	if len(s.Projections) != 2 {
		t.Fatalf("projections = %+v, want 2", s.Projections)
	}
	for i, p := range s.Projections {
		if p.Name != synth.Projections[i] || p.Expected != events || p.Projected != events || p.Unprojected+p.Duplicated+p.Orphans != 0 {
			t.Errorf("projection %d = %+v, want %s with %d expected and projected", i, p, synth.Projections[i], events)
		}
		if p.Lag.Count != events || p.Lag.Sum != sent.LagSum[i] {
			t.Errorf("%s: lag count %d sum %s, want %d, %s", p.Name, p.Lag.Count, p.Lag.Sum, events, sent.LagSum[i])
		}
	}
}
