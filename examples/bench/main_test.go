package main

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

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

// ns/op keeps its fraction: the L1 rows are 8 to 60 ns, so a ratio of
// whole nanoseconds (testing.BenchmarkResult.NsPerOp truncates) is off by
// up to an eighth, enough to flip a target's "met".
func TestResultKeepsFractionalNanoseconds(t *testing.T) {
	tests := []struct {
		n    int
		t    time.Duration
		want float64
	}{
		{1000, 8999 * time.Nanosecond, 8.999},
		{1000000, 25900 * time.Microsecond, 25.9},
		{3, 100 * time.Nanosecond, 100.0 / 3},
		{0, 0, 0},
	}
	for _, tt := range tests {
		got := resultOf(testing.BenchmarkResult{N: tt.n, T: tt.t}).nsPerOp
		if math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("ns/op of %d ops in %v = %v; want %v", tt.n, tt.t, got, tt.want)
		}
	}
	// The 2-core row from the README's table: 8.9 ns against 19.0 ns is
	// 2.13x, not the 2.38x of 8 against 19.
	par := resultOf(testing.BenchmarkResult{N: 1000000, T: 8900 * time.Microsecond})
	alone := resultOf(testing.BenchmarkResult{N: 1000000, T: 19000 * time.Microsecond})
	if r := alone.nsPerOp / par.nsPerOp; math.Abs(r-19.0/8.9) > 1e-9 {
		t.Errorf("throughput ratio = %.3f; want %.3f", r, 19.0/8.9)
	}
}

// The table shows the values its ratios are computed from: a fraction of a
// nanosecond under a microsecond, rounded (not truncated) nanoseconds above.
func TestValueShowsWhatRatiosUse(t *testing.T) {
	tests := []struct {
		v      float64
		metric string
		want   string
	}{
		{8.96, "ns/op", "9.0ns"},
		{25.94, "ns/op", "25.9ns"},
		{68892.7, "p50-ns", "68.893µs"},
		{0, "ns/op", ""},
		{0.804, "l1-hit-rate", "80.4%"},
	}
	for _, tt := range tests {
		if got := value(tt.v, tt.metric); got != tt.want {
			t.Errorf("value(%v, %q) = %q; want %q", tt.v, tt.metric, got, tt.want)
		}
	}
}
