package analyzer

import "sync"

// spinLocks, set only by BenchmarkLocking, makes the analysis take its locks
// as it once did, to keep the comparison measurable: the Resolver taking the
// shards a request needs in the order they come free (TryLock, a rotating
// start, then lockSpin on the first still busy) and every other lock
// spinning 2000 TryLocks before it blocks. It did not earn its keep against
// plain Lock calls in shard order, which the analysis uses: BenchmarkLocking
// (16 shards, 4 workers, 100 rounds a run) measured spin/plain 1.017 at
// GOMAXPROCS=1 and 0.975 at GOMAXPROCS=2 (mean of 6 runs), then medians of
// 1.01 and 0.94 (8 runs; a shared machine, single runs ranged 0.64 to 1.5).
var spinLocks bool

// lock locks mu: plainly, or spinning first when spinLocks is set.
func lock(mu *sync.Mutex) {
	if spinLocks {
		lockSpin(mu)
		return
	}
	mu.Lock()
}

// lockSpin locks mu, trying for a while before it blocks (the idea was that
// the analysis holds its locks for microseconds, less than it takes to park
// and wake a goroutine; see spinLocks for what it measured).
func lockSpin(mu *sync.Mutex) {
	for range 2000 {
		if mu.TryLock() {
			return
		}
	}
	mu.Lock()
}
