package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestExplainGolden runs `lagscope explain` on fixtures, with and without a
// config file's rules, in both formats, against golden outputs
// (testdata/explain; -update rewrites them).
func TestExplainGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"hand_instrumented.text", []string{"../../testdata/hand_instrumented.jsonl"}},
		{"hand_instrumented.json", []string{"--format", "json", "../../testdata/hand_instrumented.jsonl"}},
		{"rules_custom_without_rules.text", []string{"../../testdata/rules/custom.jsonl"}},
		{"rules_custom.text", []string{"--config", "../../testdata/rules/custom.yaml", "../../testdata/rules/custom.jsonl"}},
		{"span_link.text", []string{"../../testdata/span_link.jsonl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), append([]string{"explain"}, tt.args...), &out, &errOut); err != nil {
				t.Fatalf("explain: %v\n%s", err, errOut.String())
			}
			path := filepath.Join("testdata", "explain", tt.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/lagscope -run TestExplainGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("explain output changed (-want +got):\n%s", diff)
			}
		})
	}
}
