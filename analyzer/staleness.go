package analyzer

import "math"

// Stale reads (issue 14): a query that returned version v of an aggregate
// although a version w > v had been appended before the query started. What
// a user feels as "I saved it and it is not there". Counted in
// cqrs_stale_reads_total{query} (and, as before, cqrs_queries_total
// {result="stale"}); how stale in cqrs_read_staleness_seconds{query}: the
// query's start minus the append end of the newest version it did not see.
//
// The join keeps the two newest versions of each aggregate (versionAt): a
// read is judged against the newest appended before it started, which is one
// of them unless two more versions were appended while the query ran.

// StalenessBuckets are the bucket boundaries (seconds) of
// cqrs_read_staleness_seconds: the lag histogram's defaults, kept apart
// from them so that configuring the lag buckets cannot remove the boundary
// the CQRSStaleReads alert reads (alerts.Config.StaleReadAfter, 1s).
var StalenessBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}

// The older of the two versions is kept in 8 bytes, as distances from the
// newer: prevBack versions back (0: none) and prevAge microseconds before
// its append's end. The per-aggregate map holds each aggregate in two slots,
// so 16 bytes more per version would be 32 more per aggregate
// (BenchmarkPendingEvents: 24 with this layout, 40 with two int64 pairs).
// An older version more than 2^32-1 versions back is forgotten; one
// appended more than 71 minutes (2^32 µs) before the newer counts as 71
// minutes, which can only make its staleness read low.

// prev returns the older version and its append's end; ok is false when
// there is none.
func (v versionAt) prev() (version, appendEnd int64, ok bool) {
	if v.prevBack == 0 {
		return 0, 0, false
	}
	return v.version - int64(v.prevBack), v.appendEnd - int64(v.prevAge)*1000, true
}

// withPrev returns v with (version, appendEnd) as its older version, or
// with none when it cannot be held.
func (v versionAt) withPrev(version, appendEnd int64) versionAt {
	back := v.version - version
	if back <= 0 || back > math.MaxUint32 {
		v.prevBack, v.prevAge = 0, 0
		return v
	}
	age := max(0, min((v.appendEnd-appendEnd)/1000, math.MaxUint32))
	v.prevBack, v.prevAge = uint32(back), uint32(age)
	return v
}

// with returns v after version was appended at appendEnd, and whether that
// changed it: v keeps the two newest versions whatever order their appends
// arrive in.
func (v versionAt) with(version, appendEnd int64) (versionAt, bool) {
	pv, _, hasPrev := v.prev()
	switch {
	case version > v.version:
		old := v
		v = versionAt{version: version, appendEnd: appendEnd}
		if old.version > 0 {
			v = v.withPrev(old.version, old.appendEnd)
		}
		return v, true
	case version < v.version && (!hasPrev || version > pv):
		return v.withPrev(version, appendEnd), true
	}
	return v, false
}

// staleFor reports whether a query that started at start and read version
// read is stale, and by how much (ns): start minus the append end of the
// newest version above read appended before start.
func (v versionAt) staleFor(read, start int64) (bool, int64) {
	if v.version > read && v.appendEnd <= start {
		return true, start - v.appendEnd
	}
	if pv, pe, ok := v.prev(); ok && pv > read && pe <= start {
		return true, start - pe
	}
	return false, 0
}

// observeStale counts a stale read of query q, d ns stale.
func (sh *joinShared) observeStale(q uint16, d int64) {
	name := sh.qrys.value(q)
	sh.m.staleReads.WithLabelValues(name).Inc()
	sh.m.staleness.WithLabelValues(name).Observe(seconds(d))
}

// touchStaleReads creates cqrs_stale_reads_total of a new query at 0, so
// that its first stale read is an increase PromQL sees.
func (sh *joinShared) touchStaleReads(name string) {
	sh.m.staleReads.WithLabelValues(name)
}
