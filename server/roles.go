package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/collector"
	"github.com/lagscope/lagscope/factwire"
	"github.com/lagscope/lagscope/kafkaconn"
	"github.com/lagscope/lagscope/spanbatch"
)

// The roles of `lagscope serve` (role, --role).
const (
	// RoleAll resolves and joins in one process: the single instance.
	RoleAll = "all"
	// RoleIngest consumes the traces topic, resolves spans into facts and
	// publishes them to the facts topic.
	RoleIngest = "ingest"
	// RoleJoin consumes the facts topic, joins the facts and owns the
	// cqrs_* metrics.
	RoleJoin = "join"
)

// JoinGroupSuffix is appended to kafka.group_id to name the consumer group
// the join role reads the facts topic in ("lagscope-join" by default): the
// ingest instances keep kafka.group_id for the traces topic, and the two
// stages rebalance independently.
const JoinGroupSuffix = "-join"

// Settings of the roles that are not worth a Config field.
const (
	// roleTick is how often the ingest role publishes the appends whose
	// command wait ran out, and the join role ticks its Joiner.
	roleTick = time.Second
	// factsBatchTimeout is how long the Writer waits to fill a produce
	// request; publishing is synchronous, so it adds to each message's
	// handling.
	factsBatchTimeout = 2 * time.Millisecond
	// factsMaxBytes bounds a fetched facts batch (a message).
	factsMaxBytes = 16 << 20
	// checkTimeout bounds the join role's check of the brokers' TLS and
	// SASL at start.
	checkTimeout = 5 * time.Second
	// replayMemory is how many batch ids the join remembers per partition
	// to recognise a batch it already applied.
	replayMemory = 1 << 14
)

// partitionOf maps an event key to one of n partitions; the ingest role
// groups facts with it and its Writer's balancer routes each batch with it,
// so all facts of one event land on one partition.
func partitionOf(k analyzer.EventKey, n int) int {
	h := binary.BigEndian.Uint64(k[:8]) ^ binary.BigEndian.Uint64(k[8:])*0x9e3779b97f4a7c15
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return int(h % uint64(n))
}

// factKey is the partitioning key of a fact: its event's (a projection
// keyed by its producer span: the span's), or for a query its
// aggregate's.
func factKey(f *analyzer.Fact) analyzer.EventKey {
	if f.Kind == analyzer.FactQuery {
		return analyzer.KeyOf(f.AggregateID)
	}
	return f.Event
}

// partitionKeys returns, for each of n partitions, a key partitionOf maps
// to it: the keys of a broadcast to every partition.
func partitionKeys(n int) [][16]byte {
	keys := make([][16]byte, n)
	found := make([]bool, n)
	for i, left := uint64(0), n; left > 0; i++ {
		var k analyzer.EventKey
		binary.BigEndian.PutUint64(k[8:], i)
		if p := partitionOf(k, n); !found[p] {
			found[p], keys[p] = true, k
			left--
		}
	}
	return keys
}

// keyBalancer routes a batch by its 16-byte key with partitionOf, and
// records how many partitions it saw, which the next batches are grouped
// for.
type keyBalancer struct{ parts *atomic.Int64 }

func (b keyBalancer) Balance(m kafka.Message, partitions ...int) int {
	b.parts.Store(int64(len(partitions)))
	var k analyzer.EventKey
	copy(k[:], m.Key)
	return partitions[partitionOf(k, len(partitions))]
}

// roleMetrics are the metrics of the ingest and join roles.
type roleMetrics struct {
	published *prometheus.CounterVec // unit: facts, batches
	applied   prometheus.Counter
	rejected  *prometheus.CounterVec // reason: version, malformed
	replayed  prometheus.Counter
	pairing   pairingMetrics // join only
}

