package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemoCommand runs `lagscope demo` to the end of a counted load on
// ephemeral ports, its store in a SQLite file that the SQL position source
// polls, and checks the report has both projections and their position lag,
// and that --rate=0 sent as fast as possible (not at load's default 10/s).
// Package demo tests what the demo measures.
func TestDemoCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"demo", "--count", "30", "--rate", "0", "--interval", "100ms",
		"--store", "sqlite:" + filepath.Join(t.TempDir(), "orders.db"), "--orders.listen", "127.0.0.1:0",
		"--otlp.grpc-endpoint", "127.0.0.1:0", "--otlp.http-endpoint", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0"},
		&stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	_, final, ok := strings.Cut(out, "== Final report ==")
	if !ok {
		t.Fatalf("no final report:\n%s", out)
	}
	m := regexp.MustCompile(`commands: 30 in \S+ \(([\d.]+)/s\)`).FindStringSubmatch(final)
	if m == nil {
		t.Fatalf("final report has no load summary of 30 commands:\n%s", final)
	}
	if rate, _ := strconv.ParseFloat(m[1], 64); rate <= 12 { // 10/s sends 30 in 2.9s (10.3/s); unlimited measured 16/s on two busy cores, hundreds idle
		t.Errorf("--rate=0 sent %v commands/s, want as fast as possible (at the default 10/s, about 10)", rate)
	}
	for _, proj := range []string{"orders_view", "sales_summary"} {
		// A row of the table ends with BEHIND_HEAD, ALERT and STATUS: a
		// number there, not "-", says the position source ran.
		row := regexp.MustCompile(`(?m)^` + proj + ` .* (\d+) +(ok|FIRING) +(OK|SLOW|STALLED|STOPPED|-)$`)
		if !row.MatchString(final) {
			t.Errorf("final report has no %s row with a position lag:\n%s", proj, final)
		}
	}
}

// TestDemoCommandKafka runs `lagscope demo --bus kafka` without brokers:
// one command, an in-process broker, and every event counted once per
// projection in the final report.
func TestDemoCommandKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"demo", "--bus", "kafka", "--count", "20", "--rate", "0", "--interval", "100ms",
		"--store", "sqlite:" + filepath.Join(t.TempDir(), "orders.db"), "--orders.listen", "127.0.0.1:0",
		"--otlp.grpc-endpoint", "127.0.0.1:0", "--otlp.http-endpoint", "127.0.0.1:0", "--web.listen-address", "127.0.0.1:0"},
		&stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !regexp.MustCompile(`kafka topic orders\.events, in-process broker 127\.0\.0\.1:\d+`).MatchString(out) {
		t.Errorf("the header does not name the in-process broker:\n%s", out)
	}
	report := regexp.MustCompile(`(\w+) +projected by the projector (\d+), seen by lagscope (\d+); dropped 0, unprojected 0;`)
	ms := report.FindAllStringSubmatch(out, -1)
	if len(ms) != 2 {
		t.Fatalf("final report has %d projection lines with nothing unprojected, want 2:\n%s", len(ms), out)
	}
	for _, m := range ms {
		if m[2] == "0" || m[2] != m[3] {
			t.Errorf("%s: projected %s, seen by lagscope %s; want as many seen as projected, not 0", m[1], m[2], m[3])
		}
	}
}

// TestDemoFlags: a demo flag whose value would be replaced by a default, or
// run another demo than asked for, is refused before anything starts (no
// port is bound: the endpoints given are taken), exit 2, naming the flag.
func TestDemoFlags(t *testing.T) {
	// Every endpoint on one port that is in use: a demo that started
	// anything would fail to listen instead of refusing the flag.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	endpoints := []string{"--orders.listen", taken, "--otlp.grpc-endpoint", taken, "--otlp.http-endpoint", taken, "--web.listen-address", taken}
	tests := []struct {
		name string
		args []string
		want []string // in the error
	}{
		{"zero window", []string{"--window=0s"}, []string{"--window", "must be positive"}},
		{"zero interval", []string{"--interval=0s"}, []string{"--interval", "must be positive"}},
		{"zero lag threshold", []string{"--lag-threshold=0s"}, []string{"--lag-threshold", "must be positive"}},
		{"negative rate", []string{"--rate=-5"}, []string{"--rate", "must not be negative"}},
		{"negative count", []string{"--count=-1"}, []string{"--count", "must not be negative"}},
		{"no concurrency", []string{"--concurrency=0"}, []string{"--concurrency", "at least 1"}},
		{"delay range backwards", []string{"--projector-delay=8s..1s"}, []string{"--projector-delay", "8s..1s ends before it starts"}},
		{"delay range backwards for one projection", []string{"--projector-delay=sales_summary=8s..1s"}, []string{"--projector-delay", "sales_summary", "ends before it starts"}},
		{"delay without a unit", []string{"--projector-delay=5"}, []string{"--projector-delay", "a duration needs a unit, e.g. 5s"}},
		{"unknown projection", []string{"--drop-rate=nope=0.1"}, []string{"--drop-rate", `unknown projection "nope"`}},
		{"stall without a unit", []string{"--stall=20+30s"}, []string{"--stall", "a duration needs a unit, e.g. 20s"}},
		{"drop rate above 1", []string{"--drop-rate=2"}, []string{"drop rate 2 not in [0, 1]"}},
		{"unknown bus", []string{"--bus=nats"}, []string{"--bus", `want store or kafka, got "nats"`}},
		{"brokers without the kafka bus", []string{"--kafka.brokers=127.0.0.1:9092"}, []string{"--kafka.brokers", "needs --bus kafka"}},
		{"empty topic", []string{"--bus=kafka", "--kafka.topic="}, []string{"--kafka.topic", "must not be empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append(append([]string{"demo"}, tt.args...), endpoints...), &stdout, &stderr)
			if code := exitCode(err, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2 (err %v)", code, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if stdout.Len() > 0 {
				t.Errorf("the demo printed before refusing its flags:\n%s", stdout.String())
			}
		})
	}
}
