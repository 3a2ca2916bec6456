//go:build !vmtest

// The host runs this (make unit); the VM test run (-tags vmtest) need not
// compile the README again under emulation.

package devmem_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// snippetImports are the packages README snippets may use, by the name
// they are used with.
var snippetImports = map[string]string{
	"context": "context",
	"cuda":    "github.com/devmem-go/devmem/cuda",
	"devmem":  "github.com/devmem-go/devmem",
	"errors":  "errors",
	"fmt":     "fmt",
	"io":      "io",
	"log":     "log",
	"net":     "net",
	"netip":   "net/netip",
	"nic":     "github.com/devmem-go/devmem/nic",
	"os":      "os",
	"syscall": "syscall",
	"time":    "time",
	"unix":    "golang.org/x/sys/unix",
}

var goBlock = regexp.MustCompile("(?ms)^```go\n(.*?)^```")

// readmeSnippets returns the ```go blocks of md.
func readmeSnippets(md string) []string {
	var out []string
	for _, m := range goBlock.FindAllStringSubmatch(md, -1) {
		out = append(out, m[1])
	}
	return out
}

// snippetFile makes a Go file of a snippet (top-level declarations):
// the package clause and the imports of the package names it uses.
func snippetFile(pkg, code string) string {
	var imports []string
	// Names in comments ("or cuda.Memory.Export") do not count.
	uncommented := regexp.MustCompile(`//.*`).ReplaceAllString(code, "")
	for name, path := range snippetImports {
		if regexp.MustCompile(`(^|[^.\w])` + name + `\.`).MatchString(uncommented) {
			imports = append(imports, fmt.Sprintf("%q", path))
		}
	}
	sort.Strings(imports)
	return "package " + pkg + "\n\nimport (\n\t" + strings.Join(imports, "\n\t") + "\n)\n\n" + code
}

// buildSnippets compiles the snippets as the files of a package that
// exists only in a build overlay (inside this module, so it builds against
// the working tree), and returns the compiler's complaint if any.
func buildSnippets(t *testing.T, snippets []string) error {
	t.Helper()
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	overlay := map[string]string{}
	pkgDir := filepath.Join(root, "internal", "readmesnippets")
	for i, code := range snippets {
		src := filepath.Join(tmp, fmt.Sprintf("snippet%d.go", i))
		if err := os.WriteFile(src, []byte(snippetFile("readmesnippets", code)), 0o644); err != nil {
			t.Fatal(err)
		}
		overlay[filepath.Join(pkgDir, fmt.Sprintf("snippet%d.go", i))] = src
	}
	b, _ := json.Marshal(map[string]any{"Replace": overlay})
	ov := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(ov, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-overlay", ov, "./internal/readmesnippets")
	cmd.Env = append(os.Environ(), "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// TestREADMESnippetsCompile compiles every Go block of README.md, so a
// snippet that stops compiling with the API fails the test.
func TestREADMESnippetsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	md, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	snippets := readmeSnippets(string(md))
	if len(snippets) < 2 {
		t.Fatalf("found %d Go blocks in README.md; the extraction is broken", len(snippets))
	}
	if err := buildSnippets(t, snippets); err != nil {
		t.Errorf("README.md Go blocks do not compile (snippetN.go is block N, counting from 0, with package and imports added): %v", err)
	}
}

// TestREADMESnippetCheckFails makes sure the check above can fail.
func TestREADMESnippetCheckFails(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	blocks := readmeSnippets("x\n```go\nfunc f() error { _, err := devmem.NewUDMABuf(1, 2, 3); return err }\n```\n")
	if len(blocks) != 1 {
		t.Fatalf("blocks %q", blocks)
	}
	if err := buildSnippets(t, blocks); err == nil {
		t.Error("a snippet calling NewUDMABuf with three arguments compiled")
	}
}
