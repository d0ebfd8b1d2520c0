package rules

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/report"
	"github.com/lagscope/lagscope/server"
	"github.com/lagscope/lagscope/tracefile"
)

// proj is what one projection did, as the test compares it.
type proj struct {
	Expected, Projected, Unprojected, Duplicated uint64
	UnprojectedIDs                               []string
	Lags                                         uint64
	LagSum                                       time.Duration
}

// outcome is what an analysis found, as the test compares it.
type outcome struct {
	Spans       analyzer.SpanCounts
	Appended    uint64 // events, over all types
	Projections map[string]proj
}

func outcomeOf(rep report.Report) outcome {
	o := outcome{Spans: rep.Spans, Projections: map[string]proj{}}
	for _, t := range rep.EventTypes {
		o.Appended += t.Appended
	}
	for _, p := range rep.Projections {
		o.Projections[p.Name] = proj{
			Expected: p.Expected, Projected: p.Projected, Unprojected: p.Unprojected, Duplicated: p.Duplicated,
			UnprojectedIDs: p.UnprojectedIDs, Lags: p.Lag.Count, LagSum: p.Lag.Sum,
		}
	}
	return o
}

// lagsWithin compares lag sums to within 1 ms (fixture times are ms as
// float64; the join's arithmetic is ns).
var lagsWithin = cmp.Comparer(func(a, b time.Duration) bool {
	d := a - b
	return d > -time.Millisecond && d < time.Millisecond
})

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// loadRules reads a profile as `lagscope serve --config` would.
func loadRules(t *testing.T, path string) []analyzer.Rule {
	t.Helper()
	cfg := server.DefaultConfig()
	if err := server.LoadConfigFile(path, &cfg); err != nil {
		t.Fatalf("load profile: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate profile: %v", err)
	}
	if len(cfg.Rules) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	return cfg.Rules
}

func analyze(t *testing.T, fixture string, rules []analyzer.Rule) outcome {
	t.Helper()
	cfg := report.Config(nil)
	cfg.Rules = rules
	rep, err := report.Analyze(context.Background(), []string{fixture}, cfg, io.Discard)
	if err != nil {
		t.Fatalf("analyze %s: %v", fixture, err)
	}
	return outcomeOf(rep)
}

// explained is what Explain says of one span: which rule or convention
// gave it its role.
type explained struct{ Service, Name, Role, By string }

// explainAll returns, sorted and without repeats, what Explain says of the
// fixture's spans.
func explainAll(t *testing.T, fixture string, rules []analyzer.Rule) []explained {
	t.Helper()
	cfg := report.Config(nil)
	cfg.Rules = rules
	r, err := tracefile.Open(fixture)
	if err != nil {
		t.Fatalf("open fixture: %v", err)
	}
	defer r.Close()
	all := ptrace.NewTraces()
	for {
		td, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read fixture: %v", err)
		}
		td.ResourceSpans().MoveAndAppendTo(all.ResourceSpans())
	}
	exps, err := analyzer.Explain(cfg, all)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	var got []explained
	for _, e := range exps {
		got = append(got, explained{e.Service, e.Name, e.Role, e.By})
	}
	slices.SortFunc(got, func(a, b explained) int {
		for _, c := range [][2]string{{a.Service, b.Service}, {a.Name, b.Name}, {a.Role, b.Role}, {a.By, b.By}} {
			if c[0] != c[1] {
				if c[0] < c[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
	return slices.Compact(got)
}
