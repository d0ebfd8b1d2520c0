package collector

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const kafkaTestTopic = "otlp_spans"

// kafkaBroker starts an in-process Kafka-protocol broker on an ephemeral
// loopback port with topic kafkaTestTopic of the given partitions, and a
// kafka-go transport for the test's own clients, both closed at cleanup.
func kafkaBroker(t *testing.T, partitions int32) (addr string, tr *kafka.Transport) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, kafkaTestTopic))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	tr = &kafka.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		c.Close()
	})
	return c.ListenAddrs()[0], tr
}

// kafkaMessage is one message as the Collector's kafka exporter writes it
// with partition_traces_by_id: the trace id in hex as key, the spans of that
// one trace as value.
func kafkaMessage(t *testing.T, json bool, id pcommon.TraceID, spans ...string) kafka.Message {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "orders")
	ss := rs.ScopeSpans().AppendEmpty()
	for i, name := range spans {
		s := ss.Spans().AppendEmpty()
		s.SetTraceID(id)
		s.SetSpanID(pcommon.SpanID{1, byte(i + 1), id[0], id[1], 5, 6, 7, 8})
		s.SetName(name)
		s.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000))
		s.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_000_000_500))
	}
	var b []byte
	var err error
	if json {
		b, err = (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	} else {
		b, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{Key: []byte(id.String()), Value: b}
}

// produce writes msgs with kafka-go's Writer, partitioned by key hash as the
// exporter does, and waits until the broker acknowledged them.
func produce(t *testing.T, addr string, tr *kafka.Transport, msgs ...kafka.Message) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(addr),
		Topic:        kafkaTestTopic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafka.RequireAll,
		Transport:    tr,
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// committed returns the group's committed offset of each partition of
// kafkaTestTopic (-1 where it never committed).
func committed(t *testing.T, addr string, tr *kafka.Transport, group string, partitions int) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ps := make([]int, partitions)
	for i := range ps {
		ps[i] = i
	}
	c := &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{kafkaTestTopic: ps}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	got := make(map[int]int64)
	for _, p := range resp.Topics[kafkaTestTopic] {
		got[p.Partition] = p.CommittedOffset
	}
	return got
}

// traceCounter counts the spans it consumes by trace id. Until refuse
// reaches zero it refuses each call with err instead.
type traceCounter struct {
	mu     sync.Mutex
	spans  map[string]int
	calls  int
	refuse int
	err    error
}

func (c *traceCounter) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.refuse != 0 {
		c.refuse--
		return c.err
	}
	if c.spans == nil {
		c.spans = make(map[string]int)
	}
	rss := td.ResourceSpans()
	for i := range rss.Len() {
		sss := rss.At(i).ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				c.spans[spans.At(k).TraceID().String()]++
			}
		}
	}
	return nil
}

func (c *traceCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.spans {
		n += v
	}
	return n
}

func (c *traceCounter) got() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.spans))
	for k, v := range c.spans {
		out[k] = v
	}
	return out
}

// startKafka starts a Kafka transport of a fresh Receiver on broker addr.
func startKafka(t *testing.T, addr, encoding, group string, next Consumer) (*Kafka, *Receiver, *prometheus.Registry) {
	t.Helper()
	return startKafkaWith(t, testConfig(), addr, encoding, group, next)
}

func startKafkaWith(t *testing.T, rcfg Config, addr, encoding, group string, next Consumer) (*Kafka, *Receiver, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(rcfg, next, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultKafkaConfig()
	cfg.Brokers = []string{addr}
	cfg.TracesEncoding = encoding
	cfg.GroupID = group
	k, err := NewKafka(cfg, r, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdownKafka(t, k) })
	return k, r, reg
}

