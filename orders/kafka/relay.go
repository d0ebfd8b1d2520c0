package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// CheckpointName returns the name under which the relay of topic keeps its
// checkpoint among the store's projection checkpoints (Views.Checkpoint):
// "relay:" + topic. A SQL position source shows it as the relay's position
// lag.
func CheckpointName(topic string) string { return "relay:" + topic }

// RelayStats is a snapshot of a Relay's counters.
type RelayStats struct {
	// Checkpoint is the store position published up to.
	Checkpoint int64 `json:"checkpoint"`
	// Published counts messages the broker acknowledged (re-publications
	// after a failed checkpoint included).
	Published int64 `json:"published"`
	// Errors counts failed reads, writes and checkpoint moves (each retried).
	Errors int64 `json:"errors"`
}

// Relay publishes the events committed to a store to the topic, in
// position order, from its checkpoint: a transactional outbox whose outbox
// is the event store itself. Start it once, then Shutdown.
type Relay struct {
	cfg    Config
	store  orders.Store
	views  orders.Views
	tracer trace.Tracer
	logger *slog.Logger
	writer *kafka.Writer
	tr     *kafka.Transport
	name   string

	checkpoint, published, errors atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRelay returns a relay of store's events to cfg.Topic that keeps its
// checkpoint in views (the same database), tracing with tp. logger may be
// nil. It connects to nothing: see Start.
func NewRelay(cfg Config, store orders.Store, views orders.Views, tp trace.TracerProvider, logger *slog.Logger) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sec, err := newSecurity(cfg)
	if err != nil {
		return nil, err
	}
	tr := sec.transport()
	return &Relay{
		cfg:    cfg,
		tr:     tr,
		store:  store,
		views:  views,
		tracer: tp.Tracer(telemetry.ScopeName),
		logger: logger,
		name:   CheckpointName(cfg.Topic),
		writer: &kafka.Writer{
			Addr:      kafka.TCP(cfg.Brokers...),
			Topic:     cfg.Topic,
			Transport: tr,
			// The Java client's partitioner, so that other producers keyed
			// by aggregate id agree on the partition.
			Balancer:     &kafka.Murmur2Balancer{Consistent: true},
			RequiredAcks: kafka.RequireAll,
			// One write of the relay is one batch per partition, so that a
			// write fails or succeeds per partition as a whole: a later
			// batch can never land before an earlier one that failed.
			BatchSize:    cfg.BatchSize,
			BatchBytes:   16 << 20,
			BatchTimeout: time.Millisecond,
			MaxAttempts:  3,
		},
	}, nil
}

// Start makes sure the topic exists (one partition), reads the checkpoint
// and starts the relay's goroutine. ctx bounds the start only.
func (r *Relay) Start(ctx context.Context) error {
	if err := EnsureTopic(ctx, r.cfg); err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	cp, err := r.views.Checkpoint(ctx, r.name)
	if err != nil {
		return fmt.Errorf("start relay: read checkpoint: %w", err)
	}
	r.checkpoint.Store(cp)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(runCtx)
	}()
	return nil
}

// Shutdown stops the relay, waiting for a write in flight to end (it is
// then re-published by the next start unless its checkpoint moved), or for
// ctx to end; then it closes the writer.
func (r *Relay) Shutdown(ctx context.Context) error {
	if r.cancel != nil {
		r.cancel()
		done := make(chan struct{})
		go func() {
			r.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("stop relay: %w", ctx.Err())
		}
	}
	err := r.writer.Close()
	r.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("stop relay: close writer: %w", err)
	}
	return nil
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Checkpoint: r.checkpoint.Load(), Published: r.published.Load(), Errors: r.errors.Load()}
}

func (r *Relay) run(ctx context.Context) {
	wake, stop := r.store.Subscribe()
	defer stop()
	tick := time.NewTicker(r.cfg.PollInterval)
	defer tick.Stop()
	for {
		pos := r.checkpoint.Load()
		events, err := r.store.ReadAll(ctx, pos, r.cfg.BatchSize)
		if err == nil && len(events) > 0 {
			err = r.publish(ctx, events)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.errors.Add(1)
			r.logger.Error("relay cannot publish events", "topic", r.cfg.Topic, "after", pos, "err", err)
		} else if len(events) == r.cfg.BatchSize {
			continue // more to read
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// publish writes events in one produce request per partition, then moves
// the checkpoint past them. Each event gets a send span, child of the
// context in its metadata, whose context the message's headers carry.
func (r *Relay) publish(ctx context.Context, events []orders.Event) error {
	msgs := make([]kafka.Message, 0, len(events))
	spans := make([]trace.Span, 0, len(events))
	end := func(err error) {
		for _, s := range spans {
			if err != nil {
				s.RecordError(err)
				s.SetStatus(codes.Error, err.Error())
			}
			s.End()
		}
	}
	for _, e := range events {
		sctx, span := r.tracer.Start(telemetry.Extract(ctx, e.Metadata), "send "+r.cfg.Topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				telemetry.MessagingSystem.String(telemetry.SystemKafka),
				telemetry.MessagingDestination.String(r.cfg.Topic),
				telemetry.MessagingOperationType.String(telemetry.OpSend),
				telemetry.MessagingOperationName.String(telemetry.OpSend),
				telemetry.MessagingMessageID.String(e.ID),
				telemetry.MessagingKafkaKey.String(e.AggregateID),
				// The append span's attributes: lagscope takes this span
				// for an append of the same event (same id), and counts
				// the event once whichever of the two it sees first.
				telemetry.EventID.String(e.ID),
				telemetry.EventType.String(e.Type),
				telemetry.AggregateType.String(e.AggregateType),
				telemetry.AggregateID.String(e.AggregateID),
				telemetry.AggregateVersion.Int64(e.Version),
			))
		spans = append(spans, span)
		tc := map[string]string{}
		telemetry.Propagator.Inject(sctx, propagation.MapCarrier(tc))
		m, err := Message(e, tc)
		if err != nil {
			end(err)
			return err
		}
		msgs = append(msgs, m)
	}
	if err := r.writer.WriteMessages(ctx, msgs...); err != nil {
		err = fmt.Errorf("write %d messages: %w", len(msgs), err)
		end(err)
		var we kafka.WriteErrors
		if errors.As(err, &we) {
			r.published.Add(int64(len(msgs) - we.Count()))
		}
		return err
	}
	end(nil)
	r.published.Add(int64(len(msgs)))
	last := events[len(events)-1].Position
	// Not cancelled by Shutdown: a graceful stop keeps what it published.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := r.views.Apply(actx, r.name, last, nil); err != nil {
		// Published but not checkpointed: the next round publishes them
		// again (at-least-once); the projectors' checkpoints skip them.
		return fmt.Errorf("move relay checkpoint to %d: %w", last, err)
	}
	r.checkpoint.Store(last)
	return nil
}
