package kafkalag

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	topic       = "orders.events"
	waitTimeout = 10 * time.Second
)

// base is the fake now of the exporters under test; message i of a
// partition is stamped base - (60-i) seconds.
var base = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func stamp(i int) time.Time { return base.Add(time.Duration(i-60) * time.Second) }

// cluster is an in-process broker with topic of two partitions, and a
// kafka-go client of the test's own.
type cluster struct {
	addr   string
	client *kafka.Client
	tr     *kafka.Transport
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	tr := &kafka.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		c.Close()
	})
	addr := c.ListenAddrs()[0]
	return &cluster{addr: addr, client: &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}, tr: tr}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// produce writes n messages to partition p, stamped as stamp says.
func (c *cluster) produce(t *testing.T, p, n int) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(c.addr),
		Topic:        topic,
		Balancer:     kafka.BalancerFunc(func(kafka.Message, ...int) int { return p }),
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Transport:    c.tr,
	}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte("event"), Time: stamp(i)}
	}
	if err := w.WriteMessages(testContext(t), msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// commit commits offsets (partition -> next offset to consume) for group,
// as a consumer outside any generation does.
func (c *cluster) commit(t *testing.T, group string, offsets map[int]int64) {
	t.Helper()
	var cs []kafka.OffsetCommit
	for p, off := range offsets {
		cs = append(cs, kafka.OffsetCommit{Partition: p, Offset: off})
	}
	resp, err := c.client.OffsetCommit(testContext(t), &kafka.OffsetCommitRequest{
		GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: cs},
	})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("commit partition %d: %v", p.Partition, p.Error)
		}
	}
}

// joinWithoutCommit starts a group member that is assigned topic and never
// commits, and waits until the group has its assignment.
func (c *cluster) joinWithoutCommit(t *testing.T, group string) {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{c.addr}, GroupID: group, Topic: topic, MaxWait: 100 * time.Millisecond,
	})
	t.Cleanup(func() { _ = r.Close() })
	ctx := testContext(t)
	if _, err := r.FetchMessage(ctx); err != nil { // joined and assigned by then
		t.Fatalf("join %s: %v", group, err)
	}
}

func newExporter(t *testing.T, c *cluster, modify func(*Config)) (*Exporter, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Brokers = []string{c.addr}
	if modify != nil {
		modify(&cfg)
	}
	reg := prometheus.NewRegistry()
	e, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return base }
	t.Cleanup(e.tr.CloseIdleConnections)
	return e, reg
}

func TestOffsetLagEqualsUnconsumedCount(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 0, 10)
	c.produce(t, 1, 4)
	// The stalled projector consumed and committed 3 of partition 0 and
	// all of partition 1; a never-committed member counts from the start.
	c.commit(t, "projector", map[int]int64{0: 3, 1: 4})
	c.joinWithoutCommit(t, "fresh")

	e, reg := newExporter(t, c, nil)
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	const want = `
# HELP cqrs_projection_offset_lag Messages a consumer group has not consumed yet: end offset minus committed offset (the log start where it never committed).
# TYPE cqrs_projection_offset_lag gauge
cqrs_projection_offset_lag{group="fresh",partition="0",topic="orders.events"} 10
cqrs_projection_offset_lag{group="fresh",partition="1",topic="orders.events"} 4
cqrs_projection_offset_lag{group="projector",partition="0",topic="orders.events"} 7
cqrs_projection_offset_lag{group="projector",partition="1",topic="orders.events"} 0
# HELP cqrs_projection_committed_offset Offset a consumer group resumes from: its committed offset, or the log start where it never committed.
# TYPE cqrs_projection_committed_offset gauge
cqrs_projection_committed_offset{group="fresh",partition="0",topic="orders.events"} 0
cqrs_projection_committed_offset{group="fresh",partition="1",topic="orders.events"} 0
cqrs_projection_committed_offset{group="projector",partition="0",topic="orders.events"} 3
cqrs_projection_committed_offset{group="projector",partition="1",topic="orders.events"} 4
# HELP cqrs_projection_end_offset Offset the next message written to a partition of a topic a consumer group reads will get.
# TYPE cqrs_projection_end_offset gauge
cqrs_projection_end_offset{group="fresh",partition="0",topic="orders.events"} 10
cqrs_projection_end_offset{group="fresh",partition="1",topic="orders.events"} 4
cqrs_projection_end_offset{group="projector",partition="0",topic="orders.events"} 10
cqrs_projection_end_offset{group="projector",partition="1",topic="orders.events"} 4
# HELP cqrs_projection_time_lag_seconds Age of the oldest message a consumer group has not consumed on a topic, from its timestamp; 0 when caught up.
# TYPE cqrs_projection_time_lag_seconds gauge
cqrs_projection_time_lag_seconds{group="fresh",topic="orders.events"} 60
cqrs_projection_time_lag_seconds{group="projector",topic="orders.events"} 57
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"cqrs_projection_offset_lag", "cqrs_projection_committed_offset", "cqrs_projection_end_offset", "cqrs_projection_time_lag_seconds"); err != nil {
		t.Error(err)
	}

	// The projector catches up: no lag left, in messages or seconds.
	c.commit(t, "projector", map[int]int64{0: 10})
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	got := map[string]float64{}
	for _, p := range e.metrics.snapshot().partitions {
		if p.group == "projector" {
			got[fmt.Sprint(p.partition)] = float64(p.lag)
		}
	}
	for _, tl := range e.metrics.snapshot().topics {
		if tl.group == "projector" {
			got["seconds"] = tl.seconds
		}
	}
	if diff := cmp.Diff(got, map[string]float64{"0": 0, "1": 0, "seconds": 0}); diff != "" {
		t.Errorf("projector's lag after catching up (-got +want):\n%s", diff)
	}
}

func TestBoundsAreCounted(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 0, 2)
	c.commit(t, "a", map[int]int64{0: 1})
	c.commit(t, "b", map[int]int64{0: 1})

	e, reg := newExporter(t, c, func(cfg *Config) { cfg.MaxGroups = 1; cfg.MaxPartitions = 1 })
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	const want = `
# HELP cqrs_projection_offset_lag Messages a consumer group has not consumed yet: end offset minus committed offset (the log start where it never committed).
# TYPE cqrs_projection_offset_lag gauge
cqrs_projection_offset_lag{group="a",partition="0",topic="orders.events"} 1
# HELP lagscope_kafka_lag_skipped_total Consumer groups, topics and partitions left out of the offset lag metrics, per round, by reason.
# TYPE lagscope_kafka_lag_skipped_total counter
lagscope_kafka_lag_skipped_total{reason="invalid_name"} 0
lagscope_kafka_lag_skipped_total{reason="max_groups"} 1
lagscope_kafka_lag_skipped_total{reason="max_partitions"} 1
lagscope_kafka_lag_skipped_total{reason="max_topics"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cqrs_projection_offset_lag", "lagscope_kafka_lag_skipped_total"); err != nil {
		t.Error(err)
	}
}

