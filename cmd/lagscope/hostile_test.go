package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// hostileSpan describes one crafted CQRS chain: an append and a projection of
// it, whose strings and times an attacker chose.
type hostileSpan struct {
	eventType, aggType, command, projection, service, query string
	version                                                 string // as a string attribute, "" for none
	end                                                     time.Time
}

func (h hostileSpan) traces(seq int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", h.service)
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	var trace pcommon.TraceID
	trace[0], trace[15] = 0xab, byte(seq)
	trace[14] = byte(seq >> 8)
	start := time.Now().Add(-time.Second)
	id := fmt.Sprintf("evt-hostile-%d", seq)

	cmd := spans.AppendEmpty()
	cmd.SetTraceID(trace)
	cmd.SetSpanID(pcommon.SpanID{1, byte(seq)})
	cmd.SetName("command")
	cmd.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	cmd.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(2 * time.Millisecond)))
	cmd.Attributes().PutStr("cqrs.operation", "command")
	cmd.Attributes().PutStr("cqrs.command.name", h.command)

	app := spans.AppendEmpty()
	app.SetTraceID(trace)
	app.SetSpanID(pcommon.SpanID{2, byte(seq)})
	app.SetParentSpanID(cmd.SpanID())
	app.SetName("append")
	app.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	app.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
	a := app.Attributes()
	a.PutStr("cqrs.operation", "append")
	a.PutStr("cqrs.event.id", id)
	a.PutStr("cqrs.event.type", h.eventType)
	a.PutStr("cqrs.aggregate.type", h.aggType)
	a.PutStr("cqrs.aggregate.id", "agg-"+id)
	if h.version != "" {
		a.PutStr("cqrs.aggregate.version", h.version)
	}

	end := h.end
	if end.IsZero() {
		end = start.Add(5 * time.Millisecond)
	}
	p := spans.AppendEmpty()
	p.SetTraceID(trace)
	p.SetSpanID(pcommon.SpanID{3, byte(seq)})
	p.SetParentSpanID(app.SpanID())
	p.SetName("project")
	p.SetKind(ptrace.SpanKindConsumer)
	p.SetStartTimestamp(pcommon.NewTimestampFromTime(start.Add(3 * time.Millisecond)))
	p.SetEndTimestamp(pcommon.NewTimestampFromTime(end))
	p.Attributes().PutStr("cqrs.operation", "project")
	p.Attributes().PutStr("cqrs.event.id", id)
	if h.projection != "" {
		p.Attributes().PutStr("cqrs.projection", h.projection)
	}

	q := spans.AppendEmpty()
	q.SetTraceID(trace)
	q.SetSpanID(pcommon.SpanID{4, byte(seq)})
	q.SetName("query")
	q.SetStartTimestamp(pcommon.NewTimestampFromTime(start.Add(6 * time.Millisecond)))
	q.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(7 * time.Millisecond)))
	q.Attributes().PutStr("cqrs.operation", "query")
	q.Attributes().PutStr("cqrs.query.name", h.query)
	q.Attributes().PutStr("cqrs.aggregate.id", "agg-"+id)
	return td
}

