package analyzer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Analyzer runs both steps of the analysis in one process. ConsumeTraces is
// safe for concurrent use; the steps' state is guarded by one mutex each, so
// classification of one request overlaps joining of another.
type Analyzer struct {
	cfg    Config
	logger *slog.Logger
	m      *metrics
	now    func() time.Time

	resMu    sync.Mutex
	resolver *Resolver
	roles    [len(roleNames)]uint64 // already reported to m

	joinMu sync.Mutex
	joiner *Joiner

	pool sync.Pool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns an Analyzer that registers its metrics with reg. It does not
// modify cfg.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Analyzer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid analyzer config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register analyzer metrics: %w", err)
	}
	a := &Analyzer{
		cfg:      cfg,
		logger:   logger,
		m:        m,
		now:      time.Now,
		resolver: NewResolver(cfg),
		joiner:   newJoiner(cfg, m),
	}
	a.pool.New = func() any { return new(scratch) }
	return a, nil
}

// ConsumeTraces analyses the spans of one export request. It does not retain
// td. It never fails for the content of td: spans it cannot use are counted
// as ignored.
func (a *Analyzer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	sc := a.pool.Get().(*scratch)
	now := a.now().UnixNano()
	a.resMu.Lock()
	sc.facts = a.resolver.Resolve(sc.facts, td, now, sc)
	a.reportRoles()
	a.resMu.Unlock()
	if len(sc.facts) > 0 {
		a.joinMu.Lock()
		a.joiner.Apply(sc.facts, now)
		a.joinMu.Unlock()
	}
	sc.reset()
	a.pool.Put(sc)
	return nil
}

// reportRoles moves the resolver's span counts to the metrics; resMu must be
// held.
func (a *Analyzer) reportRoles() {
	for i, n := range a.resolver.roles {
		if d := n - a.roles[i]; d > 0 {
			a.m.roleCounts[i].Add(float64(d))
			a.roles[i] = n
		}
	}
	if a.resolver.evicted > 0 {
		a.m.evictions.WithLabelValues(reasonCommandWaitCapacity).Add(float64(a.resolver.evicted))
		a.resolver.evicted = 0
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
	a.resMu.Lock()
	facts := a.resolver.Expire(nil, now, flush)
	a.reportRoles()
	waiting := a.resolver.Waiting()
	a.resMu.Unlock()
	a.joinMu.Lock()
	a.joiner.Apply(facts, now)
	a.joiner.Tick(now, flush)
	a.m.entries.Set(float64(a.joiner.Entries() + waiting))
	a.joinMu.Unlock()
}

// tickInterval is how often Start ticks: often enough that gauges are fresh
// for a 1s scrape and deadlines are met within a tenth.
func (a *Analyzer) tickInterval() time.Duration {
	return min(time.Second, max(a.cfg.Deadline/10, 10*time.Millisecond))
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
				a.Tick(a.now())
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

// Summary returns what the analyzer has seen so far.
func (a *Analyzer) Summary() Summary {
	a.resMu.Lock()
	roles := a.resolver.roles
	a.resMu.Unlock()
	a.joinMu.Lock()
	s := a.joiner.summary()
	a.joinMu.Unlock()
	s.Spans = SpanCounts{
		Ignored: roles[RoleNone], Command: roles[RoleCommand], Append: roles[RoleAppend],
		Project: roles[RoleProject], Query: roles[RoleQuery],
	}
	return s
}
