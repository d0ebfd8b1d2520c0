package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const jaegerTemplate = "http://jaeger:16686/trace/{trace_id}"

// TestTraceLinksGolden: with --web.trace-url-template (or the config
// file's web.trace_url_template), analyze lists the traces of unprojected
// events and of the slowest lags with their links, and explain links every
// span's trace (testdata/links; -update rewrites them).
func TestTraceLinksGolden(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "lagscope.yaml")
	if err := os.WriteFile(cfgFile, []byte("web:\n  trace_url_template: \"https://grafana/explore?traceId={trace_id}\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"analyze_missing_projection.text", []string{"analyze", "--web.trace-url-template", jaegerTemplate, "../../testdata/missing_projection.jsonl"}},
		{"analyze_missing_projection.json", []string{"analyze", "--format", "json", "--web.trace-url-template", jaegerTemplate, "../../testdata/missing_projection.jsonl"}},
		{"analyze_broken_propagation_config.text", []string{"analyze", "--config", cfgFile, "../../testdata/broken_propagation.jsonl"}},
		{"explain_missing_projection.text", []string{"explain", "--web.trace-url-template", jaegerTemplate, "../../testdata/missing_projection.jsonl"}},
		{"explain_missing_projection.json", []string{"explain", "--format", "json", "--web.trace-url-template", jaegerTemplate, "../../testdata/missing_projection.jsonl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), tt.args, &out, &errOut); err != nil {
				t.Fatalf("%v: %v\n%s", tt.args, err, errOut.String())
			}
			path := filepath.Join("testdata", "links", tt.name+".golden")
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
				t.Fatalf("%v (run go test ./cmd/lagscope -run TestTraceLinksGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("output changed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTraceLinksBadTemplate(t *testing.T) {
	for _, tmpl := range []string{"http://jaeger:16686/trace/", "/trace/{trace_id}", "javascript:alert({trace_id})"} {
		for _, cmd := range []string{"analyze", "explain"} {
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{cmd, "--web.trace-url-template", tmpl, "../../testdata/happy_path.jsonl"}, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), "web.trace_url_template") {
				t.Errorf("%s --web.trace-url-template=%q: %v, want an error naming web.trace_url_template", cmd, tmpl, err)
			}
		}
	}
}
