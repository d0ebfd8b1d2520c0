package analyzer

import (
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Native (sparse exponential) buckets. Schema 4 puts 16 buckets in every
// power of two: each bucket's upper bound is 2^(1/16) ≈ 1.0443 times its
// lower bound. A quantile estimated anywhere inside the bucket that holds it
// (PromQL's histogram_quantile, or NativeBuckets.Quantile) is then at most 4.43 %
// above (upper bound for a value just over the lower one) or 4.24 % below
// (lower bound for a value at the upper one) the exact value of that rank,
// whatever the distribution: within 5 %. Schema 3 (factor 1.0905) could be
// 9 % off. client_golang picks the schema from a bucket factor as the
// largest n with 2^(2^-n) <= factor: 1.05 gives 4.
const (
	nativeBucketFactor = 1.05
	nativeSchema       = 4
	// nativeZeroThreshold is client_golang's default
	// (DefNativeHistogramZeroThreshold, 2^-128): only 0 falls below it
	// here, as lags and durations are whole nanoseconds.
	nativeZeroThreshold = prometheus.DefNativeHistogramZeroThreshold
)

// The native buckets a part holds: keys nativeMinKey to
// nativeMinKey+nativeKeys-1, in chunks of nativeChunkKeys counters
// allocated when first used. Key k counts (2^((k-1)/16), 2^(k/16)]
// seconds; the range, (2^-30.06 s, 2^33.94 s], holds every positive whole
// number of nanoseconds up to math.MaxInt64 (1 ns is key -478, 292 years
// key 530), so that everything the analyzer observes is exposed as
// client_golang would. Anything else is clamped into it: above, into the
// last bucket; below, into the first; a negative value (never observed:
// lags and durations are checked not to be) counts in the zero bucket
// rather than in negative buckets.
//
// Memory: a chunk is 32 counters of 8 bytes (256 bytes, two octaves), the
// chunk table 32 pointers (256 bytes), so a part holds at most 8 KiB +
// 256 bytes of native buckets, and a series whose values stay within a
// factor of 4 (say 5 s to 8 s) 512 bytes. With join.max_lag (default 1h)
// no value is above 3600 s (key 190), so at most 21 chunks (5.25 KiB) are
// ever allocated per part; lags from 1 ms to 10 s use 7.
const (
	nativeMinKey    = -480
	nativeKeys      = 1024
	nativeChunkKeys = 32
	nativeChunks    = nativeKeys / nativeChunkKeys
)

// nativeMax is the upper bound of the last bucket, 2^(543/16).
var nativeMax = nativeUpper(nativeMinKey + nativeKeys - 1)

// nativeBounds are the fractions (as math.Frexp returns them) at which the
// schema-4 buckets of one power of two end: 2^(i/16)/2. They are
// client_golang's own constants (nativeHistogramBounds[4]), not computed,
// so that a value on a bound falls in the bucket client_golang puts it in;
// the 17th, 1, is above every fraction.
var nativeBounds = [17]float64{
	0.5, 0.5221368912137069, 0.5452538663326288, 0.5693943173783458,
	0.5946035575013605, 0.620928906036742, 0.6484197773255048, 0.6771277734684463,
	0.7071067811865475, 0.7384130729697496, 0.7711054127039704, 0.805245165974627,
	0.8408964152537144, 0.8781260801866495, 0.9170040432046711, 0.9576032806985735,
	1,
}

// nativeFirst gives, for the top 8 bits of a fraction's mantissa, the
// first bound at or above the least fraction with those bits. A 1/256 of
// an octave holds at most one bound (they are 1/16 apart), so the bound of
// a fraction is that one or the next: one compare, mostly predicted,
// instead of a binary search of four that random lags mispredict.
var nativeFirst = func() (t [256]uint8) {
	for i := range t {
		lo := math.Float64frombits(0x3fe<<52 | uint64(i)<<44)
		for nativeBounds[t[i]] < lo {
			t[i]++
		}
	}
	return t
}()

// nativeKey returns the schema-4 key of v, normal and finite (as every
// value above the zero threshold and at most nativeMax is), as
// client_golang computes it (math.Frexp, then the first bound at or above
// the fraction, plus 16 per power of two), from v's bits.
func nativeKey(v float64) int {
	bits := math.Float64bits(v)
	exp := int(bits>>52&0x7ff) - 1022
	frac := math.Float64frombits(0x3fe<<52 | bits&(1<<52-1))
	i := int(nativeFirst[bits>>44&0xff])
	if nativeBounds[i] < frac {
		i++
	}
	return i + (exp-1)*16
}

// nativeUpper returns the upper bound of the bucket with key k.
func nativeUpper(k int) float64 {
	i := k & 15
	return math.Ldexp(nativeBounds[i], (k>>nativeSchema)+1)
}

// shardedHistogram is a histogram vector whose series are observed in parts,
// one per joiner shard, and merged when collected: each part is written by
// one shard only, under its lock, in memory of its own, so that concurrent
// requests never write the same cache line (a HistogramVec child is shared
// memory that every core writes four times per observation, and measured
// three times dearer per observation at two cores than at one). It exposes
// what a HistogramVec with the same classic buckets and
// NativeHistogramBucketFactor 1.05 (schema 4), the default zero threshold
// and NativeHistogramMaxExemplars -1 would: classic buckets, count, sum, the
// created timestamp, per classic bucket the latest exemplar of any part, and
// the native histogram (schema, zero threshold and count, positive spans and
// deltas). Native exemplars are left out: Prometheus before 2.50 reads a
// native histogram's exemplars from the classic buckets, and later versions
// do when the native list is empty, while keeping client_golang's list of
// ten would take a lock shared by every part. The count is the zero bucket
// plus the native buckets, as Prometheus checks of a native histogram, and
// no cumulative classic bucket is above it (see add), so a scrape never
// sees them disagree; the sum is added up per part, so its last digits may
// differ from one running sum. Safe for concurrent use.
type shardedHistogram struct {
	partSet[histPart]
	bounds []float64
}

// histPart is one shard's part of a series. Only its shard writes it; the
// atomics are for the scrape that reads it concurrently. What every
// observation writes, classic counts, sum and zero count, is in one
// allocation of whole cache lines, so that no other part's data shares
// them; the native chunks are allocations of their own, written by this
// part only.
type histPart struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    *atomic.Uint64  // float64 bits, just after counts
	zero   *atomic.Uint64  // the native zero bucket
	nan    *atomic.Uint64  // NaN, in no native bucket but in the count
	ex     []atomic.Pointer[dto.Exemplar]
	native [nativeChunks]atomic.Pointer[nativeChunk]
}

