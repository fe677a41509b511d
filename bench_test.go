package discovery_test

// Benchmarks of every layer beside its floor, in one package so that one
// `go test -bench` run compares them on one machine at one time. With
// DISCOVERY_TEST_REDIS and DISCOVERY_TEST_POSTGRES set they use the real
// servers; otherwise miniredis and SQLite.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

const benchService = "db_svc"

// benchDB is PostgreSQL when DISCOVERY_TEST_POSTGRES is set, else SQLite.
func benchDB(b *testing.B, ns string) (*gorm.DB, string) {
	if os.Getenv(testutil.EnvPostgres) != "" {
		return testutil.Postgres(b, ns+"_"), "postgres"
	}
	return testutil.SQLite(b), "sqlite"
}

// benchRegistry returns a Registry holding benchService with n instances.
func benchRegistry(b *testing.B, n int, opts ...discovery.Option) *discovery.Registry {
	b.Helper()
	r, err := discovery.New(append([]discovery.Option{discovery.WithoutHealthChecks()}, opts...)...) // made-up addresses: no probes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	for i := range n {
		if _, err := r.Register(context.Background(), discovery.Instance{Service: benchService, Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080,
			Zone: "eu-1a", Tags: []string{"primary"}, Metadata: map[string]string{"team": "core"}}); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// benchGet times Lookup. With a clock, it moves the clock past the
// freshness window before every lookup, so each one misses L1 and loads from
// the next layer; leases are long, so nothing else changes.
func benchGet(b *testing.B, r *discovery.Registry, clock *discoverytest.Clock, want discovery.Layer) {
	ctx := context.Background()
	if res, err := r.Lookup(ctx, benchService); err != nil || len(res.Service.Instances) != 10 {
		b.Fatalf("warm-up Lookup = %+v, %v", res, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if clock != nil {
			clock.Advance(time.Microsecond)
		}
		res, err := r.Lookup(ctx, benchService)
		if err != nil || res.Layer != want {
			b.Fatalf("Lookup = %v, %v; want an answer from %v", res.Layer, err, want)
		}
	}
}

// missEveryTime returns options under which every lookup misses L1 once its
// clock has moved (see benchGet).
func missEveryTime() (*discoverytest.Clock, []discovery.Option) {
	clock := discoverytest.NewClock(time.Now())
	return clock, []discovery.Option{discovery.WithClock(clock), discovery.WithLeaseTTL(1000 * time.Hour),
		discovery.WithCacheFreshness(time.Nanosecond, 0, time.Minute)}
}

func BenchmarkGet(b *testing.B) {
	miss := func(b *testing.B, want discovery.Layer, opts ...discovery.Option) {
		clock, o := missEveryTime()
		benchGet(b, benchRegistry(b, 10, append(o, opts...)...), clock, want)
	}
	b.Run("layer=L1", func(b *testing.B) {
		benchGet(b, benchRegistry(b, 10, discovery.WithStore(discoverytest.NewBackend())), nil, discovery.LayerL1)
	})
	b.Run("layer=L2", func(b *testing.B) {
		ns := strings.TrimSuffix(testutil.Prefix(b), "_")
		rdb, _ := testutil.Redis(b, ns)
		miss(b, discovery.LayerL2, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(ns))
	})
	b.Run("layer=L3", func(b *testing.B) {
		ns := strings.TrimSuffix(testutil.Prefix(b), "_")
		db, _ := benchDB(b, ns)
		miss(b, discovery.LayerL3, discovery.WithDB(db), discovery.WithNamespace(ns))
	})
	// Loads straight from each store (no L2), as before the cache layers.
	b.Run("store=memory", func(b *testing.B) {
		miss(b, discovery.LayerL3, discovery.WithStore(discoverytest.NewBackend()))
	})
	b.Run("store=sqlite", func(b *testing.B) {
		miss(b, discovery.LayerL3, discovery.WithDB(testutil.SQLite(b)))
	})
	if os.Getenv(testutil.EnvPostgres) != "" {
		b.Run("store=postgres", func(b *testing.B) {
			ns := strings.TrimSuffix(testutil.Prefix(b), "_")
			miss(b, discovery.LayerL3, discovery.WithDB(testutil.Postgres(b, ns+"_")), discovery.WithNamespace(ns))
		})
	}
}

func BenchmarkGetParallel(b *testing.B) {
	b.Run("layer=L1", func(b *testing.B) {
		r := benchRegistry(b, 10, discovery.WithStore(discoverytest.NewBackend()))
		ctx := context.Background()
		if _, err := r.Get(ctx, benchService); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if svc, err := r.Get(ctx, benchService); err != nil || len(svc.Instances) != 10 {
					b.Fatal("miss")
				}
			}
		})
	})
}

