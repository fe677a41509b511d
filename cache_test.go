package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/testutil"
)

func l2Key(ns, service string) string { return ns + ":svc:{" + service + "}" }

// fanOutWorlds are the worlds where changes reach other processes by
// notification: memory (the backend notifies) and every world with Redis.
func fanOutWorlds() []worldKind {
	var out []worldKind
	for _, k := range allWorlds {
		if k.redis || k.sql == nil {
			out = append(out, k)
		}
	}
	return out
}

func redisWorlds() []worldKind {
	var out []worldKind
	for _, k := range allWorlds {
		if k.redis {
			out = append(out, k)
		}
	}
	return out
}

// A registration on one Registry is visible in Get on the others at once,
// through the fan-out, and so is a deregistration and the first
// registration of a service that others had looked up in vain. L1 entries
// stay fresh for an hour here (leases included), so only the fan-out brings
// a change within the 10 s each is given; the slowest is logged (about a
// millisecond here; the load test measures propagation under load).
func TestChangesReachOtherRegistriesThroughFanOut(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k, discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithLeaseTTL(time.Hour))
			a, b, c := w.registry(t), w.registry(t), w.registry(t)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			for _, r := range []*discovery.Registry{b, c} {
				if got := ids(r.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
					t.Fatalf("Get = %s", got)
				}
				if _, err := r.Get(ctx, "new_svc"); !errors.Is(err, discovery.ErrNotFound) {
					t.Fatalf("Get(new_svc) = %v", err)
				}
			}
			var worst time.Duration
			expect := func(what, service, want string) {
				t.Helper()
				for _, r := range []*discovery.Registry{b, c} {
					d := waitFor(t, 10*time.Second, what, func() bool { return ids(r.Get(ctx, service)) == want })
					worst = max(worst, d)
				}
			}
			g := mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
			expect("registration", "db_svc", "10.0.0.1:1,10.0.0.2:2")
			if err := g.Deregister(ctx); err != nil {
				t.Fatal(err)
			}
			expect("deregistration", "db_svc", "10.0.0.1:1")
			mustRegister(t, a, inst("new_svc", "10.0.0.3", 3))
			expect("registration of a service looked up in vain", "new_svc", "10.0.0.3:3")
			t.Logf("slowest change to reach another Registry: %v", worst)
		})
	}
}

// When a change message is lost (published but never received), another
// Registry still sees the change when its L1 entry stops being fresh: the
// writer wrote the new snapshot through to Redis.
func TestLostMessagesBoundedByFreshness(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(t0)
			a, b := w.registry(t, discovery.WithClock(clock)), w.registry(t, discovery.WithClock(clock))
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2) // b's first revalidation is done and cannot catch the change below
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			if got := ids(b.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
				t.Fatalf("Get = %s", got)
			}
			// The change is written and written through to Redis, as a writer
			// does, but its message never arrives.
			in := discovery.Instance{ID: "10.0.0.2:2", Service: "db_svc", Host: "10.0.0.2", Port: 2, Weight: 1,
				RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}
			if _, err := a.Store().Register(ctx, &in); err != nil {
				t.Fatal(err)
			}
			svc, err := a.Store().Load(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if err := w.rdb.Set(ctx, l2Key(w.ns, "db_svc"), codec.Encode(svc, clock.Now()), time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			readsBefore := b.Stats().StoreReads
			clock.Advance(shortestFresh - time.Millisecond)
			if res, err := b.Lookup(ctx, "db_svc"); err != nil || len(res.Service.Instances) != 1 || res.Stale {
				t.Fatalf("inside the freshness window: %+v, %v; want the cached, fresh snapshot", res, err)
			}
			clock.Advance(longestFresh - shortestFresh + time.Millisecond)
			waitFor(t, 2*time.Second, "the change after the freshness window", func() bool {
				return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2"
			})
			if st := b.Stats(); st.StoreReads != readsBefore {
				t.Fatalf("b read the database (%+v); the refresh should come from Redis", st)
			}
		})
	}
}

// A writer that cannot reach Redis (no write-through, no message) leaves
// the others stale for at most one lease TTL: Redis snapshots older than
// that are not served.
func TestWriterWithoutRedisBoundedByLeaseTTL(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(t0)
			b := w.registry(t, discovery.WithClock(clock))
			var quiet []discovery.Option
			if w.db != nil {
				quiet = append(quiet, discovery.WithDB(w.db))
			} else {
				quiet = append(quiet, discovery.WithStore(w.store))
			}
			a, err := discovery.New(append(quiet, discovery.WithNamespace(w.ns), discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())...)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// An instance with a long lease, so that only the age rule applies.
			long := discovery.Instance{ID: "long", Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
			if _, err := a.Store().Register(ctx, &long); err != nil {
				t.Fatal(err)
			}
			if got := ids(b.Get(ctx, "db_svc")); got != "long" {
				t.Fatalf("Get = %s", got)
			}
			waitFor(t, 5*time.Second, "b's write-back", func() bool { return b.Stats().L2Writes == 1 })
			mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
			for clock.Now().Before(t0.Add(discovery.DefaultLeaseTTL)) {
				clock.BlockUntil(2) // a's keepalive and b's reaper
				clock.Advance(time.Second)
				if got := ids(b.Get(ctx, "db_svc")); got != "long" && clock.Now().Before(t0.Add(discovery.DefaultLeaseTTL-discovery.DefaultFresh)) {
					t.Fatalf("at +%v b already sees %s: the test does not show the bound", clock.Now().Sub(t0), got)
				}
			}
			waitFor(t, 5*time.Second, "the change within one lease TTL", func() bool {
				if st := b.Stats(); st.StoreErrors > 0 || st.L2Errors > 0 {
					// A read failed under load (the fake clock holds still, so
					// the retry would wait for ever): let time pass.
					clock.Advance(10 * time.Millisecond)
				}
				return ids(b.Get(ctx, "db_svc")) == "10.0.0.2:2,long"
			})
		})
	}
}

// A live instance that keeps renewing never drops out of any Registry,
// whatever the cache timings; a dead one drops out of every Registry when
// its lease ends, not a cache TTL later.
func TestLeasesAcrossRegistries(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			const ttl = 3 * time.Second
			w := newWorld(t, k, discovery.WithClock(clock), discovery.WithLeaseTTL(ttl))
			regs := []*discovery.Registry{w.registry(t), w.registry(t), w.registry(t)}
			mustRegister(t, regs[0], inst("db_svc", "10.0.0.1", 1))
			dead := discovery.Instance{ID: "dead", Service: "db_svc", Host: "10.0.0.2", Port: 2, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(ttl)}
			if _, err := regs[0].Store().Register(ctx, &dead); err != nil {
				t.Fatal(err)
			}
			for _, r := range regs {
				_ = r.Invalidate(ctx, "db_svc")
			}
			for step := 0; step <= 80; step++ { // 8 s in 100 ms steps
				now := clock.Now()
				want := "10.0.0.1:1"
				if now.Before(t0.Add(ttl)) {
					want += ",dead"
				}
				for i, r := range regs {
					if got := ids(r.Get(ctx, "db_svc")); got != want {
						t.Fatalf("at +%v Registry %d: Get = %s; want %s", now.Sub(t0), i, got, want)
					}
				}
				clock.BlockUntil(len(regs) + 1) // every reaper and the keepalive are waiting
				clock.Advance(100 * time.Millisecond)
			}
		})
	}
}

// 1000 concurrent Gets of a cold service cause exactly one store read.
func TestColdStampedeOneStoreRead(t *testing.T) {
	for _, k := range allWorlds {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			a, b := w.registry(t), w.registry(t)
			for i := range 10 {
				mustRegister(t, a, inst("db_svc", fmt.Sprint("10.0.0.", i+1), 80))
			}
			if w.rdb != nil { // cold in Redis too
				if err := w.rdb.Del(ctx, l2Key(w.ns, "db_svc")).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var loadsBefore int64
			if be, ok := w.store.(*discoverytest.Backend); ok {
				loadsBefore = be.Loads()
			}
			before := b.Stats().StoreReads
			start := make(chan struct{})
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range 1000 {
				wg.Go(func() {
					<-start
					if svc, err := b.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 10 {
						failed.Add(1)
					}
				})
			}
			close(start)
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d Gets failed", failed.Load())
			}
			if n := b.Stats().StoreReads - before; n != 1 {
				t.Fatalf("1000 concurrent Gets of a cold service read the store %d times; want 1", n)
			}
			if be, ok := w.store.(*discoverytest.Backend); ok && be.Loads()-loadsBefore != 1 {
				t.Fatalf("the backend counted %d loads; want 1", be.Loads()-loadsBefore)
			}
		})
	}
}

