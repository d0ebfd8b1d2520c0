package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoCommand runs `lagscope demo` to the end of a counted load on
// ephemeral ports, its store in a SQLite file that the SQL position source
// polls, and checks the report has both projections and their position lag.
// Package demo tests what the demo measures.
func TestDemoCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"demo", "--count", "30", "--rate", "100", "--interval", "100ms",
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
	for _, proj := range []string{"orders_view", "sales_summary"} {
		// A row of the table ends with BEHIND_HEAD and LAG ALERT: a
		// number there, not "-", says the position source ran.
		row := regexp.MustCompile(`(?m)^` + proj + ` .* (\d+) +(ok|FIRING)$`)
		if !row.MatchString(final) {
			t.Errorf("final report has no %s row with a position lag:\n%s", proj, final)
		}
	}
}
