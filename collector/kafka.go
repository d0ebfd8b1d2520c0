package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/kafkaconn"
)

// Trace encodings of the OpenTelemetry Collector's kafka exporter.
const (
	// EncodingOTLPProto is a serialized ExportTraceServiceRequest per message.
	EncodingOTLPProto = "otlp_proto"
	// EncodingOTLPJSON is the OTLP/JSON of an ExportTraceServiceRequest per message.
	EncodingOTLPJSON = "otlp_json"
)

// KafkaConfig configures the Kafka transport: the settings of YAML section
// kafka that it reads. It is meant to sit in the file's top-level kafka
// section (a field `Kafka KafkaConfig yaml:"kafka"`, or inlined there with
// the other kafka.* keys). The zero value is not usable; start from
// DefaultKafkaConfig.
type KafkaConfig struct {
	// Brokers (kafka.brokers, flag --kafka.brokers, comma-separated) are the
	// host:port addresses of the brokers to bootstrap from. Default empty:
	// the Kafka transport is off.
	Brokers []string `yaml:"brokers"`

	// TracesTopic (kafka.traces_topic, --kafka.traces-topic) is the topic
	// the Collector's kafka exporter writes traces to. Default "otlp_spans",
	// the exporter's default.
	TracesTopic string `yaml:"traces_topic"`

	// TracesEncoding (kafka.traces_encoding, --kafka.traces-encoding) is
	// how each message is encoded: otlp_proto or otlp_json, as the
	// exporter's encoding setting names them. Default otlp_proto.
	TracesEncoding string `yaml:"traces_encoding"`

	// GroupID (kafka.group_id, --kafka.group-id) is the consumer group the
	// transport joins and commits its offsets under; instances sharing it
	// share the topic's partitions. A new group starts at the oldest
	// message. Default "lagscope".
	GroupID string `yaml:"group_id"`

	// Conn is how every Kafka client of lagscope connects to Brokers: TLS
	// (kafka.tls.*) and SASL (kafka.sasl.*). Default plaintext, no SASL.
	Conn kafkaconn.Config `yaml:",inline"`
}

// DefaultKafkaConfig returns the configuration documented on KafkaConfig's fields.
func DefaultKafkaConfig() KafkaConfig {
	return KafkaConfig{
		TracesTopic:    "otlp_spans",
		TracesEncoding: EncodingOTLPProto,
		GroupID:        "lagscope",
	}
}

// Enabled reports whether brokers are configured, that is whether the Kafka
// transport is to run.
func (c KafkaConfig) Enabled() bool { return len(c.Brokers) > 0 }

// Validate reports every field that cannot be used, joined into one error.
// Empty Brokers is valid (the transport is off); NewKafka refuses it.
func (c KafkaConfig) Validate() error {
	var errs []error
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("kafka.brokers: %w", err))
		}
	}
	if c.TracesTopic == "" {
		errs = append(errs, errors.New("kafka.traces_topic is empty"))
	}
	if c.TracesEncoding != EncodingOTLPProto && c.TracesEncoding != EncodingOTLPJSON {
		errs = append(errs, fmt.Errorf("kafka.traces_encoding must be %s or %s, got %q", EncodingOTLPProto, EncodingOTLPJSON, c.TracesEncoding))
	}
	if c.GroupID == "" {
		errs = append(errs, errors.New("kafka.group_id is empty"))
	}
	if err := c.Conn.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Settings of the Kafka transport that are not worth a Config field.
const (
	// kafkaCommitInterval is how often consumed offsets are committed. It
	// bounds what a crash replays; Shutdown commits what is done.
	kafkaCommitInterval = time.Second
	// kafkaQueueCapacity bounds the messages the reader holds fetched ahead,
	// each at most otlp.max_request_bytes.
	kafkaQueueCapacity = 16
	// kafkaMaxWait is how long a fetch waits at the broker for new messages.
	// Closing the reader waits for the fetch in progress, so this bounds
	// Shutdown too (kafka-go's default of 10s made it take 9s).
	kafkaMaxWait = time.Second
	// KafkaSessionTimeout is how long the group coordinator waits for a
	// member's heartbeat before it gives the member's partitions to the
	// others: how long a killed instance's partitions stand still. 10s is
	// the Java client's default before Kafka 3.0 (kafka-go's is 30s).
	KafkaSessionTimeout = 10 * time.Second
	// kafkaCheckTimeout bounds Start's check of the brokers' TLS and SASL.
	kafkaCheckTimeout = 5 * time.Second
	// Retries of a refused message (overload, consumer error) and of fetch
	// errors back off exponentially between these.
	kafkaMinBackoff = 50 * time.Millisecond
	kafkaMaxBackoff = 5 * time.Second
	// A batch is what the reader has ready after a fetch: the messages that
	// arrive within kafkaBatchLinger of each other, up to kafkaBatchMessages
	// or kafkaBatchBytes. The Consumer's Flush and the commit are once a
	// batch: with the Collector exporter's one trace a message, a Flusher
	// that publishes would otherwise wait for one produce round trip per
	// few spans (issue 13). The linger is short against the broker's
	// round trip, so a lone message waits hardly longer than before.
	kafkaBatchLinger   = time.Millisecond
	kafkaBatchMessages = 256
	kafkaBatchBytes    = 4 << 20
)

