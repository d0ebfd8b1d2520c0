// Package kafkalag exports the offset lag of Kafka consumer groups, as Burrow
// and kafka-lag-exporter do: how many messages each group has not consumed
// yet, per partition, and how old the oldest of them is, per topic. Unlike
// trace-based lag it sees every message, traced and sampled or not.
//
// Every Config.Interval an Exporter lists the groups (or takes
// Config.Groups), reads their committed offsets (OffsetFetch) and the topics
// their members are assigned (DescribeGroups), the partitions of those
// topics (Metadata), their first and end offsets (ListOffsets), and for each
// partition behind, the message at the group's position (Fetch), whose
// timestamp gives the time lag. A partition the group never committed counts
// from the log start. Groups, topics and partitions are bounded before they
// become label values; what is left out is counted.
package kafkalag

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/lagscope/lagscope/kafkaconn"
)

// fetchMaxBytes bounds what one Fetch of the oldest unconsumed message
// asks for; brokers return the first batch whole even when it is larger.
const fetchMaxBytes = 1 << 20

// Exporter reads consumer group offsets periodically and exports their lag.
// Its methods are safe for concurrent use.
type Exporter struct {
	cfg     Config
	client  *kafka.Client
	tr      *kafka.Transport
	conn    *kafkaconn.Options
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time

	pollMu sync.Mutex // one round at a time

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// New returns an Exporter for the brokers of cfg. It validates cfg (Brokers
// must not be empty), reads the files of cfg.Conn, registers the lag metrics and its own counters with
// reg (skipped if reg is nil) and logs broker errors at Warn to logger
// (discarded if nil). It connects to nothing until Start or Poll.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid kafka lag config: %w", err)
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("invalid kafka lag config: kafka.brokers is empty")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := kafkaconn.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("invalid kafka lag config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	cfg.Groups = slices.Clone(cfg.Groups)
	tr := conn.Transport()
	return &Exporter{
		cfg:     cfg,
		client:  &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr},
		tr:      tr,
		conn:    conn,
		metrics: m,
		logger:  logger,
		now:     time.Now,
	}, nil
}

