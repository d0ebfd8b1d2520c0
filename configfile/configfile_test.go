package configfile

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type yamlTestInner struct {
	Deadline time.Duration       `yaml:"deadline"`
	Max      int                 `yaml:"max_pending_events"`
	Expected map[string][]string `yaml:"expected"`
	Hidden   bool                `yaml:"-"`
}

type yamlTestFlat struct {
	Level string `yaml:"level"`
}

type yamlTestConfig struct {
	Join     yamlTestInner `yaml:"join"`
	Inlined  yamlTestFlat  `yaml:",inline"`
	Enabled  bool          `yaml:"enabled"`
	Untagged string
}

func TestDecode(t *testing.T) {
	base := yamlTestConfig{Join: yamlTestInner{Deadline: 30 * time.Second, Max: 7}, Inlined: yamlTestFlat{Level: "info"}}
	tests := []struct {
		name    string
		doc     string
		want    yamlTestConfig
		wantErr string
	}{
		{name: "empty document keeps defaults", doc: "", want: base},
		{name: "comment only", doc: "# nothing\n", want: base},
		{name: "empty section", doc: "join:\n", want: base},
		{
			name: "values over defaults",
			doc:  "join:\n  deadline: 45s\n  expected:\n    OrderCreated: [orders_view]\nlevel: debug\nenabled: true\n",
			want: yamlTestConfig{
				Join:    yamlTestInner{Deadline: 45 * time.Second, Max: 7, Expected: map[string][]string{"OrderCreated": {"orders_view"}}},
				Inlined: yamlTestFlat{Level: "debug"}, Enabled: true,
			},
		},
		{name: "bad duration", doc: "join:\n\n  deadline: 30 seconds\n", want: base,
			wantErr: `join.deadline (line 3): "30 seconds" is not a duration (e.g. 30s, 1m30s, 500ms)`},
		{name: "duration without unit", doc: "join:\n  deadline: 5\n", want: base,
			wantErr: `join.deadline (line 2): "5" is not a duration: a duration needs a unit, e.g. 5s`},
		{name: "unknown key with suggestion", doc: "join:\n  deadlne: 3s\n", want: base,
			wantErr: "join.deadlne (line 2): unknown key; did you mean join.deadline?"},
		{name: "unknown section", doc: "otel:\n  x: 1\n", want: base, wantErr: "otel (line 1): unknown key"},
		{name: "hidden field is not a key", doc: "join:\n  Hidden: true\n", want: base, wantErr: "join.Hidden (line 2): unknown key"},
		{name: "untagged field is not a key", doc: "Untagged: x\n", want: base, wantErr: "Untagged (line 1): unknown key"},
		{name: "bad integer", doc: "join:\n  max_pending_events: lots\n", want: base,
			wantErr: `join.max_pending_events (line 2): must be a whole number, got "lots"`},
		{name: "bad map", doc: "join:\n  expected: [a, b]\n", want: base,
			wantErr: "join.expected (line 2): must be a mapping of strings to lists, got a list"},
		{name: "section not a mapping", doc: "join: 3\n", want: base, wantErr: "join (line 1): must be a mapping of keys to values"},
		{name: "every error reported, the rest applied", doc: "join:\n  deadline: soon\n  max_pending_events: 9\nenabled: maybe\n",
			want: yamlTestConfig{Join: yamlTestInner{Deadline: 30 * time.Second, Max: 9}, Inlined: yamlTestFlat{Level: "info"}},
			wantErr: "join.deadline (line 2): \"soon\" is not a duration (e.g. 30s, 1m30s, 500ms)\n" +
				`enabled (line 4): must be true or false, got "maybe"`},
		{name: "not YAML", doc: "join: [\n", want: base, wantErr: "not YAML: yaml: line 1: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := base
			err := Decode([]byte(tt.doc), &got)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.wantErr {
				t.Errorf("error:\n got %q\nwant %q", gotErr, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDecode decodes arbitrary documents into a struct of every kind of
// field: never a panic, and an error always names a key or the document.
func FuzzDecode(f *testing.F) {
	f.Add("join:\n  deadline: 45s\n  expected:\n    a: [b]\nlevel: x\nenabled: true\n")
	f.Add("join: [\n")
	f.Add("a: &a [*a, *a]\n")
	f.Add("join:\n  max_pending_events: 1e99\n")
	f.Fuzz(func(t *testing.T, doc string) {
		var c yamlTestConfig
		err := Decode([]byte(doc), &c)
		if err != nil && !strings.Contains(err.Error(), "(line ") && !strings.HasPrefix(err.Error(), "not YAML") {
			t.Errorf("error without a key and line: %v", err)
		}
	})
}
