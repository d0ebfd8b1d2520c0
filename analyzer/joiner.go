package analyzer

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// eventEntry is an appended event held by the join while it waits for
// projections, and past its deadline while one expected has not shown it
// (so that a late projection still gives its lag). Label values are interned
// ids and projections are bits, so an entry is a fixed 128 bytes (112
// before the sampling weight and, for clock skew, the append's service).
// Once every projection expected has shown it, it moves to the joined store
// (a joinedEntry of 26 bytes) and leaves a tombstone in its queue until the
// queue's front passes it.
type eventEntry struct {
	key       EventKey
	trace     [16]byte
	lagFrom   int64 // command start, or append end when the trace has no command
	appendEnd int64
	arrived   int64
	aggHash   uint64
	version   int64
	// weight is the append's Fact.weight: every count of the event is
	// weighted by it (sampling).
	weight float64
	// expected: projections the event is expected by; pending: those of
	// them still counted in cqrs_projection_pending_events; seen: those that
	// showed it; unproj: those declared unprojected at the deadline.
	expected, pending, seen, unproj uint64
	typ, aggType, command           uint16
	service                         uint16 // the append's, for clock skew
	declared                        bool   // the deadline has been evaluated
	// badTime: the append's timestamps were not credible (counted then),
	// so no lag or stage duration is observed for the event.
	badTime bool
}

// orphanEntry is a projection fact whose event has not been appended (yet).
type orphanEntry struct {
	key        EventKey
	trace      [16]byte
	start, end int64
	arrived    int64
	prev       uint64 // seq+1 of the previous orphan of the same event; 0 when none
	links      uint64 // Fact.LinkedTraces
	projection uint16
	service    uint16
	consumed   bool
}

type orderKey struct {
	projection uint16
	agg        uint64
}

type orderVal struct {
	version, start int64
}

// versionAt holds the two newest versions of an aggregate and their
// appends' ends, the older one as distances from the newer (staleness.go).
type versionAt struct {
	version, appendEnd int64
	prevBack, prevAge  uint32
}

// Joiner is step 2 of the analysis: it joins facts by event id, whatever the
// trace they came from, turns the joins into metrics and owns them. Its
// state is bounded by Config's limits and sharded by event key (Config's
// join.shards), each shard behind its own mutex, which only the Joiner
// takes: Apply takes the shard of each fact in turn, Tick and Flush each
// shard in turn, never two shards at once (the per-aggregate state an append
// or projection updates is locked inside, briefly, or with one shard guarded
// by that shard's lock). All its methods are safe for concurrent use.
type Joiner struct {
	m      *metrics
	logger *slog.Logger // for the Joiner's own log lines (unprojlog.go)
	sh     *joinShared
	shards []*joinShard

	// tickMu serialises ticks with each other and with summaries, which
	// read the gauges a tick sets.
	tickMu sync.Mutex
	now    func() time.Time

	// hook, when set (tests only), is called with "joiner" while a shard's
	// lock is held: a panic there proves that none stays held.
	hook func(lock string)
}

// NewJoiner returns a Joiner that registers its metrics with reg: the cqrs_*
// metrics, lagscope_join_entries, lagscope_invalid_timestamps_total,
// lagscope_series_overflow_total, and its reasons and labels of
// lagscope_join_evictions_total, lagscope_label_overflow_total and
// lagscope_label_values_sanitized_total (vectors it shares with a Resolver
// registered with the same reg). It does not modify cfg; logger may be nil.
func NewJoiner(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Joiner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid analyzer config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("register join metrics: %w", err)
	}
	n := cfg.shards()
	j := &Joiner{m: m, logger: logger, sh: newJoinShared(cfg, m, n), now: time.Now}
	j.sh.unprojLog.logger = logger
	for i := range n {
		j.shards = append(j.shards, j.sh.shard(cfg, i, n))
	}
	return j, nil
}

// Apply joins facts that arrived at now, in order: each append and
// projection fact in its event's shard (a run of facts of the same shard
// under one lock), each query fact in its aggregate's (with one shard, in
// that shard, whose lock guards the aggregates: joinShared.oneLock). Facts
// of Kind 0 are
// skipped. It does not retain facts or their strings. Should it panic, it
// holds no lock afterwards.
func (j *Joiner) Apply(facts []Fact, now time.Time) { j.apply(facts, now.UnixNano()) }

func (j *Joiner) apply(facts []Fact, now int64) {
	var held *joinShard
	defer func() {
		if held != nil {
			held.mu.Unlock()
		}
	}()
	n := len(j.shards)
	for i := range facts {
		f := &facts[i]
		var s *joinShard
		switch f.Kind {
		case FactAppend, FactProject:
			s = j.shards[eventShard(&f.Event, n)]
		case FactQuery:
			if !j.sh.oneLock {
				j.sh.query(f)
				continue
			}
			s = j.shards[0]
		default:
			continue // parked
		}
		if s != held {
			if held != nil {
				held.mu.Unlock()
			}
			held = nil
			lock(&s.mu)
			held = s
			if j.hook != nil {
				j.hook("joiner")
			}
		}
		switch f.Kind {
		case FactAppend:
			s.appendEvent(f, now)
		case FactProject:
			s.projectFact(f, now)
		default:
			j.sh.query(f)
		}
	}
}

