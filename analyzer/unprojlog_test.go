package analyzer

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestUnprojectedEventsAreLoggedWithTheirTrace: the first event a
// projection did not show within the deadline gets a log line naming its
// trace; the others within a second are counted in the next line.
func TestUnprojectedEventsAreLoggedWithTheirTrace(t *testing.T) {
	var buf bytes.Buffer
	cfg := DefaultConfig()
	cfg.Join.Expected = map[string][]string{"OrderCreated": {"orders_view"}}
	j, err := NewJoiner(cfg, slog.New(slog.NewJSONHandler(&buf, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_800_000_000, 0)
	var facts []Fact
	for i := range 5 {
		f := Fact{Kind: FactAppend, EventID: "evt-" + string(rune('a'+i)), EventType: "OrderCreated", Start: start.UnixNano(), End: start.UnixNano()}
		f.Event = KeyOf(f.EventID)
		f.TraceID[0], f.TraceID[15] = 0xab, byte(i+1)
		facts = append(facts, f)
	}
	j.Apply(facts[:3], start)
	j.Tick(start.Add(cfg.Join.Deadline + time.Millisecond)) // three unprojected: one line
	j.Apply(facts[3:], start.Add(2*cfg.Join.Deadline))
	j.Tick(start.Add(3*cfg.Join.Deadline + time.Millisecond)) // two more: one line, 2 suppressed before it
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2 (one a second at most):\n%s", len(lines), buf.String())
	}
	first := lines[0]
	// Shards declare in their own order: any of the first three.
	if tr, _ := first["trace_id"].(string); !strings.HasPrefix(tr, "ab0000000000000000000000000000") || tr[30:] > "03" || first["event_type"] != "OrderCreated" {
		t.Errorf("first line %v, want the trace and type of one of the first three events", first)
	}
	if ps, _ := first["projections"].([]any); len(ps) != 1 || ps[0] != "orders_view" {
		t.Errorf("first line names projections %v, want [orders_view]", first["projections"])
	}
	if got := lines[1]["similar_since_last_line"]; got != float64(2) {
		t.Errorf("second line counts %v suppressed, want 2", got)
	}
	if tr, _ := lines[1]["trace_id"].(string); tr[30:] != "04" && tr[30:] != "05" {
		t.Errorf("second line's trace %v, want the fourth or fifth event's", tr)
	}
}
