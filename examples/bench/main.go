// Bench runs the project's benchmarks in this process and prints each
// operation beside its floor (what the layer cannot beat, measured in the
// same run) and beside the seed's claim for that layer.
//
//	go run ./examples/bench            # a markdown table
//	go run ./examples/bench -json      # the same as JSON: {"environment": {...}, "rows": [...]}
//	go run ./examples/bench -benchtime 2s
//	go run ./examples/bench -rounds 9  # more rounds of the benchmarks that targets compare
//
// With DISCOVERY_TEST_REDIS and DISCOVERY_TEST_POSTGRES set it measures the
// real servers; otherwise miniredis and SQLite.
package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/benchsuite"
	"github.com/rssbot/discovery/internal/testutil"
)

// Row is one line of the report.
type Row struct {
	Operation   string  `json:"operation"`
	Benchmark   string  `json:"benchmark"`
	Metric      string  `json:"metric"` // what Value is: ns/op, p50-ns, p99-ns, ...
	Value       float64 `json:"value"`
	AllocsPerOp int64   `json:"allocs_per_op"`
	Floor       string  `json:"floor,omitempty"`
	FloorValue  float64 `json:"floor_value,omitempty"`
	Ratio       float64 `json:"ratio,omitempty"` // Value / FloorValue
	Target      string  `json:"target,omitempty"`
	Met         *bool   `json:"met,omitempty"`
	SeedClaimNs float64 `json:"seed_claim_ns,omitempty"`
	SpeedUp     float64 `json:"speed_up,omitempty"` // SeedClaimNs / Value
}

// Environment is where and when a report was measured: its ratios depend
// on the machine (a Redis round trip of 20 µs on one host and 40 µs on
// another moves the L2 ratio by a tenth), so both forms of the report name
// it.
type Environment struct {
	Date      string `json:"date"` // RFC 3339, UTC, when the run ended
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"` // where Linux names it
	Redis     string `json:"redis"`
	Database  string `json:"database"`
	Benchtime string `json:"benchtime"`
	Rounds    int    `json:"rounds"`
}

// Report is what -json prints.
type Report struct {
	Environment Environment `json:"environment"`
	Rows        []Row       `json:"rows"`
}

func environment(now time.Time, benchtime string, rounds int) Environment {
	return Environment{Date: now.UTC().Format(time.RFC3339), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), Redis: backend(testutil.EnvRedis, "miniredis (in-process)"),
		Database: backend(testutil.EnvPostgres, "SQLite (pure Go)"), Benchtime: benchtime, Rounds: rounds}
}

type result struct {
	nsPerOp float64
	allocs  int64
	extra   map[string]float64
}

func (r result) metric(name string) float64 {
	if name == "ns/op" {
		return r.nsPerOp
	}
	return r.extra[name]
}

func main() {
	asJSON := flag.Bool("json", false, "print JSON instead of a markdown table")
	benchtime := flag.String("benchtime", "1s", "time (or Nx iterations) per benchmark, as go test -benchtime")
	rounds := flag.Int("rounds", 5, "interleaved rounds of the benchmarks that targets compare; each reports its median round")
	testing.Init()
	flag.Parse()
	if err := flag.Set("test.benchtime", *benchtime); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "-rounds must be at least 1")
		os.Exit(2)
	}
	rows, err := run(os.Stderr, *rounds)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := environment(time.Now(), *benchtime, *rounds)
	if *asJSON {
		printJSON(os.Stdout, env, rows)
		return
	}
	printMarkdown(os.Stdout, env, rows)
}

func printJSON(w io.Writer, env Environment, rows []Row) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(Report{Environment: env, Rows: rows})
}

func bench(progress io.Writer, name string, fn func(*testing.B)) result {
	fmt.Fprintf(progress, "running %s\n", name)
	return resultOf(testing.Benchmark(fn))
}

// resultOf keeps ns/op's fraction (BenchmarkResult.NsPerOp truncates to
// whole nanoseconds, a large error at the 8-60 ns of the L1 rows).
func resultOf(r testing.BenchmarkResult) result {
	ns := 0.0
	if r.N > 0 {
		ns = float64(r.T.Nanoseconds()) / float64(r.N)
	}
	return result{nsPerOp: ns, allocs: r.AllocsPerOp(), extra: r.Extra}
}

type named struct {
	name   string
	fn     func(*testing.B)
	metric string // what the median is taken of
}

// medianRound runs the benchmarks in rounds, one of each per round, and
// keeps each one's median round by its metric. The host is shared: a burst
// of other work slows whatever runs during it, so a ratio of two benchmarks
// run a minute apart can be off by half; interleaved rounds put both sides
// of every ratio through the same bursts.
func medianRound(progress io.Writer, rounds int, bs []named) map[string]result {
	all := map[string][]result{}
	for i := range rounds {
		for _, b := range bs {
			all[b.name] = append(all[b.name], bench(progress, fmt.Sprintf("%s (round %d of %d)", b.name, i+1, rounds), b.fn))
		}
	}
	res := map[string]result{}
	for _, b := range bs {
		rs := all[b.name]
		slices.SortFunc(rs, func(x, y result) int { return cmp.Compare(x.metric(b.metric), y.metric(b.metric)) })
		res[b.name] = rs[len(rs)/2]
	}
	return res
}

