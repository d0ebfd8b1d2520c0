package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/tracefile"
)

// analyzeInput counts what was read.
type analyzeInput struct {
	Files    int `json:"files"`
	Requests int `json:"requests"`
	Spans    int `json:"spans"`
}

// analyzeReport is the output of `lagscope analyze --format json`.
type analyzeReport struct {
	// File is the file analysed, with --per-file.
	File  string       `json:"file,omitempty"`
	Input analyzeInput `json:"input"`
	analyzer.Summary
}

const analyzeSynopsis = `analyze [--format text|json] [--per-file] [--expect TYPE=PROJECTION,...] FILE...

Analyses OTLP trace files offline, as the OpenTelemetry Collector's file
exporter writes them: OTLP JSON (one request per line, or whole documents) or
length-delimited protobuf (format: proto), plain, gzip or zstd (as a whole or
per message); the format is recognised from the content. - reads standard
input. Every pending event is evaluated at the end. A last line cut short (a
file still being written) is reported and skipped.
`

func runAnalyze(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("analyze", analyzeSynopsis, stdout)
	format := fs.String("format", "text", "output format: text or json")
	perFile := fs.Bool("per-file", false, "analyse each file on its own, one report each")
	var expected expectedFlag
	fs.Var(&expected, "expect", "`type=projection[,projection]` an event type must be shown by (repeatable; type * for all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &usageError{cmd: "analyze", err: fmt.Errorf("--format must be text or json, got %q", *format)}
	}
	if fs.NArg() == 0 {
		return &usageError{cmd: "analyze", err: errors.New("analyze needs at least one file")}
	}
	groups := [][]string{fs.Args()}
	if *perFile {
		groups = nil
		for _, f := range fs.Args() {
			groups = append(groups, []string{f})
		}
	}
	var reps []analyzeReport
	for _, files := range groups {
		rep, err := analyzeFiles(ctx, files, expected.m, stderr)
		if err != nil {
			return err
		}
		if *perFile {
			rep.File = files[0]
		}
		reps = append(reps, rep)
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if *perFile {
			return enc.Encode(reps)
		}
		return enc.Encode(reps[0])
	}
	for i, rep := range reps {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if rep.File != "" {
			fmt.Fprintf(stdout, "== %s ==\n", rep.File)
		}
		if err := writeAnalyzeText(stdout, rep); err != nil {
			return err
		}
	}
	return nil
}

// analyzeFiles analyses files together, in one analyzer.
func analyzeFiles(ctx context.Context, files []string, expected map[string][]string, stderr io.Writer) (analyzeReport, error) {
	cfg := analyzer.DefaultConfig()
	cfg.KeepSamples = true
	cfg.Join.Expected = expected
	cfg.Join.MaxPendingEvents = 1 << 24 // offline: nothing is evicted for room short of this
	a, err := analyzer.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		return analyzeReport{}, err
	}
	var in analyzeInput
	for _, name := range files {
		if err := analyzeFile(ctx, a, name, &in, stderr); err != nil {
			return analyzeReport{}, err
		}
		in.Files++
	}
	a.Flush()
	return analyzeReport{Input: in, Summary: a.Summary()}, nil
}

// analyzeFile feeds every request of a trace file to the analyzer. A
// truncated last document is reported on stderr and skipped; any other
// problem is an error that names the file and the place.
func analyzeFile(ctx context.Context, a *analyzer.Analyzer, name string, in *analyzeInput, stderr io.Writer) error {
	r, err := tracefile.Open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		td, err := r.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, tracefile.ErrTruncated):
			fmt.Fprintf(stderr, "lagscope analyze: %s: %v\n", name, err)
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", name, err)
		}
		in.Requests++
		in.Spans += td.SpanCount()
		if err := a.ConsumeTraces(ctx, td); err != nil {
			return fmt.Errorf("analyse %s: %w", name, err)
		}
	}
}

func writeAnalyzeText(w io.Writer, rep analyzeReport) error {
	s := rep.Summary
	fmt.Fprintf(w, "Read %d file(s), %d request(s), %d span(s): %d command, %d append, %d project, %d query, %d ignored.\n",
		rep.Input.Files, rep.Input.Requests, rep.Input.Spans, s.Spans.Command, s.Spans.Append, s.Spans.Project, s.Spans.Query, s.Spans.Ignored)
	var types []string
	for _, t := range s.EventTypes {
		types = append(types, fmt.Sprintf("%s %d", t.Name, t.Appended))
	}
	if len(types) == 0 {
		types = []string{"none"}
	}
	fmt.Fprintf(w, "Events appended: %s.\n", strings.Join(types, ", "))
	if q := s.Queries; q.Fresh+q.Stale+q.Unknown > 0 {
		fmt.Fprintf(w, "Queries: %d fresh, %d stale, %d unknown.\n", q.Fresh, q.Stale, q.Unknown)
	}
	fmt.Fprintln(w)
	if len(s.Projections) == 0 {
		fmt.Fprintln(w, "No projection spans found.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tAPPENDED\tPROJECTED\tUNPROJECTED\tDUPLICATED\tOUT_OF_ORDER\tLATE\tSKEW\tLAG_P50\tLAG_P95\tLAG_P99\tLAG_MAX")
	for _, p := range s.Projections {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", p.Name, p.Expected, p.Projected, p.Unprojected,
			p.Duplicated, p.OutOfOrder, p.Late, p.ClockSkew, dur(p.Lag.P50), dur(p.Lag.P95), dur(p.Lag.P99), dur(p.Lag.Max))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range s.Projections {
		if len(p.UnprojectedIDs) > 0 {
			fmt.Fprintf(w, "\nUnprojected by %s (%d): %s\n", p.Name, len(p.UnprojectedIDs), strings.Join(p.UnprojectedIDs, " "))
		}
	}
	return nil
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Microsecond).String()
}

// expectedFlag collects --expect type=projection,projection.
type expectedFlag struct{ m map[string][]string }

func (e *expectedFlag) String() string { return "" }

func (e *expectedFlag) Set(v string) error {
	typ, ps, ok := strings.Cut(v, "=")
	if !ok || typ == "" || ps == "" {
		return fmt.Errorf("want type=projection[,projection], got %q", v)
	}
	if e.m == nil {
		e.m = map[string][]string{}
	}
	e.m[typ] = append(e.m[typ], strings.Split(ps, ",")...)
	return nil
}
