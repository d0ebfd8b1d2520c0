package load_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/load"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, tp trace.TracerProvider) *app.App {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Store, cfg.Listen, cfg.TracerProvider = "sqlite::memory:", "127.0.0.1:0", tp
	cfg.Projection.PollInterval = 10 * time.Millisecond
	a, err := app.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return a
}

func TestRunCount(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	a := serve(t, tp)
	var progress bytes.Buffer
	g, err := load.New(load.Config{
		BaseURL: "http://" + a.Addr(), Rate: 500, Count: 120, Concurrency: 4, Seed: 7,
		TracerProvider: tp, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Commands != 120 || sum.Failed != 0 {
		t.Errorf("Run() commands = %d, failed = %d; want 120, 0: %v", sum.Commands, sum.Failed, sum.Outcomes)
	}
	if sum.Reads != 120 {
		t.Errorf("Run() reads = %d, want one per successful command", sum.Reads)
	}
	if diff := cmp.Diff(g.Counters(), sum.Counters); diff != "" {
		t.Errorf("Counters() after Run differs from the summary (-got +want):\n%s", diff)
	}
	for _, kind := range []string{load.KindCreate, load.KindPay, load.KindShip, load.KindCancel} {
		if sum.Outcomes[kind][load.OutcomeOK] == 0 {
			t.Errorf("no successful %s in %v", kind, sum.Outcomes)
		}
	}
	var fresh int64
	for _, o := range []string{load.OutcomeOK, load.OutcomeStale, load.OutcomeNotFound} {
		fresh += sum.Outcomes[load.KindRead][o]
	}
	if fresh != sum.Reads {
		t.Errorf("read outcomes %v do not add up to %d reads", sum.Outcomes[load.KindRead], sum.Reads)
	}
	if sum.CommandP50 <= 0 || sum.CommandP99 < sum.CommandP50 {
		t.Errorf("command latency p50 %v, p99 %v", sum.CommandP50, sum.CommandP99)
	}
	// A bytes.Buffer is not a terminal: plain lines, no bar.
	if got := progress.String(); !strings.HasPrefix(got, "commands: 120 in ") || strings.ContainsAny(got, "\r\x1b") {
		t.Errorf("progress to a non-terminal = %q, want a plain line \"commands: 120 in ...\" without a bar", got)
	}
	var out strings.Builder
	if _, err := sum.WriteTo(&out); err != nil || !strings.Contains(out.String(), "commands: 120") {
		t.Errorf("WriteTo() = %q, %v", out.String(), err)
	}

	// Client spans are the parents of the server spans: traces start at the
	// load generator.
	clients := map[trace.SpanID]bool{}
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			clients[s.SpanContext().SpanID()] = true
		}
	}
	servers := 0
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer {
			servers++
			if !clients[s.Parent().SpanID()] {
				t.Errorf("server span %q has no client parent", s.Name())
				break
			}
		}
	}
	if servers != 240 {
		t.Errorf("got %d server spans, want 240", servers)
	}
}

func TestRunDuration(t *testing.T) {
	a := serve(t, nil)
	g, err := load.New(load.Config{BaseURL: "http://" + a.Addr(), Rate: 100, Duration: 500 * time.Millisecond, NoReads: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Run() took %v for a 500ms duration", el)
	}
	// 100/s for 0.5s: about 50; allow for a slow, shared machine.
	if sum.Commands < 10 || sum.Commands > 60 {
		t.Errorf("Run() sent %d commands, want about 50", sum.Commands)
	}
	if sum.Reads != 0 {
		t.Errorf("Run() with NoReads read %d times", sum.Reads)
	}
}

// TestRunNoRateLimit: without a rate limit the generator sends as fast as
// its workers go, far above the default 10/s.
func TestRunNoRateLimit(t *testing.T) {
	a := serve(t, nil)
	g, err := load.New(load.Config{BaseURL: "http://" + a.Addr(), NoRateLimit: true, Count: 100, NoReads: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sum, err := g.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Commands != 100 || sum.Failed != 0 {
		t.Errorf("Run() commands = %d, failed = %d; want 100, 0", sum.Commands, sum.Failed)
	}
	// At the default 10/s, 100 commands take 10s.
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Run() took %v for 100 commands without a rate limit", el)
	}
}

func TestRunCancelled(t *testing.T) {
	a := serve(t, nil)
	g, err := load.New(load.Config{BaseURL: "http://" + a.Addr(), Rate: 50})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan load.Summary)
	go func() {
		sum, _ := g.Run(ctx)
		done <- sum
	}()
	deadline := time.Now().Add(10 * time.Second)
	for g.Counters().Commands < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no commands sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case sum := <-done:
		if sum.Commands < 3 {
			t.Errorf("summary has %d commands, want at least 3", sum.Commands)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run() did not return after cancel")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     load.Config
		wantErr bool
	}{
		{name: "minimal", cfg: load.Config{BaseURL: "http://127.0.0.1:8080"}},
		{name: "no base url", cfg: load.Config{}, wantErr: true},
		{name: "negative rate", cfg: load.Config{BaseURL: "http://x", Rate: -1}, wantErr: true},
		{name: "read probability above 1", cfg: load.Config{BaseURL: "http://x", ReadAfterWrite: 2}, wantErr: true},
		{name: "negative weight", cfg: load.Config{BaseURL: "http://x", Mix: load.Mix{Create: -1}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
