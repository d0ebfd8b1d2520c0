package analyzer

import (
	"math"
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
	partSet[histPart]
	bounds []float64
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

// newShardedHistogram returns a histogram vector of at most limit series (0:
// no limit) and the "other" one; see partSet.
func newShardedHistogram(opts prometheus.HistogramOpts, labels []string, limit int) *shardedHistogram {
	bounds := opts.Buckets
	return &shardedHistogram{
		partSet: newPartSet(opts.Name, opts.Help, labels, limit, func() *histPart {
			n := len(bounds) + 1
			// Rounded up to whole 64-byte lines: Go's size classes for
			// multiples of 64 bytes start objects on a line.
			words := make([]atomic.Uint64, (n+1+7)&^7)
			return &histPart{bounds: bounds, counts: words[:n], sum: &words[n], ex: make([]atomic.Pointer[dto.Exemplar], n)}
		}),
		bounds: bounds,
	}
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

// Collect implements prometheus.Collector.
func (h *shardedHistogram) Collect(ch chan<- prometheus.Metric) {
	series, parts := h.snapshot()
	for i, s := range series {
		ch <- &collectedMetric{desc: h.desc, labels: s.labels, h: h.merge(s.created, parts[i])}
	}
}

// merge adds up the parts of one series.
func (h *shardedHistogram) merge(created *timestamppb.Timestamp, parts []*histPart) *dto.Histogram {
	n := len(h.bounds) + 1
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
	for i, b := range h.bounds {
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
