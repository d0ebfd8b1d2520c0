package analyzer

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"
	"unicode/utf8"
)

// Config holds the analyzer's settings, in the two sections of lagscope's
// config file they are read from (join: and metrics:). The zero value is not
// valid; start from DefaultConfig.
type Config struct {
	Join    JoinConfig    `yaml:"join"`
	Metrics MetricsConfig `yaml:"metrics"`
	// Rules give roles to spans the span conventions do not describe
	// (YAML rules: at the top level of lagscope's config file), evaluated
	// before the conventions, in order, the first match deciding; see
	// Rule. Validate compiles them: a bad regular expression, an unknown
	// role, kind or field is an error that names the rule and key. At
	// most 256. Default none.
	Rules []Rule `yaml:"rules"`
	// KeepSamples keeps every lag value and unprojected event id for
	// Summary (offline analysis). Default false.
	KeepSamples bool `yaml:"-"`
}

// JoinConfig holds the settings of the join (YAML join.*): its deadlines and
// the bounds of the state it holds.
type JoinConfig struct {
	// Deadline is how long after an event is seen an expected projection may
	// take to show it before the event counts as unprojected for that
	// projection. Default 30s.
	Deadline time.Duration `yaml:"deadline"`
	// CommandWait is how long an append span whose ancestors have not all
	// arrived waits for its command span before it is joined with
	// command="none"; and how long a consumer span without event id waits
	// for the producer span it is a child of (or links to), whose event it
	// projects, before it is keyed by that span's ids instead. Default 10s.
	CommandWait time.Duration `yaml:"command_wait"`
	// Retention is how long a joined event is kept after it was seen, so
	// that late and duplicated projections are still recognised. It is
	// at least Deadline. Default 5m.
	Retention time.Duration `yaml:"retention"`
	// MaxLag is the longest command-to-projection lag believed (YAML
	// join.max_lag): a lag or stage duration above it, or a span that ends
	// before it starts, is not observed but counted in
	// lagscope_invalid_timestamps_total. Default 1h.
	MaxLag time.Duration `yaml:"max_lag"`
	// MaxPendingEvents bounds the events the join holds in full: those
	// waiting for an expected projection, and those past their deadline
	// with one missing (until Retention). Once every expected projection
	// has shown an event it moves to the joined store (MaxJoinedEvents).
	// When full, the oldest are evicted (never the newest dropped), counted
	// if a projection was still expected; one no projection waits for
	// moves to the joined store instead. With several shards each holds
	// MaxPendingEvents/shards and evicts its own oldest. It also sizes the
	// per-aggregate state (the latest version of each aggregate, the last
	// version each projection applied). An event is a fixed 128 bytes
	// whatever its strings, about 183 with its index and per-aggregate
	// state (BenchmarkPendingEvents): 262,144 hold about 46 MiB, enough
	// for 3 s of projection lag at 80,000 events/s (the rate of 800,000
	// spans/s of the synth stream). Default 262,144.
	MaxPendingEvents int `yaml:"max_pending_events"`
	// MaxJoinedEvents bounds the events kept, once every projection
	// expected to show them has, to recognise duplicated and late
	// projections until Retention. When full, the oldest joined are
	// forgotten (not evictions: nothing is waited for). A joined event
	// takes about 37 bytes (BenchmarkJoinedEvents; 42 with per-aggregate
	// state; 59 and 64 with a 48-byte entry): 1,048,576 hold about 37 MiB,
	// join.retention (5m) at 3,500 events/s, 13 s at 80,000. It keeps the
	// append's trace (as a 64-bit hash), end (in µs from its arrival),
	// weight and service, so that a duplicated projection is counted as a
	// full entry counts it, and a 64-bit fingerprint of the event key (a
	// false match: about n/2^64 per lookup with n held; joined.go).
	// Default 1,048,576.
	MaxJoinedEvents int `yaml:"max_joined_events"`
	// MaxPendingProjections bounds projection spans held while their
	// append span has not arrived (a fixed 80 bytes each), and also append
	// facts waiting for their command span and projection facts waiting
	// for their producer span (CommandWait). Those keep strings, bounded at
	// the boundary: the event id cut to 64 bytes, an aggregate id over 64
	// bytes replaced by a 33-byte digest, event and aggregate type cut to
	// MaxLabelLength+1 bytes. With their bookkeeping that is at most about
	// 900 bytes each at the default MaxLabelLength (measured with 20,000 of
	// them, every string over the bounds), so 262,144 hold at most about
	// 230 MiB (TestJoinHeldBytesBounded keeps 1 MiB strings out).
	// Default 262,144.
	MaxPendingProjections int `yaml:"max_pending_projections"`
	// MaxTraceSpans bounds the parent links and command spans remembered to
	// resolve the command of an append span (commands: an eighth of it),
	// and the producer spans remembered to give a consumer span without
	// event id its producer's event (an eighth of it too): fixed-size
	// slots (32 bytes a link, 48 a command, whose name is an interned
	// label value, 40 a producer, each with a one-byte fingerprint), two
	// generations of tables at most half full, so about 64 bytes per link,
	// 96 per command and 80 per producer: about 88 MiB at the default. The parent links are also
	// the set of recent spans by which a span received again (same trace
	// and span id: a retried export) is recognised, counted in
	// lagscope_duplicate_spans_total and ignored: it costs no more memory,
	// and a span whose first copy was forgotten (more than MaxTraceSpans/2
	// spans ago, at the least) counts again. Default 1,048,576.
	MaxTraceSpans int `yaml:"max_trace_spans"`
	// Expected names projections that must show events of a type even
	// before they have been seen doing so: event type -> projections. The
	// event type "*" applies to every type.
	Expected map[string][]string `yaml:"expected"`
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
	Shards int `yaml:"shards"`
}

