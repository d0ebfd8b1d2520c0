package dashboards

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
)

var update = flag.Bool("update", false, "rewrite the dashboard JSON files from the code")

func TestMain(m *testing.M) {
	// Reading dashboards back needs every panel and query type registered;
	// it links all panel packages, so it stays in tests.
	plugins.RegisterDefaultPlugins()
	os.Exit(m.Run())
}

func TestCommittedJSONMatchesCode(t *testing.T) {
	if *update {
		if err := Write("."); err != nil {
			t.Fatal(err)
		}
	}
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		got, err := Marshal(d.Model)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(d.FileName)
		if err != nil {
			t.Fatalf("%v (run go test ./dashboards -update)", err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("%s is stale; run go test ./dashboards -update (-committed +generated):\n%s", d.FileName, diff)
		}
	}
	// No stray dashboard files that the code no longer generates.
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range all {
		names = append(names, d.FileName)
	}
	if diff := cmp.Diff(files, names); diff != "" {
		t.Errorf("JSON files in dashboards/ (-found +generated):\n%s", diff)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	if err := Write(dirA); err != nil {
		t.Fatal(err)
	}
	if err := Write(dirB); err != nil {
		t.Fatal(err)
	}
	all, _ := All()
	for _, d := range all {
		a, _ := os.ReadFile(filepath.Join(dirA, d.FileName))
		b, _ := os.ReadFile(filepath.Join(dirB, d.FileName))
		if string(a) != string(b) || len(a) == 0 {
			t.Errorf("%s differs between two writes", d.FileName)
		}
	}
}

// readBack parses a committed dashboard file as Grafana's model.
func readBack(t *testing.T, file string) dashboard.Dashboard {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard.Dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return d
}

func isPromDatasource(ref *common.DataSourceRef) bool {
	return ref != nil && ref.Type != nil && *ref.Type == "prometheus" && ref.Uid != nil && *ref.Uid == "${datasource}"
}

func TestPanelsHaveDatasourceQueriesAndLayout(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range all {
		t.Run(want.FileName, func(t *testing.T) {
			d := readBack(t, want.FileName)
			if d.Uid == nil || *d.Uid == "" {
				t.Error("dashboard has no uid")
			}
			vars := map[string]dashboard.VariableModel{}
			for _, v := range d.Templating.List {
				vars[v.Name] = v
			}
			if v, ok := vars["datasource"]; !ok || v.Type != dashboard.VariableTypeDatasource {
				t.Errorf("no datasource variable")
			}
			if v, ok := vars["job"]; !ok || v.Multi == nil || !*v.Multi || v.IncludeAll == nil || !*v.IncludeAll {
				t.Errorf("job variable is not multi-value with All")
			}
			ids := map[uint32]bool{}
			occupied := map[[2]uint32]string{}
			panels := 0
			for _, p := range d.Panels {
				if p.RowPanel != nil {
					continue
				}
				panels++
				pn := p.Panel
				title := deref(pn.Title)
				if title == "" || deref(pn.Description) == "" {
					t.Errorf("panel %q has no title or description", title)
				}
				if pn.Id == nil || ids[*pn.Id] {
					t.Errorf("panel %q: missing or duplicate id", title)
				} else {
					ids[*pn.Id] = true
				}
				if !isPromDatasource(pn.Datasource) {
					t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", title, pn.Datasource)
				}
				if len(pn.Targets) == 0 {
					t.Errorf("panel %q has no queries", title)
				}
				for _, tg := range pn.Targets {
					q, ok := tg.(*prometheus.Dataquery)
					if !ok {
						t.Errorf("panel %q: target %T, want a Prometheus query", title, tg)
						continue
					}
					if q.Expr == "" || !isPromDatasource(q.Datasource) {
						t.Errorf("panel %q target %s: empty expression or no datasource", title, deref(q.RefId))
					}
				}
				if pn.FieldConfig == nil || pn.FieldConfig.Defaults.Unit == nil || *pn.FieldConfig.Defaults.Unit == "" {
					if pn.Type != "heatmap" {
						t.Errorf("panel %q has no unit", title)
					}
				}
				if pn.Type == "timeseries" {
					checkLegendAndTooltip(t, title, pn.Options)
				}
				g := pn.GridPos
				if g == nil || g.W == 0 || g.H == 0 || g.X+g.W > 24 {
					t.Errorf("panel %q: bad grid position %+v", title, g)
					continue
				}
				for x := g.X; x < g.X+g.W; x++ {
					for y := g.Y; y < g.Y+g.H; y++ {
						if other, ok := occupied[[2]uint32{x, y}]; ok {
							t.Fatalf("panel %q overlaps %q at %d,%d", title, other, x, y)
						}
						occupied[[2]uint32{x, y}] = title
					}
				}
			}
			if panels == 0 {
				t.Error("no panels")
			}
		})
	}
}

func checkLegendAndTooltip(t *testing.T, title string, options any) {
	t.Helper()
	raw, err := json.Marshal(options)
	if err != nil {
		t.Fatal(err)
	}
	var o struct {
		Legend *struct {
			ShowLegend  *bool  `json:"showLegend"`
			DisplayMode string `json:"displayMode"`
		} `json:"legend"`
		Tooltip *struct {
			Mode string `json:"mode"`
		} `json:"tooltip"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		t.Fatal(err)
	}
	if o.Legend == nil || o.Legend.ShowLegend == nil || !*o.Legend.ShowLegend || o.Legend.DisplayMode == "" {
		t.Errorf("panel %q: legend not set explicitly: %s", title, raw)
	}
	if o.Tooltip == nil || o.Tooltip.Mode == "" {
		t.Errorf("panel %q: tooltip not set explicitly: %s", title, raw)
	}
}

func TestQueriesParseAsPromQL(t *testing.T) {
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) < 20 {
		t.Fatalf("only %d queries", len(qs))
	}
	p := parser.NewParser(parser.Options{})
	vars := SampleVars()
	for _, q := range qs {
		expr := Substitute(q.Expr, vars)
		if strings.Contains(expr, "$") {
			t.Errorf("%s / %s: variable left after substitution: %s", q.Dashboard, q.Panel, expr)
		}
		if q.Variable {
			// label_values(selector, label) is Grafana's; its selector is PromQL.
			sel := strings.TrimSuffix(strings.TrimPrefix(expr, "label_values("), ")")
			sel = sel[:strings.LastIndex(sel, ",")]
			expr = sel
		}
		if _, err := p.ParseExpr(expr); err != nil {
			t.Errorf("%s / %s %s: %v\n%s", q.Dashboard, q.Panel, q.RefID, err, expr)
		}
	}
}

func TestQueriesMatchCommittedJSON(t *testing.T) {
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	var fromFiles []Query
	all, _ := All()
	for _, d := range all {
		fromFiles = append(fromFiles, modelQueries(d.FileName, readBack(t, d.FileName))...)
	}
	if diff := cmp.Diff(qs, fromFiles); diff != "" {
		t.Errorf("Queries() differs from the committed JSON (-code +files):\n%s", diff)
	}
}

func TestLagPanelsShowExemplarsAndThreshold(t *testing.T) {
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	exemplars := map[string]bool{}
	for _, q := range qs {
		if q.Exemplar {
			exemplars[q.Panel] = true
		}
	}
	for _, want := range []string{"Command-to-projection lag", "Lag distribution"} {
		if !exemplars[want] {
			t.Errorf("panel %q does not ask for exemplars", want)
		}
	}
	raw, err := os.ReadFile("cqrs-consistency.json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"value": 5,`) {
		t.Error("no 5s threshold in cqrs-consistency.json")
	}
}

func TestSubstitute(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"dollar", `x{job=~"$job"}`, `x{job=~"a|b"}`},
		{"braces", `x{job=~"${job}"}`, `x{job=~"a|b"}`},
		{"brackets", `x{job=~"[[job]]"}`, `x{job=~"a|b"}`},
		{"longest name first", `rate(x[$__rate_interval]) $__range $__interval`, `rate(x[2m]) 1h 30s`},
		{"unknown left alone", `$other`, `$other`},
	}
	vars := map[string]string{"job": "a|b", "__rate_interval": "2m", "__range": "1h", "__interval": "30s"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Substitute(tt.in, vars); got != tt.want {
				t.Errorf("Substitute(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
