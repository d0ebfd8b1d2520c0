package orders

import (
	"testing"
	"time"
)

func TestWakeups(t *testing.T) {
	var w Wakeups
	a, stopA := w.Subscribe()
	b, stopB := w.Subscribe()
	w.Notify()
	w.Notify() // merges with the first: one slot per subscriber
	for name, ch := range map[string]<-chan struct{}{"a": a, "b": b} {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatalf("%s was not woken", name)
		}
		select {
		case <-ch:
			t.Fatalf("%s woken twice for merged notifications", name)
		default:
		}
	}
	stopA()
	w.Notify()
	select {
	case <-a:
		t.Fatal("an ended subscription was woken")
	default:
	}
	select {
	case <-b:
	case <-time.After(time.Second):
		t.Fatal("b was not woken after a left")
	}
	stopB()
}
