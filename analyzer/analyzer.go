package analyzer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// Analyzer runs both steps of the analysis in one process: a Resolver and
// a Joiner, each sharded and locking its own shards, with the facts of a
// request passed from one to the other in pooled memory (so without the
// copies that Resolver.Resolve makes). ConsumeBatch and ConsumeTraces are
// safe for concurrent use and take no lock while they read and classify
// spans. A request takes each resolver shard once, then each fact's joiner
// shard in the order of its facts, so that one request analysed alone
// gives the same result whatever the number of shards.
type Analyzer struct {
	cfg      Config
	logger   *slog.Logger
	now      func() time.Time
	panics   prometheus.Counter
	resolver *Resolver
	joiner   *Joiner

	// tickMu serialises ticks, so that the facts a tick expires are
	// joined before the next tick's.
	tickMu sync.Mutex

	// hook, when set (tests only), is called with each lock a request or
	// tick takes, while it is held: a panic there proves that none stays
	// held. Set it with setHook.
	hook func(lock string)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns an Analyzer that registers its metrics with reg: the
// Resolver's, the Joiner's, and lagscope_panics_total{component="analyzer"}.
// It does not modify cfg.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid analyzer config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r, err := NewResolver(cfg, reg)
	if err != nil {
		return nil, err
	}
	j, err := NewJoiner(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	panics, err := registerPanics(reg)
	if err != nil {
		return nil, fmt.Errorf("register analyzer metrics: %w", err)
	}
	return &Analyzer{
		cfg: cfg, logger: logger, now: time.Now, panics: panics.WithLabelValues("analyzer"),
		resolver: r, joiner: j,
	}, nil
}

// setHook sets the test hook of the Analyzer and its components.
func (a *Analyzer) setHook(h func(lock string)) {
	a.hook, a.resolver.hook, a.joiner.hook = h, h, h
}

// ConsumeTraces analyses the spans of one export request: ConsumeBatch of
// what the analysis reads of td (Config.Reads), converted into a pooled
// spanbatch.Batch. It does not retain td.
func (a *Analyzer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	b := a.resolver.fromTraces(td)
	defer a.resolver.putBatch(b)
	return a.ConsumeBatch(ctx, b)
}

// ConsumeBatch analyses the spans of one export request, decoded into b
// (the collector's BatchConsumer). It does not retain b. It never fails for
// the content of b: spans it cannot use are counted as ignored, label
// values are sanitized. Should it panic all the same, it holds no lock
// afterwards: the panic is the caller's to recover, and later requests and
// ticks go on.
func (a *Analyzer) ConsumeBatch(ctx context.Context, b *spanbatch.Batch) error {
	sc := a.resolver.pool.Get().(*scratch)
	now := a.now().UnixNano()
	a.resolver.resolve(sc, b, now)
	if len(sc.pre) > 0 {
		a.joiner.apply(sc.pre, now)
	}
	a.joiner.apply(sc.facts, now)
	a.joiner.apply(sc.post, now)
	sc.reset()
	a.resolver.pool.Put(sc)
	return nil
}

// sortByOrd sorts facts stably by ord, keeping ord in step.
func sortByOrd(facts []Fact, ord []int32) {
	for i := 1; i < len(facts); i++ {
		for k := i; k > 0 && ord[k] < ord[k-1]; k-- {
			facts[k], facts[k-1] = facts[k-1], facts[k]
			ord[k], ord[k-1] = ord[k-1], ord[k]
		}
	}
}

// Tick runs the time-driven part of the analysis at now: appends that waited
// long enough for their command, events past their deadline, retention, and
// the gauges. Start calls it periodically; offline analysis calls Flush.
func (a *Analyzer) Tick(now time.Time) { a.tick(now.UnixNano(), false) }

// Flush treats every pending append and event as past its deadline: the end
// of an offline analysis.
func (a *Analyzer) Flush() { a.tick(a.now().UnixNano(), true) }

func (a *Analyzer) tick(now int64, flush bool) {
	a.tickMu.Lock()
	defer a.tickMu.Unlock()
	if a.hook != nil {
		a.hook("tick")
	}
	facts := a.resolver.Expire(nil, time.Unix(0, now), flush)
	a.joiner.apply(facts, now)
	a.joiner.tick(now, flush, a.resolver.Waiting())
}

// safeTick is Tick for the periodic loop: a panic is logged, counted and
// recovered, so that the gauges and deadlines keep going (Tick holds no lock
// after a panic).
func (a *Analyzer) safeTick(now time.Time) {
	defer func() {
		if r := recover(); r != nil {
			a.panics.Inc()
			a.logger.Error("analyzer tick panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	a.Tick(now)
}

// tickInterval is how often Start ticks: often enough that gauges are fresh
// for a 1s scrape and deadlines are met within a tenth.
func (a *Analyzer) tickInterval() time.Duration {
	return min(time.Second, max(a.cfg.Join.Deadline/10, 10*time.Millisecond))
}

// Start begins the periodic tick. It returns at once; Shutdown stops it.
func (a *Analyzer) Start(ctx context.Context) error {
	if a.cancel != nil {
		return errors.New("analyzer already started")
	}
	ctx, a.cancel = context.WithCancel(ctx)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(a.tickInterval())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.safeTick(a.now())
			}
		}
	}()
	return nil
}

// Shutdown stops the tick and waits for it, or for ctx.
func (a *Analyzer) Shutdown(ctx context.Context) error {
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for analyzer tick: %w", ctx.Err())
	}
}

// Summary returns what the analyzer has seen so far, read from the metrics
// it exposes (so a summary and a scrape agree) and, for what they do not
// hold, from the Joiner's extra data (exact lag maximum, with KeepSamples
// exact lag quantiles and unprojected event ids, orphans per projection).
// It waits for a tick in progress.
func (a *Analyzer) Summary() Summary {
	a.tickMu.Lock()
	defer a.tickMu.Unlock()
	s := a.joiner.summary()
	s.Spans = a.resolver.spanCounts()
	return s
}