func newRoleMetrics(reg prometheus.Registerer, role string) (*roleMetrics, error) {
	m := &roleMetrics{}
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lagscope_facts_published_total",
		Help: "Facts (unit=facts) and batches (unit=batches) the role published to the facts topic, acknowledged by the brokers: the ingest role's facts, the join role's news of resolved projections and learned expectations.",
	}, []string{"unit"})
	m.published.WithLabelValues("facts")
	m.published.WithLabelValues("batches")
	cs := []prometheus.Collector{m.published}
	if role == RoleJoin {
		m.applied = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lagscope_facts_applied_total",
			Help: "Facts the join role decoded from the facts topic and applied to its join (and its pairing of projections with their producer span's events).",
		})
		m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_fact_batches_rejected_total",
			Help: "Batches of the facts topic the join role could not decode, by reason (version: a factwire version it does not read; malformed), skipped and committed.",
		}, []string{"reason"})
		m.rejected.WithLabelValues("version")
		m.rejected.WithLabelValues("malformed")
		m.replayed = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lagscope_replayed_facts_total",
			Help: "Facts of batches the join role had already applied (the same producer and sequence number on the same partition), delivered again and skipped.",
		})
		rekeyed := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lagscope_rekeyed_projections_total",
			Help: "Projections keyed by their producer span that the ingest role could not resolve, by result: matched (joined by this join instance to the events of the span's appends it holds), unmatched (joined keyed by the span by the instance of its home partition: the producer appended no event with an id, or no instance resolved it within twice join.command_wait).",
		}, []string{"result"})
		m.pairing.matched = rekeyed.WithLabelValues("matched")
		m.pairing.unmatched = rekeyed.WithLabelValues("unmatched")
		cs = append(cs, m.applied, m.rejected, m.replayed, rekeyed)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register role metrics: %w", err)
		}
	}
	if role == RoleJoin {
		var err error
		if m.pairing.aliasEvicted, err = analyzer.EvictionCounter(reg, reasonAliasCapacity); err != nil {
			return nil, fmt.Errorf("register role metrics: %w", err)
		}
		if m.pairing.waitEvicted, err = analyzer.EvictionCounter(reg, reasonAliasWaitCapacity); err != nil {
			return nil, fmt.Errorf("register role metrics: %w", err)
		}
	}
	return m, nil
}

// publisher writes batches of facts to the facts topic, one message per
// partition (so all facts of one event land on one partition), and
// returns once the brokers acknowledged them. Both roles publish: the
// ingest role its facts, the join role the news of resolved projections
// and learned expectations. Safe for concurrent use.
type publisher struct {
	w        *kafka.Writer
	client   *kafka.Client
	tr       *kafka.Transport // the Writer's and client's, closed by close
	topic    string
	producer uint64
	seq      atomic.Uint64
	parts    atomic.Int64 // partitions of the facts topic; 0 until known
	m        *roleMetrics
	scratch  sync.Pool // *ingestScratch

	bcastMu sync.Mutex
	bcast   [][16]byte // partitionKeys(len(bcast))
}

func newPublisher(cfg Config, conn *kafkaconn.Options, m *roleMetrics, logger *slog.Logger) *publisher {
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	tr := conn.Transport()
	p := &publisher{
		topic: cfg.Kafka.FactsTopic, producer: binary.BigEndian.Uint64(id[:]), m: m,
		client: &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Transport: tr},
		tr:     tr,
	}
	p.scratch.New = func() any { return &ingestScratch{} }
	p.w = &kafka.Writer{
		Addr:         kafka.TCP(cfg.Kafka.Brokers...),
		Topic:        cfg.Kafka.FactsTopic,
		Balancer:     keyBalancer{&p.parts},
		BatchTimeout: factsBatchTimeout,
		// A publish is one message per partition, and nothing else waits
		// to join it: a batch of one is flushed at once instead of after
		// BatchTimeout.
		BatchSize:    1,
		BatchBytes:   factsMaxBytes,
		RequiredAcks: kafka.RequireAll,
		Transport:    tr,
		ErrorLogger:  kafka.LoggerFunc(func(msg string, args ...any) { logger.Debug("kafka writer: " + fmt.Sprintf(msg, args...)) }),
	}
	return p
}

// close closes the Writer and the connections.
func (p *publisher) close() error {
	err := p.w.Close()
	p.tr.CloseIdleConnections()
	return err
}

// publishFacts publishes facts (which it does not modify) as publish does.
func (p *publisher) publishFacts(ctx context.Context, facts []analyzer.Fact) error {
	sc := p.scratch.Get().(*ingestScratch)
	defer p.scratch.Put(sc)
	sc.facts = append(sc.facts[:0], facts...)
	defer clear(sc.facts)
	return p.publish(ctx, sc)
}

