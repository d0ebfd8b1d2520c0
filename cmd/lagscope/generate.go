package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/lagscope/lagscope/alerts"
	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/dashboards"
)

func runDashboards(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dashboards", "dashboards [--out DIR]", stdout)
	out := fs.String("out", ".", "`directory` to write the Grafana dashboard JSON files into (created if missing)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: "dashboards", err: fmt.Errorf("dashboards takes no arguments, got %q", fs.Args())}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create dashboards directory: %w", err)
	}
	if err := dashboards.Write(*out); err != nil {
		return err
	}
	all, err := dashboards.All()
	if err != nil {
		return err
	}
	for _, d := range all {
		fmt.Fprintf(stdout, "wrote %s/%s\n", *out, d.FileName)
	}
	return nil
}

func runAlerts(args []string, stdout, stderr io.Writer) error {
	cfg := alerts.DefaultConfig()
	cfg.LagBuckets = slices.Clone(analyzer.LagBuckets)
	fs := newFlagSet("alerts", "alerts [flags]", stdout)
	out := fs.String("out", "-", "`file` to write the Prometheus rule file to (- for standard output)")
	durationVar(fs, &cfg.LagThreshold, "lag-threshold", "lag above which CQRSProjectionLagHigh fires")
	fs.Var((*floatListValue)(&cfg.LagBuckets), "lag-buckets", "lagscope's metrics.lag_buckets (comma-separated `seconds`): warn if --lag-threshold is not one of them")
	durationVar(fs, &cfg.For, "for", "how long the lag must stay above the threshold")
	durationVar(fs, &cfg.StallFor, "stall-for", "how long a projection may project nothing while events are appended")
	durationVar(fs, &cfg.UnprojectedFor, "unprojected-for", "how long unprojected events must keep being counted")
	fs.Float64Var(&cfg.DriftTolerance, "drift-tolerance", cfg.DriftTolerance, "allowed distance of projected/appended from 1")
	durationVar(fs, &cfg.DriftFor, "drift-for", "how long the drift must last")
	fs.Float64Var(&cfg.RejectRatio, "reject-ratio", cfg.RejectRatio, "fraction of received spans lagscope may reject")
	durationVar(fs, &cfg.SelfFor, "self-for", "how long lagscope's own problems must last")
	durationVar(fs, &cfg.DownFor, "down-for", "how long lagscope may be unreachable")
	fs.StringVar(&cfg.Job, "job", cfg.Job, "Prometheus scrape job of lagscope")
	fs.StringVar(&cfg.RunbookURL, "runbook-url", cfg.RunbookURL, "address of the runbook")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: "alerts", err: fmt.Errorf("alerts takes no arguments, got %q", fs.Args())}
	}
	b, err := alerts.Generate(cfg)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if *out == "-" {
		_, err := stdout.Write(b)
		return err
	}
	if *out == "" {
		return errors.New("--out must name a file or -")
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return fmt.Errorf("write rule file: %w", err)
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	return nil
}
