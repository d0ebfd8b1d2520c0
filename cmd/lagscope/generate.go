package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lagscope/lagscope/alerts"
	"github.com/lagscope/lagscope/dashboards"
)

func runDashboards(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dashboards", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", ".", "`directory` to write the Grafana dashboard JSON files into (created if missing)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dashboards takes no arguments, got %q", fs.Args())
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
	fs := flag.NewFlagSet("alerts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "-", "`file` to write the Prometheus rule file to (- for standard output)")
	fs.DurationVar(&cfg.LagThreshold, "lag-threshold", cfg.LagThreshold, "lag above which CQRSProjectionLagHigh fires")
	fs.DurationVar(&cfg.For, "for", cfg.For, "how long the lag must stay above the threshold")
	fs.DurationVar(&cfg.StallFor, "stall-for", cfg.StallFor, "how long a projection may project nothing while events are appended")
	fs.DurationVar(&cfg.UnprojectedFor, "unprojected-for", cfg.UnprojectedFor, "how long unprojected events must keep being counted")
	fs.Float64Var(&cfg.DriftTolerance, "drift-tolerance", cfg.DriftTolerance, "allowed distance of projected/appended from 1")
	fs.DurationVar(&cfg.DriftFor, "drift-for", cfg.DriftFor, "how long the drift must last")
	fs.Float64Var(&cfg.RejectRatio, "reject-ratio", cfg.RejectRatio, "fraction of received spans lagscope may reject")
	fs.DurationVar(&cfg.SelfFor, "self-for", cfg.SelfFor, "how long lagscope's own problems must last")
	fs.DurationVar(&cfg.DownFor, "down-for", cfg.DownFor, "how long lagscope may be unreachable")
	fs.StringVar(&cfg.Job, "job", cfg.Job, "Prometheus scrape job of lagscope")
	fs.StringVar(&cfg.RunbookURL, "runbook-url", cfg.RunbookURL, "address of the runbook")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("alerts takes no arguments, got %q", fs.Args())
	}
	b, err := alerts.Generate(cfg)
	if err != nil {
		return err
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