type nativeChunk [nativeChunkKeys]atomic.Uint64

// newShardedHistogram returns a histogram vector of at most limit series (0:
// no limit) and the "other" one; see partSet. opts.Buckets are the classic
// buckets; the native ones are always there.
func newShardedHistogram(opts prometheus.HistogramOpts, labels []string, limit int) *shardedHistogram {
	bounds := opts.Buckets
	return &shardedHistogram{
		partSet: newPartSet(opts.Name, opts.Help, labels, limit, func() *histPart {
			n := len(bounds) + 1
			// Rounded up to whole 64-byte lines: Go's size classes for
			// multiples of 64 bytes start objects on a line.
			words := make([]atomic.Uint64, (n+3+7)&^7)
			return &histPart{
				bounds: bounds, counts: words[:n], sum: &words[n], zero: &words[n+1], nan: &words[n+2],
				ex: make([]atomic.Pointer[dto.Exemplar], n),
			}
		}),
		bounds: bounds,
	}
}

// bucket returns the index of the bucket v falls in: the first bound at or
// above it, or the +Inf bucket. Linear, as client_golang's for fewer than
// 35 buckets (lags fall in the first few), else a binary search.
func (p *histPart) bucket(v float64) int {
	if len(p.bounds) >= 35 {
		return sort.SearchFloat64s(p.bounds, v)
	}
	for i, b := range p.bounds {
		if v <= b {
			return i
		}
	}
	return len(p.bounds)
}

// observe adds v to the part. Only the part's shard calls it.
func (p *histPart) observe(v float64) {
	p.add(v, p.bucket(v))
}

// observeWithExemplar adds v with an exemplar carrying traceID, as the
// bucket's latest.
func (p *histPart) observeWithExemplar(v float64, traceID string) {
	i := p.bucket(v)
	p.ex[i].Store(&dto.Exemplar{
		Label:     []*dto.LabelPair{{Name: new("trace_id"), Value: new(traceID)}},
		Value:     new(v),
		Timestamp: timestamppb.New(time.Now()),
	})
	p.add(v, i)
}

// add counts v in classic bucket i and its native bucket, in that order:
// a scrape reads the native buckets first (copyOf), so that it never sees
// an observation in them that is not yet in the classic ones, and the count
// (of the native buckets) is never below a classic bucket by more than the
// observations half written while it read, which merge caps. Without the
// order, a scrape would have to retry or lock to see one observation in
// both, and a sequence lock measured starving scrapes of a part written in
// a tight loop (60 ms a scrape at two cores).
func (p *histPart) add(v float64, i int) {
	p.counts[i].Add(1)
	switch {
	case v > nativeZeroThreshold:
		k := nativeKeys - 1
		if v <= nativeMax { // and not +Inf
			k = max(nativeKey(v)-nativeMinKey, 0)
		}
		c := p.native[k/nativeChunkKeys].Load()
		if c == nil {
			c = new(nativeChunk)
			p.native[k/nativeChunkKeys].Store(c)
		}
		c[k%nativeChunkKeys].Add(1)
	case math.IsNaN(v): // client_golang leaves it out of native buckets
		p.nan.Add(1)
	default:
		p.zero.Add(1)
	}
	p.sum.Store(math.Float64bits(math.Float64frombits(p.sum.Load()) + v))
}

