// Package benchsuite holds the project's benchmarks, so that `go test
// -bench` (through the root package's bench_test.go) and `go run
// ./examples/bench` (through testing.Benchmark) run the very same code.
//
// With DISCOVERY_TEST_REDIS and DISCOVERY_TEST_POSTGRES set they use the
// real servers; otherwise miniredis and SQLite.
package benchsuite

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// Service is the service every benchmark looks up: 10 instances unless said.
const Service = "db_svc"

func ns(b testing.TB) string { return strings.TrimSuffix(testutil.Prefix(b), "_") }

// DB is PostgreSQL when DISCOVERY_TEST_POSTGRES is set, else SQLite.
func DB(b testing.TB, namespace string) (*gorm.DB, string) {
	if os.Getenv(testutil.EnvPostgres) != "" {
		return testutil.Postgres(b, namespace+"_"), "postgres"
	}
	return testutil.SQLite(b), "sqlite"
}

// Registry returns a Registry holding Service with n instances.
func Registry(b testing.TB, n int, opts ...discovery.Option) *discovery.Registry {
	b.Helper()
	r, err := discovery.New(append([]discovery.Option{discovery.WithoutHealthChecks()}, opts...)...) // made-up addresses: no probes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	for i := range n {
		if _, err := r.Register(context.Background(), discovery.Instance{Service: Service, Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080,
			Zone: "eu-1a", Tags: []string{"primary"}, Metadata: map[string]string{"team": "core"}}); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// durations records one duration per iteration for percentiles; it is
// allocated before the timer starts.
type durations []time.Duration

func (d durations) report(b *testing.B) {
	if len(d) == 0 {
		return
	}
	b.ReportMetric(float64(d.p50()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100]), "p99-ns")
}

// p50 sorts d and returns its median.
func (d durations) p50() time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}

// lookup times Lookup. With a clock, it moves the clock past the freshness
// window before every lookup, so each misses L1 and loads from the next
// layer; leases are long, so nothing else changes.
func lookup(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer) {
	ctx := context.Background()
	if res, err := r.Lookup(ctx, Service); err != nil || len(res.Service.Instances) != 10 {
		b.Fatalf("warm-up Lookup = %+v, %v", res, err)
	}
	var d durations
	if clock != nil {
		d = make(durations, b.N)
		settle(b, r, clock, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if clock != nil {
			d[i] = missOnce(b, r, clock, want)
			continue
		}
		if res, err := r.Lookup(ctx, Service); err != nil || res.Layer != want {
			b.Fatalf("Lookup = %v, %v; want an answer from %v", res.Layer, err, want)
		}
	}
	b.StopTimer()
	d.report(b)
}

// settle waits, before the timer starts, until a lookup that misses L1 is
// answered by want. The in-memory backend tells the Registry of each
// registration that sets the benchmark up as it commits, before the
// registration's write-through has put it in L1; the refreshes that starts
// run on for a few milliseconds, and sent a first lookup or two to the
// database (with real Redis about one run in ten): the benchmark failed,
// and the report showed a row of zeros.
func settle(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer) {
	for range 200 {
		clock.Advance(time.Microsecond)
		if res, err := r.Lookup(context.Background(), Service); err == nil && res.Layer == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("no lookup was answered by %v in 1 s", want)
}

// missOnce moves the clock past the freshness window, so that L1 misses,
// and times one Lookup, which must be answered by want.
func missOnce(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer) time.Duration {
	clock.Advance(time.Microsecond)
	start := time.Now()
	res, err := r.Lookup(context.Background(), Service)
	d := time.Since(start)
	if err != nil || res.Layer != want {
		b.Fatalf("Lookup = %v, %v; want an answer from %v", res.Layer, err, want)
	}
	return d
}

// missEveryTime returns options under which every lookup misses L1 once its
// clock has moved (see lookup).
func missEveryTime() (*discoverytest.Clock, []discovery.Option) {
	clock := discoverytest.NewClock(time.Now())
	return clock, []discovery.Option{discovery.WithClock(clock), discovery.WithLeaseTTL(1000 * time.Hour),
		discovery.WithCacheFreshness(time.Nanosecond, 0, time.Minute)}
}

func miss(b *testing.B, want discovery.Layer, opts ...discovery.Option) {
	clock, o := missEveryTime()
	lookup(b, Registry(b, 10, append(o, opts...)...), clock, want)
}

// GetL1 times an L1 hit.
func GetL1(b *testing.B) {
	lookup(b, Registry(b, 10, discovery.WithStore(discoverytest.NewBackend())), nil, discovery.LayerL1)
}

// GetL1Metrics times an L1 hit with Prometheus metrics on (registered with
// a registry of its own) or off: the two are meant to be compared in one run.
func GetL1Metrics(on bool) func(*testing.B) {
	return func(b *testing.B) {
		opts := []discovery.Option{discovery.WithStore(discoverytest.NewBackend())}
		if on {
			opts = append(opts, discovery.WithMetrics(prometheus.NewRegistry()))
		}
		lookup(b, Registry(b, 10, opts...), nil, discovery.LayerL1)
	}
}

// GetL2 times a lookup answered by Redis.
func GetL2(b *testing.B) {
	n := ns(b)
	rdb, _ := testutil.Redis(b, n)
	miss(b, discovery.LayerL2, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(n))
}

// GetL3 times a lookup answered by the database (PostgreSQL or SQLite).
func GetL3(b *testing.B) {
	n := ns(b)
	db, _ := DB(b, n)
	miss(b, discovery.LayerL3, discovery.WithDB(db), discovery.WithNamespace(n))
}

// GetStore times a load straight from one store: "memory", "sqlite" or
// "postgres".
func GetStore(store string) func(*testing.B) {
	return func(b *testing.B) {
		switch store {
		case "memory":
			miss(b, discovery.LayerL3, discovery.WithStore(discoverytest.NewBackend()))
		case "sqlite":
			miss(b, discovery.LayerL3, discovery.WithDB(testutil.SQLite(b)))
		default:
			n := ns(b)
			miss(b, discovery.LayerL3, discovery.WithDB(testutil.Postgres(b, n+"_")), discovery.WithNamespace(n))
		}
	}
}

// GetParallelL1 times L1 hits from every core at once.
func GetParallelL1(b *testing.B) {
	r := Registry(b, 10, discovery.WithStore(discoverytest.NewBackend()))
	ctx := context.Background()
	if _, err := r.Get(ctx, Service); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if svc, err := r.Get(ctx, Service); err != nil || len(svc.Instances) != 10 {
				b.Fatal("miss")
			}
		}
	})
}

