package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// Feed consumes the relayed events of one projection with the consumer
// group named after it; it implements projection.Feed. Offsets are
// committed only by Committed, after the read-model transaction. Use it
// from one goroutine; Redelivered and Undecodable are safe for concurrent
// use.
type Feed struct {
	cfg    Config
	group  string
	logger *slog.Logger
	// reader is made by the first Next: a group reader joins its group as
	// it is made, and a group joined before the topic exists gets no
	// partition (kafka-go then waits for a rebalance that may not come).
	reader *kafka.Reader
	dialer *kafka.Dialer // with cfg's TLS and SASL

	// pending holds the messages fetched and not committed, in fetch
	// order; pos is the event's position, 0 for a message that cannot be
	// decoded (it is committed with the next position that passes).
	pending []fetched
	byPos   map[int64]kafka.Message

	redelivered, undecodable atomic.Int64
}

type fetched struct {
	msg kafka.Message
	pos int64
	e   orders.Event
}

// NewFeed returns a feed of cfg.Topic for the consumer group group (the
// projection's name). It connects to nothing and joins no group until the
// first Next: call EnsureTopic before, so that the topic exists (and has
// one partition) when it does. logger may be nil.
func NewFeed(cfg Config, group string, logger *slog.Logger) (*Feed, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if group == "" {
		return nil, errors.New("kafka: feed without a consumer group")
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sec, err := newSecurity(cfg)
	if err != nil {
		return nil, err
	}
	return &Feed{
		dialer: sec.dialer(),
		cfg:    cfg,
		group:  group,
		logger: logger,
		byPos:  map[int64]kafka.Message{},
	}, nil
}

func (f *Feed) newReader() *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:        f.cfg.Brokers,
		Dialer:         f.dialer,
		GroupID:        f.group,
		Topic:          f.cfg.Topic,
		MinBytes:       1,
		MaxBytes:       16 << 20,
		MaxWait:        f.cfg.MaxWait,
		CommitInterval: 0, // synchronous commits, by Committed only
		StartOffset:    kafka.FirstOffset,
		ReadBackoffMin: 10 * time.Millisecond,
		ReadBackoffMax: 200 * time.Millisecond,
		// A projector that restarts rejoins at once.
		JoinGroupBackoff: 100 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(format string, args ...any) {
			f.logger.Warn(fmt.Sprintf(format, args...))
		}),
	})
}

// Next returns the events fetched and not yet applied (above after) or,
// if there are none, waits for new messages and returns up to limit of
// them. A message whose event is at or below after (a redelivery, or a
// re-publication by the relay) is not returned: it is counted in
// Redelivered and committed with the next checkpoint.
func (f *Feed) Next(ctx context.Context, after int64, limit int) ([]orders.Event, error) {
	if err := f.Committed(ctx, after); err != nil {
		return nil, err
	}
	if out := f.ready(after, limit); len(out) > 0 {
		return out, nil
	}
	if f.reader == nil {
		f.reader = f.newReader()
	}
	for {
		m, err := f.reader.FetchMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("fetch from %s: %w", f.cfg.Topic, err)
		}
		f.add(m)
		// Take what the reader already holds, without waiting for more.
		for len(f.pending) < limit {
			wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			m, err := f.reader.FetchMessage(wctx)
			cancel()
			if err != nil {
				break
			}
			f.add(m)
		}
		if out := f.ready(after, limit); len(out) > 0 {
			return out, nil
		}
		// Only redeliveries: commit them and wait for new messages.
		if err := f.Committed(ctx, after); err != nil {
			return nil, err
		}
	}
}

func (f *Feed) add(m kafka.Message) {
	e, err := Event(m)
	if err != nil {
		f.undecodable.Add(1)
		f.logger.Error("projector skips an undecodable message", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "group", f.group, "err", err)
		f.pending = append(f.pending, fetched{msg: m})
		return
	}
	f.pending = append(f.pending, fetched{msg: m, pos: e.Position, e: e})
}

// ready returns, in fetch order, the pending events above after, each
// above the one before (a batch is in strictly ascending positions): a
// message at or below what precedes it is a re-publication.
func (f *Feed) ready(after int64, limit int) []orders.Event {
	var out []orders.Event
	hi := after
	for _, p := range f.pending {
		if len(out) == limit {
			break
		}
		if p.pos <= hi {
			continue
		}
		hi = p.pos
		out = append(out, p.e)
		f.byPos[p.pos] = p.msg
	}
	return out
}

// Committed commits the offsets of the pending messages, from the first
// on, whose events are at or below checkpoint: the read model has them.
func (f *Feed) Committed(ctx context.Context, checkpoint int64) error {
	n := 0
	for n < len(f.pending) && f.pending[n].pos <= checkpoint {
		n++
	}
	if n == 0 {
		return nil
	}
	last := f.pending[n-1].msg
	if err := f.reader.CommitMessages(ctx, last); err != nil {
		return fmt.Errorf("commit offset %d of %s/%d for group %s: %w", last.Offset+1, last.Topic, last.Partition, f.group, err)
	}
	for _, p := range f.pending[:n] {
		switch _, ok := f.byPos[p.pos]; {
		case p.pos == 0: // undecodable, counted as such
		case ok:
			delete(f.byPos, p.pos)
		default:
			f.redelivered.Add(1) // never handed to the projector
		}
	}
	f.pending = append(f.pending[:0], f.pending[n:]...)
	return nil
}

// Attributes returns the messaging attributes of the project span of e,
// which is the message's process span.
func (f *Feed) Attributes(e orders.Event) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		telemetry.MessagingSystem.String(telemetry.SystemKafka),
		telemetry.MessagingDestination.String(f.cfg.Topic),
		telemetry.MessagingOperationType.String(telemetry.OpProcess),
		telemetry.MessagingOperationName.String(telemetry.OpProcess),
		telemetry.MessagingConsumerGroup.String(f.group),
		telemetry.MessagingMessageID.String(e.ID),
		telemetry.MessagingKafkaKey.String(e.AggregateID),
	}
	if m, ok := f.byPos[e.Position]; ok {
		attrs = append(attrs,
			telemetry.MessagingPartition.String(fmt.Sprint(m.Partition)),
			telemetry.MessagingKafkaOffset.Int64(m.Offset))
	}
	return attrs
}

// Redelivered counts messages skipped because the read model already had
// their event (redeliveries after a restart, re-publications by the relay).
func (f *Feed) Redelivered() int64 { return f.redelivered.Load() }

// Undecodable counts messages skipped because they hold no event.
func (f *Feed) Undecodable() int64 { return f.undecodable.Load() }

// Close leaves the consumer group and closes the connections; offsets not
// committed are delivered again to the group's next member.
func (f *Feed) Close() error {
	if f.reader == nil {
		return nil
	}
	if err := f.reader.Close(); err != nil {
		return fmt.Errorf("close feed of group %s: %w", f.group, err)
	}
	return nil
}
