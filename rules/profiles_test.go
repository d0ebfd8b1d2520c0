package rules

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/lagscope/lagscope/analyzer"
)

// TestProfiles loads each profile as --config would, analyses its fixture
// with it and without it, and compares both outcomes exactly: the profile
// must give the numbers the fixture was built with, and without it the
// numbers must be the conventions' (other) ones, so that the profile is
// shown to do the work. It also checks which rule Explain names for each
// span of the fixture.
func TestProfiles(t *testing.T) {
	tests := []struct {
		name    string
		fixture fixture
		with    outcome
		without outcome
		// rules: the spans each rule must give a role to, as Explain
		// names them ("service/span name").
		rules map[string][]string
	}{
		{
			name:    "hand_instrumented",
			fixture: handInstrumented(),
			with: outcome{
				Spans:    analyzer.SpanCounts{Command: 3, Append: 3, Project: 5, Ignored: 11},
				Appended: 3,
				Projections: map[string]proj{
					"query-service": {Expected: 3, Projected: 3, Lags: 3, LagSum: ms(45 + 80 + 60)},
					"billing": {Expected: 3, Projected: 2, Unprojected: 1, Lags: 2, LagSum: ms(150 + 210),
						UnprojectedIDs: []string{"6f1c2a4e-0000-4000-8000-000000000003"}},
				},
			},
			// The conventions count the cache invalidation as an event
			// appended and projected (4 ms after its PRODUCER span ended).
			without: outcome{
				Spans:    analyzer.SpanCounts{Command: 3, Append: 4, Project: 6, Ignored: 9},
				Appended: 4,
				Projections: map[string]proj{
					"query-service": {Expected: 4, Projected: 4, Lags: 4, LagSum: ms(45 + 80 + 60 + 4)},
					"billing": {Expected: 3, Projected: 2, Unprojected: 1, Lags: 2, LagSum: ms(150 + 210),
						UnprojectedIDs: []string{"6f1c2a4e-0000-4000-8000-000000000003"}},
				},
			},
			rules: map[string][]string{
				"hand-commands":        {"command-service/handle_create_order"},
				"hand-appends":         {"command-service/store_event"},
				"hand-projections":     {"billing/process_event", "query-service/process_event"},
				"hand-other-producers": {"command-service/publish_invalidation"},
				"hand-other-consumers": {"query-service/cache_invalidate"},
			},
		},
		{
			name:    "kurrentdb",
			fixture: kurrentDB(),
			// The lag is the subscribe span's time less the end of the
			// append span (no command span: ASP.NET's span is no command),
			// 10 ms after it started.
			with: outcome{
				Spans:    analyzer.SpanCounts{Append: 3, Project: 8, Ignored: 3},
				Appended: 3,
				Projections: map[string]proj{
					"orders-projector":   {Expected: 3, Projected: 3, Lags: 3, LagSum: ms(30 + 55 + 40 - 3*10)},
					"shipping-projector": {Expected: 3, Projected: 3, Lags: 3, LagSum: ms(25 + 35 + 45 - 3*10)},
					// An event with no id is named by its append span,
					// trace:span.
					"sales-projector": {Expected: 3, Projected: 2, Unprojected: 1, Lags: 2, LagSum: ms(120 + 90 - 2*10),
						UnprojectedIDs: []string{"22000000000000000000000000000003:2200000000030002"}},
				},
			},
			// The subscribe spans are projections of a CLIENT span that is
			// no append: nothing is appended, nothing joins.
			without: outcome{
				Spans: analyzer.SpanCounts{Project: 8, Ignored: 6},
				Projections: map[string]proj{
					"orders-projector": {}, "sales-projector": {}, "shipping-projector": {},
				},
			},
			rules: map[string][]string{
				"kurrent-append":         {"order-api/streams.append"},
				"kurrent-subscribe":      {"orders-projector/streams.subscribe"},
				"eventstoredb-subscribe": {"sales-projector/streams.subscribe"},
				"kurrentdb-subscribe":    {"shipping-projector/streams.subscribe"},
			},
		},
		{
			name:    "lambda_dynamodb_streams",
			fixture: lambdaDynamoDBStreams(),
			with: outcome{
				Spans:    analyzer.SpanCounts{Command: 3, Append: 3, Project: 5, Ignored: 3},
				Appended: 3,
				Projections: map[string]proj{
					"orders-projector": {Expected: 3, Projected: 3, Lags: 3, LagSum: ms(380 + 295 + 290)},
					"sales-projector": {Expected: 3, Projected: 2, Unprojected: 1, Lags: 2, LagSum: ms(690 + 595),
						UnprojectedIDs: []string{"01JD3Q00000000000000000003"}},
				},
			},
			// A CLIENT span is no append, an INTERNAL span no projection.
			without: outcome{
				Spans:       analyzer.SpanCounts{Command: 3, Ignored: 11},
				Projections: map[string]proj{},
			},
			rules: map[string][]string{
				"dynamodb-put-event":   {"order-api/DynamoDB.PutItem"},
				"lambda-stream-record": {"orders-projector/dynamodb-record", "sales-projector/dynamodb-record"},
			},
		},
		{
			name:    "axon",
			fixture: axon(),
			with: outcome{
				Spans:    analyzer.SpanCounts{Command: 3, Append: 3, Project: 5, Ignored: 13},
				Appended: 3,
				Projections: map[string]proj{
					"order-projection": {Expected: 3, Projected: 3, Lags: 3, LagSum: ms(70 + 95 + 50)},
					"order-analytics": {Expected: 3, Projected: 2, Unprojected: 1, Lags: 2, LagSum: ms(260 + 330),
						UnprojectedIDs: []string{"3e0b8d7a-1c2f-4b5e-9a6d-000000000003"}},
				},
			},
			// The publish spans are appends keyed by span, the handler
			// spans projections of the batch span, which is none: no
			// command, nothing joins.
			without: outcome{
				Spans:    analyzer.SpanCounts{Append: 3, Project: 5, Ignored: 16},
				Appended: 3,
				Projections: map[string]proj{
					"order-projection": {}, "order-analytics": {},
				},
			},
			rules: map[string][]string{
				"axon-command-dispatch": {"order-service/CommandBus.dispatchCommand(CreateOrderCommand)"},
				"axon-command-handler":  {"order-service/CommandBus.handleCommand(CreateOrderCommand)"},
				"axon-event-publish":    {"order-service/EventBus.publishEvent(OrderCreatedEvent)"},
				"axon-event-handler": {"order-analytics/StreamingEventProcessor.process(OrderCreatedEvent)",
					"order-projection/StreamingEventProcessor.process(OrderCreatedEvent)"},
			},
		},
	}
	opts := cmp.Options{lagsWithin, cmpopts.EquateEmpty()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fixturePath(t, tt.name, tt.fixture)
			rules := loadRules(t, tt.name+".yaml")

			with := analyze(t, path, rules)
			if diff := cmp.Diff(with, tt.with, opts); diff != "" {
				t.Errorf("with the profile (-got +want):\n%s", diff)
			}
			without := analyze(t, path, nil)
			if diff := cmp.Diff(without, tt.without, opts); diff != "" {
				t.Errorf("without the profile (-got +want):\n%s", diff)
			}
			if cmp.Equal(with, without, opts) {
				t.Errorf("the profile changes nothing: %+v", with)
			}

			got := map[string][]string{}
			for _, e := range explainAll(t, path, rules) {
				if name, ok := strings.CutPrefix(e.By, "rule: "); ok {
					got[name] = append(got[name], e.Service+"/"+e.Name)
				}
			}
			if diff := cmp.Diff(got, tt.rules); diff != "" {
				t.Errorf("spans by rule (-got +want):\n%s", diff)
			}
		})
	}
}
