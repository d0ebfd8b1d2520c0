package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/goleak"

	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/loadgen"
	"github.com/lagscope/lagscope/synth"
)

// Environment of a benchmark server child process: the test binary run
// again, as `lagscope serve` (childServe) or as the same receiver with the
// analysis switched off (childDiscard), on the gRPC address in benchAddrEnv,
// or as either with OTLP/HTTP on that address instead (childServeHTTP,
// childDiscardHTTP).
const (
	benchChildEnv = "LAGSCOPE_BENCH_CHILD"
	benchAddrEnv  = "LAGSCOPE_BENCH_GRPC"
	// benchProfileEnv, set for the benchmark, names the file where an
	// analysing server child writes a CPU profile of its run, suffixed with
	// its mode and GOMAXPROCS.
	benchProfileEnv = "LAGSCOPE_BENCH_CPUPROFILE"
	// benchHeapEnv, set, names the file where an analysing server child
	// writes a heap profile every 5 s (the last one is of the state at the
	// end of the load, which a profile written at exit, after shutdown,
	// would not show).
	benchHeapEnv = "LAGSCOPE_BENCH_HEAPPROFILE"
	// benchCPUEnv, set, is the CPU list (taskset -c) server children are
	// pinned to; benchOtelcolEnv names an OpenTelemetry Collector binary
	// for BenchmarkCollector (.ci/bench-collector builds one).
	benchCPUEnv     = "LAGSCOPE_BENCH_SERVER_CPU"
	benchOtelcolEnv = "LAGSCOPE_BENCH_OTELCOL"
	childServe      = "serve"
	childDiscard    = "discard"
	childServeHTTP  = "serve-http"
	// childDiscardHTTP is childDiscard with OTLP/HTTP instead of gRPC.
	childDiscardHTTP = "discard-http"
)

