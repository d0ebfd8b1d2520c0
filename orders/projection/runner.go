// Package projection runs the order system's projectors, orders_view and
// sales_summary, asynchronously over an orders.Store's global order.
//
// Each projector resumes from its checkpoint and reads events in position
// order, up to Config.BatchSize at a time, from a Feed: the store by default
// (woken by in-process appends or PostgreSQL notifications, polling
// otherwise), or a Kafka topic (orders/kafka), whose offsets the Feed
// commits only after the read-model transaction. It applies what it read to
// its read model and moves its checkpoint in one orders.Views.ApplyBatch
// transaction per batch; a batch is split only where the Delay knob holds an
// event that is not due yet, or where a stall begins. Every event gets its
// own "project <name>" span, whose parent is the trace context stored in
// the event's metadata; it starts when the event joins the batch and ends
// after the batch's transaction committed (the moment the read model shows
// the event), or with status Error if the batch failed. A crash at any point
// therefore neither loses nor doubles an event: an uncommitted batch rolls
// back whole and is read again from the checkpoint. Fault knobs (Faults)
// delay, drop, duplicate or stall a projection, and Stats counts what they
// did.
package projection

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// Stats is a snapshot of one projector's counters since its Runner started.
type Stats struct {
	// Projection is the projection name.
	Projection string `json:"projection"`
	// Checkpoint is the last position the projector committed.
	Checkpoint int64 `json:"checkpoint"`
	// Projected counts events applied to the read model.
	Projected int64 `json:"projected"`
	// Spans counts project spans ended (Projected plus duplicates, replays
	// that found the checkpoint past the event, and spans of failed batches).
	Spans int64 `json:"spans"`
	// Dropped counts events skipped by the DropRate knob.
	Dropped int64 `json:"dropped"`
	// Duplicated counts events processed twice by the DuplicateRate knob.
	Duplicated int64 `json:"duplicated"`
	// Stalls counts stalls (0 or 1) and Stalled says one is in progress.
	Stalls  int64 `json:"stalls"`
	Stalled bool  `json:"stalled"`
	// Errors counts failed reads and batches (each retried).
	Errors int64 `json:"errors"`
	// Redelivered counts, for a feed that has them (Kafka), messages
	// skipped because the read model already had their event.
	Redelivered int64 `json:"redelivered,omitempty"`
}

// Runner runs projectors. Start it once; Stats is safe for concurrent use.
type Runner struct {
	cfg    Config
	store  orders.Store
	views  orders.Views
	tracer trace.Tracer
	logger *slog.Logger
	procs  []*projector

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type projector struct {
	name   string
	apply  applyFunc
	faults Faults
	rng    *rand.Rand // used by the projector's goroutine only

	checkpoint, projected, spans, dropped, duplicated, stalls, errors atomic.Int64
	stalled                                                           atomic.Bool
}

// New returns a Runner of cfg.Projections reading store and writing views,
// tracing with tp. logger may be nil.
func New(cfg Config, store orders.Store, views orders.Views, tp trace.TracerProvider, logger *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("projection config: %w", err)
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	r := &Runner{
		cfg:    cfg,
		store:  store,
		views:  views,
		tracer: tp.Tracer(telemetry.ScopeName),
		logger: logger,
	}
	for i, name := range cfg.Projections {
		r.procs = append(r.procs, &projector{
			name:   name,
			apply:  appliers[name],
			faults: cfg.Faults[name],
			rng:    rand.New(rand.NewPCG(seed, uint64(i))),
		})
	}
	return r, nil
}

// Start starts one goroutine per projector and returns. The projectors run
// until Shutdown; ctx is used only for reading the checkpoints.
func (r *Runner) Start(ctx context.Context) error {
	for _, p := range r.procs {
		cp, err := r.views.Checkpoint(ctx, p.name)
		if err != nil {
			return fmt.Errorf("start projector %s: %w", p.name, err)
		}
		p.checkpoint.Store(cp)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	started := time.Now()
	for _, p := range r.procs {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(runCtx, p, started)
		}()
	}
	return nil
}

// Shutdown stops the projectors and waits for them to return, or for ctx to
// end (then it returns ctx's error). A batch being projected is either
// committed or rolled back whole.
func (r *Runner) Shutdown(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop projectors: %w", ctx.Err())
	}
}

