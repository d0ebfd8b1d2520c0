package server

import (
	"context"
	"log/slog"

	"github.com/lagscope/lagscope/report"
)

// withTraceLinks returns logger with a trace_url attribute added beside
// every trace_id attribute (of the record or of the logger), when links
// are enabled: a person reading the log opens the trace in one click.
func withTraceLinks(logger *slog.Logger, links report.TraceLinks) *slog.Logger {
	if !links.Enabled() {
		return logger
	}
	return slog.New(traceLinkHandler{Handler: logger.Handler(), links: links})
}

// traceLinkHandler is the slog.Handler of withTraceLinks.
type traceLinkHandler struct {
	slog.Handler
	links report.TraceLinks
}

// traceIDKey is the attribute that names a trace in logs, as in exemplars.
const traceIDKey = "trace_id"

func (h traceLinkHandler) Handle(ctx context.Context, r slog.Record) error {
	var url string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == traceIDKey {
			url = h.links.URL(a.Value.String())
			return false
		}
		return true
	})
	if url != "" {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_url", url))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLinkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	for _, a := range attrs {
		if a.Key == traceIDKey {
			if url := h.links.URL(a.Value.String()); url != "" {
				attrs = append(attrs[:len(attrs):len(attrs)], slog.String("trace_url", url))
			}
			break
		}
	}
	return traceLinkHandler{Handler: h.Handler.WithAttrs(attrs), links: h.links}
}

func (h traceLinkHandler) WithGroup(name string) slog.Handler {
	return traceLinkHandler{Handler: h.Handler.WithGroup(name), links: h.links}
}
