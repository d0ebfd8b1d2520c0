package analyzer

import (
	"math"
	"testing"
)

// TestAdjustedCount reads the thresholds of the OpenTelemetry specification
// ("TraceState: Probability Sampling") and what it calls unusable.
func TestAdjustedCount(t *testing.T) {
	tests := []struct {
		name, ts string
		want     float64
	}{
		{"none", "", 0},
		{"other vendor", "congo=t61rcWkgMzE", 0},
		{"th:0 keeps all", "ot=th:0", 0},
		{"half", "ot=th:8", 2},
		{"quarter", "ot=th:c", 4},
		{"1/16", "ot=th:f", 16},
		{"1/64", "ot=th:fc", 64},
		{"three quarters", "ot=th:4", 4.0 / 3},
		{"trailing zeros written", "ot=th:80000000000000", 2},
		{"smallest probability", "ot=th:ffffffffffffff", 1 << 56},
		{"among others", "congo=t61rcWkgMzE, ot=rv:e8233f7e3a1516;th:c, rojo=00f067aa0ba902b7", 4},
		{"other ot keys", "ot=p:8;th:8;k1:13", 2},
		{"rv at the threshold is kept", "ot=th:8;rv:80000000000000", 2},
		{"rv below: inconsistent", "ot=th:8;rv:7fffffffffffff", 0},
		{"rv not 14 digits", "ot=th:8;rv:8", 0},
		{"15 digits", "ot=th:800000000000000", 0},
		{"uppercase", "ot=th:C", 0},
		{"not hex", "ot=th:g", 0},
		{"empty th", "ot=th:", 0},
		{"no th", "ot=rv:9b8233f7e3a151", 0},
		{"key is not ot", "xot=th:8", 0},
		{"garbage", ",,;;=:ot=th:8", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := adjustedCount(tt.ts); got != tt.want {
				t.Errorf("adjustedCount(%q) = %v, want %v", tt.ts, got, tt.want)
			}
		})
	}
}

// TestFactWeight: a fact counts with its weight, once when it has none,
// and once for a value no adjusted count can be (hostile wire input).
func TestFactWeight(t *testing.T) {
	for _, tt := range []struct{ w, want float64 }{
		{0, 1}, {1, 1}, {2, 2}, {4.0 / 3, 4.0 / 3}, {0.5, 1}, {-3, 1}, {math.NaN(), 1}, {math.Inf(1), 1},
	} {
		f := Fact{Weight: tt.w}
		if got := f.weight(); got != tt.want {
			t.Errorf("Fact{Weight: %v}.weight() = %v, want %v", tt.w, got, tt.want)
		}
	}
}

func BenchmarkAdjustedCount(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		adjustedCount("congo=t61rcWkgMzE,ot=rv:e8233f7e3a1516;th:c")
	}
}

// FuzzAdjustedCount: any tracestate gives no weight or an adjusted count.
func FuzzAdjustedCount(f *testing.F) {
	for _, s := range []string{"ot=th:8", "ot=th:c;rv:e8233f7e3a1516", "a=b,ot=th:ffffffffffffff", "ot=th:", ",,ot=th:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ts string) {
		if w := adjustedCount(ts); w != 0 && !(w >= 1 && w <= maxAdjusted) {
			t.Fatalf("adjustedCount(%q) = %v, not an adjusted count", ts, w)
		}
	})
}