// MetricsConfig bounds the metrics the analysis exports (YAML metrics.*).
type MetricsConfig struct {
	// MaxLabelValues bounds the distinct values of each metric label
	// (command, event_type, aggregate_type, projection, query); later values
	// become "other". Projections are also capped at 64. Default 200.
	MaxLabelValues int `yaml:"max_label_values"`
	// MaxLabelLength bounds the bytes of every label value (YAML
	// metrics.max_label_length). Longer values are cut at a rune boundary
	// and end in "…" within the bound; invalid UTF-8 is replaced by U+FFFD.
	// Both are counted in lagscope_label_values_sanitized_total. At least 40.
	// Default 128.
	MaxLabelLength int `yaml:"max_label_length"`
	// MaxSeries bounds the series of each counter family with labels from
	// spans (YAML metrics.max_series), on top of MaxLabelValues: past it a
	// new label combination is counted in the one series whose labels are
	// all "other", and in lagscope_series_overflow_total. All seven such
	// families at 10,000 series scraped as 5.9 MiB of text in 0.27 s with
	// 16-byte label values, 21 MiB in 0.46 s with 128-byte ones: too much
	// for "a few MiB" at the bound, so the default is 2,000 (about 1.2 and
	// 4.2 MiB, scaled from those figures), still far above what a system
	// of 50 event types and 10 projections (500 combinations) needs.
	// Default 2,000.
	MaxSeries int `yaml:"max_series"`
	// MaxHistogramSeries is MaxSeries for the lag histogram (YAML
	// metrics.max_histogram_series). It is lower because a series of it is
	// 18 samples with exemplars: 10,000 series scraped as 25-37 MiB in
	// 0.4-0.7 s with 16-byte label values and 83-94 MiB in 1.2-1.7 s
	// with 128-byte ones (text-OpenMetrics); 500 as 1.2-1.8 MiB in 30 ms
	// and, at worst, 4.1-4.7 MiB in 50 ms (TestScrapeAtSeriesBudget).
	// Default 500.
	MaxHistogramSeries int `yaml:"max_histogram_series"`
	// LagBuckets are the classic bucket boundaries, in seconds, of the lag
	// and stage histograms (YAML metrics.lag_buckets), for scrapers without
	// native histograms: strictly increasing, positive and finite, 1 to
	// 100 of them (+Inf is implicit). The native buckets are always there
	// beside them. Keep the lag alert's threshold (`lagscope alerts
	// --lag-threshold`) among them, so that "above the threshold" is
	// counted rather than interpolated: the generator warns otherwise.
	// Default LagBuckets.
	LagBuckets []float64 `yaml:"lag_buckets"`
}

// maxLagBuckets bounds metrics.lag_buckets: every bucket is a sample of
// every lag series in the exposition.
const maxLagBuckets = 100

// validateBuckets reports why bounds are not classic bucket boundaries
// lagscope takes: 1 to maxLagBuckets, strictly increasing, positive and
// finite.
func validateBuckets(bounds []float64) error {
	if len(bounds) == 0 || len(bounds) > maxLagBuckets {
		return fmt.Errorf("want 1 to %d bounds, got %d", maxLagBuckets, len(bounds))
	}
	for i, b := range bounds {
		switch {
		case math.IsNaN(b) || math.IsInf(b, 0) || b <= 0:
			return fmt.Errorf("bound %g is not a positive finite number of seconds", b)
		case i > 0 && b <= bounds[i-1]:
			return fmt.Errorf("bounds must increase: %g after %g", b, bounds[i-1])
		}
	}
	return nil
}

// minShardEntries is the least a shard holds of each bounded kind of entry.
const minShardEntries = 4096