func run(progress io.Writer, rounds int) ([]Row, error) {
	// Every target that is a ratio has both of its sides in these rounds.
	compared := []named{
		{"Floor/op=ristretto_get", benchsuite.FloorRistretto, "ns/op"},
		{"Floor/op=atomic_map", benchsuite.FloorAtomicMap, "ns/op"},
		{"Get/layer=L1", benchsuite.GetL1, "ns/op"},
		{"Get/layer=L1/metrics=off", benchsuite.GetL1Metrics(false), "ns/op"},
		{"Get/layer=L1/metrics=on", benchsuite.GetL1Metrics(true), "ns/op"},
		{"GetAlone", benchsuite.GetAlone, "ns/op"},
		{"GetParallel/layer=L1", benchsuite.GetParallelL1, "ns/op"},
		{"PickAlone", benchsuite.PickAlone, "ns/op"},
		{"GetThenPick", benchsuite.GetThenPick, "ns/op"},
		{"PickDone/strategy=p2c_ewma", benchsuite.PickDone, "ns/op"},
		// L2 and L3 each beside its floor in one loop (see PairedL2).
		{"Get/layer=L2/paired", benchsuite.PairedL2, "ratio-p50"},
		{"Get/layer=L3/paired", benchsuite.PairedL3, "ratio-p50"},
		{"Floor/op=pubsub", benchsuite.FloorPubSub, "p99-ns"},
		{"Invalidation", benchsuite.Invalidation, "p99-ns"},
	}
	for _, s := range benchsuite.Strategies {
		compared = append(compared, named{fmt.Sprintf("Pick/strategy=%s/instances=10", s), benchsuite.Pick(s, 10), "ns/op"})
	}
	res := medianRound(progress, rounds, compared)
	do := func(name string, fn func(*testing.B)) { res[name] = bench(progress, name, fn) }
	store := "sqlite"
	if os.Getenv(testutil.EnvPostgres) != "" {
		store = "postgres"
	}
	do("Register/store="+store, benchsuite.Register(store))
	do("ColdStampede", benchsuite.ColdStampede)
	do("Get/layer=L2", benchsuite.GetL2) // allocations of the lookup alone
	do("Get/layer=L3", benchsuite.GetL3)
	do("Scale", benchsuite.Scale)
	return report(res, store), nil
}