// Tick declares unprojected the events whose deadline passed at now,
// retires entries past retention, and refreshes the gauges, among them
// lagscope_join_entries: the Joiner's entries (in an Analyzer, with the
// appends its Resolver holds). Call it periodically (Analyzer.Start does,
// for its Joiner).
func (j *Joiner) Tick(now time.Time) { j.tick(now.UnixNano(), false, 0) }

// Flush treats every pending event as past its deadline: the end of an
// offline analysis. Facts applied later are joined as usual.
func (j *Joiner) Flush() { j.tick(j.now().UnixNano(), true, 0) }

// tick is Tick; flush declares every pending event, and waiting (appends a
// Resolver holds for their command) is added to lagscope_join_entries.
func (j *Joiner) tick(now int64, flush bool, waiting int) {
	j.tickMu.Lock()
	defer j.tickMu.Unlock()
	entries := waiting
	for _, s := range j.shards {
		s.locked(func() {
			s.expire(now, flush)
			entries += s.entries()
		})
	}
	j.sh.refreshGauges(j.shards, now)
	j.m.entries.Set(float64(entries))
}

// Entries returns the number of events and projections waiting for their
// event that the Joiner holds.
func (j *Joiner) Entries() int {
	n := 0
	for _, s := range j.shards {
		s.locked(func() { n += s.entries() })
	}
	return n
}

// joinShard is one shard of a Joiner's event key space, behind its own
// mutex (mu): an append fact and the projection facts of the same event go
// to the same one. What is not per event is shared by the shards in a
// joinShared: interned labels, the projections expected per event type, the
// latest version per aggregate and the last version each projection applied
// per aggregate. Its methods need mu held, which only its Joiner takes.
type joinShard struct {
	mu sync.Mutex

	sh                             *joinShared
	id                             int // shard number, for metric parts
	stageObs                       [3]*histPart
	deadline, retention, orphanTTL int64
	maxLag                         int64
	maxEvents, maxOrphans          int

	m                                            *metrics
	types, aggTypes, commands, projections, qrys *labelSet

	// The events the join holds, each in one place. recent: appended and
	// waiting for projections, in arrival order, with tombstones of those
	// that left. stalled: those that reached recent's front still waiting
	// while most behind them had left (moved so that those slots are
	// freed), also in arrival order and older than recent's. missed: those
	// the deadline found with an expected projection missing, kept in full
	// until retention so that a late projection still gives its lag.
	// joined: those every expected projection has shown, in 26 bytes.
	// recent, stalled and missed share maxEvents.
	recent, stalled, missed eventQueue
	joined                  joinedStore
	orphanIdx               map[EventKey]uint64 // seq+1 of the newest orphan of an event
	orphans                 deque[orphanEntry]

	pending  [maxProjections]int64
	progress [maxProjections]int64

	lagSeries  map[idTriple]lagPart
	appended   counters2
	projected  counters2
	unproj     counters2
	duplicated counters2
	outOfOrder counters2
	late       counters2
	extra      *summaryExtra
	chain      []uint64

	skewParts map[[2]uint16]skewPart // skew.go
	st        statusCounts           // status.go
}

// joinShared is the state the Joiner shards share. Labels are interned by
// concurrent labelSets; the rest is written rarely (expected projections,
// lag series) or lives in aggregate shards with their own mutexes, taken
// last (while a Joiner's may be held) and never two at once.
type joinShared struct {
	m                                            *metrics
	types, aggTypes, commands, projections, qrys *labelSet
	services                                     *labelSet // of clock skew's labels

	// expected holds, per event type id, the projections expected to show
	// its events: those configured, and those that ever showed one.
	expected []atomic.Uint64
	// learnedAt holds, per event type id, when a projection last showed
	// one of its events for the first time: until a deadline after it,
	// the type's expected projections may still be growing, so its events
	// stay pending (and keep their timestamps) until their own deadline.
	learnedAt []atomic.Int64
	cfgAll    uint64
	cfgByType map[string]uint64
	// projSeries is set up for a projection id before the id is published.
	projSeries [maxProjections]projSeries

	lagMu     sync.Mutex
	lagSeries map[[3]uint16]*lagSeries
	// otherLag is the exemplar clock of the lag series past the budget.
	otherLag lagSeries

	aggs []aggShard
	// oneLock is set when there is one Joiner shard (and so one aggregate
	// shard): its mutex, which Apply then holds for query facts too,
	// guards the aggregate shard, whose own is not taken. The aggregate
	// lock's atomic waits for the stores before it, each a miss in the
	// per-aggregate maps: BenchmarkConsumeSynth on one core (one shard) took
	// 0.92x the time without it (alternating runs).
	oneLock bool

	// windows are the status machine's, by projection id; statusWindow
	// is their length (status.go). Written by refreshGauges only.
	windows      [maxProjections]statusWindow
	statusWindow int64

	exemplarGap int64
	keep        bool
	// unprojLog logs events not shown within the deadline (unprojlog.go).
	unprojLog unprojLog
	// learned, when set (Joiner.RecordLearned; relink.go), records the
	// projections learn learns.
	learned *learnedLog
}

