package analyzer

import (
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// LagBuckets are the default classic bucket boundaries (seconds) of the
// lag and stage histograms (MetricsConfig.LagBuckets). 5 is a boundary on
// purpose: the headline alert's default threshold, so "lag above 5s" is
// exact rather than interpolated.
var LagBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}

// metrics holds every metric the Joiner exports. The names are a public
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

	// The consistency failures of issue 14 (propagation.go, staleness.go,
	// status.go, skew.go).
	broken      *prometheus.CounterVec
	staleReads  *prometheus.CounterVec
	staleness   *prometheus.HistogramVec
	status      *prometheus.GaugeVec
	skewSeconds *shardedHistogram

	entries   prometheus.Gauge
	evictions *prometheus.CounterVec
	overflow  *prometheus.CounterVec

	sanitized      *prometheus.CounterVec
	seriesOverflow *prometheus.CounterVec
	invalidTime    [len(invalidTimeReasons)]prometheus.Counter
	// labels are the counters of each labelSet, by label name; none for
	// "command", whose values the Resolver sanitizes and counts.
	labels map[string]*labelCounters

	// own gathers the collectors Summary reads, the same that reg
	// exposes: so that a summary and a scrape cannot disagree.
	own *prometheus.Registry
}

// resolverMetrics holds the metrics the Resolver exports.
type resolverMetrics struct {
	roleCounts [len(roleNames)]prometheus.Counter
	// waitEvictions is lagscope_join_evictions_total{reason="command_wait_capacity"}.
	waitEvictions prometheus.Counter
	// duplicateSpans is lagscope_duplicate_spans_total.
	duplicateSpans prometheus.Counter
	command        *labelCounters
	own            *prometheus.Registry // lagscope_spans_total, for Summary
}

// Options of the vectors the Resolver and the Joiner both count in, each
// under its own label values: registered by the first, reused by the other
// when they share a registry (registerCounterVec).
var (
	evictionsOpts = prometheus.CounterOpts{
		Name: "lagscope_join_evictions_total",
		Help: "Join entries dropped before they were resolved, by reason.",
	}
	overflowOpts = prometheus.CounterOpts{
		Name: "lagscope_label_overflow_total",
		Help: "Label values replaced by \"other\" because the label had reached its limit of distinct values.",
	}
	sanitizedOpts = prometheus.CounterOpts{
		Name: "lagscope_label_values_sanitized_total",
		Help: "Label values from spans changed before use: invalid UTF-8 replaced (invalid_utf8) or cut to metrics.max_label_length (truncated).",
	}
)

// newResolverMetrics builds the Resolver's metrics and registers them with
// reg.
func newResolverMetrics(reg prometheus.Registerer) (*resolverMetrics, error) {
	spans := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_spans_total",
		Help: "Spans analysed, by the role the span conventions gave them.",
	}, []string{"role"})
	if err := reg.Register(spans); err != nil {
		return nil, err
	}
	evictions, err := registerCounterVec(reg, evictionsOpts, "reason")
	if err != nil {
		return nil, err
	}
	overflow, err := registerCounterVec(reg, overflowOpts, "label")
	if err != nil {
		return nil, err
	}
	sanitized, err := registerCounterVec(reg, sanitizedOpts, "label", "reason")
	if err != nil {
		return nil, err
	}
	dups := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lagscope_duplicate_spans_total",
		Help: "Spans received again with the (trace id, span id) of a recent span: retried exports, otherwise ignored.",
	})
	if err := reg.Register(dups); err != nil {
		return nil, err
	}
	m := &resolverMetrics{
		duplicateSpans: dups,
		waitEvictions:  evictions.WithLabelValues(reasonCommandWaitCapacity),
		command:        newLabelCounters(overflow, sanitized, "command"),
		own:            prometheus.NewRegistry(),
	}
	m.own.MustRegister(spans)
	for i, r := range roleNames {
		m.roleCounts[i] = spans.WithLabelValues(r)
	}
	return m, nil
}

