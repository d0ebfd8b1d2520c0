package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/lagscope/lagscope/report"
	"github.com/lagscope/lagscope/server"
)

// analyzeReport and analyzeInput are the report's types, as the tests name
// them.
type (
	analyzeReport = report.Report
	analyzeInput  = report.Input
)

const analyzeSynopsis = `analyze [--config FILE] [--format text|json] [--per-file] [--expect TYPE=PROJECTION,...] FILE...

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
	config := fs.String("config", "", "lagscope config `file` whose rules: (and join:, metrics:) to apply")
	fs.Var(&expected, "expect", "`type=projection[,projection]` an event type must be shown by (repeatable; type * for all)")
	traceURL := fs.String("web.trace-url-template", "", "`URL` of a trace, {trace_id} where its id goes: list the traces of unprojected and slowest events with links (default: the config file's web.trace_url_template)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &usageError{cmd: "analyze", err: fmt.Errorf("--format must be text or json, got %q", *format)}
	}
	if fs.NArg() == 0 {
		return &usageError{cmd: "analyze", err: errors.New("analyze needs at least one file")}
	}
	base := server.DefaultConfig()
	if *config != "" {
		if err := server.LoadConfigFile(*config, &base); err != nil {
			return err
		}
	}
	links, err := traceLinks(*traceURL, base)
	if err != nil {
		return &usageError{cmd: "analyze", err: err}
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
		rep, err := report.AnalyzeLinked(ctx, files, report.Offline(base.Analyzer(), expected.m), links, stderr)
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
		if err := report.WriteText(stdout, rep); err != nil {
			return err
		}
	}
	return nil
}

// traceLinks returns the links of the --web.trace-url-template flag, or
// else of the config file's web.trace_url_template.
func traceLinks(flagValue string, c Config) (report.TraceLinks, error) {
	if flagValue == "" {
		flagValue = c.Web.TraceURLTemplate
	}
	return report.NewTraceLinks(flagValue)
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
