package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestLoadgen runs `lagscope loadgen` against an in-process `lagscope
// serve` over both transports and checks that it finds the target's metrics
// in agreement with what it sent. Package loadgen tests the rest (a
// disagreement detected, each setting validated).
func TestLoadgen(t *testing.T) {
	s := startServer(t, nil)
	for _, tc := range []struct {
		protocol, endpoint string
	}{
		{"grpc", s.GRPCAddr().String()},
		{"http", s.HTTPAddr().String()},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"loadgen", "--endpoint", tc.endpoint, "--protocol", tc.protocol,
				"--rate", "20000", "--duration", "500ms", "--batch", "10", "--metrics-url", s.MetricsURL(), "--settle", "10s"},
				&stdout, &stderr)
			if err != nil {
				t.Fatalf("loadgen: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, want := range []string{"accepted:", "spans/s", "latency:   p50", "metrics agree with what was sent"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "failed:") {
				t.Errorf("some requests failed:\n%s", out)
			}
		})
	}
}

// TestLoadgenFlags: `lagscope loadgen` refuses settings out of range and
// arguments.
func TestLoadgenFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--protocol", "udp"},
		{"--rate", "-1"},
		{"--duration", "0s"},
		{"--workers", "0"},
		{"extra"},
	} {
		err := run(context.Background(), append([]string{"loadgen"}, args...), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil {
			t.Errorf("loadgen %v: no error", args)
		}
	}
}
