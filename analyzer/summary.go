package analyzer

import (
	"slices"
	"sort"
	"time"
)

// Summary is a snapshot of what the analyzer has seen, for a person: the
// offline report of `lagscope analyze` and the demo's live view.
type Summary struct {
	// Projections, sorted by name.
	Projections []ProjectionSummary `json:"projections"`
	// EventTypes counts appended events by type, sorted by name.
	EventTypes []EventTypeSummary `json:"event_types"`
	// Spans counts spans by role.
	Spans SpanCounts `json:"spans"`
	// Queries counts query spans by freshness of the version they read.
	Queries QueryCounts `json:"queries"`
}

// SpanCounts counts spans by role.
type SpanCounts struct {
	Command uint64 `json:"command"`
	Append  uint64 `json:"append"`
	Project uint64 `json:"project"`
	Query   uint64 `json:"query"`
	Ignored uint64 `json:"ignored"`
}

// QueryCounts counts query spans by result.
type QueryCounts struct {
	Fresh   uint64 `json:"fresh"`
	Stale   uint64 `json:"stale"`
	Unknown uint64 `json:"unknown"`
}

// EventTypeSummary counts the events of one type.
type EventTypeSummary struct {
	Name     string `json:"name"`
	Appended uint64 `json:"appended"`
}

