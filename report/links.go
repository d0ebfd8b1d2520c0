package report

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/lagscope/lagscope/analyzer"
)

// TraceIDPlaceholder is what a trace URL template names the trace id by.
const TraceIDPlaceholder = "{trace_id}"

// TraceLinks turns trace ids into links to a trace viewer, from a template
// such as http://jaeger:16686/trace/{trace_id} or a Grafana Explore URL for
// Tempo (web.trace_url_template). The zero value makes no links.
type TraceLinks struct {
	template string
}

// NewTraceLinks returns the TraceLinks of template, or an error if it is set
// but has no {trace_id} or is not an absolute http(s) URL. An empty template
// makes no links.
func NewTraceLinks(template string) (TraceLinks, error) {
	if template == "" {
		return TraceLinks{}, nil
	}
	if !strings.Contains(template, TraceIDPlaceholder) {
		return TraceLinks{}, fmt.Errorf("web.trace_url_template %q has no %s", template, TraceIDPlaceholder)
	}
	u, err := url.Parse(strings.ReplaceAll(template, TraceIDPlaceholder, "0"))
	if err != nil {
		return TraceLinks{}, fmt.Errorf("web.trace_url_template: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return TraceLinks{}, fmt.Errorf("web.trace_url_template %q is not an absolute http or https URL", template)
	}
	return TraceLinks{template: template}, nil
}

// Enabled reports whether l makes links.
func (l TraceLinks) Enabled() bool { return l.template != "" }

// URL returns the link to the trace of traceID (hex), or "" without a
// template or for an id that is not 32 hex digits (nothing else may go
// into a URL a person will click).
func (l TraceLinks) URL(traceID string) string {
	if l.template == "" || !isTraceID(traceID) {
		return ""
	}
	return strings.ReplaceAll(l.template, TraceIDPlaceholder, traceID)
}

func isTraceID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// TracedEvent is an event of the report with the trace to look at.
type TracedEvent struct {
	Projection string `json:"projection"`
	// EventID is the event's id (or trace:span of the producer span that
	// stands for it), for an unprojected event.
	EventID string `json:"event_id,omitempty"`
	// Lag is the command to projection lag, for a slow one.
	Lag     time.Duration `json:"lag_ns,omitempty"`
	TraceID string        `json:"trace_id"`
	URL     string        `json:"url,omitempty"`
}

// tracedEvents returns the traces of the unprojected events and of the
// slowest lags of s, with their links.
func tracedEvents(s analyzer.Summary, links TraceLinks) (unprojected, slowest []TracedEvent) {
	for _, p := range s.Projections {
		for i, id := range p.UnprojectedIDs {
			if i < len(p.UnprojectedTraces) {
				tid := p.UnprojectedTraces[i]
				unprojected = append(unprojected, TracedEvent{Projection: p.Name, EventID: id, TraceID: tid, URL: links.URL(tid)})
			}
		}
		for _, l := range p.Slowest {
			slowest = append(slowest, TracedEvent{Projection: p.Name, Lag: l.Lag, TraceID: l.TraceID, URL: links.URL(l.TraceID)})
		}
	}
	return unprojected, slowest
}
