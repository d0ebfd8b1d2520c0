package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
)

// analyzeInput counts what was read.
type analyzeInput struct {
	Files    int `json:"files"`
	Requests int `json:"requests"`
	Spans    int `json:"spans"`
}

// analyzeReport is the output of `lagscope analyze --format json`.
type analyzeReport struct {
	Input analyzeInput `json:"input"`
	analyzer.Summary
}

func runAnalyze(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("analyze", "analyze [--format text|json] FILE...", stdout)
	format := fs.String("format", "text", "output format: text or json")
	var expected expectedFlag
	fs.Var(&expected, "expect", "`type=projection[,projection]` an event type must be shown by (repeatable; type * for all)")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "Usage: lagscope analyze [--format text|json] FILE...")
		fmt.Fprintln(stdout, "Analyses OTLP JSON traces offline: one ExportTraceServiceRequest or TracesData per line")
		fmt.Fprintln(stdout, "(as the OpenTelemetry Collector's file exporter writes), or whole JSON documents; .gz files")
		fmt.Fprintln(stdout, "are decompressed and - reads standard input. Every pending event is evaluated at the end.")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &usageError{cmd: "analyze", err: fmt.Errorf("--format must be text or json, got %q", *format)}
	}
	if fs.NArg() == 0 {
		return &usageError{cmd: "analyze", err: errors.New("analyze needs at least one file")}
	}
	cfg := analyzer.DefaultConfig()
	cfg.KeepSamples = true
	cfg.Join.Expected = expected.m
	cfg.Join.MaxPendingEvents = 1 << 24 // offline: nothing is evicted for room short of this
	a, err := analyzer.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	var in analyzeInput
	for _, name := range fs.Args() {
		if err := analyzeFile(ctx, a, name, &in); err != nil {
			return err
		}
		in.Files++
	}
	a.Flush()
	rep := analyzeReport{Input: in, Summary: a.Summary()}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeAnalyzeText(stdout, rep)
}

// analyzeFile feeds every JSON document of a file to the analyzer.
func analyzeFile(ctx context.Context, a *analyzer.Analyzer, name string, in *analyzeInput) error {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("open trace file: %w", err)
		}
		defer f.Close()
		r = f
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 1<<20)
	}
	// A JSON decoder reads both forms: one document per line, and whole
	// (indented) documents one after another.
	dec := json.NewDecoder(br)
	var u ptrace.JSONUnmarshaler
	for n := 1; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read %s: document %d: %w", name, n, err)
		}
		td, err := u.UnmarshalTraces(raw)
		if err != nil {
			return fmt.Errorf("decode %s: document %d: %w", name, n, err)
		}
		in.Requests++
		in.Spans += td.SpanCount()
		if err := a.ConsumeTraces(ctx, td); err != nil {
			return fmt.Errorf("analyse %s: document %d: %w", name, n, err)
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
