package main

import (
	"context"
	"fmt"
	"io"

	"github.com/lagscope/lagscope/loadgen"
)

// runLoadgen is `lagscope loadgen`: see package loadgen.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("loadgen", "loadgen [flags]", stdout)
	c := loadgen.DefaultConfig()
	fs.StringVar(&c.Endpoint, "endpoint", c.Endpoint, "`host:port` of the target's OTLP receiver (gRPC or HTTP, see --protocol)")
	fs.StringVar(&c.Protocol, "protocol", c.Protocol, "OTLP transport: grpc or http (protobuf)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "spans per second to send; 0 sends as fast as the target accepts")
	durationVar(fs, &c.Duration, "duration", "how long to send")
	fs.IntVar(&c.Workers, "workers", c.Workers, "concurrent export requests")
	fs.IntVar(&c.Batch, "batch", c.Batch, "traces per request (10 spans each)")
	fs.StringVar(&c.MetricsURL, "metrics-url", c.MetricsURL, "`URL` of the target's /metrics; when set, check that it agrees with what was sent")
	durationVar(fs, &c.Settle, "settle", "how long to wait for the target's metrics to count everything sent")
	durationVar(fs, &c.Timeout, "timeout", "timeout of one export request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: "loadgen", err: fmt.Errorf("loadgen takes no arguments, got %q", fs.Args())}
	}
	return loadgen.Run(ctx, c, stdout, stderr)
}
