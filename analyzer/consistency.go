package analyzer

import (
	"cmp"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// consistencySummary fills in out what the metrics of issue 14's
// consistency failures hold: each projection's broken propagation count and
// status, the stale reads by query and the clock skews by pair of services.
func consistencySummary(mfs []*dto.MetricFamily, byName map[string]*ProjectionSummary, out *Summary) {
	for _, m := range family(mfs, "cqrs_trace_propagation_broken_total") {
		if p := byName[label(m, "projection")]; p != nil {
			p.BrokenPropagation += uint64(m.GetCounter().GetValue())
		}
	}
	for _, m := range family(mfs, "cqrs_projection_status") {
		if p := byName[label(m, "projection")]; p != nil && m.GetGauge().GetValue() == 1 {
			p.Status = label(m, "status")
		}
	}
	stale := map[string]*StaleReadSummary{}
	for _, m := range family(mfs, "cqrs_read_staleness_seconds") {
		h := m.GetHistogram()
		if h.GetSampleCount() == 0 {
			continue
		}
		q := label(m, "query")
		stale[q] = &StaleReadSummary{Query: q, Count: h.GetSampleCount(), Staleness: fromSeconds(h.GetSampleSum())}
	}
	for _, s := range stale {
		out.StaleReads = append(out.StaleReads, *s)
	}
	slices.SortFunc(out.StaleReads, func(a, b StaleReadSummary) int { return strings.Compare(a.Query, b.Query) })
	for _, m := range family(mfs, "cqrs_clock_skew_seconds") {
		h := m.GetHistogram()
		if h.GetSampleCount() == 0 {
			continue
		}
		out.ClockSkew = append(out.ClockSkew, ClockSkewSummary{
			From: label(m, "from_service"), To: label(m, "to_service"),
			Count: h.GetSampleCount(), Sum: fromSeconds(h.GetSampleSum()),
		})
	}
	slices.SortFunc(out.ClockSkew, func(a, b ClockSkewSummary) int {
		return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
	})
}