// histCopy is what a scrape copies of a part.
type histCopy struct {
	counts []uint64
	sum    float64
	count  uint64 // zero, NaN and native buckets
	zero   uint64
	chunks uint32 // bit c set: native[c*nativeChunkKeys:] was copied
	native [nativeKeys]uint64
}

// copyOf copies p into c: the native buckets first, then the classic ones
// (see add).
func (c *histCopy) copyOf(p *histPart) {
	c.zero = p.zero.Load()
	c.count = c.zero + p.nan.Load()
	c.chunks = 0
	for ci := range p.native {
		ch := p.native[ci].Load()
		if ch == nil {
			continue
		}
		c.chunks |= 1 << ci
		for k := range ch {
			n := ch[k].Load()
			c.native[ci*nativeChunkKeys+k] = n
			c.count += n
		}
	}
	for i := range c.counts {
		c.counts[i] = p.counts[i].Load()
	}
	c.sum = math.Float64frombits(p.sum.Load())
}

// Collect implements prometheus.Collector.
func (h *shardedHistogram) Collect(ch chan<- prometheus.Metric) {
	series, parts := h.snapshot()
	c := &histCopy{counts: make([]uint64, len(h.bounds)+1)}
	for i, s := range series {
		ch <- &collectedMetric{desc: h.desc, labels: s.labels, h: h.merge(s.created, parts[i], c)}
	}
}

// merge adds up the parts of one series, copying each with scratch.
func (h *shardedHistogram) merge(created *timestamppb.Timestamp, parts []*histPart, scratch *histCopy) *dto.Histogram {
	n := len(h.bounds) + 1
	counts := make([]uint64, n)
	ex := make([]*dto.Exemplar, n)
	var native [nativeKeys]uint64
	var sum float64
	var count, zero uint64
	for _, p := range parts {
		if p == nil {
			continue
		}
		scratch.copyOf(p)
		for i := range counts {
			counts[i] += scratch.counts[i]
			if e := p.ex[i].Load(); later(e, ex[i]) {
				ex[i] = e
			}
		}
		sum += scratch.sum
		count += scratch.count
		zero += scratch.zero
		for ci := range nativeChunks {
			if scratch.chunks&(1<<ci) == 0 {
				continue
			}
			for k := ci * nativeChunkKeys; k < (ci+1)*nativeChunkKeys; k++ {
				native[k] += scratch.native[k]
			}
		}
	}
	out := &dto.Histogram{SampleSum: new(sum), CreatedTimestamp: created, Bucket: make([]*dto.Bucket, 0, n)}
	// An observation being added while the parts were read may be in a
	// classic bucket and not yet in the count: capped, it shows in the next
	// scrape, as it does in the count.
	out.SampleCount = new(count)
	var cum uint64
	for i, b := range h.bounds {
		cum += counts[i]
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(b), CumulativeCount: new(min(cum, count)), Exemplar: ex[i]})
	}
	// An exemplar above the last bound is on an explicit +Inf bucket, as
	// client_golang exposes it.
	if ex[n-1] != nil {
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(math.Inf(1)), CumulativeCount: new(count), Exemplar: ex[n-1]})
	}
	out.Schema = new(int32(nativeSchema))
	out.ZeroThreshold = new(float64(nativeZeroThreshold))
	out.ZeroCount = new(zero)
	out.PositiveSpan, out.PositiveDelta = appendNativeSpans(nil, nil, native[:])
	return out
}

// appendNativeSpans encodes the non-empty buckets of counts (by key less
// nativeMinKey) as client_golang's makeBuckets does: spans of buckets with
// gaps of at most two empty buckets inside a span, each bucket's count as
// the difference from the previous one's.
func appendNativeSpans(spans []*dto.BucketSpan, deltas []int64, counts []uint64) ([]*dto.BucketSpan, []int64) {
	var prev int64
	next := 0 // the key after the last bucket encoded
	for i, n := range counts {
		if n == 0 {
			continue
		}
		key := i + nativeMinKey
		gap := int32(key - next)
		if len(spans) == 0 || gap > 2 {
			spans = append(spans, &dto.BucketSpan{Offset: new(gap), Length: new(uint32(0))})
		} else {
			for range gap {
				*spans[len(spans)-1].Length++
				deltas = append(deltas, -prev)
				prev = 0
			}
		}
		*spans[len(spans)-1].Length++
		deltas = append(deltas, int64(n)-prev)
		prev = int64(n)
		next = key + 1
	}
	return spans, deltas
}

func later(a, b *dto.Exemplar) bool {
	if a == nil {
		return false
	}
	if b == nil {
		return true
	}
	return a.GetTimestamp().AsTime().After(b.GetTimestamp().AsTime())
}