// broadcast publishes facts to every partition of the facts topic, as one
// batch each.
func (p *publisher) broadcast(ctx context.Context, facts []analyzer.Fact) error {
	n, err := p.partitions(ctx)
	if err != nil {
		return err
	}
	p.bcastMu.Lock()
	if len(p.bcast) != n {
		p.bcast = partitionKeys(n)
	}
	keys := p.bcast
	p.bcastMu.Unlock()
	sc := p.scratch.Get().(*ingestScratch)
	defer p.scratch.Put(sc)
	b, err := sc.enc.Append(sc.bufs0[:0], factwire.Header{Producer: p.producer, Seq: p.seq.Add(1)}, facts)
	if err != nil {
		return err
	}
	sc.bufs0 = b
	sc.msgs = sc.msgs[:0]
	for i := range keys {
		sc.msgs = append(sc.msgs, kafka.Message{Key: keys[i][:], Value: b})
	}
	if err := p.w.WriteMessages(ctx, sc.msgs...); err != nil {
		return fmt.Errorf("write facts: %w", err)
	}
	p.m.published.WithLabelValues("facts").Add(float64(n * len(facts)))
	p.m.published.WithLabelValues("batches").Add(float64(n))
	return nil
}

// ingest is the ingest role's collector.Consumer: it resolves each request
// into facts and returns once they are published, so the Kafka transport
// commits a traces message only after its facts are acknowledged. From the
// Kafka transport, which calls Flush after a batch of messages and commits
// them only once it succeeded, it keeps the facts and publishes the whole
// batch's in Flush: one produce round trip a batch instead of one a message
// (issue 13). It also publishes, every roleTick, the appends whose command
// wait ran out. Safe for concurrent use.
type ingest struct {
	r       *analyzer.Resolver
	pub     *publisher
	conn    *kafkaconn.Options
	brokers []string
	topic   string
	logger  *slog.Logger
	// filter keeps what the analysis reads, for the pdata requests
	// ConsumeTraces converts into pooled batches (of *spanbatch.Batch).
	filter  spanbatch.Filter
	batches sync.Pool

	expireMu sync.Mutex
	// unsent are appends Expire released that a failed publish kept back;
	// bounded by the appends the Resolver holds, as a failed publish also
	// stalls the traces consumer that parks new ones.
	unsent []analyzer.Fact
	// pending are the facts (owned copies) of the requests consumed since
	// the last Flush that succeeded: bounded by a batch of the Kafka
	// transport, which stalls while Flush fails. Its own lock, so that
	// resolving does not wait for expire's publish; taken after expireMu.
	pendingMu sync.Mutex
	pending   []analyzer.Fact

	stop    context.CancelFunc
	running sync.WaitGroup
}

type ingestScratch struct {
	facts  []analyzer.Fact
	groups [][]analyzer.Fact
	msgs   []kafka.Message
	enc    factwire.Encoder
	// bufs and keys are the messages' values and keys by partition,
	// reused: the Writer is done with them when WriteMessages returns.
	// bufs0 is a broadcast's.
	bufs  [][]byte
	keys  [][16]byte
	bufs0 []byte
	// pkeys are partitionKeys(len(pkeys)).
	pkeys [][16]byte
}

// newIngest returns the ingest role on r, which it tells to mark the
// projections it cannot resolve from their producer span
// (Resolver.MarkSpanKeyed): the join role pairs them (rekey.go).
func newIngest(cfg Config, r *analyzer.Resolver, logger *slog.Logger, reg prometheus.Registerer) (*ingest, error) {
	m, err := newRoleMetrics(reg, RoleIngest)
	if err != nil {
		return nil, err
	}
	conn, err := kafkaconn.New(cfg.Kafka.Conn)
	if err != nil {
		return nil, fmt.Errorf("invalid kafka config: %w", err)
	}
	r.MarkSpanKeyed()
	logger = logger.With("role", RoleIngest)
	g := &ingest{
		r: r, topic: cfg.Kafka.FactsTopic, conn: conn, brokers: cfg.Kafka.Brokers, logger: logger,
		pub:    newPublisher(cfg, conn, m, logger),
		filter: cfg.Analyzer().Reads().Filter(),
	}
	g.batches.New = func() any { return new(spanbatch.Batch) }
	return g, nil
}

// start begins the expiry ticker.
func (g *ingest) start() {
	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	g.running.Go(func() {
		t := time.NewTicker(roleTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if err := g.expire(ctx, now, false); err != nil && ctx.Err() == nil {
					g.logger.Warn("cannot publish expired appends, retrying at the next tick", "err", g.conn.Diagnose(ctx, g.brokers, err))
				}
			}
		}
	})
}

