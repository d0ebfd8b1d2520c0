package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	notOTLP := filepath.Join(dir, "foo.json")
	if err := os.WriteFile(notOTLP, []byte(`{"foo":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no files", []string{"analyze"}, "at least one file"},
		{"missing file", []string{"analyze", filepath.Join(dir, "nope.jsonl")}, "open trace file"},
		{"bad trace id", []string{"analyze", bad}, "bad.jsonl: line 1: not OTLP JSON: a trace or span id is not hexadecimal"},
		{"not OTLP", []string{"analyze", notOTLP}, "foo.json: line 1: not OTLP JSON: no resourceSpans"},
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

// TestAnalyzeTruncatedAndPerFile reads a file whose last line is cut short
// (reported, skipped, the rest analysed) and analyses two files apart.
func TestAnalyzeTruncatedAndPerFile(t *testing.T) {
	happy, err := os.ReadFile("../../testdata/happy_path.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "writing.jsonl")
	if err := os.WriteFile(truncated, append(append([]byte{}, happy...), `{"resourceSpans":[{"scopeSp`...), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"analyze", truncated}, &out, &errOut); err != nil {
		t.Fatalf("a truncated last line is fatal: %v", err)
	}
	if !strings.Contains(errOut.String(), "writing.jsonl: line 6: the file ends in the middle of a document") {
		t.Errorf("stderr does not report the truncated line 6:\n%s", errOut.String())
	}
	var whole bytes.Buffer
	if err := run(context.Background(), []string{"analyze", "../../testdata/happy_path.jsonl"}, &whole, &errOut); err != nil {
		t.Fatal(err)
	}
	if out.String() != whole.String() {
		t.Errorf("the truncated file's report differs from the whole file's:\n%s\nwant\n%s", out.String(), whole.String())
	}

	out.Reset()
	if err := run(context.Background(), []string{"analyze", "--per-file", "--format", "json",
		"../../testdata/happy_path.jsonl", "../../testdata/missing_projection.jsonl"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var reps []analyzeReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
		t.Fatalf("--per-file --format json is not a list of reports: %v\n%s", err, out.String())
	}
	if len(reps) != 2 || reps[0].File != "../../testdata/happy_path.jsonl" || reps[1].Input.Files != 1 {
		t.Errorf("reports %+v, want one per file", reps)
	}
	out.Reset()
	if err := run(context.Background(), []string{"analyze", "--per-file", "../../testdata/happy_path.jsonl", "../../testdata/missing_projection.jsonl"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n== "); got != 1 || !strings.HasPrefix(out.String(), "== ../../testdata/happy_path.jsonl ==") {
		t.Errorf("text --per-file does not head each report with its file:\n%s", out.String())
	}
}
