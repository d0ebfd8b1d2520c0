package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lagscope/lagscope/server"
)

// mainChildEnv, set to arguments separated by US (0x1f), makes the test binary run as
// the lagscope command with them (see TestMain).
const mainChildEnv = "LAGSCOPE_TEST_MAIN_ARGS"

// TestServeSIGTERM runs `lagscope serve` as a process, holds a stalled HTTP
// request open, sends events right before SIGTERM while a scraper scrapes
// every 200ms, and checks issue 10's shutdown: both transports stop
// accepting at once, the stalled request is cut, the last scrape counts the
// last events, and the process exits 0 within its budget.
func TestServeSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	for _, tt := range []struct {
		name        string
		stalled     bool          // hold a stalled HTTP request open
		scrapeEvery time.Duration // the scraper's interval
	}{
		// The stalled request holds the shutdown for its read deadline.
		{name: "stalled request", stalled: true, scrapeEvery: 200 * time.Millisecond},
		// Nothing holds the shutdown: only the wait for the final scrape
		// gets the last events into a scrape.
		{name: "final scrape", scrapeEvery: time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) { testServeSIGTERM(t, tt.stalled, tt.scrapeEvery) })
	}
}

func testServeSIGTERM(t *testing.T, stall bool, scrapeEvery time.Duration) {
	args := []string{"serve", "--otlp.grpc-endpoint=127.0.0.1:0", "--otlp.http-endpoint=127.0.0.1:0",
		"--web.listen-address=127.0.0.1:0", "--otlp.read-timeout=3s", "--join.deadline=1s"}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainChildEnv+"="+strings.Join(args, "\x1f"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var logs bytes.Buffer
	var logsMu sync.Mutex
	addrs := make(chan map[string]string, 1)
	go func() {
		re := regexp.MustCompile(`(otlp_grpc|otlp_http|metrics)=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logsMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logsMu.Unlock()
			if strings.Contains(sc.Text(), "lagscope serving") {
				m := map[string]string{}
				for _, g := range re.FindAllStringSubmatch(sc.Text(), -1) {
					m[g[1]] = g[2]
				}
				addrs <- m
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var a map[string]string
	select {
	case a = <-addrs:
	case <-time.After(30 * time.Second):
		t.Fatal("lagscope serve did not start")
	}
	metricsURL := a["metrics"]

	// A scraper, as Prometheus would be, every 200ms; it keeps the last
	// answer it got.
	var lastScrape []byte
	scrapes := 0
	var scrapeMu sync.Mutex
	stopScraping := make(chan struct{})
	scraperDone := make(chan struct{})
	go func() {
		defer close(scraperDone)
		for {
			select {
			case <-stopScraping:
				return
			case <-time.After(scrapeEvery):
			}
			resp, err := http.Get(metricsURL)
			if err != nil {
				continue
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				scrapeMu.Lock()
				lastScrape = b
				scrapes++
				scrapeMu.Unlock()
			}
		}
	}()

	if stall {
		// A stalled HTTP request: it declares a body and sends a little
		// of it.
		stalled, err := net.Dial("tcp", a["otlp_http"])
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		fmt.Fprintf(stalled, "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n0123456789")
	}

	// Two scrapes first, so that lagscope knows the scrape interval.
	waitFor(t, 10*time.Second, "two scrapes", func() (bool, string) {
		scrapeMu.Lock()
		defer scrapeMu.Unlock()
		return scrapes >= 2, fmt.Sprintf("%d scrapes", scrapes)
	})
	// Right after a scrape, so that the next is a whole interval away.
	scrapeMu.Lock()
	seen := scrapes
	scrapeMu.Unlock()
	waitFor(t, 10*time.Second, "a scrape", func() (bool, string) {
		scrapeMu.Lock()
		defer scrapeMu.Unlock()
		return scrapes > seen, fmt.Sprintf("%d scrapes", scrapes)
	})

	// Events sent right before the signal: only a scrape lagscope waits for
	// after them can count them all.
	conn, err := grpc.NewClient(a["otlp_grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)
	normal := hostileSpan{eventType: "OrderCreated", aggType: "Order", command: "CreateOrder", projection: "orders_view",
		service: "orders", query: "GetOrder", version: "1"}
	const events = 20
	for i := range events {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(normal.traces(1000+i)))
		cancel()
		if err != nil {
			t.Fatalf("export %d: %v", i, err)
		}
	}
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// While the stalled request holds the HTTP server in its shutdown, the
	// gRPC port must already refuse connections.
	refused := false
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		c, err := net.DialTimeout("tcp", a["otlp_grpc"], 200*time.Millisecond)
		if err != nil {
			refused = true
			break
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if !refused && stall {
		t.Error("the OTLP/gRPC port still accepts connections 2s after SIGTERM")
	}

	var waitErr error
	select {
	case waitErr = <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("lagscope did not exit within 20s of SIGTERM")
	}
	took := time.Since(signalled)
	close(stopScraping)
	<-scraperDone
	logsMu.Lock()
	out := logs.String()
	logsMu.Unlock()
	if waitErr != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			t.Errorf("exit code %d after SIGTERM, want 0; log:\n%s", ee.ExitCode(), out)
		} else {
			t.Errorf("wait: %v", waitErr)
		}
	}
	if took > server.ShutdownBudget+2*time.Second {
		t.Errorf("shutdown took %v, budget %v", took, server.ShutdownBudget)
	}
	// The stalled request was cut (its read deadline is 3s), not waited
	// for until the end of the budget.
	if took > 8*time.Second {
		t.Errorf("shutdown took %v: the stalled request was not cut by its read deadline", took)
	}

	scrapeMu.Lock()
	body := lastScrape
	scrapeMu.Unlock()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse the last scrape: %v", err)
	}
	if got := value(mfs, "lagscope_received_spans_total", map[string]string{"transport": "grpc"}); got != 4*events {
		t.Errorf("last scrape: %v spans received over gRPC, want %d", got, 4*events)
	}
	if got := value(mfs, "cqrs_events_projected_total", map[string]string{"projection": "orders_view"}); got != events {
		t.Errorf("last scrape: %v events projected, want %d", got, events)
	}
	if !strings.Contains(out, "shut down cleanly") {
		t.Errorf("no clean shutdown in the log:\n%s", out)
	}
}
