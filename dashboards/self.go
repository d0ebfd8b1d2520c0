package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/lagscope/lagscope/alerts"
)

const selSelf = `{job=~"$job", instance=~"$instance"}`

func self() (dashboard.Dashboard, error) {
	cfg := alerts.DefaultConfig()
	b := newDashboard("lagscope-self", "lagscope self-monitoring",
		"Health of lagscope itself: spans received and rejected, the join, label overflow and the process.",
		[]string{"lagscope"}).
		Link(dashboard.NewDashboardLinkBuilder("CQRS consistency").
			Type(dashboard.DashboardLinkTypeLink).
			Url("/d/lagscope-cqrs-consistency").
			Icon("dashboard").
			KeepTime(true).
			IncludeVars(false)).
		WithVariable(labelVariable("job", "Job", `label_values(lagscope_received_spans_total, job)`)).
		WithVariable(labelVariable("instance", "Instance", `label_values(lagscope_received_spans_total{job=~"$job"}, instance)`))

	b.WithRow(row("Now"))
	b.WithPanel(singleStat(panel{
		title: "Spans received", description: "Spans decoded from OTLP requests per second, over the last 5m.",
		unit: unitSpans, width: 6, height: 4,
		queries: []query{{expr: "sum(rate(lagscope_received_spans_total" + selSelf + "[5m]))", legend: "received"}},
	}, thresholds()))
	b.WithPanel(singleStat(panel{
		title: "Spans rejected", description: "Share of received spans that lagscope rejected over the last 5m. Alert LagscopeRejectingSpans fires above the orange line for 10m.",
		unit: unitPercent, width: 6, height: 4,
		queries: []query{{expr: "sum(rate(lagscope_rejected_spans_total" + selSelf + "[5m]))\n/\nsum(rate(lagscope_received_spans_total" + selSelf + "[5m]))", legend: "rejected"}},
	}, thresholds(step(cfg.RejectRatio, "orange"))))
	b.WithPanel(singleStat(panel{
		title: "Join entries", description: "Entries held by the join (events, projections and trace spans waiting to be matched).",
		unit: unitShort, width: 6, height: 4,
		queries: []query{{expr: "sum(lagscope_join_entries" + selSelf + ")", legend: "entries"}},
	}, thresholds()))
	b.WithPanel(singleStat(panel{
		title: "Join evictions", description: "Join entries evicted per second over the last 5m because a bound was reached (alert LagscopeJoinEvictions).",
		unit: "suffix: /s", width: 6, height: 4,
		queries: []query{{expr: "sum(rate(lagscope_join_evictions_total" + selSelf + "[5m]))", legend: "evictions"}},
	}, thresholds(step(0.000001, "orange"))))

	b.WithRow(row("Spans"))
	b.WithPanel(timeSeries(panel{
		title: "Spans received by transport", description: "Spans decoded from OTLP export requests per second, by transport (grpc, http).",
		unit: unitSpans, width: 12, height: 8,
		queries: []query{{expr: "sum by (transport) (rate(lagscope_received_spans_total" + selSelf + "[$__rate_interval]))", legend: "{{transport}}"}},
	}, nil))
	b.WithPanel(stacked(timeSeries(panel{
		title: "Spans by role", description: "Spans per second by the role lagscope classified them in: command, append, project, query, or ignored.",
		unit: unitSpans, width: 12, height: 8,
		queries: []query{{expr: "sum by (role) (rate(lagscope_spans_total" + selSelf + "[$__rate_interval]))", legend: "{{role}}"}},
	}, nil)))
	b.WithPanel(timeSeries(panel{
		title: "Spans rejected by reason", description: "Decoded spans that were not handed on, per second and reason.",
		unit: unitSpans, width: 12, height: 8,
		queries: []query{{expr: "sum by (reason) (rate(lagscope_rejected_spans_total" + selSelf + "[$__rate_interval]))", legend: "{{reason}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Requests rejected", description: "OTLP export requests answered with an error, per second, by transport and reason. The spans in them are not counted as received.",
		unit: "reqps", width: 12, height: 8,
		queries: []query{{expr: "sum by (transport, reason) (rate(lagscope_rejected_requests_total" + selSelf + "[$__rate_interval]))", legend: "{{transport}} {{reason}}"}},
	}, nil))

	b.WithRow(row("Join and labels"))
	b.WithPanel(timeSeries(panel{
		title: "Join entries", description: "Entries held by the join, per instance. Grows with throughput times retention, and while projections are stalled.",
		unit: unitShort, width: 8, height: 8,
		queries: []query{{expr: "sum by (instance) (lagscope_join_entries" + selSelf + ")", legend: "{{instance}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Join evictions by reason", description: "Join entries evicted per second because a bound was reached, by reason. Evicted events get no lag and may be counted unprojected.",
		unit: "suffix: /s", width: 8, height: 8,
		queries: []query{{expr: "sum by (reason) (rate(lagscope_join_evictions_total" + selSelf + "[$__rate_interval]))", legend: "{{reason}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Label overflow", description: "Label values per second folded into \"other\" because a label reached its bound of distinct values, by label.",
		unit: "suffix: /s", width: 8, height: 8,
		queries: []query{{expr: "sum by (label) (rate(lagscope_label_overflow_total" + selSelf + "[$__rate_interval]))", legend: "{{label}}"}},
	}, nil))

	b.WithRow(row("Hostile and malformed input"))
	b.WithPanel(timeSeries(panel{
		title: "Recovered panics", description: "Panics lagscope recovered from, per 10m: in the analyzer's tick, and while serving a request (the request was refused with 500 / Internal). Any is a bug: alert LagscopeRecoveredPanics.",
		unit: unitShort, width: 6, height: 8,
		queries: []query{
			{expr: "sum by (component) (increase(lagscope_panics_total" + selSelf + "[10m]))", legend: "{{component}}"},
			{expr: "sum by (transport) (increase(lagscope_rejected_requests_total{job=~\"$job\", instance=~\"$instance\", reason=\"panic\"}[10m]))", legend: "request {{transport}}"},
		},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Label values sanitized", description: "Label values per second that were not valid UTF-8 (invalid sequences replaced) or longer than metrics.max_label_length (truncated), by label and reason.",
		unit: "suffix: /s", width: 6, height: 8,
		queries: []query{{expr: "sum by (label, reason) (rate(lagscope_label_values_sanitized_total" + selSelf + "[$__rate_interval]))", legend: "{{label}} {{reason}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Series budget overflow", description: "New label combinations per second folded into the all-\"other\" series because their metric family reached its series budget (metrics.max_series), by family.",
		unit: "suffix: /s", width: 6, height: 8,
		queries: []query{{expr: "sum by (metric) (rate(lagscope_series_overflow_total" + selSelf + "[$__rate_interval]))", legend: "{{metric}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Invalid timestamps", description: "Spans per second whose times could not give a lag (end before start, or further apart than join.max_lag), by reason. Their lag is not observed.",
		unit: "suffix: /s", width: 6, height: 8,
		queries: []query{{expr: "sum by (reason) (rate(lagscope_invalid_timestamps_total" + selSelf + "[$__rate_interval]))", legend: "{{reason}}"}},
	}, nil))

	b.WithRow(row("Process"))
	b.WithPanel(timeSeries(panel{
		title: "CPU", description: "CPU time used per second, per instance (100% is one core).",
		unit: unitPercent, width: 8, height: 8,
		queries: []query{{expr: "rate(process_cpu_seconds_total" + selSelf + "[$__rate_interval])", legend: "{{instance}}"}},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Memory", description: "Resident memory of the process and Go heap in use, per instance.",
		unit: unitBytes, width: 8, height: 8,
		queries: []query{
			{expr: "process_resident_memory_bytes" + selSelf, legend: "resident {{instance}}"},
			{expr: "go_memstats_heap_inuse_bytes" + selSelf, legend: "heap in use {{instance}}"},
		},
	}, nil))
	b.WithPanel(timeSeries(panel{
		title: "Goroutines", description: "Goroutines per instance. A steady climb is a leak.",
		unit: unitShort, width: 8, height: 8,
		queries: []query{{expr: "go_goroutines" + selSelf, legend: "{{instance}}"}},
	}, nil))

	return b.Build()
}