// aggShard holds the per-aggregate state of the aggregates that hash to it.
type aggShard struct {
	mu      sync.Mutex
	id      int // for metric parts
	order   *genMap[orderKey, orderVal]
	latest  *genMap[aggKey, versionAt]
	queries map[idPair]cachedCounter
	_       [64]byte // keep shards' mutexes on their own cache lines
}

// lagSeries is a lag series' exemplar clock, shared by the shards, which
// observe their own parts of the series.
type lagSeries struct {
	lastEx atomic.Int64
}

// lagPart is a shard's handle on a lag series; over: the series is the
// "other" one past the series budget.
type lagPart struct {
	*lagSeries
	obs  *histPart
	over bool
}

type projSeries struct {
	skew            prometheus.Counter
	pending, oldest prometheus.Gauge
	broken          prometheus.Counter
	status          [len(statusNames)]prometheus.Gauge
}

// counters2 caches a shard's parts of a two-label counter vector by
// interned ids, so an increment is one map lookup without allocations.
type counters2 struct {
	vec   *shardedCounter
	shard int
	a, b  *labelSet
	m     map[idPair]cachedCounter
}

// idPair and idTriple are two and three interned label ids packed into one
// integer, as map keys: a [2]uint16 key is written to the stack as two
// halves and read back as one word, a load the CPU cannot forward from
// those stores, so it waited for every store before them to reach the
// cache, among them the misses of the per-aggregate maps (5% of
// BenchmarkConsumeSynth's samples were on the query counters' lookup).
type (
	idPair   uint32
	idTriple uint64
)

func pairOf(x, y uint16) idPair { return idPair(x)<<16 | idPair(y) }

func tripleOf(x, y, z uint16) idTriple {
	return idTriple(x)<<32 | idTriple(y)<<16 | idTriple(z)
}

// cachedCounter is a cached part of a counter series; over: the series is
// the "other" one past the series budget.
type cachedCounter struct {
	p    *counterPart
	over bool
}

// add adds weight w (an event's or query's Fact.weight) to the series of
// interned ids x, y.
func (c *counters2) add(x, y uint16, w float64) {
	k := pairOf(x, y)
	ctr, ok := c.m[k]
	if !ok {
		ctr.p, ctr.over = c.vec.part(c.shard, c.a.value(x), c.b.value(y))
		if c.vec.cacheable(ctr.over, len(c.m)) {
			c.m[k] = ctr
		}
	} else if ctr.over {
		c.vec.countOver()
	}
	ctr.p.add(w)
}

// newJoinShared returns the shared state of joiner shards, with n aggregate
// shards that split cfg's bound on aggregates.
func newJoinShared(cfg Config, m *metrics, n int) *joinShared {
	projLimit := cfg.Metrics.MaxLabelValues
	if projLimit > maxProjections-1 {
		projLimit = maxProjections - 1 // one bit is kept for "other"
	}
	ml := cfg.Metrics.MaxLabelLength
	sh := &joinShared{
		m:        m,
		types:    newLabelSet("event_type", cfg.Metrics.MaxLabelValues, ml, m.labels["event_type"]),
		aggTypes: newLabelSet("aggregate_type", cfg.Metrics.MaxLabelValues, ml, m.labels["aggregate_type"]),
		// Command names come sanitized and counted by the Resolver's set
		// of MaxLabelValues (and "other"): room for them, "none" and
		// "other", and no counters (m.labels has none for "command"), so
		// that an overflow or a cut is counted once, by the Resolver,
		// whichever process it runs in.
		commands:     newLabelSet("command", cfg.Metrics.MaxLabelValues+2, ml, m.labels["command"]),
		projections:  newLabelSet("projection", projLimit, ml, m.labels["projection"]),
		qrys:         newLabelSet("query", cfg.Metrics.MaxLabelValues, ml, m.labels["query"]),
		services:     newLabelSet("service", cfg.Metrics.MaxLabelValues, ml, m.labels["service"]),
		expected:     make([]atomic.Uint64, min(cfg.Metrics.MaxLabelValues, 1<<16-1)+1),
		learnedAt:    make([]atomic.Int64, min(cfg.Metrics.MaxLabelValues, 1<<16-1)+1),
		cfgByType:    make(map[string]uint64),
		lagSeries:    make(map[[3]uint16]*lagSeries),
		aggs:         make([]aggShard, n),
		oneLock:      n == 1,
		exemplarGap:  int64(100 * time.Millisecond),
		statusWindow: int64(cfg.Join.Deadline),
		keep:         cfg.KeepSamples,
	}
	for i := range sh.aggs {
		sh.aggs[i].id = i
		sh.aggs[i].order = newGenMap[orderKey, orderVal](cfg.Join.MaxPendingEvents / n)
		sh.aggs[i].latest = newGenMap[aggKey, versionAt](cfg.Join.MaxPendingEvents / n)
		sh.aggs[i].queries = make(map[idPair]cachedCounter)
	}
	sh.projections.onAdd = func(p uint16, name string) {
		if int(p) >= maxProjections {
			return
		}
		sh.projSeries[p] = projSeries{
			skew:    m.skew.WithLabelValues(name),
			pending: m.pending.WithLabelValues(name),
			oldest:  m.oldest.WithLabelValues(name),
			broken:  m.broken.WithLabelValues(name),
			status:  statusGauges(m.status, name),
		}
	}
	sh.qrys.onAdd = func(_ uint16, name string) { sh.touchStaleReads(name) }
	sh.types.onAdd = func(t uint16, name string) {
		mask := sh.cfgAll | sh.cfgByType[name]
		sh.expected[t].Store(mask)
		sh.touchUnprojected(name, mask)
	}
	for typ, ps := range cfg.Join.Expected {
		var mask uint64
		for _, p := range ps {
			mask |= projectionBit(sh.projections.id(p))
		}
		if typ == "*" {
			sh.cfgAll |= mask
		} else {
			sh.cfgByType[typ] |= mask
		}
	}
	return sh
}

