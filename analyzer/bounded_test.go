package analyzer

import "testing"

func TestGenMap(t *testing.T) {
	key := func(i int) spanKey {
		var k spanKey
		putUint64(k.trace[:8], uint64(i)+1)
		k.span[0] = byte(i)
		return k
	}
	g := newGenMap[spanKey, int](8) // generations of 4
	if got := g.touch(key(1).hash()); got != 0 {
		t.Errorf("touch of an empty map = %d, want 0", got)
	}
	g.put(spanKey{}, 1)
	if g.len() != 0 {
		t.Fatalf("the zero key was stored: len = %d", g.len())
	}
	for i := range 6 {
		k := key(i)
		g.touch(k.hash())
		if i%2 == 0 {
			g.put(k, i)
		} else {
			g.putHash(k, k.hash(), i)
		}
	}
	// Six inserts into generations of four: the first generation (keys
	// 0-3) is the old one, keys 4 and 5 the current one.
	for i := range 6 {
		got, ok := g.get(key(i))
		if !ok || got != i {
			t.Errorf("get(key %d) = %d, %v; want %d, true", i, got, ok, i)
		}
	}
	g.put(key(1), 10) // the current generation shadows the old one
	if got, _ := g.get(key(1)); got != 10 {
		t.Errorf("get(key 1) after replace = %d, want 10", got)
	}
	for i := 6; i < 8; i++ { // fills the current generation, then rotates
		g.put(key(i), i)
	}
	if _, ok := g.get(key(0)); ok {
		t.Error("key 0 survived two rotations")
	}
	if g.rotations != 2 {
		t.Errorf("rotations = %d, want 2", g.rotations)
	}
	for _, i := range []int{1, 6, 7} {
		if _, ok := g.get(key(i)); !ok {
			t.Errorf("key %d lost", i)
		}
	}
}

// sameHash is a genMap key whose hash is the same for every key: every
// probe meets the same fingerprint and home, so only the key comparison
// tells keys apart.
type sameHash uint64

func (sameHash) hash() uint64 { return 0xabcdef0123456789 }

func TestGenMapFingerprintCollisions(t *testing.T) {
	g := newGenMap[sameHash, int](64)
	for k := sameHash(1); k <= 5; k++ {
		if g.putNew(k, k.hash(), int(k)) {
			t.Errorf("putNew(%d) on a new key reported it held", k)
		}
	}
	if !g.putNew(3, sameHash(3).hash(), 30) {
		t.Error("putNew(3) again did not report it held")
	}
	g.put(4, 40)
	for k, want := range map[sameHash]int{1: 1, 2: 2, 3: 3, 4: 40, 5: 5} {
		if got, ok := g.get(k); !ok || got != want {
			t.Errorf("get(%d) = %d, %v; want %d, true", k, got, ok, want)
		}
	}
	if got, ok := g.get(6); ok {
		t.Errorf("get(6), never put, = %d, true", got)
	}
	if g.len() != 5 {
		t.Errorf("len = %d, want 5", g.len())
	}
}

// TestGenMapBounds: a replace in a full current generation (half of limit,
// at its largest size) does not grow it past max (it doubled it before), and
// both generations at their largest keep their keys apart through two
// rotations.
func TestGenMapBounds(t *testing.T) {
	key := func(i int) spanKey {
		var k spanKey
		putUint64(k.trace[:8], uint64(i)+1)
		return k
	}
	g := newGenMap[spanKey, int](64) // generations of 32, tables of 43
	for i := range 32 {
		if g.putNew(key(i), key(i).hash(), i) {
			t.Fatalf("putNew(key %d) on a new key reported it held", i)
		}
	}
	g.put(key(0), 100)
	if got := len(g.cur.slots); got != g.cur.max {
		t.Errorf("after a replace in a full generation: %d slots, want max %d", got, g.cur.max)
	}
	if got, _ := g.get(key(0)); got != 100 || g.rotations != 0 {
		t.Errorf("get(key 0) = %d with %d rotations, want 100 and 0", got, g.rotations)
	}
	for i := 32; i < 96; i++ { // two rotations: keys 32-63 old, 64-95 current
		g.put(key(i), i)
	}
	if g.rotations != 2 || len(g.old.slots) != g.old.max || len(g.cur.slots) != g.cur.max {
		t.Fatalf("rotations %d, sizes %d and %d; want 2, both %d", g.rotations, len(g.old.slots), len(g.cur.slots), g.cur.max)
	}
	for i := range 96 {
		if _, ok := g.get(key(i)); ok != (i >= 32) {
			t.Errorf("get(key %d) found %v, want %v", i, ok, i >= 32)
		}
	}
	for i := 32; i < 96; i++ {
		if !g.putNew(key(i), key(i).hash(), -1) {
			t.Errorf("putNew(key %d), held, reported it new", i)
		}
	}
	if g.putNew(key(0), key(0).hash(), 0) {
		t.Error("putNew(key 0), forgotten two rotations ago, reported it held")
	}
}

// endHash is a genMap key whose probes all start at the table's last slot
// and whose fingerprints take 4 values: every probe wraps around the end
// and meets matching fingerprints of other keys, cases a well-mixed hash
// seldom reaches.
type endHash uint64

func (k endHash) hash() uint64 { return uint64(k%4)<<57 | 0xffffffff }

// TestGenTableProbeModel checks get, put and putNew against a Go map for
// keys well mixed, probing from the end, and all in one probe run, with
// the generation filled to its bound.
func TestGenTableProbeModel(t *testing.T) {
	t.Run("mixed", func(t *testing.T) { probeModel(t, func(i int) aggKey { return aggKey(i*7919 + 1) }) })
	t.Run("end", func(t *testing.T) { probeModel(t, func(i int) endHash { return endHash(i + 1) }) })
	t.Run("same", func(t *testing.T) { probeModel(t, func(i int) sameHash { return sameHash(i + 1) }) })
}

func probeModel[K hashKey](t *testing.T, key func(int) K) {
	const limit = 2 * 100 // generations of 100: no rotation below
	for _, n := range []int{1, 7, 8, 9, 16, 40, 99, 100} {
		g := newGenMap[K, int](limit)
		model := map[K]int{}
		for i := range n {
			k := key(i)
			if i%3 == 0 {
				if g.putNew(k, k.hash(), i) {
					t.Fatalf("n=%d: putNew of new key %d reported it held", n, i)
				}
			} else {
				g.put(k, i)
			}
			model[k] = i
		}
		for i := 0; i < n; i += 2 { // replace every other
			k := key(i)
			g.put(k, -i)
			model[k] = -i
		}
		if g.rotations != 0 || g.len() != n {
			t.Fatalf("n=%d: %d rotations, len %d", n, g.rotations, g.len())
		}
		for i := range n + 20 {
			k := key(i)
			want, held := model[k]
			got, ok := g.get(k)
			if ok != held || got != want {
				t.Fatalf("n=%d: get(key %d) = %d, %v; want %d, %v", n, i, got, ok, want, held)
			}
			if i < n && !g.putNew(k, k.hash(), 0) {
				t.Fatalf("n=%d: putNew of held key %d reported it new", n, i)
			}
		}
	}
}
