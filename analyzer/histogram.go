package analyzer

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// shardedHistogram is a histogram vector whose series are observed in parts,
// one per joiner shard, and merged when collected: each part is written by
// one shard only, under its lock, in memory of its own, so that concurrent
// requests never write the same cache line (a HistogramVec child is shared
// memory that every core writes four times per observation, and measured
// three times dearer per observation at two cores than at one). It exposes
// what a HistogramVec with the same options would: classic buckets, count,
// sum, the created timestamp and, per bucket, the latest exemplar of any
// part. The count is the sum of the buckets, so a scrape never sees them
// disagree; the sum is added up per part, so its last digits may differ from
// one running sum. Safe for concurrent use.
type shardedHistogram struct {
	opts   prometheus.HistogramOpts
	desc   *prometheus.Desc
	mu     sync.Mutex
	series map[string]*histSeries
	order  []*histSeries // in creation order, for a stable exposition
}

type histSeries struct {
	labels  []*dto.LabelPair
	created *timestamppb.Timestamp
	parts   []*histPart // by shard; nil until observed there
}

// histPart is one shard's part of a series. Only its shard writes it; the
// atomics are for the scrape that reads it concurrently. What every
// observation writes, counts and sum, is in one allocation of whole cache
// lines, so that no other part's data shares them.
type histPart struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    *atomic.Uint64  // float64 bits, just after counts
	ex     []atomic.Pointer[dto.Exemplar]
}

func newShardedHistogram(opts prometheus.HistogramOpts, labels []string) *shardedHistogram {
	return &shardedHistogram{
		opts:   opts,
		desc:   prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		series: make(map[string]*histSeries),
	}
}

// part returns the part of the series with labelValues that shard
// observes. Callers cache it: it takes a lock.
func (h *shardedHistogram) part(shard int, labelValues ...string) *histPart {
	key := strings.Join(labelValues, "\xff")
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.series[key]
	if !ok {
		s = &histSeries{labels: prometheus.MakeLabelPairs(h.desc, labelValues), created: timestamppb.Now()}
		h.series[key] = s
		h.order = append(h.order, s)
	}
	for len(s.parts) <= shard {
		s.parts = append(s.parts, nil)
	}
	if s.parts[shard] == nil {
		n := len(h.opts.Buckets) + 1
		// Rounded up to whole 64-byte lines: Go's size classes for
		// multiples of 64 bytes start objects on a line.
		words := make([]atomic.Uint64, (n+1+7)&^7)
		s.parts[shard] = &histPart{
			bounds: h.opts.Buckets,
			counts: words[:n],
			sum:    &words[n],
			ex:     make([]atomic.Pointer[dto.Exemplar], n),
		}
	}
	return s.parts[shard]
}

// bucket returns the index of the bucket v falls in: the first bound at or
// above it, or the +Inf bucket. Linear, as client_golang's for few
// buckets: lags fall in the first few.
func (p *histPart) bucket(v float64) int {
	for i, b := range p.bounds {
		if v <= b {
			return i
		}
	}
	return len(p.bounds)
}

// observe adds v to the part. Only the part's shard calls it.
func (p *histPart) observe(v float64) {
	p.counts[p.bucket(v)].Add(1)
	p.sum.Store(math.Float64bits(math.Float64frombits(p.sum.Load()) + v))
}

// observeWithExemplar adds v with an exemplar carrying traceID, as the
// bucket's latest.
func (p *histPart) observeWithExemplar(v float64, traceID string) {
	i := p.bucket(v)
	p.ex[i].Store(&dto.Exemplar{
		Label:     []*dto.LabelPair{{Name: new("trace_id"), Value: new(traceID)}},
		Value:     new(v),
		Timestamp: timestamppb.New(time.Now()),
	})
	p.counts[i].Add(1)
	p.sum.Store(math.Float64bits(math.Float64frombits(p.sum.Load()) + v))
}

// Describe implements prometheus.Collector.
func (h *shardedHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *shardedHistogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	series := append([]*histSeries(nil), h.order...)
	parts := make([][]*histPart, len(series))
	for i, s := range series {
		parts[i] = append([]*histPart(nil), s.parts...)
	}
	h.mu.Unlock()
	for i, s := range series {
		ch <- &mergedHistogram{desc: h.desc, labels: s.labels, h: h.merge(s.created, parts[i])}
	}
}

// merge adds up the parts of one series.
func (h *shardedHistogram) merge(created *timestamppb.Timestamp, parts []*histPart) *dto.Histogram {
	n := len(h.opts.Buckets) + 1
	counts := make([]uint64, n)
	ex := make([]*dto.Exemplar, n)
	var sum float64
	for _, p := range parts {
		if p == nil {
			continue
		}
		for i := range counts {
			counts[i] += p.counts[i].Load()
			if e := p.ex[i].Load(); later(e, ex[i]) {
				ex[i] = e
			}
		}
		sum += math.Float64frombits(p.sum.Load())
	}
	out := &dto.Histogram{SampleSum: new(sum), CreatedTimestamp: created, Bucket: make([]*dto.Bucket, 0, n)}
	var cum uint64
	for i, b := range h.opts.Buckets {
		cum += counts[i]
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(b), CumulativeCount: new(cum), Exemplar: ex[i]})
	}
	cum += counts[n-1]
	out.SampleCount = new(cum)
	// An exemplar above the last bound is on an explicit +Inf bucket, as
	// client_golang exposes it.
	if ex[n-1] != nil {
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(math.Inf(1)), CumulativeCount: new(cum), Exemplar: ex[n-1]})
	}
	return out
}

func later(a, b *dto.Exemplar) bool {
	if a == nil {
		return false
	}
	if b == nil {
		return true
	}
	return a.GetTimestamp().AsTime().After(b.GetTimestamp().AsTime())
}

// mergedHistogram is one collected series of a shardedHistogram.
type mergedHistogram struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	h      *dto.Histogram
}

func (m *mergedHistogram) Desc() *prometheus.Desc { return m.desc }

func (m *mergedHistogram) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Histogram = m.h
	return nil
}
