package analyzer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeResult is one scrape of a registry through promhttp.
type scrapeResult struct {
	body []byte
	took time.Duration
}

// Content types of the two expositions Prometheus scrapes.
const (
	acceptText        = "text/plain;version=0.0.4"
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0"
)

// scrape gets reg's exposition in the format accept asks for, over HTTP
// from promhttp as Prometheus would, and fails the test unless it answers
// 200 with an exposition that parses (parseExposition).
func scrape(t testing.TB, reg *prometheus.Registry, accept string) scrapeResult {
	t.Helper()
	return scrapeWith(t, reg, accept, false)
}

// scrapeWith is scrape; direct calls the promhttp handler without a server,
// for the fuzz target's speed.
func scrapeWith(t testing.TB, reg *prometheus.Registry, accept string, direct bool) scrapeResult {
	t.Helper()
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.HTTPErrorOnError})
	url := "http://lagscope/metrics"
	var srv *httptest.Server
	if !direct {
		srv = httptest.NewServer(h)
		defer srv.Close()
		url = srv.URL
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	start := time.Now()
	var resp *http.Response
	if direct {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp = rec.Result()
	} else if resp, err = srv.Client().Do(req); err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape (%s): status %d: %.500s", accept, resp.StatusCode, body)
	}
	ct := resp.Header.Get("Content-Type")
	if want := strings.SplitN(accept, ";", 2)[0]; !strings.HasPrefix(ct, want) {
		t.Fatalf("scrape: content type %q, want %s", ct, want)
	}
	if err := parseExposition(body, ct); err != nil {
		t.Fatalf("scrape (%s): %v", ct, err)
	}
	return scrapeResult{body: body, took: took}
}

// parseExposition reads an exposition to the end: the text format with the
// parser promtool and client_golang use; OpenMetrics (whose parser lives in
// the Prometheus module, not required here) as valid UTF-8 that ends in
// "# EOF".
func parseExposition(body []byte, contentType string) error {
	if strings.HasPrefix(contentType, "application/openmetrics-text") {
		if !utf8.Valid(body) || !strings.HasSuffix(string(body), "# EOF\n") {
			return errors.New("OpenMetrics exposition is not valid UTF-8 ending in # EOF")
		}
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := p.TextToMetricFamilies(strings.NewReader(string(body))); err != nil {
		return fmt.Errorf("parse exposition: %w", err)
	}
	return nil
}

// checkExposition fails the test unless reg's exposition is what no input
// may spoil: it gathers without error, both formats scrape and parse, every
// label value is valid UTF-8 of at most maxLen bytes, and promlint (what
// `promtool check metrics` runs) finds nothing.
func checkExposition(t testing.TB, reg *prometheus.Registry, maxLen int) {
	t.Helper()
	checkExpositionWith(t, reg, maxLen, false)
}

// checkExpositionWith is checkExposition; direct scrapes without a server.
func checkExpositionWith(t testing.TB, reg *prometheus.Registry, maxLen int, direct bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v := l.GetValue(); !utf8.ValidString(v) || len(v) > maxLen {
					t.Fatalf("%s{%s=%q}: label value is not valid UTF-8 of at most %d bytes", mf.GetName(), l.GetName(), v, maxLen)
				}
			}
		}
	}
	var text strings.Builder
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s as text: %v", mf.GetName(), err)
		}
	}
	scrapeWith(t, reg, acceptOpenMetrics, direct)
	body := scrapeWith(t, reg, acceptText, direct).body
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestNativeHistogramExposition: the lag histogram of a running analyzer is
// a native histogram (schema 4) with its classic buckets in the protobuf
// exposition Prometheus scrapes with native histograms on, and classic
// buckets only in the text one.
func TestNativeHistogramExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	sh := newShardedHistogram(prometheus.HistogramOpts{Name: "cqrs_command_to_projection_lag_seconds", Help: "Lag.", Buckets: LagBuckets}, []string{"projection"}, 0)
	reg.MustRegister(sh)
	p, _ := sh.part(0, "orders_view")
	for _, v := range []float64{0.004, 6, 6.01, 7} {
		p.observe(v)
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
	get := func(accept string) (*http.Response, []byte) {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", accept)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result(), rec.Body.Bytes()
	}
	// What Prometheus 2.42 sends with --enable-feature=native-histograms.
	resp, body := get("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.ResponseFormat(resp.Header))
	var mf dto.MetricFamily
	if err := dec.Decode(&mf); err != nil {
		t.Fatalf("decode protobuf exposition (%s): %v", resp.Header.Get("Content-Type"), err)
	}
	hist := mf.GetMetric()[0].GetHistogram()
	if hist.GetSchema() != nativeSchema || len(hist.GetPositiveSpan()) == 0 || len(hist.GetBucket()) != len(LagBuckets) || hist.GetSampleCount() != 4 {
		t.Errorf("protobuf: schema %d, %d spans, %d classic buckets, count %d: want schema %d, spans, %d classic buckets, count 4",
			hist.GetSchema(), len(hist.GetPositiveSpan()), len(hist.GetBucket()), hist.GetSampleCount(), nativeSchema, len(LagBuckets))
	}
	_, text := get(acceptText)
	if !bytes.Contains(text, []byte(`cqrs_command_to_projection_lag_seconds_bucket{projection="orders_view",le="5"} 1`)) {
		t.Errorf("text exposition lacks the classic buckets:\n%s", text)
	}
}
