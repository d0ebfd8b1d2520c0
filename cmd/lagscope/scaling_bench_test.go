package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/synth"
)

// rawPoster sends pre-encoded OTLP/HTTP requests on persistent connections,
// one write per request, and reads each response with http.ReadResponse. It
// costs its process a few microseconds of CPU per request, where an OTLP
// exporter (gRPC above all) costs about as much as the server's decoding:
// with it, a server child with GOMAXPROCS=2 on a 2-core machine has most of
// both cores.
type rawPoster struct {
	conns []*rawConn
}

type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

// frame returns an OTLP/HTTP protobuf request for body, headers included.
func frame(body []byte) []byte {
	head := "POST " + collector.TracesHTTPPath + " HTTP/1.1\r\nHost: lagscope\r\nContent-Type: application/x-protobuf\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	return append([]byte(head), body...)
}

func dialRaw(addr string, n int) (*rawPoster, error) {
	p := &rawPoster{}
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		p.conns = append(p.conns, &rawConn{c: c, br: bufio.NewReader(c)})
	}
	return p, nil
}

func (p *rawPoster) Close() {
	for _, rc := range p.conns {
		rc.c.Close()
	}
}

// post sends one framed request on rc and checks the answer is 200.
func (rc *rawConn) post(framed []byte) error {
	if _, err := rc.c.Write(framed); err != nil {
		return err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// send posts frames, one connection per goroutine, and returns the time it
// took. Every request must succeed.
func (p *rawPoster) send(b *testing.B, frames [][]byte) time.Duration {
	b.Helper()
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for _, rc := range p.conns {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(frames)) {
					return
				}
				if err := rc.post(frames[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if firstErr != nil {
		b.Fatalf("post: %v", firstErr)
	}
	return d
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServeScaling measures how `lagscope serve` scales from one core
// to two, end to end, as a ratio in one run: two server children, one with
// GOMAXPROCS=1 and one with GOMAXPROCS=2, each on its defaults (one analysis
// shard and 16), take turns in rounds of benchRound pre-encoded 500-span
// requests of the synth stream over OTLP/HTTP from 8 connections. The client
// is rawPoster, so that the GOMAXPROCS=2 server has most of a 2-core
// machine: client-cores reports what the client used while that server was
// measured, server-cores-* what each server used. Each server first gets
// warmRequests requests, untimed, so that the analysis' tables have grown.
// The analysis=off variant does the same with the receiver alone
// (collector.Discard): what scaling the transport and decoding allow on the
// machine. One op is one request to each server.
func BenchmarkServeScaling(b *testing.B) {
	for _, mode := range []string{childServeHTTP, childDiscardHTTP} {
		name := "analysis=on"
		if mode == childDiscardHTTP {
			name = "analysis=off"
		}
		b.Run(name, func(b *testing.B) { benchmarkScaling(b, mode) })
	}
}

func benchmarkScaling(b *testing.B, mode string) {
	warm := warmRequests(b.N)
	reqs := encodeRequests(b, 2*(warm+b.N))
	frames := make([][]byte, len(reqs))
	for i, r := range reqs {
		frames[i] = frame(r)
	}
	one := startBenchServer(b, mode, 1)
	two := startBenchServer(b, mode, 2)
	p1, err := dialRaw(one.addr, 8)
	if err != nil {
		b.Fatal(err)
	}
	defer p1.Close()
	p2, err := dialRaw(two.addr, 8)
	if err != nil {
		b.Fatal(err)
	}
	defer p2.Close()
	p1.send(b, frames[:warm])
	p2.send(b, frames[warm:2*warm])
	frames = frames[2*warm:]
	var d1, d2, client2 time.Duration
	b.ResetTimer()
	s1, _ := cpuTime(one.cmd.Process.Pid)
	s2, _ := cpuTime(two.cmd.Process.Pid)
	for i := 0; i < b.N; i += benchRound {
		n := min(benchRound, b.N-i)
		d1 += p1.send(b, frames[2*i:2*i+n])
		c0 := selfCPU()
		d2 += p2.send(b, frames[2*i+n:2*i+2*n])
		client2 += selfCPU() - c0
	}
	e1, ok1 := cpuTime(one.cmd.Process.Pid)
	e2, ok2 := cpuTime(two.cmd.Process.Pid)
	b.StopTimer()
	one.stop()
	two.stop()
	spans := float64(b.N * synth.SpansPerTrace * 50)
	r1, r2 := spans/d1.Seconds(), spans/d2.Seconds()
	b.ReportMetric(r1, "spans/s-1cpu")
	b.ReportMetric(r2, "spans/s-2cpu")
	b.ReportMetric(r2/r1, "speedup")
	b.ReportMetric(client2.Seconds()/d2.Seconds(), "client-cores")
	if ok1 && ok2 {
		b.ReportMetric((e1-s1).Seconds()/d1.Seconds(), "server-cores-1cpu")
		b.ReportMetric((e2-s2).Seconds()/d2.Seconds(), "server-cores-2cpu")
		b.ReportMetric((e1-s1).Seconds()/spans*1e6, "cpu-s/Mspans-1cpu")
		b.ReportMetric((e2-s2).Seconds()/spans*1e6, "cpu-s/Mspans-2cpu")
	}
}

// warmRequests is the number of requests a benchmark sends a server before
// it measures: 2000 (a million spans, enough for the parent-span tables to
// grow to their default bound, where growing them is over a third of the
// analysis' cost before), or 2n for short runs such as CI's -benchtime=1x.
func warmRequests(n int) int { return min(2000, 2*n) }
