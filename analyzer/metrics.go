package analyzer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// LagBuckets are the bucket boundaries (seconds) of the lag and stage
// histograms. 5 is a boundary on purpose: the headline alert's threshold, so
// "lag above 5s" is exact rather than interpolated.
var LagBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}

// metrics holds every metric the analyzer exports. The names are a public
// contract: users' dashboards and alerts depend on them.
type metrics struct {
	lag        *shardedHistogram
	stage      *shardedHistogram
	appended   *shardedCounter
	projected  *shardedCounter
	unproj     *shardedCounter
	duplicated *shardedCounter
	outOfOrder *shardedCounter
	late       *shardedCounter
	skew       *prometheus.CounterVec
	queries    *shardedCounter
	pending    *prometheus.GaugeVec
	oldest     *prometheus.GaugeVec

	spans      *prometheus.CounterVec
	entries    prometheus.Gauge
	evictions  *prometheus.CounterVec
	overflow   *prometheus.CounterVec
	roleCounts [len(roleNames)]prometheus.Counter
}

const (
	stageCommand = iota
	stageDelivery
	stageProjection
)

var stageNames = [...]string{"command", "delivery", "projection"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lag: newShardedHistogram(prometheus.HistogramOpts{
			Name:    "cqrs_command_to_projection_lag_seconds",
			Help:    "Time from the start of a command to the end of the projection span that made its event visible in a read model.",
			Buckets: LagBuckets,
		}, []string{"command", "event_type", "projection"}),
		stage: newShardedHistogram(prometheus.HistogramOpts{
			Name:    "cqrs_stage_duration_seconds",
			Help:    "Duration of each stage of an event's path: command (command start to append end), delivery (append end to projection start), projection (projection span).",
			Buckets: LagBuckets,
		}, []string{"stage"}),
		appended: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_appended_total",
			Help: "Events appended to the event store, from append spans.",
		}, []string{"event_type", "aggregate_type"}),
		projected: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_projected_total",
			Help: "Events shown by a projection for the first time.",
		}, []string{"event_type", "projection"}),
		unproj: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_unprojected_total",
			Help: "Events an expected projection did not show within the join deadline.",
		}, []string{"event_type", "projection"}),
		duplicated: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_duplicated_total",
			Help: "Projection spans for an event the projection had already shown.",
		}, []string{"event_type", "projection"}),
		outOfOrder: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_out_of_order_total",
			Help: "Events a projection applied after a later version of the same aggregate.",
		}, []string{"event_type", "projection"}),
		late: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_late_total",
			Help: "Events a projection showed after they had been counted as unprojected.",
		}, []string{"event_type", "projection"}),
		skew: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cqrs_clock_skew_total",
			Help: "Projection spans that ended before their command started (clock skew between services); their lag is not observed.",
		}, []string{"projection"}),
		queries: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_queries_total",
			Help: "Query spans by whether the version they returned was the latest appended before the query started (fresh), older (stale), or not known (unknown).",
		}, []string{"query", "result"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_pending_events",
			Help: "Events a projection is expected to show and has not shown yet, within the join deadline.",
		}, []string{"projection"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_oldest_pending_seconds",
			Help: "Age of the oldest appended event the projection has not shown yet; keeps rising while a projection is stalled.",
		}, []string{"projection"}),
		spans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_spans_total",
			Help: "Spans analysed, by the role the span conventions gave them.",
		}, []string{"role"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lagscope_join_entries",
			Help: "Entries held by the join: events, projections waiting for their event, appends waiting for their command.",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_join_evictions_total",
			Help: "Join entries dropped before they were resolved, by reason.",
		}, []string{"reason"}),
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_label_overflow_total",
			Help: "Label values replaced by \"other\" because the label had reached its limit of distinct values.",
		}, []string{"label"}),
	}
	for _, c := range []prometheus.Collector{
		m.lag, m.stage, m.appended, m.projected, m.unproj, m.duplicated, m.outOfOrder, m.late,
		m.skew, m.queries, m.pending, m.oldest, m.spans, m.entries, m.evictions, m.overflow,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for i, r := range roleNames {
		m.roleCounts[i] = m.spans.WithLabelValues(r)
	}
	for _, r := range []string{reasonCapacity, reasonOrphanCapacity, reasonOrphanExpired, reasonCommandWaitCapacity} {
		m.evictions.WithLabelValues(r)
	}
	return m, nil
}

// Eviction reasons.
const (
	// reasonCapacity: an event was evicted before its deadline while some
	// expected projection had not shown it.
	reasonCapacity = "capacity"
	// reasonOrphanCapacity / reasonOrphanExpired: a projection span whose
	// event was never appended (as far as lagscope saw) was dropped.
	reasonOrphanCapacity = "orphan_capacity"
	reasonOrphanExpired  = "orphan_expired"
	// reasonCommandWaitCapacity: an append span waiting for its command
	// span was joined with command="none" early, for room.
	reasonCommandWaitCapacity = "command_wait_capacity"
)
