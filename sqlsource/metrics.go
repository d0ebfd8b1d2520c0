package sqlsource

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Names of the queries (the query label of lagscope_sqlsource_errors_total).
const (
	queryHead        = "head"
	queryCheckpoints = "checkpoints"
)

// Reasons for skipping a row of the checkpoints query (the reason label of
// lagscope_sqlsource_skipped_rows_total).
const (
	reasonTooManyProjections = "too_many_projections"
	reasonEmptyProjection    = "empty_projection"
	reasonNullPosition       = "null_position"
	reasonDuplicate          = "duplicate_projection"
)

// metrics holds the source's metrics.
type metrics struct {
	positionLag *prometheus.GaugeVec
	head        *prometheus.GaugeVec // no labels: absent until the first success
	errors      *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

// newMetrics builds the source's metrics and registers them with reg, unless
// reg is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		positionLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_projection_position_lag",
			Help: "Events a projection is behind the event store's head: head position minus the projection's checkpoint, as of the last successful poll.",
		}, []string{"projection"}),
		head: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cqrs_store_head_position",
			Help: "Global position of the newest event in the event store, as of the last successful poll.",
		}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_sqlsource_errors_total",
			Help: "Polls of the SQL position source that failed, by the query that failed; the gauges keep their last values.",
		}, []string{"query"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_sqlsource_skipped_rows_total",
			Help: "Rows of the checkpoints query that were not exported, by reason.",
		}, []string{"reason"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lagscope_sqlsource_last_success_timestamp_seconds",
			Help: "Unix time of the last poll in which both queries succeeded; 0 before the first.",
		}),
	}
	// Every error and skip series exists from the start, so rates over them
	// are defined before the first failure.
	for _, q := range []string{queryHead, queryCheckpoints} {
		m.errors.WithLabelValues(q)
	}
	for _, r := range []string{reasonTooManyProjections, reasonEmptyProjection, reasonNullPosition, reasonDuplicate} {
		m.skipped.WithLabelValues(r)
	}
	if reg != nil {
		var done []prometheus.Collector
		for _, c := range []prometheus.Collector{m.positionLag, m.head, m.errors, m.skipped, m.lastSuccess} {
			if err := reg.Register(c); err != nil {
				for _, d := range done {
					reg.Unregister(d)
				}
				return nil, fmt.Errorf("register sqlsource metrics: %w", err)
			}
			done = append(done, c)
		}
	}
	return m, nil
}