// shards returns the number of shards the analysis runs with.
func (c Config) shards() int {
	n := c.Join.Shards
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
		if n > 1 {
			n *= 8
		}
	}
	n = min(n, 64, c.Join.MaxPendingEvents/minShardEntries, c.Join.MaxPendingProjections/minShardEntries, c.Join.MaxTraceSpans/minShardEntries)
	return max(n, 1)
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Join: JoinConfig{
			Deadline:              30 * time.Second,
			CommandWait:           10 * time.Second,
			Retention:             5 * time.Minute,
			MaxLag:                time.Hour,
			MaxPendingEvents:      1 << 18,
			MaxJoinedEvents:       1 << 20,
			MaxPendingProjections: 1 << 18,
			MaxTraceSpans:         1 << 20,
		},
		Metrics: MetricsConfig{
			MaxLabelValues:     200,
			MaxLabelLength:     128,
			MaxSeries:          2_000,
			MaxHistogramSeries: 500,
			LagBuckets:         slices.Clone(LagBuckets),
		},
	}
}

// minLabelLength is the least MaxLabelLength: room for lagscope's own label
// values, so that every label value is within it; the longest is a metric
// name, "cqrs_command_to_projection_lag_seconds" (38 bytes).
const minLabelLength = 40

// maxLabelValues is the most MaxLabelValues can be: label values are
// uint16 ids, and a set holds "other", "none" and "unknown" besides.
const maxLabelValues = 1<<16 - 4

// maxProjections is the number of distinct projections tracked per event:
// one bit each in a uint64.
const maxProjections = 64

// Validate reports the first setting that is out of range, naming it.
func (c Config) Validate() error {
	var errs []error
	if c.Join.Deadline <= 0 {
		errs = append(errs, fmt.Errorf("join.deadline must be positive, got %s", c.Join.Deadline))
	}
	if c.Join.CommandWait < 0 {
		errs = append(errs, fmt.Errorf("join.command_wait must not be negative, got %s", c.Join.CommandWait))
	}
	if c.Join.Retention < c.Join.Deadline {
		errs = append(errs, fmt.Errorf("join.retention (%s) must be at least join.deadline (%s)", c.Join.Retention, c.Join.Deadline))
	}
	if c.Join.MaxPendingEvents < 1 {
		errs = append(errs, fmt.Errorf("join.max_pending_events must be at least 1, got %d", c.Join.MaxPendingEvents))
	}
	if c.Join.MaxJoinedEvents < 1 {
		errs = append(errs, fmt.Errorf("join.max_joined_events must be at least 1, got %d", c.Join.MaxJoinedEvents))
	}
	if c.Join.MaxPendingProjections < 1 {
		errs = append(errs, fmt.Errorf("join.max_pending_projections must be at least 1, got %d", c.Join.MaxPendingProjections))
	}
	if c.Join.MaxTraceSpans < 2 {
		errs = append(errs, fmt.Errorf("join.max_trace_spans must be at least 2, got %d", c.Join.MaxTraceSpans))
	}
	if c.Join.Shards < 0 {
		errs = append(errs, fmt.Errorf("shards must not be negative, got %d", c.Join.Shards))
	}
	if c.Metrics.MaxLabelValues < 1 || c.Metrics.MaxLabelValues > maxLabelValues {
		errs = append(errs, fmt.Errorf("metrics.max_label_values must be 1 to %d, got %d", maxLabelValues, c.Metrics.MaxLabelValues))
	}
	if c.Metrics.MaxLabelLength < minLabelLength {
		errs = append(errs, fmt.Errorf("metrics.max_label_length must be at least %d, got %d", minLabelLength, c.Metrics.MaxLabelLength))
	}
	if c.Metrics.MaxSeries < 1 {
		errs = append(errs, fmt.Errorf("metrics.max_series must be at least 1, got %d", c.Metrics.MaxSeries))
	}
	if c.Metrics.MaxHistogramSeries < 1 {
		errs = append(errs, fmt.Errorf("metrics.max_histogram_series must be at least 1, got %d", c.Metrics.MaxHistogramSeries))
	}
	if err := validateBuckets(c.Metrics.LagBuckets); err != nil {
		errs = append(errs, fmt.Errorf("metrics.lag_buckets: %w", err))
	}
	if c.Join.MaxLag <= 0 {
		errs = append(errs, fmt.Errorf("join.max_lag must be positive, got %s", c.Join.MaxLag))
	}
	// Configured names become label values as they are: sanitizing them
	// would make them differ from the names the spans carry.
	validName := func(s string) bool {
		return utf8.ValidString(s) && len(s) <= max(c.Metrics.MaxLabelLength, minLabelLength)
	}
	for typ, ps := range c.Join.Expected {
		switch {
		case typ == "":
			errs = append(errs, errors.New("join.expected: empty event type"))
		case !validName(typ):
			errs = append(errs, fmt.Errorf("join.expected: event type %q is not valid UTF-8 of at most metrics.max_label_length bytes", typ))
		}
		for _, p := range ps {
			switch {
			case p == "":
				errs = append(errs, fmt.Errorf("join.expected[%q]: empty projection name", typ))
			case !validName(p):
				errs = append(errs, fmt.Errorf("join.expected[%q]: projection %q is not valid UTF-8 of at most metrics.max_label_length bytes", typ, p))
			}
		}
	}
	if err := validateRules(c.Rules); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
