package report

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/analyzer"
	"github.com/lagscope/lagscope/tracefile"
)

// Explain reads files as Analyze does and explains every span, as an
// analyzer of cfg classifies it, taking the files together as the whole
// input (a span whose command or event is in none of them says so).
func Explain(ctx context.Context, files []string, cfg analyzer.Config, warn io.Writer) ([]analyzer.SpanExplanation, error) {
	all := ptrace.NewTraces()
	for _, name := range files {
		if err := readAll(ctx, name, all, warn); err != nil {
			return nil, err
		}
	}
	return analyzer.Explain(cfg, all)
}

// readAll appends every request of a trace file to all.
func readAll(ctx context.Context, name string, all ptrace.Traces, warn io.Writer) error {
	r, err := tracefile.Open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		td, err := r.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, tracefile.ErrTruncated):
			fmt.Fprintf(warn, "lagscope explain: %s: %v\n", name, err)
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", name, err)
		}
		td.ResourceSpans().MoveAndAppendTo(all.ResourceSpans())
	}
}

// WriteExplanations writes exps for a person: a block per span, its name,
// service and kind, its role and what gave it, the fields read, and what it
// waits for.
func WriteExplanations(w io.Writer, exps []analyzer.SpanExplanation) error {
	return WriteLinkedExplanations(w, exps, TraceLinks{})
}

// LinkedExplanation is a SpanExplanation with the link to its trace: the
// JSON of `lagscope explain --format json` with a trace URL template.
type LinkedExplanation struct {
	analyzer.SpanExplanation
	TraceURL string `json:"trace_url,omitempty"`
}

// Linked returns exps with the links of their traces.
func Linked(exps []analyzer.SpanExplanation, links TraceLinks) []LinkedExplanation {
	out := make([]LinkedExplanation, len(exps))
	for i, e := range exps {
		out[i] = LinkedExplanation{SpanExplanation: e, TraceURL: links.URL(e.TraceID)}
	}
	return out
}

// WriteLinkedExplanations is WriteExplanations with, in each block, the
// link to the span's trace when links are enabled.
func WriteLinkedExplanations(w io.Writer, exps []analyzer.SpanExplanation, links TraceLinks) error {
	roles := map[string]int{}
	for i, e := range exps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		roles[e.Role]++
		fmt.Fprintf(w, "%s  (%s, %s)  trace %s span %s\n", e.Name, orDash(e.Service), e.Kind, e.TraceID, e.SpanID)
		if e.By == "convention: none" {
			fmt.Fprintln(w, "  ignored: no rule and no span convention gives it a role")
		} else {
			fmt.Fprintf(w, "  role %s, by %s\n", e.Role, e.By)
		}
		if f := fields(e.Fields); f != "" {
			fmt.Fprintf(w, "  fields: %s\n", f)
		}
		if len(e.Events) > 0 {
			fmt.Fprintf(w, "  events: %s\n", strings.Join(e.Events, " "))
		}
		if e.Note != "" {
			fmt.Fprintf(w, "  note: %s\n", e.Note)
		}
		if e.Waits != "" {
			fmt.Fprintf(w, "  waits: %s\n", e.Waits)
		}
		if u := links.URL(e.TraceID); u != "" {
			fmt.Fprintf(w, "  trace: %s\n", u)
		}
	}
	fmt.Fprintf(w, "\n%d span(s): %d command, %d append, %d project, %d query, %d ignored.\n", len(exps),
		roles["command"], roles["append"], roles["project"], roles["query"], roles["ignored"])
	return nil
}

func fields(f analyzer.ExplainedFields) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("event_id", f.EventID)
	add("event_type", f.EventType)
	add("aggregate_type", f.AggregateType)
	add("aggregate_id", f.AggregateID)
	if f.Version != 0 {
		add("aggregate_version", fmt.Sprint(f.Version))
	}
	add("command", f.Command)
	add("projection", f.Projection)
	add("query", f.Query)
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