func TestMain(m *testing.M) {
	if args := os.Getenv(mainChildEnv); args != "" {
		// The test binary as the lagscope command, for tests that signal it.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := exitCode(run(ctx, strings.Split(args, "\x1f"), os.Stdout, os.Stderr), os.Stderr)
		stop()
		os.Exit(code)
	}
	if mode := os.Getenv(benchChildEnv); mode != "" {
		if err := runBenchChild(mode, os.Getenv(benchAddrEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// runBenchChild serves until SIGINT or SIGTERM.
func runBenchChild(mode, addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch mode {
	case childServe, childServeHTTP:
		if file := os.Getenv(benchProfileEnv); file != "" {
			f, err := os.Create(file + "." + mode + ".procs" + strconv.Itoa(runtime.GOMAXPROCS(0)))
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		if file := os.Getenv(benchHeapEnv); file != "" {
			go writeHeapProfiles(ctx, file)
		}
		grpcAddr, httpAddr := addr, ""
		if mode == childServeHTTP {
			grpcAddr, httpAddr = "", addr
		}
		return run(ctx, []string{"serve", "--otlp.grpc-endpoint", grpcAddr, "--otlp.http-endpoint", httpAddr,
			"--web.listen-address", "127.0.0.1:0", "--log.level", "error"}, os.Stdout, os.Stderr)
	case childDiscard, childDiscardHTTP:
		cfg := DefaultConfig().Collector()
		// The same decoding as serve's: the selective decoder keeps what
		// the analysis reads (serve sets Keep the same way).
		cfg.Keep = collector.Selection(DefaultConfig().Analyzer().Reads())
		cfg.GRPCEndpoint, cfg.HTTPEndpoint = addr, ""
		if mode == childDiscardHTTP {
			cfg.GRPCEndpoint, cfg.HTTPEndpoint = "", addr
		}
		r, err := collector.New(cfg, collector.Discard, nil, prometheus.NewRegistry())
		if err != nil {
			return err
		}
		if err := r.Start(ctx); err != nil {
			return err
		}
		<-ctx.Done()
		return r.Shutdown(context.Background())
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// writeHeapProfiles writes a heap profile to file every 5 s until ctx ends.
func writeHeapProfiles(ctx context.Context, file string) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f, err := os.Create(file + ".tmp")
		if err != nil {
			return
		}
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil && cerr == nil {
			_ = os.Rename(file+".tmp", file)
		}
	}
}

// peakRSS returns the peak resident set size of process pid (VmHWM), from
// /proc; ok is false where there is no /proc.
func peakRSS(pid int) (bytes int64, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(data)) {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// benchServer is a server child process.
type benchServer struct {
	cmd  *exec.Cmd
	addr string
}

// startBenchServer runs a server child with GOMAXPROCS=procs and waits until
// it answers exports.
func startBenchServer(b *testing.B, mode string, procs int) *benchServer {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := pinnedCommand(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchChildEnv+"="+mode, benchAddrEnv+"="+addr, "GOMAXPROCS="+strconv.Itoa(procs))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &benchServer{cmd: cmd, addr: addr}
	b.Cleanup(s.stop)
	protocol := "grpc"
	if mode == childServeHTTP || mode == childDiscardHTTP {
		protocol = "http"
	}
	s.waitAnswering(b, protocol, mode)
	return s
}

// pinnedCommand is exec.Command, run under taskset -c $LAGSCOPE_BENCH_SERVER_CPU
// when that is set (taskset execs the program: the pid is the server's).
func pinnedCommand(name string, args ...string) *exec.Cmd {
	if cpu := os.Getenv(benchCPUEnv); cpu != "" {
		return exec.Command("taskset", append([]string{"-c", cpu, name}, args...)...)
	}
	return exec.Command(name, args...)
}

// waitAnswering waits until the server answers an export over protocol.
func (s *benchServer) waitAnswering(b *testing.B, protocol, mode string) {
	b.Helper()
	addr := s.addr
	exp, err := loadgen.NewExporter(protocol, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer exp.Close()
	td, _ := synth.New(synth.Config{Stream: 1 << 31, TracesPerRequest: 1}).Next(time.Now())
	req, _ := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := exp.Export(ctx, req)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("server child (%s) did not answer on %s: %v", mode, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *benchServer) stop() {
	if s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// encodeRequests builds n distinct encoded export requests of the synth
// stream, spread over streams so that no two share an event.
func encodeRequests(b *testing.B, n int) [][]byte {
	b.Helper()
	g := synth.New(synth.Config{Stream: uint32(time.Now().UnixNano())})
	td, _ := g.Next(time.Now())
	var m ptrace.ProtoMarshaler
	reqs := make([][]byte, n)
	for i := range reqs {
		if i > 0 {
			g.Refill(td, time.Now())
		}
		var err error
		if reqs[i], err = m.MarshalTraces(td); err != nil {
			b.Fatal(err)
		}
	}
	return reqs
}

// blast sends reqs through exp from inflight goroutines and returns the
// time it took. Every export must succeed.
func blast(b *testing.B, exp loadgen.Exporter, reqs [][]byte, inflight int) time.Duration {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range inflight {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(reqs)) {
					return
				}
				if rejected, err := exp.Export(context.Background(), reqs[i]); err != nil || rejected > 0 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err, rejected))
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d exports failed; first: %v", n, firstErr.Load())
	}
	return d
}

// cpuTime returns the CPU time (user + system) the process pid has used, from
// /proc; ok is false where there is no /proc.
func cpuTime(pid int) (d time.Duration, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, true
}

// benchRound is the number of requests sent to one server before the
// benchmark switches to the other: the two servers take turns, so that
// other work on the machine slows both alike and the ratio stays fair.
const benchRound = 100

// BenchmarkServeGRPC measures lagscope end to end: OTLP/gRPC on loopback
// into `lagscope serve` running as a child process with GOMAXPROCS=procs,
// from 8 concurrent clients in the benchmark process that send pre-encoded
// requests of 50 synth traces (500 spans, half with a role). In the same run
// it measures the same receiver with the analysis switched off
// (collector.Discard), in alternating rounds of benchRound requests, and
// reports both rates and their ratio. Each server first gets warmRequests
// requests, untimed. One op is one request.
//
// It also reports the CPU the analysing server used, in cores (server-cores)
// and per million spans (server-cpu-s/Mspans), and the CPU per million
// spans of the server without analysis, read from /proc: the client runs on
// the same machine, so with procs=2 on a 2-core machine the server cannot
// have both cores, and its spans per CPU second show how it would scale
// where it had them. And it reports both children's peak RSS (VmHWM,
// server-peak-rss-MiB and -noanalysis).
func BenchmarkServeGRPC(b *testing.B) {
	for _, procs := range []int{1, 2} {
		b.Run("procs="+strconv.Itoa(procs), func(b *testing.B) {
			warm := warmRequests(b.N)
			reqs := encodeRequests(b, warm+b.N)
			spans := float64(b.N * synth.SpansPerTrace * 50)
			on := startBenchServer(b, childServe, procs)
			off := startBenchServer(b, childDiscard, procs)
			expOn, err := loadgen.NewExporter("grpc", on.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer expOn.Close()
			expOff, err := loadgen.NewExporter("grpc", off.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer expOff.Close()
			blast(b, expOn, reqs[:warm], 8)
			blast(b, expOff, reqs[:warm], 8)
			reqs = reqs[warm:]
			var dOn, dOff time.Duration
			b.ResetTimer()
			// The server's CPU time over the whole run: it is idle while
			// the other one is measured.
			c0, ok0 := cpuTime(on.cmd.Process.Pid)
			o0, okO0 := cpuTime(off.cmd.Process.Pid)
			for i := 0; i < len(reqs); i += benchRound {
				round := reqs[i:min(i+benchRound, len(reqs))]
				dOn += blast(b, expOn, round, 8)
				dOff += blast(b, expOff, round, 8)
			}
			c1, ok1 := cpuTime(on.cmd.Process.Pid)
			o1, okO1 := cpuTime(off.cmd.Process.Pid)
			b.StopTimer()
			if rss, ok := peakRSS(on.cmd.Process.Pid); ok {
				b.ReportMetric(float64(rss)/(1<<20), "server-peak-rss-MiB")
			}
			if rss, ok := peakRSS(off.cmd.Process.Pid); ok {
				b.ReportMetric(float64(rss)/(1<<20), "server-peak-rss-MiB-noanalysis")
			}
			cpuOn, cpuOK := c1-c0, ok0 && ok1
			cpuOff, cpuOffOK := o1-o0, okO0 && okO1
			on.stop()
			off.stop()
			rateOn, rateOff := spans/dOn.Seconds(), spans/dOff.Seconds()
			b.ReportMetric(rateOn, "spans/s")
			b.ReportMetric(rateOff, "spans/s-noanalysis")
			b.ReportMetric(rateOn/rateOff, "ratio")
			if cpuOK && cpuOn > 0 {
				b.ReportMetric(cpuOn.Seconds()/dOn.Seconds(), "server-cores")
				b.ReportMetric(cpuOn.Seconds()/spans*1e6, "server-cpu-s/Mspans")
			}
			if cpuOffOK && cpuOff > 0 {
				b.ReportMetric(cpuOff.Seconds()/spans*1e6, "server-cpu-s/Mspans-noanalysis")
			}
		})
	}
}

// otelcolConfig is the Collector's configuration for BenchmarkCollector:
// its OTLP/gRPC receiver into the nop exporter, its own telemetry off.
const otelcolConfig = `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
exporters:
  nop:
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [nop]
`

// BenchmarkCollector compares `lagscope serve` with its defaults against
// the OpenTelemetry Collector's plain otlp -> nop pipeline, each a child
// process with GOMAXPROCS=1 (pinned to $LAGSCOPE_BENCH_SERVER_CPU when set),
// on the same pre-encoded synth requests from the same 8 concurrent
// clients, in alternating rounds of benchRound requests after warmRequests
// untimed ones. It reports both rates, their ratio (lagscope over the
// Collector: above 1, lagscope is faster), both servers' CPU per million
// spans and their ratio (cpu-ratio, the Collector's over lagscope's: above
// 1, lagscope needs less), and both peak RSS. It needs
// $LAGSCOPE_BENCH_OTELCOL, a Collector binary (.ci/bench-collector builds
// one with OCB); without it, it is skipped.
func BenchmarkCollector(b *testing.B) {
	bin := os.Getenv(benchOtelcolEnv)
	if bin == "" {
		b.Skip(benchOtelcolEnv + " names no Collector binary (.ci/bench-collector builds one)")
	}
	warm := warmRequests(b.N)
	reqs := encodeRequests(b, warm+b.N)
	spans := float64(b.N * synth.SpansPerTrace * 50)
	ls := startBenchServer(b, childServe, 1)
	oc := startCollector(b, bin)
	expL, err := loadgen.NewExporter("grpc", ls.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer expL.Close()
	expC, err := loadgen.NewExporter("grpc", oc.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer expC.Close()
	blast(b, expL, reqs[:warm], 8)
	blast(b, expC, reqs[:warm], 8)
	reqs = reqs[warm:]
	var dL, dC time.Duration
	b.ResetTimer()
	l0, okL0 := cpuTime(ls.cmd.Process.Pid)
	c0, okC0 := cpuTime(oc.cmd.Process.Pid)
	for i := 0; i < len(reqs); i += benchRound {
		round := reqs[i:min(i+benchRound, len(reqs))]
		dL += blast(b, expL, round, 8)
		dC += blast(b, expC, round, 8)
	}
	l1, okL1 := cpuTime(ls.cmd.Process.Pid)
	c1, okC1 := cpuTime(oc.cmd.Process.Pid)
	b.StopTimer()
	// CPU per span is the fairer figure where the clients or other work
	// on the machine keep a server from its core: spans/s then measure
	// the clients too.
	if okL0 && okL1 && okC0 && okC1 && l1 > l0 && c1 > c0 {
		cpuL, cpuC := (l1-l0).Seconds()/spans*1e6, (c1-c0).Seconds()/spans*1e6
		b.ReportMetric(cpuL, "server-cpu-s/Mspans")
		b.ReportMetric(cpuC, "server-cpu-s/Mspans-otelcol")
		b.ReportMetric(cpuC/cpuL, "cpu-ratio")
		b.ReportMetric((l1-l0).Seconds()/dL.Seconds(), "server-cores")
	}
	rssL, okL := peakRSS(ls.cmd.Process.Pid)
	rssC, okC := peakRSS(oc.cmd.Process.Pid)
	ls.stop()
	oc.stop()
	rateL, rateC := spans/dL.Seconds(), spans/dC.Seconds()
	b.ReportMetric(rateL, "spans/s")
	b.ReportMetric(rateC, "spans/s-otelcol")
	b.ReportMetric(rateL/rateC, "ratio")
	if okL && okC {
		b.ReportMetric(float64(rssL)/(1<<20), "peak-rss-MiB")
		b.ReportMetric(float64(rssC)/(1<<20), "peak-rss-MiB-otelcol")
	}
}

// startCollector runs the Collector binary bin as a child process with
// GOMAXPROCS=1 and waits until it answers exports.
func startCollector(b *testing.B, bin string) *benchServer {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(b.TempDir(), "otelcol.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(otelcolConfig, addr)), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := pinnedCommand(bin, "--config", cfg)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &benchServer{cmd: cmd, addr: addr}
	b.Cleanup(s.stop)
	s.waitAnswering(b, "grpc", "otelcol")
	return s
}
