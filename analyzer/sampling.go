package analyzer

// Probability sampling: the OpenTelemetry threshold a span's W3C tracestate
// carries ("TraceState: Probability Sampling",
// https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/):
// the `ot` entry holds `th:HEX`, a rejection threshold T of 56 bits written
// as 1 to 14 lowercase hex digits with trailing zeros removed, and may hold
// `rv:HEX` (14 digits), the randomness R the decision compared with T. A span
// was kept with probability (2^56-T)/2^56, so it stands for
// 2^56/(2^56-T) spans: its adjusted count, the weight lagscope counts it with.
//
// Without a threshold, or with one that cannot be read (too many digits, not
// lowercase hex, an rv below the threshold, which the specification calls
// inconsistent: the span should not have been kept), the adjusted count is
// unknown and the span counts once, as it would with no sampling at all.

const (
	thresholdDigits = 14      // 56 bits
	maxAdjusted     = 1 << 56 // 2^56
)

// adjustedCount returns the weight of a span whose W3C tracestate is ts: the
// adjusted count of its OpenTelemetry threshold, or 0 when it has none
// (th:0, no threshold, or one that cannot be read), which counts it once. It
// allocates nothing.
func adjustedCount(ts string) float64 {
	ot, ok := otEntry(ts)
	if !ok {
		return 0
	}
	var th, rv string
	for len(ot) > 0 {
		var kv string
		kv, ot = cut(ot, ';')
		switch {
		case len(kv) > 3 && kv[:3] == "th:":
			th = kv[3:]
		case len(kv) > 3 && kv[:3] == "rv:":
			rv = kv[3:]
		}
	}
	t, ok := parseHex56(th, false)
	if !ok || t == 0 {
		return 0
	}
	if rv != "" {
		r, ok := parseHex56(rv, true)
		if !ok || r < t {
			return 0 // inconsistent: unknown adjusted count
		}
	}
	return float64(maxAdjusted) / float64(maxAdjusted-t)
}

// otEntry returns the value of the "ot" list member of a W3C tracestate
// (members separated by commas and optional blanks).
func otEntry(ts string) (string, bool) {
	for len(ts) > 0 {
		var m string
		m, ts = cut(ts, ',')
		m = trimBlanks(m)
		if len(m) > 3 && m[:3] == "ot=" {
			return m[3:], true
		}
	}
	return "", false
}

// parseHex56 parses a threshold (1 to 14 digits, trailing zeros removed, so
// shifted left to 14 digits) or, exact, a randomness value (14 digits).
func parseHex56(s string, exact bool) (uint64, bool) {
	if len(s) == 0 || len(s) > thresholdDigits || (exact && len(s) != thresholdDigits) {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, false // the specification writes lowercase only
		}
		v = v<<4 | uint64(d)
	}
	return v << (4 * (thresholdDigits - len(s))), true
}

func cut(s string, sep byte) (before, after string) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func trimBlanks(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
