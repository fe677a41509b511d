package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// EnvChild names the child role when a test re-executes its own binary.
const EnvChild = "DISCOVERY_TEST_CHILD"

// children maps a role to the function a child process runs.
var children = map[string]func(){}

// RegisterChild declares a role a test binary can be re-executed as.
// Call it from an init function of a _test.go file.
func RegisterChild(role string, fn func()) { children[role] = fn }

// RunChild runs the role named by DISCOVERY_TEST_CHILD and reports true if
// this process is such a child; TestMain returns at once then.
func RunChild() bool {
	role := os.Getenv(EnvChild)
	if role == "" {
		return false
	}
	fn, ok := children[role]
	if !ok {
		os.Stderr.WriteString("unknown child role " + role + "\n")
		os.Exit(2)
	}
	fn()
	return true
}

// Child returns a command that re-executes the test binary as role, with
// extra environment variables.
func Child(t testing.TB, role string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), EnvChild+"="+role), env...)
	cmd.Stderr = os.Stderr
	return cmd
}