// Change messages that arrive out of order or twice end at the newest
// revision, and no Registry ever reads a revision lower than one it read.
func TestReorderedAndDuplicatedInvalidations(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			b := w.registry(t)
			mustRegister(t, b, inst("db_svc", "10.0.0.1", 1))
			res, _ := b.Lookup(ctx, "db_svc")
			base := res.Revision
			// Two writes behind the caches' backs: revisions base+1, base+2.
			for i := 2; i <= 3; i++ {
				in := discovery.Instance{ID: fmt.Sprint("x", i), Service: "db_svc", Host: "10.0.0.9", Port: i, Weight: 1, RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
				if _, err := b.Store().Register(ctx, &in); err != nil {
					t.Fatal(err)
				}
			}
			channel := w.ns + ":changes"
			for _, rev := range []int64{base + 2, base + 1, base + 2, base + 1} {
				if err := w.rdb.Publish(ctx, channel, fmt.Sprintf("%d db_svc", rev)).Err(); err != nil {
					t.Fatal(err)
				}
			}
			var seen int64
			waitFor(t, 2*time.Second, "the newest revision", func() bool {
				res, err := b.Lookup(ctx, "db_svc")
				if err != nil {
					t.Fatal(err)
				}
				if res.Revision < seen {
					t.Fatalf("revision went back from %d to %d", seen, res.Revision)
				}
				seen = res.Revision
				return seen == base+2
			})
			for range 100 {
				if res, _ := b.Lookup(ctx, "db_svc"); res.Revision != base+2 || len(res.Service.Instances) != 3 {
					t.Fatalf("after the messages settled: revision %d, %d instances", res.Revision, len(res.Service.Instances))
				}
			}
		})
	}
}

// gatedStore holds a Load after it has read its snapshot until released:
// the slow reader of the delete-then-set race.
type gatedStore struct {
	discovery.Store
	armed   atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func (s *gatedStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	svc, err := s.Store.Load(ctx, name)
	if s.armed.CompareAndSwap(true, false) {
		close(s.read)
		<-s.release
	}
	return svc, err
}

// A reader that read revision 1 from the database, and tries to cache it
// after a writer committed revision 2 and updated the caches, leaves no
// stale entry anywhere: Redis refuses the older snapshot and the reader's
// L1 ends at revision 2.
func TestDeleteThenSetRaceLeavesNoStaleEntry(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	gate := &gatedStore{Store: backend, read: make(chan struct{}), release: make(chan struct{})}
	writer := discoverytest.NewRegistry(t, backend, discovery.WithRedis(rdb), discovery.WithNamespace(ns), discovery.WithoutHealthChecks())
	reader, err := discovery.New(discovery.WithStore(gate), discovery.WithRedis(rdb), discovery.WithNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	mustRegister(t, writer, inst("db_svc", "10.0.0.1", 1))
	if err := rdb.Del(ctx, l2Key(ns, "db_svc")).Err(); err != nil {
		t.Fatal(err)
	}
	gate.armed.Store(true)
	got := make(chan *discovery.Service, 1)
	go func() {
		svc, _ := reader.Get(ctx, "db_svc")
		got <- svc
	}()
	<-gate.read // the reader holds revision 1
	mustRegister(t, writer, inst("db_svc", "10.0.0.2", 2))
	close(gate.release)
	// The Get began before the write, so either revision is a correct answer
	// for it; what matters is what the caches hold afterwards.
	if svc := <-got; svc == nil || svc.Revision < 1 {
		t.Fatalf("the racing reader's Get = %+v", svc)
	}
	waitFor(t, 2*time.Second, "the stale write refused", func() bool { return reader.Stats().L2StaleWrites >= 1 })
	v, err := rdb.Get(ctx, l2Key(ns, "db_svc")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if rev, _, err := codec.ParseHeader(v); err != nil || rev != 2 {
		t.Fatalf("Redis holds revision %d (%v); want 2", rev, err)
	}
	waitFor(t, time.Second, "the reader's L1 at revision 2", func() bool {
		res, _ := reader.Lookup(ctx, "db_svc")
		return res.Revision == 2 && len(res.Service.Instances) == 2
	})
}

// Data in Redis that does not decode is a miss, counted, never a panic.
func TestUndecodableL2IsAMiss(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			a := w.registry(t)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			for i, garbage := range []string{"not a snapshot", "D9" + strings.Repeat("0", 40) + "future format", codec.Header(99, time.Now().UnixNano()) + "\xff\xff"} {
				if err := w.rdb.Set(ctx, l2Key(w.ns, "db_svc"), garbage, time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
				b := w.registry(t)
				if got := ids(b.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
					t.Fatalf("garbage %d: Get = %s", i, got)
				}
				if st := b.Stats(); st.L2DecodeErrors != 1 || st.Lookups[discovery.LayerL3] != 1 {
					t.Fatalf("garbage %d: stats %+v; want one decode error and an L3 answer", i, st)
				}
				// b writes the good snapshot back in the background; let it land first.
				waitFor(t, 5*time.Second, "the write-back", func() bool { return b.Stats().L2Writes == 1 })
			}
		})
	}
}

// README's failure modes: corrupt data in Redis is a miss, counted, and
// deleted, so that it is not read and counted again by every lookup until
// it expires. The database here has no such service, so no write-back
// replaces it: only the deletion can take it out.
func TestUndecodableL2IsDeleted(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			r := w.registry(t)
			key := l2Key(w.ns, "ghost_svc")
			if err := w.rdb.Set(ctx, key, "not a snapshot", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Get(ctx, "ghost_svc"); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("Get over an undecodable snapshot of a service the database does not know: %v; want ErrNotFound", err)
			}
			if st := r.Stats(); st.L2DecodeErrors != 1 {
				t.Fatalf("L2DecodeErrors = %d; want 1", st.L2DecodeErrors)
			}
			if n, err := w.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
				t.Fatalf("Redis still holds the undecodable snapshot (EXISTS %d, %v); want it deleted", n, err)
			}
		})
	}
}

// Invalidate makes every Registry reload a service from the database.
func TestInvalidateReachesEveryRegistry(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			// b's entry stays fresh for an hour (its lease, 15 s, still
			// bounds it), so only the invalidation makes it reload within the
			// wait: one second was too short under -race on a loaded host.
			a, b := w.registry(t), w.registry(t, discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour))
			// Subscribed first: an Invalidate does not move the revision,
			// so the revalidation after a late subscription cannot make up
			// for a message published before it.
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			if _, err := b.Get(ctx, "db_svc"); err != nil {
				t.Fatal(err)
			}
			before := b.Stats().StoreReads
			if err := a.Invalidate(ctx, "db_svc"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "b reloading from the database", func() bool { return b.Stats().StoreReads > before })
			if n, err := w.rdb.Exists(ctx, l2Key(w.ns, "db_svc")).Result(); err != nil || n != 0 && b.Stats().StoreReads == before {
				t.Fatalf("L2 key after Invalidate: %d, %v", n, err)
			}
		})
	}
}

