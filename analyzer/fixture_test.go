package analyzer

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// analyzeFile runs the offline analysis of one OTLP JSON lines file.
func analyzeFile(t testing.TB, path string, cfg Config) (*Analyzer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var u ptrace.JSONUnmarshaler
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := a.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	a.Flush()
	return a, reg
}

func TestFixturesSmoke(t *testing.T) {
	files, _ := filepath.Glob("../testdata/*.jsonl")
	for _, f := range files {
		cfg := DefaultConfig()
		cfg.KeepSamples = true
		a, _ := analyzeFile(t, f, cfg)
		t.Logf("%s: %+v", filepath.Base(f), a.Summary())
	}
}