// shard returns Joiner shard id of n on sh: each gets 1/n of cfg's bounds
// on events and early projections.
func (sh *joinShared) shard(cfg Config, id, n int) *joinShard {
	j := &joinShard{
		sh:          sh,
		id:          id,
		deadline:    int64(cfg.Join.Deadline),
		retention:   int64(cfg.Join.Retention),
		orphanTTL:   int64(cfg.Join.Deadline + cfg.Join.CommandWait),
		maxLag:      int64(cfg.Join.MaxLag),
		maxEvents:   max(1, cfg.Join.MaxPendingEvents/n),
		maxOrphans:  max(1, cfg.Join.MaxPendingProjections/n),
		m:           sh.m,
		types:       sh.types,
		aggTypes:    sh.aggTypes,
		commands:    sh.commands,
		projections: sh.projections,
		qrys:        sh.qrys,
		recent:      newEventQueue(max(1, cfg.Join.MaxPendingEvents/n)),
		stalled:     newEventQueue(max(1, cfg.Join.MaxPendingEvents/n)),
		missed:      newEventQueue(max(1, cfg.Join.MaxPendingEvents/n)),
		joined:      newJoinedStore(max(1, cfg.Join.MaxJoinedEvents/n), cfg.KeepSamples),
		orphanIdx:   make(map[EventKey]uint64),
		lagSeries:   make(map[idTriple]lagPart),
		extra:       newSummaryExtra(cfg.KeepSamples),
	}
	m := sh.m
	for i, s := range stageNames {
		j.stageObs[i], _ = m.stage.part(id, s) // no budget: three series
	}
	j.appended = counters2{vec: m.appended, shard: id, a: j.types, b: j.aggTypes, m: map[idPair]cachedCounter{}}
	for _, c := range []*counters2{&j.projected, &j.unproj, &j.duplicated, &j.outOfOrder, &j.late} {
		c.shard, c.a, c.b, c.m = id, j.types, j.projections, map[idPair]cachedCounter{}
	}
	j.projected.vec, j.unproj.vec, j.duplicated.vec = m.projected, m.unproj, m.duplicated
	j.outOfOrder.vec, j.late.vec = m.outOfOrder, m.late
	return j
}

// projectionBit returns the bit of projection p in an event's masks; 0 for
// ids past maxProjections (none: the projection label is bounded below it).
func projectionBit(p uint16) uint64 {
	if int(p) >= maxProjections {
		return 0
	}
	return 1 << p
}

// expectedBy returns the projections expected to show events of type typ.
func (sh *joinShared) expectedBy(typ uint16) uint64 { return sh.expected[typ].Load() }

// learn records that projection bit showed an event of type typ at now.
func (sh *joinShared) learn(typ uint16, bit uint64, now int64) {
	if sh.expected[typ].Load()&bit != 0 {
		return
	}
	if sh.expected[typ].Or(bit)&bit == 0 {
		sh.learnedAt[typ].Store(now)
		sh.touchUnprojected(sh.types.value(typ), bit)
		if sh.learned != nil {
			sh.learned.add(sh, typ, bit, now)
		}
	}
}

// settled reports whether the projections expected to show events of type
// typ have not grown for a deadline before now.
func (sh *joinShared) settled(typ uint16, now, deadline int64) bool {
	return now-sh.learnedAt[typ].Load() >= deadline
}

// touchUnprojected creates the consistency counters (unprojected,
// duplicated, out of order, late) of an event type and the projections now
// expected to show it, at 0: a counter that first appears at 1 hides its
// first increase from PromQL's increase() and rate(), and so from the
// alerts, and a dashboard shows 0 rather than "No data" for a healthy
// projection.
func (sh *joinShared) touchUnprojected(typ string, mask uint64) {
	for b := mask; b != 0; b &= b - 1 {
		p := sh.projections.value(uint16(bits.TrailingZeros64(b)))
		sh.m.unproj.touch(typ, p)
		sh.m.duplicated.touch(typ, p)
		sh.m.outOfOrder.touch(typ, p)
		sh.m.late.touch(typ, p)
	}
}