// Kafka consumes OTLP traces from a Kafka topic, as the OpenTelemetry
// Collector's kafka exporter writes them, and hands each message to the
// Receiver's Consumer through the Receiver's own decode path: its limits, its
// in-flight budget, its selective decoder and its metrics, under
// transport="kafka".
//
// Delivery is at least once. A message's offset is committed only once the
// Consumer has returned for it (or it was skipped as undecodable, too large
// or panicking, counted in lagscope_rejected_requests_total). A message the
// Consumer refuses is retried with backoff, never skipped, so a slow
// consumer stalls the partition instead of losing spans; each refused
// attempt counts as a rejected request and its spans as received again, as a
// re-sent HTTP request would. Messages are handled one at a time, in order,
// in batches of those ready together (kafkaBatchMessages): if the Consumer
// is a Flusher, its Flush follows each batch (FlushFollows is true in the
// context of ConsumeTraces), is retried with backoff while it fails (each
// failure counts as a rejected request, reason consumer_error), and the
// batch is committed only after it returned nil.
//
// Its methods are safe for concurrent use.
type Kafka struct {
	cfg     KafkaConfig
	core    *tracesCore
	json    bool
	maxSize int64
	conn    *kafkaconn.Options
	logger  *slog.Logger
	errors  *prometheus.CounterVec

	mu       sync.Mutex
	started  bool
	stopped  bool
	reader   *kafka.Reader
	stopRun  context.CancelFunc // ends fetching and backoff waits
	stopWork context.CancelFunc // cancels the Consumer's context
	running  sync.WaitGroup
}

// NewKafka returns a Kafka transport that feeds r's Consumer. It validates
// cfg (Brokers must not be empty), reads the files of cfg.Conn (CA, client
// certificate, password), registers lagscope_kafka_errors_total with reg
// (skipped if reg is nil) and logs to logger (discarded if nil). It connects
// to nothing until Start.
func NewKafka(cfg KafkaConfig, r *Receiver, logger *slog.Logger, reg prometheus.Registerer) (*Kafka, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid kafka config: %w", err)
	}
	if !cfg.Enabled() {
		return nil, errors.New("invalid kafka config: kafka.brokers is empty")
	}
	if r == nil {
		return nil, errors.New("collector: nil Receiver")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := kafkaconn.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("invalid kafka config: %w", err)
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_kafka_errors_total",
		Help: "Errors of the Kafka transport talking to the brokers, by operation (fetch, commit); fetches are retried, commits are redone by later ones.",
	}, []string{"op"})
	for _, op := range []string{"fetch", "commit"} {
		errs.WithLabelValues(op)
	}
	if reg != nil {
		if err := reg.Register(errs); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	cfg.Brokers = append([]string(nil), cfg.Brokers...) // not the caller's slice
	return &Kafka{
		cfg:     cfg,
		core:    r.core,
		json:    cfg.TracesEncoding == EncodingOTLPJSON,
		maxSize: r.cfg.MaxRequestBytes,
		conn:    conn,
		logger:  logger.With("transport", "kafka"),
		errors:  errs,
	}, nil
}

