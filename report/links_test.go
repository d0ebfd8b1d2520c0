package report

import (
	"strings"
	"testing"
)

func TestTraceLinks(t *testing.T) {
	const id = "0af7651916cd43dd8448eb211c80319c"
	tests := []struct {
		template, traceID, want, wantErr string
	}{
		{template: "", traceID: id, want: ""},
		{template: "http://jaeger:16686/trace/{trace_id}", traceID: id, want: "http://jaeger:16686/trace/" + id},
		{template: "https://grafana/explore?left={\"queries\":[{\"query\":\"{trace_id}\"}]}", traceID: id,
			want: "https://grafana/explore?left={\"queries\":[{\"query\":\"" + id + "\"}]}"},
		{template: "http://jaeger/trace/{trace_id}", traceID: "not-a-trace-id", want: ""},
		{template: "http://jaeger/trace/{trace_id}", traceID: id + "00", want: ""},
		{template: "http://jaeger/trace/{trace_id}", traceID: `0af7651916cd43dd8448eb211c80319"`, want: ""},
		{template: "http://jaeger/trace/", wantErr: "has no {trace_id}"},
		{template: "/trace/{trace_id}", wantErr: "not an absolute"},
		{template: "javascript:alert({trace_id})", wantErr: "not an absolute"},
		{template: "http://[::1/{trace_id}", wantErr: "web.trace_url_template"},
	}
	for _, tc := range tests {
		t.Run(tc.template, func(t *testing.T) {
			l, err := NewTraceLinks(tc.template)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewTraceLinks: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := l.URL(tc.traceID); got != tc.want {
				t.Errorf("URL(%q) = %q, want %q", tc.traceID, got, tc.want)
			}
			if l.Enabled() != (tc.template != "") {
				t.Errorf("Enabled() = %v", l.Enabled())
			}
		})
	}
}
