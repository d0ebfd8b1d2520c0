package load

import (
	"math/rand/v2"
	"slices"
	"time"
)

// maxSamples bounds the latencies kept for percentiles.
const maxSamples = 100_000

// reservoir keeps a uniform sample of at most cap durations (Vitter's
// algorithm R). Not safe for concurrent use.
type reservoir struct {
	samples []time.Duration
	seen    int64
}

func newReservoir(n int) reservoir { return reservoir{samples: make([]time.Duration, 0, n)} }

func (r *reservoir) add(d time.Duration, rng *rand.Rand) {
	r.seen++
	if len(r.samples) < cap(r.samples) {
		r.samples = append(r.samples, d)
		return
	}
	if i := rng.Int64N(r.seen); i < int64(len(r.samples)) {
		r.samples[i] = d
	}
}

// quantile returns the q-quantile (nearest rank) of the samples, 0 if none.
func (r *reservoir) quantile(q float64) time.Duration {
	if len(r.samples) == 0 {
		return 0
	}
	s := slices.Clone(r.samples)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
