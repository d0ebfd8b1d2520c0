// Package dashboards builds lagscope's Grafana dashboards as code with the
// Grafana Foundation SDK and writes them as JSON files that Grafana loads
// through file provisioning (deploy/grafana).
//
// The dashboards use raw PromQL, not the recording rules of package alerts,
// so that they work against any Prometheus that scrapes lagscope, whether or
// not the rule file is loaded, and can filter by event type and follow
// Grafana's $__rate_interval. Thresholds drawn on panels come from
// alerts.DefaultConfig, so a line on a panel is where the alert fires.
//
// The JSON committed next to this file is what All generates; a test keeps
// the two in step (go test ./dashboards -update rewrites them).
package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// DatasourceUID is the uid of the Prometheus datasource the dashboards
// select by default; deploy/grafana provisions a datasource with this uid.
const DatasourceUID = "prometheus"

// Dashboard is one generated dashboard and the file it is written to.
type Dashboard struct {
	// FileName is the base name of the JSON file, e.g. "cqrs-consistency.json".
	FileName string
	// Model is the dashboard as built by the SDK.
	Model dashboard.Dashboard
}

// All builds every lagscope dashboard, in a fixed order.
func All() ([]Dashboard, error) {
	builders := []struct {
		file  string
		build func() (dashboard.Dashboard, error)
	}{
		{"cqrs-consistency.json", consistency},
		{"lagscope-self.json", self},
	}
	out := make([]Dashboard, 0, len(builders))
	for _, b := range builders {
		d, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", b.file, err)
		}
		numberPanels(&d)
		out = append(out, Dashboard{FileName: b.file, Model: d})
	}
	return out, nil
}

// Marshal returns the dashboard as indented JSON ending in a newline. The
// output is deterministic: the same dashboard always gives the same bytes.
func Marshal(d dashboard.Dashboard) ([]byte, error) {
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("marshal dashboard %q: %w", deref(d.Title), err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent dashboard %q: %w", deref(d.Title), err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// Write writes every dashboard of All as a JSON file into dir, which must
// exist, replacing files of the same name.
func Write(dir string) error {
	all, err := All()
	if err != nil {
		return err
	}
	for _, d := range all {
		b, err := Marshal(d.Model)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.FileName), b, 0o644); err != nil {
			return fmt.Errorf("write dashboard: %w", err)
		}
	}
	return nil
}

// numberPanels gives every panel and row a stable id, in layout order, so
// that links to a panel (viewPanel=N) survive regeneration.
func numberPanels(d *dashboard.Dashboard) {
	id := uint32(0)
	for _, p := range d.Panels {
		id++
		switch {
		case p.Panel != nil:
			v := id
			p.Panel.Id = &v
		case p.RowPanel != nil:
			p.RowPanel.Id = id
			for i := range p.RowPanel.Panels {
				id++
				v := id
				p.RowPanel.Panels[i].Id = &v
			}
		}
	}
}
