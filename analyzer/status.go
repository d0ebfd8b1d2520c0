package analyzer

import "github.com/prometheus/client_golang/prometheus"

// Projection status without thresholds (issue 14), judged the way Burrow
// judges a Kafka consumer group's partitions: no "lag above N" to tune, but
// rules over a sliding window of samples, here one per tick of (pending
// events, events shown, projection spans received, time) per projection.
// Burrow's rules, as its evaluator states them (linkedin/Burrow,
// core/internal/evaluator/caching.go, calculatePartitionStatus, and the
// wiki page "Consumer Lag Evaluation Rules"):
//
//	Rule 1: if the lag is zero at any point of the window, the status is OK.
//	Rule 2: if the committed offset ever goes back, REWIND (error).
//	Rule 3: if the time since the last commit is more than the window's
//	        span (last - first commit), STOP (error).
//	Rule 4: if the committed offsets do not change while lag is not zero,
//	        STALL (error).
//	Rule 5: if the offsets advance but the lag never decreases, WARNING.
//	Otherwise OK; the checks run worst first and the first match wins.
//
// Here, with pending (cqrs_projection_pending_events) for the lag, events
// shown for the offset and projection spans for commits:
//
//	ok:      pending was 0 at some sample of the window (rule 1), or the
//	         window is not yet half a window long (too little to judge).
//	stopped: no projection span from it in the whole window (rule 3: it is
//	         not running, or its spans do not reach lagscope).
//	stalled: spans arrive but none showed a new event (rule 4: redeliveries
//	         of an event it cannot apply, or spans of events never appended).
//	slow:    it shows events but pending never decreased from one sample to
//	         the next and ended higher than it began (rule 5; Burrow also
//	         warns on flat lag, which a busy system shows with events in
//	         flight, so here it must grow).
//	ok:      otherwise.
//
// Rule 2 has no counterpart: counts of events shown never go back. The
// window is join.deadline long, the time a projection is given to show an
// event: a projection silent for that long while events wait for it is
// stopped by the same measure that makes them unprojected.

// ProjectionStatus is a projection's status.
type ProjectionStatus uint8

// The statuses, worst last.
const (
	StatusOK ProjectionStatus = iota
	StatusSlow
	StatusStalled
	StatusStopped
)

// statusNames are the values of cqrs_projection_status's status label, as
// issue 14 (and Burrow) name them: OK, SLOW, STALLED, STOPPED. Upper-case
// unlike lagscope's other label values (result="stale"), because that is
// the contract users' alerts and dashboards are written against.
var statusNames = [...]string{"OK", "SLOW", "STALLED", "STOPPED"}

// String returns the status's label value.
func (s ProjectionStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "UNKNOWN"
}

// Display returns the status as people read it: the label value.
func (s ProjectionStatus) Display() string { return s.String() }

// statusSample is one tick's view of a projection.
type statusSample struct {
	at      int64 // Unix ns
	pending int64
	shown   uint64 // events shown for the first time, cumulative
	spans   uint64 // projection spans received, cumulative
}

// maxStatusSamples bounds a window: a tick closer than window/
// statusSteps to the sample before the newest replaces the newest instead
// of adding one, so that any two samples two apart are a step apart and a
// window holds at most 2*statusSteps+1 of them, its oldest before it.
const (
	statusSteps      = 32
	maxStatusSamples = 2*statusSteps + 2
)

// judgeStatus is the status machine: the status of a projection over
// samples, oldest first, of a window of length window (ns). It is a pure
// function of its arguments.
func judgeStatus(samples []statusSample, window int64) ProjectionStatus {
	n := len(samples)
	if n == 0 {
		return StatusOK
	}
	for _, s := range samples {
		if s.pending <= 0 {
			return StatusOK // rule 1
		}
	}
	first, last := samples[0], samples[n-1]
	if n < 2 || last.at-first.at < window/2 {
		return StatusOK
	}
	switch {
	case last.spans == first.spans:
		return StatusStopped // rule 3
	case last.shown == first.shown:
		return StatusStalled // rule 4
	}
	for i := 1; i < n; i++ {
		if samples[i].pending < samples[i-1].pending {
			return StatusOK
		}
	}
	if last.pending > first.pending {
		return StatusSlow // rule 5
	}
	return StatusOK
}

// statusWindow is the sliding window of one projection.
type statusWindow struct {
	samples []statusSample
	status  ProjectionStatus
}

// add adds s to the window of length window, drops the samples older than
// the window (keeping the newest one before it, so that the window covers
// its whole length once it can) and returns the status judged over it.
func (w *statusWindow) add(s statusSample, window int64) ProjectionStatus {
	if n := len(w.samples); n >= 2 && s.at-w.samples[n-2].at < window/statusSteps {
		w.samples[n-1] = s // too close to the previous: replace the newest
	} else {
		w.samples = append(w.samples, s)
	}
	drop := 0
	for drop+1 < len(w.samples) && w.samples[drop+1].at <= s.at-window {
		drop++
	}
	if drop > 0 {
		w.samples = append(w.samples[:0], w.samples[drop:]...)
	}
	if len(w.samples) > maxStatusSamples {
		w.samples = append(w.samples[:0], w.samples[len(w.samples)-maxStatusSamples:]...)
	}
	w.status = judgeStatus(w.samples, window)
	return w.status
}

// statusCounts are a Joiner shard's counts that the status machine reads:
// per projection, events shown for the first time and projection spans
// received (orphans included).
type statusCounts struct {
	shown, spans [maxProjections]uint64
}

// addTo adds the first np projections' counts to shown and spans.
func (c *statusCounts) addTo(shown, spans *[maxProjections]uint64, np int) {
	for p := range np {
		shown[p] += c.shown[p]
		spans[p] += c.spans[p]
	}
}

// statusGauges returns the cqrs_projection_status series of projection
// name, set to ok.
func statusGauges(vec *prometheus.GaugeVec, name string) [len(statusNames)]prometheus.Gauge {
	var g [len(statusNames)]prometheus.Gauge
	for i, s := range statusNames {
		g[i] = vec.WithLabelValues(name, s)
	}
	g[StatusOK].Set(1)
	return g
}

// judge adds a sample of every projection to its window and sets its
// status gauges; the caller serialises calls (refreshGauges').
func (sh *joinShared) judge(np int, pending *[maxProjections]int64, shown, spans *[maxProjections]uint64, now int64) {
	for p := range np {
		st := sh.windows[p].add(statusSample{at: now, pending: pending[p], shown: shown[p], spans: spans[p]}, sh.statusWindow)
		for i, g := range sh.projSeries[p].status {
			if g == nil {
				continue
			}
			v := 0.0
			if ProjectionStatus(i) == st {
				v = 1
			}
			g.Set(v)
		}
	}
}