func shutdownKafka(t *testing.T, k *Kafka) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := k.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestKafkaConsumesCollectorExporterMessages(t *testing.T) {
	traceA := pcommon.TraceID{0xa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	traceB := pcommon.TraceID{0xb, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	traceC := pcommon.TraceID{0xc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	tests := []struct {
		name     string
		encoding string
		lazy     bool // otlp.lazy_decode: the selective decoder
	}{
		{"otlp_proto", EncodingOTLPProto, false},
		{"otlp_proto lazy", EncodingOTLPProto, true},
		{"otlp_json", EncodingOTLPJSON, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			encoding := tt.encoding
			json := encoding == EncodingOTLPJSON
			addr, tr := kafkaBroker(t, 2)
			// Trace A comes in two messages; the undecodable message sits
			// on trace C's partition, just before it, so C proves that the
			// partition moves on.
			produce(t, addr, tr,
				kafkaMessage(t, json, traceA, "POST /orders", "orders.append"),
				kafkaMessage(t, json, traceB, "GET /orders/{id}", "orders.read", "sql.query"),
				kafkaMessage(t, json, traceA, "orders.project"),
				kafka.Message{Key: []byte(traceC.String()), Value: []byte("\xffnot an OTLP request")},
				kafkaMessage(t, json, traceC, "orders.project"),
			)
			next := &traceCounter{}
			rcfg := testConfig()
			rcfg.LazyDecode = tt.lazy
			k, r, reg := startKafkaWith(t, rcfg, addr, encoding, "lagscope", next)
			waitFor(t, "7 spans consumed", func() bool { return next.total() >= 7 })
			want := map[string]int{traceA.String(): 3, traceB.String(): 3, traceC.String(): 1}
			if diff := cmp.Diff(next.got(), want); diff != "" {
				t.Errorf("spans by trace (-got +want):\n%s", diff)
			}
			if got := testutil.ToFloat64(r.core.metrics.receivedSpans[transportKafka]); got != 7 {
				t.Errorf("lagscope_received_spans_total{transport=kafka} = %v, want 7", got)
			}
			if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportKafka][reasonDecodeError]); got != 1 {
				t.Errorf("lagscope_rejected_requests_total{transport=kafka,reason=decode_error} = %v, want 1", got)
			}
			if n := testutil.CollectAndCount(reg, "lagscope_rejected_requests_total"); n != 2*len(requestReasons)+len(kafkaReasons)+len(zipkinReasons) {
				t.Errorf("lagscope_rejected_requests_total has %d series, want %d", n, 2*len(requestReasons)+len(kafkaReasons)+len(zipkinReasons))
			}

			// Shutdown commits everything consumed: every message of both
			// partitions, the skipped one included.
			shutdownKafka(t, k)
			got := committed(t, addr, tr, "lagscope", 2)
			var sum int64
			for _, off := range got {
				sum += off
			}
			if sum != 5 {
				t.Errorf("committed offsets %v sum to %d, want 5 (every message)", got, sum)
			}
		})
	}
}

func TestKafkaRetriesRefusedMessages(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantReason reason
	}{
		{"overload", overloadError{after: time.Millisecond}, reasonOverloaded},
		{"consumer error", errors.New("store unavailable"), reasonConsumerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, tr := kafkaBroker(t, 1)
			id := pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
			produce(t, addr, tr, kafkaMessage(t, false, id, "a", "b"))
			next := &traceCounter{refuse: 2, err: tt.err}
			k, r, _ := startKafka(t, addr, EncodingOTLPProto, "retry", next)
			waitFor(t, "the spans consumed", func() bool { return next.total() == 2 })
			if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportKafka][tt.wantReason]); got != 2 {
				t.Errorf("rejected_requests_total{transport=kafka,reason=%s} = %v, want 2", tt.wantReason, got)
			}
			// Each attempt decoded the message again, as a re-sent HTTP request would be.
			if got := testutil.ToFloat64(r.core.metrics.receivedSpans[transportKafka]); got != 6 {
				t.Errorf("received_spans_total{transport=kafka} = %v, want 6 (3 attempts of 2)", got)
			}
			shutdownKafka(t, k)
			if diff := cmp.Diff(committed(t, addr, tr, "retry", 1), map[int]int64{0: 1}); diff != "" {
				t.Errorf("committed offsets (-got +want):\n%s", diff)
			}
		})
	}
}

