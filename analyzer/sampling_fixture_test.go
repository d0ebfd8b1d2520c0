package analyzer

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestSampledFixture checks the weighted counts of testdata/sampled.jsonl
// (the table of its README section) through the exposition: every count of
// an event weighted by its append span's adjusted count, a query by its
// own, the lag histogram and the span counts not weighted. The sums with a
// non-integer weight (4/3) are compared to 1e-12; the others are exact.
func TestSampledFixture(t *testing.T) {
	for _, shards := range []int{1, 4} {
		cfg := DefaultConfig()
		cfg.Join.Shards = shards
		_, reg := analyzeFile(t, filepath.Join("..", "testdata", "sampled.jsonl"), cfg)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(bytes.NewReader(scrape(t, reg, acceptText).body))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		sum := func(family, label string) {
			for _, m := range mfs[family].GetMetric() {
				k := family
				if label != "" {
					k += "{" + labelOf(m, label) + "}"
				}
				switch {
				case m.GetCounter() != nil:
					got[k] += m.GetCounter().GetValue()
				case m.GetHistogram() != nil:
					got[k] += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		sum("cqrs_events_appended_total", "event_type")
		sum("cqrs_events_projected_total", "projection")
		sum("cqrs_events_unprojected_total", "projection")
		sum("cqrs_events_duplicated_total", "projection")
		sum("cqrs_queries_total", "")
		sum("cqrs_command_to_projection_lag_seconds", "projection")
		sum("lagscope_spans_total", "")
		want := map[string]float64{
			"cqrs_events_appended_total{OrderCreated}":              2 + 4 + 1 + 1,
			"cqrs_events_appended_total{OrderShipped}":              4.0 / 3,
			"cqrs_events_projected_total{orders_view}":              2 + 4 + 1 + 4.0/3 + 1,
			"cqrs_events_projected_total{sales_summary}":            2 + 1 + 1,
			"cqrs_events_unprojected_total{orders_view}":            0,
			"cqrs_events_unprojected_total{sales_summary}":          4,
			"cqrs_events_duplicated_total{orders_view}":             2,
			"cqrs_events_duplicated_total{sales_summary}":           0,
			"cqrs_queries_total":                                    2,
			"cqrs_command_to_projection_lag_seconds{orders_view}":   5, // observations, not weighted
			"cqrs_command_to_projection_lag_seconds{sales_summary}": 3,
			"lagscope_spans_total":                                  25,
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateApprox(1e-12, 0)); diff != "" {
			t.Errorf("%d shards: weighted counts (-want +got):\n%s", shards, diff)
		}
	}
}