// lockAgg locks aggregate shard a for the caller, which holds the Joiner
// shard's lock when oneLock is set (then that lock guards a). unlockAgg
// releases it.
func (sh *joinShared) lockAgg(a *aggShard) {
	if !sh.oneLock {
		lock(&a.mu)
	}
}

func (sh *joinShared) unlockAgg(a *aggShard) {
	if !sh.oneLock {
		a.mu.Unlock()
	}
}

// agg returns the aggregate shard of an aggregate id hash.
func (sh *joinShared) agg(h uint64) *aggShard {
	if len(sh.aggs) == 1 {
		return &sh.aggs[0]
	}
	return &sh.aggs[(mix64(h^0x2545f4914f6cdd1d)>>32)*uint64(len(sh.aggs))>>32]
}

// eventShard returns the Joiner shard of an event among n.
func eventShard(k *EventKey, n int) int {
	if n == 1 {
		return 0
	}
	h := mix64(binary.BigEndian.Uint64(k[8:])*0x9e3779b97f4a7c15 ^ binary.BigEndian.Uint64(k[:8]))
	return int((h >> 32) * uint64(n) >> 32)
}

func aggHash(s string) uint64 {
	if s == "" {
		return 0
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h | 1
}

func (j *joinShard) appendEvent(f *Fact, now int64) {
	if j.held(f.Event) {
		return // the same append exported twice
	}
	j.makeRoom()
	typ := j.types.id(f.EventType)
	e := eventEntry{
		key:       f.Event,
		trace:     f.TraceID,
		lagFrom:   f.End,
		appendEnd: f.End,
		arrived:   now,
		aggHash:   aggHash(f.AggregateID),
		version:   f.Version,
		weight:    f.weight(),
		typ:       typ,
		aggType:   j.aggTypes.id(f.AggregateType),
		command:   j.commands.id(f.Command),
		service:   j.sh.services.id(f.Service),
	}
	if f.End < f.Start {
		j.m.invalidTime[timeEndBeforeStart].Inc()
		e.badTime = true
	}
	if f.CommandStart > 0 && f.Command != "none" {
		e.lagFrom = f.CommandStart
		if d := f.End - f.CommandStart; d >= 0 && !e.badTime {
			if d > j.maxLag {
				j.m.invalidTime[timeBeyondMaxLag].Inc()
				e.badTime = true
			} else {
				j.stageObs[stageCommand].observe(seconds(d))
			}
		}
	}
	e.expected = j.sh.expectedBy(typ)
	e.pending = e.expected
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]++
	}
	j.appended.add(typ, e.aggType, e.weight)
	if e.aggHash != 0 && e.version > 0 {
		j.sh.noteVersion(e.aggHash, e.version, f.End)
	}
	seq := j.recent.push(&e)
	if j.extra.keep {
		j.extra.ids[f.Event] = clone(f.DisplayID()) // not a view into the request
	}
	if o, ok := j.orphanIdx[f.Event]; ok {
		delete(j.orphanIdx, f.Event)
		j.applyOrphans(j.recent.at(seq), o, now)
		j.settle(&j.recent, seq, now)
	}
}

// held reports whether the shard holds event k, pending, unprojected or
// joined.
func (j *joinShard) held(k EventKey) bool {
	if _, ok := j.recent.find(k); ok {
		return true
	}
	if _, ok := j.joined.index.find(k, &j.joined.events); ok {
		return true
	}
	if _, ok := j.stalled.find(k); ok {
		return true
	}
	_, ok := j.missed.find(k)
	return ok
}

// makeRoom retires entries until one more fits in maxEvents: declared
// events first (nothing waits for them; not counted, as before); then
// recent's front if no projection waits for it (to the joined store, so
// that duplicates of it are still recognised); while most of recent's slots
// are tombstones, its front moves to stalled, which frees them; else the
// oldest event is evicted, counted if a projection was still expected.
func (j *joinShard) makeRoom() {
	for j.recent.len()+j.stalled.len()+j.missed.len() >= j.maxEvents {
		switch {
		case j.missed.len() > 0:
			j.retire(&j.missed, false)
		case j.recent.len() > 0 && j.recent.events.front().pending == 0:
			j.retire(&j.recent, true) // to the joined store: nothing lost
		case 2*j.recent.live < j.recent.len():
			seq := j.recent.events.head
			j.stalled.push(j.recent.at(seq))
			j.recent.remove(seq)
		case j.stalled.len() > 0:
			j.retire(&j.stalled, true)
		default:
			j.retire(&j.recent, true)
		}
	}
}

// settle moves the pending event at seq to the joined store if every
// projection expected to show it has (pending is then 0, and seen, which
// holds only projections learned for the type, is all of them) and the
// type's expected projections are settled. Otherwise it stays pending until
// its deadline, so that a projection showing it first still gives its lag:
// an event no projection is expected to show, and the events of a type a
// projection has just started showing (expected projections learned from
// the spans grow then, and a fixture or a new deployment is all that).
func (j *joinShard) settle(q *eventQueue, seq uint64, now int64) {
	e := q.at(seq)
	if e.pending != 0 || e.seen == 0 || e.seen != e.seen|j.sh.expectedBy(e.typ) || !j.sh.settled(e.typ, now, j.deadline) {
		return
	}
	if j.join(e) {
		q.remove(seq)
	}
}

