package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/synth"
)

// encodeGroups is publish without the write, which it stands for with a
// copy of each message (the Writer copies them into its produce request;
// publish reuses their buffers).
func encodeGroups(b *testing.B, sc *ingestScratch, n int, dst [][]byte) [][]byte {
	if _, err := sc.batches(n, func() factwire.Header { return factwire.Header{Producer: 1, Seq: 1} }); err != nil {
		b.Fatal(err)
	}
	for _, m := range sc.msgs {
		dst = append(dst, append([]byte(nil), m.Value...))
	}
	return dst
}

// BenchmarkKafkaRoles measures, through the in-process broker, how fast one
// instance of a role drains the traces topic: all (serve) against ingest,
// one message of one synth trace each, as the Collector's exporter writes
// them. Run with -benchtime=1x; it reports spans/s. ingest-produce2ms is
// ingest with each produce request held 2 ms at the broker before it is
// handled, the round trip of a real cluster that the in-process broker
// does not have.
func BenchmarkKafkaRoles(b *testing.B) {
	const traces = 2000
	for _, bc := range []struct {
		name, role string
		produceRTT time.Duration
	}{
		{RoleAll, RoleAll, 0},
		{RoleIngest, RoleIngest, 0},
		{"ingest-produce2ms", RoleIngest, 2 * time.Millisecond},
	} {
		role := bc.role
		b.Run(bc.name, func(b *testing.B) {
			c := benchCluster(b)
			addr := c.ListenAddrs()[0]
			g := synth.New(synth.Config{TracesPerRequest: 1})
			var m ptrace.ProtoMarshaler
			var msgs []kafka.Message
			spans := 0
			for range traces {
				td, batch := g.Next(time.Now())
				v, err := m.MarshalTraces(td)
				if err != nil {
					b.Fatal(err)
				}
				id := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID().String()
				msgs = append(msgs, kafka.Message{Key: []byte(id), Value: v})
				spans += batch.Spans
			}
			w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: tracesTopic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond, Transport: testTransport}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				b.Fatal(err)
			}
			w.Close()
			if bc.produceRTT > 0 {
				c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					// Yields to the other connections (fetches, commits)
					// while this request waits.
					c.SleepControl(func() { time.Sleep(bc.produceRTT) })
					return nil, nil, false
				})
			}
			for b.Loop() {
				cfg := roleConfig(addr, role, "bench-"+role)
				s, err := New(cfg, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := s.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				for receivedSpans(b, s.Registry) < float64(spans) {
					if time.Since(start) > time.Minute {
						b.Fatal("timed out")
					}
					time.Sleep(5 * time.Millisecond)
				}
				b.ReportMetric(float64(spans)/time.Since(start).Seconds(), "spans/s")
				_ = s.Shutdown(context.Background())
			}
		})
	}
}

func benchCluster(b *testing.B) *kfake.Cluster {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, tracesTopic, factsTopic))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		testTransport.CloseIdleConnections()
		c.Close()
	})
	return c
}

