package demo

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lagscope/lagscope/analyzer"
)

// snapshot is what the live summary reads from lagscope's own registry: the
// same series Prometheus scrapes, so the demo shows what a dashboard would.
type snapshot struct {
	at       time.Time
	commands float64
	appended float64
	head     float64 // NaN when no SQL position source
	// staleReads is cqrs_stale_reads_total summed: the reads after write
	// that lagscope saw return an older version than one appended.
	staleReads float64
	projs      map[string]*projSnapshot
}

type projSnapshot struct {
	projected, unprojected, duplicated, late float64
	pending, oldest                          float64
	positionLag                              float64             // NaN when no SQL position source
	buckets                                  map[float64]float64 // le -> cumulative count
	native                                   analyzer.NativeBuckets
	status                                   string // cqrs_projection_status at 1
}

func takeSnapshot(g prometheus.Gatherer, at time.Time) (*snapshot, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	s := &snapshot{at: at, head: math.NaN(), projs: map[string]*projSnapshot{}}
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
			case "cqrs_stale_reads_total":
				s.staleReads += m.GetCounter().GetValue()
			case "cqrs_projection_status":
				if m.GetGauge().GetValue() == 1 {
					proj(m).status = label(m, "status")
				}
			case "cqrs_store_head_position":
				s.head = m.GetGauge().GetValue()
			case "cqrs_projection_position_lag":
				proj(m).positionLag = m.GetGauge().GetValue()
			case "cqrs_command_to_projection_lag_seconds":
				p := proj(m)
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					p.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
				p.buckets[math.Inf(1)] += float64(h.GetSampleCount())
				p.native.Add(h)
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

// lagQuantiles returns the p50 and p99 of the lags between two snapshots
// of a projection: from the native buckets, within 5 % (the classic ones,
// 66 % off with a 6s lag, only for a histogram without native buckets).
func lagQuantiles(cur, old *projSnapshot) (p50, p99 float64) {
	if len(cur.native.Counts) > 0 || cur.native.Zero > 0 {
		n := cur.native.Since(old.native)
		return n.Quantile(0.5), n.Quantile(0.99)
	}
	return quantile(0.5, cur.buckets, old.buckets), quantile(0.99, cur.buckets, old.buckets)
}

// liveView renders the demo's summary from successive snapshots.
type liveView struct {
	threshold time.Duration
	window    time.Duration
	history   []*snapshot
	// start is when the demo started: the clock counts from it. Default:
	// the first snapshot.
	start time.Time
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

// Names of the alert conditions the summary evaluates, each that of an
// alert in lagscope's rule file (package alerts).
const (
	condLag             = "lag"              // CQRSProjectionLagHigh
	condUnprojected     = "unprojected"      // CQRSEventsUnprojected
	condStalled         = "stalled"          // CQRSProjectionStalled
	condPositionStalled = "position-stalled" // CQRSProjectionPositionStalled
)

// condition is an alert condition that holds for a projection, with what
// makes it hold.
type condition struct{ name, why string }

// projRow is one projection's line of the summary.
type projRow struct {
	name                            string
	projected, pending, unprojected float64
	duplicated, late                float64
	p50, p99, oldest, rate          float64
	positionLag                     float64
	firing                          []condition
	status                          string // OK, SLOW, STALLED, STOPPED; "-" before the first judgement
}

// rows returns the rates over the window and a row per projection, by name.
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
			duplicated: p.duplicated, late: p.late, oldest: p.oldest, positionLag: p.positionLag, status: displayStatus(p.status)}
		op := &projSnapshot{positionLag: math.NaN()} // since start
		if o, ok := old.projs[name]; ok && old != cur {
			op = o
		}
		r.p50, r.p99 = lagQuantiles(p, op)
		if dt > 0 {
			r.rate = (p.projected - op.projected) / dt
		}
		r.firing = v.conditions(r, cur, old, p, op)
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	return cmdRate, appendRate, rows
}