func TestConfiguredGroupsOnly(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 1, 5)
	c.commit(t, "a", map[int]int64{1: 2})
	c.commit(t, "b", map[int]int64{1: 1})
	e, _ := newExporter(t, c, func(cfg *Config) { cfg.Groups = []string{"b"} })
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	var got []string
	for _, p := range e.metrics.snapshot().partitions {
		got = append(got, fmt.Sprintf("%s/%d=%d", p.group, p.partition, p.lag))
	}
	if diff := cmp.Diff(got, []string{"b/0=0", "b/1=4"}); diff != "" {
		t.Errorf("partitions (-got +want):\n%s", diff)
	}
}

func TestStartPollsUntilShutdown(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 0, 3)
	c.commit(t, "projector", map[int]int64{0: 1})
	e, reg := newExporter(t, c, func(cfg *Config) { cfg.Interval = time.Second })
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for testutil.CollectAndCount(reg, "cqrs_projection_offset_lag") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no offset lag exported in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := e.Shutdown(testContext(t)); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestBrokerDownKeepsLastValues(t *testing.T) {
	c := newCluster(t)
	c.produce(t, 0, 3)
	c.commit(t, "projector", map[int]int64{0: 1})
	e, _ := newExporter(t, c, nil)
	if err := e.Poll(testContext(t)); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	before := e.metrics.snapshot()
	// Point the exporter at a port nobody listens on.
	down := &kafka.Transport{}
	t.Cleanup(down.CloseIdleConnections)
	e.client = &kafka.Client{Addr: kafka.TCP("127.0.0.1:1"), Transport: down, Timeout: time.Second}
	if err := e.Poll(testContext(t)); err == nil {
		t.Fatal("Poll against no broker: nil error, want one")
	}
	if diff := cmp.Diff(e.metrics.snapshot(), before, cmp.AllowUnexported(snapshot{}, partitionLag{}, topicLag{})); diff != "" {
		t.Errorf("snapshot after a failed round (-got +want):\n%s", diff)
	}
	if got := testutil.ToFloat64(e.metrics.errors[opListGroups]); got != 1 {
		t.Errorf("lagscope_kafka_lag_errors_total{op=list_groups} = %v, want 1", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*Config)
		wantKey string
	}{
		{"default", func(*Config) {}, ""},
		{"bad broker", func(c *Config) { c.Brokers = []string{"x"} }, "kafka.brokers"},
		{"bad group", func(c *Config) { c.Groups = []string{""} }, "kafka.lag_groups"},
		{"short interval", func(c *Config) { c.Interval = time.Millisecond }, "kafka.lag_interval"},
		{"no groups", func(c *Config) { c.MaxGroups = 0 }, "kafka.lag_max_groups"},
		{"no topics", func(c *Config) { c.MaxTopics = 0 }, "kafka.lag_max_topics"},
		{"no partitions", func(c *Config) { c.MaxPartitions = 0 }, "kafka.lag_max_partitions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantKey == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantKey != "" && (err == nil || !strings.Contains(err.Error(), tt.wantKey)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.wantKey)
			}
		})
	}
	if _, err := New(DefaultConfig(), nil, nil); err == nil {
		t.Error("New without brokers: nil error, want one")
	}
}

// Messages below the log start are gone: a group whose committed offset
// retention overtook, or that never committed, is behind only by what is left.
func TestPositionBelowLogStartIsClamped(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"} // never dialled: no partition is behind
	e, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	offsets := map[topicPartition]firstEnd{{topic, 0}: {first: 5, end: 5}, {topic, 1}: {first: 7, end: 7}}
	r := &round{e: e, ctx: testContext(t)}
	r.groupTopic("g", topic, []int{0, 1}, offsets, map[int]int64{0: 2}) // 0 committed below the start, 1 never
	want := []partitionLag{
		{group: "g", topic: topic, partition: 0, position: 5, end: 5, lag: 0},
		{group: "g", topic: topic, partition: 1, position: 7, end: 7, lag: 0},
	}
	if diff := cmp.Diff(r.next.partitions, want, cmp.AllowUnexported(partitionLag{})); diff != "" {
		t.Errorf("partitions (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(r.next.topics, []topicLag{{group: "g", topic: topic}}, cmp.AllowUnexported(topicLag{})); diff != "" {
		t.Errorf("time lag (-got +want):\n%s", diff)
	}
}
