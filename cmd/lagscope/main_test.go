package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCommandLine checks what a person sees for --help, typos and bad
// values: help on stdout with exit 0; one error on stderr, with a hint, and
// exit 2 for a command line that cannot be parsed.
func TestCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // substrings
		wantStderr []string
	}{
		{name: "top-level help", args: []string{"--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope COMMAND", "serve"}},
		{name: "version", args: []string{"--version"}, wantCode: 0, wantStdout: []string{"lagscope"}},
		{name: "serve help", args: []string{"serve", "--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope serve", "-join.deadline", "(default 30s)"}},
		{name: "demo help", args: []string{"demo", "-h"}, wantCode: 0, wantStdout: []string{"Usage: lagscope demo", "-projector-delay", "-join.deadline"}},
		{name: "analyze help", args: []string{"analyze", "--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope analyze", "-format"}},
		{name: "loadgen help", args: []string{"loadgen", "--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope loadgen", "-endpoint"}},
		{name: "alerts help", args: []string{"alerts", "--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope alerts", "-lag-threshold"}},
		{name: "dashboards help", args: []string{"dashboards", "--help"}, wantCode: 0, wantStdout: []string{"Usage: lagscope dashboards", "-out"}},
		{name: "duration without unit", args: []string{"serve", "--join.deadline=5"}, wantCode: 2,
			wantStderr: []string{"-join.deadline", "a duration needs a unit, e.g. 5s", "Run 'lagscope serve --help'"}},
		{name: "not a duration", args: []string{"alerts", "--for", "soon"}, wantCode: 2, wantStderr: []string{"-for", "not a duration (e.g. 30s"}},
		{name: "lag threshold not a bucket bound", args: []string{"alerts", "--lag-threshold=3s", "--out=-"}, wantCode: 0,
			wantStdout: []string{"CQRSProjectionLagHigh"}, wantStderr: []string{"warning: lag threshold 3s is not a bound", "metrics.lag_buckets"}},
		{name: "lag threshold a configured bucket bound", args: []string{"alerts", "--lag-threshold=3s", "--lag-buckets=1,3,10", "--out=-"}, wantCode: 0,
			wantStdout: []string{"CQRSProjectionLagHigh"}},
		{name: "flag typo", args: []string{"serve", "--join.dedline=5s"}, wantCode: 2,
			wantStderr: []string{"unknown flag --join.dedline", "Did you mean --join.deadline?"}},
		{name: "underscores for dashes", args: []string{"demo", "--projector_delay=1s"}, wantCode: 2,
			wantStderr: []string{"Did you mean --projector-delay?"}},
		{name: "flag value taken as the next argument", args: []string{"alerts", "--out", "-", "--job", "x", "--nope"}, wantCode: 2,
			wantStderr: []string{"unknown flag --nope"}},
		{name: "command typo", args: []string{"srve"}, wantCode: 2, wantStderr: []string{`unknown command "srve"`, "Did you mean 'lagscope serve'?"}},
		{name: "stray argument", args: []string{"serve", "extra"}, wantCode: 2, wantStderr: []string{"serve takes no arguments"}},
		{name: "invalid configuration", args: []string{"serve", "--log.format=xml"}, wantCode: 1, wantStderr: []string{"log.format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			code := exitCode(err, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if n := strings.Count(stdout.String(), "Usage:"); n > 1 {
				t.Errorf("the usage is printed %d times:\n%s", n, stdout.String())
			}
			if tt.wantCode == 0 && len(tt.wantStderr) == 0 && stderr.Len() > 0 {
				t.Errorf("stderr not empty on success:\n%s", stderr.String())
			}
			if tt.wantCode == 2 {
				if n := strings.Count(stderr.String(), "lagscope:"); n != 1 {
					t.Errorf("the error is printed %d times, want once:\n%s", n, stderr.String())
				}
				if strings.Contains(stderr.String(), "Usage:") {
					t.Errorf("a usage error prints the whole usage:\n%s", stderr.String())
				}
			}
		})
	}
}
