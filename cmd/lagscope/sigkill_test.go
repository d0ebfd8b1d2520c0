package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/collector/pdata/ptrace"

	dto "github.com/prometheus/client_model/go"

	"github.com/lagscope/lagscope/server"
)

// Topics and groups of TestScaleOutSIGKILL, as lagscope's defaults.
const (
	killTracesTopic = "otlp_spans"
	killFactsTopic  = "lagscope_facts"
	killGroup       = "lagscope"
	killJoinGroup   = killGroup + server.JoinGroupSuffix
	killPartitions  = 4
	// killWait bounds every wait of the test: a killed member's partitions
	// move after the session timeout (10s), and the machine is busy.
	killWait = 60 * time.Second
	// requestTimedOut is Kafka's REQUEST_TIMED_OUT error code: a commit
	// refused with it is kept and retried by kafka-go.
	requestTimedOut = 7
)

// TestScaleOutSIGKILL kills (SIGKILL) an ingest and then a join instance of
// a two-stage deployment mid-stream, each a `lagscope serve` process against
// an in-process broker, and checks the README's guarantees for crashes
// exactly:
//
//   - ingest: the traces messages since its last commit are resolved and
//     published again by the next owner; the join ignores the repeated
//     appends and counts the repeated projections in
//     cqrs_events_duplicated_total (and their queries again in
//     cqrs_queries_total); nothing is lost and nothing is counted twice as
//     appended or projected.
//   - join: the next owner re-applies the batches since the last commit;
//     nothing is lost; what counts twice is exactly what Prometheus scraped
//     from the killed instance after that commit.
//
// So that "since the last commit" holds a known set of messages however the
// killed process's commit ticks fell, the broker refuses the victim's
// group's commits from a point on until the group has rebalanced: a wide
// commit interval, with events streaming in all along.
func TestScaleOutSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	b := newKillBroker(t)
	ingest1 := startChild(t, b.args("ingest")...)
	join1 := startChild(t, b.args("join")...)
	b.waitMembers(t, killGroup, nil)
	b.waitMembers(t, killJoinGroup, nil)

	// Phase 1: everything consumed, applied and committed.
	const n1, n2, n3 = 100, 100, 100
	b.produce(t, n1)
	b.drained(t)

	// Phase 2: kill -9 the ingest instance with n2 events and a stream
	// consumed since its last commit.
	b.block(killGroup, true)
	b.produce(t, n2)
	stream := b.stream(t)
	b.waitCounted(t, join1, n1+n2)
	victims := b.members(t, killGroup)
	ingest1.kill(t)
	ingest2 := startChild(t, b.args("ingest")...)
	b.waitMembers(t, killGroup, victims)
	b.block(killGroup, false)
	streamed := stream.stop()
	b.drained(t)
	got := counts(join1.scrape(t))
	total := b.produced()
	if got.appended != float64(total) || got.projected != float64(total) || got.unprojected != 0 {
		t.Errorf("after SIGKILL of the ingest instance: appended %v, projected %v, unprojected %v; want %d, %d, 0 (nothing lost, nothing counted twice)",
			got.appended, got.projected, got.unprojected, total, total)
	}
	// Every phase-2 event was resolved twice (its commit was refused), and
	// so were the streamed ones ingest1 had taken.
	if got.duplicated < n2 || got.duplicated > float64(n2+streamed) {
		t.Errorf("after SIGKILL of the ingest instance: %v duplicated projections, want between %d and %d (the replayed messages)", got.duplicated, n2, n2+streamed)
	}
	// A replayed message's query is counted again: queries are not
	// deduplicated (README, Scale-out).
	if got.queries != float64(total)+got.duplicated {
		t.Errorf("after SIGKILL of the ingest instance: %v queries, want %d + %v replayed", got.queries, total, got.duplicated)
	}
	t.Logf("ingest SIGKILL: %d events, %v projections replayed and counted as duplicates, %v queries counted", total, got.duplicated, got.queries)

	// Phase 3: kill -9 the join instance with n3 events and a stream applied
	// since its last commit, after a last scrape.
	committed := counts(join1.scrape(t)) // all of it committed (drained)
	b.block(killJoinGroup, true)
	b.produce(t, n3)
	phase3 := b.produced()
	stream = b.stream(t)
	b.waitCounted(t, join1, phase3)
	last := counts(join1.scrape(t)) // Prometheus's last scrape of it
	victims = b.members(t, killJoinGroup)
	join1.kill(t)
	join2 := startChild(t, b.args("join")...)
	b.waitMembers(t, killJoinGroup, victims)
	b.block(killJoinGroup, false)
	stream.stop()
	b.drained(t)
	total = b.produced()
	now := counts(join2.scrape(t))
	// The new owner counts exactly the events since the last commit: none
	// before it (nothing counted twice there), all after it (nothing lost).
	if want := float64(total) - committed.appended; now.appended != want {
		t.Errorf("after SIGKILL of the join instance: the new one counts %v appended, want %v (every event since the last commit)", now.appended, want)
	}
	if want := float64(total) - committed.projected; now.projected != want {
		t.Errorf("after SIGKILL of the join instance: the new one counts %v projected, want %v", now.projected, want)
	}
	// Summed over both, what counts twice is what the last scrape of the
	// killed instance counted since the last commit.
	twice := last.appended - committed.appended
	if twice < n3 {
		t.Errorf("the last scrape of the killed join counts %v events since its last commit, want at least %d", twice, n3)
	}
	if sum := last.appended + now.appended; sum != float64(total)+twice {
		t.Errorf("after SIGKILL of the join instance: %v appended over both, want %d + %v", sum, total, twice)
	}
	if now.replayed != 0 {
		t.Errorf("lagscope_replayed_facts_total = %v on the new join process, want 0 (it cannot see replays into another process)", now.replayed)
	}
	t.Logf("join SIGKILL: %d events, %v counted twice (applied and scraped since the last commit)", total, twice)

	ingest2.stop(t)
	join2.stop(t)
}

