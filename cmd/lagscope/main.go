// Command lagscope measures how long after a command a CQRS read model shows
// it, and whether every appended event reached every projection, from the
// OpenTelemetry traces the system already emits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/lagscope/lagscope/configfile"
	"github.com/lagscope/lagscope/server"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver of the SQL position source
	_ "modernc.org/sqlite"             // its "sqlite" driver
)

const usage = `Usage: lagscope COMMAND [flags]

Commands:
  serve       receive OTLP traces and export lag and consistency metrics
  demo        run lagscope with the reference order system and a load generator
  analyze     analyse OTLP trace files offline
  explain     say, span by span, what lagscope makes of trace files
  loadgen     send synthetic CQRS traces to a lagscope and check its metrics
  dashboards  write the Grafana dashboards
  alerts      write the Prometheus alerting and recording rules
  version     print the version

Run 'lagscope COMMAND --help' for a command's flags.
`

// commands are the subcommands, for suggestions.
var commands = []string{"serve", "demo", "analyze", "explain", "loadgen", "dashboards", "alerts", "version", "help"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err (once) and returns the process's exit status: 0 for
// success and --help, 2 for a command line that cannot be parsed, 1 for
// anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "lagscope:", err)
	if _, ok := errors.AsType[*usageError](err); ok {
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &usageError{err: errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "loadgen":
		return runLoadgen(ctx, rest, stdout, stderr)
	case "explain":
		return runExplain(ctx, rest, stdout, stderr)
	case "analyze", "analyse":
		return runAnalyze(ctx, rest, stdout, stderr)
	case "dashboards":
		return runDashboards(rest, stdout, stderr)
	case "alerts":
		return runAlerts(rest, stdout, stderr)
	case "version", "--version", "-version":
		server.PrintVersion(stdout)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	e := &usageError{cmd: "", err: fmt.Errorf("unknown command %q", cmd)}
	if near := configfile.Suggest(cmd, commands); near != "" {
		e.hint = "Did you mean 'lagscope " + near + "'?"
	}
	return e
}

func runServe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("serve", "serve [flags]", stdout)
	sf := newServeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: "serve", err: fmt.Errorf("serve takes no arguments, got %q", fs.Args())}
	}
	cfg, err := sf.resolve()
	if err != nil {
		return err
	}
	defer setMemoryLimit(cfg.MemoryLimit)()
	s, err := NewServer(cfg, newLogger(cfg.Log))
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// setMemoryLimit sets the runtime's soft memory limit to limit (memory_limit)
// unless it is 0 or GOMEMLIMIT is set, and returns what restores the one
// before: tests run serve in their own process.
func setMemoryLimit(limit int64) (restore func()) {
	if limit <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(limit)
	return func() { debug.SetMemoryLimit(prev) }
}
