package main

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCPUModelNamesTheProcessorLinuxNames(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !strings.Contains(string(b), "model name") {
		if got := cpuModel(); got != "" {
			t.Fatalf("cpuModel() = %q on a system that names no model; want empty", got)
		}
		t.Skip("no model name in /proc/cpuinfo here")
	}
	got := cpuModel()
	if !strings.HasPrefix(got, " (") || !strings.HasSuffix(got, ")") || len(got) < 4 {
		t.Fatalf("cpuModel() = %q; want \" (<model>)\"", got)
	}
	if name := strings.TrimSuffix(strings.TrimPrefix(got, " ("), ")"); !strings.Contains(string(b), name) || strings.ContainsAny(name, ":\n") {
		t.Fatalf("cpuModel() = %q; want the value of a model name line of /proc/cpuinfo", got)
	}
}
