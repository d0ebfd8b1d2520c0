package analyzer

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// partSet holds the series of a metric vector counted in per-shard parts
// (shardedCounter, shardedHistogram): series by label values, in creation
// order for a stable exposition, each with its parts by shard, made by
// newPart on first use. Safe for concurrent use.
type partSet[P any] struct {
	desc    *prometheus.Desc
	newPart func() *P
	mu      sync.Mutex
	series  map[string]*partSeries[P]
	order   []*partSeries[P]
}

type partSeries[P any] struct {
	labels  []*dto.LabelPair
	created *timestamppb.Timestamp
	parts   []*P // by shard; nil until the shard uses it
}

func newPartSet[P any](name, help string, labels []string, newPart func() *P) partSet[P] {
	return partSet[P]{
		desc:    prometheus.NewDesc(name, help, labels, nil),
		newPart: newPart,
		series:  make(map[string]*partSeries[P]),
	}
}

// seriesLocked returns the series of labelValues, created empty if new.
func (s *partSet[P]) seriesLocked(labelValues []string) *partSeries[P] {
	key := strings.Join(labelValues, "\xff")
	ps, ok := s.series[key]
	if !ok {
		ps = &partSeries[P]{labels: prometheus.MakeLabelPairs(s.desc, labelValues), created: timestamppb.Now()}
		s.series[key] = ps
		s.order = append(s.order, ps)
	}
	return ps
}

// touch creates the series of labelValues, with no parts, if it does not
// exist: it is exposed at 0.
func (s *partSet[P]) touch(labelValues ...string) {
	s.mu.Lock()
	s.seriesLocked(labelValues)
	s.mu.Unlock()
}

// part returns shard's part of the series with labelValues. Callers cache
// it: it takes a lock.
func (s *partSet[P]) part(shard int, labelValues ...string) *P {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.seriesLocked(labelValues)
	for len(ps.parts) <= shard {
		ps.parts = append(ps.parts, nil)
	}
	if ps.parts[shard] == nil {
		ps.parts[shard] = s.newPart()
	}
	return ps.parts[shard]
}

// snapshot returns the series and a copy of their parts, for a scrape to
// read without the lock.
func (s *partSet[P]) snapshot() ([]*partSeries[P], [][]*P) {
	s.mu.Lock()
	defer s.mu.Unlock()
	series := append([]*partSeries[P](nil), s.order...)
	parts := make([][]*P, len(series))
	for i, ps := range series {
		parts[i] = append([]*P(nil), ps.parts...)
	}
	return series, parts
}

// Describe implements prometheus.Collector.
func (s *partSet[P]) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// collectedMetric is one collected series of a partSet.
type collectedMetric struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	c      *dto.Counter
	h      *dto.Histogram
}

func (m *collectedMetric) Desc() *prometheus.Desc { return m.desc }

func (m *collectedMetric) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Counter, out.Histogram = m.c, m.h
	return nil
}
