package analyzer

import (
	"go.opentelemetry.io/collector/pdata/ptrace"
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
// its ancestors stopped at a span (key) that has not arrived.
type waitEntry struct {
	fact    Fact // strings cloned
	key     spanKey
	arrived int64
	gen     uint32
	live    bool
}

type waitRef struct {
	idx int32
	gen uint32
}

// Resolver is step 1 of the analysis: it classifies spans and resolves, inside
// a trace, the command span that is the ancestor of each append span. It holds
// bounded state: the parent of recently seen spans, recent command spans, and
// append spans waiting for an ancestor that has not arrived yet. Not safe for
// concurrent use; Analyzer serialises calls.
type Resolver struct {
	wait     int64 // CommandWait in ns
	maxWait  int
	edges    *genMap[spanKey, [8]byte]
	commands *genMap[spanKey, commandInfo]
	names    *labelSet

	waiting map[spanKey][]int32
	slab    []waitEntry
	free    []int32
	fifo    deque[waitRef]
	nlive   int

	// Roles counts spans by role since the last TakeRoleCounts.
	roles [len(roleNames)]uint64
	// evicted counts appends joined early for room since the last take.
	evicted uint64
}

// NewResolver returns a Resolver with the bounds and command wait of cfg.
func NewResolver(cfg Config) *Resolver {
	return &Resolver{
		wait:     int64(cfg.CommandWait),
		maxWait:  cfg.MaxPendingProjections,
		edges:    newGenMap[spanKey, [8]byte](cfg.MaxTraceSpans),
		commands: newGenMap[spanKey, commandInfo](cfg.MaxTraceSpans / 8),
		names:    newLabelSet("command", cfg.MaxLabelValues, nil),
		waiting:  make(map[spanKey][]int32),
	}
}

// item is a span of the request that produces facts, kept between the two
// passes of Resolve.
type item struct {
	span    ptrace.Span
	role    Role
	attrs   spanAttrs
	service string
}

// scratch is the per-request working memory of Resolve, pooled by Analyzer.
type scratch struct {
	items   []item
	matched []spanKey
	facts   []Fact
}

func (s *scratch) reset() {
	clear(s.items) // drop references into the request
	s.items = s.items[:0]
	s.matched = s.matched[:0]
	clear(s.facts)
	s.facts = s.facts[:0]
}

// Resolve appends to dst the facts of the spans in td, and of earlier append
// spans that the spans in td resolve. now is the arrival time (Unix ns).
// The facts' strings point into td or into the resolver's interned names.
func (r *Resolver) Resolve(dst []Fact, td ptrace.Traces, now int64, sc *scratch) []Fact {
	// Pass 1: remember every span's parent and every command span, and pick
	// out the spans that make facts. Doing this first means the order of
	// spans inside one request never matters.
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		service := ""
		if v, ok := rs.Resource().Attributes().Get(attrServiceName); ok {
			service = v.Str()
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				key := spanKey{trace: sp.TraceID(), span: sp.SpanID()}
				r.edges.put(key, sp.ParentSpanID())
				if len(r.waiting) > 0 {
					if _, ok := r.waiting[key]; ok {
						sc.matched = append(sc.matched, key)
					}
				}
				var a spanAttrs
				a.read(sp.Attributes())
				role := classify(sp.Kind(), &a)
				r.roles[role]++
				switch role {
				case RoleNone:
				case RoleCommand:
					name := a.command
					if name == "" {
						name = sp.Name()
					}
					r.commands.put(key, commandInfo{name: r.names.value(r.names.id(name)), start: int64(sp.StartTimestamp())})
				case RoleAppend, RoleProject:
					// A failed append or projection (status Error) wrote
					// nothing: it keeps its role in the span counts but
					// gives no fact, so a projection that failed still
					// counts as not shown.
					if sp.Status().Code() == ptrace.StatusCodeError {
						continue
					}
					sc.items = append(sc.items, item{span: sp, role: role, attrs: a, service: service})
				default:
					sc.items = append(sc.items, item{span: sp, role: role, attrs: a, service: service})
				}
			}
		}
	}
	// Pass 2: earlier appends whose missing ancestor arrived, then this
	// request's facts.
	for _, key := range sc.matched {
		dst = r.rewalk(dst, key, now)
	}
	for i := range sc.items {
		it := &sc.items[i]
		switch it.role {
		case RoleAppend:
			dst = r.appendFacts(dst, it, now)
		case RoleProject:
			dst = projectFacts(dst, it)
		case RoleQuery:
			dst = append(dst, queryFact(it))
		}
	}
	if r.nlive > r.maxWait {
		dst = r.Expire(dst, now, false)
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
func (r *Resolver) walk(trace [16]byte, cur [8]byte) (commandInfo, walkResult, spanKey) {
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

// appendFacts emits the events written by an append span: one per span event
// named cqrs.event, or the span's own attributes when it has none.
func (r *Resolver) appendFacts(dst []Fact, it *item, now int64) []Fact {
	sp := it.span
	base := Fact{
		Kind:    FactAppend,
		TraceID: sp.TraceID(),
		SpanID:  sp.SpanID(),
		Start:   int64(sp.StartTimestamp()),
		End:     int64(sp.EndTimestamp()),
	}
	first := len(dst)
	dst = eventFacts(dst, base, it)
	if len(dst) == first {
		return dst
	}
	cmd, res, waitKey := r.walk(base.TraceID, sp.ParentSpanID())
	switch res {
	case walkFound:
		for i := first; i < len(dst); i++ {
			dst[i].Command, dst[i].CommandStart = cmd.name, cmd.start
		}
	case walkNone:
		for i := first; i < len(dst); i++ {
			dst[i].Command = "none"
		}
	case walkWait:
		for i := first; i < len(dst); i++ {
			r.park(dst[i].Clone(), waitKey, now)
		}
		dst = dst[:first]
	}
	return dst
}

// eventFacts appends one fact per event an append or project span carries.
func eventFacts(dst []Fact, base Fact, it *item) []Fact {
	a := &it.attrs
	n := len(dst)
	evs := it.span.Events()
	for i := 0; i < evs.Len(); i++ {
		ev := evs.At(i)
		if ev.Name() != eventNameCQRS {
			continue
		}
		var ea spanAttrs
		ea.read(ev.Attributes())
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

func projectFacts(dst []Fact, it *item) []Fact {
	sp := it.span
	a := &it.attrs
	base := Fact{
		Kind:       FactProject,
		TraceID:    sp.TraceID(),
		SpanID:     sp.SpanID(),
		Start:      int64(sp.StartTimestamp()),
		End:        int64(sp.EndTimestamp()),
		Projection: first(a.projection, a.msgGroup, a.msgSubscription, it.service),
	}
	n := len(dst)
	dst = eventFacts(dst, base, it)
	if len(dst) > n {
		return dst
	}
	// No event id: the message is identified by its producer span, which
	// this consumer span links to (batch consumers link to each) or is a
	// child of.
	links := sp.Links()
	f := base
	f.EventType = first(a.eventType, a.msgDest)
	f.AggregateType, f.AggregateID, f.Version = a.aggType, a.aggID, a.version
	if links.Len() > 0 {
		for i := 0; i < links.Len(); i++ {
			l := links.At(i)
			f.Event = keyOfSpan(l.TraceID(), l.SpanID())
			dst = append(dst, f)
		}
		return dst
	}
	if p := sp.ParentSpanID(); !p.IsEmpty() {
		f.Event = keyOfSpan(base.TraceID, p)
		dst = append(dst, f)
	}
	return dst
}

func queryFact(it *item) Fact {
	sp := it.span
	a := &it.attrs
	name := a.query
	if name == "" {
		name = sp.Name()
	}
	return Fact{
		Kind:        FactQuery,
		Query:       name,
		AggregateID: a.aggID,
		Version:     a.version,
		TraceID:     sp.TraceID(),
		SpanID:      sp.SpanID(),
		Start:       int64(sp.StartTimestamp()),
		End:         int64(sp.EndTimestamp()),
	}
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
func (r *Resolver) park(f Fact, key spanKey, now int64) {
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
	e.fact, e.key, e.arrived, e.live = f, key, now, true
	r.waiting[key] = append(r.waiting[key], idx)
	r.fifo.push(waitRef{idx: idx, gen: e.gen})
	r.nlive++
}

// release frees a parked entry.
func (r *Resolver) release(idx int32) {
	e := &r.slab[idx]
	e.live = false
	e.fact = Fact{}
	r.free = append(r.free, idx)
	r.nlive--
}

// rewalk resumes the appends waiting on key, which has just arrived.
func (r *Resolver) rewalk(dst []Fact, key spanKey, now int64) []Fact {
	idxs := r.waiting[key]
	delete(r.waiting, key)
	for _, idx := range idxs {
		e := &r.slab[idx]
		if !e.live || e.key != key {
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

// Expire joins with command="none" the appends that waited CommandWait (all
// of them when flush is set), and the oldest ones past the bound.
func (r *Resolver) Expire(dst []Fact, now int64, flush bool) []Fact {
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
		f.Command = "none"
		dst = append(dst, f)
		r.dropWaiting(e.key, ref.idx)
		r.release(ref.idx)
		r.fifo.popFront()
	}
	return dst
}

func (r *Resolver) dropWaiting(key spanKey, idx int32) {
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

// Waiting returns the number of append facts waiting for their command.
func (r *Resolver) Waiting() int { return r.nlive }