// shutdown stops the ticker, publishes every append still waiting for its
// command (as Expire's flush does: command "none") within ctx, with the
// facts of a batch whose Flush failed, and closes the Writer. Call it after
// the consumers feeding ConsumeTraces stopped.
func (g *ingest) shutdown(ctx context.Context) error {
	if g.stop != nil {
		g.stop()
		g.running.Wait()
	}
	g.expireMu.Lock()
	g.pendingMu.Lock()
	g.unsent = append(g.unsent, g.pending...)
	g.pending = g.pending[:0]
	g.pendingMu.Unlock()
	g.expireMu.Unlock()
	err := g.expire(ctx, time.Now(), true)
	if err != nil {
		err = fmt.Errorf("publish the appends waiting for their command: %w", err)
	}
	return errors.Join(err, g.pub.close())
}

// expire publishes the appends Expire releases at now, with those a failed
// publish kept back: the Resolver has let them go, so they are retried
// here, not by a redelivery of their traces message.
func (g *ingest) expire(ctx context.Context, now time.Time, flush bool) error {
	g.expireMu.Lock()
	defer g.expireMu.Unlock()
	sc := g.pub.scratch.Get().(*ingestScratch)
	defer g.pub.scratch.Put(sc)
	sc.facts = g.r.Expire(append(sc.facts[:0], g.unsent...), now, flush)
	if err := g.pub.publish(ctx, sc); err != nil {
		g.unsent = append(g.unsent[:0], sc.facts...)
		return err
	}
	g.unsent = g.unsent[:0]
	return nil
}

// The consumers New hands the collector, the ingest role's and (role=all)
// the Analyzer, take batches without pdata.
var (
	_ collector.BatchConsumer = (*ingest)(nil)
	_ collector.BatchConsumer = (*analyzer.Analyzer)(nil)
)

// ConsumeTraces is ConsumeBatch of what the analysis reads of td
// (analyzer.Config.Reads), converted into a pooled spanbatch.Batch.
func (g *ingest) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	b := g.batches.Get().(*spanbatch.Batch)
	defer func() {
		b.Reset()
		g.batches.Put(b)
	}()
	b.FromTraces(td, g.filter)
	return g.ConsumeBatch(ctx, b)
}

// ConsumeBatch resolves b and returns once its facts are published; an
// error (the brokers did not acknowledge) makes the Kafka transport retry
// the message. The Resolver has seen its spans by then, and takes them for
// retries the second time: so the facts of a failed publish are kept (as
// copies: they are views into b) and published with the next message's,
// which is how the retried message is committed only once they are
// acknowledged. When a Flush follows (collector.FlushFollows), it keeps
// copies of the facts for Flush instead, and returns nil. It does not
// retain b.
func (g *ingest) ConsumeBatch(ctx context.Context, b *spanbatch.Batch) error {
	if collector.FlushFollows(ctx) {
		g.pendingMu.Lock()
		g.pending = g.r.ResolveBatch(g.pending, b, time.Now())
		g.pendingMu.Unlock()
		return nil
	}
	sc := g.pub.scratch.Get().(*ingestScratch)
	defer g.pub.scratch.Put(sc)
	g.expireMu.Lock()
	sc.facts = append(sc.facts[:0], g.unsent...)
	g.unsent = g.unsent[:0]
	g.expireMu.Unlock()
	// Views into b, encoded before this returns; cleared after, so that
	// the pooled scratch keeps nothing of b.
	sc.facts = g.r.ResolveBatchView(sc.facts, b, time.Now())
	defer clear(sc.facts)
	if err := g.pub.publish(ctx, sc); err != nil {
		g.keepUnsent(sc.facts)
		return fmt.Errorf("publish facts to %s: %w", g.topic, g.conn.Diagnose(ctx, g.brokers, err))
	}
	return nil
}