type floorEntry struct{ svc *discovery.Service }

// BenchmarkFloor measures what each layer cannot beat: a bare ristretto Get,
// a map behind an atomic pointer, a bare go-redis GET of the bytes L2 holds
// for the service, and a bare GORM query of the rows an L3 load reads.
func BenchmarkFloor(b *testing.B) {
	ctx := context.Background()
	b.Run("op=ristretto_get", func(b *testing.B) {
		c, err := ristretto.NewCache(&ristretto.Config[string, *floorEntry]{NumCounters: 1e5, MaxCost: 1e4, BufferItems: 64, IgnoreInternalCost: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.Set(benchService, &floorEntry{svc: &discovery.Service{Name: benchService}}, 1)
		c.Wait()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if e, ok := c.Get(benchService); !ok || e.svc == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("op=atomic_map", func(b *testing.B) {
		var p atomic.Pointer[map[string]*floorEntry]
		m := map[string]*floorEntry{benchService: {svc: &discovery.Service{Name: benchService}}}
		p.Store(&m)
		b.ReportAllocs()
		for b.Loop() {
			if e := (*p.Load())[benchService]; e == nil {
				b.Fatal("miss")
			}
		}
	})
	b.Run("op=redis_get", func(b *testing.B) {
		ns := strings.TrimSuffix(testutil.Prefix(b), "_")
		rdb, _ := testutil.Redis(b, ns)
		r := benchRegistry(b, 10, discovery.WithStore(discoverytest.NewBackend()))
		svc, err := r.Store().Load(ctx, benchService)
		if err != nil {
			b.Fatal(err)
		}
		key := ns + ":floor:{" + benchService + "}"
		if err := rdb.Set(ctx, key, codec.Encode(svc, time.Now()), time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if v, err := rdb.Get(ctx, key).Bytes(); err != nil || len(v) == 0 {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=gorm_query", func(b *testing.B) {
		ns := strings.TrimSuffix(testutil.Prefix(b), "_")
		db, _ := benchDB(b, ns)
		benchRegistry(b, 10, discovery.WithDB(db), discovery.WithNamespace(ns))
		s, err := sqlstore.New(db, ns+"_")
		if err != nil {
			b.Fatal(err)
		}
		q, args := s.LoadQuery(benchService)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			var rows []loadRow
			if err := db.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil || len(rows) != 11 {
				b.Fatalf("%d rows, %v", len(rows), err)
			}
		}
	})
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

func BenchmarkRegister(b *testing.B) {
	stores := map[string]func(b *testing.B) []discovery.Option{
		"memory": func(b *testing.B) []discovery.Option {
			return []discovery.Option{discovery.WithStore(discoverytest.NewBackend())}
		},
		"sqlite": func(b *testing.B) []discovery.Option { return []discovery.Option{discovery.WithDB(testutil.SQLite(b))} },
	}
	if os.Getenv(testutil.EnvPostgres) != "" {
		stores["postgres"] = func(b *testing.B) []discovery.Option {
			ns := strings.TrimSuffix(testutil.Prefix(b), "_")
			return []discovery.Option{discovery.WithDB(testutil.Postgres(b, ns+"_")), discovery.WithNamespace(ns)}
		}
	}
	for _, name := range []string{"memory", "sqlite", "postgres"} {
		mk, ok := stores[name]
		if !ok {
			continue
		}
		b.Run("store="+name, func(b *testing.B) {
			r := benchRegistry(b, 0, mk(b)...)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				g, err := r.Register(ctx, discovery.Instance{Service: benchService, Host: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8080})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = g.Deregister(ctx)
				b.StartTimer()
			}
		})
	}
}

var _ redis.UniversalClient = (*redis.Client)(nil)
