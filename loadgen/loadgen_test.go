package loadgen_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/loadgen"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// target is a lagscope built from its components as `lagscope serve` wires
// them (cmd/lagscope's Server is in package main): the OTLP receivers on
// loopback feeding an analyzer, whose metrics an httptest server exposes.
type target struct {
	grpcAddr, httpAddr, metricsURL string
}

func startTarget(t *testing.T) *target {
	t.Helper()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	a, err := analyzer.New(analyzer.DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := collector.DefaultConfig()
	cfg.GRPCEndpoint, cfg.HTTPEndpoint = "127.0.0.1:0", "127.0.0.1:0"
	r, err := collector.New(cfg, a, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("stop receivers: %v", err)
		}
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("stop analyzer: %v", err)
		}
		web.Close()
	})
	return &target{grpcAddr: r.GRPCAddr().String(), httpAddr: r.HTTPAddr().String(), metricsURL: web.URL + "/metrics"}
}

// TestRun sends load to an in-process lagscope over both transports and
// checks that Run finds the target's metrics in agreement with what it sent.
func TestRun(t *testing.T) {
	tg := startTarget(t)
	for _, tc := range []struct {
		protocol, endpoint string
	}{
		{"grpc", tg.grpcAddr},
		{"http", tg.httpAddr},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			c := loadgen.DefaultConfig()
			c.Endpoint, c.Protocol, c.Rate, c.Duration, c.Batch = tc.endpoint, tc.protocol, 20000, 500*time.Millisecond, 10
			c.MetricsURL, c.Settle = tg.metricsURL, 10*time.Second
			var out, progress bytes.Buffer
			if err := loadgen.Run(context.Background(), c, &out, &progress); err != nil {
				t.Fatalf("Run: %v\nout:\n%s\nprogress:\n%s", err, out.String(), progress.String())
			}
			for _, want := range []string{"accepted:", "spans/s", "latency:   p50", "metrics agree with what was sent"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), "failed:") {
				t.Errorf("some requests failed:\n%s", out.String())
			}
			// A bytes.Buffer is not a terminal: plain lines, no bar.
			if got := progress.String(); !strings.Contains(got, "\nspans: ") || strings.ContainsAny(got, "\r\x1b") {
				t.Errorf("progress to a non-terminal = %q, want plain lines (\"spans: ...\") without a bar", got)
			}
		})
	}
}

// TestRunDetectsDisagreement points the check at a target that analyses
// nothing that was sent: the check must fail.
func TestRunDetectsDisagreement(t *testing.T) {
	sink := startTarget(t)    // receives the spans
	watched := startTarget(t) // whose metrics are checked
	c := loadgen.DefaultConfig()
	c.Endpoint, c.Rate, c.Duration, c.Batch = sink.grpcAddr, 5000, 200*time.Millisecond, 5
	c.MetricsURL, c.Settle = watched.metricsURL, 500*time.Millisecond
	var out bytes.Buffer
	err := loadgen.Run(context.Background(), c, &out, nil)
	if err == nil || !strings.Contains(out.String(), "MISMATCH") {
		t.Fatalf("Run = %v, want a mismatch; output:\n%s", err, out.String())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*loadgen.Config)
		wantErr bool
	}{
		{"defaults", func(*loadgen.Config) {}, false},
		{"http", func(c *loadgen.Config) { c.Protocol = "http" }, false},
		{"unlimited rate", func(c *loadgen.Config) { c.Rate = 0 }, false},
		{"unknown protocol", func(c *loadgen.Config) { c.Protocol = "udp" }, true},
		{"negative rate", func(c *loadgen.Config) { c.Rate = -1 }, true},
		{"no duration", func(c *loadgen.Config) { c.Duration = 0 }, true},
		{"no workers", func(c *loadgen.Config) { c.Workers = 0 }, true},
		{"empty batch", func(c *loadgen.Config) { c.Batch = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := loadgen.DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Errorf("Validate() = %v, want error: %v", err, tt.wantErr)
			}
		})
	}
}

// TestRunRefusesInvalidConfig: Run validates before it sends anything.
func TestRunRefusesInvalidConfig(t *testing.T) {
	c := loadgen.DefaultConfig()
	c.Workers = 0
	var out bytes.Buffer
	if err := loadgen.Run(context.Background(), c, &out, nil); err == nil {
		t.Fatal("Run with 0 workers: no error")
	}
	if diff := cmp.Diff(out.String(), ""); diff != "" {
		t.Errorf("Run wrote a report for an invalid config (-got +want):\n%s", diff)
	}
}
