package analyzer

import (
	"math"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// shardedHistogram is a histogram vector whose series are observed in parts,
// one per joiner shard, and merged when collected: each part is only
// observed under its shard's lock, so concurrent requests do not contend on
// the same counters (a HistogramVec child is four atomic updates of shared
// memory per observation). It exposes what a HistogramVec with the same
// options would: classic buckets, count, sum, the created timestamp (the
// earliest part's) and, per bucket, the latest exemplar of any part. The sum
// is added up per part, so its last digits may differ from one running sum.
// Safe for concurrent use.
type shardedHistogram struct {
	opts   prometheus.HistogramOpts
	desc   *prometheus.Desc
	mu     sync.Mutex
	series map[string]*histSeries
	order  []*histSeries // in creation order, for a stable exposition
}

type histSeries struct {
	labels []*dto.LabelPair
	parts  []prometheus.Histogram // by shard; nil until observed there
}

func newShardedHistogram(opts prometheus.HistogramOpts, labels []string) *shardedHistogram {
	return &shardedHistogram{
		opts:   opts,
		desc:   prometheus.NewDesc(opts.Name, opts.Help, labels, nil),
		series: make(map[string]*histSeries),
	}
}

// part returns the observer of the series with labelValues for shard.
// Callers cache it: it takes a lock.
func (h *shardedHistogram) part(shard int, labelValues ...string) prometheus.Histogram {
	key := strings.Join(labelValues, "\xff")
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.series[key]
	if !ok {
		s = &histSeries{labels: prometheus.MakeLabelPairs(h.desc, labelValues)}
		h.series[key] = s
		h.order = append(h.order, s)
	}
	for len(s.parts) <= shard {
		s.parts = append(s.parts, nil)
	}
	if s.parts[shard] == nil {
		s.parts[shard] = prometheus.NewHistogram(prometheus.HistogramOpts{Name: h.opts.Name, Help: h.opts.Help, Buckets: h.opts.Buckets})
	}
	return s.parts[shard]
}

// Describe implements prometheus.Collector.
func (h *shardedHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector.
func (h *shardedHistogram) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	series := append([]*histSeries(nil), h.order...)
	parts := make([][]prometheus.Histogram, len(series))
	for i, s := range series {
		parts[i] = append([]prometheus.Histogram(nil), s.parts...)
	}
	h.mu.Unlock()
	for i, s := range series {
		if m := h.merge(s.labels, parts[i]); m != nil {
			ch <- m
		}
	}
}

// merge adds up the parts of one series.
func (h *shardedHistogram) merge(labels []*dto.LabelPair, parts []prometheus.Histogram) prometheus.Metric {
	var out *dto.Histogram
	for _, p := range parts {
		if p == nil {
			continue
		}
		var m dto.Metric
		if err := p.Write(&m); err != nil || m.Histogram == nil {
			continue
		}
		ph := m.Histogram
		if out == nil {
			out = ph
			continue
		}
		out.SampleCount = new(out.GetSampleCount() + ph.GetSampleCount())
		out.SampleSum = new(out.GetSampleSum() + ph.GetSampleSum())
		if ph.CreatedTimestamp.AsTime().Before(out.CreatedTimestamp.AsTime()) {
			out.CreatedTimestamp = ph.CreatedTimestamp
		}
		for j, b := range ph.Bucket {
			if j >= len(out.Bucket) {
				out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(math.Inf(1)), Exemplar: b.Exemplar})
				continue
			}
			ob := out.Bucket[j]
			if !math.IsInf(ob.GetUpperBound(), 1) {
				ob.CumulativeCount = new(ob.GetCumulativeCount() + b.GetCumulativeCount())
			}
			if later(b.Exemplar, ob.Exemplar) {
				ob.Exemplar = b.Exemplar
			}
		}
	}
	if out == nil {
		return nil
	}
	// An exemplar above the last bound is on an explicit +Inf bucket, whose
	// count is the total.
	if n := len(out.Bucket); n > 0 && math.IsInf(out.Bucket[n-1].GetUpperBound(), 1) {
		out.Bucket[n-1].CumulativeCount = new(out.GetSampleCount())
	}
	return &mergedHistogram{desc: h.desc, labels: labels, h: out}
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
