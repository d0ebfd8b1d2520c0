package collector

import "sync"

// byteLimiter bounds the bytes of requests being handled at once. It never
// blocks: a reservation that does not fit fails, and the caller answers overload.
// It is safe for concurrent use.
type byteLimiter struct {
	max int64

	mu   sync.Mutex
	used int64
}

func newByteLimiter(max int64) *byteLimiter {
	return &byteLimiter{max: max}
}

// tryAcquire reserves n bytes and reports whether it could.
func (l *byteLimiter) tryAcquire(n int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used+n > l.max {
		return false
	}
	l.used += n
	return true
}

// release returns n bytes reserved by tryAcquire.
func (l *byteLimiter) release(n int64) {
	l.mu.Lock()
	l.used -= n
	l.mu.Unlock()
}

// inUse returns the bytes reserved now.
func (l *byteLimiter) inUse() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used
}