// killBroker is the in-process broker of TestScaleOutSIGKILL, which can
// refuse a group's offset commits.
type killBroker struct {
	c        *kfake.Cluster
	addr     string
	tr       *kafka.Transport
	client   *kafka.Client
	w        *kafka.Writer
	seq      atomic.Int64 // events produced
	blocked  sync.Map     // group -> struct{}: its commits are refused
	produceM sync.Mutex
}

func newKillBroker(t *testing.T) *killBroker {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(killPartitions, killTracesTopic, killFactsTopic))
	if err != nil {
		t.Fatal(err)
	}
	b := &killBroker{c: c, addr: c.ListenAddrs()[0], tr: &kafka.Transport{}}
	b.client = &kafka.Client{Addr: kafka.TCP(b.addr), Transport: b.tr}
	b.w = &kafka.Writer{Addr: kafka.TCP(b.addr), Topic: killTracesTopic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: b.tr}
	c.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.OffsetCommitRequest)
		if _, ok := b.blocked.Load(r.Group); !ok {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, requestTimedOut
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	t.Cleanup(func() {
		_ = b.w.Close()
		b.tr.CloseIdleConnections()
		c.Close()
	})
	return b
}

func (b *killBroker) args(role string) []string {
	return []string{"serve", "--role=" + role, "--kafka.brokers=" + b.addr, "--kafka.lag-interval=1h",
		"--otlp.grpc-endpoint=127.0.0.1:0", "--otlp.http-endpoint=127.0.0.1:0", "--web.listen-address=127.0.0.1:0",
		"--join.deadline=10m", "--join.retention=1h"}
}

func (b *killBroker) block(group string, on bool) {
	if on {
		b.blocked.Store(group, struct{}{})
	} else {
		b.blocked.Delete(group)
	}
}

func (b *killBroker) produced() int { return int(b.seq.Load()) }

// produce writes n events, one traces message each (command, append,
// projection and query spans of one trace, keyed by the trace id in hex as
// the Collector's kafka exporter writes them).
func (b *killBroker) produce(t *testing.T, n int) {
	t.Helper()
	if err := b.write(n); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func (b *killBroker) write(n int) error {
	b.produceM.Lock()
	defer b.produceM.Unlock()
	ev := hostileSpan{eventType: "OrderCreated", aggType: "Order", command: "CreateOrder", projection: "orders_view",
		service: "orders", query: "GetOrder", version: "1"}
	var m ptrace.ProtoMarshaler
	msgs := make([]kafka.Message, 0, n)
	first := int(b.seq.Load())
	for i := first; i < first+n; i++ {
		td := ev.traces(i)
		v, err := m.MarshalTraces(td)
		if err != nil {
			return err
		}
		id := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID()
		msgs = append(msgs, kafka.Message{Key: []byte(id.String()), Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	if err := b.w.WriteMessages(ctx, msgs...); err != nil {
		return err
	}
	b.seq.Add(int64(n))
	return nil
}

// streamer produces an event every 10ms until stopped.
type streamer struct {
	n    atomic.Int64
	stop func() int
}

func (s *streamer) count() int { return int(s.n.Load()) }

func (b *killBroker) stream(t *testing.T) *streamer {
	s := &streamer{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if err = b.write(1); err != nil {
				return
			}
			s.n.Add(1)
		}
	})
	s.stop = func() int {
		close(done)
		wg.Wait()
		if err != nil {
			t.Fatalf("stream events: %v", err)
		}
		return s.count()
	}
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			close(done)
			wg.Wait()
		}
	})
	return s
}

