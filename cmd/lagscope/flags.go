package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lagscope/lagscope/configfile"
)

// errHelp is returned when --help was asked for and printed: exit 0.
var errHelp = errors.New("help requested")

// usageError is a command line that cannot be parsed: main prints it once,
// with its hint, and exits 2.
type usageError struct {
	cmd  string
	err  error
	hint string
}

func (e *usageError) Error() string {
	msg := e.err.Error()
	if e.hint != "" {
		msg += "\n" + e.hint
	}
	if e.cmd == "" {
		return msg + "\nRun 'lagscope --help' for the commands."
	}
	return msg + "\nRun 'lagscope " + e.cmd + " --help' for its flags."
}

func (e *usageError) Unwrap() error { return e.err }

// newFlagSet returns a FlagSet for subcommand cmd whose --help prints the
// synopsis and the flags to stdout; parse errors are left to parseFlags.
func newFlagSet(cmd, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: lagscope %s\n", synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args with fs (made by newFlagSet). It returns errHelp
// after printing the usage for --help, and a *usageError that names the flag
// and suggests a fix for anything else: an unknown flag gets the nearest
// known one, a bad value what a good one looks like.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := checkFlagNames(fs, args); err != nil {
		return err
	}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return errHelp // Parse printed the usage
	}
	return &usageError{cmd: fs.Name(), err: err}
}

// checkFlagNames finds the first flag in args that fs does not define, and
// returns a usageError suggesting the nearest defined one.
func checkFlagNames(fs *flag.FlagSet, args []string) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return nil // the flags end here
		}
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		if name == "h" || name == "help" {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			e := &usageError{cmd: fs.Name(), err: fmt.Errorf("unknown flag --%s", name)}
			if near := nearestFlag(fs, name); near != "" {
				e.hint = "Did you mean --" + near + "?"
			}
			return e
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if !hasValue {
			i++ // the value is the next argument
		}
	}
	return nil
}

// nearestFlag returns the flag of fs closest to name, if close enough to be
// a typo of it (underscores for dashes included).
func nearestFlag(fs *flag.FlagSet, name string) string {
	var known []string
	fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
	return configfile.Suggest(strings.ReplaceAll(name, "_", "-"), known)
}

// durationValue is a time.Duration flag whose error says what a duration
// looks like ("5" -> a duration needs a unit, e.g. 5s).
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, e := time.ParseDuration(s + "s"); e == nil {
			return fmt.Errorf("a duration needs a unit, e.g. %ss", s)
		}
		return errors.New("not a duration (e.g. 30s, 1m30s, 500ms)")
	}
	*d = durationValue(v)
	return nil
}

// durationVar defines a duration flag bound to p, defaulting to *p. Its
// help names the value a `duration` (flag's own would say "value").
func durationVar(fs *flag.FlagSet, p *time.Duration, name, usage string) {
	if !strings.Contains(usage, "`") {
		usage += " (a `duration`, e.g. 30s)"
	}
	fs.Var((*durationValue)(p), name, usage)
}
