// Command lagscope measures how long after a command a CQRS read model shows
// it, and whether every appended event reached every projection, from the
// OpenTelemetry traces the system already emits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver of the SQL position source
	_ "modernc.org/sqlite"             // its "sqlite" driver
)

const usage = `Usage: lagscope COMMAND [flags]

Commands:
  serve       receive OTLP traces and export lag and consistency metrics
  demo        run lagscope with the reference order system and a load generator
  analyze     analyse OTLP JSON trace files offline
  loadgen     send synthetic CQRS traces to a lagscope and check its metrics
  dashboards  write the Grafana dashboards
  alerts      write the Prometheus alerting and recording rules
  version     print the version

Run 'lagscope COMMAND -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "lagscope:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "loadgen":
		return runLoadgen(ctx, rest, stdout, stderr)
	case "analyze", "analyse":
		return runAnalyze(ctx, rest, stdout, stderr)
	case "dashboards":
		return runDashboards(rest, stdout, stderr)
	case "alerts":
		return runAlerts(rest, stdout, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := newServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	cfg, err := sf.resolve()
	if err != nil {
		return err
	}
	s, err := NewServer(cfg, newLogger(cfg.Log))
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
