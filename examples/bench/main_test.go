package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery/internal/benchsuite"
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
	if got == "" || got != strings.TrimSpace(got) || !strings.Contains(string(b), got) || strings.ContainsAny(got, ":\n") {
		t.Fatalf("cpuModel() = %q; want the value of a model name line of /proc/cpuinfo", got)
	}
}

// Both forms of the report say where and when they were measured: the
// ratios depend on the machine, and -json, for scripts that keep reports,
// printed the rows alone.
func TestReportsNameTheirMachineAndDate(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	env := environment(now, "2s", 7)
	rows := report(measured(), "sqlite")
	var js bytes.Buffer
	printJSON(&js, env, rows)
	var got Report
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("-json output does not decode into a Report: %v\n%s", err, js.Bytes())
	}
	want := Environment{Date: "2026-11-29T09:00:00Z", GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), Redis: env.Redis, Database: env.Database, Benchtime: "2s", Rounds: 7}
	if got.Environment != want || env.Redis == "" || env.Database == "" {
		t.Errorf("-json environment = %+v; want %+v", got.Environment, want)
	}
	if len(got.Rows) != len(rows) || got.Rows[0].Operation != rows[0].Operation {
		t.Errorf("-json rows: %d, first %q; want %d, first %q", len(got.Rows), got.Rows[0].Operation, len(rows), rows[0].Operation)
	}
	var md bytes.Buffer
	printMarkdown(&md, env, rows)
	head, _, _ := strings.Cut(md.String(), "\n")
	for _, s := range []string{want.Date, want.GoVersion, want.CPUModel, want.Redis, want.Database, "2s", "7 rounds"} {
		if !strings.Contains(head, s) {
			t.Errorf("markdown header %q lacks %q", head, s)
		}
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

// measured returns results for every benchmark the report reads, each
// meeting its target: 10 ns/op (the floors 20), 0 allocs.
func measured() map[string]result {
	res := map[string]result{}
	for _, name := range []string{"Floor/op=ristretto_get", "Floor/op=atomic_map", "Get/layer=L1", "Get/layer=L1/metrics=off",
		"Get/layer=L1/metrics=on", "GetAlone", "PickAlone", "GetThenPick", "PickDone/strategy=p2c_ewma", "Register/store=sqlite"} {
		res[name] = result{nsPerOp: 10}
	}
	res["Floor/op=ristretto_get"] = result{nsPerOp: 20}
	res["Floor/op=atomic_map"] = result{nsPerOp: 5}
	res["GetParallel/layer=L1"] = result{nsPerOp: 5}
	for _, s := range benchsuite.Strategies {
		res[fmt.Sprintf("Pick/strategy=%s/instances=10", s)] = result{nsPerOp: 20}
	}
	paired := map[string]float64{"p50-ns": 110e3, "floor-p50-ns": 100e3, "ratio-p50": 1.1}
	res["Get/layer=L2/paired"], res["Get/layer=L3/paired"] = result{extra: paired}, result{extra: paired}
	res["Get/layer=L2"], res["Get/layer=L3"] = result{nsPerOp: 110e3, allocs: 20}, result{nsPerOp: 110e3, allocs: 400}
	res["Floor/op=pubsub"] = result{extra: map[string]float64{"p50-ns": 80e3, "p99-ns": 400e3}}
	res["Invalidation"] = result{allocs: 300, extra: map[string]float64{"p50-ns": 90e3, "p99-ns": 500e3}}
	res["ColdStampede"] = result{extra: map[string]float64{"store-reads/op": 1}}
	res["Scale"] = result{extra: map[string]float64{"l1-hit-rate": 0.8, "l1-bytes/service": 6000}}
	return res
}

func rowOf(t *testing.T, rows []Row, op string) Row {
	t.Helper()
	for _, r := range rows {
		if r.Operation == op {
			return r
		}
	}
	t.Fatalf("no row %q", op)
	return Row{}
}

func metString(m *bool) string {
	if m == nil {
		return "not judged"
	}
	return strconv.FormatBool(*m)
}

// A target that says "0 allocs" is met only without allocations: a row
// whose operation allocates is not "met", whatever its ratio.
func TestZeroAllocTargetsAreJudged(t *testing.T) {
	for _, tt := range []struct{ op, bench string }{
		{"L1 Get (memory)", "Get/layer=L1"},
		{"L1 Get, Prometheus metrics on", "Get/layer=L1/metrics=on"},
		{"Pick + Done, p2c_ewma", "PickDone/strategy=p2c_ewma"},
		{"Pick random, 10 instances", "Pick/strategy=random/instances=10"},
	} {
		res := measured()
		if row := rowOf(t, report(res, "sqlite"), tt.op); row.Met == nil || !*row.Met {
			t.Errorf("%s without allocations: met = %s; want true", tt.op, metString(row.Met))
		}
		r := res[tt.bench]
		r.allocs = 1
		res[tt.bench] = r
		row := rowOf(t, report(res, "sqlite"), tt.op)
		if !strings.Contains(row.Target, "0 allocs") {
			t.Fatalf("%s: target %q", tt.op, row.Target)
		}
		if row.Met == nil || *row.Met {
			t.Errorf("%s at 1 alloc/op, target %q: met = %s; want false", tt.op, row.Target, metString(row.Met))
		}
	}
}

// A benchmark that failed (testing.Benchmark then returns a zero result)
// meets no target: with nothing measured on one side there is no ratio.
func TestFailedBenchmarkMeetsNoTarget(t *testing.T) {
	for _, tt := range []struct{ op, failed string }{
		{"L1 Get (memory)", "Floor/op=ristretto_get"},
		{"L1 Get (memory)", "Get/layer=L1"},
		{"L1 Get, Prometheus metrics on", "Get/layer=L1/metrics=on"},
		{"Get then Pick, 10 instances", "GetAlone"},
		{"Pick p2c_ewma, 10 instances", "Pick/strategy=p2c_ewma/instances=10"},
		{"Invalidation visible on another Registry, p99", "Floor/op=pubsub"},
		{"Invalidation visible on another Registry, p99", "Invalidation"},
		{"Pick + Done, p2c_ewma", "PickDone/strategy=p2c_ewma"},
	} {
		res := measured()
		res[tt.failed] = result{}
		row := rowOf(t, report(res, "sqlite"), tt.op)
		if row.Met == nil || *row.Met {
			t.Errorf("%s with %s failed (value %v, floor %v): met = %s; want false", tt.op, tt.failed, row.Value, row.FloorValue, metString(row.Met))
		}
	}
}
