package collector

import (
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// defaultReloadInterval is how often, at most, the receiver looks at the
// files of its certificates and token for a change. A rotation is seen on
// the first handshake or request after it, within this interval.
const defaultReloadInterval = time.Second

// fileStamp is how a change to a file is told: a rewrite, a rename over it
// or a symlink swap (as Kubernetes does with mounted secrets, which os.Stat
// follows) changes its modification time, its size or both.
type fileStamp struct {
	modTime int64 // Unix nanoseconds
	size    int64
}

func stampFiles(paths []string) ([]fileStamp, error) {
	stamps := make([]fileStamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		stamps[i] = fileStamp{modTime: fi.ModTime().UnixNano(), size: fi.Size()}
	}
	return stamps, nil
}

// reloading holds a value loaded from files and loads it again when they
// change. It looks at the files on get, at most once per interval, rather
// than from a goroutine of its own: there is nothing to stop, and nothing is
// done while no client connects. A load that fails keeps the last good value:
// a rotation caught between writing the certificate and the key is retried
// at the next look, since the files' stamps are only recorded with a load
// that succeeded. Its methods are safe for concurrent use.
type reloading[T any] struct {
	what     string // for the log: "TLS certificate", "bearer token"
	paths    []string
	load     func() (*T, error)
	interval time.Duration
	logger   *slog.Logger

	cur  atomic.Pointer[T]
	next atomic.Int64 // Unix nanoseconds of the next look at the files

	mu      sync.Mutex // held by the one caller looking at the files
	stamps  []fileStamp
	lastErr string // of the last failed look, logged once
}

// newReloading loads the value once; its error is load's or the files'.
func newReloading[T any](what string, paths []string, interval time.Duration, logger *slog.Logger, load func() (*T, error)) (*reloading[T], error) {
	r := &reloading[T]{what: what, paths: paths, load: load, interval: interval, logger: logger}
	// Stamped before loading, as in check: a change made while loading is
	// then seen as one at the next look, never missed.
	stamps, err := stampFiles(paths)
	if err != nil {
		return nil, err
	}
	v, err := load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(v)
	r.stamps = stamps
	r.next.Store(time.Now().Add(interval).UnixNano())
	return r, nil
}

// get returns the current value, after looking at the files if the interval
// has passed. Callers that arrive while another looks get the value as it
// is, without waiting.
func (r *reloading[T]) get() *T {
	if time.Now().UnixNano() >= r.next.Load() && r.mu.TryLock() {
		r.checkLocked()
		r.mu.Unlock()
	}
	return r.cur.Load()
}

func (r *reloading[T]) checkLocked() {
	now := time.Now()
	if now.UnixNano() < r.next.Load() {
		return // another caller looked since
	}
	r.next.Store(now.Add(r.interval).UnixNano())
	stamps, err := stampFiles(r.paths)
	if err != nil {
		r.failed(err)
		return
	}
	if slices.Equal(stamps, r.stamps) {
		return
	}
	v, err := r.load()
	if err != nil {
		r.failed(err)
		return
	}
	r.cur.Store(v)
	r.stamps, r.lastErr = stamps, ""
	r.logger.Info("reloaded "+r.what, "files", r.paths)
}

// failed logs a failed look once per distinct error: a file left broken is
// looked at every interval.
func (r *reloading[T]) failed(err error) {
	if msg := err.Error(); msg != r.lastErr {
		r.lastErr = msg
		r.logger.Warn("cannot reload "+r.what+", keeping the one loaded before", "err", err)
	}
}
