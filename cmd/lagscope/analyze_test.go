package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// TestAnalyzeGolden runs `lagscope analyze` on every fixture in both formats
// and compares with testdata/analyze/*.golden (refresh with -update).
func TestAnalyzeGolden(t *testing.T) {
	fixtures, err := filepath.Glob("../../testdata/*.jsonl")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no fixtures found: %v", err)
	}
	for _, fx := range fixtures {
		name := strings.TrimSuffix(filepath.Base(fx), ".jsonl")
		for _, format := range []string{"text", "json"} {
			t.Run(name+"/"+format, func(t *testing.T) {
				var out, errOut bytes.Buffer
				if err := run(context.Background(), []string{"analyze", "--format", format, fx}, &out, &errOut); err != nil {
					t.Fatalf("analyze: %v\n%s", err, errOut.String())
				}
				golden := filepath.Join("testdata", "analyze", name+"."+format+".golden")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("read golden (run go test ./cmd/lagscope -run TestAnalyzeGolden -update): %v", err)
				}
				if diff := cmp.Diff(string(want), out.String()); diff != "" {
					t.Errorf("analyze %s output differs from %s (-want +got):\n%s", format, golden, diff)
				}
			})
		}
	}
}

func TestAnalyzeErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.jsonl")
	if err := os.WriteFile(truncated, []byte(`{"resourceSpans":[`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no files", []string{"analyze"}, "at least one file"},
		{"missing file", []string{"analyze", filepath.Join(dir, "nope.jsonl")}, "open trace file"},
		{"bad trace id", []string{"analyze", bad}, "document 1"},
		{"truncated", []string{"analyze", truncated}, "document 1"},
		{"bad format", []string{"analyze", "--format", "xml", bad}, "--format"},
		{"bad expect", []string{"analyze", "--expect", "nothing", bad}, "type=projection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestAnalyzeExpect shows that a projection named with --expect makes events
// it never showed unprojected, even though it never appeared in the input.
func TestAnalyzeExpect(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"analyze", "--expect", "OrderCreated=audit_log", "../../testdata/two_projections.jsonl"}, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Unprojected by audit_log (1):") {
		t.Errorf("want audit_log to have one unprojected event, got:\n%s", out.String())
	}
}