func TestKafkaShutdownLeavesRefusedMessageUncommitted(t *testing.T) {
	addr, tr := kafkaBroker(t, 1)
	id := pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	produce(t, addr, tr, kafkaMessage(t, false, id, "a"))
	next := &traceCounter{refuse: -1, err: overloadError{}} // refuses forever
	k, _, _ := startKafka(t, addr, EncodingOTLPProto, "stuck", next)
	waitFor(t, "a refused attempt", func() bool {
		next.mu.Lock()
		defer next.mu.Unlock()
		return next.calls > 0
	})
	start := time.Now()
	shutdownKafka(t, k)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v while retrying", d)
	}
	if diff := cmp.Diff(committed(t, addr, tr, "stuck", 1), map[int]int64{0: -1}); diff != "" {
		t.Errorf("committed offsets (-got +want):\n%s", diff)
	}
}

// flushCounter is a traceCounter that is a Flusher. Its Flush fails until
// fails reaches zero (negative: forever).
type flushCounter struct {
	traceCounter
	fmu      sync.Mutex
	fails    int
	failed   int // Flush calls that failed
	flushed  int // Flush calls that succeeded
	unmarked int // ConsumeTraces calls whose ctx did not say a Flush follows
}

func (c *flushCounter) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if !FlushFollows(ctx) {
		c.fmu.Lock()
		c.unmarked++
		c.fmu.Unlock()
	}
	return c.traceCounter.ConsumeTraces(ctx, td)
}

func (c *flushCounter) Flush(context.Context) error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.fails != 0 {
		c.fails--
		c.failed++
		return errors.New("facts brokers unavailable")
	}
	c.flushed++
	return nil
}

func (c *flushCounter) counts() (failed, flushed, unmarked int) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.failed, c.flushed, c.unmarked
}

