package analyzer

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// The regression tests of issue 10: one hostile request must not crash the
// analyzer, leave a lock held, blind /metrics or hold memory past the bounds.

// badUTF8 is a label value no Prometheus exposition may carry as it is.
const badUTF8 = "bad\xff\xfe\xc3name"

// firstSpan returns the first span of a one-span request.
func firstSpan(td ptrace.Traces) ptrace.Span {
	return td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
}

// normalTrace is a well-formed command, append and projection of event id,
// for checking that the analyzer still works.
func normalTrace(tr int, id string) []ptrace.Traces {
	return []ptrace.Traces{
		traces("cmd", command(tr, 1, "Ok", 0, 50*time.Millisecond), appendSpan(tr, 2, 1, id, "OkType", 10*time.Millisecond, 20*time.Millisecond)),
		traces("proj", project(tr, 3, 2, id, "OkType", "ok_view", 30*time.Millisecond, 100*time.Millisecond)),
	}
}

// TestHostileLabelValues: invalid UTF-8 and huge values in every string that
// becomes a label are sanitized and counted; the exposition stays clean
// and a normal request afterwards is analysed as usual.
func TestHostileLabelValues(t *testing.T) {
	huge := strings.Repeat("h", 10<<20)
	consumer := func(group string) spanSpec {
		return spanSpec{trace: 1, span: 3, parent: 2, kind: ptrace.SpanKindConsumer, start: 30 * time.Millisecond, end: 100 * time.Millisecond,
			attrs: map[string]any{"messaging.system": "kafka", "messaging.operation.type": "process", "messaging.message.id": "e1",
				"messaging.consumer.group.name": group}}
	}
	noProjection := spanSpec{trace: 1, span: 3, parent: 2, kind: ptrace.SpanKindConsumer, start: 30 * time.Millisecond, end: 100 * time.Millisecond,
		attrs: map[string]any{"cqrs.operation": "project", "cqrs.event.id": "e1"}}
	withAttr := func(s spanSpec, k string, v any) spanSpec {
		attrs := map[string]any{}
		for k, v := range s.attrs {
			attrs[k] = v
		}
		attrs[k] = v
		s.attrs = attrs
		return s
	}
	cmd := command(1, 1, "C", 0, 50*time.Millisecond)
	app := appendSpan(1, 2, 1, "e1", "T", 10*time.Millisecond, 20*time.Millisecond)
	tests := []struct {
		name          string
		requests      []ptrace.Traces
		label, reason string
	}{
		{"cqrs.projection", []ptrace.Traces{traces("cmd", cmd, app), traces("proj", project(1, 3, 2, "e1", "T", badUTF8, 30*time.Millisecond, 100*time.Millisecond))},
			"projection", reasonInvalidUTF8},
		{"consumer group", []ptrace.Traces{traces("cmd", cmd, app), traces("proj", consumer(badUTF8))}, "projection", reasonInvalidUTF8},
		{"service.name", []ptrace.Traces{traces("cmd", cmd, app), traces(badUTF8, noProjection)}, "projection", reasonInvalidUTF8},
		{"event type", []ptrace.Traces{traces("cmd", cmd, withAttr(app, "cqrs.event.type", badUTF8))}, "event_type", reasonInvalidUTF8},
		{"command", []ptrace.Traces{traces("cmd", withAttr(cmd, "cqrs.command.name", badUTF8), app)}, "command", reasonInvalidUTF8},
		{"aggregate type", []ptrace.Traces{traces("cmd", cmd, withAttr(app, "cqrs.aggregate.type", badUTF8))}, "aggregate_type", reasonInvalidUTF8},
		{"query", []ptrace.Traces{traces("q", spanSpec{trace: 1, span: 1, parent: -1, attrs: map[string]any{"cqrs.query.name": badUTF8}})}, "query", reasonInvalidUTF8},
		{"10 MiB event type", []ptrace.Traces{traces("cmd", cmd, withAttr(app, "cqrs.event.type", huge))}, "event_type", reasonTruncated},
		{"10 MiB projection", []ptrace.Traces{traces("cmd", cmd, app), traces("proj", project(1, 3, 2, "e1", "T", huge, 30*time.Millisecond, 100*time.Millisecond))},
			"projection", reasonTruncated},
		{"10 MiB command of invalid UTF-8", []ptrace.Traces{traces("cmd", withAttr(cmd, "cqrs.command.name", strings.Repeat("\xff", 10<<20)), app)}, "command", reasonTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, reg, clk := newTestAnalyzer(t, nil)
			consume(t, a, tt.requests...)
			a.Tick(clk.t.Add(time.Second))
			checkExposition(t, reg, a.cfg.Metrics.MaxLabelLength)
			if got := counter(t, reg, "lagscope_label_values_sanitized_total", "label", tt.label, "reason", tt.reason); got < 1 {
				t.Errorf("sanitized{label=%s,reason=%s} = %v, want at least 1", tt.label, tt.reason, got)
			}
			consume(t, a, normalTrace(2, "ok-1")...)
			a.Tick(clk.t.Add(2 * time.Second))
			if got := counter(t, reg, "cqrs_command_to_projection_lag_seconds", "projection", "ok_view", "command", "Ok"); got != 1 {
				t.Errorf("lag observations of a normal request afterwards = %v, want 1", got)
			}
			checkExposition(t, reg, a.cfg.Metrics.MaxLabelLength)
		})
	}
}

