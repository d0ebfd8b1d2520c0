package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func resolveWith(t *testing.T, file string, args ...string) (Config, error) {
	t.Helper()
	if file != "" {
		path := filepath.Join(t.TempDir(), "lagscope.yaml")
		if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sf := newServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return sf.resolve()
}

func TestConfigPrecedence(t *testing.T) {
	file := "otlp:\n  grpc_endpoint: 0.0.0.0:14317\njoin:\n  deadline: 45s\n  expected:\n    OrderCreated: [orders_view]\n"
	tests := []struct {
		name   string
		file   string
		args   []string
		check  func(Config) string
		wanted string
	}{
		{"defaults", "", nil, func(c Config) string {
			return c.OTLP.GRPCEndpoint + " " + c.Web.ListenAddress + " " + c.Join.Deadline.String()
		}, "localhost:4317 localhost:9464 30s"},
		{"file over defaults", file, nil, func(c Config) string {
			return c.OTLP.GRPCEndpoint + " " + c.Join.Deadline.String() + " " + c.OTLP.HTTPEndpoint
		}, "0.0.0.0:14317 45s localhost:4318"},
		{"flag over file", file, []string{"--join.deadline=2s", "--otlp.grpc-endpoint=:1"}, func(c Config) string { return c.OTLP.GRPCEndpoint + " " + c.Join.Deadline.String() }, ":1 2s"},
		{"file list", file, nil, func(c Config) string { return strings.Join(c.Join.Expected["OrderCreated"], ",") }, "orders_view"},
		{"empty file", "", []string{"--web.listen-address=:9999"}, func(c Config) string { return c.Web.ListenAddress }, ":9999"},
		{"sql source", "sql_source:\n  driver: sqlite\n  dsn: /tmp/orders.db\n  interval: 10s\n", nil, func(c Config) string {
			p := c.PositionSource()
			return p.Driver + " " + p.DSN + " " + p.Interval.String() + " " + p.Timeout.String()
		}, "sqlite /tmp/orders.db 10s 2s"},
		{"lag buckets from file", "metrics:\n  lag_buckets: [1, 6, 7.5]\n", nil, func(c Config) string { return fmt.Sprint(c.Metrics.LagBuckets) }, "[1 6 7.5]"},
		{"lag buckets flag over file", "metrics:\n  lag_buckets: [1, 6]\n", []string{"--metrics.lag-buckets=0.5, 6,12"}, func(c Config) string { return fmt.Sprint(c.Metrics.LagBuckets) }, "[0.5 6 12]"},
		{"long deadline raises retention", "", []string{"--join.deadline=10m"}, func(c Config) string { return c.Join.Retention.String() }, (100 * time.Minute).String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolveWith(t, tt.file, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.check(c); got != tt.wanted {
				t.Errorf("got %q, want %q", got, tt.wanted)
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		want string
	}{
		{"unknown key", "join:\n  dedline: 3s\n", nil, "join.dedline (line 2): unknown key; did you mean join.deadline?"},
		{"duration in words", "log:\n  level: info\njoin:\n  deadline: 30 seconds\n", nil, `join.deadline (line 4): "30 seconds" is not a duration (e.g. 30s`},
		{"new robustness key", "metrics:\n  max_label_length: 10\n", nil, "metrics.max_label_length"},
		{"new otlp key", "otlp:\n  max_connections: 0\n", nil, "otlp.max_connections"},
		{"otlp key named in errors", "otlp:\n  max_request_bytes: -1\n", nil, "otlp.max_request_bytes must be positive"},
		{"unknown section", "otel:\n  x: 1\n", nil, "otel"},
		{"bad duration", "join:\n  deadline: soon\n", nil, "soon"},
		{"negative deadline", "join:\n  deadline: -1s\n", nil, "join.deadline"},
		{"bad log level", "log:\n  level: loud\n", nil, "log.level"},
		{"bad log format flag", "", []string{"--log.format=xml"}, "log.format"},
		{"zero label values", "metrics:\n  max_label_values: 0\n", nil, "metrics.max_label_values"},
		{"bad sql source driver", "sql_source:\n  driver: oracle\n  dsn: x\n", nil, "sql_source"},
		{"bad flag value", "", []string{"--join.deadline=soon"}, "join.deadline"},
		{"unsorted lag buckets", "metrics:\n  lag_buckets: [5, 1]\n", nil, "metrics.lag_buckets"},
		{"lag bucket not a number", "", []string{"--metrics.lag-buckets=1,5s"}, "metrics.lag-buckets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.file == "" && tt.args == nil {
				t.Fatal("bad test")
			}
			file := tt.file
			_, err := resolveWith(t, file, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestEveryKeyHasAFlag keeps the flags in step with the config file: every
// scalar YAML key has the flag of the same name, with dashes, and every flag
// but --config names a key (or is the hidden --analysis.disabled).
func TestEveryKeyHasAFlag(t *testing.T) {
	keys := map[string]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, ok := f.Tag.Lookup("yaml")
			if !ok || tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if opts == "inline" {
				walk(f.Type, prefix)
				continue
			}
			key := prefix + name
			switch f.Type.Kind() {
			case reflect.Struct:
				walk(f.Type, key+".")
			case reflect.Slice:
				if k := f.Type.Elem().Kind(); k == reflect.String || k == reflect.Float64 {
					keys[key] = true // a comma-separated list flag
				}
			case reflect.Map:
				// join.expected: a file-only setting.
			default:
				keys[key] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	newServeFlags(fs)
	flags := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = true })
	// Flags named as other Prometheus exporters name them.
	aliases := map[string]string{"web.config_file": "web.config.file"}
	for key := range keys {
		name := strings.ReplaceAll(key, "_", "-")
		if a, ok := aliases[key]; ok {
			name = a
		}
		if !flags[name] {
			t.Errorf("YAML key %s has no flag --%s", key, name)
		}
	}
	for name := range flags {
		if name == "config" || name == "analysis.disabled" {
			continue
		}
		key := strings.ReplaceAll(name, "-", "_")
		for k, a := range aliases {
			if a == name {
				key = k
			}
		}
		if !keys[key] {
			t.Errorf("flag --%s names no YAML key (%s)", name, key)
		}
	}
	if len(keys) < 30 {
		t.Errorf("found only %d keys: the walk is broken", len(keys))
	}
}
