package analyzer

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"math"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
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
	// StaleReads are the stale reads by query, sorted by name; none when
	// there were none.
	StaleReads []StaleReadSummary `json:"stale_reads,omitempty"`
	// ClockSkew are the clock skews by pair of services, sorted; none when
	// there were none.
	ClockSkew []ClockSkewSummary `json:"clock_skew_pairs,omitempty"`
}

// StaleReadSummary is what cqrs_stale_reads_total and
// cqrs_read_staleness_seconds hold of one query.
type StaleReadSummary struct {
	Query string `json:"query"`
	Count uint64 `json:"count"`
	// Staleness is the sum of the stale reads' staleness.
	Staleness time.Duration `json:"staleness_sum_ns"`
}

// ClockSkewSummary is what cqrs_clock_skew_seconds holds of one pair of
// services: how often a projection span of To started before the end of
// the append of From it projects, and by how much in all.
type ClockSkewSummary struct {
	From  string        `json:"from_service"`
	To    string        `json:"to_service"`
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
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
	// Expected counts the events the projection was expected to show and
	// whose outcome is known: projected, plus unprojected at the deadline,
	// less those that came late (counted in both). Its JSON key stays
	// "appended", the name `lagscope analyze` has always printed it under
	// ("events appended, for this projection"): scripts read that output.
	Expected    uint64 `json:"appended"`
	Projected   uint64 `json:"projected"`
	Unprojected uint64 `json:"unprojected"`
	Duplicated  uint64 `json:"duplicated"`
	OutOfOrder  uint64 `json:"out_of_order"`
	Late        uint64 `json:"late"`
	ClockSkew   uint64 `json:"clock_skew"`
	// Orphans counts projection spans whose event was never appended.
	Orphans uint64 `json:"orphans"`
	// BrokenPropagation counts its spans joined by event id that were
	// neither in the append's trace nor linked to it.
	BrokenPropagation uint64 `json:"broken_propagation"`
	// Status is its cqrs_projection_status: ok, slow, stalled or stopped;
	// empty where no window was judged (an offline analysis).
	Status string `json:"status,omitempty"`
	// Pending and OldestPending are the gauges' last values.
	Pending       int64         `json:"pending"`
	OldestPending time.Duration `json:"oldest_pending_ns"`
	Lag           LagStats      `json:"lag"`
	// UnprojectedIDs lists the events it did not show (KeepSamples only).
	UnprojectedIDs []string `json:"unprojected_ids,omitempty"`
	// UnprojectedTraces are the traces (hex) of UnprojectedIDs, in the
	// same order, and Slowest the SlowestKept largest lags with their
	// traces, largest first (KeepSamples only). They are not in the JSON
	// of `lagscope analyze`, which shows them with their links.
	UnprojectedTraces []string    `json:"-"`
	Slowest           []TracedLag `json:"-"`
}

