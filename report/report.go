// Package report is lagscope's offline analysis: it reads trace files
// (package tracefile), analyses them with one analyzer as `lagscope serve`
// would, evaluates every pending event at the end, and writes the report for
// a person (text) or a program (JSON, through encoding/json of Report).
package report

import (
	"context"
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

// Input counts what was read.
type Input struct {
	Files    int `json:"files"`
	Requests int `json:"requests"`
	Spans    int `json:"spans"`
}

// Report is what the analysis of some files found. Its JSON encoding is the
// output of `lagscope analyze --format json`, a public format.
type Report struct {
	// File is the file analysed, when files are analysed one by one.
	File  string `json:"file,omitempty"`
	Input Input  `json:"input"`
	analyzer.Summary
	// UnprojectedTraces and SlowestTraces are the traces of the
	// unprojected events and of the slowest lags (analyzer.SlowestKept per
	// projection), with their links: only from AnalyzeLinked with links
	// enabled.
	UnprojectedTraces []TracedEvent `json:"unprojected_traces,omitempty"`
	SlowestTraces     []TracedEvent `json:"slowest_traces,omitempty"`
}

// Config returns the analyzer configuration of an offline analysis: samples
// kept for exact quantiles and the ids of unprojected events, and room for
// every event of a large file (nothing is evicted short of 16M events).
func Config(expected map[string][]string) analyzer.Config {
	return Offline(analyzer.DefaultConfig(), expected)
}

// Offline returns cfg (e.g. with the rules of a config file) made fit for
// an offline analysis as Config says, with expected added to its expected
// projections.
func Offline(cfg analyzer.Config, expected map[string][]string) analyzer.Config {
	cfg.KeepSamples = true
	if len(expected) > 0 {
		merged := make(map[string][]string, len(cfg.Join.Expected)+len(expected))
		for k, v := range cfg.Join.Expected {
			merged[k] = append(merged[k], v...)
		}
		for k, v := range expected {
			merged[k] = append(merged[k], v...)
		}
		cfg.Join.Expected = merged
	}
	cfg.Join.MaxPendingEvents = max(cfg.Join.MaxPendingEvents, 1<<24)
	cfg.Join.MaxJoinedEvents = max(cfg.Join.MaxJoinedEvents, 1<<24) // nor a joined one forgotten
	return cfg
}

// Analyze analyses files together, in one analyzer of cfg (see Config). A
// truncated last document of a file is reported on warn and skipped; any
// other problem is an error naming the file and the place.
func Analyze(ctx context.Context, files []string, cfg analyzer.Config, warn io.Writer) (Report, error) {
	return AnalyzeLinked(ctx, files, cfg, TraceLinks{}, warn)
}

// AnalyzeLinked is Analyze that, when links are enabled, also lists the
// traces of the unprojected events and of the slowest lags, with links.
func AnalyzeLinked(ctx context.Context, files []string, cfg analyzer.Config, links TraceLinks, warn io.Writer) (Report, error) {
	a, err := analyzer.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		return Report{}, err
	}
	var in Input
	for _, name := range files {
		if err := analyzeFile(ctx, a, name, &in, warn); err != nil {
			return Report{}, err
		}
		in.Files++
	}
	a.Flush()
	sum := a.Summary()
	// A projection's status is judged over a window of live ticks
	// (analyzer/status.go); an offline analysis has none, so it states
	// none rather than an "ok" that nothing measured.
	for i := range sum.Projections {
		sum.Projections[i].Status = ""
	}
	rep := Report{Input: in, Summary: sum}
	if links.Enabled() {
		rep.UnprojectedTraces, rep.SlowestTraces = tracedEvents(rep.Summary, links)
	}
	return rep, nil
}

// analyzeFile feeds every request of a trace file to the analyzer. A
// truncated last document is reported on warn and skipped; any other
// problem is an error that names the file and the place.
func analyzeFile(ctx context.Context, a *analyzer.Analyzer, name string, in *Input, warn io.Writer) error {
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
			fmt.Fprintf(warn, "lagscope analyze: %s: %v\n", name, err)
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

// WriteText writes rep for a person: what was read, then a table of the
// projections, then the ids of the events each did not show.
func WriteText(w io.Writer, rep Report) error {
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
	writeConsistency(w, s)
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
	// Say what the quantiles are: every projection's are of one kind.
	for _, p := range s.Projections {
		switch p.Lag.Quantiles {
		case analyzer.QuantilesExact:
			fmt.Fprintln(w, "LAG_P*: exact, the nearest rank among every lag.")
		case analyzer.QuantilesNative:
			fmt.Fprintln(w, "LAG_P*: within 5 %, from the native histogram buckets.")
		default:
			continue
		}
		break
	}
	for _, p := range s.Projections {
		if len(p.UnprojectedIDs) > 0 {
			fmt.Fprintf(w, "\nUnprojected by %s (%d): %s\n", p.Name, len(p.UnprojectedIDs), strings.Join(p.UnprojectedIDs, " "))
		}
	}
	if len(rep.UnprojectedTraces) > 0 {
		fmt.Fprintln(w, "\nTraces of unprojected events:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, e := range rep.UnprojectedTraces {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Projection, e.EventID, e.URL)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.SlowestTraces) > 0 {
		fmt.Fprintln(w, "\nSlowest traces:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, e := range rep.SlowestTraces {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Projection, dur(e.Lag), e.URL)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// writeConsistency writes a line per consistency failure found (issue 14):
// broken trace propagation, stale reads, clock skew. Nothing when there is
// none, so that a clean report stays short.
func writeConsistency(w io.Writer, s analyzer.Summary) {
	var broken []string
	for _, p := range s.Projections {
		if p.BrokenPropagation > 0 {
			broken = append(broken, fmt.Sprintf("%s %d", p.Name, p.BrokenPropagation))
		}
	}
	if len(broken) > 0 {
		fmt.Fprintf(w, "Broken trace propagation (projection spans joined by event id only: not in the append's trace, no link to it; lag still counted): %s.\n", strings.Join(broken, ", "))
	}
	var stale []string
	for _, q := range s.StaleReads {
		stale = append(stale, fmt.Sprintf("%s %d (%s stale on average)", q.Query, q.Count, dur(q.Staleness/time.Duration(q.Count))))
	}
	if len(stale) > 0 {
		fmt.Fprintf(w, "Stale reads (a query returned an older version than one appended before it started): %s.\n", strings.Join(stale, ", "))
	}
	var skew []string
	for _, c := range s.ClockSkew {
		skew = append(skew, fmt.Sprintf("%s -> %s %d (%s on average)", c.From, c.To, c.Count, dur(c.Sum/time.Duration(c.Count))))
	}
	if len(skew) > 0 {
		fmt.Fprintf(w, "Clock skew (projection spans that started before their append ended, by append -> projection service): %s.\n", strings.Join(skew, ", "))
	}
}

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Microsecond).String()
}
