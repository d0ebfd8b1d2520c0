package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/lagscope/lagscope/loadgen"
)

// runLoadgen is `lagscope loadgen`: see package loadgen.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := loadgen.DefaultConfig()
	fs.StringVar(&c.Endpoint, "endpoint", c.Endpoint, "`host:port` of the target's OTLP receiver (gRPC or HTTP, see --protocol)")
	fs.StringVar(&c.Protocol, "protocol", c.Protocol, "OTLP transport: grpc or http (protobuf)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "spans per second to send; 0 sends as fast as the target accepts")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to send")
	fs.IntVar(&c.Workers, "workers", c.Workers, "concurrent export requests")
	fs.IntVar(&c.Batch, "batch", c.Batch, "traces per request (10 spans each)")
	fs.StringVar(&c.MetricsURL, "metrics-url", c.MetricsURL, "`URL` of the target's /metrics; when set, check that it agrees with what was sent")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "how long to wait for the target's metrics to count everything sent")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "timeout of one export request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("loadgen takes no arguments, got %q", fs.Args())
	}
	return loadgen.Run(ctx, c, stdout, stderr)
}