// Flush publishes the facts ConsumeTraces kept since the last Flush that
// succeeded, with those a failed publish kept back, as one batch per
// partition (collector.Flusher). On an error the Kafka transport calls it
// again before it commits anything of the batch, so the facts are kept.
func (g *ingest) Flush(ctx context.Context) error {
	sc := g.pub.scratch.Get().(*ingestScratch)
	defer g.pub.scratch.Put(sc)
	g.expireMu.Lock()
	sc.facts = append(sc.facts[:0], g.unsent...)
	unsent := len(sc.facts)
	g.unsent = g.unsent[:0]
	g.expireMu.Unlock()
	g.pendingMu.Lock()
	sc.facts = append(sc.facts, g.pending...)
	g.pendingMu.Unlock()
	defer clear(sc.facts)
	if err := g.pub.publish(ctx, sc); err != nil {
		g.expireMu.Lock()
		g.unsent = append(g.unsent, sc.facts[:unsent]...)
		g.expireMu.Unlock()
		return fmt.Errorf("publish facts to %s: %w", g.topic, g.conn.Diagnose(ctx, g.brokers, err))
	}
	g.pendingMu.Lock()
	// Only the Kafka transport's goroutine adds to pending, and it waits
	// for this Flush: these are the facts just published.
	clear(g.pending)
	g.pending = g.pending[:0]
	g.pendingMu.Unlock()
	return nil
}

// keepUnsent keeps copies of the facts a failed publish did not send, for
// the next publish.
func (g *ingest) keepUnsent(facts []analyzer.Fact) {
	g.expireMu.Lock()
	defer g.expireMu.Unlock()
	for i := range facts {
		if facts[i].Kind != 0 {
			g.unsent = append(g.unsent, facts[i].Clone())
		}
	}
}

// publish sends sc.facts as one batch per partition of the facts topic.
func (p *publisher) publish(ctx context.Context, sc *ingestScratch) error {
	if len(sc.facts) == 0 {
		return nil
	}
	n, err := p.partitions(ctx)
	if err != nil {
		return err
	}
	sent, err := sc.batches(n, func() factwire.Header { return factwire.Header{Producer: p.producer, Seq: p.seq.Add(1)} })
	if err != nil {
		return err
	}
	if len(sc.msgs) == 0 {
		return nil
	}
	if err := p.w.WriteMessages(ctx, sc.msgs...); err != nil {
		return fmt.Errorf("write facts: %w", err)
	}
	p.m.published.WithLabelValues("facts").Add(float64(sent))
	p.m.published.WithLabelValues("batches").Add(float64(len(sc.msgs)))
	return nil
}

// batches groups sc.facts by their partition of n and encodes each group
// as one message into sc.msgs, with the header next gives; it returns the
// number of facts they hold. A projection keyed by its producer span goes
// to every partition.
func (sc *ingestScratch) batches(n int, next func() factwire.Header) (int, error) {
	for len(sc.groups) < n {
		sc.groups = append(sc.groups, nil)
		sc.bufs = append(sc.bufs, nil)
		sc.keys = append(sc.keys, [16]byte{})
	}
	for i := range sc.groups {
		sc.groups[i] = sc.groups[i][:0]
	}
	if len(sc.pkeys) != n {
		sc.pkeys = partitionKeys(n)
	}
	for i := range sc.facts {
		f := &sc.facts[i]
		if f.Kind == 0 {
			continue // parked: not a fact to send
		}
		if f.Kind == analyzer.FactProjectSpan {
			// To every partition: the join instance that holds the
			// producer span's appends is not known (rekey.go).
			for p := range sc.groups[:n] {
				sc.groups[p] = append(sc.groups[p], *f)
			}
			continue
		}
		p := partitionOf(factKey(f), n)
		sc.groups[p] = append(sc.groups[p], *f)
	}
	sc.msgs = sc.msgs[:0]
	sent := 0
	for p, facts := range sc.groups[:n] {
		if len(facts) == 0 {
			continue
		}
		b, err := sc.enc.Append(sc.bufs[p][:0], next(), facts)
		if err != nil {
			return 0, err
		}
		sc.bufs[p] = b
		// A key the balancer routes to p: that of its first fact would
		// not do for a projection sent to every partition.
		sc.keys[p] = sc.pkeys[p]
		sc.msgs = append(sc.msgs, kafka.Message{Key: sc.keys[p][:], Value: b})
		sent += len(facts)
		clear(facts) // keep nothing of the request once encoded
	}
	return sent, nil
}