// TestSanitizeLabel pins what a label value becomes.
func TestSanitizeLabel(t *testing.T) {
	const maxLen = 16 // below minLabelLength, for short cases
	tests := []struct {
		in                 string
		want               string
		invalid, truncated bool
	}{
		{"OrderPlaced", "OrderPlaced", false, false},
		{strings.Repeat("a", 16), strings.Repeat("a", 16), false, false},
		{strings.Repeat("a", 17), strings.Repeat("a", 13) + "…", false, true},
		{"bad\xffvalue", "bad\uFFFDvalue", true, false},
		{"ééééééééé", "éééééé…", false, true},               // 18 bytes: cut after 6 runes (12 bytes), not inside one
		{strings.Repeat("\xff", 16), "\uFFFD", true, false}, // one run of bad bytes: one replacement
		{"\xffa\xffa\xffa\xffa\xffa\xff", "\uFFFDa\uFFFDa\uFFFDa…", true, true},
		{strings.Repeat("x", 10<<20) + "\xff", strings.Repeat("x", 13) + "…", false, true}, // only what is kept is read
	}
	for _, tt := range tests {
		got, invalid, truncated := sanitizeLabel(tt.in, maxLen)
		if got != tt.want || invalid != tt.invalid || truncated != tt.truncated {
			t.Errorf("sanitizeLabel(%.40q) = %q, %v, %v; want %q, %v, %v", tt.in, got, invalid, truncated, tt.want, tt.invalid, tt.truncated)
		}
		if len(got) > maxLen {
			t.Errorf("sanitizeLabel(%.40q) = %q: %d bytes, more than %d", tt.in, got, len(got), maxLen)
		}
		// What a parked fact keeps of the value gives the same label.
		if cut, _, _ := sanitizeLabel(cutLabel(tt.in, maxLen), maxLen); cut != got {
			t.Errorf("sanitizeLabel(cutLabel(%.40q)) = %q, want %q", tt.in, cut, got)
		}
	}
}

// TestLabelLookupDoesNotAllocate: an interned value is found without an
// allocation; so is "other" for a valid value past the limit.
func TestLabelLookupDoesNotAllocate(t *testing.T) {
	s := newLabelSet("event_type", 2, 128, nil)
	s.id("A")
	s.id("B")
	s.id("C") // adds "other"
	for _, v := range []string{"A", "B", "C", "D"} {
		if n := testing.AllocsPerRun(100, func() { s.id(v) }); n != 0 {
			t.Errorf("id(%q): %v allocations, want 0", v, n)
		}
	}
}

