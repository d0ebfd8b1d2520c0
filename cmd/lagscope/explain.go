package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/lagscope/lagscope/report"
	"github.com/lagscope/lagscope/server"
)

const explainSynopsis = `explain [--config FILE] [--format text|json] FILE...

Explains, span by span, what lagscope makes of OTLP trace files (the inputs
of analyze): the role each span gets (command, append, project, query or
ignored), the rule of the config file or the span convention that gave it,
the fields read, and, for a span whose facts do not join, what they wait for.
The files are taken together as the whole input. --config reads the rules:
(and join:, metrics:) of a lagscope config file.
`

func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("explain", explainSynopsis, stdout)
	format := fs.String("format", "text", "output format: text, or json (one object per span and line)")
	config := fs.String("config", "", "lagscope config `file` whose rules: to apply")
	traceURL := fs.String("web.trace-url-template", "", "`URL` of a trace, {trace_id} where its id goes: each span's trace link (default: the config file's web.trace_url_template)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return &usageError{cmd: "explain", err: fmt.Errorf("--format must be text or json, got %q", *format)}
	}
	if fs.NArg() == 0 {
		return &usageError{cmd: "explain", err: errors.New("explain needs at least one file")}
	}
	cfg := server.DefaultConfig()
	if *config != "" {
		if err := server.LoadConfigFile(*config, &cfg); err != nil {
			return err
		}
	}
	links, err := traceLinks(*traceURL, cfg)
	if err != nil {
		return &usageError{cmd: "explain", err: err}
	}
	exps, err := report.Explain(ctx, fs.Args(), cfg.Analyzer(), stderr)
	if err != nil {
		return err
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		for _, e := range report.Linked(exps, links) {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	return report.WriteLinkedExplanations(stdout, exps, links)
}
