package benchsuite

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/store/sqlstore"
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
	ctx := context.Background()
	n := ns(b)
	rdb, _ := testutil.Redis(b, n)
	clock, o := missEveryTime()
	r := Registry(b, 10, append(o, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(n))...)
	key := floorKey(b, rdb, n, r)
	paired(b, r, clock, discovery.LayerL2, func() error {
		v, err := rdb.Get(ctx, key).Bytes()
		if err == nil && len(v) == 0 {
			b.Fatal("empty floor value")
		}
		return err
	})
}

// PairedL3 is PairedL2 for a lookup answered by the database and the bare
// GORM query floor (FloorGormQuery's).
func PairedL3(b *testing.B) {
	ctx := context.Background()
	n := ns(b)
	db, _ := DB(b, n)
	clock, o := missEveryTime()
	r := Registry(b, 10, append(o, discovery.WithDB(db), discovery.WithNamespace(n))...)
	s, err := sqlstore.New(db, n+"_")
	if err != nil {
		b.Fatal(err)
	}
	q, args := s.LoadQuery(Service)
	paired(b, r, clock, discovery.LayerL3, func() error {
		var rows []loadRow
		if err := db.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) != 11 {
			b.Fatalf("floor query: %d rows; want 11", len(rows))
		}
		return nil
	})
}

func paired(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer, floor func() error) {
	ctx := context.Background()
	get := func() time.Duration {
		clock.Advance(time.Microsecond) // past the freshness window: L1 misses
		start := time.Now()
		res, err := r.Lookup(ctx, Service)
		d := time.Since(start)
		if err != nil || res.Layer != want {
			b.Fatalf("Lookup = %v, %v; want an answer from %v", res.Layer, err, want)
		}
		return d
	}
	get() // warm-up: connections, prepared statements
	if err := floor(); err != nil {
		b.Fatal(err)
	}
	real, base := make(durations, b.N), make(durations, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			start := time.Now()
			if err := floor(); err != nil {
				b.Fatal(err)
			}
			base[i] = time.Since(start)
		}
		real[i] = get()
		if i%2 == 1 {
			start := time.Now()
			if err := floor(); err != nil {
				b.Fatal(err)
			}
			base[i] = time.Since(start)
		}
	}
	b.StopTimer()
	slices.Sort(real)
	slices.Sort(base)
	p50, f50 := real[len(real)/2], base[len(base)/2]
	b.ReportMetric(float64(p50), "p50-ns")
	b.ReportMetric(float64(f50), "floor-p50-ns")
	b.ReportMetric(float64(p50)/float64(f50), "ratio-p50")
}