// TestCommandOverflowCounted: every command span whose name is past the
// label limit counts an overflow, not only the first.
func TestCommandOverflowCounted(t *testing.T) {
	a, reg, _ := newTestAnalyzer(t, func(c *Config) { c.Metrics.MaxLabelValues = 2 })
	for i := range 10 {
		consume(t, a, traces("cmd", command(i, 1, fmt.Sprintf("C%d", i), 0, time.Millisecond), appendSpan(i, 2, 1, fmt.Sprintf("e%d", i), "T", 0, time.Millisecond)))
	}
	if got := counter(t, reg, "lagscope_label_overflow_total", "label", "command"); got != 8 {
		t.Errorf("overflow{label=command} = %v, want 8", got)
	}
	checkExposition(t, reg, a.cfg.Metrics.MaxLabelLength)
}

// TestSeriesBudget: past a family's budget new label combinations go to the
// series whose labels are all "other", each counted; nothing is lost.
func TestSeriesBudget(t *testing.T) {
	a, reg, clk := newTestAnalyzer(t, func(c *Config) { c.Metrics.MaxSeries = 5; c.Metrics.MaxHistogramSeries = 3 })
	const n = 20
	for i := range n {
		typ := fmt.Sprintf("T%d", i)
		consume(t, a,
			traces("cmd", command(i, 1, "C", 0, time.Millisecond), appendSpan(i, 2, 1, fmt.Sprintf("e%d", i), typ, 0, time.Millisecond)),
			traces("proj", project(i, 3, 2, fmt.Sprintf("e%d", i), typ, "p", 0, time.Second)))
	}
	// Again, through the cached parts.
	for i := range n {
		typ := fmt.Sprintf("T%d", i)
		consume(t, a,
			traces("cmd", command(n+i, 1, "C", 0, time.Millisecond), appendSpan(n+i, 2, 1, fmt.Sprintf("f%d", i), typ, 0, time.Millisecond)),
			traces("proj", project(n+i, 3, 2, fmt.Sprintf("f%d", i), typ, "p", 0, time.Second)))
	}
	a.Tick(clk.t.Add(time.Second))
	checkExposition(t, reg, a.cfg.Metrics.MaxLabelLength)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
	}
	for name, max := range map[string]int{"cqrs_events_appended_total": 6, "cqrs_events_projected_total": 6, "cqrs_command_to_projection_lag_seconds": 4} {
		if got := series[name]; got != max {
			t.Errorf("%s: %d series, want %d (the budget and other)", name, got, max)
		}
	}
	for name, want := range map[string]float64{"cqrs_events_appended_total": 2 * (n - 5), "cqrs_command_to_projection_lag_seconds": 2 * (n - 3)} {
		if got := counter(t, reg, "lagscope_series_overflow_total", "metric", name); got != want {
			t.Errorf("series overflow of %s = %v, want %v", name, got, want)
		}
		if got := counter(t, reg, name, "event_type", "other"); got != want {
			t.Errorf("%s{event_type=other} = %v, want %v", name, got, want)
		}
		if got := counter(t, reg, name); got != 2*n {
			t.Errorf("%s: %v in all, want %d", name, got, 2*n)
		}
	}
}

// TestScrapeAtSeriesBudget: with the lag histogram at its default budget,
// every series with exemplars and label values of the longest length, a
// scrape of either format stays under 1 s and 6 MiB.
func TestScrapeAtSeriesBudget(t *testing.T) {
	cfg := DefaultConfig()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	long := func(prefix string, i int) string {
		v := fmt.Sprintf("%s%d", prefix, i)
		return v + strings.Repeat("x", cfg.Metrics.MaxLabelLength-len(v))
	}
	for i := range cfg.Metrics.MaxHistogramSeries + 100 {
		p, _ := m.lag.part(i%16, long("cmd", i%200), long("type", i/200), long("proj", i%63))
		for _, v := range append(LagBuckets, 1000) {
			p.observeWithExemplar(v, strings.Repeat("ab", 16))
		}
	}
	for _, accept := range []string{acceptText, acceptOpenMetrics} {
		r := scrape(t, reg, accept)
		t.Logf("%s: %d lag series, %.1f MiB in %s", accept, cfg.Metrics.MaxHistogramSeries+1, float64(len(r.body))/(1<<20), r.took)
		if len(r.body) > 6<<20 || (!raceEnabled && r.took > time.Second) {
			t.Errorf("%s: %.1f MiB in %s, want under 6 MiB and 1 s", accept, float64(len(r.body))/(1<<20), r.took)
		}
	}
}

