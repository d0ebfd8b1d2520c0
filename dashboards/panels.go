package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Units used by the panels. Event and span rates are per second.
const (
	unitSeconds = "s"
	unitEvents  = "suffix: ev/s"
	unitSpans   = "suffix: spans/s"
	unitShort   = "short"
	unitPercent = "percentunit"
	unitBytes   = "bytes"
)

// datasource refers to the dashboard's datasource variable.
func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${datasource}")}
}

func ptr[T any](v T) *T { return &v }

// query is one PromQL target of a panel.
type query struct {
	expr     string
	legend   string
	instant  bool
	exemplar bool
	heatmap  bool
}

func (q query) build(refID string) *prometheus.DataqueryBuilder {
	b := prometheus.NewDataqueryBuilder().
		RefId(refID).
		Datasource(datasource()).
		Expr(q.expr).
		LegendFormat(q.legend).
		EditorMode(prometheus.QueryEditorModeCode)
	switch {
	case q.instant:
		b.Instant().Format(prometheus.PromQueryFormatTimeSeries)
	case q.heatmap:
		b.Range().Format(prometheus.PromQueryFormatHeatmap)
	default:
		b.Range().Format(prometheus.PromQueryFormatTimeSeries)
	}
	if q.exemplar {
		b.Exemplar(true)
	}
	return b
}

func refID(i int) string { return string(rune('A' + i)) }

// panel holds what every panel kind shares.
type panel struct {
	title, description string
	unit               string
	width, height      uint32
	queries            []query
}

// thresholds returns steps: green below the first value, then the given colours.
func thresholds(steps ...dashboard.Threshold) *dashboard.ThresholdsConfigBuilder {
	all := append([]dashboard.Threshold{{Color: "green"}}, steps...)
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(all)
}

func step(value float64, color string) dashboard.Threshold {
	return dashboard.Threshold{Value: ptr(value), Color: color}
}

func legendTable() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeTable).
		Placement(common.LegendPlacementBottom).
		Calcs([]string{"mean", "max", "lastNotNull"}).
		SortBy("Max").
		SortDesc(true)
}

func legendList() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeList).
		Placement(common.LegendPlacementBottom).
		Calcs([]string{})
}

func tooltipAll() *common.VizTooltipOptionsBuilder {
	return common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)
}

// timeSeries is a line chart with a table legend, all-series tooltip and, when
// th is not nil, its thresholds drawn as dashed lines.
func timeSeries(p panel, th *dashboard.ThresholdsConfigBuilder) *timeseries.PanelBuilder {
	b := timeseries.NewPanelBuilder().
		Title(p.title).
		Description(p.description).
		Datasource(datasource()).
		Unit(p.unit).
		Span(p.width).
		Height(p.height).
		Min(0).
		LineWidth(1).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		SpanNulls(common.BoolOrFloat64{Bool: ptr(false)}).
		Legend(legendTable()).
		Tooltip(tooltipAll())
	if th != nil {
		b.Thresholds(th).ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed))
	} else {
		b.ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeOff))
	}
	for i, q := range p.queries {
		b.WithTarget(q.build(refID(i)))
	}
	return b
}

// stacked turns a time series into a stacked area chart with a list legend.
func stacked(b *timeseries.PanelBuilder) *timeseries.PanelBuilder {
	return b.FillOpacity(40).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).
		Legend(legendList())
}

// singleStat shows the last value of an instant query, with its series name.
func singleStat(p panel, th *dashboard.ThresholdsConfigBuilder) *stat.PanelBuilder {
	b := stat.NewPanelBuilder().
		Title(p.title).
		Description(p.description).
		Datasource(datasource()).
		Unit(p.unit).
		Span(p.width).
		Height(p.height).
		Thresholds(th).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeNone).
		TextMode(common.BigValueTextModeValueAndName).
		JustifyMode(common.BigValueJustifyModeAuto).
		Orientation(common.VizOrientationAuto).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false)).
		NoValue("none")
	for i, q := range p.queries {
		q.instant = true
		b.WithTarget(q.build(refID(i)))
	}
	return b
}

// latencyHeatmap draws pre-bucketed histogram data (format heatmap) with
// exemplars, on a log2 y axis in the panel's unit.
func latencyHeatmap(p panel) *heatmap.PanelBuilder {
	b := heatmap.NewPanelBuilder().
		Title(p.title).
		Description(p.description).
		Datasource(datasource()).
		Span(p.width).
		Height(p.height).
		Calculate(false).
		CellGap(1).
		Color(heatmap.NewHeatmapColorOptionsBuilder().
			Mode(heatmap.HeatmapColorModeScheme).
			Scheme("Oranges").
			Scale(heatmap.HeatmapColorScaleExponential).
			Exponent(0.5).
			Steps(64).
			Fill("dark-orange")).
		YAxis(heatmap.NewYAxisConfigBuilder().Unit(p.unit).AxisPlacement(common.AxisPlacementLeft)).
		RowsFrame(heatmap.NewRowsHeatmapOptionsBuilder().Layout(common.HeatmapCellLayoutLe)).
		CellValues(heatmap.NewCellValuesBuilder().Unit(unitEvents).Decimals(2)).
		ShowValue(common.VisibilityModeNever).
		ShowLegend().
		Tooltip(heatmap.NewHeatmapTooltipBuilder().Mode(common.TooltipDisplayModeSingle).YHistogram(true).ShowColorScale(true)).
		ExemplarsColor("rgba(255,0,255,0.7)")
	for i, q := range p.queries {
		q.heatmap = true
		b.WithTarget(q.build(refID(i)))
	}
	return b
}

func row(title string) *dashboard.RowBuilder {
	return dashboard.NewRowBuilder(title).Collapsed(false)
}

// datasourceVariable lets the viewer pick a Prometheus datasource; it
// defaults to the provisioned one.
func datasourceVariable() *dashboard.DatasourceVariableBuilder {
	return dashboard.NewDatasourceVariableBuilder("datasource").
		Label("Data source").
		Type("prometheus").
		Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{String: ptr("Prometheus")},
			Value:    dashboard.StringOrArrayOfString{String: ptr(DatasourceUID)},
		})
}

// labelVariable is a multi-value variable with "All" over the values of a
// label, refreshed with the time range.
func labelVariable(name, label, definition string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(datasource()).
		Query(dashboard.StringOrMap{String: ptr(definition)}).
		Definition(definition).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).
		IncludeAll(true).
		AllValue(".*").
		Current(dashboard.VariableOption{
			Selected: ptr(true),
			Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
			Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
		})
}

func newDashboard(uid, title, description string, tags []string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags(tags).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone("browser").
		WithVariable(datasourceVariable())
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
