// Package projection runs the order system's projectors, orders_view and
// sales_summary, asynchronously over an orders.Store's global order.
//
// Each projector resumes from its checkpoint, reads events in position order
// (woken by in-process appends, polling otherwise), and for each event opens a
// "project <name>" span whose parent is the trace context stored in the
// event's metadata, applies the event to its read model and moves its
// checkpoint in one orders.Views transaction, then ends the span. A crash at
// any point therefore neither loses nor doubles an event. Fault knobs (Faults)
// delay, drop, duplicate or stall a projection, and Stats counts what they
// did.
package projection

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
	// Spans counts project spans ended (Projected plus duplicates and
	// replays that found the checkpoint past the event).
	Spans int64 `json:"spans"`
	// Dropped counts events skipped by the DropRate knob.
	Dropped int64 `json:"dropped"`
	// Duplicated counts events processed twice by the DuplicateRate knob.
	Duplicated int64 `json:"duplicated"`
	// Stalls counts stalls (0 or 1) and Stalled says one is in progress.
	Stalls  int64 `json:"stalls"`
	Stalled bool  `json:"stalled"`
	// Errors counts failed reads and writes (each retried).
	Errors int64 `json:"errors"`
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

	// beforeApply and afterCommit, when set (by tests), run before each
	// Views.Apply of a projected event and after each Apply commit.
	beforeApply func(name string, e orders.Event)
	afterCommit func(name string, e orders.Event)
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
// end (then it returns ctx's error). An event being projected is either
// committed or rolled back.
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
		})
	}
	return out
}

func (r *Runner) run(ctx context.Context, p *projector, started time.Time) {
	wake, stop := r.store.Subscribe()
	defer stop()
	ticker := time.NewTicker(r.cfg.PollInterval)
	defer ticker.Stop()
	pos := p.checkpoint.Load()
	for {
		events, err := r.store.ReadAll(ctx, pos, r.cfg.BatchSize)
		if err != nil && ctx.Err() == nil {
			p.errors.Add(1)
			r.logger.Error("projector cannot read events", "projection", p.name, "after", pos, "err", err)
		}
		for _, e := range events {
			if !r.stall(ctx, p, started) {
				return
			}
			if err := r.handle(ctx, p, e); err != nil {
				if ctx.Err() != nil {
					return
				}
				p.errors.Add(1)
				r.logger.Error("projector cannot handle event", "projection", p.name, "event", e.ID, "position", e.Position, "err", err)
				break // retry from pos after a poll interval
			}
			pos = e.Position
			p.checkpoint.Store(pos)
		}
		if err == nil && len(events) == r.cfg.BatchSize && pos == events[len(events)-1].Position {
			continue // more to read
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-ticker.C:
		}
	}
}

// stall sleeps through the stall window if now is inside it. It returns false
// if ctx ended.
func (r *Runner) stall(ctx context.Context, p *projector, started time.Time) bool {
	f := p.faults
	if f.StallFor <= 0 {
		return ctx.Err() == nil
	}
	from := started.Add(f.StallAfter)
	until := from.Add(f.StallFor)
	now := time.Now()
	if now.Before(from) || !now.Before(until) {
		return ctx.Err() == nil
	}
	if p.stalls.Load() == 0 {
		p.stalls.Add(1)
	}
	p.stalled.Store(true)
	defer p.stalled.Store(false)
	r.logger.Info("projector stalled", "projection", p.name, "until", until)
	return sleep(ctx, time.Until(until))
}

// handle applies the drop and duplicate knobs around project.
func (r *Runner) handle(ctx context.Context, p *projector, e orders.Event) error {
	if p.faults.DropRate > 0 && p.rng.Float64() < p.faults.DropRate {
		applied, err := r.views.Apply(ctx, p.name, e.Position, nil)
		if err != nil {
			return err
		}
		if applied {
			p.dropped.Add(1)
		}
		r.committed(p, e)
		return nil
	}
	times := 1
	if p.faults.DuplicateRate > 0 && p.rng.Float64() < p.faults.DuplicateRate {
		times = 2
	}
	for i := range times {
		if err := r.project(ctx, p, e); err != nil {
			return err
		}
		if i == 1 {
			p.duplicated.Add(1)
		}
	}
	return nil
}

// project handles one event inside a project span that continues the
// command's trace and ends after the read model transaction committed.
func (r *Runner) project(ctx context.Context, p *projector, e orders.Event) (err error) {
	ctx, span := r.tracer.Start(telemetry.Extract(ctx, e.Metadata), "project "+p.name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			telemetry.Operation.String(telemetry.OpProject),
			telemetry.Projection.String(p.name),
			telemetry.EventID.String(e.ID),
			telemetry.EventType.String(e.Type),
			telemetry.AggregateID.String(e.AggregateID),
			telemetry.AggregateVersion.Int64(e.Version),
		))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		p.spans.Add(1)
	}()
	d, err := e.Decode()
	if err != nil {
		return err
	}
	// The delay is measured from when the event was recorded, so a delayed
	// projection lags the store by that much without its throughput falling.
	if delay := p.delay(); delay > 0 {
		if wait := time.Until(e.RecordedAt.Add(delay)); wait > 0 && !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
	if r.beforeApply != nil {
		r.beforeApply(p.name, e)
	}
	applied, err := r.views.Apply(ctx, p.name, e.Position, func(tx orders.ViewTx) error {
		return p.apply(tx, e, d)
	})
	if err != nil {
		return err
	}
	if applied {
		p.projected.Add(1)
	}
	r.committed(p, e)
	return nil
}

func (r *Runner) committed(p *projector, e orders.Event) {
	if r.afterCommit != nil {
		r.afterCommit(p.name, e)
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