// TestPanicLeavesNoLockHeld: a panic while a request holds a resolver or a
// joiner lock propagates to the caller and leaves no lock held: the next
// request and Tick complete.
func TestPanicLeavesNoLockHeld(t *testing.T) {
	for _, lock := range []string{"resolver", "joiner"} {
		t.Run(lock, func(t *testing.T) {
			a, reg, clk := newTestAnalyzer(t, func(c *Config) { c.Join.Shards = 1 })
			var armed atomic.Bool
			armed.Store(true)
			a.setHook(func(l string) {
				if l == lock && armed.CompareAndSwap(true, false) {
					panic("injected")
				}
			})
			func() {
				defer func() {
					if r := recover(); r != "injected" {
						t.Errorf("recovered %v, want the injected panic", r)
					}
				}()
				_ = a.ConsumeTraces(context.Background(), traces("cmd", command(1, 1, "C", 0, time.Millisecond), appendSpan(1, 2, 1, "e1", "T", 0, time.Millisecond)))
			}()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for _, td := range normalTrace(2, "ok-1") {
					_ = a.ConsumeTraces(context.Background(), td)
				}
				a.Tick(clk.t.Add(time.Second))
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the request and Tick after a panic did not complete within 10s: a lock is still held")
			}
			if got := counter(t, reg, "cqrs_events_projected_total", "projection", "ok_view"); got != 1 {
				t.Errorf("projected after the panic = %v, want 1", got)
			}
		})
	}
}

