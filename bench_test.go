package discovery_test

// Benchmarks of every layer beside its floor, in one package so that one
// `go test -bench` run compares them on one machine at one time. The bodies
// are in internal/benchsuite, shared with `go run ./examples/bench`. With
// DISCOVERY_TEST_REDIS and DISCOVERY_TEST_POSTGRES set they use the real
// servers; otherwise miniredis and SQLite.

import (
	"fmt"
	"os"
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/benchsuite"
	"github.com/rssbot/discovery/internal/testutil"
)

func BenchmarkFloor(b *testing.B) {
	b.Run("op=ristretto_get", benchsuite.FloorRistretto)
	b.Run("op=atomic_map", benchsuite.FloorAtomicMap)
	b.Run("op=redis_get", benchsuite.FloorRedisGet)
	b.Run("op=gorm_query", benchsuite.FloorGormQuery)
	b.Run("op=pubsub", benchsuite.FloorPubSub)
}

func BenchmarkGet(b *testing.B) {
	b.Run("layer=L1", benchsuite.GetL1)
	b.Run("layer=L1/metrics=off", benchsuite.GetL1Metrics(false))
	b.Run("layer=L1/metrics=on", benchsuite.GetL1Metrics(true))
	b.Run("layer=L2", benchsuite.GetL2)
	b.Run("layer=L3", benchsuite.GetL3)
	// Each beside its floor in one loop: p50-ns, floor-p50-ns, ratio-p50.
	b.Run("layer=L2/paired", benchsuite.PairedL2)
	b.Run("layer=L3/paired", benchsuite.PairedL3)
	b.Run("store=memory", benchsuite.GetStore("memory"))
	b.Run("store=sqlite", benchsuite.GetStore("sqlite"))
	if os.Getenv(testutil.EnvPostgres) != "" {
		b.Run("store=postgres", benchsuite.GetStore("postgres"))
	}
}

func BenchmarkGetParallel(b *testing.B) { b.Run("layer=L1", benchsuite.GetParallelL1) }

func BenchmarkPick(b *testing.B) {
	for _, s := range benchsuite.Strategies {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("strategy=%s/instances=%d", s, n), benchsuite.Pick(s, n))
		}
	}
}

// BenchmarkPickCanary is BenchmarkPick's p2c_ewma with weights that
// differ (one instance of weight 1), and Pick + Done with them.
func BenchmarkPickCanary(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("instances=%d", n), benchsuite.PickCanary(n))
	}
	b.Run("done/instances=10", benchsuite.PickDoneCanary)
}

func BenchmarkGetThenPick(b *testing.B) { benchsuite.GetThenPick(b) }

func BenchmarkPickDone(b *testing.B) {
	b.Run("strategy=p2c_ewma", benchsuite.PickDone)
	for _, s := range []discovery.Strategy{discovery.StrategyLeastConnections, discovery.StrategyHealthBased} {
		b.Run("strategy="+s.String(), benchsuite.PickDoneWith(s))
	}
}

func BenchmarkPickParallel(b *testing.B) { benchsuite.PickParallel(b) }

func BenchmarkRegister(b *testing.B) {
	b.Run("store=memory", benchsuite.Register("memory"))
	b.Run("store=sqlite", benchsuite.Register("sqlite"))
	if os.Getenv(testutil.EnvPostgres) != "" {
		b.Run("store=postgres", benchsuite.Register("postgres"))
	}
}

func BenchmarkColdStampede(b *testing.B) { benchsuite.ColdStampede(b) }

func BenchmarkScale(b *testing.B) { benchsuite.Scale(b) }

func BenchmarkInvalidation(b *testing.B) { benchsuite.Invalidation(b) }

func BenchmarkGetAlone(b *testing.B)  { benchsuite.GetAlone(b) }
func BenchmarkPickAlone(b *testing.B) { benchsuite.PickAlone(b) }

// BenchmarkRefreshL2 times a refresh that finds in Redis the snapshot the
// process already holds, and counts the bytes it reads from Redis.
func BenchmarkRefreshL2(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), benchsuite.RefreshL2(n))
	}
}

// BenchmarkRefreshL2Older times a refresh that finds in Redis an older
// snapshot than the process holds, and goes on to the database, and counts
// the bytes it reads from Redis.
func BenchmarkRefreshL2Older(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), benchsuite.RefreshL2Older(n))
	}
}