func newLabelCounters(overflow, sanitized *prometheus.CounterVec, label string) *labelCounters {
	return &labelCounters{
		overflow:  overflow.WithLabelValues(label),
		invalid:   sanitized.WithLabelValues(label, reasonInvalidUTF8),
		truncated: sanitized.WithLabelValues(label, reasonTruncated),
	}
}

// Reasons of lagscope_label_values_sanitized_total.
const (
	reasonInvalidUTF8 = "invalid_utf8"
	reasonTruncated   = "truncated"
)

// spanLabels are the labels whose values come from spans: those a labelSet
// interns and sanitizes.
var spanLabels = [...]string{"command", "event_type", "aggregate_type", "projection", "query", "service"}

// Reasons of lagscope_invalid_timestamps_total.
const (
	timeEndBeforeStart = iota
	timeBeyondMaxLag
)

var invalidTimeReasons = [...]string{"end_before_start", "beyond_max_lag"}

const (
	stageCommand = iota
	stageDelivery
	stageProjection
)

var stageNames = [...]string{"command", "delivery", "projection"}

// newMetrics builds the analyzer's metrics, with the series budgets of cfg,
// and registers them with reg.
func newMetrics(reg prometheus.Registerer, cfg Config) (*metrics, error) {
	maxSeries := cfg.Metrics.MaxSeries
	buckets := slices.Clone(cfg.Metrics.LagBuckets) // not the caller's to change later
	m := &metrics{
		lag: newShardedHistogram(prometheus.HistogramOpts{
			Name:    "cqrs_command_to_projection_lag_seconds",
			Help:    "Time from the start of a command to the end of the projection span that made its event visible in a read model.",
			Buckets: buckets,
		}, []string{"command", "event_type", "projection"}, cfg.Metrics.MaxHistogramSeries),
		stage: newShardedHistogram(prometheus.HistogramOpts{
			Name:    "cqrs_stage_duration_seconds",
			Help:    "Duration of each stage of an event's path: command (command start to append end), delivery (append end to projection start), projection (projection span).",
			Buckets: buckets,
		}, []string{"stage"}, 0), // three series, fixed
		appended: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_appended_total",
			Help: "Events appended to the event store, from append spans.",
		}, []string{"event_type", "aggregate_type"}, maxSeries),
		projected: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_projected_total",
			Help: "Events shown by a projection for the first time.",
		}, []string{"event_type", "projection"}, maxSeries),
		unproj: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_unprojected_total",
			Help: "Events an expected projection did not show within the join deadline.",
		}, []string{"event_type", "projection"}, maxSeries),
		duplicated: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_duplicated_total",
			Help: "Projection spans for an event the projection had already shown.",
		}, []string{"event_type", "projection"}, maxSeries),
		outOfOrder: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_out_of_order_total",
			Help: "Events a projection applied after a later version of the same aggregate.",
		}, []string{"event_type", "projection"}, maxSeries),
		late: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_events_late_total",
			Help: "Events a projection showed after they had been counted as unprojected.",
		}, []string{"event_type", "projection"}, maxSeries),
		skew: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cqrs_clock_skew_total",
			Help: "Projection spans that ended before their command started (clock skew between services); their lag is not observed.",
		}, []string{"projection"}),
		queries: newShardedCounter(prometheus.CounterOpts{
			Name: "cqrs_queries_total",
			Help: "Query spans by whether the version they returned was the latest appended before the query started (fresh), older (stale), or not known (unknown).",
		}, []string{"query", "result"}, maxSeries),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_pending_events",
			Help: "Events a projection is expected to show and has not shown yet, within the join deadline.",
		}, []string{"projection"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_oldest_pending_seconds",
			Help: "Age of the oldest appended event the projection has not shown yet; keeps rising while a projection is stalled.",
		}, []string{"projection"}),
		broken: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cqrs_trace_propagation_broken_total",
			Help: "Projection spans joined to their event by event id although their trace is not the append's and they have no span link to it: trace context lost between append and projection; lag is still computed.",
		}, []string{"projection"}),
		staleReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cqrs_stale_reads_total",
			Help: "Query spans that returned a version of an aggregate older than one appended before the query started (read-after-write failures).",
		}, []string{"query"}),
		staleness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cqrs_read_staleness_seconds",
			Help:    "How stale a stale read was: query start minus the append end of the newest version it did not see.",
			Buckets: StalenessBuckets,
		}, []string{"query"}),
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_status",
			Help: "1 for the projection's current status (ok, slow, stalled, stopped), judged over a sliding window of join.deadline as Burrow judges consumers; 0 for the others.",
		}, []string{"projection", "status"}),
		skewSeconds: newShardedHistogram(prometheus.HistogramOpts{
			Name:    "cqrs_clock_skew_seconds",
			Help:    "How far a projection span started before the end of the append it projects (clock skew between the services' hosts); its count is how often.",
			Buckets: SkewBuckets,
		}, []string{"from_service", "to_service"}, cfg.Metrics.MaxHistogramSeries),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lagscope_join_entries",
			Help: "Entries held by the join: events, projections waiting for their event, appends waiting for their command.",
		}),
		seriesOverflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_series_overflow_total",
			Help: "Observations given to the series whose labels are all \"other\" because the metric had reached its series budget (metrics.max_series).",
		}, []string{"metric"}),
	}
	invalidTime := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_invalid_timestamps_total",
		Help: "Lags and stage durations not observed because their spans' timestamps are not credible: a span that ended before it started, or more than join.max_lag apart.",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{
		m.lag, m.stage, m.appended, m.projected, m.unproj, m.duplicated, m.outOfOrder, m.late,
		m.skew, m.queries, m.pending, m.oldest, m.entries, m.seriesOverflow, invalidTime,
		m.broken, m.staleReads, m.staleness, m.status, m.skewSeconds,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.evictions, err = registerCounterVec(reg, evictionsOpts, "reason"); err != nil {
		return nil, err
	}
	if m.overflow, err = registerCounterVec(reg, overflowOpts, "label"); err != nil {
		return nil, err
	}
	if m.sanitized, err = registerCounterVec(reg, sanitizedOpts, "label", "reason"); err != nil {
		return nil, err
	}
	m.own = prometheus.NewRegistry()
	m.own.MustRegister(m.lag, m.appended, m.projected, m.unproj, m.duplicated, m.outOfOrder, m.late,
		m.skew, m.queries, m.pending, m.oldest, m.broken, m.staleReads, m.staleness, m.status, m.skewSeconds)
	for i, r := range invalidTimeReasons {
		m.invalidTime[i] = invalidTime.WithLabelValues(r)
	}
	for _, ps := range []*partSet[counterPart]{
		&m.appended.partSet, &m.projected.partSet, &m.unproj.partSet, &m.duplicated.partSet,
		&m.outOfOrder.partSet, &m.late.partSet, &m.queries.partSet,
	} {
		ps.overflow = m.seriesOverflow.WithLabelValues(ps.name)
	}
	m.lag.overflow = m.seriesOverflow.WithLabelValues(m.lag.name)
	m.skewSeconds.overflow = m.seriesOverflow.WithLabelValues(m.skewSeconds.name)
	m.labels = make(map[string]*labelCounters, len(spanLabels))
	for _, l := range spanLabels {
		if l != "command" {
			m.labels[l] = newLabelCounters(m.overflow, m.sanitized, l)
		}
	}
	for _, r := range []string{reasonCapacity, reasonOrphanCapacity, reasonOrphanExpired} {
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

// panicsOpts is lagscope_panics_total, which every component that recovers
// a panic counts under its own component label.
var panicsOpts = prometheus.CounterOpts{
	Name: "lagscope_panics_total",
	Help: "Panics recovered, by component; each is logged at error level.",
}

// registerPanics registers lagscope_panics_total with reg, or returns the
// one another component registered there with the same help.
func registerPanics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	return registerCounterVec(reg, panicsOpts, "component")
}

// registerCounterVec registers a counter vector with reg, or returns the one
// another component registered there with the same options.
func registerCounterVec(reg prometheus.Registerer, opts prometheus.CounterOpts, labels ...string) (*prometheus.CounterVec, error) {
	v := prometheus.NewCounterVec(opts, labels)
	if err := reg.Register(v); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	return v, nil
}
