package discovery_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Everything tracked at the module's root goes into the module zip that
// every `go get` of this library downloads: a build output committed by
// mistake (a 46 MB `bench` from `go build ./examples/bench`) made each user
// download it. No tracked file is a compiled executable.
func TestModuleTracksNoExecutable(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git to list the tracked files with")
	}
	out, err := exec.Command(git, "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git work tree: %v", err)
	}
	magics := [][]byte{
		[]byte("\x7fELF"),        // Linux, BSD
		{0xcf, 0xfa, 0xed, 0xfe}, // Mach-O, 64-bit
		[]byte("MZ"),             // Windows PE
	}
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		f, err := os.Open(name)
		if err != nil {
			continue // deleted in the work tree
		}
		head := make([]byte, 4)
		n, _ := f.Read(head)
		_ = f.Close()
		for _, m := range magics {
			if bytes.HasPrefix(head[:n], m) {
				t.Errorf("%s is a compiled executable tracked in the module; every download of the module carries it (git rm --cached %s)", name, name)
			}
		}
	}
}