// partitions returns the facts topic's partition count: what the balancer
// last saw, else the brokers' metadata.
func (p *publisher) partitions(ctx context.Context) (int, error) {
	if n := p.parts.Load(); n > 0 {
		return int(n), nil
	}
	resp, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{p.topic}})
	if err != nil {
		return 0, fmt.Errorf("read metadata of %s: %w", p.topic, err)
	}
	for _, t := range resp.Topics {
		if t.Name == p.topic && t.Error == nil && len(t.Partitions) > 0 {
			p.parts.CompareAndSwap(0, int64(len(t.Partitions)))
			return int(p.parts.Load()), nil
		}
	}
	return 0, fmt.Errorf("topic %s has no partitions (create it before starting the ingest role)", p.topic)
}

// join is the join role: it consumes the facts topic in a consumer group,
// pairs the projections keyed by their producer span with the events of
// the span's appends (rekey.go), applies each batch to its Joiner, and
// commits a batch's offset only after it is applied and what it made the
// join publish (the news of the projections it resolved, the expectations
// its Joiner learned from it) is acknowledged (an undecodable batch is
// counted and committed). Messages are handled one at a time, in order.
type join struct {
	j      *analyzer.Joiner
	pair   *pairing
	pub    *publisher
	conn   *kafkaconn.Options
	m      *roleMetrics
	logger *slog.Logger
	rcfg   kafka.ReaderConfig
	reader *kafka.Reader
	seen   map[int]*batchMemory // by partition; only run touches it
	dec    factwire.Decoder     // only run touches it
	// extra and resolved are handle's scratch: the facts the pairing gives
	// the Joiner after the batch's, the news of projections it resolved
	// for their home partition.
	extra, resolved []analyzer.Fact

	learnMu sync.Mutex
	// learned are the expectations the Joiner learned that are not
	// broadcast yet (a failed publish keeps them for the next).
	learned []analyzer.Fact

	stop    context.CancelFunc
	running sync.WaitGroup
}

// batchMemory remembers the last replayMemory batch ids of a partition.
type batchMemory struct {
	ids  map[factwire.Header]struct{}
	ring []factwire.Header
	next int
}

// seen reports whether h was remembered, remembering it.
func (b *batchMemory) seen(h factwire.Header) bool {
	if _, ok := b.ids[h]; ok {
		return true
	}
	if len(b.ring) < replayMemory {
		b.ring = append(b.ring, h)
	} else {
		delete(b.ids, b.ring[b.next])
		b.ring[b.next] = h
		b.next = (b.next + 1) % replayMemory
	}
	b.ids[h] = struct{}{}
	return false
}

func newJoin(cfg Config, j *analyzer.Joiner, logger *slog.Logger, reg prometheus.Registerer) (*join, error) {
	m, err := newRoleMetrics(reg, RoleJoin)
	if err != nil {
		return nil, err
	}
	conn, err := kafkaconn.New(cfg.Kafka.Conn)
	if err != nil {
		return nil, fmt.Errorf("invalid kafka config: %w", err)
	}
	j.RecordLearned()
	jn := &join{
		j: j, conn: conn, m: m, logger: logger.With("role", RoleJoin), seen: make(map[int]*batchMemory),
		pair: newPairing(cfg.Analyzer(), m.pairing, j.Holds),
	}
	jn.pub = newPublisher(cfg, conn, m, jn.logger)
	jn.rcfg = kafka.ReaderConfig{
		Brokers:        cfg.Kafka.Brokers,
		Dialer:         conn.Dialer(),
		GroupID:        cfg.Kafka.GroupID + JoinGroupSuffix,
		Topic:          cfg.Kafka.FactsTopic,
		MaxBytes:       factsMaxBytes,
		CommitInterval: time.Second,
		StartOffset:    kafka.FirstOffset,
		MaxWait:        time.Second, // bounds Shutdown, as for the traces topic
		SessionTimeout: collector.KafkaSessionTimeout,
		ErrorLogger:    kafka.LoggerFunc(func(msg string, args ...any) { jn.logger.Debug("kafka reader: " + fmt.Sprintf(msg, args...)) }),
	}
	return jn, nil
}

// start checks, within ctx and a few seconds, that the brokers accept the
// client's credentials (an error wrapping kafkaconn.ErrAuthentication if
// they refuse them; unreachable brokers are logged and retried), then
// starts consuming and ticking.
func (jn *join) start(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	err := jn.conn.Check(cctx, jn.rcfg.Brokers)
	cancel()
	if errors.Is(err, kafkaconn.ErrAuthentication) {
		return err
	} else if err != nil {
		jn.logger.Warn("cannot reach the Kafka brokers yet, retrying in the background", "err", err)
	}
	jn.reader = kafka.NewReader(jn.rcfg)
	ctx, stop := context.WithCancel(context.Background())
	jn.stop = stop
	jn.running.Go(func() { jn.run(ctx) })
	jn.running.Go(func() {
		t := time.NewTicker(roleTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				jn.expire(ctx, now, false)
				jn.j.Tick(now)
			}
		}
	})
	jn.logger.Info("joining facts from Kafka", "topic", jn.rcfg.Topic, "group", jn.rcfg.GroupID, "security", jn.conn.String())
	return nil
}

