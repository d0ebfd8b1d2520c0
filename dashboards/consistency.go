package dashboards

import (
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/lagscope/lagscope/alerts"
)

// Label selectors of the consistency dashboard, built from its variables.
const (
	selLag        = `{job=~"$job", projection=~"$projection", event_type=~"$event_type"}`
	selProjection = `{job=~"$job", projection=~"$projection"}`
	selAppended   = `{job=~"$job", event_type=~"$event_type"}`
	selJob        = `{job=~"$job"}`
	selGroup      = `{job=~"$job", group=~"$group"}`
)

// selStatus selects the cqrs_projection_status series of one status.
func selStatus(status string) string {
	return `{job=~"$job", projection=~"$projection", status="` + status + `"}`
}

func lagQuantile(q string, by string, window string) string {
	return histogramQuantile(q, "cqrs_command_to_projection_lag_seconds", selLag, by, window)
}

// histogramQuantile is the q-quantile of histogram metric by the labels by
// over window: from its native buckets where Prometheus ingests them
// (within 5 %; Prometheus before 2.45 with native histograms on ingests
// only them), else from its classic ones. Where it has both, "or" keeps the
// native one, whose labels are the same.
func histogramQuantile(q, metric, sel, by, window string) string {
	return "histogram_quantile(" + q + ", sum by (" + by + ") (rate(" + metric + sel + "[" + window + "])))\nor\n" +
		"histogram_quantile(" + q + ", sum by (le, " + by + ") (rate(" + metric + "_bucket" + sel + "[" + window + "])))"
}

// histogramMean is the mean of histogram metric by the labels by over
// window, from the native histogram or else the classic _sum and _count.
func histogramMean(metric, sel, by, window string) string {
	rate := func(m string) string { return "sum by (" + by + ") (rate(" + m + sel + "[" + window + "]))" }
	return "histogram_sum(" + rate(metric) + ")\n/\nhistogram_count(" + rate(metric) + ")\nor\n" +
		rate(metric+"_sum") + "\n/\n" + rate(metric+"_count")
}

// projectedPerAppended is the ratio of projected events to appended events of
// the event types each projection handles (those it has projected or been
// declared unprojected for), as the recording rule
// alerts.RecordProjectedRatio computes it, with the dashboard's filters.
func projectedPerAppended(window string) string {
	return `sum by (job, projection) (rate(cqrs_events_projected_total` + selLag + `[` + window + `]))
/
sum by (job, projection) (
  sum by (job, event_type) (rate(cqrs_events_appended_total` + selAppended + `[` + window + `]))
  * on (job, event_type) group_right ()
  group by (job, event_type, projection) (cqrs_events_projected_total` + selLag + ` or cqrs_events_unprojected_total` + selLag + `)
)`
}

