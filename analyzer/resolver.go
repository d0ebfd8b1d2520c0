package analyzer

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// spanKey identifies a span; value-typed so maps keyed by it do not allocate.
type spanKey struct {
	trace [16]byte
	span  [8]byte
}

type commandInfo struct {
	name  string // interned, safe to keep
	start int64
}

// waitEntry is an append fact whose command is not resolved yet: the walk up
// its ancestors stopped at a span (key) that has not arrived; or (proj) a
// projection fact without event id waiting for its producer span (key),
// whose event it projects.
type waitEntry struct {
	fact    Fact // strings cloned
	key     spanKey
	arrived int64
	gen     uint32
	live    bool
	proj    bool
}

type waitRef struct {
	idx int32
	gen uint32
}

// Resolver is step 1 of the analysis: it classifies spans and resolves,
// inside a trace, the command span that is the ancestor of each append span,
// and gives the facts that the Joiner joins. Its state is sharded by trace
// id (Config's join.shards; a trace's spans always meet in one shard), each
// shard behind its own mutex, which only the Resolver takes. What needs no
// state (reading attributes, classifying, building facts) runs before it
// takes any. All its methods are safe for concurrent use.
type Resolver struct {
	m        *resolverMetrics
	rules    *ruleSet  // Config.Rules compiled; nil when none
	names    *labelSet // command names, shared by the shards
	maxLabel int       // MaxLabelLength
	shards   []resolverShard
	// Written by every request: on its own cache line, away from the
	// fields above that every request reads.
	_      [64]byte
	rotate atomic.Uint32 // where requests start taking shards
	_      [64]byte

	pool sync.Pool // of *scratch

	// filter keeps what the analysis reads (Config.Reads), for the
	// conversion of pdata into pooled batches (of *spanbatch.Batch).
	filter  spanbatch.Filter
	batches sync.Pool

	// hook, when set (tests only), is called with "resolver" while a
	// shard's lock is held: a panic there proves that none stays held.
	hook func(lock string)
}

type resolverShard struct {
	mu sync.Mutex
	t  *traceResolver
	_  [64]byte // keep shards' mutexes on their own cache lines
}

// NewResolver returns a Resolver with the bounds and command wait of cfg,
// which registers its metrics with reg: lagscope_spans_total, and its
// reason and label of lagscope_join_evictions_total,
// lagscope_label_overflow_total and lagscope_label_values_sanitized_total
// (vectors it shares with a Joiner registered with the same reg). It does
// not modify cfg.
func NewResolver(cfg Config, reg prometheus.Registerer) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid analyzer config: %w", err)
	}
	m, err := newResolverMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register resolver metrics: %w", err)
	}
	rules, err := compileRules(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("compile rules: %w", err)
	}
	n := cfg.shards()
	r := &Resolver{
		m:        m,
		rules:    rules,
		names:    newLabelSet("command", cfg.Metrics.MaxLabelValues, cfg.Metrics.MaxLabelLength, m.command),
		maxLabel: cfg.Metrics.MaxLabelLength,
		shards:   make([]resolverShard, n),
		filter:   cfg.Reads().Filter(),
	}
	for i := range r.shards {
		r.shards[i].t = newTraceResolver(cfg, n)
	}
	r.pool.New = func() any { return new(scratch) }
	r.batches.New = func() any { return new(spanbatch.Batch) }
	return r, nil
}

// fromTraces returns a pooled Batch of what the analysis reads of td; give
// it back with putBatch.
func (r *Resolver) fromTraces(td ptrace.Traces) *spanbatch.Batch {
	b := r.batches.Get().(*spanbatch.Batch)
	b.FromTraces(td, r.filter)
	return b
}

func (r *Resolver) putBatch(b *spanbatch.Batch) {
	b.Reset()
	r.batches.Put(b)
}

// Resolve appends to dst the facts of the spans in td that arrived at now,
// and of earlier append spans that the spans in td resolve or that were
// given up early for room, and returns it. The facts own their strings: they
// hold no reference into td, which Resolve does not retain. An append whose
// command span may still come is held (Config's join.command_wait) and given
// by a later call or by Expire. It never fails for the content of td: spans
// it cannot use are counted as ignored, label values are sanitized. It is
// ResolveBatch of td converted (spanbatch.Batch.FromTraces, keeping what
// Config.Reads names).
func (r *Resolver) Resolve(dst []Fact, td ptrace.Traces, now time.Time) []Fact {
	b := r.fromTraces(td)
	defer r.putBatch(b)
	return r.resolveTo(dst, b, now, true)
}

// ResolveBatch is Resolve of the spans of b, which it does not retain.
func (r *Resolver) ResolveBatch(dst []Fact, b *spanbatch.Batch, now time.Time) []Fact {
	return r.resolveTo(dst, b, now, true)
}

