package analyzer

// Clock skew between services (issue 14). A projection span cannot start
// before the append it projects has ended: the event was not in the store
// yet. When its timestamps say it did, the two hosts' clocks disagree by at
// least that much, and every lag across them is off by as much (lag is the
// projection's end on one clock minus the command's start on another). The
// amount goes to cqrs_clock_skew_seconds{from_service, to_service}, the
// append's service and the projection's: its count says how often, its
// buckets how far. Label values come from resource service.name through a
// labelSet of metrics.max_label_values, and the series from the budget of
// metrics.max_histogram_series (partSet), so no mix of services can grow a
// scrape without bound.
//
// Only this pair is measured: a command or an append is the parent of the
// next span, which starts while it runs, so there "before its cause ended"
// is the normal case. cqrs_clock_skew_total{projection} keeps counting the
// worse case, a projection that ENDED before its command started (a
// negative lag, not observed); each of those is also in this histogram.

// SkewBuckets are the bucket boundaries (seconds) of cqrs_clock_skew_seconds:
// from the half millisecond NTP keeps hosts within to the seconds of a host
// without time sync.
var SkewBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// skewPart is a shard's cached part of a clock-skew series; over: it is the
// "other" series past the budget.
type skewPart struct {
	p    *histPart
	over bool
}

// observeSkew observes a skew of d ns from service from (the append's) to
// service to (the projection's).
func (j *joinShard) observeSkew(from, to uint16, d int64) {
	k := [2]uint16{from, to}
	c, ok := j.skewParts[k]
	if !ok {
		c.p, c.over = j.m.skewSeconds.part(j.id, j.sh.services.value(from), j.sh.services.value(to))
		if j.skewParts == nil {
			j.skewParts = make(map[[2]uint16]skewPart)
		}
		if j.m.skewSeconds.cacheable(c.over, len(j.skewParts)) {
			j.skewParts[k] = c
		}
	} else if c.over {
		j.m.skewSeconds.countOver()
	}
	c.p.observe(seconds(d))
}
