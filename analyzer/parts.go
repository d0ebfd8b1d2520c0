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
// newPart on first use. It holds at most limit series (0: no limit) and one
// more: past the limit a new label combination is given the series whose
// labels are all "other", so that no mix of label values can make a scrape
// grow past the budget. Safe for concurrent use.
type partSet[P any] struct {
	name    string
	desc    *prometheus.Desc
	newPart func() *P
	nlabels int
	limit   int
	// overflow counts what went to the "other" series past the limit;
	// callers that cache a part given with over set move it (countOver).
	overflow prometheus.Counter
	mu       sync.Mutex
	series   map[string]*partSeries[P]
	order    []*partSeries[P]
}

type partSeries[P any] struct {
	labels  []*dto.LabelPair
	created *timestamppb.Timestamp
	parts   []*P // by shard; nil until the shard uses it
}

func newPartSet[P any](name, help string, labels []string, limit int, newPart func() *P) partSet[P] {
	return partSet[P]{
		name:    name,
		desc:    prometheus.NewDesc(name, help, labels, nil),
		newPart: newPart,
		nlabels: len(labels),
		limit:   limit,
		series:  make(map[string]*partSeries[P]),
	}
}

// seriesLocked returns the series of labelValues, created empty if new and
// within the limit. Past the limit it returns the "other" series with over
// set, or, when noOther is set, nil.
func (s *partSet[P]) seriesLocked(labelValues []string, noOther bool) (ps *partSeries[P], over bool) {
	key := strings.Join(labelValues, "\xff")
	if ps, ok := s.series[key]; ok {
		return ps, false
	}
	if s.limit > 0 && len(s.series) >= s.limit {
		if noOther {
			return nil, true
		}
		other := make([]string, s.nlabels)
		for i := range other {
			other[i] = overflowValue
		}
		key, labelValues, over = strings.Join(other, "\xff"), other, true
		if ps, ok := s.series[key]; ok {
			return ps, true
		}
	}
	ps = &partSeries[P]{labels: prometheus.MakeLabelPairs(s.desc, labelValues), created: timestamppb.Now()}
	s.series[key] = ps
	s.order = append(s.order, ps)
	return ps, over
}

// touch creates the series of labelValues, with no parts, if it does not
// exist and the limit leaves room: it is exposed at 0.
func (s *partSet[P]) touch(labelValues ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seriesLocked(labelValues, true)
}

// part returns shard's part of the series with labelValues; over reports
// that the limit gave it the "other" series (counted once here: callers that
// cache the part count its later uses with countOver). Callers cache it: it
// takes a lock.
func (s *partSet[P]) part(shard int, labelValues ...string) (p *P, over bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, over := s.seriesLocked(labelValues, false)
	if over {
		s.countOver()
	}
	for len(ps.parts) <= shard {
		ps.parts = append(ps.parts, nil)
	}
	if ps.parts[shard] == nil {
		ps.parts[shard] = s.newPart()
	}
	return ps.parts[shard], over
}

// countOver counts one use of the "other" series past the limit.
func (s *partSet[P]) countOver() {
	if s.overflow != nil {
		s.overflow.Inc()
	}
}

// cacheable reports whether a part that part gave with over may be cached
// in a map of n entries: such maps are keyed by label ids, whose
// combinations the limit does not bound, so past the limit they keep at
// most limit entries for the "other" series and look the rest up.
func (s *partSet[P]) cacheable(over bool, n int) bool {
	return !over || n < 2*s.limit
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
