package orders

import "sync"

// Wakeups fans a "something was appended" signal out to subscribers, for the
// Subscribe method of Store implementations. Each subscriber has a one-slot
// channel, so wake-ups that arrive while it is busy merge into one and a slow
// subscriber never blocks Notify. The zero value is ready to use and safe for
// concurrent use.
type Wakeups struct {
	mu     sync.Mutex
	subs   map[int]chan struct{}
	nextID int
}

// Subscribe returns a channel that receives after Notify, and a function that
// ends the subscription.
func (w *Wakeups) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[int]chan struct{}{}
	}
	id := w.nextID
	w.nextID++
	w.subs[id] = ch
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs, id)
		w.mu.Unlock()
	}
}

// Notify wakes every subscriber without waiting for any.
func (w *Wakeups) Notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
