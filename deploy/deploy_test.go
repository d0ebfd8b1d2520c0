// Package deploy holds the files that run the lagscope demo with Docker
// Compose; its test checks them, since Docker is not available to CI.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lagscope/lagscope/alerts"
	"github.com/lagscope/lagscope/dashboards"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// decode parses a YAML file strictly enough to catch typos: one document,
// no duplicate keys (yaml.v3 refuses them).
func decode(t *testing.T, path string, into any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestEveryYAMLFileParses(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(path); ext == ".yml" || ext == ".yaml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		var v map[string]any
		decode(t, f, &v)
		if len(v) == 0 {
			t.Errorf("%s is empty", f)
		}
	}
}

type compose struct {
	Services map[string]struct {
		Build *struct {
			Context    string            `yaml:"context"`
			Dockerfile string            `yaml:"dockerfile"`
			Args       map[string]string `yaml:"args"`
		} `yaml:"build"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
}

func TestComposeWiring(t *testing.T) {
	var c compose
	decode(t, "docker-compose.yml", &c)
	for _, name := range []string{"lagscope", "orders", "load", "otelcol", "jaeger", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("no service %q", name)
		}
	}
	for name, cmd := range map[string]string{"lagscope": "lagscope", "orders": "orders"} {
		s := c.Services[name]
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Args["CMD"] != cmd {
			t.Errorf("service %s: build %+v, want deploy/Dockerfile with CMD=%s", name, s.Build, cmd)
			continue
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, "cmd", cmd)); err != nil {
			t.Logf("service %s: %v (the command is not in the tree yet)", name, err)
		}
	}
	wantArgs := map[string][]string{
		"lagscope":   {"serve", "--otlp.grpc-endpoint=0.0.0.0:4317", "--otlp.http-endpoint=0.0.0.0:4318", "--web.listen-address=0.0.0.0:9464"},
		"orders":     {"serve", "--role", "all", "--listen", "0.0.0.0:8080", "--otlp-endpoint", "otelcol:4317"},
		"load":       {"load", "--url", "http://orders:8080", "--otlp-endpoint", "otelcol:4317"},
		"prometheus": {"--enable-feature=exemplar-storage"},
	}
	for name, args := range wantArgs {
		for _, a := range args {
			if !slices.Contains(c.Services[name].Command, a) {
				t.Errorf("service %s: command %q lacks %q", name, c.Services[name].Command, a)
			}
		}
	}
	// Every mounted host path exists, relative to this directory.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			host := strings.SplitN(v, ":", 2)[0]
			if !strings.HasPrefix(host, ".") {
				continue
			}
			if _, err := os.Stat(host); err != nil {
				t.Errorf("service %s mounts %s: %v", name, host, err)
			}
		}
	}
	if !slices.Contains(c.Services["prometheus"].Volumes, "../alerts/"+alerts.FileName+":/etc/prometheus/rules/"+alerts.FileName+":ro") {
		t.Errorf("prometheus does not mount the rule file: %v", c.Services["prometheus"].Volumes)
	}
	if !slices.Contains(c.Services["grafana"].Volumes, "../dashboards:"+dashboardsPath+":ro") {
		t.Errorf("grafana does not mount dashboards/ at %s: %v", dashboardsPath, c.Services["grafana"].Volumes)
	}
}

const dashboardsPath = "/var/lib/grafana/dashboards/lagscope"

func TestGrafanaProvisioning(t *testing.T) {
	var providers struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decode(t, "grafana/provisioning/dashboards/lagscope.yaml", &providers)
	if len(providers.Providers) != 1 || providers.Providers[0].Type != "file" || providers.Providers[0].Options.Path != dashboardsPath {
		t.Errorf("dashboard provider %+v, want one file provider at %s", providers.Providers, dashboardsPath)
	}

	var ds struct {
		Datasources []struct {
			UID      string `yaml:"uid"`
			Type     string `yaml:"type"`
			URL      string `yaml:"url"`
			JSONData struct {
				Exemplars []struct {
					Name          string `yaml:"name"`
					DatasourceUID string `yaml:"datasourceUid"`
				} `yaml:"exemplarTraceIdDestinations"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	decode(t, "grafana/provisioning/datasources/prometheus.yaml", &ds)
	uids := map[string]string{}
	for _, d := range ds.Datasources {
		uids[d.UID] = d.Type
	}
	if uids[dashboards.DatasourceUID] != "prometheus" {
		t.Errorf("no prometheus datasource with the dashboards' uid %q: %v", dashboards.DatasourceUID, uids)
	}
	for _, d := range ds.Datasources {
		if d.UID != dashboards.DatasourceUID {
			continue
		}
		if len(d.JSONData.Exemplars) != 1 || d.JSONData.Exemplars[0].Name != "trace_id" {
			t.Errorf("exemplar destinations %+v, want one on label trace_id", d.JSONData.Exemplars)
			continue
		}
		if typ := uids[d.JSONData.Exemplars[0].DatasourceUID]; typ != "jaeger" && typ != "tempo" {
			t.Errorf("exemplars link to datasource %q, which is not a provisioned Jaeger or Tempo", d.JSONData.Exemplars[0].DatasourceUID)
		}
	}
}

func TestCollectorFansOut(t *testing.T) {
	var cfg struct {
		Exporters map[string]struct {
			Endpoint string `yaml:"endpoint"`
		} `yaml:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Receivers []string `yaml:"receivers"`
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	decode(t, "otelcol/config.yaml", &cfg)
	p, ok := cfg.Service.Pipelines["traces"]
	if !ok {
		t.Fatal("no traces pipeline")
	}
	var endpoints []string
	for _, e := range p.Exporters {
		exp, ok := cfg.Exporters[e]
		if !ok {
			t.Errorf("pipeline exporter %q is not defined", e)
		}
		endpoints = append(endpoints, exp.Endpoint)
	}
	slices.Sort(endpoints)
	if want := []string{"jaeger:4317", "lagscope:4317"}; !slices.Equal(endpoints, want) {
		t.Errorf("traces go to %v, want %v", endpoints, want)
	}
}

func TestPrometheusConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	decode(t, "prometheus/prometheus.yml", &cfg)
	if !slices.Contains(cfg.RuleFiles, "/etc/prometheus/rules/*.yml") {
		t.Errorf("rule_files %v do not load the mounted rules", cfg.RuleFiles)
	}
	found := false
	for _, s := range cfg.ScrapeConfigs {
		if s.JobName == alerts.DefaultConfig().Job {
			for _, sc := range s.StaticConfigs {
				found = found || slices.Contains(sc.Targets, "lagscope:9464")
			}
		}
	}
	if !found {
		t.Errorf("no job %q scraping lagscope:9464", alerts.DefaultConfig().Job)
	}

	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH; install it (apt-get install prometheus) to check prometheus.yml")
	}
	out, err := exec.Command(bin, "check", "config", "--syntax-only", "prometheus/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

// TestDemoSecretsMatch checks that the collector sends the token lagscope
// requires, and that Prometheus scrapes with the password whose bcrypt hash
// lagscope's web config holds.
func TestDemoSecretsMatch(t *testing.T) {
	token, err := os.ReadFile("lagscope/otlp-token")
	if err != nil {
		t.Fatal(err)
	}
	var otel struct {
		Exporters map[string]struct {
			Headers map[string]string `yaml:"headers"`
		} `yaml:"exporters"`
	}
	decode(t, "otelcol/config.yaml", &otel)
	if got, want := otel.Exporters["otlp/lagscope"].Headers["authorization"], "Bearer "+strings.TrimSpace(string(token)); got != want {
		t.Errorf("the collector sends authorization %q, lagscope wants %q", got, want)
	}
	var web struct {
		Users map[string]string `yaml:"basic_auth_users"`
	}
	decode(t, "lagscope/web.yml", &web)
	var prom struct {
		ScrapeConfigs []struct {
			JobName   string `yaml:"job_name"`
			BasicAuth struct {
				Username string `yaml:"username"`
				Password string `yaml:"password"`
			} `yaml:"basic_auth"`
		} `yaml:"scrape_configs"`
	}
	decode(t, "prometheus/prometheus.yml", &prom)
	found := false
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName != "lagscope" {
			continue
		}
		found = true
		hash, ok := web.Users[sc.BasicAuth.Username]
		if !ok {
			t.Fatalf("web.yml has no user %q", sc.BasicAuth.Username)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(sc.BasicAuth.Password)); err != nil {
			t.Errorf("Prometheus' password does not match web.yml's hash: %v", err)
		}
	}
	if !found {
		t.Error("no lagscope scrape job")
	}
}