// Stats returns a snapshot of every projector's counters.
func (r *Runner) Stats() []Stats {
	out := make([]Stats, 0, len(r.procs))
	for _, p := range r.procs {
		var redelivered int64
		if f, ok := r.cfg.Feeds[p.name].(interface{ Redelivered() int64 }); ok {
			redelivered = f.Redelivered()
		}
		out = append(out, Stats{
			Projection: p.name,
			Checkpoint: p.checkpoint.Load(),
			Projected:  p.projected.Load(),
			Spans:      p.spans.Load(),
			Dropped:    p.dropped.Load(),
			Duplicated: p.duplicated.Load(),
			Stalls:     p.stalls.Load(),
			Stalled:    p.stalled.Load(),
			Errors:     p.errors.Load(),

			Redelivered: redelivered,
		})
	}
	return out
}

func (r *Runner) run(ctx context.Context, p *projector, started time.Time) {
	feed := r.cfg.Feeds[p.name]
	if feed == nil {
		sf := newStoreFeed(r.store, r.cfg.PollInterval)
		defer sf.close()
		feed = sf
	}
	pos := p.checkpoint.Load()
	for {
		events, err := feed.Next(ctx, pos, r.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.errors.Add(1)
			r.logger.Error("projector cannot read events", "projection", p.name, "after", pos, "err", err)
			if !sleep(ctx, r.cfg.PollInterval) {
				return
			}
			continue
		}
		for todo := p.roll(events); len(todo) > 0; {
			if !r.stall(ctx, p, started) {
				return
			}
			n, err := r.project(ctx, p, started, feed, todo)
			if n > 0 {
				pos = todo[n-1].e.Position
				p.checkpoint.Store(pos)
				if err := feed.Committed(ctx, pos); err != nil && ctx.Err() == nil {
					// The read model has the batch: a redelivery of it is
					// skipped by the checkpoint, so only log.
					p.errors.Add(1)
					r.logger.Error("projector cannot commit its feed", "projection", p.name, "checkpoint", pos, "err", err)
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				p.errors.Add(1)
				r.logger.Error("projector cannot project batch", "projection", p.name,
					"from", todo[0].e.Position, "err", err)
				if !sleep(ctx, r.cfg.PollInterval) {
					return
				}
				break // retry from pos
			}
			todo = todo[n:]
		}
	}
}

// stall sleeps through the stall window if now is inside it. It returns false
// if ctx ended.
func (r *Runner) stall(ctx context.Context, p *projector, started time.Time) bool {
	if !p.stalling(started, time.Now()) {
		return ctx.Err() == nil
	}
	until := started.Add(p.faults.StallAfter + p.faults.StallFor)
	if p.stalls.Load() == 0 {
		p.stalls.Add(1)
	}
	p.stalled.Store(true)
	defer p.stalled.Store(false)
	r.logger.Info("projector stalled", "projection", p.name, "until", until)
	return sleep(ctx, time.Until(until))
}

// stalling reports whether now is inside the projector's stall window.
func (p *projector) stalling(started, now time.Time) bool {
	f := p.faults
	if f.StallFor <= 0 {
		return false
	}
	from := started.Add(f.StallAfter)
	return !now.Before(from) && now.Before(from.Add(f.StallFor))
}

// item is one event read by a projector with what the fault dice decided
// for it, and, once it joined a batch, its project span.
type item struct {
	e         orders.Event
	due       time.Time // when the Delay knob lets it be written
	dropped   bool
	duplicate bool

	data orders.Data
	span trace.Span
}

// roll casts the fault dice for events once, so that splitting them into
// several transactions does not change the odds.
func (p *projector) roll(events []orders.Event) []item {
	out := make([]item, 0, len(events))
	for _, e := range events {
		it := item{e: e}
		switch {
		case p.faults.DropRate > 0 && p.rng.Float64() < p.faults.DropRate:
			it.dropped = true
		default:
			// The delay is measured from when the event was recorded, so a
			// delayed projection lags the store by that much without its
			// throughput falling.
			it.due = e.RecordedAt.Add(p.delay())
			it.duplicate = p.faults.DuplicateRate > 0 && p.rng.Float64() < p.faults.DuplicateRate
		}
		out = append(out, it)
	}
	return out
}

// project applies the longest prefix of todo that is due to the read model
// in one transaction, and returns its length once committed. The first
// event that is not dropped is held, inside its span, until it is due; the
// batch then takes every following event that is due as well (or dropped:
// those move the checkpoint only, without a span) and stops at the first
// that is not, or when a stall begins. Every span of the batch ends after
// the commit, or with an error status if the batch failed (then project
// returns 0). Duplicated events are then processed a second time, with new
// spans, in one more transaction that finds them applied.
func (r *Runner) project(ctx context.Context, p *projector, started time.Time, feed Feed, todo []item) (int, error) {
	batch, err := r.gather(ctx, p, started, feed, todo)
	if err != nil {
		endSpans(p, batch, err)
		return 0, err
	}
	events := make([]orders.Event, len(batch))
	for i, it := range batch {
		events[i] = it.e
	}
	applied, err := r.views.ApplyBatch(ctx, p.name, events, p.applier(batch))
	endSpans(p, batch, err)
	if err != nil {
		return 0, err
	}
	for _, it := range batch[len(batch)-applied:] {
		if it.dropped {
			p.dropped.Add(1)
		} else {
			p.projected.Add(1)
		}
	}
	return len(batch), r.duplicate(ctx, p, feed, batch)
}

// gather returns the batch that project applies, the spans of its events
// started and their data decoded. On error the batch holds the events whose
// span started.
func (r *Runner) gather(ctx context.Context, p *projector, started time.Time, feed Feed, todo []item) ([]item, error) {
	batch := make([]item, 0, len(todo))
	held := false
	for _, it := range todo {
		if len(batch) > 0 && p.stalling(started, time.Now()) {
			break
		}
		if !it.dropped {
			if held && time.Now().Before(it.due) {
				break // the next batch starts with it
			}
			it.span = r.startSpan(ctx, p, feed, it.e)
			batch = append(batch, it)
			d, err := it.e.Decode()
			if err != nil {
				return batch, err
			}
			batch[len(batch)-1].data = d
			if wait := time.Until(it.due); !held && wait > 0 && !sleep(ctx, wait) {
				return batch, ctx.Err()
			}
			held = true
			continue
		}
		batch = append(batch, it)
	}
	return batch, nil
}

// duplicate processes the batch's duplicated events a second time.
func (r *Runner) duplicate(ctx context.Context, p *projector, feed Feed, batch []item) error {
	var dups []item
	for _, it := range batch {
		if it.duplicate {
			it.span = r.startSpan(ctx, p, feed, it.e)
			dups = append(dups, it)
		}
	}
	if len(dups) == 0 {
		return nil
	}
	events := make([]orders.Event, len(dups))
	for i, it := range dups {
		events[i] = it.e
	}
	applied, err := r.views.ApplyBatch(ctx, p.name, events, p.applier(dups))
	endSpans(p, dups, err)
	if err != nil {
		return err
	}
	p.projected.Add(int64(applied)) // 0 unless the checkpoint went back
	p.duplicated.Add(int64(len(dups)))
	return nil
}

// applier returns the ApplyBatch fn of batch: it applies the events that
// are not dropped to the projector's read model.
func (p *projector) applier(batch []item) func(orders.ViewTx, orders.Event) error {
	return func(tx orders.ViewTx, e orders.Event) error {
		i, ok := slices.BinarySearchFunc(batch, e.Position, func(it item, pos int64) int { return cmp.Compare(it.e.Position, pos) })
		if !ok {
			return fmt.Errorf("event at %d not in the batch", e.Position)
		}
		if batch[i].dropped {
			return nil
		}
		return p.apply(tx, e, batch[i].data)
	}
}

// startSpan starts e's project span, a child of the trace context in its
// metadata (for a Kafka feed, the message's headers), with the feed's
// attributes.
func (r *Runner) startSpan(ctx context.Context, p *projector, feed Feed, e orders.Event) trace.Span {
	_, span := r.tracer.Start(telemetry.Extract(ctx, e.Metadata), "project "+p.name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(feed.Attributes(e)...),
		trace.WithAttributes(
			telemetry.Operation.String(telemetry.OpProject),
			telemetry.Projection.String(p.name),
			telemetry.EventID.String(e.ID),
			telemetry.EventType.String(e.Type),
			telemetry.AggregateID.String(e.AggregateID),
			telemetry.AggregateVersion.Int64(e.Version),
		))
	return span
}

// endSpans ends the spans of a batch (dropped events have none), with an
// error status if err is not nil.
func endSpans(p *projector, batch []item, err error) {
	for _, it := range batch {
		if it.span == nil {
			continue
		}
		if err != nil {
			it.span.RecordError(err)
			it.span.SetStatus(codes.Error, err.Error())
		}
		it.span.End()
		p.spans.Add(1)
	}
}

func (p *projector) delay() time.Duration {
	f := p.faults
	if f.DelayMax <= f.Delay {
		return f.Delay
	}
	return f.Delay + time.Duration(p.rng.Int64N(int64(f.DelayMax-f.Delay)+1))
}

// sleep waits for d or until ctx ends; it reports whether the full d passed.
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
