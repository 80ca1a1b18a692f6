// Package arch_test guards the architecture the layout promises: modules talk through the message bus and never
// import each other, the edge never imports the cloud, edgecore links none of the cloud's heavy libraries, API types
// carry no CLI framework, every package says what it is for, and no build output is committed. It reads the real
// import graph with `go list` and fails naming each violation.
package arch_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tether-edge/tether"

// pkg is what the rules need of one package.
type pkg struct {
	ImportPath string
	Doc        string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

// forbiddenInEdgecore are libraries the edge binary must not link: the cloud's controller framework and API
// clientset (memory and size on weak hardware), and the demo's web framework and the browser test's driver.
var forbiddenInEdgecore = []string{
	"sigs.k8s.io/controller-runtime",
	"k8s.io/client-go/kubernetes",
	"github.com/beego/",
	"github.com/chromedp/",
}

// cliFrameworks may not reach API type packages, which users import as a library.
var cliFrameworks = []string{"github.com/spf13/cobra", "github.com/spf13/pflag"}

// violations of the rules for the packages of this module, in a stable order.
func violations(pkgs map[string]pkg, edgecoreDeps []string) []string {
	var out []string
	for _, d := range edgecoreDeps {
		for _, f := range forbiddenInEdgecore {
			if d == strings.TrimSuffix(f, "/") || strings.HasPrefix(d, f) {
				out = append(out, fmt.Sprintf("edgecore links %s", d))
			}
		}
	}
	for _, path := range slices.Sorted(maps.Keys(pkgs)) {
		p := pkgs[path]
		rel, ok := strings.CutPrefix(path, module+"/")
		if !ok || len(p.GoFiles) == 0 {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			out = append(out, fmt.Sprintf("%s has no package doc comment", rel))
		}
		side, mod := moduleOf(rel)
		for _, imp := range p.Imports {
			irel, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			iside, imod := moduleOf(irel)
			switch {
			case side == "edge" && iside == "cloud":
				out = append(out, fmt.Sprintf("%s imports %s: the edge never imports the cloud", rel, irel))
			case side != "" && side == iside && mod != "app" && imod != mod:
				out = append(out, fmt.Sprintf("%s imports %s: modules talk through the message bus, not each other's packages", rel, irel))
			}
		}
		if strings.HasPrefix(rel, "pkg/apis/") {
			for _, d := range p.Deps {
				if slices.Contains(cliFrameworks, d) {
					out = append(out, fmt.Sprintf("%s depends on %s: API types carry no CLI framework", rel, d))
				}
			}
		}
	}
	return out
}

// moduleOf splits cloud/<module>/... and edge/<module>/... paths; other paths have no side.
func moduleOf(rel string) (side, mod string) {
	parts := strings.SplitN(rel, "/", 3)
	if len(parts) < 2 || (parts[0] != "cloud" && parts[0] != "edge") {
		return "", ""
	}
	return parts[0], parts[1]
}

func goList(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", dir, err)
	}
	return dir
}

func TestArchitecture(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the whole module")
	}
	pkgs := map[string]pkg{}
	for _, p := range goList(t, "./...") {
		pkgs[p.ImportPath] = p
	}
	var edgecore []string
	for _, p := range goList(t, "-deps", "./cmd/edgecore") {
		edgecore = append(edgecore, p.ImportPath)
	}
	for _, v := range violations(pkgs, edgecore) {
		t.Error(v)
	}
}

// TestRulesCatchViolations is the test of the test: each rule fires on a graph that breaks it.
func TestRulesCatchViolations(t *testing.T) {
	ok := func(path string, imports ...string) pkg {
		return pkg{ImportPath: module + "/" + path, Doc: "Package x does y.", GoFiles: []string{"x.go"}, Imports: imports}
	}
	tests := []struct {
		name     string
		pkgs     []pkg
		edgecore []string
		want     string // in one of the violations; "" means none
	}{
		{"clean", []pkg{ok("edge/edgehub", module+"/pkg/beehive"), ok("cloud/app", module+"/cloud/cloudhub")}, []string{"github.com/spf13/cobra"}, ""},
		{"edge imports cloud", []pkg{ok("edge/edged", module+"/cloud/edgecontroller")}, nil, "the edge never imports the cloud"},
		{"module imports a sibling", []pkg{ok("cloud/edgecontroller", module+"/cloud/cloudhub/certificate")}, nil, "modules talk through the message bus"},
		{"edge module imports a sibling", []pkg{ok("edge/devicetwin/dtclient", module+"/edge/metamanager/store")}, nil, "modules talk through the message bus"},
		{"controller-runtime in edgecore", nil, []string{"sigs.k8s.io/controller-runtime/pkg/client"}, "edgecore links sigs.k8s.io/controller-runtime"},
		{"clientset in edgecore", nil, []string{"k8s.io/client-go/kubernetes"}, "edgecore links k8s.io/client-go/kubernetes"},
		{"beego in edgecore", nil, []string{"github.com/beego/beego/v2/server/web"}, "edgecore links github.com/beego"},
		{"cobra in API types", []pkg{{ImportPath: module + "/pkg/apis/foo/v1", Doc: "Package v1.", GoFiles: []string{"t.go"}, Deps: []string{"github.com/spf13/cobra"}}}, nil, "API types carry no CLI framework"},
		{"no doc", []pkg{{ImportPath: module + "/pkg/foo", GoFiles: []string{"f.go"}}}, nil, "has no package doc comment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]pkg{}
			for _, p := range tt.pkgs {
				m[p.ImportPath] = p
			}
			got := violations(m, tt.edgecore)
			if tt.want == "" {
				if len(got) > 0 {
					t.Errorf("violations = %v, want none", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(v string) bool { return strings.Contains(v, tt.want) }) {
				t.Errorf("violations = %v, want one saying %q", got, tt.want)
			}
		})
	}
}

// TestNoBinaryTracked: build output is never committed; images for the docs are the only binary files.
func TestNoBinaryTracked(t *testing.T) {
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if f == "" || strings.HasPrefix(f, "docs/images/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(repoRoot(t), f))
		if err != nil {
			continue // deleted in the work tree
		}
		head := data[:min(len(data), 8000)]
		if bytes.IndexByte(head, 0) >= 0 || bytes.HasPrefix(data, []byte("\x7fELF")) {
			t.Errorf("binary file tracked: %s", f)
		}
	}
}
