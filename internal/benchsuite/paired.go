package benchsuite

import (
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// PairedL2 times a lookup answered by Redis and the bare GET floor
// (FloorRedisGet's) in one loop, one of each per iteration, in alternating
// order; it reports both p50s (p50-ns, floor-p50-ns) and their ratio.
//
// Separate benchmarks, even in interleaved rounds, put a second or more
// between the two sides, and on a shared host the round trip itself moves
// by half in that time: the L3 ratio read 1.35x in one report and 1.0x in
// the next. Pairs a few hundred µs apart share the host's state.
func PairedL2(b *testing.B) {
	n := ns(b)
	rdb, _ := testutil.Redis(b, n)
	clock, o := missEveryTime()
	r := Registry(b, 10, append(o, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(n))...)
	paired(b, r, clock, discovery.LayerL2, redisGet(b, rdb, floorKey(b, rdb, n, r)))
}

// PairedL3 is PairedL2 for a lookup answered by the database and the bare
// GORM query floor (FloorGormQuery's).
func PairedL3(b *testing.B) {
	n := ns(b)
	db, _ := DB(b, n)
	clock, o := missEveryTime()
	r := Registry(b, 10, append(o, discovery.WithDB(db), discovery.WithNamespace(n))...)
	paired(b, r, clock, discovery.LayerL3, gormQuery(b, db, n))
}

func paired(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer, floor func()) {
	get := func() time.Duration { return missOnce(b, r, clock, want) }
	base := func() time.Duration {
		start := time.Now()
		floor()
		return time.Since(start)
	}
	settle(b, r, clock, want) // warm-up too: connections, prepared statements
	floor()
	lookups, floors := make(durations, b.N), make(durations, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 { // alternate which side goes first
			floors[i], lookups[i] = base(), get()
		} else {
			lookups[i], floors[i] = get(), base()
		}
	}
	b.StopTimer()
	p50, f50 := lookups.p50(), floors.p50()
	b.ReportMetric(float64(p50), "p50-ns")
	b.ReportMetric(float64(f50), "floor-p50-ns")
	b.ReportMetric(float64(p50)/float64(f50), "ratio-p50")
}