// ResolveView is Resolve without the copies: the facts' strings may refer
// into td, so they are valid only while td is neither modified nor reused
// (those that waited for their command own theirs). For a caller that uses
// the facts at once and keeps nothing of them, as the ingest role, which
// encodes them: a copy of every fact's strings was its largest cost after
// the resolution itself (BenchmarkStagesRatio, 1 allocation per fact).
func (r *Resolver) ResolveView(dst []Fact, td ptrace.Traces, now time.Time) []Fact {
	b := r.fromTraces(td)
	defer r.putBatch(b)
	return r.resolveTo(dst, b, now, false)
}

// ResolveBatchView is ResolveView of the spans of b: the facts' strings
// are b's, so keeping one may keep memory of b's request alive (a decoder
// may cut all of a request's strings from one allocation). For a caller
// that uses the facts at once, as ResolveView.
func (r *Resolver) ResolveBatchView(dst []Fact, b *spanbatch.Batch, now time.Time) []Fact {
	return r.resolveTo(dst, b, now, false)
}

func (r *Resolver) resolveTo(dst []Fact, b *spanbatch.Batch, now time.Time, own bool) []Fact {
	sc := r.pool.Get().(*scratch)
	r.resolve(sc, b, now.UnixNano())
	dst = append(dst, sc.pre...) // parked, so cloned already
	for i := range sc.facts {
		if sc.facts[i].Kind == 0 {
			continue
		}
		if own {
			dst = append(dst, ownStrings(sc.facts[i]))
		} else {
			dst = append(dst, sc.facts[i])
		}
	}
	dst = append(dst, sc.post...)
	sc.reset()
	r.pool.Put(sc)
	return dst
}