// Start polls once at once, then every Config.Interval, in the background
// until Shutdown; it returns at once (ctx is not used). Start may be called
// once.
func (e *Exporter) Start(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("kafkalag: exporter already started")
	}
	e.started = true
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.running.Go(func() {
		t := time.NewTicker(e.cfg.Interval)
		defer t.Stop()
		for {
			if err := e.Poll(ctx); err != nil && ctx.Err() == nil {
				e.logger.Warn("cannot read Kafka consumer group lag", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

// Shutdown cancels the round in progress, waits for the polling loop to end
// (or for ctx, whose error it then returns) and closes the broker
// connections. Shutdown without Start, or twice, does nothing.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started || e.stopped {
		return nil
	}
	e.stopped = true
	e.cancel()
	done := make(chan struct{})
	go func() {
		e.running.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shut down kafka lag exporter: %w", ctx.Err())
	}
	e.tr.CloseIdleConnections()
	return err
}

// Poll runs one round: it reads the offsets of the groups and replaces what
// the metrics report. A request that fails is counted and logged, and what
// it covers keeps the values of the previous round; Poll returns the
// errors joined. A round is bounded by Config.Interval.
func (e *Exporter) Poll(ctx context.Context) error {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Interval)
	defer cancel()

	r := &round{e: e, ctx: ctx, prev: e.metrics.snapshot()}
	r.run()
	sortSnapshot(r.next)
	e.metrics.set(r.next)
	return errors.Join(r.errs...)
}

// round is the state of one Poll.
type round struct {
	e    *Exporter
	ctx  context.Context
	prev snapshot
	next snapshot
	errs []error
}

// fail counts and keeps a failed request's error; a refusal of the
// client's TLS or SASL credentials says so, with broker and mechanism.
func (r *round) fail(o op, err error) {
	r.e.metrics.errors[o].Inc()
	err = r.e.conn.Diagnose(r.ctx, r.e.cfg.Brokers, err)
	r.errs = append(r.errs, fmt.Errorf("%s: %w", o, err))
}

func (r *round) skip(why skipReason, n int) {
	if n > 0 {
		r.e.metrics.skipped[why].Add(float64(n))
	}
}

// keepAll carries the previous round over, in slices of its own: the
// previous ones may be being collected.
func (r *round) keepAll() {
	r.next = snapshot{partitions: slices.Clone(r.prev.partitions), topics: slices.Clone(r.prev.topics)}
}

// keep carries group's series of the previous round over.
func (r *round) keep(group string) {
	for _, p := range r.prev.partitions {
		if p.group == group {
			r.next.partitions = append(r.next.partitions, p)
		}
	}
	for _, t := range r.prev.topics {
		if t.group == group {
			r.next.topics = append(r.next.topics, t)
		}
	}
}

// keepTopic carries the time lag of group on topic over, reporting whether
// there was one.
func (r *round) keepTopic(group, topic string) bool {
	for _, t := range r.prev.topics {
		if t.group == group && t.topic == topic {
			r.next.topics = append(r.next.topics, t)
			return true
		}
	}
	return false
}

func (r *round) run() {
	groups, ok := r.groups()
	if !ok {
		r.keepAll()
		return
	}
	if len(groups) == 0 {
		return
	}
	assigned, ok := r.assignedTopics(groups)
	if !ok {
		r.keepAll()
		return
	}
	// committed[group][topic][partition]; groups whose offsets could not be
	// read are missing.
	committed := make(map[string]map[string]map[int]int64, len(groups))
	topicsOf := make(map[string][]string, len(groups))
	for _, g := range groups {
		c, err := r.offsets(g)
		if err != nil {
			r.fail(opOffsetFetch, fmt.Errorf("group %q: %w", g, err))
			continue
		}
		committed[g] = c
		topicsOf[g] = r.boundTopics(slices.Concat(slices.Collect(maps.Keys(c)), assigned[g]))
	}
	var all []string
	for _, ts := range topicsOf {
		all = append(all, ts...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	parts, offsets, ok := r.topicOffsets(all)
	for _, g := range groups {
		c, read := committed[g]
		if !read || !ok {
			r.keep(g)
			continue
		}
		for _, topic := range topicsOf[g] {
			r.groupTopic(g, topic, parts[topic], offsets, c[topic])
		}
	}
}

// groups returns the groups to read, bounded and sorted.
func (r *round) groups() ([]string, bool) {
	groups := r.e.cfg.Groups
	if len(groups) == 0 {
		resp, err := r.e.client.ListGroups(r.ctx, &kafka.ListGroupsRequest{})
		if err == nil {
			err = resp.Error
		}
		if err == nil && len(resp.Groups) == 0 {
			// kafka-go's ListGroups answers no groups, and no error, when
			// it cannot reach the cluster: tell that from an empty cluster,
			// lest an outage wipe every series.
			if _, perr := r.e.client.ApiVersions(r.ctx, &kafka.ApiVersionsRequest{}); perr != nil {
				err = fmt.Errorf("reach the cluster: %w", perr)
			}
		}
		if err != nil {
			r.fail(opListGroups, err)
			return nil, false
		}
		for _, g := range resp.Groups {
			if checkName(g.GroupID) != "" {
				r.skip(skipInvalidName, 1)
				continue
			}
			groups = append(groups, g.GroupID)
		}
	}
	groups = slices.Clone(groups)
	slices.Sort(groups)
	groups = slices.Compact(groups)
	if n := r.e.cfg.MaxGroups; len(groups) > n {
		r.skip(skipMaxGroups, len(groups)-n)
		groups = groups[:n]
	}
	return groups, true
}

// assignedTopics returns the topics each group's members are assigned, so
// that a group that never committed on a topic still shows its lag there.
func (r *round) assignedTopics(groups []string) (map[string][]string, bool) {
	resp, err := r.e.client.DescribeGroups(r.ctx, &kafka.DescribeGroupsRequest{GroupIDs: groups})
	if err != nil {
		r.fail(opDescribeGroups, err)
		return nil, false
	}
	out := make(map[string][]string, len(resp.Groups))
	for _, g := range resp.Groups {
		if g.Error != nil {
			r.fail(opDescribeGroups, fmt.Errorf("group %q: %w", g.GroupID, g.Error))
			continue
		}
		for _, m := range g.Members {
			for _, t := range m.MemberAssignments.Topics {
				out[g.GroupID] = append(out[g.GroupID], t.Topic)
			}
		}
	}
	return out, true
}

// offsets returns the offsets group committed, by topic and partition.
func (r *round) offsets(group string) (map[string]map[int]int64, error) {
	resp, err := r.e.client.OffsetFetch(r.ctx, &kafka.OffsetFetchRequest{GroupID: group})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[int]int64, len(resp.Topics))
	for topic, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil || p.CommittedOffset < 0 {
				continue // -1: never committed, counted from the log start
			}
			if out[topic] == nil {
				out[topic] = make(map[int]int64, len(ps))
			}
			out[topic][p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// boundTopics sorts and deduplicates topics, drops invalid names and keeps
// at most MaxTopics, counting what it drops.
func (r *round) boundTopics(topics []string) []string {
	slices.Sort(topics)
	topics = slices.Compact(topics)
	topics = slices.DeleteFunc(topics, func(t string) bool {
		if checkName(t) != "" {
			r.skip(skipInvalidName, 1)
			return true
		}
		return false
	})
	if n := r.e.cfg.MaxTopics; len(topics) > n {
		r.skip(skipMaxTopics, len(topics)-n)
		topics = topics[:n]
	}
	return topics
}

// topicPartition names a partition.
type topicPartition struct {
	topic     string
	partition int
}

// firstEnd is a partition's log start and end offsets.
type firstEnd struct{ first, end int64 }

// topicOffsets returns the partitions of topics (bounded, sorted) and their
// first and end offsets.
func (r *round) topicOffsets(topics []string) (map[string][]int, map[topicPartition]firstEnd, bool) {
	if len(topics) == 0 {
		return nil, nil, true
	}
	md, err := r.e.client.Metadata(r.ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		r.fail(opMetadata, err)
		return nil, nil, false
	}
	parts := make(map[string][]int, len(md.Topics))
	req := make(map[string][]kafka.OffsetRequest, len(md.Topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			r.fail(opMetadata, fmt.Errorf("topic %q: %w", t.Name, t.Error))
			continue
		}
		ps := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ps = append(ps, p.ID)
		}
		slices.Sort(ps)
		if n := r.e.cfg.MaxPartitions; len(ps) > n {
			r.skip(skipMaxPartitions, len(ps)-n)
			ps = ps[:n]
		}
		parts[t.Name] = ps
		for _, p := range ps {
			req[t.Name] = append(req[t.Name], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
		}
	}
	if len(req) == 0 {
		return parts, nil, true
	}
	resp, err := r.e.client.ListOffsets(r.ctx, &kafka.ListOffsetsRequest{Topics: req})
	if err != nil {
		r.fail(opListOffsets, err)
		return nil, nil, false
	}
	offsets := make(map[topicPartition]firstEnd)
	for topic, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				r.fail(opListOffsets, fmt.Errorf("topic %q partition %d: %w", topic, p.Partition, p.Error))
				continue
			}
			offsets[topicPartition{topic, p.Partition}] = firstEnd{p.FirstOffset, p.LastOffset}
		}
	}
	return parts, offsets, true
}

// groupTopic adds the lag of group on the partitions of topic to the round,
// given what it committed there (nil if nothing).
func (r *round) groupTopic(group, topic string, parts []int, offsets map[topicPartition]firstEnd, committed map[int]int64) {
	oldest := time.Duration(0)
	fetchFailed := false
	for _, p := range parts {
		fe, ok := offsets[topicPartition{topic, p}]
		if !ok {
			continue // its ListOffsets failed, counted
		}
		pos, ok := committed[p]
		// Messages below the log start are gone: they are no longer behind.
		if !ok || pos < fe.first {
			pos = fe.first
		}
		lag := max(fe.end-pos, 0)
		r.next.partitions = append(r.next.partitions, partitionLag{
			group: group, topic: topic, partition: p, position: pos, end: fe.end, lag: lag,
		})
		if lag == 0 {
			continue
		}
		ts, err := r.timestampAt(topic, p, pos)
		if err != nil {
			r.fail(opFetch, fmt.Errorf("topic %q partition %d offset %d: %w", topic, p, pos, err))
			fetchFailed = true
			continue
		}
		if !ts.IsZero() {
			oldest = max(oldest, r.e.now().Sub(ts))
		}
	}
	if fetchFailed && r.keepTopic(group, topic) {
		return
	}
	r.next.topics = append(r.next.topics, topicLag{group: group, topic: topic, seconds: oldest.Seconds()})
}

// timestampAt returns the timestamp of the message at offset of a
// partition, or the zero time if it has none.
func (r *round) timestampAt(topic string, partition int, offset int64) (time.Time, error) {
	resp, err := r.e.client.Fetch(r.ctx, &kafka.FetchRequest{
		Topic: topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: fetchMaxBytes, MaxWait: 100 * time.Millisecond,
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return time.Time{}, err
	}
	if resp.Records == nil {
		return time.Time{}, errors.New("no message at the offset")
	}
	// A batch may start before offset: skip to it.
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			return time.Time{}, errors.New("no message at the offset")
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("read record: %w", err)
		}
		if rec.Offset < offset {
			continue
		}
		if rec.Time.UnixMilli() <= 0 {
			return time.Time{}, nil // no timestamp (-1): no age to tell
		}
		return rec.Time, nil
	}
}

// sortSnapshot orders a snapshot for stable output in tests and scrapes.
func sortSnapshot(s snapshot) {
	slices.SortFunc(s.partitions, func(a, b partitionLag) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	slices.SortFunc(s.topics, func(a, b topicLag) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.topic, b.topic))
	})
}