// noteVersion records that version of an aggregate was appended at appendEnd,
// if it is the latest.
func (sh *joinShared) noteVersion(agg uint64, version, appendEnd int64) {
	a := sh.agg(agg)
	sh.lockAgg(a)
	defer sh.unlockAgg(a)
	v, _ := a.latest.get(aggKey(agg))
	if v, changed := v.with(version, appendEnd); changed {
		a.latest.put(aggKey(agg), v)
	}
}

// applyOrphans applies, oldest first, the projections that arrived before
// their event.
func (j *joinShard) applyOrphans(e *eventEntry, newest uint64, now int64) {
	j.chain = j.chain[:0]
	for s := newest; s != 0; {
		if !j.orphans.live(s - 1) {
			break
		}
		o := j.orphans.at(s - 1)
		j.chain = append(j.chain, s-1)
		s = o.prev
	}
	for i := len(j.chain) - 1; i >= 0; i-- {
		o := j.orphans.at(j.chain[i])
		o.consumed = true
		j.checkCause(e, o.projection, projSpan{trace: traceHash(o.trace), links: o.links, service: o.service, start: o.start})
		j.project(e, o.projection, o.start, o.end, now)
	}
}

func (j *joinShard) projectFact(f *Fact, now int64) {
	p := j.projections.id(f.Projection)
	if int(p) < maxProjections {
		j.st.spans[p]++
	}
	svc := j.sh.services.id(f.Service)
	ps := projSpan{trace: traceHash(f.TraceID), links: f.LinkedTraces, service: svc, start: f.Start}
	for _, q := range [...]*eventQueue{&j.recent, &j.stalled} {
		if seq, ok := q.find(f.Event); ok {
			e := q.at(seq)
			j.checkCause(e, p, ps)
			j.project(e, p, f.Start, f.End, now)
			j.settle(q, seq, now)
			return
		}
	}
	if seq, ok := j.joined.index.find(f.Event, &j.joined.events); ok {
		j.projectJoined(j.joined.events.at(seq), p, ps, now)
		return
	}
	if seq, ok := j.missed.find(f.Event); ok {
		e := j.missed.at(seq)
		j.checkCause(e, p, ps)
		j.project(e, p, f.Start, f.End, now)
		return
	}
	for j.orphans.len() >= j.maxOrphans {
		j.retireOrphan(true)
	}
	seq := j.orphans.push(orphanEntry{
		key: f.Event, trace: f.TraceID, start: f.Start, end: f.End, arrived: now,
		prev: j.orphanIdx[f.Event], projection: p, links: f.LinkedTraces, service: svc,
	})
	j.orphanIdx[f.Event] = seq + 1
}

// project records that projection p showed event e with a span from start
// to end.
func (j *joinShard) project(e *eventEntry, p uint16, start, end, now int64) {
	bit := uint64(1) << p
	if e.seen&bit != 0 {
		j.duplicated.add(e.typ, p, e.weight)
		return
	}
	e.seen |= bit
	j.sh.learn(e.typ, bit, now)
	if e.pending&bit != 0 {
		e.pending &^= bit
		j.pending[p]--
	}
	j.projected.add(e.typ, p, e.weight)
	j.st.shown[p]++
	if e.unproj&bit != 0 {
		j.late.add(e.typ, p, e.weight)
	}
	// Timestamps that are not credible give no lag or stage duration:
	// one absurd span would add centuries to the sums.
	credible := !e.badTime // else counted when appended
	if credible && end < start {
		j.m.invalidTime[timeEndBeforeStart].Inc()
		credible = false
	}
	switch lag := end - e.lagFrom; {
	case lag < 0:
		j.sh.projSeries[p].skew.Add(e.weight)
	case !credible:
	case lag > j.maxLag:
		j.m.invalidTime[timeBeyondMaxLag].Inc()
		credible = false
	default:
		j.observeLag(e, p, lag, now)
		j.extra.observe(p, lag, e.trace)
	}
	if credible {
		j.observeStage(stageDelivery, start-e.appendEnd)
		j.observeStage(stageProjection, end-start)
	}
	if e.appendEnd > j.progress[p] {
		j.progress[p] = e.appendEnd
	}
	if e.aggHash != 0 && e.version > 0 && j.sh.outOfOrder(p, e.aggHash, e.version, start) {
		j.outOfOrder.add(e.typ, p, e.weight)
	}
}

// observeStage observes a stage duration d of 0 to maxLag; past maxLag it
// counts it as not credible.
func (j *joinShard) observeStage(stage int, d int64) {
	switch {
	case d < 0:
	case d > j.maxLag:
		j.m.invalidTime[timeBeyondMaxLag].Inc()
	default:
		j.stageObs[stage].observe(seconds(d))
	}
}