// TestTickRecoversPanics: the periodic tick logs, counts and survives a
// panic, and keeps ticking.
func TestTickRecoversPanics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Join.Deadline = 100 * time.Millisecond // ticks every 10ms
	cfg.Join.Retention = time.Second
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	var ticks atomic.Int32
	a.setHook(func(l string) {
		if l == "tick" {
			ticks.Add(1)
			panic("injected")
		}
	})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, reg, "lagscope_panics_total", "component", "analyzer") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("panics counted within 10s: %v after %d ticks, want 3", counter(t, reg, "lagscope_panics_total", "component", "analyzer"), ticks.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestJoinHeldBytesBounded: appends waiting for their command (and events
// and early projections) with 1 MiB ids and label values hold a bounded
// number of bytes: the strings are cut at the boundary. The bytes are
// compared with those of the same requests with short strings, which the
// join's fixed costs (deques allocated in chunks per shard) dominate.
func TestJoinHeldBytesBounded(t *testing.T) {
	const n = 32
	// held runs the requests with strings of size bytes and returns the
	// heap they hold with appends waiting, then after they were joined.
	held := func(size int) (waiting, joined int64) {
		a, reg, clk := newTestAnalyzer(t, func(c *Config) { c.KeepSamples = true })
		str := func(prefix string, i int) string { return fmt.Sprintf("%s%d-", prefix, i) + strings.Repeat("x", size) }
		var before, after runtime.MemStats
		gc := func(ms *runtime.MemStats) {
			// Twice: objects in sync.Pools survive one collection.
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(ms)
		}
		gc(&before)
		for i := range n {
			// Parent span 9 never arrives: the append waits for its command.
			s := appendSpan(i, 2, 9, str("e", i), str("T", i), 0, time.Millisecond)
			s.attrs["cqrs.aggregate.id"] = str("agg", i)
			s.attrs["cqrs.aggregate.type"] = str("A", i)
			consume(t, a, traces("cmd", s))
			// A projection whose event never comes.
			consume(t, a, traces("proj", project(1000+i, 3, 2, str("orphan", i), str("T", i), str("p", i), 0, time.Second)))
		}
		gc(&after)
		waiting = int64(after.HeapAlloc) - int64(before.HeapAlloc)
		a.Tick(clk.t.Add(5 * time.Second)) // past the command wait: joined with command="none"
		if got := counter(t, reg, "cqrs_events_appended_total"); got != n {
			t.Errorf("appended after the command wait = %v, want %d", got, n)
		}
		checkExposition(t, reg, a.cfg.Metrics.MaxLabelLength)
		gc(&after)
		joined = int64(after.HeapAlloc) - int64(before.HeapAlloc)
		runtime.KeepAlive(a)
		return waiting, joined
	}
	shortWaiting, shortJoined := held(8)
	hugeWaiting, hugeJoined := held(1 << 20)
	t.Logf("%d waiting appends and %d early projections hold %d KiB with 1 MiB strings, %d KiB with 8-byte ones; joined, %d and %d KiB",
		n, n, hugeWaiting>>10, shortWaiting>>10, hugeJoined>>10, shortJoined>>10)
	// Unbounded, the waiting appends alone would hold 4 MiB more each.
	for _, d := range []int64{hugeWaiting - shortWaiting, hugeJoined - shortJoined} {
		if d > 2<<20 {
			t.Errorf("1 MiB strings held %d KiB more than 8-byte ones, want under 2 MiB", d>>10)
		}
	}
}

// TestInvalidTimestamps: spans that end before they start, or lags beyond
// join.max_lag, are counted and give no lag or stage duration; clock skew
// keeps its meaning.
func TestInvalidTimestamps(t *testing.T) {
	ms := time.Millisecond
	maxTS := func(td ptrace.Traces) ptrace.Traces {
		firstSpan(td).SetEndTimestamp(pcommon.Timestamp(math.MaxUint64))
		return td
	}
	tests := []struct {
		name           string
		append, proj   ptrace.Traces
		reason         string // "" for none
		skew, lagCount float64
	}{
		{name: "valid", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 10*ms, 20*ms)), proj: traces("p", project(1, 3, 2, "e", "T", "p", 30*ms, 100*ms)), lagCount: 1},
		{name: "projection ends before it starts", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 10*ms, 20*ms)),
			proj: traces("p", project(1, 3, 2, "e", "T", "p", time.Second, 500*ms)), reason: "end_before_start"},
		{name: "append ends before it starts", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 20*ms, 10*ms)),
			proj: traces("p", project(1, 3, 2, "e", "T", "p", 30*ms, 100*ms)), reason: "end_before_start"},
		{name: "lag beyond max_lag", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 10*ms, 20*ms)),
			proj: traces("p", project(1, 3, 2, "e", "T", "p", 2*time.Hour, 2*time.Hour+ms)), reason: "beyond_max_lag"},
		{name: "projection ends past 2262", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 10*ms, 20*ms)),
			proj: maxTS(traces("p", project(1, 3, 2, "e", "T", "p", 30*ms, 100*ms))), reason: "beyond_max_lag"},
		{name: "clock skew", append: traces("cmd", appendSpan(1, 2, 1, "e", "T", 10*ms, 20*ms)),
			proj: traces("p", project(1, 3, 2, "e", "T", "p", -20*ms, -10*ms)), skew: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, reg, _ := newTestAnalyzer(t, nil)
			consume(t, a, traces("cmd", command(1, 1, "C", 0, 50*ms)), tt.append, tt.proj)
			got := map[string]float64{}
			for _, r := range invalidTimeReasons {
				got[r] = counter(t, reg, "lagscope_invalid_timestamps_total", "reason", r)
			}
			want := map[string]float64{"end_before_start": 0, "beyond_max_lag": 0}
			if tt.reason != "" {
				want[tt.reason] = 1
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("invalid timestamps (-want +got):\n%s", diff)
			}
			if got := counter(t, reg, "cqrs_command_to_projection_lag_seconds"); got != tt.lagCount {
				t.Errorf("lag observations = %v, want %v", got, tt.lagCount)
			}
			if got := counter(t, reg, "cqrs_clock_skew_total"); got != tt.skew {
				t.Errorf("clock skew = %v, want %v", got, tt.skew)
			}
			if got := counter(t, reg, "cqrs_events_projected_total"); got != 1 {
				t.Errorf("projected = %v, want 1: the event was shown, whatever its timestamps", got)
			}
			if s := a.Summary(); s.Projections[0].Lag.Sum > time.Hour {
				t.Errorf("summary lag sum = %s, want at most max_lag", s.Projections[0].Lag.Sum)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if strings.HasPrefix(mf.GetName(), "cqrs_") && strings.HasSuffix(mf.GetName(), "_seconds") && mf.GetType().String() == "HISTOGRAM" {
					for _, m := range mf.GetMetric() {
						if s := m.GetHistogram().GetSampleSum(); s > 3600 || s < 0 {
							t.Errorf("%s %v: sum %vs, want within max_lag", mf.GetName(), m.GetLabel(), s)
						}
					}
				}
			}
		})
	}
}