// LagStats summarises observed lags. Quantiles are exact (nearest rank)
// with KeepSamples, else estimated from the native buckets, within 5 %
// (see NativeBuckets); Quantiles says which.
type LagStats struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	P50   time.Duration `json:"p50_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
	// Quantiles is QuantilesExact or QuantilesNative; empty without lags.
	Quantiles string `json:"quantiles,omitempty"`
}

// What LagStats' quantiles are computed from.
const (
	// QuantilesExact: every lag was kept (Config.KeepSamples).
	QuantilesExact = "exact"
	// QuantilesNative: the native histogram buckets, within 5 %.
	QuantilesNative = "native"
)

// summaryExtra is what one Joiner shard keeps for Summary beside its
// metrics: no count that the metrics hold, only what they cannot.
type summaryExtra struct {
	keep bool // Config.KeepSamples
	proj [maxProjections]projExtra
	ids  map[EventKey]string // display ids of held events (keep only)
}

// projExtra is what the metrics do not hold of one projection: the exact
// largest lag, the exact lags and the unprojected events (keep only), and
// the projection spans dropped without their event, which
// lagscope_join_evictions_total{reason=~"orphan_.*"} counts only in total.
type projExtra struct {
	max          int64
	orphans      uint64
	samples      []int64
	unprojIDs    []EventKey
	unprojTraces [][16]byte  // of unprojIDs
	slow         []tracedLag // the SlowestKept largest lags, in no order
}

type tracedLag struct {
	lag   int64
	trace [16]byte
}

func newSummaryExtra(keep bool) *summaryExtra {
	s := &summaryExtra{keep: keep}
	if keep {
		s.ids = make(map[EventKey]string)
	}
	return s
}

func (s *summaryExtra) observe(p uint16, lag int64, trace [16]byte) {
	x := &s.proj[p]
	x.max = max(x.max, lag)
	if s.keep {
		x.samples = append(x.samples, lag)
		x.slow = keepSlow(x.slow, tracedLag{lag, trace})
	}
}

// keepSlow adds l to slow if it is among the SlowestKept largest.
func keepSlow(slow []tracedLag, l tracedLag) []tracedLag {
	if len(slow) < SlowestKept {
		return append(slow, l)
	}
	least := 0
	for i := range slow {
		if slow[i].lag < slow[least].lag {
			least = i
		}
	}
	if l.lag > slow[least].lag {
		slow[least] = l
	}
	return slow
}

func (s *summaryExtra) unprojected(p uint16, k EventKey, trace [16]byte) {
	if s.keep {
		s.proj[p].unprojIDs = append(s.proj[p].unprojIDs, k)
		s.proj[p].unprojTraces = append(s.proj[p].unprojTraces, trace)
	}
}

// spanCounts returns the span counts of lagscope_spans_total.
func (r *Resolver) spanCounts() SpanCounts {
	mfs, _ := r.m.own.Gather() // the collectors are the package's: no error
	var c SpanCounts
	for _, m := range family(mfs, "lagscope_spans_total") {
		n := uint64(m.GetCounter().GetValue())
		switch label(m, "role") {
		case RoleNone.String():
			c.Ignored = n
		case RoleCommand.String():
			c.Command = n
		case RoleAppend.String():
			c.Append = n
		case RoleProject.String():
			c.Project = n
		case RoleQuery.String():
			c.Query = n
		}
	}
	return c
}

// summary builds a Summary from a gathering of the Joiner's metrics and its
// shards' extra data, between ticks (it waits for one in progress), so that
// the gauges are those of one tick.
func (j *Joiner) summary() Summary {
	j.tickMu.Lock()
	defer j.tickMu.Unlock()
	mfs, _ := j.m.own.Gather() // the collectors are the package's: no error
	var out Summary
	// The projections: those of the pending gauge, which has a series for
	// every projection the join knows.
	byName := map[string]*ProjectionSummary{}
	for _, m := range family(mfs, "cqrs_projection_pending_events") {
		name := label(m, "projection")
		out.Projections = append(out.Projections, ProjectionSummary{Name: name, Pending: int64(m.GetGauge().GetValue())})
	}
	for i := range out.Projections {
		byName[out.Projections[i].Name] = &out.Projections[i]
	}
	each := func(metric string, f func(p *ProjectionSummary, v uint64)) {
		for _, m := range family(mfs, metric) {
			if p := byName[label(m, "projection")]; p != nil {
				f(p, uint64(m.GetCounter().GetValue()))
			}
		}
	}
	var late = map[string]uint64{}
	each("cqrs_events_projected_total", func(p *ProjectionSummary, v uint64) { p.Projected += v })
	each("cqrs_events_unprojected_total", func(p *ProjectionSummary, v uint64) { p.Unprojected += v })
	each("cqrs_events_duplicated_total", func(p *ProjectionSummary, v uint64) { p.Duplicated += v })
	each("cqrs_events_out_of_order_total", func(p *ProjectionSummary, v uint64) { p.OutOfOrder += v })
	each("cqrs_events_late_total", func(p *ProjectionSummary, v uint64) { p.Late += v; late[p.Name] += v })
	each("cqrs_clock_skew_total", func(p *ProjectionSummary, v uint64) { p.ClockSkew += v })
	for _, m := range family(mfs, "cqrs_projection_oldest_pending_seconds") {
		if p := byName[label(m, "projection")]; p != nil {
			p.OldestPending = fromSeconds(m.GetGauge().GetValue())
		}
	}
	buckets := map[string]*NativeBuckets{}
	sums := map[string]float64{}
	for _, m := range family(mfs, "cqrs_command_to_projection_lag_seconds") {
		name := label(m, "projection")
		p := byName[name]
		if p == nil {
			continue
		}
		h := m.GetHistogram()
		p.Lag.Count += h.GetSampleCount()
		sums[name] += h.GetSampleSum()
		b := buckets[name]
		if b == nil {
			b = &NativeBuckets{}
			buckets[name] = b
		}
		b.Add(h) // always of schema 4: the histogram is the package's
	}
	// What the metrics do not hold, by projection id.
	np := min(j.sh.projections.len(), maxProjections)
	var extra [maxProjections]projExtra
	type tracedID struct{ id, trace string }
	var unprojIDs [maxProjections][]tracedID
	for _, s := range j.shards {
		s.locked(func() {
			for p := range np {
				x, m := &s.extra.proj[p], &extra[p]
				m.max = max(m.max, x.max)
				m.orphans += x.orphans
				m.samples = append(m.samples, x.samples...)
				for _, l := range x.slow {
					m.slow = keepSlow(m.slow, l)
				}
				for i, k := range x.unprojIDs {
					unprojIDs[p] = append(unprojIDs[p], tracedID{s.extra.ids[k], hex.EncodeToString(x.unprojTraces[i][:])})
				}
			}
		})
	}
	for id := range np {
		p := byName[j.sh.projections.value(uint16(id))]
		if p == nil {
			continue
		}
		x := &extra[id]
		p.Expected = p.Projected + p.Unprojected - late[p.Name]
		p.Orphans = x.orphans
		p.Lag.Sum = fromSeconds(sums[p.Name])
		p.Lag.Max = time.Duration(x.max)
		if j.sh.keep {
			sorted := x.samples
			slices.Sort(sorted)
			p.Lag.P50, p.Lag.P95, p.Lag.P99 = exactQuantile(sorted, 0.5), exactQuantile(sorted, 0.95), exactQuantile(sorted, 0.99)
			if len(sorted) > 0 {
				p.Lag.Quantiles = QuantilesExact
			}
			ids := unprojIDs[id]
			slices.SortStableFunc(ids, func(a, b tracedID) int { return strings.Compare(a.id, b.id) })
			for _, t := range ids {
				p.UnprojectedIDs = append(p.UnprojectedIDs, t.id)
				p.UnprojectedTraces = append(p.UnprojectedTraces, t.trace)
			}
			slices.SortFunc(x.slow, func(a, b tracedLag) int {
				if c := cmp.Compare(b.lag, a.lag); c != 0 {
					return c
				}
				return bytes.Compare(a.trace[:], b.trace[:])
			})
			for _, l := range x.slow {
				p.Slowest = append(p.Slowest, TracedLag{Lag: time.Duration(l.lag), TraceID: hex.EncodeToString(l.trace[:])})
			}
		} else if b := buckets[p.Name]; b != nil && p.Lag.Count > 0 {
			q := func(q float64) time.Duration {
				if v := b.Quantile(q); !math.IsNaN(v) {
					return fromSeconds(v)
				}
				return 0
			}
			p.Lag.P50, p.Lag.P95, p.Lag.P99 = q(0.5), q(0.95), q(0.99)
			p.Lag.Quantiles = QuantilesNative
		}
	}
	consistencySummary(mfs, byName, &out)
	slices.SortFunc(out.Projections, func(a, b ProjectionSummary) int { return strings.Compare(a.Name, b.Name) })
	types := map[string]uint64{}
	for _, m := range family(mfs, "cqrs_events_appended_total") {
		if n := uint64(m.GetCounter().GetValue()); n > 0 {
			types[label(m, "event_type")] += n
		}
	}
	for name, n := range types {
		out.EventTypes = append(out.EventTypes, EventTypeSummary{Name: name, Appended: n})
	}
	slices.SortFunc(out.EventTypes, func(a, b EventTypeSummary) int { return strings.Compare(a.Name, b.Name) })
	for _, m := range family(mfs, "cqrs_queries_total") {
		n := uint64(m.GetCounter().GetValue())
		switch label(m, "result") {
		case queryResults[queryFresh]:
			out.Queries.Fresh += n
		case queryResults[queryStale]:
			out.Queries.Stale += n
		case queryResults[queryUnknown]:
			out.Queries.Unknown += n
		}
	}
	return out
}

// family returns the metrics of the family name among mfs.
func family(mfs []*dto.MetricFamily, name string) []*dto.Metric {
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// label returns the value of label name of m.
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// fromSeconds converts seconds as the metrics hold them back to the
// nanoseconds they were computed from: rounded, as float seconds are not
// exact.
func fromSeconds(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// exactQuantile returns the nearest-rank quantile of sorted values.
func exactQuantile(sorted []int64, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted)) + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return time.Duration(sorted[rank-1])
}

// NativeBuckets holds native (schema 4) histogram buckets added up over
// series, or the difference of two such sums, for a quantile within 5 %.
// The zero value is empty.
type NativeBuckets struct {
	// Zero counts the observations in the zero bucket (0 here).
	Zero float64
	// Counts counts observations by bucket key k: (2^((k-1)/16), 2^(k/16)].
	Counts map[int]float64
}

// Add adds the native buckets of h and reports whether it has any: false
// for a classic-only histogram, or one of another schema (never one of
// lagscope's), which it leaves out.
func (b *NativeBuckets) Add(h *dto.Histogram) bool {
	if h.Schema == nil || h.GetSchema() != nativeSchema {
		return false
	}
	b.Zero += float64(h.GetZeroCount())
	if b.Counts == nil {
		b.Counts = map[int]float64{}
	}
	key, count := 0, int64(0)
	deltas := h.GetPositiveDelta()
	for _, s := range h.GetPositiveSpan() {
		key += int(s.GetOffset())
		for range s.GetLength() {
			if len(deltas) == 0 {
				return true // spans longer than deltas: malformed, cut
			}
			count += deltas[0]
			deltas = deltas[1:]
			if count > 0 {
				b.Counts[key] += float64(count)
			}
			key++
		}
	}
	return true
}

// Since returns what b counts beyond old, an earlier sum of the same
// series (a bucket that went down, as after a restart, counts 0).
func (b NativeBuckets) Since(old NativeBuckets) NativeBuckets {
	out := NativeBuckets{Zero: max(b.Zero-old.Zero, 0), Counts: make(map[int]float64, len(b.Counts))}
	for k, n := range b.Counts {
		if d := n - old.Counts[k]; d > 0 {
			out.Counts[k] = d
		}
	}
	return out
}

// Quantile returns the q-quantile of the observations (NaN if none): the
// bucket holding rank q·count, as histogram_quantile finds it, and in it
// the point as far, on a logarithmic scale, between its bounds as the rank
// is between the counts below and above it (Prometheus' exponential
// interpolation of native buckets). The exact value of that rank (nearest
// rank) is in the same bucket, whose bounds are 2^(1/16) apart, so the
// estimate is at most 4.43 % above it or 4.24 % below it.
func (b NativeBuckets) Quantile(q float64) float64 {
	total := b.Zero
	keys := make([]int, 0, len(b.Counts))
	for k, n := range b.Counts {
		if n > 0 {
			keys = append(keys, k)
			total += n
		}
	}
	if total == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	slices.Sort(keys)
	rank := min(max(q, 0), 1) * total
	if rank <= b.Zero {
		return 0
	}
	cum := b.Zero
	for _, k := range keys {
		n := b.Counts[k]
		if cum+n >= rank {
			lo, hi := nativeUpper(k-1), nativeUpper(k)
			return lo * math.Pow(hi/lo, (rank-cum)/n)
		}
		cum += n
	}
	return nativeUpper(keys[len(keys)-1]) // rounding: the last bound
}

// TracedLag is one command to projection lag and the trace it was
// measured in, as its exemplar names it.
type TracedLag struct {
	Lag     time.Duration
	TraceID string // hex
}

// SlowestKept is how many of its largest lags a projection's summary keeps
// with their traces (KeepSamples only).
const SlowestKept = 3
