package synth

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
)

// TestAnalysisMatchesBatch runs generated traces through the analyzer and
// checks that it sees exactly what the batches say.
func TestAnalysisMatchesBatch(t *testing.T) {
	a, err := analyzer.New(analyzer.DefaultConfig(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var want Batch
	now := time.Now()
	for s := range uint32(2) {
		g := New(Config{Stream: s, TracesPerRequest: 7})
		for range 3 {
			td, b := g.Next(now)
			if got := td.SpanCount(); got != b.Spans {
				t.Fatalf("SpanCount = %d, batch says %d", got, b.Spans)
			}
			want.Add(b)
			if err := a.ConsumeTraces(context.Background(), td); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.Flush()
	s := a.Summary()
	if s.Spans.Command != uint64(want.Traces) || s.Spans.Append != uint64(want.Events) ||
		s.Spans.Project != 2*uint64(want.Events) || s.Spans.Query != uint64(want.Traces) ||
		s.Spans.Ignored != uint64(want.Spans-CQRSSpansPerTrace*want.Traces) {
		t.Errorf("span counts = %+v for %v", s.Spans, want)
	}
	if s.Queries.Fresh != uint64(want.Traces) {
		t.Errorf("queries = %+v, want %d fresh", s.Queries, want.Traces)
	}
	if len(s.Projections) != 2 {
		t.Fatalf("projections = %+v", s.Projections)
	}
	for _, p := range s.Projections {
		i := 0
		if p.Name == Projections[1] {
			i = 1
		}
		if p.Name != Projections[i] || p.Projected != uint64(want.Events) || p.Unprojected != 0 ||
			p.Lag.Count != uint64(want.Events) || p.Lag.Sum != want.LagSum[i] {
			t.Errorf("projection %+v, want %d events with lag sum %s", p, want.Events, want.LagSum[i])
		}
	}
}

func TestLagRange(t *testing.T) {
	for n := range uint64(1000) {
		for p := range 2 {
			if l := Lag(n, p); l < 20*time.Millisecond || l >= 120*time.Millisecond || l%time.Millisecond != 0 {
				t.Fatalf("Lag(%d, %d) = %s", n, p, l)
			}
		}
	}
}

func TestEventIDsAreUUIDsAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for s := range uint32(3) {
		for n := range uint64(1000) {
			id := EventID(Config{Stream: s}, n)
			if len(id) != 36 || id[14] != '4' || seen[id] {
				t.Fatalf("event id %q (stream %d, n %d): not a fresh v4 UUID", id, s, n)
			}
			seen[id] = true
		}
	}
}

// TestRefillEqualsNext: a refilled request is the request Next would have
// built.
func TestRefillEqualsNext(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g1, g2 := New(Config{TracesPerRequest: 3}), New(Config{TracesPerRequest: 3})
	td, _ := g1.Next(now)
	g2.Next(now)
	b1 := g1.Refill(td, now)
	want, b2 := g2.Next(now)
	var m ptrace.ProtoMarshaler
	got, _ := m.MarshalTraces(td)
	w, _ := m.MarshalTraces(want)
	if !bytes.Equal(got, w) || b1 != b2 {
		t.Errorf("refilled request differs from the next one (batch %v, want %v)", b1, b2)
	}
}
