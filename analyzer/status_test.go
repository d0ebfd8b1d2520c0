package analyzer

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sample is a status sample at second at.
func sample(at int, pending int64, shown, spans uint64) statusSample {
	return statusSample{at: int64(at) * int64(time.Second), pending: pending, shown: shown, spans: spans}
}

// TestJudgeStatus: the status machine over synthetic windows of 10s, one
// rule at a time.
func TestJudgeStatus(t *testing.T) {
	const window = int64(10 * time.Second)
	tests := []struct {
		name    string
		samples []statusSample
		want    ProjectionStatus
	}{
		{"empty", nil, StatusOK},
		{"one sample with pending", []statusSample{sample(0, 5, 0, 0)}, StatusOK},
		{"pending 0 somewhere", []statusSample{sample(0, 5, 0, 0), sample(5, 0, 0, 0), sample(10, 9, 0, 0)}, StatusOK},
		{"too short to judge", []statusSample{sample(0, 5, 0, 0), sample(4, 9, 0, 0)}, StatusOK},
		{"no spans at all", []statusSample{sample(0, 5, 3, 7), sample(5, 6, 3, 7), sample(10, 6, 3, 7)}, StatusStopped},
		{"spans but nothing shown", []statusSample{sample(0, 5, 3, 7), sample(5, 6, 3, 8), sample(10, 6, 3, 9)}, StatusStalled},
		{"pending grows while it shows", []statusSample{sample(0, 5, 3, 7), sample(5, 6, 5, 9), sample(10, 8, 9, 13)}, StatusSlow},
		{"pending flat while it shows", []statusSample{sample(0, 5, 3, 7), sample(5, 5, 5, 9), sample(10, 5, 9, 13)}, StatusOK},
		{"pending decreased once", []statusSample{sample(0, 5, 3, 7), sample(5, 4, 5, 9), sample(10, 8, 9, 13)}, StatusOK},
		{"catching up", []statusSample{sample(0, 9, 3, 7), sample(5, 6, 5, 9), sample(10, 2, 9, 13)}, StatusOK},
		{"stopped beats stalled", []statusSample{sample(0, 5, 3, 7), sample(10, 9, 3, 7)}, StatusStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judgeStatus(tt.samples, window); got != tt.want {
				t.Errorf("judgeStatus = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestStatusWindowSequence feeds a window one tick a second, as the
// Joiner's ticks do, through OK -> SLOW -> STALLED -> OK, and then STOPPED.
func TestStatusWindowSequence(t *testing.T) {
	const window = int64(10 * time.Second)
	var w statusWindow
	var pending int64
	var shown, spans uint64
	at := 0
	// phase runs n ticks, each changing the counts with step, and wants
	// the status after the last one (and, when during is set, after each
	// tick past the first half window of the phase).
	phase := func(name string, n int, step func(), want ProjectionStatus) {
		t.Helper()
		for range n {
			at++
			step()
			w.add(sample(at, pending, shown, spans), window)
		}
		if w.status != want {
			t.Errorf("%s: after %ds status %v, want %v (window %+v)", name, at, w.status, want, w.samples)
		}
	}
	// OK: events come and go, pending is 0 now and then.
	phase("healthy", 12, func() {
		shown += 2
		spans += 2
		pending = int64(at % 2)
	}, StatusOK)
	// SLOW: it shows one event a second while two arrive.
	phase("falling behind", 12, func() {
		shown++
		spans++
		pending++
	}, StatusSlow)
	// STALLED: spans keep coming (redeliveries of a poison event) but
	// nothing new is shown; pending grows.
	phase("poison event", 12, func() {
		spans++
		pending++
	}, StatusStalled)
	// OK again: it catches up and pending reaches 0.
	phase("recovered", 3, func() {
		shown += 20
		spans += 20
		pending = max(0, pending-15)
	}, StatusOK)
	// STOPPED: no span at all while events wait.
	pending = 5
	phase("crashed", 12, func() { pending++ }, StatusStopped)
	if len(w.samples) > maxStatusSamples {
		t.Errorf("window holds %d samples, more than %d", len(w.samples), maxStatusSamples)
	}
}

// TestStatusWindowBounded: ticks far more frequent than window /
// maxStatusSamples do not grow the window past its bound, and the window
// still spans its whole length.
func TestStatusWindowBounded(t *testing.T) {
	const window = int64(10 * time.Second)
	var w statusWindow
	for i := range 10_000 {
		w.add(statusSample{at: int64(i) * int64(5*time.Millisecond), pending: 1, shown: uint64(i), spans: uint64(i)}, window)
	}
	if n := len(w.samples); n > maxStatusSamples || n < 2 {
		t.Fatalf("window holds %d samples, want 2..%d", n, maxStatusSamples)
	}
	if span := w.samples[len(w.samples)-1].at - w.samples[0].at; span < window {
		t.Errorf("window spans %v, want at least %v", time.Duration(span), time.Duration(window))
	}
}

// TestProjectionStatusMetric runs the Joiner: a projection that shows
// nothing while its events wait is stalled, then stopped, on
// cqrs_projection_status, with exactly one status at 1.
func TestProjectionStatusMetric(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Join.Deadline = 10 * time.Second
	cfg.Join.Expected = map[string][]string{"*": {"orders_view"}}
	reg := prometheus.NewRegistry()
	j, err := NewJoiner(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	status := func() map[string]float64 {
		out := map[string]float64{}
		for _, s := range statusNames {
			out[s] = testutil.ToFloat64(j.m.status.WithLabelValues("orders_view", s))
		}
		return out
	}
	want := func(name string, st ProjectionStatus) {
		t.Helper()
		got := status()
		for i, s := range statusNames {
			w := 0.0
			if ProjectionStatus(i) == st {
				w = 1
			}
			if got[s] != w {
				t.Errorf("%s: cqrs_projection_status{status=%q} = %v, want %v (all: %v)", name, s, got[s], w, got)
			}
		}
	}
	j.Tick(t0)
	want("start", StatusOK)
	// An event a second that orders_view never shows; in the first phase
	// it sends spans, redeliveries of an event never appended (orphans).
	appendAt := func(i int, orphan bool) {
		now := t0.Add(time.Duration(i) * time.Second)
		id := fmt.Sprintf("e%d", i)
		facts := []Fact{{Kind: FactAppend, EventID: id, Event: KeyOf(id), EventType: "OrderCreated", Command: "none",
			TraceID: [16]byte{1, byte(i)}, Start: now.UnixNano(), End: now.UnixNano()}}
		if orphan {
			facts = append(facts, Fact{Kind: FactProject, EventID: "never", Event: KeyOf("never"), Projection: "orders_view",
				TraceID: [16]byte{2, byte(i)}, Start: now.UnixNano(), End: now.UnixNano()})
		}
		j.Apply(facts, now)
		j.Tick(now)
	}
	for i := 1; i <= 4; i++ {
		appendAt(i, true)
	}
	want("within the first window (pending was 0 at its start)", StatusOK)
	for i := 5; i <= 14; i++ {
		appendAt(i, true)
	}
	want("spans but nothing shown", StatusStalled)
	for i := 15; i <= 30; i++ {
		appendAt(i, false)
	}
	want("no span for a whole window", StatusStopped)
	if s := j.summary().Projections[0].Status; s != "STOPPED" {
		t.Errorf("Summary status = %q, want stopped", s)
	}
}
