// Command orders runs lagscope's reference CQRS order system and its load
// generator.
//
//	orders serve --role all|command|projector|query --store sqlite:PATH|postgres://... --listen ADDR \
//	    [--bus store|kafka --kafka.brokers HOST:PORT,... --kafka.topic orders.events \
//	     --kafka.tls.ca-file FILE --kafka.sasl.mechanism SCRAM-SHA-512 --kafka.sasl.username U --kafka.sasl.password-file FILE] \
//	    [--otlp-endpoint HOST:PORT --otlp-protocol grpc|http] [--fault NAME:key=value,...]
//	orders load --url http://ADDR [--rate 50 --duration 1m --count N --concurrency 4]
//
// Run "orders serve -h" or "orders load -h" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/lagscope/lagscope/orders/app"
	"github.com/lagscope/lagscope/orders/kafka"
	"github.com/lagscope/lagscope/orders/load"
	"github.com/lagscope/lagscope/orders/projection"
	"github.com/lagscope/lagscope/orders/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage: orders serve [flags]   run the order system (see orders serve -h)
       orders load [flags]    send load to it (see orders load -h)
`

// run runs one subcommand until it finishes or ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "load":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "orders: unknown command %q\n%s", args[0], usage)
	return errUsage
}

// faultFlags collects repeated --fault values.
type faultFlags map[string]projection.Faults

func (f faultFlags) String() string { return "" }

func (f faultFlags) Set(s string) error {
	name, faults, err := projection.ParseFaults(s)
	if err != nil {
		return err
	}
	f[name] = faults
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	return nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := app.DefaultConfig()
	faults := faultFlags{}
	var role, bus, brokers string
	fs := flag.NewFlagSet("orders serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&role, "role", string(cfg.Role), "what this process does: all, command, projector or query")
	fs.StringVar(&cfg.Store, "store", cfg.Store, "event store: sqlite:PATH (shared by local processes), sqlite::memory:, or postgres://USER@HOST:5432/DB?search_path=SCHEMA (shared by processes anywhere)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, `HTTP address; "" serves no HTTP (projector role only)`)
	fs.StringVar(&cfg.OTLP.Endpoint, "otlp-endpoint", "", "OTLP endpoint for spans (host:port or URL); empty exports nothing")
	fs.StringVar(&cfg.OTLP.Protocol, "otlp-protocol", telemetry.ProtocolGRPC, "OTLP protocol: grpc or http")
	fs.StringVar(&cfg.OTLP.ServiceName, "service-name", "", "service.name of the spans (default orders, or orders-<role>)")
	fs.DurationVar(&cfg.Projection.PollInterval, "poll-interval", cfg.Projection.PollInterval, "how often projectors poll the store for appends by other processes (PostgreSQL also wakes them by NOTIFY)")
	fs.Var(faults, "fault", "projection fault knobs, repeatable: NAME:key=value,... with keys delay (D or MIN..MAX), drop, duplicate, stall-after, stall-for; e.g. orders_view:delay=20ms..200ms,drop=0.05")
	fs.Uint64Var(&cfg.Projection.Seed, "fault-seed", 0, "seed of the fault dice (0: random)")
	fs.StringVar(&bus, "bus", string(app.BusStore), "how events reach the projectors: store (they read the store) or kafka (the command side's outbox relay publishes them to --kafka.topic; each projection consumes it with a consumer group named after it)")
	fs.StringVar(&brokers, "kafka.brokers", "", "Kafka bootstrap brokers of --bus kafka, host:port,...")
	fs.StringVar(&cfg.Kafka.Topic, "kafka.topic", cfg.Kafka.Topic, "topic of the events with --bus kafka (created with one partition if missing)")
	kt, ks := &cfg.Kafka.TLS, &cfg.Kafka.SASL
	fs.BoolVar(&kt.Enabled, "kafka.tls.enabled", false, "connect to the Kafka brokers over TLS (also on when any other --kafka.tls.* is set)")
	fs.StringVar(&kt.CAFile, "kafka.tls.ca-file", "", "CA file (PEM) to verify the brokers with (default: the system's roots)")
	fs.StringVar(&kt.CertFile, "kafka.tls.cert-file", "", "client certificate file (PEM) for brokers that want one (mTLS)")
	fs.StringVar(&kt.KeyFile, "kafka.tls.key-file", "", "its private key file")
	fs.StringVar(&kt.ServerName, "kafka.tls.server-name", "", "name to verify in the brokers' certificates, if not each broker's host")
	fs.BoolVar(&kt.InsecureSkipVerify, "kafka.tls.insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&ks.Mechanism, "kafka.sasl.mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&ks.Username, "kafka.sasl.username", "", "SASL user")
	fs.StringVar(&ks.PasswordFile, "kafka.sasl.password-file", "", "file holding the SASL password (read at each new connection)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.Role, cfg.Bus = app.Role(role), app.Bus(bus)
	cfg.Kafka.Brokers = kafka.ParseBrokers(brokers)
	if len(faults) > 0 {
		cfg.Projection.Faults = faults
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := load.DefaultConfig()
	var (
		mix        string
		noProgress bool
		otlp       telemetry.Config
	)
	fs := flag.NewFlagSet("orders load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.BaseURL, "url", "http://127.0.0.1:8080", "base URL of the command API")
	fs.StringVar(&cfg.QueryURL, "query-url", "", "base URL of the query API for reads after writes (default --url)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "target commands per second; 0 sends as fast as --concurrency workers go")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (0: no limit)")
	fs.Int64Var(&cfg.Count, "count", 0, "stop after this many commands (0: no limit)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "workers, which bounds requests in flight")
	fs.StringVar(&mix, "mix", "create=4,pay=3,ship=2,cancel=1", "command weights")
	fs.Float64Var(&cfg.ReadAfterWrite, "read-after-write", cfg.ReadAfterWrite, "probability of reading an order after a command on it")
	fs.IntVar(&cfg.Customers, "customers", cfg.Customers, "number of customer ids")
	fs.BoolVar(&noProgress, "no-progress", false, "do not draw a progress bar on stderr")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the choices (0: random)")
	fs.StringVar(&otlp.Endpoint, "otlp-endpoint", "", "OTLP endpoint for client spans; empty: no client spans (server spans then start the traces)")
	fs.StringVar(&otlp.Protocol, "otlp-protocol", telemetry.ProtocolGRPC, "OTLP protocol: grpc or http")
	fs.StringVar(&otlp.ServiceName, "service-name", "orders-load", "service.name of the client spans")
	if err := parse(fs, args); err != nil {
		return err
	}
	var err error
	if cfg.Mix, err = parseMix(mix); err != nil {
		return err
	}
	cfg.NoReads = cfg.ReadAfterWrite == 0
	if cfg.Rate == 0 {
		cfg.NoRateLimit = true // as `lagscope loadgen --rate=0`
	}
	if !noProgress {
		cfg.Progress = stderr
	}
	if err := telemetry.UsePropagatorsFromEnv(); err != nil {
		return err
	}
	if otlp.Endpoint != "" {
		tp, err := telemetry.NewTracerProvider(ctx, otlp)
		if err != nil {
			return err
		}
		defer func() { _ = tp.Shutdown(context.WithoutCancel(ctx)) }()
		cfg.TracerProvider = tp
	}
	g, err := load.New(cfg)
	if err != nil {
		return err
	}
	sum, err := g.Run(ctx)
	if err != nil {
		return err
	}
	_, err = sum.WriteTo(stdout)
	return err
}

func parseMix(s string) (load.Mix, error) {
	var m load.Mix
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		w, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return m, fmt.Errorf("mix %q: want create=W,pay=W,ship=W,cancel=W", s)
		}
		switch k {
		case "create":
			m.Create = w
		case "pay":
			m.Pay = w
		case "ship":
			m.Ship = w
		case "cancel":
			m.Cancel = w
		default:
			return m, fmt.Errorf("mix %q: unknown command %q", s, k)
		}
	}
	return m, nil
}
