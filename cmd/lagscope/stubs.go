package main

import (
	"context"
	"errors"
	"io"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("demo: not built yet")
}

func runDashboards(args []string, stdout, stderr io.Writer) error {
	return errors.New("dashboards: not built yet")
}

func runAlerts(args []string, stdout, stderr io.Writer) error {
	return errors.New("alerts: not built yet")
}
