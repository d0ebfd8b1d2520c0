package dashboards

import (
	"sort"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Query is one PromQL expression of a dashboard: a panel target or a
// template variable's query.
type Query struct {
	// Dashboard is the file name of the dashboard, e.g. "cqrs-consistency.json".
	Dashboard string
	// Panel is the panel title; for a variable, "variable " and its name.
	Panel string
	// RefID is the target's refId ("A", "B", ...); empty for a variable.
	RefID string
	// Expr is the expression as stored in the dashboard, with Grafana
	// variables such as $job and $__rate_interval. For a variable it is the
	// label_values(...) call, which is Grafana syntax, not PromQL.
	Expr string
	// Variable is true for a template variable's label_values query.
	Variable bool
	// Instant is true for an instant query, false for a range query.
	Instant bool
	// Exemplar is true when the target asks for exemplars.
	Exemplar bool
}

// Queries lists every PromQL expression of every dashboard of All, in
// dashboard and panel order, so that a test can evaluate them against a
// Prometheus after Substitute.
func Queries() ([]Query, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, d := range all {
		out = append(out, modelQueries(d.FileName, d.Model)...)
	}
	return out, nil
}

func modelQueries(file string, m dashboard.Dashboard) []Query {
	var out []Query
	for _, v := range m.Templating.List {
		if v.Type != dashboard.VariableTypeQuery || v.Query == nil || v.Query.String == nil {
			continue
		}
		out = append(out, Query{Dashboard: file, Panel: "variable " + v.Name, Expr: *v.Query.String, Variable: true, Instant: true})
	}
	var panels []dashboard.Panel
	for _, p := range m.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, *p.Panel)
		case p.RowPanel != nil:
			panels = append(panels, p.RowPanel.Panels...)
		}
	}
	for _, p := range panels {
		for _, t := range p.Targets {
			// Built dashboards hold values, dashboards read from JSON pointers.
			var q *prometheus.Dataquery
			switch v := t.(type) {
			case prometheus.Dataquery:
				q = &v
			case *prometheus.Dataquery:
				q = v
			default:
				continue
			}
			out = append(out, Query{
				Dashboard: file,
				Panel:     deref(p.Title),
				RefID:     deref(q.RefId),
				Expr:      q.Expr,
				Instant:   q.Instant != nil && *q.Instant,
				Exemplar:  q.Exemplar != nil && *q.Exemplar,
			})
		}
	}
	return out
}

// SampleVars returns values for the dashboards' variables that select
// everything, as Grafana's "All" does: regular expressions for $job,
// $instance, $projection, $event_type and $group, and durations for Grafana's
// interval variables as on a one-hour dashboard scraped every 15s.
func SampleVars() map[string]string {
	return map[string]string{
		"job":             ".*",
		"instance":        ".*",
		"projection":      ".*",
		"event_type":      ".*",
		"group":           ".*",
		"datasource":      DatasourceUID,
		"__rate_interval": "1m",
		"__interval":      "15s",
		"__range":         "1h",
	}
}

// Substitute replaces Grafana variables in expr ($name, ${name} and
// [[name]]) with their values in vars, longest name first so that $__range
// is not read as $__r. Variables without a value are left as they are.
func Substitute(expr string, vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if len(names[i]) != len(names[j]) {
			return len(names[i]) > len(names[j])
		}
		return names[i] < names[j]
	})
	pairs := make([]string, 0, 6*len(names))
	for _, n := range names {
		v := vars[n]
		pairs = append(pairs, "${"+n+"}", v, "[["+n+"]]", v, "$"+n, v)
	}
	// strings.Replacer picks the first matching old string at each position,
	// in argument order: the longest names come first.
	return strings.NewReplacer(pairs...).Replace(expr)
}