// outOfOrder records that projection p applied version of an aggregate at
// start, and reports whether it did so out of order.
func (sh *joinShared) outOfOrder(p uint16, agg uint64, version, start int64) bool {
	a := sh.agg(agg)
	k := orderKey{projection: p, agg: agg}
	sh.lockAgg(a)
	defer sh.unlockAgg(a)
	last, ok := a.order.get(k)
	switch {
	case !ok:
		a.order.put(k, orderVal{version: version, start: start})
	case (version-last.version < 0) != (start-last.start < 0) && version != last.version && start != last.start:
		// Applied later but older (or earlier but newer): the
		// projection saw the aggregate's events out of order.
		if start > last.start {
			a.order.put(k, orderVal{version: version, start: start})
		}
		return true
	case start > last.start:
		a.order.put(k, orderVal{version: version, start: start})
	}
	return false
}

func (j *joinShard) observeLag(e *eventEntry, p uint16, lag, now int64) {
	k := tripleOf(e.command, e.typ, p)
	s, ok := j.lagSeries[k]
	if !ok {
		s.obs, s.over = j.m.lag.part(j.id, j.commands.value(e.command), j.types.value(e.typ), j.projections.value(p))
		if s.over {
			s.lagSeries = &j.sh.otherLag
		} else {
			s.lagSeries = j.sh.lagSeriesOf([3]uint16{e.command, e.typ, p})
		}
		if j.m.lag.cacheable(s.over, len(j.lagSeries)) {
			j.lagSeries[k] = s
		}
	} else if s.over {
		j.m.lag.countOver()
	}
	v := seconds(lag)
	// An exemplar costs an allocation; one per series every 100ms is
	// plenty for a person to find a trace, and every slow one is kept.
	// The shards share the series, so the 100ms are per series.
	if last := s.lastEx.Load(); (now-last >= j.sh.exemplarGap && s.lastEx.CompareAndSwap(last, now)) || lag >= int64(time.Second) {
		s.lastEx.Store(now)
		s.obs.observeWithExemplar(v, hex.EncodeToString(e.trace[:]))
		return
	}
	s.obs.observe(v)
}

// lagSeriesOf returns the lag series of (command, event type, projection)
// ids.
func (sh *joinShared) lagSeriesOf(k [3]uint16) *lagSeries {
	sh.lagMu.Lock()
	defer sh.lagMu.Unlock()
	s, ok := sh.lagSeries[k]
	if !ok {
		s = &lagSeries{}
		sh.lagSeries[k] = s
	}
	return s
}

// query counts a query by the freshness of the version it read. It needs
// no Joiner: only the aggregate's shard.
func (sh *joinShared) query(f *Fact) {
	q := sh.qrys.id(f.Query)
	h := aggHash(f.AggregateID)
	a := sh.agg(h)
	sh.lockAgg(a)
	defer sh.unlockAgg(a)
	result := uint16(queryUnknown)
	if h != 0 && f.Version > 0 {
		if v, ok := a.latest.get(aggKey(h)); ok {
			result = queryFresh
			if ok, d := v.staleFor(f.Version, f.Start); ok {
				result = queryStale
				sh.observeStale(q, d)
			}
		}
	}
	k := pairOf(q, result)
	c, ok := a.queries[k]
	if !ok {
		c.p, c.over = sh.m.queries.part(a.id, sh.qrys.value(q), queryResults[result])
		if sh.m.queries.cacheable(c.over, len(a.queries)) {
			a.queries[k] = c
		}
	} else if c.over {
		sh.m.queries.countOver()
	}
	c.p.add(f.weight())
}

const (
	queryFresh = iota
	queryStale
	queryUnknown
)

var queryResults = [...]string{"fresh", "stale", "unknown"}

// expire declares unprojected the events whose deadline passed (every
// pending one when flush is set) and retires entries past retention.
func (j *joinShard) expire(now int64, flush bool) {
	// stalled's events arrived before recent's.
	j.declareDue(&j.stalled, now, flush)
	j.declareDue(&j.recent, now, flush)
	for _, q := range [...]*eventQueue{&j.stalled, &j.recent, &j.missed} {
		for q.len() > 0 && q.events.front().arrived+j.retention <= now {
			j.retire(q, false)
		}
	}
	j.expireJoined(now, flush)
	for j.orphans.len() > 0 {
		o := j.orphans.front()
		if !o.consumed && !flush && o.arrived+j.orphanTTL > now {
			break
		}
		j.retireOrphan(false)
	}
}

// declare evaluates an event at its deadline: every projection expected by
// then that has not shown it makes it unprojected.
func (j *joinShard) declare(e *eventEntry) {
	if e.declared {
		return
	}
	e.declared = true
	e.expected |= j.sh.expectedBy(e.typ)
	missing := e.expected &^ e.seen
	for b := missing; b != 0; b &= b - 1 {
		p := uint16(bits.TrailingZeros64(b))
		j.unproj.add(e.typ, p, e.weight)
		j.extra.unprojected(p, e.key, e.trace)
	}
	e.unproj = missing
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]--
	}
	e.pending = 0
}

