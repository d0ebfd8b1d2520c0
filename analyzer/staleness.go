package analyzer

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

// with returns v after version was appended at appendEnd, and whether that
// changed it: v keeps the two newest versions whatever order their appends
// arrive in.
func (v versionAt) with(version, appendEnd int64) (versionAt, bool) {
	switch {
	case version > v.version:
		return versionAt{version: version, appendEnd: appendEnd, prevVersion: v.version, prevEnd: v.appendEnd}, true
	case version < v.version && version > v.prevVersion:
		v.prevVersion, v.prevEnd = version, appendEnd
		return v, true
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
	if v.prevVersion > read && v.prevEnd <= start {
		return true, start - v.prevEnd
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
