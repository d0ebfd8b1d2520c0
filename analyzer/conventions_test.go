package analyzer

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parsedPackage is the package's non-test source, with the values of the
// string constants declared in classify.go.
type parsedPackage struct {
	files  map[string]*ast.File
	consts map[string]string // name -> value
}

func parsePackage(t *testing.T) parsedPackage {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	p := parsedPackage{files: map[string]*ast.File{}, consts: map[string]string{}}
	fset := token.NewFileSet()
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.files[name] = f
	}
	for _, d := range p.files["classify.go"].Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					p.consts[n.Name] = v
				}
			}
		}
	}
	return p
}

// caseValues returns the values of the string constants that the case
// clauses of function fn of classify.go compare with.
func (p parsedPackage) caseValues(t *testing.T, fn string) []string {
	t.Helper()
	var out []string
	found := false
	for _, d := range p.files["classify.go"].Decls {
		f, ok := d.(*ast.FuncDecl)
		if !ok || f.Name.Name != fn {
			continue
		}
		found = true
		ast.Inspect(f.Body, func(n ast.Node) bool {
			if cc, ok := n.(*ast.CaseClause); ok {
				for _, e := range cc.List {
					switch e := e.(type) {
					case *ast.Ident:
						if v, ok := p.consts[e.Name]; ok {
							out = append(out, v)
						}
					case *ast.BasicLit:
						if e.Kind == token.STRING {
							t.Errorf("%s compares with the literal %s: name it with a constant listed in conventions.go", fn, e.Value)
						}
					}
				}
			}
			return true
		})
	}
	if !found {
		t.Fatalf("no function %s in classify.go", fn)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// TestReadsListsEveryKey checks Reads against the source that reads
// requests, so that the list cannot drift from the code: the selective
// decoder keeps nothing else, and a key read but not listed would never
// reach the analysis.
func TestReadsListsEveryKey(t *testing.T) {
	p := parsePackage(t)
	sel := DefaultConfig().Reads()

	if diff := cmp.Diff(sorted(sel.SpanAttributes), p.caseValues(t, "read")); diff != "" {
		t.Errorf("Reads().SpanAttributes differ from the keys spanAttrs.read reads (-listed +read):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(sel.EventAttributes), p.caseValues(t, "read")); diff != "" {
		t.Errorf("Reads().EventAttributes differ from the keys spanAttrs.read reads (-listed +read):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(sel.Values), p.caseValues(t, "classifyWhy")); diff != "" {
		t.Errorf("Reads().Values differ from the values classify compares with (-listed +compared):\n%s", diff)
	}

	// Every other use of an attribute or event name constant, anywhere in
	// the package, must be of one that Reads lists.
	listed := map[string]bool{}
	for _, l := range [][]string{sel.ResourceAttributes, sel.SpanAttributes, sel.EventNames, sel.EventAttributes} {
		for _, k := range l {
			listed[k] = true
		}
	}
	uses := 0
	for name, f := range p.files {
		if name == "conventions.go" {
			continue // the lists themselves
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if g, ok := n.(*ast.GenDecl); ok && g.Tok == token.CONST {
				return false // the declarations themselves
			}
			id, ok := n.(*ast.Ident)
			if !ok || !(strings.HasPrefix(id.Name, "attr") || strings.HasPrefix(id.Name, "eventName")) {
				return true
			}
			v, ok := p.consts[id.Name]
			if !ok {
				return true
			}
			uses++
			if !listed[v] {
				t.Errorf("%s uses %s (%q), which Reads does not list", name, id.Name, v)
			}
			return true
		})
	}
	if uses == 0 {
		t.Fatal("found no use of an attribute constant: the test no longer looks where the code is")
	}
}

// TestReadsReturnsCopies checks that a caller modifying a Selection does
// not change what later calls return.
func TestReadsReturnsCopies(t *testing.T) {
	sel := DefaultConfig().Reads()
	want := DefaultConfig().Reads()
	sel.SpanAttributes[0] = "changed"
	sel.EventAttributes[0] = "changed"
	sel.Values[0] = "changed"
	sel.ResourceAttributes[0] = "changed"
	sel.EventNames[0] = "changed"
	if diff := cmp.Diff(DefaultConfig().Reads(), want); diff != "" {
		t.Errorf("Reads after modifying its result (-got +want):\n%s", diff)
	}
}
