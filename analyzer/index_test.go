package analyzer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestEventIndexMatchesMap drives the index and a Go map with the same
// random appends and retirements, and checks that they always agree: with
// no limit (a power-of-two table at most half full) and with one (a table
// of limit*4/3 slots, not a power of two, filled to 3/4).
func TestEventIndexMatchesMap(t *testing.T) {
	for _, limit := range []int{0, 5000} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) { testEventIndexMatchesMap(t, limit) })
	}
}

func testEventIndexMatchesMap(t *testing.T, limit int) {
	var events deque[eventEntry]
	x := eventIndex[eventEntry, *eventEntry]{limit: limit}
	want := map[EventKey]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	key := func(n uint64) EventKey {
		var k EventKey
		putUint64(k[:8], n%97) // many equal halves, to exercise collisions of parts
		putUint64(k[8:], n)
		return k
	}
	var next uint64
	for step := range 200000 {
		if events.len() > 0 && (rng.IntN(3) == 0 || events.len() >= 5000) {
			seq := events.head
			k := events.front().key
			x.remove(k, seq)
			delete(want, k)
			events.popFront()
		} else {
			k := key(next)
			next++
			seq := events.push(eventEntry{key: k})
			x.insert(k, seq)
			want[k] = seq
		}
		if step%997 == 0 {
			if x.len() != len(want) {
				t.Fatalf("step %d: len = %d, want %d", step, x.len(), len(want))
			}
			for k, seq := range want {
				if got, ok := x.find(k, &events); !ok || got != seq {
					t.Fatalf("step %d: find(%x) = %d, %v; want %d", step, k, got, ok, seq)
				}
			}
			if _, ok := x.find(key(next+1), &events); ok {
				t.Fatalf("step %d: found a key never inserted", step)
			}
		}
	}
	if limit > 0 && len(x.slots) != (limit*4+2)/3 {
		t.Errorf("table of %d slots for a limit of %d, want %d", len(x.slots), limit, (limit*4+2)/3)
	}
}
