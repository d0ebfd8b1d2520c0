// Package configfile decodes YAML configuration files into Go structs with
// errors that speak of the file, not of Go: each names the dotted key and its
// line, an unknown key comes with the nearest known one, and every error in a
// file is reported at once.
package configfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decode decodes a YAML document over v, a pointer to a struct whose
// fields carry yaml tags, keeping what the document does not set. Unlike
// yaml's own strict decoding, its errors speak of the file, not of Go: they
// name the dotted key and its line ("join.deadline (line 7): "30 seconds" is
// not a duration (e.g. 30s)"), an unknown key comes with the nearest known one,
// and every error in the document is reported, joined. An empty document is
// an empty config.
func Decode(b []byte, v any) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("not YAML: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("configfile: Decode needs a pointer to a struct, got %T", v)
	}
	var errs []error
	decodeNode(doc.Content[0], rv.Elem(), "", &errs)
	return errors.Join(errs...)
}

// yamlField is a struct field as the file names it.
type yamlField struct {
	name  string
	index []int
}

// yamlFields lists the keys of struct type t, with the fields of inline
// structs at t's own level. Fields tagged "-" or without a tag are not keys.
func yamlFields(t reflect.Type) []yamlField {
	var out []yamlField
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("yaml")
		if !ok || tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			for _, sub := range yamlFields(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
			continue
		}
		if name == "" {
			continue
		}
		out = append(out, yamlField{name: name, index: []int{i}})
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Time]() {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return // "join:" with nothing under it
		}
		if n.Kind != yaml.MappingNode {
			*errs = append(*errs, keyError(path, n, "must be a mapping of keys to values"))
			return
		}
		fields := yamlFields(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			f, ok := findField(fields, k.Value)
			if !ok {
				msg := "unknown key"
				if near := nearest(k.Value, fields); near != "" {
					msg += "; did you mean " + join(path, near) + "?"
				}
				*errs = append(*errs, keyError(key, k, msg))
				continue
			}
			decodeNode(val, v.FieldByIndex(f.index), key, errs)
		}
		return
	}
	if v.Type() == durationType {
		if n.Kind != yaml.ScalarNode {
			*errs = append(*errs, keyError(path, n, "must be a duration (e.g. 30s)"))
			return
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			*errs = append(*errs, keyError(path, n, durationHint(n.Value)))
			return
		}
		v.SetInt(int64(d))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		*errs = append(*errs, keyError(path, n, "must be "+describe(v.Type())+", got "+shown(n)))
	}
}

// durationHint says why s is not a duration, the way a person would.
func durationHint(s string) string {
	q := fmt.Sprintf("%q", s)
	if _, err := time.ParseDuration(s + "s"); err == nil {
		return q + " is not a duration: a duration needs a unit, e.g. " + s + "s"
	}
	return q + " is not a duration (e.g. 30s, 1m30s, 500ms)"
}

// describe names what a value of type t is written as in YAML.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number not below 0"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list of " + plural(t.Elem())
	case reflect.Map:
		return "a mapping of " + plural(t.Key()) + " to " + plural(t.Elem())
	}
	return "a value of another kind"
}

func plural(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "strings"
	case reflect.Slice, reflect.Array:
		return "lists"
	case reflect.Map, reflect.Struct:
		return "mappings"
	case reflect.Bool:
		return "booleans"
	}
	return "numbers"
}

// shown quotes what the file wrote at n, briefly.
func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	s := n.Value
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Sprintf("%q", s)
}

func keyError(key string, n *yaml.Node, msg string) error {
	if key == "" {
		key = "the document"
	}
	return fmt.Errorf("%s (line %d): %s", key, n.Line, msg)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func findField(fields []yamlField, name string) (yamlField, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return yamlField{}, false
}

// nearest returns the known key closest to name, if it is close enough to be
// a typo of it.
func nearest(name string, fields []yamlField) string {
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.name
	}
	return Suggest(strings.ReplaceAll(name, "-", "_"), known)
}

// Suggest returns the string of known closest to name (ignoring case), if it
// is within two edits of it: close enough to be a typo. Otherwise "".
func Suggest(name string, known []string) string {
	name = strings.ToLower(name)
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