// Start checks that the brokers accept the client's TLS and SASL
// credentials, then joins the consumer group and consumes in the
// background. The check takes at most a few seconds within ctx: a broker
// refusing the credentials fails Start (an error wrapping
// kafkaconn.ErrAuthentication that names the broker and the mechanism);
// brokers that cannot be reached are logged and retried in the background,
// as every later broker error is. Start may be called once.
func (k *Kafka) Start(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.started {
		return errors.New("collector: kafka transport already started")
	}
	cctx, cancel := context.WithTimeout(ctx, kafkaCheckTimeout)
	err := k.conn.Check(cctx, k.cfg.Brokers)
	cancel()
	if errors.Is(err, kafkaconn.ErrAuthentication) {
		return err
	} else if err != nil {
		k.logger.Warn("cannot reach the Kafka brokers yet, retrying in the background", "err", err)
	}
	k.started = true
	k.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:        k.cfg.Brokers,
		Dialer:         k.conn.Dialer(),
		GroupID:        k.cfg.GroupID,
		Topic:          k.cfg.TracesTopic,
		MaxBytes:       int(k.maxSize),
		QueueCapacity:  kafkaQueueCapacity,
		CommitInterval: kafkaCommitInterval,
		StartOffset:    kafka.FirstOffset,
		MaxWait:        kafkaMaxWait,
		SessionTimeout: KafkaSessionTimeout,
		ErrorLogger:    kafka.LoggerFunc(func(msg string, args ...any) { k.logger.Debug("kafka reader: " + fmt.Sprintf(msg, args...)) }),
	})
	runCtx, stopRun := context.WithCancel(context.Background())
	workCtx, stopWork := context.WithCancel(context.Background())
	k.stopRun, k.stopWork = stopRun, stopWork
	k.running.Go(func() { k.run(runCtx, workCtx) })
	k.logger.Info("consuming OTLP traces from Kafka", "topic", k.cfg.TracesTopic, "group", k.cfg.GroupID, "encoding", k.cfg.TracesEncoding, "security", k.conn.String())
	return nil
}

// Shutdown stops fetching, waits for the batch being handled to be
// consumed and flushed (a retry waiting on backoff is abandoned: its
// message, and with a failing Flush the whole batch, uncommitted), then
// commits the offsets of what was consumed and leaves the group. When ctx is
// done first, it cancels the Consumer's context, waits for the loop to end
// and still closes the reader, and returns ctx's error. Shutdown without
// Start, or twice, does nothing.
func (k *Kafka) Shutdown(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.started || k.stopped {
		return nil
	}
	k.stopped = true
	k.stopRun()
	done := make(chan struct{})
	go func() {
		k.running.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		k.stopWork()
		<-done
		err = fmt.Errorf("shut down kafka transport: %w", ctx.Err())
	}
	k.stopWork()
	// Close flushes the commits sent so far, then leaves the group.
	if cerr := k.reader.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close kafka reader: %w", cerr))
	}
	return err
}

// run fetches, handles and commits batches of messages until runCtx is
// done. The Consumer sees workCtx, which outlives runCtx so that Shutdown
// lets the batch in hand finish.
func (k *Kafka) run(runCtx, workCtx context.Context) {
	flusher, _ := k.core.next.(Flusher)
	if flusher != nil {
		workCtx = withFlushFollows(workCtx)
	}
	var batch []kafka.Message
	for {
		m, ok := k.fetch(runCtx)
		if !ok {
			return
		}
		batch = batch[:0]
		size := 0
		for {
			if !k.handle(runCtx, workCtx, m) {
				// Shutdown during a retry: m is left uncommitted,
				// redelivered later; the batch before it is finished.
				k.finish(runCtx, workCtx, flusher, batch)
				return
			}
			batch = append(batch, m)
			size += len(m.Value)
			if len(batch) == kafkaBatchMessages || size >= kafkaBatchBytes {
				break
			}
			if m, ok = k.ready(runCtx); !ok {
				break
			}
		}
		if !k.finish(runCtx, workCtx, flusher, batch) {
			return
		}
		clear(batch) // keeps none of the values until the next batch fills
	}
}

// fetch waits for the next message, retrying fetch errors with backoff. It
// reports false once runCtx is done or the reader closed.
func (k *Kafka) fetch(runCtx context.Context) (kafka.Message, bool) {
	backoff := kafkaMinBackoff
	for {
		m, err := k.reader.FetchMessage(runCtx)
		if err == nil {
			return m, true
		}
		if runCtx.Err() != nil || errors.Is(err, io.EOF) {
			return kafka.Message{}, false
		}
		k.fetchFailed(err, backoff)
		if !sleep(runCtx, backoff) {
			return kafka.Message{}, false
		}
		backoff = min(2*backoff, kafkaMaxBackoff)
	}
}