// members returns the ids of group's members.
func (b *killBroker) members(t *testing.T, group string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := b.client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(resp.Groups) == 0 {
		t.Fatalf("describe group %s: %v", group, err)
	}
	ids := map[string]bool{}
	for _, m := range resp.Groups[0].Members {
		ids[m.MemberID] = true
	}
	return ids
}

// waitMembers waits until group is stable with one member, not one of
// gone, that has partitions assigned.
func (b *killBroker) waitMembers(t *testing.T, group string, gone map[string]bool) {
	t.Helper()
	waitFor(t, killWait, "group "+group+" to settle", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := b.client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil || len(resp.Groups) == 0 {
			return false, fmt.Sprint(err)
		}
		g := resp.Groups[0]
		if g.GroupState != "Stable" || len(g.Members) != 1 {
			return false, fmt.Sprintf("state %s, %d members", g.GroupState, len(g.Members))
		}
		m := g.Members[0]
		return !gone[m.MemberID] && len(m.MemberAssignments.Topics) > 0, "member " + m.MemberID
	})
}

// waitCommitted waits until group committed the end offset of every
// partition of topic.
func (b *killBroker) waitCommitted(t *testing.T, group, topic string) {
	t.Helper()
	waitFor(t, killWait, group+" to commit all of "+topic, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var parts []kafka.OffsetRequest
		for p := range killPartitions {
			parts = append(parts, kafka.LastOffsetOf(p))
		}
		ends, err := b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: parts}})
		if err != nil {
			return false, err.Error()
		}
		ps := make([]int, killPartitions)
		for i := range ps {
			ps[i] = i
		}
		com, err := b.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
		if err != nil {
			return false, err.Error()
		}
		end := map[int]int64{}
		for _, p := range ends.Topics[topic] {
			end[p.Partition] = p.LastOffset
		}
		for _, p := range com.Topics[topic] {
			if off := max(p.CommittedOffset, 0); off != end[p.Partition] {
				return false, fmt.Sprintf("partition %d committed %d of %d", p.Partition, p.CommittedOffset, end[p.Partition])
			}
		}
		return true, ""
	})
}

// waitCounted waits until join counts n events appended.
func (b *killBroker) waitCounted(t *testing.T, join *child, n int) {
	t.Helper()
	waitFor(t, killWait, fmt.Sprintf("%d events appended", n), func() (bool, string) {
		got := counts(join.scrape(t)).appended
		return got >= float64(n), fmt.Sprintf("%v appended", got)
	})
}

// drained waits until both stages committed everything: the ingest role
// commits a traces message after its facts are acknowledged, the join role
// a batch after applying it, so every event produced is then counted.
func (b *killBroker) drained(t *testing.T) {
	t.Helper()
	b.waitCommitted(t, killGroup, killTracesTopic)
	b.waitCommitted(t, killJoinGroup, killFactsTopic)
}

type killCounts struct {
	appended, projected, unprojected, duplicated, queries, replayed float64
}

func counts(mfs map[string]*dto.MetricFamily) killCounts {
	return killCounts{
		appended:    value(mfs, "cqrs_events_appended_total", nil),
		projected:   value(mfs, "cqrs_events_projected_total", nil),
		unprojected: value(mfs, "cqrs_events_unprojected_total", nil),
		duplicated:  value(mfs, "cqrs_events_duplicated_total", nil),
		queries:     value(mfs, "cqrs_queries_total", nil),
		replayed:    value(mfs, "lagscope_replayed_facts_total", nil),
	}
}

// child is a `lagscope serve` process: the test binary run as the command
// (see TestMain).
type child struct {
	cmd     *exec.Cmd
	metrics string
	exited  chan error
	mu      sync.Mutex
	logs    bytes.Buffer
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), exited: make(chan error, 1)}
	c.cmd.Env = append(os.Environ(), mainChildEnv+"="+strings.Join(args, "\x1f"))
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`metrics=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.logs.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil && strings.Contains(sc.Text(), "lagscope serving") {
				addr <- m[1]
			}
		}
		c.exited <- c.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("log of %v:\n%s", args, c.log())
		}
	})
	select {
	case c.metrics = <-addr:
	case err := <-c.exited:
		t.Fatalf("lagscope %v exited: %v\n%s", args, err, c.log())
	case <-time.After(killWait):
		t.Fatalf("lagscope %v did not start:\n%s", args, c.log())
	}
	return c
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.String()
}

func (c *child) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(c.metrics)
	if err != nil {
		t.Fatalf("scrape %s: %v", c.metrics, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", c.metrics, err)
	}
	return mfs
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(killWait):
		t.Fatal("the killed process did not exit")
	}
}

// stop sends SIGTERM and wants a clean exit.
func (c *child) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.exited:
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			t.Errorf("exit code %d after SIGTERM:\n%s", ee.ExitCode(), c.log())
		}
	case <-time.After(killWait):
		t.Error("no exit within a minute of SIGTERM")
	}
}