// declareDue declares the events of q whose deadline passed (all when
// flush is set) and moves them out of q: to the joined store when no
// expected projection is missing, else to missed.
func (j *joinShard) declareDue(q *eventQueue, now int64, flush bool) {
	s := max(q.declSeq, q.events.head)
	// remove may retire the front past s: hence the max with head.
	for ; s < q.events.tail; s = max(s+1, q.events.head) {
		e := q.at(s)
		if e.gone() {
			continue
		}
		if !flush && e.arrived+j.deadline > now {
			break
		}
		j.declare(e)
		j.sh.unprojLog.note(j.sh, e, e.unproj, now)
		if e.unproj != 0 || !j.join(e) {
			j.missed.push(e)
		}
		q.remove(s)
	}
	q.declSeq = s
}

// retire retires the front event of q, which is live; forRoom: to make
// room, which counts it evicted if a projection was still expected, and
// moves it to the joined store if none was.
func (j *joinShard) retire(q *eventQueue, forRoom bool) {
	seq := q.events.head
	e := q.at(seq)
	if forRoom && !e.declared && e.pending == 0 && j.join(e) {
		q.remove(seq)
		return
	}
	if e.pending != 0 && forRoom {
		j.m.evictions.WithLabelValues(reasonCapacity).Inc()
	}
	for b := e.pending; b != 0; b &= b - 1 {
		j.pending[bits.TrailingZeros64(b)]--
	}
	if j.extra.keep {
		delete(j.extra.ids, e.key)
	}
	q.remove(seq)
}

func (j *joinShard) retireOrphan(forRoom bool) {
	seq := j.orphans.head
	o := j.orphans.front()
	if !o.consumed {
		reason := reasonOrphanExpired
		if forRoom {
			reason = reasonOrphanCapacity
		}
		j.m.evictions.WithLabelValues(reason).Inc()
		j.extra.proj[o.projection].orphans++
		if s, ok := j.orphanIdx[o.key]; ok && s == seq+1 {
			delete(j.orphanIdx, o.key)
		}
	}
	j.orphans.popFront()
}

// refreshGauges sets the pending and oldest-pending gauges of every
// projection seen so far from the Joiner shards, locking each in turn; the
// caller must serialise calls. Pending events are summed over the shards. The
// oldest pending event is the one that arrived first among each shard's
// oldest (the same as one Joiner's when the shards are alone or events
// arrive in append order); of those that arrived at the same time, the one
// appended first.
func (sh *joinShared) refreshGauges(shards []*joinShard, now int64) {
	np := min(sh.projections.len(), maxProjections)
	var pending, progress [maxProjections]int64
	var shown, spans [maxProjections]uint64
	for _, j := range shards {
		j.locked(func() {
			for p := range np {
				pending[p] += j.pending[p]
				progress[p] = max(progress[p], j.progress[p])
			}
			j.st.addTo(&shown, &spans, np)
		})
	}
	sh.judge(np, &pending, &shown, &spans, now)
	var arrived, appendEnd [maxProjections]int64
	var found [maxProjections]bool
	for _, j := range shards {
		j.locked(func() {
			for p := range np {
				e := j.oldestPending(uint16(p), progress[p])
				if e != nil && (!found[p] || e.arrived < arrived[p] || (e.arrived == arrived[p] && e.appendEnd < appendEnd[p])) {
					found[p], arrived[p], appendEnd[p] = true, e.arrived, e.appendEnd
				}
			}
		})
	}
	for p := range np {
		ps := &sh.projSeries[p]
		age := int64(0)
		if found[p] {
			age = max(0, now-appendEnd[p])
		}
		ps.pending.Set(float64(pending[p]))
		ps.oldest.Set(seconds(age))
	}
}

// oldestPending returns the first event of the shard projection p has not
// shown: an event within its deadline, or past it while p has shown nothing
// appended later than progress (a stalled projection); nil when there is
// none. A cursor per projection makes this amortised O(1).
//
// The declared events (in missed: those fully joined cannot be pending)
// arrived before those of stalled, which arrived before recent's: the
// queues are searched in that order, skipping tombstones.
func (j *joinShard) oldestPending(p uint16, progress int64) *eventEntry {
	for _, q := range [...]*eventQueue{&j.missed, &j.stalled, &j.recent} {
		if e := j.scanPending(q, p, progress); e != nil {
			return e
		}
	}
	return nil
}

func (j *joinShard) scanPending(q *eventQueue, p uint16, progress int64) *eventEntry {
	bit := uint64(1) << p
	d := &q.events
	c := max(q.cursor[p], d.head)
	for ; c < d.tail; c++ {
		e := d.at(c)
		exp := e.expected | j.sh.expectedBy(e.typ)
		if e.gone() || exp&bit == 0 || e.seen&bit != 0 || (e.declared && e.appendEnd <= progress) {
			continue
		}
		break
	}
	q.cursor[p] = c
	if c == d.tail {
		return nil
	}
	return d.at(c)
}

// locked runs f with j.mu held, and releases it even if f panics.
func (j *joinShard) locked(f func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f()
}

// entries returns the number of events and waiting projections held.
func (j *joinShard) entries() int {
	return j.recent.live + j.stalled.live + j.missed.live + j.joined.events.len() + j.orphans.len()
}

func seconds(ns int64) float64 { return float64(ns) / 1e9 }
