package server

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// fixtureRequests returns the requests of a fixture file (one OTLP/JSON
// request a line) and their span count.
func fixtureRequests(t *testing.T, file string) ([]ptrace.Traces, int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []ptrace.Traces
	spans := 0
	var u ptrace.JSONUnmarshaler
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		td, err := u.UnmarshalTraces(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		spans += td.SpanCount()
		out = append(out, td)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, spans
}

func post(t *testing.T, url, contentType string, body []byte, wantCode int) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != wantCode {
		t.Fatalf("POST %s: status %d, want %d", url, resp.StatusCode, wantCode)
	}
}

// TestZipkinFixturesCountAsOTLP sends every fixture to one instance over
// OTLP/HTTP and to another as Zipkin v2 JSON (what the Collector's Zipkin
// exporter writes for the same spans: 128-bit ids, kinds, attributes as
// tags, events as annotations, links as otlp.link.* tags), and compares
// their cqrs_* metrics: the span conventions and rules apply to Zipkin
// spans as to OTLP ones.
func TestZipkinFixturesCountAsOTLP(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	zipkinJSON := zipkinv2.NewJSONTracesMarshaler()
	var otlpProto ptrace.ProtoMarshaler
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			reqs, spans := fixtureRequests(t, file)
			cfg := DefaultConfig()
			cfg.OTLP.GRPCEndpoint = "127.0.0.1:0"
			cfg.OTLP.HTTPEndpoint = "127.0.0.1:0"
			cfg.Web.ListenAddress = "127.0.0.1:0"
			otlpSrv := startRole(t, cfg)
			cfg.Zipkin.Endpoint = "127.0.0.1:0"
			zipkinSrv := startRole(t, cfg)
			for _, td := range reqs {
				b, err := otlpProto.MarshalTraces(td)
				if err != nil {
					t.Fatal(err)
				}
				post(t, "http://"+otlpSrv.HTTPAddr().String()+"/v1/traces", "application/x-protobuf", b, http.StatusOK)
				if b, err = zipkinJSON.MarshalTraces(td); err != nil {
					t.Fatal(err)
				}
				post(t, "http://"+zipkinSrv.ZipkinAddr().String()+"/api/v2/spans", "application/json", b, http.StatusAccepted)
			}
			waitUntil(t, "both to receive every span", func() bool {
				return received(t, otlpSrv.Registry) == float64(spans) && received(t, zipkinSrv.Registry) == float64(spans)
			})
			otlpSrv.Analyzer.Flush()
			zipkinSrv.Analyzer.Flush()
			want, got := cqrs(t, otlpSrv.Registry), cqrs(t, zipkinSrv.Registry)
			if len(want) == 0 {
				t.Fatal("no cqrs_* series over OTLP")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("cqrs_* over Zipkin (-OTLP +Zipkin):\n%s", diff)
			}
			if v := sample(t, "lagscope_received_spans_total", zipkinSrv.Registry); v != float64(spans) {
				t.Errorf("received %v spans, want %d", v, spans)
			}
		})
	}
}