func TestLookupProvenance(t *testing.T) {
	for _, k := range []worldKind{allWorlds[0], allWorlds[2]} { // memory, sqlite+redis
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k, discovery.WithClock(clock))
			a, b := w.registry(t), w.registry(t)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			first, err := b.Lookup(ctx, "db_svc")
			wantFirst := discovery.LayerL3
			if w.rdb != nil {
				wantFirst = discovery.LayerL2 // the registration wrote it through
			}
			if err != nil || first.Layer != wantFirst || first.Stale || first.Revision != 1 {
				t.Fatalf("first Lookup = %+v, %v; want %v", first, err, wantFirst)
			}
			clock.Advance(2 * time.Second)
			hit, _ := b.Lookup(ctx, "db_svc")
			if hit.Layer != discovery.LayerL1 || hit.Age != 2*time.Second || hit.Stale {
				t.Fatalf("second Lookup = %+v; want an L1 hit aged 2s", hit)
			}
			clock.Advance(discovery.DefaultFresh)
			stale, _ := b.Lookup(ctx, "db_svc")
			if stale.Layer != discovery.LayerL1 || !stale.Stale {
				t.Fatalf("Lookup past the freshness window = %+v; want L1, stale", stale)
			}
			st := b.Stats()
			if st.Lookups[discovery.LayerL1] != 2 || st.Lookups[wantFirst] != 1 || st.Stale != 1 {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

// Redis stopped mid-run under a steady load of Gets: none fails, only the
// first calls go to Redis (the others skip it without waiting), and L2 is
// used again soon after its return (probed every 250 ms; the test allows
// 5 s, and logs how long it took).
func TestRedisOutageUnderLoad(t *testing.T) {
	for _, mode := range []string{"down", "blackhole"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			ns, proxy, db := redisBehindProxy(t)
			// A client that lets context deadlines through is used as given,
			// hooks included: reads counts the Registry's Redis reads.
			rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db, MaxRetries: -1, ContextTimeoutEnabled: true})
			t.Cleanup(func() {
				testutil.DeleteKeys(rdb, ns)
				_ = rdb.Close()
			})
			reads := &readCount{}
			rdb.AddHook(reads)
			backend := discoverytest.NewBackend()
			r := discoverytest.NewRegistry(t, backend, discovery.WithRedis(rdb), discovery.WithNamespace(ns),
				// Every Get past 1 ms goes to L2, so the test sees each layer at work.
				discovery.WithCacheFreshness(time.Millisecond, 0, time.Minute), discovery.WithoutHealthChecks())
			mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))

			var (
				stop       = make(chan struct{})
				done       = make(chan struct{})
				gets, slow atomic.Int64
				failures   atomic.Int64
			)
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 1 {
						failures.Add(1)
					}
					if time.Since(start) > 100*time.Millisecond {
						slow.Add(1)
					}
					gets.Add(1)
					time.Sleep(200 * time.Microsecond)
				}
			}()
			time.Sleep(100 * time.Millisecond)
			if reads.n.Load() == 0 {
				t.Fatal("no Redis read counted before the outage: the hook does not see the Registry's commands")
			}
			getsBefore := gets.Load()
			reads.n.Store(0)
			if mode == "down" {
				proxy.Down()
			} else {
				proxy.Blackhole(true)
			}
			time.Sleep(time.Second)
			hitsBefore := r.Stats().L2Hits
			during, getsDuring := reads.n.Load(), gets.Load()-getsBefore
			proxy.Blackhole(false)
			proxy.Up()
			back := waitFor(t, 5*time.Second, "L2 hits again", func() bool { return r.Stats().L2Hits > hitsBefore+5 })
			close(stop)
			<-done
			t.Logf("%d Gets, %d slower than 100ms, %d Redis reads among the %d Gets of the outage, L2 used again %v after Redis returned; stats %+v",
				gets.Load(), slow.Load(), during, getsDuring, back, r.Stats())
			if failures.Load() != 0 {
				t.Fatalf("%d of %d Gets failed during the Redis outage; want 0", failures.Load(), gets.Load())
			}
			if during > 2 {
				t.Fatalf("%d Redis reads during the outage (%d Gets); want at most the first ones (2)", during, getsDuring)
			}
		})
	}
}

// readCount is a go-redis hook that counts the reads it sees: of a snapshot
// (MGET, with the service's generation), of its header (GETRANGE) or of a
// generation alone (GET).
type readCount struct{ n atomic.Int64 }