type floorEntry struct{ svc *discovery.Service }

// FloorRistretto times a bare ristretto v2 Get of a pointer.
func FloorRistretto(b *testing.B) {
	c, err := ristretto.NewCache(&ristretto.Config[string, *floorEntry]{NumCounters: 1e5, MaxCost: 1e4, BufferItems: 64, IgnoreInternalCost: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.Set(Service, &floorEntry{svc: &discovery.Service{Name: Service}}, 1)
	c.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if e, ok := c.Get(Service); !ok || e.svc == nil {
			b.Fatal("miss")
		}
	}
}

// FloorAtomicMap times a lookup in a map behind an atomic pointer.
func FloorAtomicMap(b *testing.B) {
	var p atomic.Pointer[map[string]*floorEntry]
	m := map[string]*floorEntry{Service: {svc: &discovery.Service{Name: Service}}}
	p.Store(&m)
	b.ReportAllocs()
	for b.Loop() {
		if e := (*p.Load())[Service]; e == nil {
			b.Fatal("miss")
		}
	}
}

// floorKey writes the snapshot of r's Service, encoded as L2 holds it, to
// a key of namespace n of its own and returns the key.
func floorKey(b *testing.B, rdb redis.UniversalClient, n string, r *discovery.Registry) string {
	ctx := context.Background()
	svc, err := r.Store().Load(ctx, Service)
	if err != nil {
		b.Fatal(err)
	}
	key := n + ":floor:{" + Service + "}"
	if err := rdb.Set(ctx, key, codec.Encode(svc, time.Now()), time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	return key
}

// FloorRedisGet times a bare go-redis GET of the bytes L2 holds for the
// service.
func FloorRedisGet(b *testing.B) {
	n := ns(b)
	rdb, _ := testutil.Redis(b, n)
	timeEach(b, redisGet(b, rdb, floorKey(b, rdb, n, Registry(b, 10, discovery.WithStore(discoverytest.NewBackend())))))
}

// redisGet returns the Redis floor's operation: a bare GET of key.
func redisGet(b *testing.B, rdb redis.UniversalClient, key string) func() {
	ctx := context.Background()
	return func() {
		if v, err := rdb.Get(ctx, key).Bytes(); err != nil || len(v) == 0 {
			b.Fatalf("floor GET: %d bytes, %v", len(v), err)
		}
	}
}

// timeEach times op b.N times and reports its percentiles.
func timeEach(b *testing.B, op func()) {
	d := make(durations, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		op()
		d[i] = time.Since(start)
	}
	b.StopTimer()
	d.report(b)
}

// loadRow is the row of the L3 load query, as an application would scan it
// with GORM.
type loadRow struct {
	K              int
	Revision       int64
	Config         *string
	ConfigRevision int64
	ID, Host       string
	Port, Method   int
	Weight         int
	Zone, Version  string
	Tags, Metadata string
	HealthPath     string
	CheckKind      int
	Status         int
	RegisteredAt   int64
	ExpiresAt      int64
}

// FloorGormQuery times a bare GORM query returning the rows an L3 load
// reads (the same statement, scanned by GORM into structs).
func FloorGormQuery(b *testing.B) {
	n := ns(b)
	db, _ := DB(b, n)
	Registry(b, 10, discovery.WithDB(db), discovery.WithNamespace(n))
	timeEach(b, gormQuery(b, db, n))
}

// gormQuery returns the database floor's operation: the query the L3 load
// of Service runs (in namespace n), scanned with GORM into loadRows.
func gormQuery(b *testing.B, db *gorm.DB, n string) func() {
	ctx := context.Background()
	s, err := sqlstore.New(db, n+"_", discovery.DefaultDatabaseTimeout)
	if err != nil {
		b.Fatal(err)
	}
	q, args := s.LoadQuery(Service)
	return func() {
		var rows []loadRow
		if err := db.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil || len(rows) != 11 {
			b.Fatalf("floor query: %d rows, %v; want 11", len(rows), err)
		}
	}
}

// Register times one registration (its deregistration is not timed).
func Register(store string) func(*testing.B) {
	return func(b *testing.B) {
		var opts []discovery.Option
		switch store {
		case "memory":
			opts = []discovery.Option{discovery.WithStore(discoverytest.NewBackend())}
		case "sqlite":
			opts = []discovery.Option{discovery.WithDB(testutil.SQLite(b))}
		default:
			n := ns(b)
			opts = []discovery.Option{discovery.WithDB(testutil.Postgres(b, n+"_")), discovery.WithNamespace(n)}
		}
		r := Registry(b, 0, opts...)
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			g, err := r.Register(ctx, discovery.Instance{Service: Service, Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8080})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = g.Deregister(ctx)
			b.StartTimer()
		}
	}
}
