package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/lagscope/lagscope/report"
)

// TestLogsCarryTraceLinks: a log record or logger that names a trace
// (trace_id) gets its trace_url with web.trace_url_template, and none
// without it or for an id that is not one.
func TestLogsCarryTraceLinks(t *testing.T) {
	const id = "0af7651916cd43dd8448eb211c80319c"
	tests := []struct {
		name, template string
		log            func(*slog.Logger)
		want           string // trace_url of the record, "" for none
	}{
		{"record", "http://jaeger:16686/trace/{trace_id}", func(l *slog.Logger) { l.Info("slow", "trace_id", id) }, "http://jaeger:16686/trace/" + id},
		{"logger", "http://jaeger:16686/trace/{trace_id}", func(l *slog.Logger) { l.With("trace_id", id).Info("slow") }, "http://jaeger:16686/trace/" + id},
		{"group: beside the id", "http://j/{trace_id}", func(l *slog.Logger) { l.WithGroup("g").Info("slow", "trace_id", id) }, "http://j/" + id},
		{"no template", "", func(l *slog.Logger) { l.Info("slow", "trace_id", id) }, ""},
		{"not a trace id", "http://j/{trace_id}", func(l *slog.Logger) { l.Info("slow", "trace_id", "<script>") }, ""},
		{"no trace", "http://j/{trace_id}", func(l *slog.Logger) { l.Info("started") }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			links, err := report.NewTraceLinks(tc.template)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			tc.log(withTraceLinks(slog.New(slog.NewJSONHandler(&buf, nil)), links))
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("%v: %s", err, buf.String())
			}
			got, _ := rec["trace_url"].(string)
			if g, ok := rec["g"].(map[string]any); ok && got == "" {
				got, _ = g["trace_url"].(string)
			}
			if got != tc.want {
				t.Errorf("trace_url = %q, want %q (%s)", got, tc.want, strings.TrimSpace(buf.String()))
			}
		})
	}
}

func TestConfigRejectsBadTraceURLTemplate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Web.TraceURLTemplate = "http://jaeger:16686/trace/"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "web.trace_url_template") {
		t.Errorf("Validate: %v, want an error naming web.trace_url_template", err)
	}
}
