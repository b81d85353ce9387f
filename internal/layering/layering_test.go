package layering

import (
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/paperfetch/paperfetch/"

// deps returns the module's packages that pkg imports, directly or (when transitive is set)
// through other packages of the module, read from the import lines of their non-test files
// (of every platform: reflink_linux.go and reflink_other.go alike).
func deps(t *testing.T, pkg string, transitive bool) []string {
	t.Helper()
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		files, err := filepath.Glob(filepath.Join("..", "..", filepath.FromSlash(p), "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s: no Go files (%v)", p, err)
		}
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, spec := range f.Imports {
				imp, _ := strconv.Unquote(spec.Path.Value)
				rel, ok := strings.CutPrefix(imp, module)
				if !ok || seen[rel] {
					continue
				}
				seen[rel] = true
				if transitive {
					walk(rel)
				}
			}
		}
	}
	walk(pkg)
	out := slices.Collect(maps.Keys(seen))
	slices.Sort(out)
	return out
}

// product reports whether p is one of the product's packages (not a leaf helper).
func product(p string) bool {
	for _, root := range []string{"coordinator", "fetcher", "embedded", "dashboard", "internal/cli"} {
		if p == root || strings.HasPrefix(p, root+"/") {
			return true
		}
	}
	return false
}

func TestLayering(t *testing.T) {
	for _, p := range deps(t, "internal/cli", false) {
		if product(p) && p != "embedded" {
			t.Errorf("internal/cli imports %s: it uses the embedded system, the generated code and leaf helpers only", p)
		}
	}
	for _, p := range deps(t, "internal/grpcserver", true) {
		if product(p) || strings.HasPrefix(p, "gen/") {
			t.Errorf("internal/grpcserver depends on %s: the binaries name their services and pass their validation", p)
		}
	}
	for _, pair := range [][2]string{{"coordinator", "fetcher"}, {"fetcher", "coordinator"}, {"coordinator", "internal/cli"}, {"fetcher", "internal/cli"}} {
		if slices.Contains(deps(t, pair[0], true), pair[1]) {
			t.Errorf("%s depends on %s", pair[0], pair[1])
		}
	}
	// Every package under internal/ is a leaf helper but the CLI and the test suites.
	dirs, err := filepath.Glob(filepath.Join("..", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var helpers []string
	for _, d := range dirs {
		name := filepath.Base(d)
		if slices.Contains([]string{"cli", "e2e", "faulttest", "roguetest", "layering"}, name) {
			continue
		}
		if code, _ := filepath.Glob(filepath.Join(d, "*.go")); slices.ContainsFunc(code, func(f string) bool { return !strings.HasSuffix(f, "_test.go") }) {
			helpers = append(helpers, name)
		}
	}
	if len(helpers) < 10 {
		t.Fatalf("only %d helpers found: %v", len(helpers), helpers)
	}
	for _, h := range helpers {
		for _, p := range deps(t, "internal/"+h, true) {
			if product(p) {
				t.Errorf("internal/%s depends on %s: a leaf helper imports no product package", h, p)
			}
		}
	}
}