// fetchFailed counts and logs a fetch error, retried after backoff (0: at
// once, after the batch it ended).
func (k *Kafka) fetchFailed(err error, backoff time.Duration) {
	k.errors.WithLabelValues("fetch").Inc()
	err = k.conn.Explain(strings.Join(k.cfg.Brokers, ","), err)
	attrs := []any{"err", err}
	if backoff > 0 {
		attrs = append(attrs, "in", backoff)
	} else {
		attrs = append(attrs, "after", "the batch in hand")
	}
	if kafkaconn.IsAuthError(err) {
		// Retried all the same (credentials may be fixed, the password
		// file is read again), but said louder.
		k.logger.Error("the Kafka brokers refuse lagscope's credentials, retrying", attrs...)
	} else {
		k.logger.Warn("cannot fetch from Kafka, retrying", attrs...)
	}
}

// ready returns the next message if the reader has it within
// kafkaBatchLinger, and reports false otherwise. A FetchMessage that
// returns on its context has taken no message from the reader, so nothing
// is skipped; a fetch error ends the batch (counted and logged here: the
// reader does not repeat it), and the next fetch waits as after any.
func (k *Kafka) ready(runCtx context.Context) (kafka.Message, bool) {
	ctx, cancel := context.WithTimeout(runCtx, kafkaBatchLinger)
	defer cancel()
	m, err := k.reader.FetchMessage(ctx)
	if err == nil {
		return m, true
	}
	if ctx.Err() == nil && !errors.Is(err, io.EOF) {
		k.fetchFailed(err, 0)
	}
	return kafka.Message{}, false
}

// finish flushes the Consumer (if it is a Flusher), retrying with backoff
// while Flush fails, then commits batch. It reports false, leaving batch
// uncommitted, if runCtx ended during a retry.
func (k *Kafka) finish(runCtx, workCtx context.Context, f Flusher, batch []kafka.Message) bool {
	if len(batch) == 0 {
		return true
	}
	if f != nil {
		backoff := kafkaMinBackoff
		for {
			err := f.Flush(workCtx)
			if err == nil {
				break
			}
			k.core.metrics.rejectedRequests[transportKafka][reasonConsumerError].Inc()
			last := batch[len(batch)-1]
			k.logger.Debug("Kafka batch not flushed, retrying", "messages", len(batch), "partition", last.Partition, "offset", last.Offset, "err", err, "in", backoff)
			if !sleep(runCtx, backoff) {
				return false
			}
			backoff = min(2*backoff, kafkaMaxBackoff)
		}
	}
	if err := k.reader.CommitMessages(workCtx, batch...); err != nil {
		k.errors.WithLabelValues("commit").Inc()
		last := batch[len(batch)-1]
		k.logger.Warn("cannot commit Kafka offsets", "messages", len(batch), "partition", last.Partition, "offset", last.Offset, "err", err)
	}
	return true
}

// handle hands message m on, retrying with backoff while it is refused as
// overload or by the Consumer. It reports false if runCtx ended first.
func (k *Kafka) handle(runCtx, workCtx context.Context, m kafka.Message) bool {
	backoff := kafkaMinBackoff
	for {
		rerr := k.process(workCtx, m.Value)
		if rerr == nil {
			return true
		}
		k.core.metrics.rejectedRequests[transportKafka][rerr.reason].Inc()
		if rerr.reason != reasonOverloaded && rerr.reason != reasonConsumerError {
			k.logger.Debug("skipped Kafka message", "partition", m.Partition, "offset", m.Offset, "reason", rerr.reason.String(), "err", rerr)
			return true
		}
		k.logger.Debug("Kafka message refused, retrying", "partition", m.Partition, "offset", m.Offset, "reason", rerr.reason.String(), "err", rerr, "in", backoff)
		if !sleep(runCtx, backoff) {
			return false
		}
		backoff = min(2*backoff, kafkaMaxBackoff)
	}
}

// process decodes and exports one message, as an HTTP request body.
func (k *Kafka) process(ctx context.Context, b []byte) (rerr *requestError) {
	start := time.Now()
	defer func() { k.core.metrics.requestDuration[transportKafka].Observe(time.Since(start).Seconds()) }()
	// Registered first so that it runs last, after the release below.
	defer func() {
		if v := recover(); v != nil {
			rerr = k.core.recovered(ctx, transportKafka, v)
		}
	}()
	if int64(len(b)) > k.maxSize {
		return newRequestError(reasonTooLarge, "message is larger than "+strconv.FormatInt(k.maxSize, 10)+" bytes (otlp.max_request_bytes)")
	}
	req, reserved, rerr := k.core.decode(b, k.json)
	defer k.core.limiter.release(reserved)
	defer req.free()
	if rerr != nil {
		return rerr
	}
	_, rerr = k.core.export(ctx, transportKafka, req, b, k.json)
	return rerr
}

// sleep waits for d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