// conditions returns the alert conditions that hold for r over the window
// from old to cur (p and op: its projection's snapshots), as the rules
// evaluate them over 5m but without their `for:` wait. The two stall
// conditions need a full window: at the start nothing has been projected
// yet, and that is not a stall.
func (v *liveView) conditions(r projRow, cur, old *snapshot, p, op *projSnapshot) []condition {
	var cs []condition
	span := cur.at.Sub(old.at)
	full := old != cur && span >= v.window
	th := v.threshold.Seconds()
	if (!math.IsNaN(r.p99) && r.p99 > th) || r.oldest > th {
		why := fmt.Sprintf("oldest pending %s, threshold %s", secs(r.oldest), v.threshold)
		if !math.IsNaN(r.p99) {
			why = "p99 " + secs(r.p99) + ", " + why
		}
		cs = append(cs, condition{condLag, why})
	}
	if n := p.unprojected - op.unprojected; n > 0 {
		cs = append(cs, condition{condUnprojected, fmt.Sprintf("%.0f in %s", n, span.Round(time.Second))})
	}
	if appended := cur.appended - old.appended; full && appended > 0 && p.projected == op.projected {
		cs = append(cs, condition{condStalled, fmt.Sprintf("none projected in %s, %.0f appended", span.Round(time.Second), appended)})
	}
	dHead := cur.head - old.head
	if full && p.positionLag > 0 && dHead > 0 && p.positionLag-op.positionLag >= dHead {
		cs = append(cs, condition{condPositionStalled, fmt.Sprintf("checkpoint %.0f behind a head that moved %.0f", p.positionLag, dHead)})
	}
	return cs
}

// Columns of the summary: one table on a wide terminal, two (the counts,
// then the lag) on a narrow one.
var (
	countColumns = []string{"PROJECTION", "PROJECTED", "PER_S", "PENDING", "UNPROJECTED", "DUPLICATED", "LATE"}
	lagColumns   = []string{"PROJECTION", "LAG_P50", "LAG_P99", "OLDEST_PENDING", "BEHIND_HEAD", "ALERT", "STATUS"}
)

// displayStatus is a cqrs_projection_status label value as the demo shows
// it: upper-case, as Burrow and issue 14 write statuses.
func displayStatus(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ToUpper(s)
}

// legend explains the columns, for a terminal width columns wide (0: no
// limit).
func legend(width int) []string {
	lines := pack(width, " · ", "",
		"PENDING: not shown yet",
		"UNPROJECTED: not shown within the join deadline",
		"OLDEST_PENDING: age of the oldest pending event",
		"BEHIND_HEAD: events from the checkpoint to the store's head",
		"LAG_*, PER_S: over the lag window; LAG_* within 5 % (native buckets)")
	lines = append(lines, pack(width, "", "", "ALERT: FIRING while the condition of an alert of the rules holds "+
		"(without its for: wait): lag (CQRSProjectionLagHigh: p99 or oldest pending above the threshold), "+
		"unprojected (CQRSEventsUnprojected), stalled (CQRSProjectionStalled), "+
		"position-stalled (CQRSProjectionPositionStalled); "+
		"CQRSProjectionDrift and lagscope's own alerts are not evaluated.")...)
	return append(lines, pack(width, "", "", "STATUS: cqrs_projection_status, judged without a threshold over one join deadline "+
		"as Burrow judges consumers: OK, SLOW (pending grows while it projects), STALLED (spans but nothing new shown), "+
		"STOPPED (no spans while events wait).")...)
}

// frame renders the summary table, each line at most width display cells
// (0: no limit) so that a terminal does not wrap it.
func (v *liveView) frame(header string, width int) []string {
	cmdRate, appendRate, rows := v.rows()
	cur := v.history[len(v.history)-1]
	rate := func(r float64) string {
		if len(v.history) < 2 {
			return "-" // a rate needs two snapshots
		}
		return fmt.Sprintf("%.1f", r)
	}
	lines := []string{fmt.Sprintf("%s  running %s", header, cur.at.Sub(v.start).Round(time.Second))}
	lines = append(lines, pack(width, "   ", "",
		"commands/s "+rate(cmdRate),
		fmt.Sprintf("events appended %.0f (%s/s)", cur.appended, rate(appendRate)),
		fmt.Sprintf("stale reads seen %.0f", cur.staleReads),
		fmt.Sprintf("lag window %s, alert threshold %s", v.window, v.threshold))...)
	lines = append(lines, "")
	counts := [][]string{countColumns}
	lags := [][]string{lagColumns}
	for _, r := range rows {
		counts = append(counts, []string{r.name, num(r.projected), fmt.Sprintf("%.1f", r.rate),
			num(r.pending), num(r.unprojected), num(r.duplicated), num(r.late)})
		alert := "ok"
		if len(r.firing) > 0 {
			alert = "FIRING"
		}
		lags = append(lags, []string{r.name, secs(r.p50), secs(r.p99), secs(r.oldest), num(r.positionLag), alert, r.status})
	}
	whole := make([][]string, len(counts))
	for i := range counts {
		whole[i] = append(slices.Clone(counts[i]), lags[i][1:]...)
	}
	switch t := table(whole); {
	case len(rows) == 0:
		lines = append(lines, table(counts[:1])[0], "(no projection spans yet)")
	case width <= 0 || maxWidth(t) <= width:
		lines = append(lines, t...)
	default:
		lines = append(lines, table(counts)...)
		lines = append(lines, "")
		lines = append(lines, table(lags)...)
	}
	for _, r := range rows {
		if len(r.firing) == 0 {
			continue
		}
		items := make([]string, len(r.firing))
		for i, c := range r.firing {
			items[i] = c.name + " (" + c.why + ")"
		}
		items[0] = "FIRING " + r.name + ": " + items[0]
		lines = append(lines, pack(width, "; ", "  ", items...)...)
	}
	return lines
}