// ownStrings returns f with the strings that may point into a request
// copied, in one allocation for all of them (so keeping one keeps all,
// bounded by boundFacts). Command is interned by the Resolver, or a
// constant: already owned.
func ownStrings(f Fact) Fact {
	fields := [...]*string{&f.EventID, &f.EventType, &f.AggregateType, &f.AggregateID, &f.Projection, &f.Query}
	n := 0
	for _, p := range fields {
		n += len(*p)
	}
	if n == 0 {
		return f
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range fields {
		b.WriteString(*p)
	}
	all := b.String()
	for _, p := range fields {
		k := len(*p)
		*p, all = all[:k], all[k:]
	}
	return f
}

// resolve is Resolve into sc, whose facts then point into b: the facts of
// the request are sc.facts (parked ones of Kind 0), those it resolved
// sc.pre, those given early for room sc.post, to be joined in that order.
// It takes each shard that has spans of b once, in any order, and releases
// it even if the resolution panics.
func (r *Resolver) resolve(sc *scratch, b *spanbatch.Batch, now int64) {
	n := len(r.shards)
	sc.scan(b, r.rules, r.names, n, r.maxLabel)
	if spinLocks {
		r.resolveTry(sc, now)
	} else {
		// Each shard in turn, one at a time: the TryLock scheduling of
		// resolveTry measured no better (spinLocks).
		for i := range n {
			if len(sc.work[i].recs) > 0 {
				r.shards[i].mu.Lock()
				r.resolveShard(sc, i, now)
			}
		}
	}
	// Projections keyed by a producer span of another trace (a link), in
	// that trace's shard, once every shard has marked its retries.
	for i := range n {
		if len(sc.work[i].xprojs) > 0 {
			r.shards[i].mu.Lock()
			r.resolveLinked(sc, i, now)
		}
	}
	// Counted now: retries are not.
	for i, c := range sc.roles {
		if c > 0 {
			r.m.roleCounts[i].Add(float64(c))
		}
	}
	if len(sc.pre) > 0 && n > 1 {
		sortByOrd(sc.pre, sc.preOrd)
	}
}

// resolveTry takes the shards a request needs in any order: first those
// free now, from a rotating start so that concurrent requests do not queue
// behind each other shard after shard, then the others. Only
// BenchmarkLocking runs it (spinLocks).
func (r *Resolver) resolveTry(sc *scratch, now int64) {
	n := len(r.shards)
	busy := sc.busy[:0]
	start := int(r.rotate.Add(1))
	for k := range n {
		i := (start + k) % n
		if len(sc.work[i].recs) == 0 {
			continue
		}
		if !r.shards[i].mu.TryLock() {
			busy = append(busy, i)
			continue
		}
		r.resolveShard(sc, i, now)
	}
	for len(busy) > 0 {
		// Those still busy: any that has come free, else wait for the
		// first.
		left := busy[:0]
		for _, i := range busy {
			if r.shards[i].mu.TryLock() {
				r.resolveShard(sc, i, now)
			} else {
				left = append(left, i)
			}
		}
		if len(left) > 0 && len(left) == len(busy) {
			lockSpin(&r.shards[left[0]].mu)
			r.resolveShard(sc, left[0], now)
			left = left[1:]
		}
		busy = left
	}
	sc.busy = busy[:0]
}

// resolveShard runs shard i's part of a request and unlocks the shard,
// whose lock the caller took, even if the resolution panics.
func (r *Resolver) resolveShard(sc *scratch, i int, now int64) {
	rs := &r.shards[i]
	defer rs.mu.Unlock()
	if r.hook != nil {
		r.hook("resolver")
	}
	rs.t.resolve(sc, &sc.work[i], now)
	r.reportEvictions(rs.t)
}

// resolveLinked resolves shard i's xprojs and unlocks the shard, whose lock
// the caller took, even if the resolution panics.
func (r *Resolver) resolveLinked(sc *scratch, i int, now int64) {
	rs := &r.shards[i]
	defer rs.mu.Unlock()
	t := rs.t
	for _, pr := range sc.work[i].xprojs {
		t.resolveProjection(sc, pr, now)
	}
	if t.nlive > t.maxWait {
		sc.post = t.expire(sc.post, now, false)
	}
	r.reportEvictions(t)
}

// reportEvictions moves a shard's eviction count to the metrics; the
// shard's lock must be held.
func (r *Resolver) reportEvictions(t *traceResolver) {
	if t.evicted > 0 {
		r.m.waitEvictions.Add(float64(t.evicted))
		t.evicted = 0
	}
	if t.dups > 0 {
		r.m.duplicateSpans.Add(float64(t.dups))
		t.dups = 0
	}
}

// Expire appends to dst, with command "none", the appends that waited
// join.command_wait by now for their command span (all of them when flush
// is set: the end of an offline analysis), and returns it. The facts own
// their strings. Call it periodically (Analyzer.Start does).
func (r *Resolver) Expire(dst []Fact, now time.Time, flush bool) []Fact {
	ns := now.UnixNano()
	for i := range r.shards {
		rs := &r.shards[i]
		func() {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			dst = rs.t.expire(dst, ns, flush)
			r.reportEvictions(rs.t)
		}()
	}
	return dst
}

// Waiting returns the number of appends held for their command span.
func (r *Resolver) Waiting() int {
	n := 0
	for i := range r.shards {
		rs := &r.shards[i]
		rs.mu.Lock()
		n += rs.t.nlive
		rs.mu.Unlock()
	}
	return n
}

// traceResolver is one shard of a Resolver: the state of the traces that
// hash to it. It holds bounded state: the parent of recently seen spans,
// recent command spans, and append spans waiting for an ancestor that has
// not arrived yet. Not safe for concurrent use: its Resolver locks it.
type traceResolver struct {
	wait     int64 // CommandWait in ns
	maxWait  int
	edges    *genMap[spanKey, [8]byte]
	commands *genMap[spanKey, commandInfo]

	waiting map[spanKey][]int32
	slab    []waitEntry
	free    []int32
	fifo    deque[waitRef]
	nlive   int

	// sink keeps the loads of edges.touch.
	sink uint8
	// evicted counts appends joined early for room since the Resolver
	// last reported them.
	evicted uint64
	// producers maps a recent append span that gave one event to that
	// event's key, for the consumer spans that are its children or link to
	// it and carry no event id.
	producers *genMap[spanKey, EventKey]
	// multis maps a recent append span that gave several events to their
	// keys in keys, for the same consumer spans: such a span projects all
	// of them (multi_event_append's shape with consumers that carry no
	// event id).
	multis *genMap[spanKey, keyRun]
	keys   keyRing
	// dups counts retried spans since the Resolver last reported them.
	dups uint64
	// markSpanKeyed: give a projection whose producer span has not come
	// as FactProjectSpan at once, not parked (Resolver.MarkSpanKeyed;
	// relink.go).
	markSpanKeyed bool
}

// newTraceResolver returns one of n resolver shards: each gets 1/n of cfg's
// bounds.
func newTraceResolver(cfg Config, n int) *traceResolver {
	return &traceResolver{
		wait:     int64(cfg.Join.CommandWait),
		maxWait:  max(1, cfg.Join.MaxPendingProjections/n),
		edges:    newGenMap[spanKey, [8]byte](cfg.Join.MaxTraceSpans / n),
		commands: newGenMap[spanKey, commandInfo](cfg.Join.MaxTraceSpans / 8 / n),
		waiting:  make(map[spanKey][]int32),
		// As many as commands: about one append per command.
		producers: newGenMap[spanKey, EventKey](cfg.Join.MaxTraceSpans / 8 / n),
		// Appends of several events are rarer: an eighth of those of
		// one, and as many keys as two such appends of 8 events each.
		multis: newGenMap[spanKey, keyRun](max(1, cfg.Join.MaxTraceSpans/64/n)),
		keys:   keyRing{size: max(maxRunKeys, cfg.Join.MaxTraceSpans/64/n*16)},
	}
}

// maxRunKeys bounds the events of one append span that its consumers
// without an event id project: the first maxRunKeys (an append of more is
// a batch import, not a command's events).
const maxRunKeys = 256

// keyRun locates the event keys of one append span in a keyRing.
type keyRun struct {
	seq uint64 // the ring position of the first key
	n   uint32
}

// keyRing is a bounded ring of event keys: a run stays readable until the
// ring wraps over it (then its consumers keep their producer span's key and
// join nothing, as a producer forgotten by the tables does).
type keyRing struct {
	keys []EventKey // made at size on first use
	size int
	next uint64 // positions written so far
}

// add appends the keys of facts to the ring and returns their run.
func (r *keyRing) add(facts []Fact) keyRun {
	if r.keys == nil {
		r.keys = make([]EventKey, r.size)
	}
	run := keyRun{seq: r.next, n: uint32(min(len(facts), maxRunKeys))}
	for i := range int(run.n) {
		r.keys[r.next%uint64(len(r.keys))] = facts[i].Event
		r.next++
	}
	return run
}

// at returns key i of run, and false when the ring has wrapped over it.
func (r *keyRing) at(run keyRun, i int) (EventKey, bool) {
	if r.next-run.seq > uint64(len(r.keys)) || len(r.keys) == 0 {
		return EventKey{}, false
	}
	return r.keys[(run.seq+uint64(i))%uint64(len(r.keys))], true
}

// spanRec is a span of the request as the resolver's tables see it.
type spanRec struct {
	key    spanKey
	parent [8]byte
	hash   uint64 // key.hash(), computed before the lock is taken
	ord    int32  // position in the request, to order the facts it releases
	lo, hi int32  // its facts, scratch.facts[lo:hi]
	role   Role
	dup    bool // a retry: seen already (set under the shard's lock)
}

// cmdRec is a command span of the request.
type cmdRec struct {
	key  spanKey
	hash uint64 // key.hash()
	info commandInfo
}

// appendRec is an append span of the request whose facts are
// scratch.facts[lo:hi], still without their command.
type appendRec struct {
	trace  [16]byte
	parent [8]byte
	lo, hi int32
	rec    int32 // its spanRec in the same shardWork
}

// prodRec is an append span of the request that gave events: key is the
// span, its facts are scratch.facts[lo:hi].
type prodRec struct {
	key    spanKey
	hash   uint64
	lo, hi int32
	rec    int32 // its spanRec in the same shardWork
}

// projRec is a projection fact (scratch.facts[idx]) without event id that
// projects the event of producer span key, held by the shard of key's
// trace; home and rec locate the projection span's own spanRec.
type projRec struct {
	key       spanKey
	hash      uint64
	idx       int32
	home, rec int32
}

// shardWork is the part of a request that one resolver shard handles: the
// spans of the traces that hash to it.
type shardWork struct {
	recs    []spanRec
	cmds    []cmdRec
	appends []appendRec
	prods   []prodRec
	projs   []projRec // of spans of this shard's traces
	// xprojs are projRecs held by this shard whose projection span is of
	// another shard: resolved after every shard has found its retries.
	xprojs []projRec
}

// scratch is the per-request working memory of the analysis, pooled by the
// Resolver. The zero value is ready to use.
type scratch struct {
	work  []shardWork
	roles [len(roleNames)]uint64
	// facts are the facts of the request's spans, in span order; a fact
	// whose append waits for its command is parked and its Kind set to 0.
	facts []Fact
	// pre are facts of earlier appends that this request's spans resolved
	// (ordered by preOrd, the position of the span that resolved them);
	// post are appends joined early by Expire. They go to the join before
	// and after facts.
	pre     []Fact
	preOrd  []int32
	post    []Fact
	matched []spanRec
	busy    []int // resolver shards to come back to
	// producerOf is projectFacts' scratch: the producer span of each fact
	// of one projection span.
	producerOf []spanKey
	rules      ruleScratch
}

func (s *scratch) reset() {
	for i := range s.work {
		w := &s.work[i]
		w.recs, w.cmds, w.appends = w.recs[:0], w.cmds[:0], w.appends[:0]
		w.prods, w.projs, w.xprojs = w.prods[:0], w.projs[:0], w.xprojs[:0]
	}
	s.roles = [len(roleNames)]uint64{}
	clear(s.facts) // drop references into the request
	s.facts = s.facts[:0]
	clear(s.pre)
	s.pre, s.preOrd = s.pre[:0], s.preOrd[:0]
	clear(s.post)
	s.post = s.post[:0]
	s.matched = s.matched[:0]
}

// traceShard returns the resolver shard of a trace among n: the spans of a
// trace always meet in the same one. It uses other bits of the trace id than
// the tables' hashes, so that a shard's keys spread over its tables.
func traceShard(trace *[16]byte, n int) int {
	if n == 1 {
		return 0
	}
	h := mix64(binary.LittleEndian.Uint64(trace[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(trace[8:]))
	return int((h >> 32) * uint64(n) >> 32)
}

// scan is the part of the analysis that needs no shared state, run without
// a lock: it reads the attributes of every span of b once, classifies it,
// builds the facts of append, project and query spans (append facts without
// their command), and sorts the spans by resolver shard (n of them). Command
// names are interned in names. The facts' strings are bounded (boundFacts)
// for label values of at most maxLabel bytes.
func (sc *scratch) scan(b *spanbatch.Batch, rules *ruleSet, names *labelSet, n, maxLabel int) {
	if len(sc.work) < n {
		sc.work = append(sc.work, make([]shardWork, n-len(sc.work))...)
	}
	ord := int32(0)
	for _, res := range b.Resources {
		rattrs := b.ResourceAttributes(res)
		service := ""
		if v, ok := spanbatch.Get(rattrs, attrServiceName); ok {
			service = v.Str()
		}
		if rules != nil {
			rules.resource(&sc.rules, rattrs, service)
		}
		for _, scope := range b.Scopes[res.Scopes.Lo:res.Scopes.Hi] {
			for k := scope.Spans.Lo; k < scope.Spans.Hi; k++ {
				sp := &b.Spans[k]
				key := spanKey{trace: sp.TraceID, span: sp.SpanID}
				home := traceShard(&key.trace, n)
				w := &sc.work[home]
				h := key.hash()
				ri := int32(len(w.recs))
				attrs := b.SpanAttributes(sp)
				var a spanAttrs
				a.read(attrs)
				role, _ := classifyRules(rules, &sc.rules, sp, attrs, &a)
				sc.roles[role]++
				lo := int32(len(sc.facts))
				sc.spanFacts(w, b, sp, &a, role, service, names, key, h, home, ri, n, maxLabel)
				w.recs = append(w.recs, spanRec{key: key, parent: sp.ParentSpanID, hash: h, ord: ord, lo: lo, hi: int32(len(sc.facts)), role: role})
				ord++
			}
		}
	}
}

// spanFacts builds the facts of span sp of b, of role role (classified
// from a), in sc.facts, and its records in w, its trace's shardWork; ri is
// the index its spanRec will have in w.recs.
func (sc *scratch) spanFacts(w *shardWork, b *spanbatch.Batch, sp *spanbatch.Span, a *spanAttrs, role Role, service string, names *labelSet, key spanKey, h uint64, home int, ri int32, n, maxLabel int) {
	switch role {
	case RoleNone:
	case RoleCommand:
		name := a.command
		if name == "" {
			name = sp.Name
		}
		w.cmds = append(w.cmds, cmdRec{key: key, hash: h, info: commandInfo{name: names.value(names.id(name)), start: unixNano(sp.Start)}})
	case RoleAppend, RoleProject:
		// A failed append or projection (status Error) wrote
		// nothing: it keeps its role in the span counts but
		// gives no fact, so a projection that failed still
		// counts as not shown.
		if sp.Status == ptrace.StatusCodeError {
			return
		}
		lo := len(sc.facts)
		if role == RoleProject {
			sc.facts, sc.producerOf = projectFacts(sc.facts, sc.producerOf[:0], b, sp, a, service)
			boundFacts(sc.facts[lo:], maxLabel)
			sc.routeProjections(lo, home, ri, n)
			return
		}
		sc.facts = eventFacts(sc.facts, appendBase(sp, service), b, sp, a)
		boundFacts(sc.facts[lo:], maxLabel)
		if len(sc.facts) == lo {
			return
		}
		w.prods = append(w.prods, prodRec{key: key, hash: h, lo: int32(lo), hi: int32(len(sc.facts)), rec: ri})
		w.appends = append(w.appends, appendRec{trace: key.trace, parent: sp.ParentSpanID, lo: int32(lo), hi: int32(len(sc.facts)), rec: ri})
	case RoleQuery:
		sc.facts = append(sc.facts, queryFact(sp, a))
		boundFacts(sc.facts[len(sc.facts)-1:], maxLabel)
	}
}

// routeProjections gives the projection facts sc.facts[lo:] that carry no
// event id (keyed by the producer span they are a child of or link to) to
// the shard of that producer span's trace, which knows the producer's event.
func (sc *scratch) routeProjections(lo, home int, ri int32, n int) {
	for i, pk := range sc.producerOf {
		if pk == (spanKey{}) {
			continue // keyed by event id
		}
		t := traceShard(&pk.trace, n)
		pr := projRec{key: pk, hash: pk.hash(), idx: int32(lo + i), home: int32(home), rec: ri}
		if t == home {
			sc.work[t].projs = append(sc.work[t].projs, pr)
		} else {
			sc.work[t].xprojs = append(sc.work[t].xprojs, pr)
		}
	}
}

// resolve does the part of a request's resolution that needs the
// resolver's state, for the spans of w: it remembers their parents and the
// command spans, resumes the earlier appends whose missing ancestor is among
// them (facts to sc.pre), gives this request's append facts their command or
// parks them, and joins early the oldest parked appends past the bound
// (facts to sc.post). Doing the inserts first means the order of spans
// inside one request never matters.
func (r *traceResolver) resolve(sc *scratch, w *shardWork, now int64) {
	matched := sc.matched[:0]
	// The parent-edge and command tables are far larger than the caches:
	// touch every insert's slot first, so that their misses overlap.
	sink := r.sink
	for i := range w.recs {
		sink += r.edges.touch(w.recs[i].hash) + r.edges.touchOld(w.recs[i].hash)
	}
	for i := range w.cmds {
		sink += r.commands.touch(w.cmds[i].hash)
	}
	r.sink = sink
	for i := range w.recs {
		rec := &w.recs[i]
		// A span seen already is a retry of a request whose answer was
		// lost (telemetry is delivered at least once): counted and
		// otherwise ignored. The edges table is the set of recent spans,
		// so this costs no memory; a span whose first copy it forgot
		// counts again.
		if r.edges.putNew(rec.key, rec.hash, rec.parent) {
			rec.dup = true
			r.dups++
			sc.roles[rec.role]--
			clear(sc.facts[rec.lo:rec.hi])
			continue
		}
		if len(r.waiting) > 0 {
			if _, ok := r.waiting[rec.key]; ok {
				matched = append(matched, *rec)
			}
		}
	}
	for i := range w.cmds {
		r.commands.putHash(w.cmds[i].key, w.cmds[i].hash, w.cmds[i].info)
	}
	for i := range w.prods {
		p := &w.prods[i]
		switch {
		case w.recs[p.rec].dup:
		case p.hi-p.lo == 1:
			r.producers.putHash(p.key, p.hash, sc.facts[p.lo].Event)
		default:
			r.multis.putHash(p.key, p.hash, r.keys.add(sc.facts[p.lo:p.hi]))
		}
	}
	for _, rec := range matched {
		n := len(sc.pre)
		sc.pre = r.rewalk(sc.pre, rec.key, now)
		for range len(sc.pre) - n {
			sc.preOrd = append(sc.preOrd, rec.ord)
		}
	}
	sc.matched = matched[:0]
	for _, ap := range w.appends {
		if w.recs[ap.rec].dup {
			continue
		}
		facts := sc.facts[ap.lo:ap.hi]
		cmd, res, waitKey := r.walk(ap.trace, ap.parent)
		switch res {
		case walkFound:
			for i := range facts {
				facts[i].Command, facts[i].CommandStart = cmd.name, cmd.start
			}
		case walkNone:
			for i := range facts {
				facts[i].Command = "none"
			}
		case walkWait:
			for i := range facts {
				// An append fact has no projection or query: what its
				// event carried there is not kept.
				facts[i].Projection, facts[i].Query = "", ""
				r.park(facts[i].Clone(), waitKey, now, false)
				facts[i] = Fact{}
			}
		}
	}
	for _, pr := range w.projs {
		r.resolveProjection(sc, pr, now)
	}
	if r.nlive > r.maxWait {
		sc.post = r.expire(sc.post, now, false)
	}
}

// resolveProjection gives projection fact pr the event of its producer
// span: the one event that span appended; each of the events it appended
// when there are several (the fact takes the first, sc.post gets one more
// fact for each other: the consumer projected them all, as it is the
// child of, or links to, the span that wrote them); or (it arrived and
// appended none) the key of the span itself, which the fact has already.
// While the producer span has not arrived, the fact waits for it like an
// append for its command (join.command_wait), then keeps the span's key.
// The shard holding pr's producer must be locked.
func (r *traceResolver) resolveProjection(sc *scratch, pr projRec, now int64) {
	f := &sc.facts[pr.idx]
	if f.Kind == 0 {
		return // a retry
	}
	if ev, ok := r.producers.getHash(pr.key, pr.hash); ok {
		f.Event = ev
		return
	}
	if run, ok := r.multis.getHash(pr.key, pr.hash); ok {
		if _, ok := r.keys.at(run, 0); ok {
			sc.post = r.projectRun(sc.post, f, run, true)
			return
		}
	}
	if _, ok := r.edges.getHash(pr.key, pr.hash); ok {
		return
	}
	if r.markSpanKeyed {
		f.Kind = FactProjectSpan // for the join role to resolve (MarkSpanKeyed)
		return
	}
	r.park(f.Clone(), pr.key, now, true)
	*f = Fact{}
}

// projectRun gives projection fact f the first event of run and appends
// to dst a copy of f for each other (cloned when clone is set: f points
// into the request). The ring must hold run. f may point into dst: it is
// read before dst grows.
func (r *traceResolver) projectRun(dst []Fact, f *Fact, run keyRun, clone bool) []Fact {
	f.Event, _ = r.keys.at(run, 0)
	more := *f
	if clone && run.n > 1 {
		more = more.Clone()
	}
	for i := 1; i < int(run.n); i++ {
		more.Event, _ = r.keys.at(run, i)
		dst = append(dst, more)
	}
	return dst
}

type walkResult uint8

const (
	walkFound walkResult = iota
	walkNone
	walkWait
)

// walk climbs the ancestors of a span from cur until it meets a command span
// (found), the root (none) or a span it has not seen (wait, on that span).
func (r *traceResolver) walk(trace [16]byte, cur [8]byte) (commandInfo, walkResult, spanKey) {
	for depth := 0; depth < 128; depth++ {
		if cur == ([8]byte{}) {
			return commandInfo{}, walkNone, spanKey{}
		}
		k := spanKey{trace: trace, span: cur}
		if c, ok := r.commands.get(k); ok {
			return c, walkFound, spanKey{}
		}
		p, ok := r.edges.get(k)
		if !ok {
			return commandInfo{}, walkWait, k
		}
		cur = p
	}
	return commandInfo{}, walkNone, spanKey{} // a cycle: bad data
}

// appendBase is the fact an append span's event facts start from.
func appendBase(sp *spanbatch.Span, service string) Fact {
	return Fact{
		Kind:    FactAppend,
		TraceID: sp.TraceID,
		SpanID:  sp.SpanID,
		Start:   unixNano(sp.Start),
		End:     unixNano(sp.End),
		Weight:  spanWeight(sp),
		Service: service,
	}
}

// spanWeight is the Fact.Weight of sp: the adjusted count of the sampling
// threshold in its tracestate (which a Batch keeps only when it may hold
// one: spanbatch.KeepTraceState).
func spanWeight(sp *spanbatch.Span) float64 {
	if sp.TraceState == "" {
		return 0
	}
	return adjustedCount(sp.TraceState)
}

// eventFacts appends one fact per event an append or project span sp of b
// carries.
func eventFacts(dst []Fact, base Fact, b *spanbatch.Batch, sp *spanbatch.Span, a *spanAttrs) []Fact {
	n := len(dst)
	for _, ev := range b.SpanEvents(sp) {
		if ev.Name != eventNameCQRS {
			continue
		}
		var ea spanAttrs
		ea.read(b.EventAttributes(ev))
		if ea.eventID == "" {
			continue
		}
		f := base
		f.EventID = ea.eventID
		f.Event = KeyOf(ea.eventID)
		f.EventType = first(ea.eventType, a.eventType)
		f.AggregateType = first(ea.aggType, a.aggType)
		f.AggregateID = first(ea.aggID, a.aggID)
		f.Version = ea.version
		if f.Version == 0 {
			f.Version = a.version
		}
		f.Projection = first(ea.projection, base.Projection)
		dst = append(dst, f)
	}
	if len(dst) > n {
		return dst
	}
	f := base
	f.EventType = first(a.eventType, a.msgDest)
	f.AggregateType = a.aggType
	f.AggregateID = a.aggID
	f.Version = a.version
	switch id := first(a.eventID, a.msgID); {
	case id != "":
		f.EventID = id
		f.Event = KeyOf(id)
	case base.Kind == FactAppend && a.isMessaging():
		// A message without an id (Kafka): the producer span is its identity.
		f.Event = keyOfSpan(base.TraceID, base.SpanID)
	default:
		return dst
	}
	return append(dst, f)
}

// projectFacts appends the facts of a projection span sp of b to dst and,
// for each, to prod the producer span it was keyed by when it carries no
// event id (the zero key when it does).
func projectFacts(dst []Fact, prod []spanKey, b *spanbatch.Batch, sp *spanbatch.Span, a *spanAttrs, service string) ([]Fact, []spanKey) {
	base := Fact{
		Kind:       FactProject,
		TraceID:    sp.TraceID,
		SpanID:     sp.SpanID,
		Start:      unixNano(sp.Start),
		End:        unixNano(sp.End),
		Projection: first(a.projection, a.msgGroup, a.msgSubscription, service),
		Weight:     spanWeight(sp),
		Service:    service,
	}
	links := b.SpanLinks(sp)
	for i := range links {
		base.LinkedTraces |= LinkBloom(links[i].TraceID)
	}
	n := len(dst)
	dst = eventFacts(dst, base, b, sp, a)
	if len(dst) > n {
		for range len(dst) - n {
			prod = append(prod, spanKey{})
		}
		return dst, prod
	}
	// No event id: the message is identified by its producer span, which
	// this consumer span links to (batch consumers link to each) or is a
	// child of.
	f := base
	f.EventType = first(a.eventType, a.msgDest)
	f.AggregateType, f.AggregateID, f.Version = a.aggType, a.aggID, a.version
	if len(links) > 0 {
		for i := range links {
			l := &links[i]
			f.Event = keyOfSpan(l.TraceID, l.SpanID)
			dst = append(dst, f)
			prod = append(prod, spanKey{trace: l.TraceID, span: l.SpanID})
		}
		return dst, prod
	}
	if p := sp.ParentSpanID; p != ([8]byte{}) {
		f.Event = keyOfSpan(base.TraceID, p)
		dst = append(dst, f)
		prod = append(prod, spanKey{trace: base.TraceID, span: p})
	}
	return dst, prod
}

func queryFact(sp *spanbatch.Span, a *spanAttrs) Fact {
	name := a.query
	if name == "" {
		name = sp.Name
	}
	return Fact{
		Kind:        FactQuery,
		Query:       name,
		AggregateID: a.aggID,
		Version:     a.version,
		TraceID:     sp.TraceID,
		SpanID:      sp.SpanID,
		Start:       unixNano(sp.Start),
		End:         unixNano(sp.End),
		Weight:      spanWeight(sp),
	}
}

// unixNano returns a span timestamp (Unix ns) as an int64, those past 2262
// (which int64 cannot hold) as the latest it can: differences of
// timestamps then never wrap.
func unixNano(t uint64) int64 {
	return int64(min(t, math.MaxInt64))
}

// maxIDLength bounds the event and aggregate ids a fact keeps: longer ids
// are replaced at the boundary (boundFacts), so that what the join holds per
// fact has a fixed worst case.
const maxIDLength = 64

// boundFacts bounds the strings of facts just built from a request: label
// values to the maxLabel+1 bytes a labelSet reads of them (cutLabel: the
// label is the same), event ids (shown to people only; the join key is of
// the whole id) cut to maxIDLength bytes ending in truncMarker, and longer
// aggregate ids replaced by a digest of them, the same for every span, so
// that they still identify their aggregate. Only replaced ids allocate.
func boundFacts(facts []Fact, maxLabel int) {
	for i := range facts {
		f := &facts[i]
		f.EventType = cutLabel(f.EventType, maxLabel)
		f.AggregateType = cutLabel(f.AggregateType, maxLabel)
		f.Projection = cutLabel(f.Projection, maxLabel)
		f.Query = cutLabel(f.Query, maxLabel)
		f.Service = cutLabel(f.Service, maxLabel)
		if len(f.EventID) > maxIDLength {
			f.EventID = f.EventID[:runeCut(f.EventID, maxIDLength-len(truncMarker))] + truncMarker
		}
		if len(f.AggregateID) > maxIDLength {
			f.AggregateID = aggregateDigest(f.AggregateID)
		}
	}
}

// aggregateDigest stands for an aggregate id longer than maxIDLength: "#"
// and the 128-bit hash of the id in hex (33 bytes).
func aggregateDigest(id string) string {
	k := KeyOf(id) // hashed: longer than a UUID
	return "#" + hex.EncodeToString(k[:])
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// park holds an append fact until the span it waits for arrives or
// CommandWait passes.
// proj says f is a projection waiting for its producer span.
func (r *traceResolver) park(f Fact, key spanKey, now int64, proj bool) {
	var idx int32
	if n := len(r.free); n > 0 {
		idx = r.free[n-1]
		r.free = r.free[:n-1]
	} else {
		r.slab = append(r.slab, waitEntry{})
		idx = int32(len(r.slab) - 1)
	}
	e := &r.slab[idx]
	e.gen++
	e.fact, e.key, e.arrived, e.live, e.proj = f, key, now, true, proj
	r.waiting[key] = append(r.waiting[key], idx)
	r.fifo.push(waitRef{idx: idx, gen: e.gen})
	r.nlive++
}

// release frees a parked entry.
func (r *traceResolver) release(idx int32) {
	e := &r.slab[idx]
	e.live = false
	e.fact = Fact{}
	r.free = append(r.free, idx)
	r.nlive--
}

// rewalk resumes the appends waiting on key, which has just arrived.
func (r *traceResolver) rewalk(dst []Fact, key spanKey, now int64) []Fact {
	idxs := r.waiting[key]
	delete(r.waiting, key)
	for _, idx := range idxs {
		e := &r.slab[idx]
		if !e.live || e.key != key {
			continue
		}
		if e.proj {
			f := e.fact
			if ev, ok := r.producers.get(key); ok {
				f.Event = ev
			} else if run, ok := r.multis.get(key); ok {
				if _, ok := r.keys.at(run, 0); ok {
					// Parked, so cloned already: the copies share it.
					i := len(dst)
					dst = append(dst, f)
					dst = r.projectRun(dst, &dst[i], run, false)
					r.release(idx)
					continue
				}
			}
			dst = append(dst, f)
			r.release(idx)
			continue
		}
		cmd, res, waitKey := r.walk(key.trace, key.span)
		switch res {
		case walkFound:
			f := e.fact
			f.Command, f.CommandStart = cmd.name, cmd.start
			dst = append(dst, f)
			r.release(idx)
		case walkNone:
			f := e.fact
			f.Command = "none"
			dst = append(dst, f)
			r.release(idx)
		case walkWait:
			e.key = waitKey
			r.waiting[waitKey] = append(r.waiting[waitKey], idx)
		}
	}
	return dst
}

// expire gives, with command="none", the appends that waited CommandWait
// (all of them when flush is set), and the oldest ones past the bound.
func (r *traceResolver) expire(dst []Fact, now int64, flush bool) []Fact {
	for r.fifo.len() > 0 {
		ref := *r.fifo.front()
		e := &r.slab[ref.idx]
		if !e.live || e.gen != ref.gen {
			r.fifo.popFront()
			continue
		}
		over := r.nlive > r.maxWait
		if !flush && !over && e.arrived+r.wait > now {
			break
		}
		if over && !flush && e.arrived+r.wait > now {
			r.evicted++
		}
		f := e.fact
		if !e.proj {
			f.Command = "none"
		} // else keyed by its producer span, as it is already
		dst = append(dst, f)
		r.dropWaiting(e.key, ref.idx)
		r.release(ref.idx)
		r.fifo.popFront()
	}
	return dst
}

func (r *traceResolver) dropWaiting(key spanKey, idx int32) {
	idxs := r.waiting[key]
	for i, x := range idxs {
		if x == idx {
			idxs = append(idxs[:i], idxs[i+1:]...)
			break
		}
	}
	if len(idxs) == 0 {
		delete(r.waiting, key)
	} else {
		r.waiting[key] = idxs
	}
}
