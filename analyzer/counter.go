package analyzer

import (
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
// (64-byte objects are 64-byte aligned).
type counterPart struct {
	v atomic.Uint64
	_ [56]byte
}

// inc adds one.
func (p *counterPart) inc() { p.v.Add(1) }

// newShardedCounter returns a counter vector of at most limit series (0: no
// limit) and the "other" one; see partSet.
func newShardedCounter(opts prometheus.CounterOpts, labels []string, limit int) *shardedCounter {
	return &shardedCounter{newPartSet(opts.Name, opts.Help, labels, limit, func() *counterPart { return new(counterPart) })}
}

// Collect implements prometheus.Collector.
func (c *shardedCounter) Collect(ch chan<- prometheus.Metric) {
	series, parts := c.snapshot()
	for i, s := range series {
		var v uint64
		for _, p := range parts[i] {
			if p != nil {
				v += p.v.Load()
			}
		}
		ch <- &collectedMetric{desc: c.desc, labels: s.labels, c: &dto.Counter{Value: new(float64(v)), CreatedTimestamp: s.created}}
	}
}