// TestVersionsDoNotWrap: versions int64 cannot hold are "no version".
func TestVersionsDoNotWrap(t *testing.T) {
	tests := []struct {
		in   any
		want int64
	}{
		{int64(7), 7},
		{"42", 42},
		{"-3", -3},
		{"9223372036854775807", math.MaxInt64},
		{"9223372036854775808", 0},
		{"-9223372036854775808", math.MinInt64},
		{"-9223372036854775809", 0},
		{"18446744073709551625", 0}, // 2^64+9: wrapped, it was 9
		{"99999999999999999999999", 0},
		{"", 0},
		{"-", 0},
		{"1e3", 0},
		{12.9, 12},
		{1e300, 0},
		{-1e300, 0},
		{math.NaN(), 0},
		{math.Inf(1), 0},
		{9.223372036854775807e18, 0}, // rounds to 2^63
	}
	for _, tt := range tests {
		v := pcommon.NewValueEmpty()
		if err := v.FromRaw(tt.in); err != nil {
			t.Fatal(err)
		}
		if got := intValue(spanbatch.ValueOf(v)); got != tt.want {
			t.Errorf("intValue(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
	// Before, the first version wrapped to 9 and its projection before
	// version 2 counted as out of order.
	a, reg, _ := newTestAnalyzer(t, nil)
	v := func(tr int, id string, version any) spanSpec {
		s := appendSpan(tr, 1, -1, id, "T", 0, time.Millisecond)
		s.attrs["cqrs.aggregate.id"] = "order-1"
		s.attrs["cqrs.aggregate.version"] = version
		return s
	}
	consume(t, a, traces("cmd", v(1, "e1", "18446744073709551625"), v(2, "e2", int64(2))),
		traces("proj", project(1, 2, 1, "e1", "T", "p", time.Second, time.Second+time.Millisecond),
			project(2, 2, 1, "e2", "T", "p", 2*time.Second, 2*time.Second+time.Millisecond)))
	if got := counter(t, reg, "cqrs_events_out_of_order_total"); got != 0 {
		t.Errorf("out of order = %v, want 0", got)
	}
}

// TestValidateNewFields: an error for each new setting names its YAML key.
func TestValidateNewFields(t *testing.T) {
	tests := []struct {
		mutate func(*Config)
		key    string
	}{
		{func(c *Config) { c.Metrics.MaxLabelLength = 39 }, "metrics.max_label_length"},
		{func(c *Config) { c.Metrics.MaxSeries = 0 }, "metrics.max_series"},
		{func(c *Config) { c.Metrics.MaxHistogramSeries = 0 }, "metrics.max_histogram_series"},
		{func(c *Config) { c.Join.MaxLag = 0 }, "join.max_lag"},
		{func(c *Config) { c.Join.Expected = map[string][]string{"T": {badUTF8}} }, "join.expected"},
		{func(c *Config) { c.Join.Expected = map[string][]string{strings.Repeat("t", 129): {"p"}} }, "metrics.max_label_length"},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		tt.mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("Validate() = %v, want an error naming %s", err, tt.key)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}

// TestNewCountersStartAtZero: the new counters exist at 0 before anything
// happens, so that increase() sees their first count.
func TestNewCountersStartAtZero(t *testing.T) {
	_, reg, _ := newTestAnalyzer(t, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter().GetValue() != 0 {
				t.Errorf("%s %v = %v, want 0", mf.GetName(), m.GetLabel(), m.GetCounter().GetValue())
			}
		}
		got[mf.GetName()] = len(mf.GetMetric())
	}
	want := map[string]int{
		"lagscope_label_values_sanitized_total": len(spanLabels) * 2,
		"lagscope_series_overflow_total":        9, // with cqrs_clock_skew_seconds
		"lagscope_panics_total":                 1,
		"lagscope_invalid_timestamps_total":     2,
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d series at start, want %d", name, got[name], n)
		}
	}
}
