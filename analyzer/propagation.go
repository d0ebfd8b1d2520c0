package analyzer

// Broken trace propagation (issue 14): a projection span that names its
// event by id, so that the join finds the event whatever trace the span is
// in, but is neither in the append's trace nor linked to it. The projector
// lost the trace context between the event store and itself (a consumer
// that does not extract the context from the event's metadata, a batch
// consumer that starts a root span without links): the most common
// instrumentation bug. The lag is still computed, from the event id; what is
// lost is the trace, so a slow projection cannot be followed from the
// command that caused it. Counted per projection span, duplicates included,
// in cqrs_trace_propagation_broken_total{projection}.

// brokenPropagation reports whether a projection span of the trace whose
// traceHash is trace, whose links' trace ids give the Bloom filter links
// (Fact.LinkedTraces), lost the context of the append of the trace whose
// traceHash is appendTrace. Hashes, not trace ids, so that a joined event
// (joined.go) keeps 8 bytes of its trace; two traces taken for one is a
// chance of 2^-64. A projection keyed by its producer span (no event id) is
// a child of it or links to it, so it is never counted.
func brokenPropagation(appendTrace, trace, links uint64) bool {
	return trace != appendTrace && !linkedToHash(links, appendTrace)
}

// projSpan is what the join keeps of a projection span beyond its times,
// for checkCause.
type projSpan struct {
	trace   uint64 // traceHash of its trace id
	links   uint64
	service uint16
	start   int64
}

// checkCause records what projection p's span says of the append of e
// beyond the lag: whether it lost the trace context (propagation.go) and
// how far it started before the append ended (skew.go).
func (j *joinShard) checkCause(e *eventEntry, p uint16, ps projSpan) {
	j.checkAppend(traceHash(e.trace), e.service, e.appendEnd, e.badTime, p, ps)
}

// checkAppend is checkCause for an append of service, in the trace whose
// traceHash is trace, that ended at appendEnd (badTime: its timestamps were
// not credible), as a full entry or a joined one (joined.go) keeps it.
func (j *joinShard) checkAppend(trace uint64, service uint16, appendEnd int64, badTime bool, p uint16, ps projSpan) {
	if brokenPropagation(trace, ps.trace, ps.links) {
		j.sh.projSeries[p].broken.Inc()
	}
	if d := appendEnd - ps.start; d > 0 && d <= j.maxLag && !badTime {
		j.observeSkew(service, ps.service, d)
	}
}