func (h *readCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *readCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *readCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "mget" || name == "get" || name == "getrange" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// outageSetup is a world whose database a test can cut away (down) and
// bring back (up).
type outageSetup struct {
	opts     []discovery.Option
	down, up func()
}

// outageWorlds: the in-memory store (failing on command) always, and
// PostgreSQL through a fault proxy, with and without Redis, when configured.
var outageWorlds = map[string]func(t *testing.T) outageSetup{
	"memory": func(t *testing.T) outageSetup {
		b := discoverytest.NewBackend()
		return outageSetup{opts: []discovery.Option{discovery.WithStore(b)},
			down: func() { b.SetFailure(errors.New("connection refused")) }, up: func() { b.SetFailure(nil) }}
	},
	"postgres+redis": func(t *testing.T) outageSetup {
		ns := strings.TrimSuffix(testutil.Prefix(t), "_")
		db, proxy := testutil.PostgresVia(t, ns+"_")
		rdb, _ := testutil.Redis(t, ns)
		return outageSetup{opts: []discovery.Option{discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithNamespace(ns)},
			down: proxy.Down, up: proxy.Up}
	},
	"postgres": func(t *testing.T) outageSetup {
		ns := strings.TrimSuffix(testutil.Prefix(t), "_")
		db, proxy := testutil.PostgresVia(t, ns+"_")
		return outageSetup{opts: []discovery.Option{discovery.WithDB(db), discovery.WithNamespace(ns)}, down: proxy.Down, up: proxy.Up}
	},
}

// The database cut away: Gets serve the cached snapshot, marked stale, and
// writes fail with ErrUnavailable wrapping the cause.
func TestDatabaseOutageServesStale(t *testing.T) {
	for name, mk := range outageWorlds {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := mk(t)
			clock := discoverytest.NewClock(time.Now())
			r, err := discovery.New(append(s.opts, discovery.WithClock(clock), discovery.WithLoadTimeout(2*time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.up(); r.Close() }()
			mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
			if _, err := r.Get(ctx, "db_svc"); err != nil {
				t.Fatal(err)
			}
			s.down()
			for _, step := range []time.Duration{6 * time.Second, 20 * time.Second, time.Minute} {
				clock.Advance(step) // past freshness, past the lease: only stale-if-error is left
				res, err := r.Lookup(ctx, "db_svc")
				if err != nil || !res.Stale || len(res.Service.Instances) != 1 {
					t.Fatalf("Lookup %v into the outage = %+v, %v; want the cached snapshot, stale", step, res, err)
				}
			}
			_, err = r.Register(ctx, inst("db_svc", "10.0.0.2", 2))
			var be *discovery.BackendError
			if !errors.Is(err, discovery.ErrUnavailable) || !errors.As(err, &be) || be.Backend != "database" || be.Unwrap() == nil {
				t.Fatalf("Register during the outage = %v; want ErrUnavailable wrapping the cause", err)
			}
		})
	}
}

// A database black-holed (as by a partition, where TCP holds a call for
// minutes): every call ends within its timeout with ErrUnavailable, for a
// caller whose context has no deadline. Register, Deregister and
// UpdateConfig are bounded by WithDatabaseTimeout, the load of a Get that
// has nothing cached by WithLoadTimeout; a Get of a cached service answers
// stale. A caller's own, sooner deadline still gets its own context's error.
func TestDatabaseBlackholedCallsEndWithinTheirTimeouts(t *testing.T) {
	const bound = 10 * time.Second // far under TCP's minutes, far over the 300 ms timeouts
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db, proxy := testutil.PostgresVia(t, ns+"_")
	r, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(),
		discovery.WithDatabaseTimeout(300*time.Millisecond), discovery.WithLoadTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { proxy.Blackhole(false); r.Close() }()
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Register", func(ctx context.Context) error { _, err := r.Register(ctx, inst("db_svc", "10.0.0.2", 2)); return err }},
		{"Deregister", func(ctx context.Context) error { return r.Deregister(ctx, "db_svc", g.Instance().ID) }},
		{"UpdateConfig", func(ctx context.Context) error {
			_, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"a":1}`))
			return err
		}},
		{"Get uncached", func(ctx context.Context) error { _, err := r.Get(ctx, "other_svc"); return err }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call(ctx)
		if d := time.Since(start); d > bound || !errors.Is(err, discovery.ErrUnavailable) {
			t.Fatalf("%s with the database black-holed: %v after %v; want ErrUnavailable within %v", c.name, err, d, bound)
		}
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err = c.call(short)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, discovery.ErrUnavailable) {
			t.Fatalf("%s past the caller's own deadline: %v; want its context's error", c.name, err)
		}
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 1 {
		t.Fatalf("Get of the cached service = %v, %v; want it answered", svc, err)
	}
}

// gatedRegistry returns a Registry on a fake clock whose database goes
// through a failGate.
func gatedRegistry(t *testing.T) (*discovery.Registry, *discoverytest.Backend, *discoverytest.Clock, *failGate) {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	gate := &failGate{Store: backend, entered: make(chan struct{}), release: make(chan struct{})}
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(gate), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	return r, backend, clock, gate
}

// failGate fails one Load, once released, as a database that went away
// would: the load began in an outage that may have ended by its return.
type failGate struct {
	discovery.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *failGate) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("connection refused")}
	}
	return s.Store.Load(ctx, name)
}

// A lookup that joined a load already under way when it began, and that
// load failed, loads once more by itself: it does not answer with a failure
// met before it asked. It did (TestNoInstanceExpiresBecauseOfADatabaseOutage
// failed once in CI: a Get right after the outage joined a refresh begun in
// it, before the database had answered anything).
func TestLoadJoinedAndFailedIsRetried(t *testing.T) {
	ctx := context.Background()
	r, backend, clock, gate := gatedRegistry(t)
	cold := discovery.Instance{ID: "c1", Service: "cold_svc", Host: "10.0.0.2", Port: 2, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := backend.Register(ctx, &cold); err != nil { // behind r's back: r's database has not answered since
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	gate.armed.Store(true)
	first := getAsync(ctx, r, "cold_svc")
	<-gate.entered
	second := getAsync(ctx, r, "cold_svc")
	waitFor(t, 5*time.Second, "the second Get to join the load", joinedLoad)
	close(gate.release)
	if res := <-second; res.err != nil || len(res.svc.Instances) != 1 {
		t.Fatalf("the Get that joined it = %+v, %v; want the instance, loaded again", res.svc, res.err)
	}
	// The load's own caller met the outage: its failure stands, unless the
	// second's load answered before it looked (then the database answered
	// after its load began, and it loads again too).
	if res := <-first; !errors.Is(res.err, discovery.ErrUnavailable) && (res.err != nil || len(res.svc.Instances) != 1) {
		t.Fatalf("the Get whose load failed = %+v, %v; want ErrUnavailable or the instance", res.svc, res.err)
	}
}

type getResult struct {
	svc *discovery.Service
	err error
}

// getAsync runs Get in a goroutine of its own; the result comes on the channel.
func getAsync(ctx context.Context, r *discovery.Registry, service string) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		svc, err := r.Get(ctx, service)
		ch <- getResult{svc, err}
	}()
	return ch
}

// joinedLoad reports whether a goroutine waits in a singleflight call that
// another runs: a lookup that joined a load.
func joinedLoad() bool {
	buf := make([]byte, 1<<20)
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "singleflight.(*Group).Do(") && strings.Contains(g, "sync.(*WaitGroup).Wait(") {
			return true
		}
	}
	return false
}

// A lookup whose load began before the database last answered, and failed,
// loads again instead of answering with that failure: the outage it met is
// over. It answered with the error (a lookup right after an outage joined
// a refresh begun in it; 1 run in 150 of TestRenewalSurvivesDatabaseOutage
// under load).
func TestLoadFailedBeforeTheDatabaseAnsweredIsRetried(t *testing.T) {
	ctx := context.Background()
	r, _, clock, gate := gatedRegistry(t)
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	gate.armed.Store(true)
	done := getAsync(ctx, r, "cold_svc")
	<-gate.entered
	mustRegister(t, r, inst("cold_svc", "10.0.0.2", 2)) // the database answers after the load began
	close(gate.release)
	res := <-done
	if res.err != nil || len(res.svc.Instances) != 1 {
		t.Fatalf("Get = %+v, %v; want the instance, loaded again", res.svc, res.err)
	}
	// A load that fails with nothing answered since it began is an outage:
	// its error stands, and it is not retried.
	gate.entered, gate.release = make(chan struct{}), make(chan struct{})
	gate.armed.Store(true)
	close(gate.release)
	clock.Advance(time.Second)
	_, err := r.Get(ctx, "other_svc")
	if !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get in an outage = %v; want ErrUnavailable", err)
	}
}

// A "not found" answered from L1 counts in Stats().NotFound as one answered
// by a load does: every lookup of a service with no live instance.
func TestNotFoundCountsEveryLookup(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(discoverytest.NewClock(t0)),
		discovery.WithoutHealthChecks())
	for i := 0; i < 3; i++ {
		if _, err := r.Get(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get %d = %v; want ErrNotFound", i, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := r.Lookup(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Lookup %d = %v; want ErrNotFound", i, err)
		}
	}
	s := r.Stats()
	if s.NotFound != 5 {
		t.Fatalf("Stats().NotFound = %d after 5 lookups that found nothing; want 5 (lookups %v)", s.NotFound, s.Lookups)
	}
	if s.Lookups[discovery.LayerL1] != 4 {
		t.Fatalf("L1 lookups = %d; want 4 (the first one loaded)", s.Lookups[discovery.LayerL1])
	}
}

// loadGate holds the store's Load until released (or until the load's own
// context ends), and says when one is held.
type loadGate struct {
	discovery.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *loadGate) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.once.Do(func() { close(s.entered) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: ctx.Err()}
	}
	return s.Store.Load(ctx, name)
}

// A caller whose context is cancelled (a request's: no deadline) while its
// lookup waits for a slow database returns at once with its own error,
// not after the load timeout with ErrUnavailable.
func TestCancelledCallerDoesNotWaitForTheLoad(t *testing.T) {
	backend := discoverytest.NewBackend()
	gate := &loadGate{Store: backend, entered: make(chan struct{}), release: make(chan struct{})}
	defer close(gate.release)
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(gate), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Get(ctx, "cold_svc")
		done <- err
	}()
	<-gate.entered
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || errors.Is(err, discovery.ErrUnavailable) {
			t.Fatalf("Get after its context was cancelled = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Get still waits 10 s after its context was cancelled (for the load's 1 min timeout)")
	}
}

// commitThenCancel cancels the writer's context as soon as its next write
// (Register, Deregister, SetConfig) has committed: a deadline the commit
// used up. Armed unsure, that write then fails, as a SQL store's does when
// its caller's context ends while the COMMIT is on its way (the context's
// error), or when the connection breaks then (a BackendError): the write
// landed, and its caller cannot know it.
type commitThenCancel struct {
	discovery.Store
	mu     sync.Mutex
	cancel context.CancelFunc // called after the next write that commits, then cleared
	unsure bool
	fail   error // the error of an unsure write; nil: the context's
}

// arm makes the next write that commits call cancel, and, if unsure, fail
// with fail (nil: the context's error).
func (s *commitThenCancel) arm(cancel context.CancelFunc, unsure bool, fail error) {
	s.mu.Lock()
	s.cancel, s.unsure, s.fail = cancel, unsure, fail
	s.mu.Unlock()
}

func (s *commitThenCancel) committed(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	s.mu.Lock()
	cancel, unsure, fail := s.cancel, s.unsure, s.fail
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	switch {
	case !unsure:
		return nil
	case fail != nil:
		return fail
	}
	return ctx.Err()
}

func (s *commitThenCancel) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	rev, err := s.Store.Register(ctx, in)
	return rev, s.committed(ctx, err)
}

func (s *commitThenCancel) Deregister(ctx context.Context, service, id string) (int64, error) {
	rev, err := s.Store.Deregister(ctx, service, id)
	return rev, s.committed(ctx, err)
}

func (s *commitThenCancel) SetConfig(ctx context.Context, service string, doc []byte, at time.Time, keep int) (int64, int64, error) {
	rev, cfgRev, err := s.Store.(discovery.ConfigStore).SetConfig(ctx, service, doc, at, keep)
	return rev, cfgRev, s.committed(ctx, err)
}

func (s *commitThenCancel) ConfigHistory(ctx context.Context, service string) ([]discovery.ConfigVersion, error) {
	return s.Store.(discovery.ConfigStore).ConfigHistory(ctx, service)
}

// overStore returns a Registry of w's namespace and Redis (if any) over the
// store s (in place of w's database), closed at the end of the test.
func overStore(t *testing.T, w *world, s discovery.Store, opts ...discovery.Option) *discovery.Registry {
	t.Helper()
	base := []discovery.Option{discovery.WithNamespace(w.ns), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0), discovery.WithStore(s)}
	if w.rdb != nil {
		base = append(base, discovery.WithRedis(w.rdb))
	}
	r, err := discovery.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// A write that committed is written through to Redis and published even if
// the writer's context ends right after the commit: neither the writer nor
// another process goes on serving the snapshot from before it.
func TestCommittedWriteIsPublishedWhenTheCallersContextEnds(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			fresh := discovery.WithCacheFreshness(100*time.Millisecond, time.Second, time.Minute)
			w := newWorld(t, k, fresh)
			bg := context.Background()
			base := w.registry(t)
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			// a and b share base's store, wrapped (which hides the memory
			// backend's notifications: Redis is the only way a change travels)
			a := overStore(t, w, &commitThenCancel{Store: base.Store(), cancel: cancel}, fresh)
			b := overStore(t, w, struct{ discovery.Store }{base.Store()}, fresh)
			for _, host := range []string{"10.0.0.1", "10.0.0.2"} {
				mustRegister(t, base, inst("db_svc", host, 80))
			}
			if got := ids(b.Get(bg, "db_svc")); strings.Count(got, ",") != 1 {
				t.Fatalf("b.Get = %s; want two instances", got)
			}
			svc, _ := b.Get(bg, "db_svc")
			gone, kept := svc.Instances[1].ID, svc.Instances[0].ID
			waitFor(t, 5*time.Second, "b's snapshot in Redis", func() bool { return b.Stats().L2Writes+base.Stats().L2Writes >= 1 })
			if err := a.Deregister(ctx, "db_svc", gone); err != nil {
				t.Fatalf("Deregister = %v", err)
			}
			if ctx.Err() == nil {
				t.Fatal("the writer's context did not end at the commit")
			}
			waitFor(t, 5*time.Second, "the deregistration on a and b", func() bool {
				return ids(a.Get(bg, "db_svc")) == kept && ids(b.Get(bg, "db_svc")) == kept
			})
		})
	}
}

// A write whose outcome its writer cannot know (its context ended, or its
// connection broke, while the commit was on its way, and the commit landed)
// is made visible all the same: in the writer's own lookups (at once when
// its context ended; when the database is back when it broke), and through
// Redis in every other process's, though every L1 entry is fresh for an
// hour. Treated as failed, it left every process serving the snapshot from
// before it for that hour (a lease TTL at the defaults).
func TestWriteOfUnknownOutcomeIsAnnounced(t *testing.T) {
	type write func(ctx context.Context, a *discovery.Registry, g *discovery.Registration) error
	ops := []struct {
		name  string
		write write
		want  func(svc *discovery.Service) bool // svc shows the write
	}{
		{"deregister", func(ctx context.Context, a *discovery.Registry, _ *discovery.Registration) error {
			return a.Deregister(ctx, "db_svc", "10.0.0.2:80")
		}, func(svc *discovery.Service) bool { return svc.Instance("10.0.0.2:80") == nil }},
		{"set weight", func(ctx context.Context, _ *discovery.Registry, g *discovery.Registration) error {
			return g.SetWeight(ctx, 7)
		}, func(svc *discovery.Service) bool {
			in := svc.Instance("10.0.0.1:80")
			return in != nil && in.Weight == 7
		}},
		{"update config", func(ctx context.Context, a *discovery.Registry, _ *discovery.Registration) error {
			_, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(7))
			return err
		}, func(svc *discovery.Service) bool { return string(svc.Config) == string(cfgDoc(7)) }},
	}
	broken := &discovery.BackendError{Backend: "database", Op: "commit", Err: io.ErrUnexpectedEOF}
	for _, k := range allWorlds {
		for _, op := range ops {
			for _, fail := range []error{nil, broken} {
				name := k.name + "/" + op.name + "/context ended"
				if fail != nil {
					name = k.name + "/" + op.name + "/connection broke"
				}
				t.Run(name, func(t *testing.T) {
					hour := []discovery.Option{discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithLeaseTTL(time.Hour)}
					w := newWorld(t, k, hour...)
					bg := context.Background()
					base := w.registry(t)
					s := &commitThenCancel{Store: base.Store()}
					// a and b reach base's store through wrappers, which hide the
					// memory backend's notifications: Redis is the only way a
					// change travels between them.
					a := overStore(t, w, s, hour...)
					b := overStore(t, w, struct{ discovery.Store }{base.Store()}, hour...)
					g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 80))
					mustRegister(t, base, inst("db_svc", "10.0.0.2", 80))
					shows := func(r *discovery.Registry) string {
						svc, err := r.Get(bg, "db_svc")
						if err != nil {
							return "error: " + err.Error()
						}
						if op.want(svc) {
							return "ok"
						}
						return fmt.Sprintf("revision %d: %s, weights %d/%d, config %s", svc.Revision, ids(svc, nil),
							svc.Instances[0].Weight, svc.Instances[len(svc.Instances)-1].Weight, svc.Config)
					}
					for _, r := range []*discovery.Registry{a, b} {
						waitFor(t, 10*time.Second, "both instances in L1", func() bool { // a: base's message on its way
							return ids(r.Get(bg, "db_svc")) == "10.0.0.1:80,10.0.0.2:80"
						})
					}
					ctx, cancel := context.WithCancel(bg)
					defer cancel()
					s.arm(cancel, true, fail)
					err := op.write(ctx, a, g)
					switch {
					case fail == nil && !errors.Is(err, context.Canceled):
						t.Fatalf("the write = %v; want context.Canceled (committed, but not known to be)", err)
					case fail != nil && !errors.Is(err, discovery.ErrUnavailable):
						t.Fatalf("the write = %v; want ErrUnavailable (committed, but not known to be)", err)
					}
					if fail == nil {
						if got := shows(a); got != "ok" {
							t.Fatalf("the writer's Get after the write = %s; want the write seen", got)
						}
					} else {
						// It took the database for down: served stale at once,
						// and the write seen once a refresh finds it back.
						waitFor(t, 10*time.Second, "the write seen by the writer", func() bool { return shows(a) == "ok" })
					}
					if w.rdb == nil {
						return // no way for b to hear of it before its entry ages
					}
					waitFor(t, 10*time.Second, "the write seen by another process", func() bool { return shows(b) == "ok" })
				})
			}
		}
	}
}

// A write that fails because the database is down (its outcome unknown,
// so taken as possibly done) leaves lookups answered from the cache through
// the outage, and, the database back, answered with what it holds: the
// write that did not land is no revision anyone waits for.
func TestWriteFailedInAnOutageLeavesLookupsAnswered(t *testing.T) {
	bg := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithLeaseTTL(time.Hour))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 80))
	before, err := r.Lookup(bg, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	backend.SetFailure(errors.New("connection refused"))
	if err := g.SetWeight(bg, 7); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("SetWeight in the outage = %v; want ErrUnavailable", err)
	}
	res, err := r.Lookup(bg, "db_svc")
	if err != nil || ids(res.Service, nil) != "10.0.0.1:80" {
		t.Fatalf("Lookup in the outage = %v, %v; want the cached instance", ids(res.Service, err), err)
	}
	backend.SetFailure(nil)
	waitFor(t, 10*time.Second, "a fresh answer once the database is back", func() bool {
		res, err = r.Lookup(bg, "db_svc")
		return err == nil && !res.Stale
	})
	if res.Revision != before.Revision || res.Service.Instances[0].Weight != before.Service.Instances[0].Weight {
		t.Fatalf("after the outage: revision %d, weight %d; want %d, %d (the write did not land)",
			res.Revision, res.Service.Instances[0].Weight, before.Revision, before.Service.Instances[0].Weight)
	}
}

// loadsFail fails every Load while failing is set: a database that took a
// write and then stopped answering.
type loadsFail struct {
	discovery.Store
	failing atomic.Bool
}

func (s *loadsFail) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.failing.Load() {
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: discovery.ErrUnavailable}
	}
	return s.Store.Load(ctx, name)
}

// A Registry whose write it could not read back (the write-through's read
// failed, so only the revision was published) refuses the older snapshot
// Redis still holds at its first lookup of the service, though it had
// never looked the service up before the write.
func TestWriterRefusesTheOlderSnapshotInRedisAfterItsWriteThroughFailed(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			w := newWorld(t, k)
			bg := context.Background()
			base := w.registry(t)
			now := time.Now()
			for _, id := range []string{"i1", "i2"} { // rows with no keepalive behind them
				in := discovery.Instance{ID: id, Service: "db_svc", Host: "10.0.0.1", Port: 80, Weight: 1, RegisteredAt: now, ExpiresAt: now.Add(time.Minute)}
				if _, err := base.Store().Register(bg, &in); err != nil {
					t.Fatal(err)
				}
			}
			if got := ids(base.Get(bg, "db_svc")); got != "i1,i2" {
				t.Fatalf("base.Get = %s", got)
			}
			waitFor(t, 5*time.Second, "base's snapshot in Redis", func() bool { return base.Stats().L2Writes >= 1 })
			s := &loadsFail{Store: base.Store()}
			a := overStore(t, w, s)
			s.failing.Store(true)
			if err := a.Deregister(bg, "db_svc", "i2"); err != nil {
				t.Fatalf("Deregister = %v", err)
			}
			s.failing.Store(false)
			if got := ids(a.Get(bg, "db_svc")); got != "i1" {
				t.Fatalf("the writer's first Get after its Deregister = %s; want i1 (Redis still holds i1,i2)", got)
			}
		})
	}
}

// switchStore loads from whichever backend it holds: a database swapped
// for a restored backup.
type switchStore struct {
	discovery.Store
	cur atomic.Pointer[discoverytest.Backend]
}

func (s *switchStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	return s.cur.Load().Load(ctx, name)
}

// backupAtRevision5 returns a database before its restore: x1, leased for
// a minute from t0, at revision 5 (more history than the backup has).
func backupAtRevision5(t *testing.T) *discoverytest.Backend {
	b := discoverytest.NewBackend()
	regAt(t, b, "x1", time.Minute)
	for range 2 {
		regAt(t, b, "o1", time.Minute)
		if _, err := b.Deregister(context.Background(), "db_svc", "o1"); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// restoreBelowRevision2 returns the backup (at revision 1: y1, an hour) of
// a database at revision 2 (x1 and o1, one-minute leases from t0), and a
// restoreRegistry reading that database until s is switched to the backup.
func restoreBelowRevision2(t *testing.T) (restored *discoverytest.Backend, clock *discoverytest.Clock, r *discovery.Registry, s *switchStore) {
	t.Helper()
	before := discoverytest.NewBackend()
	restored = discoverytest.NewBackend()
	clock = discoverytest.NewClock(t0)
	regAt(t, before, "x1", time.Minute)
	regAt(t, before, "o1", time.Minute)
	regAt(t, restored, "y1", time.Hour) // revision 1
	r, s = restoreRegistry(t, before, clock, 2*time.Minute)
	return restored, clock, r, s
}

// restoreRouter registers a router instance of db_svc on r whose
// configuration callback logs what it is given.
func restoreRouter(t *testing.T, r *discovery.Registry) (*discovery.Registration, *callbackLog) {
	t.Helper()
	cb := new(callbackLog)
	g, err := r.Register(context.Background(), discovery.Instance{Service: "db_svc", Host: "127.0.0.1", Port: 2, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(cb.fn))
	if err != nil {
		t.Fatal(err)
	}
	return g, cb
}

// regAt writes an instance of db_svc straight to a backend, registered at
// t0 for ttl.
func regAt(t *testing.T, b *discoverytest.Backend, id string, ttl time.Duration) {
	t.Helper()
	in := discovery.Instance{ID: id, Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(ttl)}
	if _, err := b.Register(context.Background(), &in); err != nil {
		t.Fatal(err)
	}
}

// restoreRegistry returns a Registry with no health checks and no reaper
// (WithReaper(0, reapAfter)), reading from the switchStore s, which starts
// on before.
func restoreRegistry(t *testing.T, before *discoverytest.Backend, clock *discoverytest.Clock, reapAfter time.Duration) (*discovery.Registry, *switchStore) {
	s := &switchStore{Store: before}
	s.cur.Store(before)
	r := discoverytest.NewRegistry(t, before, discovery.WithStore(s), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0), discovery.WithReaper(0, reapAfter))
	return r, s
}

// A database restored from a backup, at a lower revision than L1 holds, is
// what lookups answer once a lease in the held snapshot has ended: not the
// held snapshot with that lease in it, two database reads a lookup.
func TestDatabaseRestoredToALowerRevisionIsServed(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour)                                    // revision 1
	r, s := restoreRegistry(t, backupAtRevision5(t), clock, 2*time.Minute) // no reaper: only lookups read the database
	if got := ids(r.Get(ctx, "db_svc")); got != "x1" {
		t.Fatalf("before the restore: Get = %s", got)
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago
	res, err := r.Lookup(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(res.Service, nil); got != "y1" || res.Revision != 1 {
		t.Fatalf("after the restore: Lookup = %s at revision %d (layer %v, stale %v); want y1 at 1, what the database holds",
			got, res.Revision, res.Layer, res.Stale)
	}
	reads := r.Stats().StoreReads
	for range 10 {
		_, _ = r.Get(ctx, "db_svc")
	}
	if d := r.Stats().StoreReads - reads; d != 0 {
		t.Fatalf("10 Gets within the freshness window read the database %d times", d)
	}
}

// The same when the snapshot L1 holds has no live instance left (no lease
// in it to end): a read begun a lease TTL after it replaces it.
func TestDatabaseRestoredUnderASnapshotWithNoLiveInstanceIsServed(t *testing.T) {
	ctx := context.Background()
	before, restored := discoverytest.NewBackend(), discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	regAt(t, before, "x1", time.Minute)
	regAt(t, before, "x2", time.Minute) // revision 2
	regAt(t, restored, "y1", time.Hour) // revision 1
	r, s := restoreRegistry(t, before, clock, time.Hour)
	clock.Advance(5 * time.Minute) // both leases ended long ago: L1 holds revision 2 with no live instance
	if _, err := r.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("before the restore: Get = %v; want ErrNotFound", err)
	}
	s.cur.Store(restored)
	clock.Advance(time.Minute)
	if got := ids(r.Get(ctx, "db_svc")); got != "y1" {
		t.Fatalf("after the restore: Get = %s; want y1, what the database holds", got)
	}
}

// After a restore below the revision this process last wrote, a database
// read is the truth: the first lookup reads the database once, not once per
// load attempt (three) for a revision it will never reach, and once fresh the
// service goes back to stale-while-revalidate: a lookup past the freshness
// window is answered at once while one read refreshes it, instead of waiting
// for three.
func TestDatabaseRestoredBelowAWrittenRevisionIsReadOnce(t *testing.T) {
	ctx := context.Background()
	restored, clock, r, s := restoreBelowRevision2(t)
	if err := r.Deregister(ctx, "db_svc", "o1"); err != nil { // revision 3, this process's own write
		t.Fatal(err)
	}
	if got := ids(r.Get(ctx, "db_svc")); got != "x1" {
		t.Fatalf("before the restore: Get = %s", got)
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago
	reads := r.Stats().StoreReads
	if got := ids(r.Get(ctx, "db_svc")); got != "y1" {
		t.Fatalf("after the restore: Get = %s; want y1", got)
	}
	if d := r.Stats().StoreReads - reads; d != 1 {
		t.Fatalf("the first lookup after the restore read the database %d times; want 1", d)
	}
	clock.Advance(10 * time.Second) // past the freshness window (5 s), within stale-while-revalidate (30 s)
	reads, refreshes := r.Stats().StoreReads, r.Stats().Refreshes
	res, err := r.Lookup(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stale || res.Revision != 1 {
		t.Fatalf("past the freshness window: Lookup at revision %d, stale %v; want revision 1 served stale while it refreshes", res.Revision, res.Stale)
	}
	waitFor(t, 5*time.Second, "the background refresh", func() bool {
		res, err := r.Lookup(ctx, "db_svc")
		return r.Stats().Refreshes > refreshes && err == nil && !res.Stale
	})
	if d := r.Stats().StoreReads - reads; d != 1 {
		t.Fatalf("the refresh read the database %d times; want 1", d)
	}
}

// A Watch follows Get when the database is restored from a backup at a
// lower revision: the hub never went back to a lower revision, so once Get
// answered with the restored snapshot, watchers were told nothing, neither
// that the held instance's lease had ended nor of the restored instances.
func TestWatchFollowsADatabaseRestoredToALowerRevision(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour)                                    // revision 1
	r, s := restoreRegistry(t, backupAtRevision5(t), clock, 2*time.Minute) // no reaper: only lookups read the database
	ch := watch(t, r, "db_svc")
	if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceAdded || ev.Instance.ID != "x1" {
		t.Fatalf("first event %s", describe(ev))
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	if got := ids(r.Get(ctx, "db_svc")); got != "y1" {
		t.Fatalf("after the restore: Get = %s; want y1", got)
	}
	got := map[string]discovery.EventKind{}
	for len(got) < 2 {
		ev := next(t, ch, 2*time.Second)
		got[ev.Instance.ID] = ev.Kind
	}
	if got["x1"] != discovery.EventInstanceRemoved || got["y1"] != discovery.EventInstanceAdded {
		t.Fatalf("after the restore the watcher got %v; want x1 removed and y1 added, as Get shows", got)
	}
}

// After a restore the events carry the revisions Lookup answers with, as
// Event.Revision says (the revision of the service at which the event was
// seen): they kept the highest revision ever seen (5 here), a revision the
// restored database had not reached, until it reached it again.
func TestWatchRevisionsFollowADatabaseRestoredToALowerRevision(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour)                                    // revision 1
	r, s := restoreRegistry(t, backupAtRevision5(t), clock, 2*time.Minute) // no reaper: only lookups read the database
	ch := watch(t, r, "db_svc")
	if ev := next(t, ch, 2*time.Second); ev.Instance.ID != "x1" || ev.Revision != 5 {
		t.Fatalf("first event %s at revision %d; want x1 added at 5", describe(ev), ev.Revision)
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	res, err := r.Lookup(ctx, "db_svc")
	if err != nil || res.Revision != 1 {
		t.Fatalf("after the restore: Lookup at revision %d, %v; want 1", res.Revision, err)
	}
	for range 2 {
		if ev := next(t, ch, 2*time.Second); ev.Revision != 1 {
			t.Fatalf("after the restore: %s at revision %d; want 1, the revision Lookup answers with", describe(ev), ev.Revision)
		}
	}
	regAt(t, restored, "y2", time.Hour) // revision 2, written by another process
	// The hub has set its next look: else, still busy with the restore's
	// events under load, it set it after this Advance, 10 s too late.
	clock.BlockUntilHandled()
	clock.Advance(10 * time.Second) // past the freshness window: the hub looks again
	if ev := next(t, ch, 2*time.Second); ev.Instance.ID != "y2" || ev.Revision != 2 {
		t.Fatalf("a change after the restore: %s at revision %d; want y2 added at 2", describe(ev), ev.Revision)
	}
}

// A database restored from before the service's first configuration: Get
// shows none, and the watcher, told of the one it had, was told nothing of
// its going (a config event was only made for a configuration there), so a
// reader that applies events in order kept a configuration the service no
// longer has.
func TestWatchFollowsARestoreToBeforeTheFirstConfiguration(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour) // revision 1, no configuration
	backup := backupAtRevision5(t)
	if _, _, err := backup.SetConfig(ctx, "db_svc", []byte(`{"n":1}`), t0, 10); err != nil { // revision 6
		t.Fatal(err)
	}
	r, s := restoreRegistry(t, backup, clock, 2*time.Minute)
	ch := watch(t, r, "db_svc")
	for range 2 {
		_ = next(t, ch, 2*time.Second) // x1 added, the configuration
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	svc, err := r.Get(ctx, "db_svc")
	if err != nil || len(svc.Config) != 0 {
		t.Fatalf("after the restore: Get = %v config %s; want no configuration", err, svc.Config)
	}
	got := map[discovery.EventKind]discovery.Event{}
	for len(got) < 3 {
		ev := next(t, ch, 2*time.Second)
		got[ev.Kind] = ev
	}
	if ev, ok := got[discovery.EventConfigChanged]; !ok || len(ev.Config) != 0 {
		t.Fatalf("after the restore the watcher got %v; want a config event with no configuration", got)
	}
}

// A WithConfigFunc callback follows a database restored to an earlier
// configuration, as Get and Watch do: its process refused every
// configuration revision at or below the last one it offered, so the
// callback, and Registration.Config, kept the configuration the restore
// had taken away until the restored database passed its revision again.
func TestConfigCallbackFollowsADatabaseRestoredToAnEarlierConfiguration(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour) // revision 1
	before := backupAtRevision5(t)
	for _, b := range []*discoverytest.Backend{restored, before} { // configuration 1 in both
		if _, _, err := b.SetConfig(ctx, "db_svc", cfgDoc(1), t0, 10); err != nil {
			t.Fatal(err)
		}
	}
	r, s := restoreRegistry(t, before, clock, 2*time.Minute)
	g, cb := restoreRouter(t, r)
	if _, _, err := before.SetConfig(ctx, "db_svc", cfgDoc(2), t0, 10); err != nil { // configuration 2, which the restore loses
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second) // past the freshness window: the hub looks again
	waitFor(t, 2*time.Second, "the callback", func() bool { _, rev := g.Config(); return rev == 2 })
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	if svc, err := r.Get(ctx, "db_svc"); err != nil || string(svc.Config) != `{"n":1}` {
		t.Fatalf("after the restore: Get = %v config %s; want configuration 1", err, svc.Config)
	}
	waitFor(t, 2*time.Second, "the callback to follow the restore", func() bool { _, rev := g.Config(); return rev == 1 })
	if got := fmt.Sprint(cb.seen()); got != "[2 1]" {
		t.Fatalf("the callback saw %s; want [2 1], the restored configuration last", got)
	}
}

// The same for a database restored from before the service's first
// configuration: the callback is called with none, as Watch's event has
// none, and Registration.Config has none.
func TestConfigCallbackFollowsARestoreToBeforeTheFirstConfiguration(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, restored, "y1", time.Hour) // revision 1, no configuration
	before := backupAtRevision5(t)
	r, s := restoreRegistry(t, before, clock, 2*time.Minute)
	var got atomic.Pointer[json.RawMessage]
	g, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "127.0.0.1", Port: 2, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(func(_ context.Context, cfg json.RawMessage) error { got.Store(&cfg); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := before.SetConfig(ctx, "db_svc", cfgDoc(1), t0, 10); err != nil { // which the restore loses
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second) // past the freshness window: the hub looks again
	waitFor(t, 2*time.Second, "the callback", func() bool { _, rev := g.Config(); return rev == 1 })
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Config) != 0 {
		t.Fatalf("after the restore: Get = %v config %s; want no configuration", err, svc.Config)
	}
	waitFor(t, 2*time.Second, "the callback to follow the restore", func() bool { _, rev := g.Config(); return rev == 0 })
	if cfg, _ := g.Config(); cfg != nil || len(*got.Load()) != 0 {
		t.Fatalf("after the restore: Registration.Config = %s, the callback got %s; want none", cfg, *got.Load())
	}
}

// A configuration written after a restore can take the number of one the
// restore lost: the backup held configuration 1, the lost one was 2, and
// the next write is 2 again, with other content. A process that held the
// lost one and reads the new one without seeing the restore in between (the
// service's revision has moved on past the one it held) sees a new
// configuration, not the one it has: Watch reports it, the callback gets
// it and Registration.Config returns it. Compared by number alone, the
// process kept the lost configuration for good.
func TestConfigRewrittenAtTheSameRevisionAfterARestoreIsSeen(t *testing.T) {
	ctx := context.Background()
	restored, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	before := backupAtRevision5(t)
	for _, n := range []int{1, 2} {
		if _, _, err := before.SetConfig(ctx, "db_svc", cfgDoc(n), t0, 10); err != nil {
			t.Fatal(err)
		}
	}
	regAt(t, restored, "y1", time.Hour)
	if _, _, err := restored.SetConfig(ctx, "db_svc", cfgDoc(1), t0, 10); err != nil {
		t.Fatal(err)
	}
	r, s := restoreRegistry(t, before, clock, 2*time.Minute)
	g, cb := restoreRouter(t, r)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := r.Watch(wctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the callback", func() bool { _, rev := g.Config(); return rev == 2 })
	held, err := r.Lookup(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	// After the restore: configuration 3 written as number 2, and the
	// service's revision past the one the process holds.
	_, cfgRev, err := restored.SetConfig(ctx, "db_svc", cfgDoc(3), t0, 10)
	if err != nil || cfgRev != 2 {
		t.Fatalf("SetConfig after the restore: configuration revision %d, %v; want 2", cfgRev, err)
	}
	for i := 2; ; i++ {
		svc, err := restored.Load(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		if svc.Revision > held.Revision {
			break
		}
		regAt(t, restored, fmt.Sprintf("y%d", i), time.Hour)
	}
	for len(events) > 0 { // what the watcher was told before
		<-events
	}
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago; the hub looks again
	if svc, err := r.Get(ctx, "db_svc"); err != nil || string(svc.Config) != `{"n":3}` {
		t.Fatalf("after the restore: Get = %v config %s; want configuration 3", err, svc.Config)
	}
	waitFor(t, 2*time.Second, "the callback to get configuration 3", func() bool {
		cfg, _ := g.Config()
		return string(cfg) == `{"n":3}`
	})
	if got := fmt.Sprint(cb.seen()); got != "[3]" { // configuration 2 was read at registration
		t.Fatalf("the callback saw %s; want [3]", got)
	}
	for {
		select {
		case ev := <-events:
			if ev.Kind == discovery.EventConfigChanged {
				if string(ev.Config) != `{"n":3}` {
					t.Fatalf("config event with %s; want configuration 3", ev.Config)
				}
				return
			}
		case <-time.After(2 * time.Second):
			t.Fatal("no config event for the configuration written after the restore")
		}
	}
}

// Entries taken at the same moment (as every process takes a pushed
// snapshot) go stale spread over +-10% of the freshness window, not all at
// once: their refreshes do not all reach Redis or the database together.
// WithCacheJitter(0) keeps every window exact.
func TestFreshnessWindowsAreJittered(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock))
	a := w.registry(t, discovery.WithLeaseTTL(time.Minute)) // renews after the test's 5.5 s
	jittered, exact := w.registry(t), w.registry(t, discovery.WithCacheJitter(0))
	const n = 100
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("svc_%d", i)
		mustRegister(t, a, inst(names[i], "10.0.0.1", 1))
	}
	stale := func(r *discovery.Registry, name string) bool {
		t.Helper()
		res, err := r.Lookup(ctx, name)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", name, err)
		}
		return res.Stale
	}
	for _, name := range names { // every entry taken at t0
		stale(jittered, name)
		stale(exact, name)
	}
	clock.Advance(shortestFresh - time.Millisecond)
	for _, name := range names {
		if stale(jittered, name) || stale(exact, name) {
			t.Fatalf("%s stale %v before the shortest window ends", name, clock.Now().Sub(t0))
		}
	}
	clock.Set(t0.Add(discovery.DefaultFresh - time.Millisecond))
	for _, name := range names {
		if stale(exact, name) {
			t.Fatalf("WithCacheJitter(0): %s stale 1 ms before its window ends", name)
		}
	}
	clock.Set(t0.Add(discovery.DefaultFresh))
	var fresh []string
	for _, name := range names {
		if !stale(exact, name) {
			t.Fatalf("WithCacheJitter(0): %s still fresh when its window ends", name)
		}
		if !stale(jittered, name) {
			fresh = append(fresh, name)
		}
	}
	if len(fresh) == 0 || len(fresh) == n {
		t.Fatalf("%d of %d entries fresh at the unjittered window's end; want them spread on both sides", len(fresh), n)
	}
	clock.Set(t0.Add(longestFresh + time.Millisecond))
	for _, name := range fresh {
		if !stale(jittered, name) {
			t.Fatalf("%s still fresh after the longest window (%v)", name, longestFresh)
		}
	}
}

// After a restore below a revision announced for a watched service, each
// look of its hub reads the database once, as a lookup's refresh does. The
// hub kept waiting for the announced revision, which the database never
// reached: each look read it twice (a load, then a forced one) for good, and
// raised again the revision lookups wait for, which the load had brought
// down to the database's.
func TestWatchedServiceRestoredBelowAnAnnouncedRevisionIsReadOnce(t *testing.T) {
	ctx := context.Background()
	restored, clock, r, s := restoreBelowRevision2(t)
	ch := watchThroughO1sDeregistration(t, r)
	s.cur.Store(restored)
	clock.Advance(10 * time.Minute) // x1's lease ended 9 minutes ago
	if got := ids(r.Get(ctx, "db_svc")); got != "y1" {
		t.Fatalf("after the restore: Get = %s; want y1", got)
	}
	for range 2 {
		next(t, ch, 2*time.Second) // x1 removed, y1 added
	}
	clock.BlockUntil(1) // the hub waits for its next look
	timers := clock.Timers()
	for i := range 3 {
		reads := r.Stats().StoreReads
		clock.Advance(6 * time.Second) // past the freshness window: the hub looks again
		clock.BlockUntil(timers)       // and is done
		if d := r.Stats().StoreReads - reads; d != 1 {
			t.Fatalf("look %d of the hub after the restore read the database %d times; want 1", i+1, d)
		}
	}
}

// A lookup of a service that a restore lost, after a revision of it was
// written, reads the database once: "not found" is the database's answer,
// as a lower revision is (TestDatabaseRestoredBelowAWrittenRevisionIsReadOnce).
// It waited for the written revision, which "not found" never reaches, and
// read the database three times each lookup past the freshness window.
func TestLookupOfAServiceLostInARestoreReadsOnce(t *testing.T) {
	ctx := context.Background()
	before, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, before, "x1", time.Minute)
	regAt(t, before, "o1", time.Minute)
	r, s := restoreRegistry(t, before, clock, 2*time.Minute)
	if got := ids(r.Get(ctx, "db_svc")); got != "o1,x1" {
		t.Fatalf("Get = %s; want o1,x1", got)
	}
	if err := r.Deregister(ctx, "db_svc", "o1"); err != nil { // revision 3, written by this process
		t.Fatal(err)
	}
	s.cur.Store(discoverytest.NewBackend()) // a backup from before db_svc
	clock.Advance(10 * time.Minute)         // x1's lease ended 9 minutes ago
	for i := range 2 {
		reads := r.Stats().StoreReads
		if _, err := r.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get %d after the restore = %v; want ErrNotFound", i+1, err)
		}
		if d := r.Stats().StoreReads - reads; d != 1 {
			t.Fatalf("Get %d after the restore read the database %d times; want 1", i+1, d)
		}
		clock.Advance(time.Hour) // past the negative TTL
	}
}

// After a restore from a backup that does not have a watched service, at
// a revision announced for it, each look of its hub reads the database
// once, as for a restore below the announced revision
// (TestWatchedServiceRestoredBelowAnAnnouncedRevisionIsReadOnce): the hub
// kept waiting for the announced revision, which a service the database
// does not have never reaches.
func TestWatchedServiceLostInARestoreIsReadOnce(t *testing.T) {
	ctx := context.Background()
	before, clock := discoverytest.NewBackend(), discoverytest.NewClock(t0)
	regAt(t, before, "x1", time.Minute)
	regAt(t, before, "o1", time.Minute)
	r, s := restoreRegistry(t, before, clock, 2*time.Minute)
	ch := watchThroughO1sDeregistration(t, r)
	s.cur.Store(discoverytest.NewBackend()) // a backup from before db_svc
	clock.Advance(10 * time.Minute)         // x1's lease ended 9 minutes ago
	if _, err := r.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("after the restore: Get = %v; want ErrNotFound", err)
	}
	if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceRemoved || ev.Instance.ID != "x1" {
		t.Fatalf("after the restore: %s; want x1 removed", describe(ev))
	}
	clock.BlockUntil(1) // the hub waits for its next look
	timers := clock.Timers()
	for i := range 3 {
		reads := r.Stats().StoreReads
		clock.Advance(6 * time.Second) // past the freshness window: the hub looks again
		clock.BlockUntil(timers)       // and is done
		if d := r.Stats().StoreReads - reads; d != 1 {
			t.Fatalf("look %d of the hub after the restore read the database %d times; want 1", i+1, d)
		}
	}
}

// An Invalidate while a load is between its database read and its write to
// Redis leaves Redis without what that load read: the load's write,
// spawned after the read, landed after the invalidation's delete and put
// back what was read before it, for every process, for an L2 TTL. (Seen as
// a hang of TestLateOlderSnapshotKeepsTheStateOfNewerInstances under a full
// run: a resync's load refilled Redis after its Invalidate.) The database
// fails every read after the held one, so nothing read after the
// invalidation can fill Redis either.
func TestInvalidateIsNotUndoneByALoadsRedisWrite(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	gate := &gateThenFailStore{gatedStore: gatedStore{Store: backend, read: make(chan struct{}), release: make(chan struct{})}}
	r, err := discovery.New(discovery.WithStore(gate), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
		discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	// Registered by another process without Redis: r holds no registration,
	// whose drain at Close would write Redis too.
	mustRegister(t, discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks()), inst("db_svc", "10.0.0.1", 1))
	gate.armed.Store(true)
	done := make(chan error, 1)
	go func() { _, err := r.RefreshKeys(ctx, "db_svc"); done <- err }() // a load from the database
	<-gate.read
	gate.failing.Store(true)
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	<-done                            // the read again after the invalidation fails: its error is no matter here
	if err := r.Close(); err != nil { // waits for the load's spawned write
		t.Fatal(err)
	}
	if n, err := rdb.Exists(ctx, l2Key(ns, "db_svc")).Result(); err != nil || n != 0 {
		t.Fatalf("Redis holds the snapshot read before Invalidate (exists %d, %v); want it gone", n, err)
	}
}

// gateThenFailStore is a gatedStore whose reads fail once failing is set
// (the held one excepted).
type gateThenFailStore struct {
	gatedStore
	failing atomic.Bool
}

func (s *gateThenFailStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.failing.Load() {
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("down")}
	}
	return s.gatedStore.Load(ctx, name)
}

// watchThroughO1sDeregistration watches db_svc (x1 and o1) and deregisters
// o1, revision 3, which is announced to the watch's hub; it returns the
// watch once its events have said so.
func watchThroughO1sDeregistration(t *testing.T, r *discovery.Registry) <-chan discovery.Event {
	t.Helper()
	ch := watch(t, r, "db_svc")
	for range 2 {
		next(t, ch, 2*time.Second) // x1 and o1 added
	}
	if err := r.Deregister(context.Background(), "db_svc", "o1"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceRemoved || ev.Instance.ID != "o1" {
		t.Fatalf("after the deregistration: %s", describe(ev))
	}
	return ch
}
