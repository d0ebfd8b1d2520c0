package analyzer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Analyzer runs both steps of the analysis in one process. ConsumeTraces is
// safe for concurrent use and takes no lock while it reads and classifies
// spans. Both steps are sharded, each shard behind its own mutex: resolvers
// by trace id (their state is trace-local), joiners by event key (an event's
// append and projection facts meet in one shard). A request takes each
// resolver shard once, then each fact's joiner shard in the order of its
// facts, so that one request analysed alone gives the same result whatever
// the number of shards.
type Analyzer struct {
	cfg    Config
	logger *slog.Logger
	m      *metrics
	now    func() time.Time

	names     *labelSet // command names, shared by the resolvers
	resolvers []resolverShard
	joiners   []*Joiner
	shared    *joinShared
	// Written by every request: on their own cache line, away from the
	// fields above that every fact reads.
	_      [64]byte
	roles  [len(roleNames)]atomic.Uint64
	rotate atomic.Uint32 // where requests start taking resolver shards
	_      [64]byte

	// tickMu serialises ticks and Summary.
	tickMu sync.Mutex

	pool sync.Pool

	// hook, when set (tests only), is called with each lock a request
	// takes, while it is held: a panic there proves that none stays held.
	hook func(lock string)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type resolverShard struct {
	mu sync.Mutex
	r  *Resolver
	_  [64]byte // keep shards' mutexes on their own cache lines
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
	m, err := newMetrics(reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("register analyzer metrics: %w", err)
	}
	n := cfg.shards()
	a := &Analyzer{
		cfg:       cfg,
		logger:    logger,
		m:         m,
		now:       time.Now,
		names:     newLabelSet("command", cfg.Metrics.MaxLabelValues, cfg.Metrics.MaxLabelLength, m.labels["command"]),
		resolvers: make([]resolverShard, n),
		shared:    newJoinShared(cfg, m, n),
	}
	for i := range a.resolvers {
		a.resolvers[i].r = newResolver(cfg, n, a.names)
	}
	for i := range n {
		a.joiners = append(a.joiners, a.shared.shard(cfg, i, n))
	}
	a.pool.New = func() any { return new(scratch) }
	return a, nil
}

// ConsumeTraces analyses the spans of one export request. It does not retain
// td. It never fails for the content of td: spans it cannot use are counted
// as ignored, label values are sanitized. Should it panic all the same, it
// holds no lock afterwards: the panic is the caller's to recover, and later
// requests and ticks go on.
func (a *Analyzer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	sc := a.pool.Get().(*scratch)
	now := a.now().UnixNano()
	n := len(a.resolvers)
	sc.scan(td, a.names, n, a.cfg.Metrics.MaxLabelLength)
	a.countRoles(&sc.roles)
	// Each resolver shard once, in any order: first those free now, from
	// a rotating start so that concurrent requests do not queue behind
	// each other shard after shard, then the others.
	busy := sc.busy[:0]
	start := int(a.rotate.Add(1))
	for k := range n {
		i := (start + k) % n
		if len(sc.work[i].recs) == 0 {
			continue
		}
		rs := &a.resolvers[i]
		if !rs.mu.TryLock() {
			busy = append(busy, i)
			continue
		}
		a.resolve(rs, sc, i, now)
	}
	for len(busy) > 0 {
		// Those still busy: any that has come free, else wait for the
		// first.
		left := busy[:0]
		for _, i := range busy {
			if rs := &a.resolvers[i]; rs.mu.TryLock() {
				a.resolve(rs, sc, i, now)
			} else {
				left = append(left, i)
			}
		}
		if len(left) > 0 && len(left) == len(busy) {
			// None came free: wait for the first, spinning first (a
			// shard's part of a request takes microseconds; waking a
			// parked goroutine takes as long).
			rs := &a.resolvers[left[0]]
			lockSpin(&rs.mu)
			a.resolve(rs, sc, left[0], now)
			left = left[1:]
		}
		busy = left
	}
	sc.busy = busy[:0]
	if len(sc.pre) > 0 {
		if n > 1 {
			sortByOrd(sc.pre, sc.preOrd)
		}
		a.apply(sc.pre, now)
	}
	a.apply(sc.facts, now)
	a.apply(sc.post, now)
	sc.reset()
	a.pool.Put(sc)
	return nil
}

// resolve runs shard i's part of a request and unlocks the shard, whose
// lock the caller took, even if the resolution panics.
func (a *Analyzer) resolve(rs *resolverShard, sc *scratch, i int, now int64) {
	defer rs.mu.Unlock()
	if a.hook != nil {
		a.hook("resolver")
	}
	rs.r.resolve(sc, &sc.work[i], now)
	a.reportEvictions(rs.r)
}

// lockSpin locks mu, trying for a while before it blocks: the analysis holds
// its locks for microseconds or less, less than it takes to park and wake a
// goroutine.
func lockSpin(mu *sync.Mutex) {
	for range 2000 {
		if mu.TryLock() {
			return
		}
	}
	mu.Lock()
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

// apply joins facts in order, each in its event's joiner shard: a run of
// facts of the same shard under one lock, which a panic releases too.
func (a *Analyzer) apply(facts []Fact, now int64) {
	var held *Joiner
	defer func() {
		if held != nil {
			held.mu.Unlock()
		}
	}()
	n := len(a.joiners)
	for i := range facts {
		f := &facts[i]
		switch f.Kind {
		case FactAppend, FactProject:
		case FactQuery:
			a.shared.query(f)
			continue
		default:
			continue // parked
		}
		j := a.joiners[eventShard(&f.Event, n)]
		if j != held {
			if held != nil {
				held.mu.Unlock()
			}
			held = nil
			lockSpin(&j.mu)
			held = j
			if a.hook != nil {
				a.hook("joiner")
			}
		}
		if f.Kind == FactAppend {
			j.appendEvent(f, now)
		} else {
			j.projectFact(f, now)
		}
	}
}

// countRoles adds a request's span counts to the metrics.
func (a *Analyzer) countRoles(roles *[len(roleNames)]uint64) {
	for i, n := range roles {
		if n > 0 {
			a.m.roleCounts[i].Add(float64(n))
			a.roles[i].Add(n)
		}
	}
}

// reportEvictions moves a resolver's eviction count to the metrics; its
// shard's lock must be held.
func (a *Analyzer) reportEvictions(r *Resolver) {
	if r.evicted > 0 {
		a.m.evictions.WithLabelValues(reasonCommandWaitCapacity).Add(float64(r.evicted))
		r.evicted = 0
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
	var facts []Fact
	waiting := 0
	for i := range a.resolvers {
		rs := &a.resolvers[i]
		func() {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			facts = rs.r.Expire(facts, now, flush)
			a.reportEvictions(rs.r)
			waiting += rs.r.Waiting()
		}()
	}
	a.apply(facts, now)
	entries := waiting
	for _, j := range a.joiners {
		j.locked(func() {
			j.expire(now, flush)
			entries += j.Entries()
		})
	}
	a.shared.refreshGauges(a.joiners, now)
	a.m.entries.Set(float64(entries))
}

// safeTick is Tick for the periodic loop: a panic is logged, counted and
// recovered, so that the gauges and deadlines keep going (Tick holds no lock
// after a panic).
func (a *Analyzer) safeTick(now time.Time) {
	defer func() {
		if r := recover(); r != nil {
			a.m.panics.Inc()
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

// Summary returns what the analyzer has seen so far.
func (a *Analyzer) Summary() Summary {
	s := a.summary()
	s.Spans = SpanCounts{
		Ignored: a.roles[RoleNone].Load(), Command: a.roles[RoleCommand].Load(), Append: a.roles[RoleAppend].Load(),
		Project: a.roles[RoleProject].Load(), Query: a.roles[RoleQuery].Load(),
	}
	return s
}

func (a *Analyzer) summary() Summary {
	a.tickMu.Lock()
	defer a.tickMu.Unlock()
	return a.shared.summary(a.joiners)
}
