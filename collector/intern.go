package collector

import "sync"

// stringCache shares the strings the selective decoder makes of span names
// and kept attribute values: most repeat from span to span (a handful of
// names, operations, types and projections) and would otherwise cost an
// allocation each. It is direct-mapped, so a lookup costs a hash of a few
// words and one comparison, and a miss replaces the slot's string. It is
// not safe for concurrent use: each request takes one from a pool, which
// also carries what one request learnt to the next.
type stringCache struct {
	slots [stringCacheSlots]string
}

const (
	stringCacheSlots = 256
	// maxCachedLen bounds the strings a cache keeps, so that a pooled cache
	// holds at most slots × maxCachedLen bytes alive (16 KiB).
	maxCachedLen = 64
)

// lazyScratch is what a request's selective decoding reuses from the
// previous one's: the string cache. (The Batch it decodes into has a pool
// of its own: it goes to the consumer, the cache does not.)
type lazyScratch struct {
	strs stringCache
}

var lazyScratches = sync.Pool{New: func() any { return new(lazyScratch) }}

func getScratch() *lazyScratch { return lazyScratches.Get().(*lazyScratch) }

// putScratch returns s to the pool. It points to no request bytes: the
// cache holds strings of its own.
func putScratch(s *lazyScratch) { lazyScratches.Put(s) }

// get returns a string equal to b: the cached one, or a new one it caches.
func (c *stringCache) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxCachedLen {
		return string(b)
	}
	slot := &c.slots[cacheSlot(b)]
	if *slot == string(b) { // compared without allocating
		return *slot
	}
	s := string(b)
	*slot = s
	return s
}

// cacheSlot is the slot of b, of 1 to maxCachedLen bytes.
func cacheSlot(b []byte) uint8 { return uint8(hashBytes(b)) }
