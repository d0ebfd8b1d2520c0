package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReadmeListsEveryMetricAndKey keeps the README's reference tables
// complete: every metric family the server registers (the Go and process
// collectors aside) and every YAML key appear in it.
func TestReadmeListsEveryMetricAndKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, nil)
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README.md does not list metric %s", name)
		}
	}
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
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".")
				continue
			}
			if key := prefix + name; !strings.Contains(string(readme), "`"+key+"`") {
				t.Errorf("README.md does not list config key %s", key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}