func consistency() (dashboard.Dashboard, error) {
	cfg := alerts.DefaultConfig()
	lag := cfg.LagThreshold.Seconds()
	lagText := strconv.FormatFloat(lag, 'g', -1, 64) + "s"
	lagSteps := thresholds(step(lag, "red"))

	b := newDashboard("lagscope-cqrs-consistency", "CQRS consistency",
		"Command-to-projection lag and projection consistency of a CQRS + event-sourced system, as measured by lagscope from its traces.",
		[]string{"lagscope", "cqrs"}).
		Link(dashboard.NewDashboardLinkBuilder("lagscope self-monitoring").
			Type(dashboard.DashboardLinkTypeLink).
			Url("/d/lagscope-self").
			Icon("dashboard").
			KeepTime(true).
			IncludeVars(false)).
		WithVariable(labelVariable("job", "Job", `label_values(lagscope_received_spans_total, job)`)).
		WithVariable(labelVariable("projection", "Projection", `label_values(cqrs_projection_pending_events{job=~"$job"}, projection)`)).
		WithVariable(labelVariable("event_type", "Event type", `label_values(cqrs_events_appended_total{job=~"$job"}, event_type)`)).
		WithVariable(labelVariable("group", "Consumer group", `label_values(cqrs_projection_offset_lag{job=~"$job"}, group)`))

	b.WithRow(row("Now"))
	b.WithPanel(singleStat(panel{
		title:       "Worst p99 lag",
		description: "The projection with the highest p99 command-to-projection lag over the last 5m, and that lag. Red above the " + lagText + " objective (alert CQRSProjectionLagHigh).",
		unit:        unitSeconds, width: 6, height: 4,
		queries: []query{{expr: "topk(1, " + lagQuantile("0.99", "projection", "5m") + ")", legend: "{{projection}}"}},
	}, lagSteps))
	b.WithPanel(singleStat(panel{
		title:       "Oldest pending event",
		description: "The projection whose oldest not-yet-projected event is the oldest, and its age. Keeps rising while a projection is stalled. Red above " + lagText + ".",
		unit:        unitSeconds, width: 6, height: 4,
		queries: []query{{expr: "topk(1, max by (projection) (cqrs_projection_oldest_pending_seconds" + selProjection + "))", legend: "{{projection}}"}},
	}, lagSteps))
	b.WithPanel(singleStat(panel{
		title:       "Pending events",
		description: "Events appended but not yet shown by their projections, summed over the selected projections.",
		unit:        unitShort, width: 4, height: 4,
		queries: []query{{expr: "sum(max by (projection) (cqrs_projection_pending_events" + selProjection + "))", legend: "pending"}},
	}, thresholds(step(1000, "orange"))))
	b.WithPanel(singleStat(panel{
		title:       "Unprojected in range",
		description: "Events that an expected projection did not show within the join deadline, over the dashboard's time range.",
		unit:        unitShort, width: 4, height: 4,
		queries: []query{{expr: "sum(increase(cqrs_events_unprojected_total" + selLag + "[$__range]))", legend: "unprojected"}},
	}, thresholds(step(1, "red"))))
	b.WithPanel(singleStat(panel{
		title:       "Appended",
		description: "Events appended to the event store per second, over the last 5m.",
		unit:        unitEvents, width: 4, height: 4,
		queries: []query{{expr: "sum(rate(cqrs_events_appended_total" + selAppended + "[5m]))", legend: "appended"}},
	}, thresholds()))

	b.WithRow(row("Lag"))
	b.WithPanel(timeSeries(panel{
		title:       "Command-to-projection lag",
		description: "p50, p95 and p99 of the time from the command that appended an event to the projection showing it, per projection. The dashed line is the " + lagText + " objective. Exemplars (dots) on p99 open the trace of a slow event.",
		unit:        unitSeconds, width: 16, height: 10,
		queries: []query{
			{expr: lagQuantile("0.99", "projection", "$__rate_interval"), legend: "p99 {{projection}}", exemplar: true},
			{expr: lagQuantile("0.95", "projection", "$__rate_interval"), legend: "p95 {{projection}}"},
			{expr: lagQuantile("0.5", "projection", "$__rate_interval"), legend: "p50 {{projection}}"},
		},
	}, thresholds(step(lag, "red"))))
	b.WithPanel(timeSeries(panel{
		title:       "Oldest pending event age",
		description: "Age of the oldest appended event each projection has not shown yet. Rises steadily when a projection stalls, even though it completes nothing to measure a lag on.",
		unit:        unitSeconds, width: 8, height: 10,
		queries: []query{{expr: "max by (projection) (cqrs_projection_oldest_pending_seconds" + selProjection + ")", legend: "{{projection}}"}},
	}, thresholds(step(lag, "red"))))
	b.WithPanel(latencyHeatmap(panel{
		title:       "Lag distribution",
		description: "Command-to-projection lag of the selected projections and event types, from the histogram buckets (events per second in each bucket): the native ones where Prometheus has them, else the classic ones. Exemplars open the trace of an event.",
		unit:        unitSeconds, width: 12, height: 10,
		queries: []query{{expr: "sum(rate(cqrs_command_to_projection_lag_seconds" + selLag + "[$__rate_interval]))\nor\nsum by (le) (rate(cqrs_command_to_projection_lag_seconds_bucket" + selLag + "[$__rate_interval]))", legend: "{{le}}", exemplar: true}},
	}))
	b.WithPanel(timeSeries(panel{
		title:       "p99 lag by command and event type",
		description: "Which command and event type make a projection slow: p99 lag per projection, command and event type.",
		unit:        unitSeconds, width: 12, height: 10,
		queries: []query{{expr: lagQuantile("0.99", "projection, command, event_type", "$__rate_interval"), legend: "{{projection}} {{command}} {{event_type}}"}},
	}, thresholds(step(lag, "red"))))

	b.WithRow(row("Throughput and consistency"))
	b.WithPanel(timeSeries(panel{
		title:       "Appended vs projected",
		description: "Events appended per event type, and events projected per projection, per second. A projection that keeps up follows the appends of its event types.",
		unit:        unitEvents, width: 12, height: 9,
		queries: []query{
			{expr: "sum by (event_type) (rate(cqrs_events_appended_total" + selAppended + "[$__rate_interval]))", legend: "appended {{event_type}}"},
			{expr: "sum by (projection) (rate(cqrs_events_projected_total" + selLag + "[$__rate_interval]))", legend: "projected {{projection}}"},
		},
	}, nil))
	drift := cfg.DriftTolerance
	b.WithPanel(timeSeries(panel{
		title:       "Projected / appended",
		description: "Per projection, events projected divided by events appended of the event types it handles. 100% when it keeps up; below, it falls behind or skips events; above, it projects some twice or catches up. Alert CQRSProjectionDrift fires outside the dashed lines for 15m.",
		unit:        unitPercent, width: 12, height: 9,
		queries: []query{{expr: projectedPerAppended("$__rate_interval"), legend: "{{projection}}"}},
	}, dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps([]dashboard.Threshold{
		{Color: "red"}, step(1-drift, "green"), step(1+drift, "orange"),
	})).AxisSoftMax(1 + 2*drift))
	b.WithPanel(timeSeries(panel{
		title:       "Pending events",
		description: "Events appended but not yet shown, per projection, as lagscope sees them in the traces. A steady climb is a projection falling behind.",
		unit:        unitShort, width: 12, height: 9,
		queries: []query{{expr: "max by (projection) (cqrs_projection_pending_events" + selProjection + ")", legend: "{{projection}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Position lag (events behind head)",
		description: "Per projection, the event store's head position minus the projection's checkpoint, read from the store's database by lagscope's SQL position source (empty when it is not configured). Needs no traces: it also shows a projector that stopped altogether. Alert CQRSProjectionPositionStalled fires when it stays above 0 for 5m without decreasing while the head moves.",
		unit:        unitShort, width: 12, height: 9,
		queries: []query{{expr: "max by (projection) (cqrs_projection_position_lag" + selProjection + ")", legend: "{{projection}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Unprojected events",
		description: "Events per second that an expected projection did not show within the join deadline (alert CQRSEventsUnprojected), per projection and event type.",
		unit:        unitEvents, width: 12, height: 9,
		queries: []query{{expr: "sum by (projection, event_type) (rate(cqrs_events_unprojected_total" + selLag + "[$__rate_interval]))", legend: "{{projection}} {{event_type}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Duplicated, out of order, late, clock skew",
		description: "Per projection and second: events projected more than once, projected out of order within their aggregate, projected after being declared unprojected (late), and negative lags dropped as clock skew between hosts.",
		unit:        unitEvents, width: 12, height: 9,
		queries: []query{
			{expr: "sum by (projection) (rate(cqrs_events_duplicated_total" + selLag + "[$__rate_interval]))", legend: "duplicated {{projection}}"},
			{expr: "sum by (projection) (rate(cqrs_events_out_of_order_total" + selLag + "[$__rate_interval]))", legend: "out of order {{projection}}"},
			{expr: "sum by (projection) (rate(cqrs_events_late_total" + selLag + "[$__rate_interval]))", legend: "late {{projection}}"},
			{expr: "sum by (projection) (rate(cqrs_clock_skew_total" + selProjection + "[$__rate_interval]))", legend: "clock skew {{projection}}"},
		},
	}, nil))

	// The consistency failures of issue 14, each with the alert that
	// watches it (alerts/README.md has what each means).
	b.WithRow(row("Consistency failures"))
	b.WithPanel(timeSeries(panel{
		title: "Projection status",
		description: "Each projection's status, judged over a sliding window of one join deadline as Burrow judges Kafka consumers, without a lag threshold: " +
			"0 OK (pending reached 0, or it keeps up), 1 SLOW (it projects, but pending never decreased and grew), 2 STALLED (spans arrive, no new event shown), " +
			"3 STOPPED (no span at all while events wait). Alerts CQRSProjectionStatusSlow, CQRSProjectionStatusStalled and CQRSProjectionStatusStopped.",
		unit: unitShort, width: 12, height: 9,
		queries: []query{{expr: `max by (projection) (
  cqrs_projection_status` + selStatus("SLOW") + `
  or cqrs_projection_status` + selStatus("STALLED") + ` * 2
  or cqrs_projection_status` + selStatus("STOPPED") + ` * 3
)`, legend: "{{projection}}"}},
	}, thresholds(step(1, "orange"), step(2, "red"))).Min(0).Max(3))
	b.WithPanel(timeSeries(panel{
		title: "Broken trace propagation",
		description: "Projection spans per second joined to their event by event id only: neither in the append's trace nor linked to it, so the projector lost the trace context (alert CQRSTracePropagationBroken). " +
			"Their lag is still counted; what is lost is the trace from the command to the read model.",
		unit: unitEvents, width: 12, height: 9,
		queries: []query{{expr: "sum by (projection) (rate(cqrs_trace_propagation_broken_total" + selProjection + "[$__rate_interval]))", legend: "{{projection}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Stale reads",
		description: "Per query, reads per second that returned an older version of an aggregate than one appended before the query started: read-after-write failures, what users feel as \"I saved it and it is not there\" (alert CQRSStaleReads).",
		unit:        unitEvents, width: 12, height: 9,
		queries: []query{{expr: "sum by (query) (rate(cqrs_stale_reads_total" + selJob + "[$__rate_interval]))", legend: "{{query}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Read staleness",
		description: "p99 and mean, per query, of how stale a stale read was: the query's start minus the end of the append of the newest version it did not see.",
		unit:        unitSeconds, width: 12, height: 9,
		queries: []query{
			{expr: "histogram_quantile(0.99, sum by (le, query) (rate(cqrs_read_staleness_seconds_bucket" + selJob + "[$__rate_interval])))", legend: "p99 {{query}}"},
			{expr: "sum by (query) (rate(cqrs_read_staleness_seconds_sum" + selJob + "[$__rate_interval]))\n/\nsum by (query) (rate(cqrs_read_staleness_seconds_count" + selJob + "[$__rate_interval]))", legend: "mean {{query}}"},
		},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Clock skew between services",
		description: "Per pair of services (append's -> projection's), p99 of how far projection spans started before the end of the append they project: the hosts' clocks disagree by at least that much, " +
			"and every lag between the two services is off by as much. Alert CQRSClockSkew fires on skews above " + alerts.SkewAlertSeconds + "s.",
		unit: unitSeconds, width: 12, height: 9,
		queries: []query{{expr: "histogram_quantile(0.99, sum by (le, from_service, to_service) (rate(cqrs_clock_skew_seconds_bucket" + selJob + "[$__rate_interval])))", legend: "{{from_service}} -> {{to_service}}"}},
	}, thresholds(step(0.1, "orange"))))
	b.WithPanel(timeSeries(panel{
		title:       "Clock-skewed projection spans",
		description: "Per pair of services, projection spans per second that started before the end of the append they project: how often the clocks' disagreement shows.",
		unit:        unitEvents, width: 12, height: 9,
		queries: []query{{expr: "sum by (from_service, to_service) (rate(cqrs_clock_skew_seconds_count" + selJob + "[$__rate_interval]))", legend: "{{from_service}} -> {{to_service}}"}},
	}, nil))

	// Offset lag reads Kafka, not traces: it sees every message, sampled or
	// not. Several lagscope instances may export the same group: max by
	// partition counts each partition once.
	b.WithRow(row("Kafka consumer groups (offset lag)"))
	b.WithPanel(timeSeries(panel{
		title:       "Consumer group offset lag",
		description: "Messages each Kafka consumer group has not consumed yet, summed over the partitions of each topic: end offset minus committed offset (from the log start where it never committed), read from the brokers by lagscope's offset lag exporter (empty when kafka.brokers is not set). Sampling-proof: it counts every message, traced or not. Alert CQRSConsumerGroupStalled fires when a partition's committed offset stops while messages arrive.",
		unit:        unitShort, width: 8, height: 9,
		queries: []query{{expr: "sum by (group, topic) (max by (group, topic, partition) (cqrs_projection_offset_lag" + selGroup + "))", legend: "{{group}} {{topic}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title:       "Consumer group time lag",
		description: "Age of the oldest message each consumer group has not consumed on each topic, from the message's timestamp; 0 when caught up. The dashed line is the " + lagText + " lag objective.",
		unit:        unitSeconds, width: 8, height: 9,
		queries: []query{{expr: "max by (group, topic) (cqrs_projection_time_lag_seconds" + selGroup + ")", legend: "{{group}} {{topic}}"}},
	}, thresholds(step(lag, "red"))))
	b.WithPanel(timeSeries(panel{
		title:       "Produced vs consumed",
		description: "Per topic, messages written per second (end offsets), and per consumer group, messages committed per second (committed offsets). A group that keeps up follows its topic; a flat line under a moving topic is a stalled group.",
		unit:        unitShort, width: 8, height: 9,
		queries: []query{
			{expr: "sum by (topic) (max by (topic, partition) (deriv(cqrs_projection_end_offset" + selGroup + "[$__rate_interval])))", legend: "produced {{topic}}"},
			{expr: "sum by (group, topic) (max by (group, topic, partition) (deriv(cqrs_projection_committed_offset" + selGroup + "[$__rate_interval])))", legend: "consumed {{group}} {{topic}}"},
		},
	}, nil))

	b.WithRow(row("Stages"))
	b.WithPanel(timeSeries(panel{
		title:       "p99 duration by stage",
		description: "p99 of each stage of the lag: command (handling the command up to the append), delivery (append to the projector receiving the event), projection (updating the read model). All projections together.",
		unit:        unitSeconds, width: 12, height: 9,
		queries: []query{{expr: histogramQuantile("0.99", "cqrs_stage_duration_seconds", selJob, "stage", "$__rate_interval"), legend: "{{stage}}"}},
	}, nil))
	b.WithPanel(stacked(timeSeries(panel{
		title:       "Mean duration by stage (stacked)",
		description: "Mean time spent in each stage, stacked: how the end-to-end lag divides between command handling, delivery and projection.",
		unit:        unitSeconds, width: 12, height: 9,
		queries: []query{{expr: histogramMean("cqrs_stage_duration_seconds", selJob, "stage", "$__rate_interval"), legend: "{{stage}}"}},
	}, nil)))

	return b.Build()
}
