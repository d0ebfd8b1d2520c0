package projection

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParseFaults parses a projection's fault knobs written as
//
//	NAME:key=value,key=value...
//
// with keys delay (a duration, or MIN..MAX for a random delay), drop and
// duplicate (probabilities 0..1), stall-after and stall-for (durations), e.g.
// "orders_view:delay=20ms..200ms,drop=0.05" or
// "sales_summary:stall-after=30s,stall-for=15s".
func ParseFaults(spec string) (string, Faults, error) {
	name, kvs, ok := strings.Cut(spec, ":")
	if !ok || !slices.Contains(Names, name) {
		return "", Faults{}, fmt.Errorf("faults %q: want NAME:key=value,... with NAME one of %s", spec, strings.Join(Names, ", "))
	}
	var f Faults
	for _, kv := range strings.Split(kvs, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", Faults{}, fmt.Errorf("faults %q: %q is not key=value", spec, kv)
		}
		var err error
		switch k {
		case "delay":
			lo, hi, isRange := strings.Cut(v, "..")
			if f.Delay, err = time.ParseDuration(lo); err == nil && isRange {
				f.DelayMax, err = time.ParseDuration(hi)
			}
		case "drop":
			f.DropRate, err = strconv.ParseFloat(v, 64)
		case "duplicate":
			f.DuplicateRate, err = strconv.ParseFloat(v, 64)
		case "stall-after":
			f.StallAfter, err = time.ParseDuration(v)
		case "stall-for":
			f.StallFor, err = time.ParseDuration(v)
		default:
			return "", Faults{}, fmt.Errorf("faults %q: unknown key %q (want delay, drop, duplicate, stall-after, stall-for)", spec, k)
		}
		if err != nil {
			return "", Faults{}, fmt.Errorf("faults %q: %s: %w", spec, k, err)
		}
	}
	if err := f.Validate(); err != nil {
		return "", Faults{}, fmt.Errorf("faults %q: %w", spec, err)
	}
	return name, f, nil
}
