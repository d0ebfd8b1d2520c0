package analyzer

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// shardedCounter is a counter vector counted in parts, one per shard, and
// added up when collected, for the same reason as shardedHistogram: a
// CounterVec child that every shard increments is one cache line that the
// cores take from each other on every event. It exposes what a CounterVec
// would, created timestamps included. Safe for concurrent use.
type shardedCounter struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	series map[string]*counterSeries
	order  []*counterSeries // in creation order, for a stable exposition
}

type counterSeries struct {
	labels  []*dto.LabelPair
	created *timestamppb.Timestamp
	parts   []*counterPart // by shard; nil until the shard counts it
}

// counterPart is one shard's part of a series, alone on its cache line
// (64-byte objects are 64-byte aligned).
type counterPart struct {
	v atomic.Uint64
	_ [56]byte
}

// inc adds one.
func (p *counterPart) inc() { p.v.Add(1) }

func newShardedCounter(opts prometheus.CounterOpts, labels []string) *shardedCounter {
	return &shardedCounter{
		desc:   prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		series: make(map[string]*counterSeries),
	}
}

// seriesLocked returns the series of labelValues, created at 0 if new.
func (c *shardedCounter) seriesLocked(labelValues []string) *counterSeries {
	key := strings.Join(labelValues, "\xff")
	s, ok := c.series[key]
	if !ok {
		s = &counterSeries{labels: prometheus.MakeLabelPairs(c.desc, labelValues), created: timestamppb.Now()}
		c.series[key] = s
		c.order = append(c.order, s)
	}
	return s
}

// touch creates the series of labelValues at 0, if it does not exist.
func (c *shardedCounter) touch(labelValues ...string) {
	c.mu.Lock()
	c.seriesLocked(labelValues)
	c.mu.Unlock()
}

// part returns the part of the series with labelValues that shard
// counts. Callers cache it: it takes a lock.
func (c *shardedCounter) part(shard int, labelValues ...string) *counterPart {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.seriesLocked(labelValues)
	for len(s.parts) <= shard {
		s.parts = append(s.parts, nil)
	}
	if s.parts[shard] == nil {
		s.parts[shard] = new(counterPart)
	}
	return s.parts[shard]
}

// Describe implements prometheus.Collector.
func (c *shardedCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *shardedCounter) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	out := make([]*summedCounter, len(c.order))
	for i, s := range c.order {
		var v uint64
		for _, p := range s.parts {
			if p != nil {
				v += p.v.Load()
			}
		}
		out[i] = &summedCounter{desc: c.desc, labels: s.labels, c: &dto.Counter{Value: new(float64(v)), CreatedTimestamp: s.created}}
	}
	c.mu.Unlock()
	for _, m := range out {
		ch <- m
	}
}

// summedCounter is one collected series of a shardedCounter.
type summedCounter struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	c      *dto.Counter
}

func (m *summedCounter) Desc() *prometheus.Desc { return m.desc }

func (m *summedCounter) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Counter = m.c
	return nil
}
