package analyzer

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// shardedCounter is a counter vector counted in parts, one per shard, and
// added up when collected, for the same reason as shardedHistogram: a
// CounterVec child that every shard increments is one cache line that the
// cores take from each other on every event. It exposes what a CounterVec
// would, created timestamps included. Safe for concurrent use.
type shardedCounter struct {
	partSet[counterPart]
}

// counterPart is one shard's part of a series, alone on its cache line
// (64-byte objects are 64-byte aligned). Its value is v, the increments of
// weight 1 (an integer: exact however large it grows), plus w, the sum of
// the weights of sampled events (Fact.Weight): float64 bits, exact as long
// as the weights are integers (the powers of two of the usual thresholds)
// and the sum stays under 2^53; other weights add as floats do.
type counterPart struct {
	v atomic.Uint64
	w atomic.Uint64 // float64 bits
	_ [48]byte
}

// inc adds one.
func (p *counterPart) inc() { p.v.Add(1) }

// add adds weight w (Fact.weight: 1 for an unsampled event, which takes
// the integer path).
func (p *counterPart) add(w float64) {
	if w == 1 {
		p.v.Add(1)
		return
	}
	// A part has one writer (its shard, under the shard's lock): the
	// loop runs once but for a scrape, which only loads.
	for {
		old := p.w.Load()
		if p.w.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+w)) {
			return
		}
	}
}

// newShardedCounter returns a counter vector of at most limit series (0: no
// limit) and the "other" one; see partSet.
func newShardedCounter(opts prometheus.CounterOpts, labels []string, limit int) *shardedCounter {
	return &shardedCounter{newPartSet(opts.Name, opts.Help, labels, limit, func() *counterPart { return new(counterPart) })}
}

// Collect implements prometheus.Collector.
func (c *shardedCounter) Collect(ch chan<- prometheus.Metric) {
	series, parts := c.snapshot()
	for i, s := range series {
		// Integer and weighted parts apart, so that unweighted counts
		// stay exact integers past 2^53.
		var v uint64
		var w float64
		for _, p := range parts[i] {
			if p != nil {
				v += p.v.Load()
				w += math.Float64frombits(p.w.Load())
			}
		}
		ch <- &collectedMetric{desc: c.desc, labels: s.labels, c: &dto.Counter{Value: new(float64(v) + w), CreatedTimestamp: s.created}}
	}
}