// shutdown stops fetching, waits for the batch in hand to be applied, then
// publishes again the projections keyed by their producer span that no
// instance resolved yet (to every partition, whose next owners wait in
// turn) and the expectations not broadcast yet, closes the reader, which
// commits what was applied and leaves the group, and ticks the Joiner a
// last time. ctx bounds the wait for the loops and the publishes.
func (jn *join) shutdown(ctx context.Context) error {
	if jn.reader == nil {
		return nil
	}
	jn.stop()
	done := make(chan struct{})
	go func() {
		jn.running.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("stop the join of facts: %w", ctx.Err())
	}
	if waiting := jn.pair.handOver(nil); len(waiting) > 0 {
		if perr := jn.pub.publishFacts(ctx, waiting); perr != nil {
			err = errors.Join(err, fmt.Errorf("hand over %d projections waiting for their producer's appends: %w", len(waiting), perr))
		}
	}
	if berr := jn.broadcastLearned(ctx); berr != nil {
		err = errors.Join(err, fmt.Errorf("broadcast learned expectations: %w", berr))
	}
	if cerr := jn.reader.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close facts reader: %w", cerr))
	}
	err = errors.Join(err, jn.pub.close())
	jn.j.Tick(time.Now())
	return err
}

func (jn *join) run(ctx context.Context) {
	var facts []analyzer.Fact
	backoff := 50 * time.Millisecond
	for {
		msg, err := jn.reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			jn.logger.Warn("cannot fetch facts, retrying", "err", jn.conn.Explain(strings.Join(jn.rcfg.Brokers, ","), err), "in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if facts, err = jn.handle(ctx, facts[:0], msg); err != nil {
			// Stopped while the brokers refused the news of resolved
			// projections: the batch was not applied, and is not
			// committed: its partition's next owner handles it.
			jn.logger.Warn("stopped before the facts batch was handled; not committed", "partition", msg.Partition, "offset", msg.Offset, "err", err)
			return
		}
		// The Joiner has the batch: the offset may be committed. Not
		// ctx: a stop between Apply and here must still commit.
		if err := jn.reader.CommitMessages(context.WithoutCancel(ctx), msg); err != nil {
			jn.logger.Warn("cannot commit facts offset", "partition", msg.Partition, "offset", msg.Offset, "err", err)
		}
	}
}

// sleep waits d or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handle decodes and applies one batch into scratch facts, which it
// returns: the news of the projections the pairing resolved is published
// first, retried until the brokers acknowledge it (an error only when ctx
// is done before: the batch is then not applied), then the batch and what
// the pairing joined go to the Joiner, and what the Joiner learned from
// them is broadcast.
func (jn *join) handle(ctx context.Context, facts []analyzer.Fact, msg kafka.Message) ([]analyzer.Fact, error) {
	h, facts, err := jn.dec.Decode(facts, msg.Value)
	if err != nil {
		reason := "malformed"
		if errors.Is(err, factwire.ErrVersion) {
			reason = "version"
		}
		jn.m.rejected.WithLabelValues(reason).Inc()
		jn.logger.Warn("skipped undecodable facts batch", "partition", msg.Partition, "offset", msg.Offset, "reason", reason, "err", err)
		return facts, nil
	}
	mem := jn.seen[msg.Partition]
	if mem == nil {
		mem = &batchMemory{ids: make(map[factwire.Header]struct{})}
		jn.seen[msg.Partition] = mem
		// A partition new to this instance: ask the others for what
		// they learned before it started (a question, not an answer:
		// a learned fact without type and projection).
		jn.learnMu.Lock()
		jn.learned = append(jn.learned, analyzer.Fact{Kind: analyzer.FactLearned})
		jn.learnMu.Unlock()
	}
	if mem.seen(h) {
		jn.m.replayed.Add(float64(len(facts)))
		return facts, nil
	}
	now := time.Now()
	n := 0 // the pairing needs it for projections keyed by their span only
	if hasSpanFacts(facts) {
		if n, err = jn.partitions(ctx); err != nil {
			return facts, err
		}
	}
	jn.extra, jn.resolved = jn.pair.pair(jn.extra[:0], jn.resolved[:0], facts, msg.Partition, n, now.UnixNano())
	defer func() { clear(jn.extra); clear(jn.resolved) }() // views into the batch
	if len(jn.resolved) > 0 {
		if err := jn.publishRetrying(ctx, jn.resolved); err != nil {
			return facts, err
		}
	}
	jn.apply(ctx, facts, now, h.Producer)
	if len(jn.extra) > 0 {
		jn.apply(ctx, jn.extra, now, 0)
	}
	jn.m.applied.Add(float64(len(facts)))
	return facts, nil
}

