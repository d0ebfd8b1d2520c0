package analyzer

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Config holds the analyzer's settings. The zero value is not valid; start
// from DefaultConfig.
type Config struct {
	// Deadline is how long after an event is seen an expected projection may
	// take to show it before the event counts as unprojected for that
	// projection. Default 30s.
	Deadline time.Duration
	// CommandWait is how long an append span whose ancestors have not all
	// arrived waits for its command span before it is joined with
	// command="none". Default 10s.
	CommandWait time.Duration
	// Retention is how long a joined event is kept after it was seen, so
	// that late and duplicated projections are still recognised. It is
	// at least Deadline. Default 5m.
	Retention time.Duration
	// MaxPendingEvents bounds the events held by the join. When full, the
	// oldest are evicted (never the newest dropped). With several shards
	// each holds MaxPendingEvents/shards and evicts its own oldest.
	// Default 1,048,576.
	MaxPendingEvents int
	// MaxPendingProjections bounds projection spans held while their
	// append span has not arrived. Default 262,144.
	MaxPendingProjections int
	// MaxTraceSpans bounds the parent links and command spans remembered to
	// resolve the command of an append span. Default 1,048,576.
	MaxTraceSpans int
	// MaxLabelValues bounds the distinct values of each metric label
	// (command, event_type, aggregate_type, projection, query); later values
	// become "other". Projections are also capped at 64. Default 200.
	MaxLabelValues int
	// Expected names projections that must show events of a type even
	// before they have been seen doing so: event type -> projections. The
	// event type "*" applies to every type.
	Expected map[string][]string
	// KeepSamples keeps every lag value and unprojected event id for
	// Summary (offline analysis). Default false.
	KeepSamples bool
	// Shards is the number of shards of the analysis state, each behind its
	// own lock, so that concurrent requests are analysed in parallel: trace
	// state is sharded by trace id, join state by event. The bounds above
	// (MaxPendingEvents, MaxPendingProjections, MaxTraceSpans) are split
	// evenly between the shards. 0 (the default) picks 8 per GOMAXPROCS
	// (1 with GOMAXPROCS=1); at most 64. More shards make two requests
	// meet on one less often but spread each request over more locks and
	// cache lines: at two cores, BenchmarkConsumeScaling measured 16
	// shards 5% faster than 32 and 8, and 64 slower still. Either way the count is lowered
	// so that every shard holds at least 4096 events, early projections
	// and parent links: small bounds get one shard, and the exact global
	// eviction order. A request analysed alone gives the same result
	// whatever the count.
	Shards int
}

// minShardEntries is the least a shard holds of each bounded kind of entry.
const minShardEntries = 4096

// shards returns the number of shards the analysis runs with.
func (c Config) shards() int {
	n := c.Shards
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
		if n > 1 {
			n *= 8
		}
	}
	n = min(n, 64, c.MaxPendingEvents/minShardEntries, c.MaxPendingProjections/minShardEntries, c.MaxTraceSpans/minShardEntries)
	return max(n, 1)
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Deadline:              30 * time.Second,
		CommandWait:           10 * time.Second,
		Retention:             5 * time.Minute,
		MaxPendingEvents:      1 << 20,
		MaxPendingProjections: 1 << 18,
		MaxTraceSpans:         1 << 20,
		MaxLabelValues:        200,
	}
}

// maxProjections is the number of distinct projections tracked per event:
// one bit each in a uint64.
const maxProjections = 64

// Validate reports the first setting that is out of range, naming it.
func (c Config) Validate() error {
	var errs []error
	if c.Deadline <= 0 {
		errs = append(errs, fmt.Errorf("join.deadline must be positive, got %s", c.Deadline))
	}
	if c.CommandWait < 0 {
		errs = append(errs, fmt.Errorf("join.command_wait must not be negative, got %s", c.CommandWait))
	}
	if c.Retention < c.Deadline {
		errs = append(errs, fmt.Errorf("join.retention (%s) must be at least join.deadline (%s)", c.Retention, c.Deadline))
	}
	if c.MaxPendingEvents < 1 {
		errs = append(errs, fmt.Errorf("join.max_pending_events must be at least 1, got %d", c.MaxPendingEvents))
	}
	if c.MaxPendingProjections < 1 {
		errs = append(errs, fmt.Errorf("join.max_pending_projections must be at least 1, got %d", c.MaxPendingProjections))
	}
	if c.MaxTraceSpans < 2 {
		errs = append(errs, fmt.Errorf("join.max_trace_spans must be at least 2, got %d", c.MaxTraceSpans))
	}
	if c.Shards < 0 {
		errs = append(errs, fmt.Errorf("shards must not be negative, got %d", c.Shards))
	}
	if c.MaxLabelValues < 1 {
		errs = append(errs, fmt.Errorf("metrics.max_label_values must be at least 1, got %d", c.MaxLabelValues))
	}
	for typ, ps := range c.Expected {
		if typ == "" {
			errs = append(errs, errors.New("join.expected: empty event type"))
		}
		for _, p := range ps {
			if p == "" {
				errs = append(errs, fmt.Errorf("join.expected[%q]: empty projection name", typ))
			}
		}
	}
	return errors.Join(errs...)
}
