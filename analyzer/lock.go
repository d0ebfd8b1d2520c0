package analyzer

import "sync"

// plainLocks, set only by BenchmarkLocking, makes the analysis take its
// locks with plain Lock calls, in shard order, instead of lock and the
// Resolver's TryLock scheduling: the benchmark compares both in one run.
var plainLocks bool

// lock locks mu, trying for a while before it blocks: the analysis holds
// its locks for microseconds or less, less than it takes to park and wake a
// goroutine.
func lock(mu *sync.Mutex) {
	if plainLocks {
		mu.Lock()
		return
	}
	for range 2000 {
		if mu.TryLock() {
			return
		}
	}
	mu.Lock()
}
