package demo

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// snapshot is what the live summary reads from lagscope's own registry: the
// same series Prometheus scrapes, so the demo shows what a dashboard would.
type snapshot struct {
	at       time.Time
	commands float64
	appended float64
	projs    map[string]*projSnapshot
}

type projSnapshot struct {
	projected, unprojected, duplicated, late float64
	pending, oldest                          float64
	positionLag                              float64             // NaN when no SQL position source
	buckets                                  map[float64]float64 // le -> cumulative count
}

func takeSnapshot(g prometheus.Gatherer, at time.Time) (*snapshot, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	s := &snapshot{at: at, projs: map[string]*projSnapshot{}}
	proj := func(m *dto.Metric) *projSnapshot {
		name := label(m, "projection")
		p, ok := s.projs[name]
		if !ok {
			p = &projSnapshot{buckets: map[float64]float64{}, positionLag: math.NaN()}
			s.projs[name] = p
		}
		return p
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "lagscope_spans_total":
				if label(m, "role") == "command" {
					s.commands += m.GetCounter().GetValue()
				}
			case "cqrs_events_appended_total":
				s.appended += m.GetCounter().GetValue()
			case "cqrs_events_projected_total":
				proj(m).projected += m.GetCounter().GetValue()
			case "cqrs_events_unprojected_total":
				proj(m).unprojected += m.GetCounter().GetValue()
			case "cqrs_events_duplicated_total":
				proj(m).duplicated += m.GetCounter().GetValue()
			case "cqrs_events_late_total":
				proj(m).late += m.GetCounter().GetValue()
			case "cqrs_projection_pending_events":
				proj(m).pending = m.GetGauge().GetValue()
			case "cqrs_projection_oldest_pending_seconds":
				proj(m).oldest = m.GetGauge().GetValue()
			case "cqrs_projection_position_lag":
				proj(m).positionLag = m.GetGauge().GetValue()
			case "cqrs_command_to_projection_lag_seconds":
				p := proj(m)
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					p.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
				p.buckets[math.Inf(1)] += float64(h.GetSampleCount())
			}
		}
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile is PromQL's histogram_quantile over the increase of cumulative
// buckets between two snapshots (old may be nil: since start).
func quantile(q float64, cur, old map[float64]float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for le, n := range cur {
		if old != nil {
			n -= old[le]
		}
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].n
	prevLE, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLE // the highest finite bound, as Prometheus does
			}
			if b.n == prevN {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevN)/(b.n-prevN)
		}
		prevLE, prevN = b.le, b.n
	}
	return math.NaN()
}

// liveView renders the demo's summary from successive snapshots.
type liveView struct {
	threshold time.Duration
	window    time.Duration
	history   []*snapshot
	start     time.Time
}

// add records a snapshot and drops those older than the window.
func (v *liveView) add(s *snapshot) {
	if v.start.IsZero() {
		v.start = s.at
	}
	v.history = append(v.history, s)
	for len(v.history) > 2 && s.at.Sub(v.history[1].at) >= v.window {
		v.history = v.history[1:]
	}
}

// projRow is one projection's line of the summary.
type projRow struct {
	name                            string
	projected, pending, unprojected float64
	duplicated, late                float64
	p50, p99, oldest, rate          float64
	positionLag                     float64
	firing                          bool
}

func (v *liveView) rows() (cmdRate, appendRate float64, rows []projRow) {
	if len(v.history) == 0 {
		return 0, 0, nil
	}
	cur := v.history[len(v.history)-1]
	old := v.history[0]
	dt := cur.at.Sub(old.at).Seconds()
	if dt > 0 {
		cmdRate = (cur.commands - old.commands) / dt
		appendRate = (cur.appended - old.appended) / dt
	}
	for name, p := range cur.projs {
		if name == "" {
			continue
		}
		r := projRow{name: name, projected: p.projected, pending: p.pending, unprojected: p.unprojected,
			duplicated: p.duplicated, late: p.late, oldest: p.oldest, positionLag: p.positionLag}
		var oldBuckets map[float64]float64
		oldProjected := 0.0
		if op, ok := old.projs[name]; ok && old != cur {
			oldBuckets, oldProjected = op.buckets, op.projected
		}
		r.p50 = quantile(0.5, p.buckets, oldBuckets)
		r.p99 = quantile(0.99, p.buckets, oldBuckets)
		if dt > 0 {
			r.rate = (p.projected - oldProjected) / dt
		}
		th := v.threshold.Seconds()
		r.firing = (!math.IsNaN(r.p99) && r.p99 > th) || r.oldest > th
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	return cmdRate, appendRate, rows
}

// render writes the summary table.
func (v *liveView) render(w io.Writer, header string) {
	cmdRate, appendRate, rows := v.rows()
	cur := v.history[len(v.history)-1]
	fmt.Fprintf(w, "%s  running %s\n", header, cur.at.Sub(v.start).Round(time.Second))
	rate := func(r float64) string {
		if len(v.history) < 2 {
			return "-" // a rate needs two snapshots
		}
		return fmt.Sprintf("%.1f", r)
	}
	fmt.Fprintf(w, "commands/s %s   events appended %.0f (%s/s)   lag window %s, alert threshold %s\n\n",
		rate(cmdRate), cur.appended, rate(appendRate), v.window, v.threshold)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tPROJECTED\tPER_S\tPENDING\tUNPROJECTED\tDUPLICATED\tLATE\tLAG_P50\tLAG_P99\tOLDEST_PENDING\tBEHIND_HEAD\tLAG ALERT")
	for _, r := range rows {
		alert := "ok"
		if r.firing {
			alert = "FIRING"
		}
		behind := "-"
		if !math.IsNaN(r.positionLag) {
			behind = fmt.Sprintf("%.0f", r.positionLag)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\n", r.name, r.projected, r.rate, r.pending,
			r.unprojected, r.duplicated, r.late, secs(r.p50), secs(r.p99), secs(r.oldest), behind, alert)
	}
	if len(rows) == 0 {
		fmt.Fprintln(tw, "(no projection spans yet)")
	}
	tw.Flush()
}

func secs(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}

// countLines counts the lines of rendered output, to redraw it in place.
func countLines(s string) int { return strings.Count(s, "\n") }
