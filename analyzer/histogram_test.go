package analyzer

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestShardedHistogramMatchesVec: observations spread over the parts of a
// shardedHistogram are exposed as a HistogramVec given the same
// observations exposes them.
func TestShardedHistogramMatchesVec(t *testing.T) {
	opts := prometheus.HistogramOpts{Name: "h_seconds", Help: "A histogram.", Buckets: LagBuckets}
	vec := prometheus.NewHistogramVec(opts, []string{"a", "b"})
	sh := newShardedHistogram(opts, []string{"a", "b"}, 0)
	rng := rand.New(rand.NewPCG(3, 4))
	series := [][2]string{{"x", "y"}, {"x", "z"}, {"w", "y"}}
	for i := range 3000 {
		s := series[rng.IntN(len(series))]
		v := rng.ExpFloat64() * 2
		if i%3 == 0 {
			v = float64(rng.IntN(400)) // some above the last bound
		}
		part, _ := sh.part(rng.IntN(5), s[0], s[1])
		child := vec.WithLabelValues(s[0], s[1])
		if i%50 == 0 {
			id := strings.Repeat("ab", 16)
			part.observeWithExemplar(v, id)
			child.(prometheus.ExemplarObserver).ObserveWithExemplar(v, prometheus.Labels{"trace_id": id})
			time.Sleep(time.Microsecond) // distinct exemplar timestamps
			continue
		}
		part.observe(v)
		child.Observe(v)
	}
	got, want := gather(t, sh), gather(t, vec)
	opt := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&dto.Histogram{}, "created_timestamp"),
		protocmp.IgnoreFields(&dto.Counter{}, "created_timestamp"),
		protocmp.IgnoreFields(&dto.Exemplar{}, "timestamp"),
		cmp.Comparer(func(a, b float64) bool { return a == b || (a-b)/b < 1e-12 && (b-a)/b < 1e-12 }),
	}
	if diff := cmp.Diff(want, got, opt); diff != "" {
		t.Errorf("sharded histogram differs from HistogramVec (-vec +sharded):\n%s", diff)
	}
}

func gather(t *testing.T, c prometheus.Collector) []*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestShardedCounterMatchesVec: increments spread over the parts of a
// shardedCounter, and series touched at 0, are exposed as a CounterVec
// given the same increments exposes them.
func TestShardedCounterMatchesVec(t *testing.T) {
	opts := prometheus.CounterOpts{Name: "c_total", Help: "A counter."}
	vec := prometheus.NewCounterVec(opts, []string{"a", "b"})
	sc := newShardedCounter(opts, []string{"a", "b"}, 0)
	sc.touch("zero", "series")
	vec.WithLabelValues("zero", "series")
	rng := rand.New(rand.NewPCG(5, 6))
	series := [][2]string{{"x", "y"}, {"x", "z"}, {"w", "y"}}
	for range 5000 {
		s := series[rng.IntN(len(series))]
		p, _ := sc.part(rng.IntN(7), s[0], s[1])
		p.inc()
		vec.WithLabelValues(s[0], s[1]).Inc()
	}
	got, want := gather(t, sc), gather(t, vec)
	opt := cmp.Options{protocmp.Transform(), protocmp.IgnoreFields(&dto.Counter{}, "created_timestamp")}
	if diff := cmp.Diff(want, got, opt); diff != "" {
		t.Errorf("sharded counter differs from CounterVec (-vec +sharded):\n%s", diff)
	}
	for _, m := range got[0].Metric {
		if m.Counter.CreatedTimestamp == nil {
			t.Errorf("series %v has no created timestamp", m.Label)
		}
	}
}
