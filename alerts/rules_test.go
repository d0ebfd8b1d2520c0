package alerts

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/lagscope/lagscope/analyzer"
)

var update = flag.Bool("update", false, "rewrite "+FileName+" from DefaultConfig")

func TestGenerateMatchesCommittedFile(t *testing.T) {
	got, err := Generate(DefaultConfig())
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if *update {
		if err := os.WriteFile(FileName, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(FileName)
	if err != nil {
		t.Fatalf("%v (run go test ./alerts -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale; run go test ./alerts -update (-committed +generated):\n%s", FileName, diff)
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := Generate(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, err := Generate(DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatal("two Generate calls differ")
		}
	}
}

func TestRulesShape(t *testing.T) {
	groups, err := Rules(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := parser.NewParser(parser.Options{})
	wantAlerts := []string{
		"CQRSProjectionLagHigh", "CQRSProjectionStalled", "CQRSProjectionPositionStalled", "CQRSConsumerGroupStalled", "CQRSEventsUnprojected", "CQRSProjectionDrift",
		"CQRSProjectionStatusSlow", "CQRSProjectionStatusStalled", "CQRSProjectionStatusStopped", "CQRSTracePropagationBroken", "CQRSStaleReads", "CQRSClockSkew",
		"LagscopeRejectingSpans", "LagscopeJoinEvictions", "LagscopeRecoveredPanics", "LagscopeDown",
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var gotAlerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if _, err := p.ParseExpr(r.Expr); err != nil {
				t.Errorf("rule %s%s: %v", r.Record, r.Alert, err)
			}
			if r.Alert == "" {
				continue
			}
			gotAlerts = append(gotAlerts, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[k] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, k)
				}
			}
			// LagscopeDown's value (0 or 1) says nothing; every other alert shows it.
			if r.Alert != "LagscopeDown" && !strings.Contains(r.Annotations["description"], "{{ $value") {
				t.Errorf("%s: description does not show the value", r.Alert)
			}
			// The runbook must have the section the alert links to.
			if !bytes.Contains(readme, []byte("\n## "+r.Alert+"\n")) {
				t.Errorf("%s: README.md has no section %q", r.Alert, "## "+r.Alert)
			}
		}
	}
	if diff := cmp.Diff(gotAlerts, wantAlerts); diff != "" {
		t.Errorf("alerts (-got +want):\n%s", diff)
	}
}

// TestSkewAlertIsABucketBoundary: CQRSClockSkew reads the bucket at
// SkewAlertSeconds, which must be one of the histogram's, or the alert
// compares with a series that does not exist.
func TestSkewAlertIsABucketBoundary(t *testing.T) {
	want, err := strconv.ParseFloat(SkewAlertSeconds, 64)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(analyzer.SkewBuckets, want) {
		t.Errorf("SkewAlertSeconds %s is not a bucket boundary of analyzer.SkewBuckets %v", SkewAlertSeconds, analyzer.SkewBuckets)
	}
}

func TestThresholdsAreParameters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LagThreshold = 2500 * time.Millisecond
	cfg.For = 3 * time.Minute
	cfg.DriftTolerance = 0.25
	cfg.Job = "lagscope-prod"
	got, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{") > 2.5\n", "for: 3m", "< 0.75", "> 1.25", `up{job="lagscope-prod"}`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("generated rules do not contain %q", want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{"zero lag threshold", func(c *Config) { c.LagThreshold = 0 }},
		{"negative for", func(c *Config) { c.For = -time.Second }},
		{"drift tolerance 0", func(c *Config) { c.DriftTolerance = 0 }},
		{"drift tolerance 1", func(c *Config) { c.DriftTolerance = 1 }},
		{"reject ratio 1", func(c *Config) { c.RejectRatio = 1 }},
		{"stale read ratio 1", func(c *Config) { c.StaleReadRatio = 1 }},
		{"stale read after between buckets", func(c *Config) { c.StaleReadAfter = 1500 * time.Millisecond }},
		{"empty job", func(c *Config) { c.Job = "" }},
		{"empty runbook", func(c *Config) { c.RunbookURL = "" }},
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.modify(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Error("Validate() = nil, want an error")
			}
			if _, err := Generate(cfg); err == nil {
				t.Error("Generate() = nil error, want one")
			}
		})
	}
}

func TestCheckRejectsBadRules(t *testing.T) {
	bad := []byte("groups:\n- name: g\n  rules:\n  - record: x\n    expr: 'sum(('\n")
	if err := Check(bad); err == nil {
		t.Error("Check accepted an unparsable expression")
	}
}

// promtool runs the Prometheus rule checker and unit tests on the committed
// files when promtool is installed.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH; install it (apt-get install prometheus) to check the rules and run their unit tests")
	}
	return path
}

func TestPromtoolCheckRules(t *testing.T) {
	bin := promtool(t)
	out, err := exec.Command(bin, "check", "rules", "--lint=all", "--lint-fatal", FileName).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	bin := promtool(t)
	files, err := filepath.Glob("*_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *_test.yaml rule tests")
	}
	out, err := exec.Command(bin, append([]string{"test", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