// plain renders the summary as lines of key=value pairs, one for the
// totals and one per projection, each stamped: the output for a log or a
// pipe, which a redrawn table would fill with escape sequences.
func (v *liveView) plain(stamp string) []string {
	cmdRate, appendRate, rows := v.rows()
	cur := v.history[len(v.history)-1]
	lines := []string{fmt.Sprintf("%s running=%s commands_per_s=%.1f appended=%.0f appended_per_s=%.1f stale_reads=%.0f",
		stamp, cur.at.Sub(v.start).Round(time.Second), cmdRate, cur.appended, appendRate, cur.staleReads)}
	for _, r := range rows {
		alert := "ok"
		if len(r.firing) > 0 {
			names := make([]string, len(r.firing))
			for i, c := range r.firing {
				names[i] = c.name
			}
			alert = strings.Join(names, ",")
		}
		lines = append(lines, fmt.Sprintf("%s projection=%s projected=%s per_s=%.1f pending=%s unprojected=%s duplicated=%s late=%s lag_p50=%s lag_p99=%s oldest_pending=%s behind_head=%s alert=%s status=%s",
			stamp, r.name, num(r.projected), r.rate, num(r.pending), num(r.unprojected), num(r.duplicated), num(r.late),
			secs(r.p50), secs(r.p99), secs(r.oldest), num(r.positionLag), alert, r.status))
	}
	return lines
}

// table aligns cells in columns two spaces apart.
func table(rows [][]string) []string {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], cells(c))
		}
	}
	lines := make([]string, len(rows))
	for j, r := range rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-cells(c)+2))
			}
		}
		lines[j] = b.String()
	}
	return lines
}

// pack joins items with sep into lines at most width cells wide (0: one
// line), an item going to the next line, after indent, when it does not
// fit; an item wider than a line is wrapped at spaces.
func pack(width int, sep, indent string, items ...string) []string {
	if width <= 0 {
		return []string{strings.Join(items, sep)}
	}
	if cells(indent) >= width/2 {
		indent = ""
	}
	var lines []string
	line := ""
	for _, it := range items {
		switch {
		case line == "" && len(lines) == 0:
			line = it
		case line == "":
			line = indent + it
		case cells(line)+cells(sep)+cells(it) <= width:
			line += sep + it
		default:
			lines = append(lines, line)
			line = indent + it
		}
		for cells(line) > width {
			rs := []rune(line)
			cut := strings.LastIndexByte(string(rs[:width+1]), ' ')
			if cut <= len(indent) {
				cut = len(string(rs[:width])) // no space to break at
			}
			lines = append(lines, strings.TrimRight(line[:cut], " "))
			line = indent + strings.TrimLeft(line[cut:], " ")
		}
	}
	if strings.TrimSpace(line) != "" {
		lines = append(lines, line)
	}
	return lines
}

// fit cuts every line to width cells, and the lines to height (0: no
// limit), so that a redraw can count the rows it printed.
func fit(lines []string, width, height int) []string {
	if height > 0 && len(lines) > height {
		lines = append(lines[:height-1:height-1], "… (a taller terminal shows the rest)")
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if width > 0 && cells(l) > width {
			l = string([]rune(l)[:width-1]) + "…"
		}
		out[i] = l
	}
	return out
}

// cells is the width of s on a terminal: one cell a rune, as every
// character the summary writes is (projection names are identifiers).
func cells(s string) int { return utf8.RuneCountInString(s) }

func maxWidth(lines []string) int {
	w := 0
	for _, l := range lines {
		w = max(w, cells(l))
	}
	return w
}

func num(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	return fmt.Sprintf("%.0f", f)
}

func secs(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
