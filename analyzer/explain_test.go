package analyzer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestExplainGolden explains every span of some fixtures, all requests
// taken together, and compares with testdata/explain/*.golden (-update
// rewrites them).
func TestExplainGolden(t *testing.T) {
	for _, tt := range []struct {
		file, rules, name string
	}{
		{"hand_instrumented", "", "hand_instrumented"},
		{"hand_instrumented", "rules/hand_instrumented.yaml", "hand_instrumented_with_rules"},
		{"rules/custom", "rules/custom.yaml", "rules_custom_with_rules"},
		{"rules/custom", "", "rules_custom"}, // the same spans without their rules
		{"noise", "", "noise"},
		{"messaging_semconv", "", "messaging_semconv"},
		{"multi_event_consumer", "", "multi_event_consumer"},
	} {
		name := tt.name
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tt.rules != "" {
				cfg.Rules = rulesOf(t, filepath.Join("..", "testdata", tt.rules))
			}
			td := ptrace.NewTraces()
			for _, req := range readRequests(t, filepath.Join("..", "testdata", tt.file+".jsonl")) {
				req.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
			}
			exps, err := Explain(cfg, td)
			if err != nil {
				t.Fatal(err)
			}
			if len(exps) != td.SpanCount() {
				t.Errorf("%d explanations of %d spans", len(exps), td.SpanCount())
			}
			var b strings.Builder
			for _, e := range exps {
				line, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				b.Write(line)
				b.WriteByte('\n')
			}
			path := filepath.Join("testdata", "explain", name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(b.String(), string(want)); diff != "" {
				t.Errorf("explanations differ from %s (-got +want):\n%s", path, diff)
			}
		})
	}
}

// TestExplainWaits: what an unjoined fact waits for, and a retry.
func TestExplainWaits(t *testing.T) {
	td := traces("svc",
		handProducer(1, 2, 1), // its command span 1 is missing
		handConsumer(2, 3, 9), // its producer span 9 is missing
		handConsumer(1, 4, 2), // projects the producer's event
		handConsumer(1, 4, 2), // a retry of it
		spanSpec{trace: 3, span: 5, parent: -1, kind: ptrace.SpanKindConsumer, attrs: map[string]any{"event.id": "e-9"}}, // its append is missing
	)
	exps, err := Explain(DefaultConfig(), td)
	if err != nil {
		t.Fatal(err)
	}
	type got struct{ Role, By, Note, Waits string }
	var gots []got
	for _, e := range exps {
		gots = append(gots, got{e.Role, e.By, e.Note, e.Waits})
	}
	want := []got{
		{"append", whyProducer, "", `its command: ancestor span 0000000000000002 is not in the input (waits join.command_wait, then command="none")`},
		{"project", whyConsumer, "", "its producer span 00000000000000000000000000000003:000000000000000a is not in the input (waits join.command_wait, then keyed by that span)"},
		{"project", whyConsumer, "", ""},
		{"project", whyConsumer, "a copy of an earlier span (same trace and span id): a retry, counted in lagscope_duplicate_spans_total and ignored", ""},
		{"project", whyConsumer, "", "the append of event e-9 is not in the input (held join.deadline + join.command_wait, then evicted: reason orphan_expired)"},
	}
	if diff := cmp.Diff(gots, want); diff != "" {
		t.Errorf("(-got +want):\n%s", diff)
	}
	bad := DefaultConfig()
	bad.Rules = []Rule{{Name: "x", Role: "nope"}}
	if _, err := Explain(bad, td); err == nil {
		t.Error("Explain with an invalid rule: no error")
	}
}
