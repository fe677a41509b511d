package discovery_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// README's example is there to be copied: it must compile against this
// module as it stands. It is vetted from a directory inside the module, so
// that its imports resolve to this code and go.mod's versions.
func TestREADMEExampleCompiles(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the example with")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(package main\n.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```go block holding a main package")
	}
	dir, err := os.MkdirTemp(".", "readme_example_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gobin, "vet", "./"+filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("README's example does not build: %v\n%s", err, out)
	}
}