// TestServeSurvivesHostileRequests sends, over both transports, requests
// crafted as an attacker would (invalid UTF-8 and megabytes in every string
// that becomes a label, absurd timestamps, versions past int64) and checks
// after each that the process is alive, /metrics answers a clean exposition
// of bounded size, and an ordinary request is still analysed. Regression test
// for issue 10's findings 1, 2, 6 and 8.
func TestServeSurvivesHostileRequests(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.Join.Deadline = 500 * time.Millisecond
		c.Join.Retention = time.Minute
	})
	bad := "bad\xff\xfeutf8"
	huge := strings.Repeat("x", 1<<20)
	normal := hostileSpan{eventType: "OrderCreated", aggType: "Order", command: "CreateOrder", projection: "orders_view",
		service: "orders", query: "GetOrder", version: "1"}
	cases := []struct {
		name string
		edit func(*hostileSpan)
	}{
		{"invalid UTF-8 projection", func(h *hostileSpan) { h.projection = bad }},
		{"invalid UTF-8 service.name as projection", func(h *hostileSpan) { h.projection, h.service = "", bad }},
		{"invalid UTF-8 event type", func(h *hostileSpan) { h.eventType = bad }},
		{"invalid UTF-8 command", func(h *hostileSpan) { h.command = bad }},
		{"invalid UTF-8 aggregate type", func(h *hostileSpan) { h.aggType = bad }},
		{"invalid UTF-8 query", func(h *hostileSpan) { h.query = bad }},
		{"1 MiB event type and projection", func(h *hostileSpan) { h.eventType, h.projection = huge, huge+"p" }},
		{"1 MiB command and aggregate type", func(h *hostileSpan) { h.command, h.aggType = huge, huge }},
		{"projection ends in year 2500", func(h *hostileSpan) { h.end = time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"version past int64", func(h *hostileSpan) { h.version = "99999999999999999999" }},
	}

	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	grpcClient := ptraceotlp.NewGRPCClient(conn)
	send := map[string]func(ptrace.Traces) error{
		"grpc": func(td ptrace.Traces) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := grpcClient.Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
			return err
		},
		"http": func(td ptrace.Traces) error {
			b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
			if err != nil {
				return err
			}
			resp, err := http.Post("http://"+s.HTTPAddr().String()+"/v1/traces", "application/x-protobuf", bytes.NewReader(b))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
			}
			return nil
		},
	}

	seq := 0
	appended := 0.0
	for _, transport := range []string{"grpc", "http"} {
		for _, c := range cases {
			t.Run(transport+"/"+c.name, func(t *testing.T) {
				h := normal
				c.edit(&h)
				seq++
				// The hostile request is accepted or refused; either way
				// the process must survive it.
				_ = send[transport](h.traces(seq))
				checkExposition(t, s.MetricsURL())
				// An ordinary request over each transport is still
				// analysed.
				for _, tr := range []string{"grpc", "http"} {
					seq++
					if err := send[tr](normal.traces(seq)); err != nil {
						t.Fatalf("ordinary request over %s after the hostile one: %v", tr, err)
					}
				}
				appended += 2
				waitFor(t, 10*time.Second, "the ordinary events to be counted", func() (bool, string) {
					got := value(scrape(t, s.MetricsURL()), "cqrs_events_appended_total",
						map[string]string{"event_type": "OrderCreated", "aggregate_type": "Order"})
					return got >= appended, fmt.Sprintf("appended=%v want>=%v", got, appended)
				})
			})
		}
	}
	// The tick still runs: the events of the hostile requests whose
	// projection got another name are declared unprojected for orders_view
	// after the deadline, which only a live tick does.
	waitFor(t, 10*time.Second, "the tick to declare unprojected events", func() (bool, string) {
		u := value(scrape(t, s.MetricsURL()), "cqrs_events_unprojected_total", map[string]string{"projection": "orders_view"})
		return u > 0, fmt.Sprintf("unprojected{orders_view}=%v", u)
	})
	checkExposition(t, s.MetricsURL())
}

// checkExposition scrapes url in the text and OpenMetrics formats and fails
// unless both answer 200 quickly with a parseable exposition of bounded size
// whose label values are valid UTF-8 of at most 128 bytes.
func checkExposition(t *testing.T, url string) {
	t.Helper()
	for _, accept := range []string{"text/plain", "application/openmetrics-text; version=1.0.0"} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", accept)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("scrape (%s): %v", accept, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("read scrape (%s): %v", accept, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("scrape (%s) took %v", accept, took)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape (%s) answered %d: %.500s", accept, resp.StatusCode, body)
		}
		if len(body) > 4<<20 {
			t.Errorf("scrape (%s) is %d bytes", accept, len(body))
		}
		if accept != "text/plain" {
			continue
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("parse scrape: %v", err)
		}
		for name, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if v := l.GetValue(); !utf8.ValidString(v) || len(v) > 128 {
						t.Errorf("%s{%s=%.40q...}: label value of %d bytes, valid UTF-8 %v", name, l.GetName(), v, len(v), utf8.ValidString(v))
					}
				}
			}
		}
	}
}