// TestKafkaCommitsABatchAfterItsFlush: a Flusher's Flush follows a batch of
// messages, is retried while it fails (nothing committed meanwhile, not even
// at Shutdown), and once it succeeds the whole batch is committed, each
// message consumed once.
func TestKafkaCommitsABatchAfterItsFlush(t *testing.T) {
	const messages = 20
	addr, tr := kafkaBroker(t, 1)
	var msgs []kafka.Message
	want := make(map[string]int)
	for i := range messages {
		id := pcommon.TraceID{byte(i + 1), 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		msgs = append(msgs, kafkaMessage(t, false, id, "a", "b"))
		want[id.String()] = 2
	}
	produce(t, addr, tr, msgs...)

	// Flush fails forever: retried, and Shutdown commits nothing.
	stuck := &flushCounter{fails: -1}
	k, r, _ := startKafka(t, addr, EncodingOTLPProto, "flush", stuck)
	waitFor(t, "a retried Flush", func() bool { failed, _, _ := stuck.counts(); return failed >= 2 })
	start := time.Now()
	shutdownKafka(t, k)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v while retrying Flush", d)
	}
	failed, flushed, _ := stuck.counts()
	if flushed != 0 {
		t.Fatalf("Flush succeeded %d times, want 0", flushed)
	}
	if got := testutil.ToFloat64(r.core.metrics.rejectedRequests[transportKafka][reasonConsumerError]); got != float64(failed) {
		t.Errorf("rejected_requests_total{transport=kafka,reason=consumer_error} = %v, want %d (the failed Flush calls)", got, failed)
	}
	if diff := cmp.Diff(committed(t, addr, tr, "flush", 1), map[int]int64{0: -1}); diff != "" {
		t.Errorf("committed offsets with Flush failing (-got +want):\n%s", diff)
	}

	// The next instance's Flush fails once, then succeeds: all committed.
	next := &flushCounter{fails: 1}
	k, _, _ = startKafka(t, addr, EncodingOTLPProto, "flush", next)
	waitFor(t, "the spans consumed", func() bool { return next.total() == 2*messages })
	waitFor(t, "a Flush after the failed one", func() bool { _, flushed, _ := next.counts(); return flushed >= 1 })
	shutdownKafka(t, k)
	if diff := cmp.Diff(committed(t, addr, tr, "flush", 1), map[int]int64{0: messages}); diff != "" {
		t.Errorf("committed offsets (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(next.got(), want); diff != "" {
		t.Errorf("spans by trace (-got +want):\n%s", diff)
	}
	failed, flushed, unmarked := next.counts()
	if failed != 1 || flushed >= messages {
		t.Errorf("Flush failed %d and succeeded %d times for %d messages, want 1 and fewer than the messages", failed, flushed, messages)
	}
	if unmarked != 0 {
		t.Errorf("%d ConsumeTraces calls without FlushFollows, want 0", unmarked)
	}
	t.Logf("%d messages in %d flushes", messages, flushed)
}

func TestKafkaConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		modify  func(*KafkaConfig)
		wantErr string // a YAML key the error must name, "" for none
	}{
		{"default (off)", func(*KafkaConfig) {}, ""},
		{"brokers", func(c *KafkaConfig) { c.Brokers = []string{"127.0.0.1:9092"} }, ""},
		{"json", func(c *KafkaConfig) { c.TracesEncoding = EncodingOTLPJSON }, ""},
		{"bad broker", func(c *KafkaConfig) { c.Brokers = []string{"nohostport"} }, "kafka.brokers"},
		{"no topic", func(c *KafkaConfig) { c.TracesTopic = "" }, "kafka.traces_topic"},
		{"bad encoding", func(c *KafkaConfig) { c.TracesEncoding = "zipkin_proto" }, "kafka.traces_encoding"},
		{"no group", func(c *KafkaConfig) { c.GroupID = "" }, "kafka.group_id"},
		{"sasl without user", func(c *KafkaConfig) { c.Conn.SASL.Mechanism, c.Conn.SASL.PasswordFile = "PLAIN", "p" }, "kafka.sasl.username"},
		{"bad mechanism", func(c *KafkaConfig) { c.Conn.SASL.Mechanism = "OAUTHBEARER" }, "kafka.sasl.mechanism"},
		{"key without cert", func(c *KafkaConfig) { c.Conn.TLS.KeyFile = "k" }, "kafka.tls.cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultKafkaConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
	r, err := New(testConfig(), Discard, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKafka(DefaultKafkaConfig(), r, nil, nil); err == nil {
		t.Error("NewKafka without brokers: nil error, want one")
	}
}

// BenchmarkKafkaTransport measures messages of one 4-span trace consumed
// per second from an in-process broker, broker included (run with
// -benchtime=2000x or so: each iteration is one message).
func BenchmarkKafkaTransport(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafkaTestTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	addr := c.ListenAddrs()[0]
	msgs := make([]kafka.Message, b.N)
	for i := range msgs {
		td := newTraces(1, 4)
		id := pcommon.TraceID{byte(i), byte(i >> 8), byte(i >> 16), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
		spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for j := range spans.Len() {
			spans.At(j).SetTraceID(id)
		}
		msgs[i] = kafka.Message{Key: []byte(id.String()), Value: mustMarshal(b, td)}
	}
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: kafkaTestTopic, BatchTimeout: time.Millisecond, Transport: tr}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	_ = w.Close()

	var consumed atomic.Int64
	next := consumerFunc(func(_ context.Context, td ptrace.Traces) error {
		consumed.Add(int64(td.SpanCount()))
		return nil
	})
	r, err := New(testConfig(), next, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultKafkaConfig()
	cfg.Brokers = []string{addr}
	k, err := NewKafka(cfg, r, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	if err := k.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for consumed.Load() < int64(4*b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("consumed %d spans of %d in a minute", consumed.Load(), 4*b.N)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(4*b.N)/elapsed.Seconds(), "spans/s")
	if err := k.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
}