// ProjectionSummary is what one projection did.
type ProjectionSummary struct {
	Name string `json:"name"`
	// Expected counts events whose deadline has been evaluated and that
	// the projection was expected to show ("appended" for it).
	Expected    uint64 `json:"appended"`
	Projected   uint64 `json:"projected"`
	Unprojected uint64 `json:"unprojected"`
	Duplicated  uint64 `json:"duplicated"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Late        uint64 `json:"late"`
	ClockSkew   uint64 `json:"clock_skew"`
	// Orphans counts projection spans whose event was never appended.
	Orphans uint64 `json:"orphans"`
	// Pending and OldestPending are the gauges' last values.
	Pending       int64         `json:"pending"`
	OldestPending time.Duration `json:"oldest_pending_ns"`
	Lag           LagStats      `json:"lag"`
	// UnprojectedIDs lists the events it did not show (KeepSamples only).
	UnprojectedIDs []string `json:"unprojected_ids,omitempty"`
}

// LagStats summarises observed lags. Quantiles are exact with KeepSamples,
// else interpolated within LagBuckets as Prometheus' histogram_quantile does.
type LagStats struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	P50   time.Duration `json:"p50_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// projStats is what one projection did in one Joiner shard.
type projStats struct {
	expected, projected, duplicated, outOfOrder, late, skew uint64
	unproj                                                  uint64
	orphans                                                 uint64
	count                                                   uint64
	sum                                                     int64
	max                                                     int64
	buckets                                                 [16]uint64
	samples                                                 []int64
	unprojIDs                                               []EventKey
}

func (p *projStats) observe(lag int64) {
	p.count++
	p.sum += lag
	p.max = max(p.max, lag)
	v := seconds(lag)
	i := sort.SearchFloat64s(LagBuckets, v)
	p.buckets[i]++
	if p.samples != nil {
		p.samples = append(p.samples, lag)
	}
}

// summaryState is what one Joiner shard keeps for Summary.
type summaryState struct {
	keep  bool
	proj  [maxProjections]*projStats
	types []uint64 // events appended by event type id
	ids   map[EventKey]string
}

func newSummaryState(keep bool) *summaryState {
	s := &summaryState{keep: keep}
	if keep {
		s.ids = make(map[EventKey]string)
	}
	for i := range s.proj {
		s.proj[i] = &projStats{}
		if keep {
			s.proj[i].samples = make([]int64, 0, 16)
		}
	}
	return s
}

func (s *summaryState) appended(typ uint16) {
	for int(typ) >= len(s.types) {
		s.types = append(s.types, 0)
	}
	s.types[typ]++
}

func (s *summaryState) unprojected(p uint16, k EventKey) {
	s.proj[p].unproj++
	if s.keep {
		s.proj[p].unprojIDs = append(s.proj[p].unprojIDs, k)
	}
}

// summary builds a Summary from the Joiner shards, locking each in turn;
// the caller serialises it with refreshGauges.
func (sh *joinShared) summary(shards []*Joiner) Summary {
	np := min(sh.projections.len(), maxProjections)
	var merged [maxProjections]projStats
	var unprojIDs [maxProjections][]string
	var types []uint64
	for _, j := range shards {
		j.locked(func() {
			for p := range np {
				ps, m := j.sum.proj[p], &merged[p]
				m.expected += ps.expected
				m.projected += ps.projected
				m.duplicated += ps.duplicated
				m.outOfOrder += ps.outOfOrder
				m.late += ps.late
				m.skew += ps.skew
				m.unproj += ps.unproj
				m.orphans += ps.orphans
				m.count += ps.count
				m.sum += ps.sum
				m.max = max(m.max, ps.max)
				for i, n := range ps.buckets {
					m.buckets[i] += n
				}
				m.samples = append(m.samples, ps.samples...)
				for _, k := range ps.unprojIDs {
					unprojIDs[p] = append(unprojIDs[p], j.sum.ids[k])
				}
			}
			for t, n := range j.sum.types {
				for t >= len(types) {
					types = append(types, 0)
				}
				types[t] += n
			}
		})
	}
	var out Summary
	for p := range np {
		ps := &merged[p]
		r := ProjectionSummary{
			Name: sh.projections.value(uint16(p)), Expected: ps.expected, Projected: ps.projected, Unprojected: ps.unproj,
			Duplicated: ps.duplicated, OutOfOrder: ps.outOfOrder, Late: ps.late, ClockSkew: ps.skew,
			Orphans: ps.orphans, Pending: sh.gaugePending[p], OldestPending: time.Duration(sh.gaugeOldest[p]),
			Lag: LagStats{Count: ps.count, Sum: time.Duration(ps.sum), Max: time.Duration(ps.max)},
		}
		if sh.keep {
			sorted := ps.samples
			slices.Sort(sorted)
			r.Lag.P50, r.Lag.P95, r.Lag.P99 = exactQuantile(sorted, 0.5), exactQuantile(sorted, 0.95), exactQuantile(sorted, 0.99)
			r.UnprojectedIDs = unprojIDs[p]
			slices.Sort(r.UnprojectedIDs)
		} else {
			r.Lag.P50 = bucketQuantile(ps.buckets[:], ps.count, 0.5)
			r.Lag.P95 = bucketQuantile(ps.buckets[:], ps.count, 0.95)
			r.Lag.P99 = bucketQuantile(ps.buckets[:], ps.count, 0.99)
		}
		out.Projections = append(out.Projections, r)
	}
	slices.SortFunc(out.Projections, func(a, b ProjectionSummary) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	byName := map[string]uint64{}
	for t, n := range types {
		if n > 0 {
			byName[sh.types.value(uint16(t))] += n
		}
	}
	for name, n := range byName {
		out.EventTypes = append(out.EventTypes, EventTypeSummary{Name: name, Appended: n})
	}
	slices.SortFunc(out.EventTypes, func(a, b EventTypeSummary) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for i := range sh.aggs {
		// Panic-free between Lock and Unlock: three additions.
		a := &sh.aggs[i]
		a.mu.Lock()
		out.Queries.Fresh += a.counts[queryFresh]
		out.Queries.Stale += a.counts[queryStale]
		out.Queries.Unknown += a.counts[queryUnknown]
		a.mu.Unlock()
	}
	return out
}

// exactQuantile returns the nearest-rank quantile of sorted values.
func exactQuantile(sorted []int64, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted)) + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return time.Duration(sorted[rank-1])
}

// bucketQuantile interpolates linearly inside the bucket holding the
// quantile, like PromQL's histogram_quantile.
func bucketQuantile(buckets []uint64, count uint64, q float64) time.Duration {
	if count == 0 {
		return 0
	}
	rank := q * float64(count)
	var cum uint64
	for i, n := range buckets {
		if n == 0 {
			continue
		}
		if float64(cum+n) >= rank {
			if i >= len(LagBuckets) {
				return time.Duration(LagBuckets[len(LagBuckets)-1] * 1e9)
			}
			lo := 0.0
			if i > 0 {
				lo = LagBuckets[i-1]
			}
			hi := LagBuckets[i]
			v := lo + (hi-lo)*(rank-float64(cum))/float64(n)
			return time.Duration(v * 1e9)
		}
		cum += n
	}
	return 0
}
