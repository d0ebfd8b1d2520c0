package projection

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Names of the projections.
const (
	// OrdersView maintains orders.OrderView per order (by id and by customer).
	OrdersView = "orders_view"
	// SalesSummary maintains orders.Summary: counts by status and revenue.
	SalesSummary = "sales_summary"
)

// Names lists every projection, in the order a Runner starts them.
var Names = []string{OrdersView, SalesSummary}

// Faults are the fault knobs of one projection, used by the demo to exercise
// lagscope's detections. The zero value injects no fault.
type Faults struct {
	// Delay holds every event, inside the project span and before the read
	// model write, until Delay after it was recorded: the projection lags the
	// store by Delay, as a slow consumer would, without its throughput
	// falling (an event recorded longer ago than that is not held at all).
	// A batch is held until its first event is due, takes the following
	// events that are due too, and ends before the first that is not.
	// Default 0.
	Delay time.Duration
	// DelayMax, when greater than Delay, makes the delay uniformly random in
	// [Delay, DelayMax]. Default 0 (fixed Delay).
	DelayMax time.Duration
	// DropRate is the probability (0..1) that an event is skipped: it stays in
	// its batch, so the checkpoint moves past it, but is not applied and has
	// no project span.
	// Default 0.
	DropRate float64
	// DuplicateRate is the probability (0..1) that an event is processed
	// twice, with two project spans; the second, after the event's batch
	// committed, finds the checkpoint past the event and leaves the read
	// model alone. Default 0.
	DuplicateRate float64
	// StallAfter and StallFor stop the projection once: no event is handled
	// (no project span starts) between StallAfter and StallAfter+StallFor
	// after Start; a batch being gathered when the stall begins is committed
	// without the rest. Default 0 (no stall).
	StallAfter time.Duration
	StallFor   time.Duration
}

// Validate reports a knob out of range.
func (f Faults) Validate() error {
	switch {
	case f.Delay < 0 || f.DelayMax < 0:
		return errors.New("delay must not be negative")
	case f.DropRate < 0 || f.DropRate > 1:
		return fmt.Errorf("drop rate %v not in [0, 1]", f.DropRate)
	case f.DuplicateRate < 0 || f.DuplicateRate > 1:
		return fmt.Errorf("duplicate rate %v not in [0, 1]", f.DuplicateRate)
	case f.StallAfter < 0 || f.StallFor < 0:
		return errors.New("stall durations must not be negative")
	}
	return nil
}

// Config configures a Runner.
type Config struct {
	// Projections to run. Default Names (all).
	Projections []string
	// PollInterval is how often a projector reads the store when it gets no
	// wake-up (appends by another process), and how long it waits after an
	// error. Default 100ms.
	PollInterval time.Duration
	// BatchSize is how many events one store read returns at most, and so
	// how many one read-model transaction applies at most. Default 100.
	BatchSize int
	// Faults by projection name. Default none.
	Faults map[string]Faults
	// Seed seeds the fault dice, for reproducible runs. Default 0: random.
	Seed uint64
	// Feeds, by projection name, replace the store as where a projector
	// reads its events (orders/kafka's Feed: a topic and a consumer group).
	// The Runner uses but does not close them. Default nil: every projector
	// reads the store.
	Feeds map[string]Feed
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		Projections:  slices.Clone(Names),
		PollInterval: 100 * time.Millisecond,
		BatchSize:    100,
	}
}

// Validate reports an unknown projection or a bad knob.
func (c Config) Validate() error {
	for _, p := range c.Projections {
		if !slices.Contains(Names, p) {
			return fmt.Errorf("unknown projection %q", p)
		}
	}
	for name, f := range c.Faults {
		if !slices.Contains(Names, name) {
			return fmt.Errorf("faults for unknown projection %q", name)
		}
		if err := f.Validate(); err != nil {
			return fmt.Errorf("faults of %s: %w", name, err)
		}
	}
	for name := range c.Feeds {
		if !slices.Contains(Names, name) {
			return fmt.Errorf("feed for unknown projection %q", name)
		}
	}
	if c.PollInterval < 0 || c.BatchSize < 0 {
		return errors.New("poll interval and batch size must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Projections) == 0 {
		c.Projections = d.Projections
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	return c
}
