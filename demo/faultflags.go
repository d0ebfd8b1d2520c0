package demo

import (
	"flag"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lagscope/lagscope/orders/projection"
)

// FaultFlags are the demo's fault knobs as command-line flags, each
// "[PROJECTION=]VALUE[,...]": a value without a projection applies to every
// projection. Register them on a FlagSet, then read them with Faults.
type FaultFlags struct {
	delay, drop, dup, stall perProjection
}

// Register defines --projector-delay, --drop-rate, --duplicate-rate and
// --stall on fs.
func (f *FaultFlags) Register(fs *flag.FlagSet) {
	f.delay.name, f.drop.name, f.dup.name, f.stall.name = "projector-delay", "drop-rate", "duplicate-rate", "stall"
	fs.Var(&f.delay, f.delay.name, "`[PROJECTION=]D` or D1..D2 (random) delay inside every projection span, e.g. 6s or sales_summary=1s..8s")
	fs.Var(&f.drop, f.drop.name, "`[PROJECTION=]P` probability that a projector skips an event")
	fs.Var(&f.dup, f.dup.name, "`[PROJECTION=]P` probability that a projector processes an event twice")
	fs.Var(&f.stall, f.stall.name, "`[PROJECTION=][AFTER+]FOR` a projector stops for FOR, AFTER (default 10s) after start, e.g. sales_summary=20s+30s")
}

// FlagError is a bad value of a demo flag, naming it.
type FlagError struct {
	Flag string
	Err  error
}

func (e *FlagError) Error() string { return "--" + e.Flag + ": " + e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// Faults returns base with the faults the flags set, for each of
// projections, validated; the error of a bad value is a *FlagError.
func (f *FaultFlags) Faults(projections []string, base map[string]projection.Faults) (map[string]projection.Faults, error) {
	faults := map[string]projection.Faults{}
	for proj, fl := range base {
		faults[proj] = fl
	}
	set := func(p *perProjection, apply func(*projection.Faults, string) error) error {
		return p.each(projections, func(proj, v string) error {
			fl := faults[proj]
			if err := apply(&fl, v); err != nil {
				return err
			}
			faults[proj] = fl
			return nil
		})
	}
	for _, err := range []error{
		set(&f.delay, func(fl *projection.Faults, v string) (err error) {
			lo, hi, isRange := strings.Cut(v, "..")
			if fl.Delay, err = parseDuration(lo); err != nil || !isRange {
				return err
			}
			if fl.DelayMax, err = parseDuration(hi); err != nil {
				return err
			}
			if fl.DelayMax < fl.Delay {
				// Faults would take it for a fixed delay of lo.
				return fmt.Errorf("range %s ends before it starts (want MIN..MAX)", v)
			}
			return nil
		}),
		set(&f.drop, func(fl *projection.Faults, v string) (err error) {
			fl.DropRate, err = strconv.ParseFloat(v, 64)
			return err
		}),
		set(&f.dup, func(fl *projection.Faults, v string) (err error) {
			fl.DuplicateRate, err = strconv.ParseFloat(v, 64)
			return err
		}),
		set(&f.stall, func(fl *projection.Faults, v string) (err error) {
			after, forS, ok := strings.Cut(v, "+")
			if !ok {
				after, forS = "10s", v
			}
			if fl.StallAfter, err = parseDuration(after); err != nil {
				return err
			}
			fl.StallFor, err = parseDuration(forS)
			return err
		}),
	} {
		if err != nil {
			return nil, err // the first: each names its flag
		}
	}
	for _, proj := range projections {
		if err := faults[proj].Validate(); err != nil {
			return nil, fmt.Errorf("faults of %s: %w", proj, err)
		}
	}
	return faults, nil
}

// parseDuration parses s, saying what a duration looks like when it is not.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, e := time.ParseDuration(s + "s"); e == nil {
			return 0, fmt.Errorf("%q: a duration needs a unit, e.g. %ss", s, s)
		}
		return 0, fmt.Errorf("%q: not a duration (e.g. 30s, 1m30s, 500ms)", s)
	}
	return d, nil
}

// perProjection is a flag value "[PROJECTION=]VALUE[,...]".
type perProjection struct {
	name   string
	values map[string]string // "" = every projection
}

func (p *perProjection) String() string {
	var parts []string
	for k, v := range p.values {
		if k == "" {
			parts = append(parts, v)
		} else {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (p *perProjection) Set(s string) error {
	if p.values == nil {
		p.values = map[string]string{}
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			k, v = "", part
		}
		if v == "" {
			return fmt.Errorf("empty value in %q", s)
		}
		p.values[k] = v
	}
	return nil
}

// each calls f for every projection with its value.
func (p *perProjection) each(projections []string, f func(projection, value string) error) error {
	for k := range p.values {
		if k != "" && !slices.Contains(projections, k) {
			return &FlagError{Flag: p.name, Err: fmt.Errorf("unknown projection %q (have %s)", k, strings.Join(projections, ", "))}
		}
	}
	for _, proj := range projections {
		v, ok := p.values[proj]
		if !ok {
			v, ok = p.values[""]
		}
		if !ok {
			continue
		}
		if err := f(proj, v); err != nil {
			return &FlagError{Flag: p.name, Err: fmt.Errorf("%s: %w", proj, err)}
		}
	}
	return nil
}