// report builds the table's rows from the measured results.
func report(res map[string]result, store string) []Row {
	const (
		seedMemory   = float64(10 * time.Microsecond)  // the seed: memory ~0.01 ms
		seedRedis    = float64(500 * time.Microsecond) // Redis ~0.5 ms
		seedDatabase = float64(15 * time.Millisecond)  // database ~15 ms
	)
	var rows []Row
	add := func(op, name, metric, floor, floorMetric string, limit float64, target string, seed float64) {
		r := res[name]
		row := Row{Operation: op, Benchmark: name, Metric: metric, Value: r.metric(metric), AllocsPerOp: r.allocs, Target: target}
		if floor != "" {
			row.Floor, row.FloorValue = floor, res[floor].metric(floorMetric)
			if row.FloorValue > 0 {
				row.Ratio = row.Value / row.FloorValue
			}
			if limit > 0 {
				met := row.Ratio > 0 && row.Ratio <= limit // 0: a side failed, nothing measured
				row.Met = &met
			}
		}
		if strings.HasSuffix(target, "0 allocs") { // part of the target: judged with the ratio, if any
			met := row.Value > 0 && r.allocs == 0 && (row.Met == nil || *row.Met)
			row.Met = &met
		}
		if seed > 0 && row.Value > 0 {
			row.SeedClaimNs, row.SpeedUp = seed, seed/row.Value
		}
		rows = append(rows, row)
	}
	add("L1 Get (memory)", "Get/layer=L1", "ns/op", "Floor/op=ristretto_get", "ns/op", 1.3, "<= 1.3x ristretto_get, 0 allocs", seedMemory)
	add("L1 Get, Prometheus metrics on", "Get/layer=L1/metrics=on", "ns/op", "Get/layer=L1/metrics=off", "ns/op", 1.5, "<= 1.5x metrics off, 0 allocs", 0)
	add("L1 Get, map floor", "Get/layer=L1", "ns/op", "Floor/op=atomic_map", "ns/op", 0, "", 0)
	par := Row{Operation: "L1 Get, 2 cores (throughput x)", Benchmark: "GetParallel/layer=L1", Metric: "ns/op",
		Value: res["GetParallel/layer=L1"].nsPerOp, AllocsPerOp: res["GetParallel/layer=L1"].allocs,
		Floor: "GetAlone", FloorValue: res["GetAlone"].nsPerOp, Target: ">= 1.5x single-goroutine throughput"}
	if par.Value > 0 {
		par.Ratio = par.FloorValue / par.Value
		met := par.Ratio >= 1.5
		par.Met = &met
	}
	rows = append(rows, par)
	pairedRow := func(op, name, alone, floor string, limit float64, target string, seed float64) {
		r := res[name]
		row := Row{Operation: op, Benchmark: name, Metric: "p50-ns", Value: r.metric("p50-ns"), AllocsPerOp: res[alone].allocs,
			Floor: floor, FloorValue: r.metric("floor-p50-ns"), Ratio: r.metric("ratio-p50"), Target: target}
		met := row.Ratio > 0 && row.Ratio <= limit
		row.Met = &met
		if row.Value > 0 {
			row.SeedClaimNs, row.SpeedUp = seed, seed/row.Value
		}
		rows = append(rows, row)
	}
	pairedRow("L2 Get (Redis), p50", "Get/layer=L2/paired", "Get/layer=L2", "redis_get", 1.25, "<= 1.25x redis_get at p50", seedRedis)
	pairedRow("L3 Get (database), p50", "Get/layer=L3/paired", "Get/layer=L3", "gorm_query", 1.2, "<= 1.2x gorm_query", seedDatabase)
	// Get then Pick is judged against the same Get timed alone (Get/layer=L1
	// times Lookup, whose Result the caller copies: a few ns more).
	add("Get alone (the Get of Get then Pick)", "GetAlone", "ns/op", "", "", 0, "", seedMemory)
	add("Pick alone, no options", "PickAlone", "ns/op", "GetAlone", "ns/op", 0, "", 0)
	add("Get then Pick, 10 instances", "GetThenPick", "ns/op", "GetAlone", "ns/op", 2, "<= 2x L1 Get", 0)
	add("Pick + Done, p2c_ewma", "PickDone/strategy=p2c_ewma", "ns/op", "GetAlone", "ns/op", 0, "0 allocs", 0)
	for _, s := range benchsuite.Strategies {
		add("Pick "+s.String()+", 10 instances", fmt.Sprintf("Pick/strategy=%s/instances=10", s), "ns/op", "GetAlone", "ns/op", 3, "<= 3x L1 Get, 0 allocs", 0)
	}
	add("Register ("+store+")", "Register/store="+store, "ns/op", "", "", 0, "", 0)
	rows = append(rows, Row{Operation: "Cold stampede: store reads per 1000 concurrent Gets", Benchmark: "ColdStampede", Metric: "store-reads/op",
		Value: res["ColdStampede"].extra["store-reads/op"], Target: "1", Met: ptr(res["ColdStampede"].extra["store-reads/op"] == 1)})
	add("Invalidation visible on another Registry, p99", "Invalidation", "p99-ns", "Floor/op=pubsub", "p99-ns", 2, "<= 2x bare pub/sub p99", 0)
	add("Invalidation visible on another Registry, p50", "Invalidation", "p50-ns", "Floor/op=pubsub", "p50-ns", 0, "", 0)
	rows = append(rows,
		Row{Operation: "L1 hit rate, 10,000 services, Zipf, L1 of 1,000", Benchmark: "Scale", Metric: "l1-hit-rate", Value: res["Scale"].extra["l1-hit-rate"]},
		Row{Operation: "L1 memory per 10-instance service (bytes)", Benchmark: "Scale", Metric: "l1-bytes/service", Value: res["Scale"].extra["l1-bytes/service"]})
	return rows
}

func ptr(b bool) *bool { return &b }

// cpuModel names the processor where Linux says what it is (see
// Environment). Elsewhere it is empty.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func printMarkdown(w io.Writer, env Environment, rows []Row) {
	model := ""
	if env.CPUModel != "" {
		model = " (" + env.CPUModel + ")"
	}
	fmt.Fprintf(w, "%s: Go %s, %s/%s, %d CPUs%s; Redis: %s; database: %s; -benchtime %s, %d rounds\n\n", env.Date, env.GoVersion,
		env.OS, env.Arch, env.CPUs, model, env.Redis, env.Database, env.Benchtime, env.Rounds)
	fmt.Fprintln(w, "| operation | value | allocs/op | floor | floor value | ratio | target | met | seed's claim | speed-up |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*r.Met]
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.Operation, value(r.Value, r.Metric), r.AllocsPerOp,
			strings.TrimPrefix(r.Floor, "Floor/op="), value(r.FloorValue, r.Metric), num(r.Ratio, "x"), r.Target, met,
			value(r.SeedClaimNs, "ns"), num(r.SpeedUp, "x"))
	}
}

func backend(env, fallback string) string {
	if os.Getenv(env) != "" {
		return "real server (" + env + ")"
	}
	return fallback
}

func value(v float64, metric string) string {
	if v == 0 {
		return ""
	}
	switch {
	case (strings.HasSuffix(metric, "ns") || metric == "ns/op") && v < 1000:
		return fmt.Sprintf("%.1fns", v)
	case strings.HasSuffix(metric, "ns") || metric == "ns/op":
		return time.Duration(math.Round(v)).String()
	case metric == "l1-hit-rate":
		return fmt.Sprintf("%.1f%%", 100*v)
	}
	return fmt.Sprintf("%.0f", v)
}

func num(v float64, unit string) string {
	if v == 0 {
		return ""
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f%s", v, unit)
	}
	return fmt.Sprintf("%.2f%s", v, unit)
}