// apply gives facts, which producer published, to the Joiner, the
// expectations other instances learned to Joiner.Learn, and broadcasts
// those the Joiner learned from them, and all it learned if another
// instance asked.
func (jn *join) apply(ctx context.Context, facts []analyzer.Fact, now time.Time, producer uint64) {
	asked := false
	for i := range facts {
		f := &facts[i]
		switch {
		case f.Kind != analyzer.FactLearned:
		case f.EventType == "" && f.Projection == "":
			asked = asked || producer != jn.pub.producer
		default:
			jn.j.Learn(f.EventType, f.Projection, time.Unix(0, f.Start))
		}
	}
	jn.j.Apply(facts, now)
	if asked {
		jn.learnMu.Lock()
		jn.learned = jn.j.Learned(jn.learned)
		jn.learnMu.Unlock()
	}
	if err := jn.broadcastLearned(ctx); err != nil && ctx.Err() == nil {
		jn.logger.Warn("cannot broadcast learned expectations, retrying at the next tick", "err", jn.conn.Diagnose(ctx, jn.rcfg.Brokers, err))
	}
}

// expire joins keyed by their producer span the projections of its home
// partitions that no instance resolved in time by now (all when all is
// set: the test's end).
func (jn *join) expire(ctx context.Context, now time.Time, all bool) {
	if facts := jn.pair.expire(nil, now.UnixNano(), all); len(facts) > 0 {
		jn.apply(ctx, facts, now, 0)
	} else if err := jn.broadcastLearned(ctx); err != nil && ctx.Err() == nil {
		jn.logger.Warn("cannot broadcast learned expectations, retrying at the next tick", "err", jn.conn.Diagnose(ctx, jn.rcfg.Brokers, err))
	}
}

// partitions returns the facts topic's partition count, retrying as
// publishRetrying does.
func (jn *join) partitions(ctx context.Context) (int, error) {
	backoff := 50 * time.Millisecond
	for {
		n, err := jn.pub.partitions(context.WithoutCancel(ctx))
		if err == nil {
			return n, nil
		}
		jn.logger.Warn("cannot read the facts topic's partitions, retrying", "err", jn.conn.Diagnose(ctx, jn.rcfg.Brokers, err), "in", backoff)
		if !sleep(ctx, backoff) {
			return 0, err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// publishRetrying publishes facts, retrying with a backoff until the
// brokers acknowledge them or ctx is done. An attempt under way when ctx
// is done runs to its end (the Writer's timeouts bound it): the batch in
// hand at a stop is finished.
func (jn *join) publishRetrying(ctx context.Context, facts []analyzer.Fact) error {
	backoff := 50 * time.Millisecond
	for {
		err := jn.pub.publishFacts(context.WithoutCancel(ctx), facts)
		if err == nil {
			return nil
		}
		jn.logger.Warn("cannot publish facts, retrying", "err", jn.conn.Diagnose(ctx, jn.rcfg.Brokers, err), "in", backoff)
		if !sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// broadcastLearned publishes to every partition the expectations the
// Joiner learned that are not broadcast yet; on error they are kept for
// the next call.
func (jn *join) broadcastLearned(ctx context.Context) error {
	jn.learnMu.Lock()
	defer jn.learnMu.Unlock()
	jn.learned = jn.j.TakeLearned(jn.learned)
	if len(jn.learned) == 0 {
		return nil
	}
	if err := jn.pub.broadcast(ctx, jn.learned); err != nil {
		return err
	}
	clear(jn.learned)
	jn.learned = jn.learned[:0]
	return nil
}
