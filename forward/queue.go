package forward

import (
	"sync"
)

// request is one export request held by the forwarder.
type request struct {
	body  []byte   // the caller's bytes, copied
	enc   Encoding // of body
	spans int
	proto []byte // body as protobuf, for gRPC, once converted from OTLP/JSON
	gz    []byte // body gzipped, for HTTP, once compressed
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

// maxPooledBytes keeps the pool from pinning the buffers of the rare huge
// request.
const maxPooledBytes = 4 << 20

func (r *request) free() {
	if cap(r.body) > maxPooledBytes || cap(r.proto) > maxPooledBytes || cap(r.gz) > maxPooledBytes {
		return
	}
	r.body, r.proto, r.gz = r.body[:0], r.proto[:0], r.gz[:0]
	requestPool.Put(r)
}

// size is what r holds against the queue's bound.
func (r *request) size() int64 { return int64(len(r.body)) }

// queue is a FIFO of requests bounded in bytes: those queued and those taken
// by a sender and not yet done. Its methods are safe for concurrent use.
type queue struct {
	max int64
	// wake holds one token when there may be a request to take: pushes
	// merge into it, and a taker that leaves requests behind puts it back
	// for the next.
	wake chan struct{}

	mu       sync.Mutex
	items    []*request // items[head:] are queued
	head     int
	bytes    int64 // of queued and taken requests
	requests int   // queued and taken
	closed   bool
}

// compactAfter is how many taken slots the queue's slice may hold before
// take moves the queued ones down.
const compactAfter = 1024

func newQueue(maxBytes int64) *queue {
	return &queue{max: maxBytes, wake: make(chan struct{}, 1)}
}

// reserve reserves n bytes for a request about to be pushed and reports
// whether they fit and the queue is open. The caller pushes or unreserves.
func (q *queue) reserve(n int64) (fits, open bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, false
	}
	if q.bytes+n > q.max {
		return false, true
	}
	q.bytes += n
	q.requests++
	return true, true
}

// push queues r, whose bytes are reserved, and reports whether the queue was
// still open; if not, the reservation is undone and the caller keeps r.
func (q *queue) push(r *request) bool {
	q.mu.Lock()
	if q.closed {
		q.bytes -= r.size()
		q.requests--
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, r)
	q.mu.Unlock()
	q.signal()
	return true
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the oldest queued request, or nil if none is. The request
// keeps its bytes until done.
func (q *queue) take() *request {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return nil
	}
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		// Empty: reuse the slice from its start.
		q.items, q.head = q.items[:0], 0
		return r
	}
	if q.head >= compactAfter && 2*q.head >= len(q.items) {
		// A queue that never empties would otherwise grow its slice
		// without bound behind head.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.signal() // another sender may take the next
	return r
}

// done releases the bytes of a taken request.
func (q *queue) done(r *request) {
	q.mu.Lock()
	q.bytes -= r.size()
	q.requests--
	q.mu.Unlock()
}

// close refuses further pushes.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// empty reports whether no request is queued (taken ones may be in flight).
func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.head == len(q.items)
}

// size returns the bytes and requests held: queued and taken.
func (q *queue) size() (bytes int64, requests int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes, q.requests
}