func receivedSpans(b *testing.B, g prometheus.Gatherer) float64 {
	mfs, err := g.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "lagscope_received_spans_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// BenchmarkStagesRatio measures, in one run, the CPU per span of the two
// stages (ingest: Resolve, group by partition, encode; join: decode,
// pair, apply)
// against one process (all: Analyzer.ConsumeTraces), broker excluded, and
// reports (ingest+join)/all as "ratio" (issue 13's target: at most 1.5).
// Each round refills the same requests with new traces (untimed: a request
// replayed unchanged would be all retries), then runs the three phases on
// them in turn, so that the machine's drift between runs cancels out. CPU is
// the process's (getrusage), so the garbage collector's workers count too;
// "wall-ratio" is the same from the phases' elapsed time. The analysis'
// tables are grown first (warm rounds), as in BenchmarkServeGRPC.
//
// traces=1 is the shape of the Collector's kafka exporter with
// partition_traces_by_id (one trace a message, so one Resolve and one facts
// batch per partition for every 10 spans); traces=50 that of OTLP requests.
//
//	go test -run '^$' -bench StagesRatio -benchtime=400x -count 3 ./server
func BenchmarkStagesRatio(b *testing.B) {
	for _, traces := range []int{50, 1} {
		b.Run(fmt.Sprintf("traces=%d", traces), func(b *testing.B) { benchStagesRatio(b, traces) })
	}
}

func benchStagesRatio(b *testing.B, traces int) {
	// 4000 spans a round; tables grown by 1M spans first.
	reqs, warm := 400/traces, 250
	cfg := analyzer.DefaultConfig()
	a, err := analyzer.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	r, err := analyzer.NewResolver(cfg, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	r.MarkSpanKeyed() // as newIngest
	j, err := analyzer.NewJoiner(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	j.RecordLearned() // as newJoin
	m, err := newRoleMetrics(prometheus.NewRegistry(), RoleJoin)
	if err != nil {
		b.Fatal(err)
	}
	pr := newPairing(cfg, m.pairing, j.Holds) // as newJoin
	var extra, resolved []analyzer.Fact
	g := synth.New(synth.Config{TracesPerRequest: traces})
	tds := make([]ptrace.Traces, reqs)
	for i := range tds {
		tds[i], _ = g.Next(time.Now())
	}
	sc := &ingestScratch{}
	var batches [][]byte
	var facts []analyzer.Fact
	var dec factwire.Decoder // as join.handle
	var cpu, wall [3]time.Duration
	var allocs [3]uint64
	var ms runtime.MemStats
	spans := 0
	phases := [3]func(now time.Time){
		func(time.Time) {
			for _, td := range tds {
				if err := a.ConsumeTraces(context.Background(), td); err != nil {
					b.Fatal(err)
				}
			}
		},
		func(now time.Time) {
			batches = batches[:0]
			for _, td := range tds {
				sc.facts = r.ResolveView(sc.facts[:0], td, now) // as ingest.ConsumeTraces
				batches = encodeGroups(b, sc, partitions, batches)
			}
		},
		func(now time.Time) {
			for _, batch := range batches {
				if _, facts, err = dec.Decode(facts[:0], batch); err != nil {
					b.Fatal(err)
				}
				// As join.handle (the synth stream has no projection
				// keyed by its span: no partition count needed).
				extra, resolved = pr.pair(extra[:0], resolved[:0], facts, 0, 0, now.UnixNano())
				j.Apply(facts, now)
				if len(extra) > 0 {
					j.Apply(extra, now)
				}
				_ = j.TakeLearned(nil)
			}
		},
	}
	// The phases' order turns round by round (join always after ingest),
	// so that none always pays for the garbage the one before left.
	orders := [...][3]int{{0, 1, 2}, {1, 0, 2}, {1, 2, 0}}
	n := 0
	round := func(timed bool) {
		now := time.Now()
		for _, td := range tds {
			g.Refill(td, now)
		}
		for _, p := range orders[n%len(orders)] {
			runtime.ReadMemStats(&ms) // outside the timed part: it stops the world
			m0 := ms.Mallocs
			c0, w0 := processCPU(b), time.Now()
			phases[p](now)
			c1, w1 := processCPU(b), time.Now()
			runtime.ReadMemStats(&ms)
			if timed {
				cpu[p] += c1 - c0
				wall[p] += w1.Sub(w0)
				allocs[p] += ms.Mallocs - m0
			}
		}
		n++
		if timed {
			for _, td := range tds {
				spans += td.SpanCount()
			}
		}
	}
	for range warm {
		round(false)
	}
	for b.Loop() {
		round(true)
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(spans) }
	b.ReportMetric(per(cpu[0]), "all-ns/span")
	b.ReportMetric(per(cpu[1]), "ingest-ns/span")
	b.ReportMetric(per(cpu[2]), "join-ns/span")
	b.ReportMetric(float64(cpu[1]+cpu[2])/float64(cpu[0]), "ratio")
	b.ReportMetric(float64(allocs[1]+allocs[2])/float64(spans), "stages-allocs/span")
	b.ReportMetric(float64(allocs[0])/float64(spans), "all-allocs/span")
	b.ReportMetric(float64(wall[1]+wall[2])/float64(wall[0]), "wall-ratio")
}

// processCPU returns the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
