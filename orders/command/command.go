// Package command handles the order system's commands: it loads an order
// from an orders.Store, decides the command on the aggregate, and appends the
// resulting events with optimistic concurrency, retrying a bounded number of
// times on orders.ErrVersionConflict. It emits the command and append spans of
// the conventions in orders/telemetry and stores the append span's trace
// context in each event's metadata.
package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/lagscope/lagscope/orders"
	"github.com/lagscope/lagscope/orders/telemetry"
)

// Config configures a Handler.
type Config struct {
	// MaxRetries is how many times a command is retried (reload, decide,
	// append) after orders.ErrVersionConflict. Default 5.
	MaxRetries int
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config { return Config{MaxRetries: 5} }

// Handler executes commands against a Store. It is safe for concurrent use.
type Handler struct {
	store      orders.Store
	tracer     trace.Tracer
	maxRetries int
	now        func() time.Time
}

// Result is what a successful command returns: the order id and the version
// of the last event it stored.
type Result struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// New returns a Handler appending to store and tracing with tp.
func New(store orders.Store, tp trace.TracerProvider, cfg Config) *Handler {
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultConfig().MaxRetries
	}
	return &Handler{
		store:      store,
		tracer:     tp.Tracer(telemetry.ScopeName),
		maxRetries: cfg.MaxRetries,
		now:        time.Now,
	}
}

// Create creates an order with a new id. It returns an *orders.InvalidError
// for bad input.
func (h *Handler) Create(ctx context.Context, c orders.CreateOrder) (res Result, err error) {
	ctx, span := h.startCommand(ctx, "CreateOrder")
	defer func() { endSpan(span, err) }()
	id := orders.NewID()
	d, err := orders.Create(id, c)
	if err != nil {
		return Result{}, err
	}
	stored, err := h.append(ctx, id, 0, []orders.Data{d})
	if errors.Is(err, orders.ErrVersionConflict) {
		return Result{}, fmt.Errorf("create order %s: %w", id, orders.ErrAlreadyExists)
	}
	if err != nil {
		return Result{}, err
	}
	return Result{ID: id, Version: stored[len(stored)-1].Version}, nil
}

// Pay pays order id. It returns orders.ErrNotFound, an invariant error
// (orders.ErrAlreadyPaid, orders.ErrOrderCancelled), an *orders.InvalidError,
// or orders.ErrVersionConflict once retries are exhausted.
func (h *Handler) Pay(ctx context.Context, id string, c orders.PayOrder) (Result, error) {
	return h.update(ctx, "PayOrder", id, func(o *orders.Order) (orders.Data, error) { return o.Pay(c) })
}

// Ship ships order id; errors as for Pay (orders.ErrNotPaid,
// orders.ErrAlreadyShipped, orders.ErrOrderCancelled).
func (h *Handler) Ship(ctx context.Context, id string, c orders.ShipOrder) (Result, error) {
	return h.update(ctx, "ShipOrder", id, func(o *orders.Order) (orders.Data, error) { return o.Ship(c) })
}

// Cancel cancels order id; errors as for Pay (orders.ErrAlreadyShipped,
// orders.ErrOrderCancelled).
func (h *Handler) Cancel(ctx context.Context, id string, c orders.CancelOrder) (Result, error) {
	return h.update(ctx, "CancelOrder", id, func(o *orders.Order) (orders.Data, error) { return o.Cancel(c) })
}

func (h *Handler) update(ctx context.Context, name, id string, decide func(*orders.Order) (orders.Data, error)) (res Result, err error) {
	ctx, span := h.startCommand(ctx, name)
	defer func() { endSpan(span, err) }()
	for attempt := 0; ; attempt++ {
		evs, err := h.store.Load(ctx, id)
		if err != nil {
			return Result{}, err
		}
		o, err := orders.Rebuild(evs)
		if err != nil {
			return Result{}, err
		}
		d, err := decide(o)
		if err != nil {
			return Result{}, err
		}
		stored, err := h.append(ctx, id, o.Version(), []orders.Data{d})
		if errors.Is(err, orders.ErrVersionConflict) && attempt < h.maxRetries {
			span.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", attempt+1)))
			continue
		}
		if err != nil {
			return Result{}, err
		}
		return Result{ID: id, Version: stored[len(stored)-1].Version}, nil
	}
}

func (h *Handler) startCommand(ctx context.Context, name string) (context.Context, trace.Span) {
	return h.tracer.Start(ctx, name, trace.WithAttributes(
		telemetry.Operation.String(telemetry.OpCommand),
		telemetry.CommandName.String(name),
	))
}

// append stores data as the events after version inside an append span whose
// context it writes into each event's metadata. Event attributes are set only
// once the write succeeded: a failed append names no event, so lagscope never
// waits for an event that was not stored.
func (h *Handler) append(ctx context.Context, id string, version int64, data []orders.Data) (stored []orders.Event, err error) {
	ctx, span := h.tracer.Start(ctx, "append "+orders.AggregateType, trace.WithAttributes(
		telemetry.Operation.String(telemetry.OpAppend),
		telemetry.AggregateType.String(orders.AggregateType),
		telemetry.AggregateID.String(id),
	))
	defer func() { endSpan(span, err) }()
	now := h.now()
	events := make([]orders.Event, len(data))
	for i, d := range data {
		e, err := orders.NewEvent(id, version+int64(i)+1, d, now)
		if err != nil {
			return nil, err
		}
		telemetry.Inject(ctx, e.Metadata)
		events[i] = e
	}
	stored, err = h.store.Append(ctx, id, version, events)
	if err != nil {
		return nil, err
	}
	if len(stored) == 1 {
		e := stored[0]
		span.SetAttributes(
			telemetry.EventID.String(e.ID),
			telemetry.EventType.String(e.Type),
			telemetry.AggregateVersion.Int64(e.Version),
		)
		return stored, nil
	}
	for _, e := range stored {
		span.AddEvent(telemetry.EventName, trace.WithAttributes(
			telemetry.EventID.String(e.ID),
			telemetry.EventType.String(e.Type),
			telemetry.AggregateType.String(e.AggregateType),
			telemetry.AggregateID.String(e.AggregateID),
			telemetry.AggregateVersion.Int64(e.Version),
		))
	}
	return stored, nil
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
