package analyzer

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// linkedConsumer is a projection span without event id in trace 2 that
// links to span 1 of trace 1 (its producer).
func linkedConsumer() ptrace.Traces {
	return traces("billing", spanSpec{trace: 2, span: 20, parent: -1, kind: ptrace.SpanKindConsumer, start: time.Second, end: time.Second + 5*time.Millisecond,
		attrs: map[string]any{"cqrs.operation": "project", "cqrs.projection": "billing"}, links: [][2]int{{1, 1}}})
}

// TestMarkSpanKeyed: a Resolver told to gives at once, marked, a
// projection whose producer span it has not seen; one not told holds it
// and gives it unmarked when the command wait runs out.
func TestMarkSpanKeyed(t *testing.T) {
	producer := KeyOfSpan(traceID(1), spanID(1))
	for _, mark := range []bool{false, true} {
		r, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if mark {
			r.MarkSpanKeyed()
		}
		now := base.Add(2 * time.Second)
		got := kindsAndKeys(r.Resolve(nil, linkedConsumer(), now))
		later := kindsAndKeys(r.Expire(nil, now, true))
		var want, wantLater []kindKey
		if mark {
			want = []kindKey{{FactProjectSpan, producer}}
		} else {
			wantLater = []kindKey{{FactProject, producer}}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mark %t: Resolve (-want +got):\n%s", mark, diff)
		}
		if diff := cmp.Diff(wantLater, later); diff != "" {
			t.Errorf("mark %t: Expire (-want +got):\n%s", mark, diff)
		}
	}
	// The producer seen first: resolved to its event either way.
	r, err := NewResolver(DefaultConfig(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.MarkSpanKeyed()
	now := base.Add(2 * time.Second)
	r.Resolve(nil, traces("orders", appendSpan(1, 1, -1, "e1", "OrderPaid", 0, time.Millisecond)), now)
	if diff := cmp.Diff([]kindKey{{FactProject, KeyOf("e1")}}, kindsAndKeys(r.Resolve(nil, linkedConsumer(), now))); diff != "" {
		t.Errorf("after its producer (-want +got):\n%s", diff)
	}
}

type kindKey struct {
	Kind  FactKind
	Event EventKey
}

func kindsAndKeys(facts []Fact) []kindKey {
	var out []kindKey
	for _, f := range facts {
		out = append(out, kindKey{f.Kind, f.Event})
	}
	return out
}

// TestLearnedExpectations: what one Joiner learns from traffic it records
// for the others (RecordLearned, TakeLearned, Learned), and a Joiner told
// (Learn) counts the projection unprojected as the one that learned it.
func TestLearnedExpectations(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Join.Expected = map[string][]string{"OrderPaid": {"orders_view"}}
	now := base.Add(time.Minute)
	appended := func(id string) Fact {
		return Fact{Kind: FactAppend, Event: KeyOf(id), EventID: id, EventType: "OrderPaid", Command: "none", Start: now.UnixNano(), End: now.UnixNano() + 1}
	}
	learner, err := NewJoiner(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if got := learner.TakeLearned(nil); got != nil {
		t.Errorf("TakeLearned without RecordLearned = %v, want nothing", got)
	}
	learner.RecordLearned()
	learner.Apply([]Fact{appended("e1"), {Kind: FactProject, Event: KeyOf("e1"), Projection: "billing", Start: now.UnixNano() + 2, End: now.UnixNano() + 3}}, now)
	want := []Fact{{Kind: FactLearned, EventType: "OrderPaid", Projection: "billing", Start: now.UnixNano()}}
	if diff := cmp.Diff(want, learner.TakeLearned(nil)); diff != "" {
		t.Errorf("TakeLearned (-want +got):\n%s", diff)
	}
	if got := learner.TakeLearned(nil); len(got) != 0 {
		t.Errorf("TakeLearned again = %v, want nothing", got)
	}
	// orders_view is configured, not learned.
	if diff := cmp.Diff(want, learner.Learned(nil)); diff != "" {
		t.Errorf("Learned (-want +got):\n%s", diff)
	}
	if !learner.Holds(KeyOf("e1")) || learner.Holds(KeyOf("e2")) {
		t.Errorf("Holds(e1), Holds(e2) = %t, %t; want true, false", learner.Holds(KeyOf("e1")), learner.Holds(KeyOf("e2")))
	}

	for _, told := range []bool{false, true} {
		reg := prometheus.NewRegistry()
		other, err := NewJoiner(cfg, nil, reg)
		if err != nil {
			t.Fatal(err)
		}
		other.RecordLearned()
		if told {
			other.Learn("OrderPaid", "billing", now)
			other.Learn("OrderPaid", "billing", now) // known: nothing
		}
		other.Apply([]Fact{appended("e2")}, now)
		other.Flush()
		got := unprojectedOf(t, reg, "OrderPaid", "billing")
		if want := map[bool]float64{false: 0, true: 1}[told]; got != want {
			t.Errorf("told %t: unprojected{OrderPaid, billing} = %v, want %v", told, got, want)
		}
		if got := other.TakeLearned(nil); len(got) != 0 {
			t.Errorf("told %t: TakeLearned = %v, want nothing: Learn is not traffic", told, got)
		}
	}
}

// unprojectedOf returns cqrs_events_unprojected_total{event_type=typ,
// projection=p} in reg.
func unprojectedOf(t *testing.T, reg *prometheus.Registry, typ, p string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cqrs_events_unprojected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["event_type"] == typ && l["projection"] == p {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestLearnHostile feeds Learn what a facts topic written by anyone could
// carry (it comes from another join instance, but the topic is not
// authenticated per writer): invalid UTF-8, huge names and many distinct
// ones. The label budgets must hold, every label value must be valid and
// bounded, and Learned must answer within them.
func TestLearnHostile(t *testing.T) {
	cfg := DefaultConfig()
	reg := prometheus.NewRegistry()
	j, err := NewJoiner(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("x", 1<<20)
	at := base.Add(time.Minute)
	for i := range 5000 {
		j.Learn("\xff\xfe"+strconv.Itoa(i), "proj\xc0"+strconv.Itoa(i%200), at)
		j.Learn(huge+strconv.Itoa(i), huge, at)
	}
	j.Learn("", "", at)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather after hostile Learn: %v", err)
	}
	types, projs := map[string]bool{}, map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if !utf8.ValidString(v) || len(v) > cfg.Metrics.MaxLabelLength {
					t.Fatalf("%s{%s=%.40q...}: label value invalid or over %d bytes (%d)", mf.GetName(), l.GetName(), v, cfg.Metrics.MaxLabelLength, len(v))
				}
				switch l.GetName() {
				case "event_type":
					types[v] = true
				case "projection":
					projs[v] = true
				}
			}
		}
	}
	if len(types) == 0 || len(projs) == 0 {
		t.Fatalf("no event_type or projection label after Learn: the test checks nothing")
	}
	// +1: the overflow value that takes what is past the budget.
	if len(types) > cfg.Metrics.MaxLabelValues+1 || len(projs) > maxProjections+1 {
		t.Errorf("%d event types, %d projections in the metrics; budgets %d and %d", len(types), len(projs), cfg.Metrics.MaxLabelValues, maxProjections)
	}
	if n := len(j.Learned(nil)); n > (cfg.Metrics.MaxLabelValues+1)*maxProjections {
		t.Errorf("Learned gave %d facts, more than the budgets allow", n)
	}
}
