package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// Fault scenarios that cut a backend away from running Registries: each
// test's name says its pass criterion, and each logs what it measured.

// faultWorld is a world (PostgreSQL when configured, else SQLite) whose
// Registries reach Redis (the real one when configured, else miniredis)
// through a fault proxy; w.rdb is a direct client for the test's own use.
func faultWorld(t *testing.T) (*world, *testutil.Proxy, func(t *testing.T) redis.UniversalClient) {
	t.Helper()
	k := worldKind{name: "sqlite", sql: sqlite}
	if os.Getenv(testutil.EnvPostgres) != "" || testutil.Required() {
		k = worldKind{name: "postgres", sql: testutil.Postgres}
	}
	w := newWorld(t, k)
	addr, db, _ := testutil.RedisAddr(t)
	w.rdb = testutil.RedisClient(t, addr, db, w.ns)
	proxy := testutil.NewProxy(t, addr)
	return w, proxy, func(t *testing.T) redis.UniversalClient { return testutil.RedisClient(t, proxy.Addr(), db, w.ns) }
}

// callLoad makes Gets and Picks of services on each Registry every period
// until stop is called, recording every result as made by name[i].
func callLoad(rec *testutil.Recorder, regs []*discovery.Registry, names []string, services []string, period time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range regs {
		for _, service := range services {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for {
					select {
					case <-done:
						return
					case <-time.After(period):
					}
					res, err := r.Lookup(ctx, service)
					c := testutil.Call{Caller: names[i], Op: "get", Service: service, Err: err}
					if err == nil {
						c.Revision, c.Stale, c.Instance = res.Revision, res.Stale, ids(res.Service, nil)
					}
					rec.Record(c)
					sel, err := r.Pick(ctx, service)
					c = testutil.Call{Caller: names[i], Op: "pick", Service: service, Err: err}
					if err == nil {
						c.Instance = sel.Instance.ID
						sel.Done(nil)
					}
					rec.Record(c)
				}
			}()
		}
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func failedCalls(rec *testutil.Recorder) string {
	f := rec.Failed()
	if len(f) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d, first %s %s at %s: %v", len(f), f[0].Caller, f[0].Op, f[0].At.Format("15:04:05.000"), f[0].Err)
}

// Redis cut away for 10 s (refused, or black-holed as by a partition) under
// a steady load of Gets and Picks on three Registries: no call fails, the
// database answers what L1 cannot, a registration made during the cut is
// seen everywhere within the freshness window, and every Registry reads L2
// again within 1 s of Redis's return.
func TestRedisCut10sNoCallFailsAndL2BackWithin1s(t *testing.T) {
	const (
		cut   = 10 * time.Second
		fresh = 100 * time.Millisecond
	)
	for _, mode := range []string{"refused", "blackhole"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			w, proxy, client := faultWorld(t)
			var regs []*discovery.Registry
			for range 3 {
				regs = append(regs, w.registry(t, discovery.WithRedis(client(t)), discovery.WithCacheFreshness(fresh, time.Second, 5*time.Minute),
					discovery.WithRedisTimeout(200*time.Millisecond)))
			}
			for i := range 3 {
				mustRegister(t, regs[i], inst("db_svc", fmt.Sprintf("10.0.0.%d", i+1), 80))
			}
			for _, r := range regs {
				waitFor(t, 2*time.Second, "every instance everywhere", func() bool { return strings.Count(ids(r.Get(ctx, "db_svc")), ",") == 2 })
			}
			var rec testutil.Recorder
			stop := callLoad(&rec, regs, []string{"a", "b", "c"}, []string{"db_svc"}, time.Millisecond)
			defer stop()
			time.Sleep(500 * time.Millisecond)

			start := time.Now()
			if mode == "refused" {
				proxy.Down()
			} else {
				proxy.Blackhole(true)
			}
			time.Sleep(cut / 2)
			mustRegister(t, regs[0], inst("db_svc", "10.0.0.4", 80))
			var seen time.Duration
			for _, r := range regs {
				seen = max(seen, waitFor(t, time.Second, "the registration made during the cut", func() bool {
					return strings.Count(ids(r.Get(ctx, "db_svc")), ",") == 3
				}))
			}
			time.Sleep(time.Until(start.Add(cut)))
			hits := make([]uint64, len(regs))
			for i, r := range regs {
				hits[i] = r.Stats().L2Hits
			}
			proxy.Blackhole(false)
			proxy.Up()
			var back time.Duration
			for i, r := range regs {
				back = max(back, waitFor(t, 2*time.Second, "L2 read again", func() bool { return r.Stats().L2Hits > hits[i] }))
			}
			time.Sleep(200 * time.Millisecond)
			stop()

			var stale uint64
			for _, r := range regs {
				stale += r.Stats().Stale
			}
			t.Logf("Redis %s for %v: %d calls, failed: %s; %d answered stale (recorded %d); registration during the cut seen everywhere after %v; L2 read again %v after Redis returned",
				mode, cut, rec.Len(), failedCalls(&rec), stale, rec.Stale(), seen.Round(time.Millisecond), back.Round(time.Millisecond))
			if f := rec.Failed(); len(f) != 0 {
				t.Fatalf("failed calls: %s; want 0", failedCalls(&rec))
			}
			if reg := rec.Regressions(); len(reg) != 0 {
				t.Fatalf("a Registry read an older revision than before: %s", reg[0])
			}
			if back > time.Second {
				t.Fatalf("L2 read again %v after Redis returned; want within 1s", back)
			}
		})
	}
}

// PostgreSQL cut away for 30 s, ten lease TTLs: every Get and Pick is
// answered (from the cache, stale), every write fails with ErrUnavailable
// wrapping the cause, and no instance expires because of the outage, during
// it or after it, while the registrations renew.
func TestPostgresCut30sAllGetsAnsweredWritesUnavailableNoInstanceExpires(t *testing.T) {
	const (
		cut = 30 * time.Second
		ttl = 3 * time.Second
	)
	worlds := map[string]func(t *testing.T) outageSetup{"memory": outageWorlds["memory"], "postgres+redis": outageWorlds["postgres+redis"]}
	for name, mk := range worlds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := mk(t)
			opts := append(s.opts, discovery.WithLeaseTTL(ttl), discovery.WithLoadTimeout(time.Second), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			var regs []*discovery.Registry
			for range 3 {
				r, err := discovery.New(opts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.up(); _ = r.Close() })
				regs = append(regs, r)
			}
			for i := range 3 {
				mustRegister(t, regs[0], inst("db_svc", fmt.Sprintf("10.0.0.%d", i+1), 80))
			}
			mustRegister(t, regs[1], inst("solo_svc", "10.0.1.1", 80))
			for _, r := range regs {
				waitFor(t, 2*time.Second, "every instance everywhere", func() bool {
					return strings.Count(ids(r.Get(ctx, "db_svc")), ",") == 2 && ids(r.Get(ctx, "solo_svc")) == "10.0.1.1:80"
				})
			}
			var rec testutil.Recorder
			stop := callLoad(&rec, regs[1:], []string{"b", "c"}, []string{"db_svc", "solo_svc"}, 2*time.Millisecond)
			defer stop()
			time.Sleep(500 * time.Millisecond)

			s.down()
			start := time.Now()
			writes, unavailable := 0, 0
			for time.Since(start) < cut {
				time.Sleep(time.Second)
				writes++
				_, err := regs[2].Register(ctx, inst("db_svc", "10.0.0.9", 80))
				var be *discovery.BackendError
				if errors.Is(err, discovery.ErrUnavailable) && errors.As(err, &be) && be.Unwrap() != nil {
					unavailable++
				} else {
					t.Errorf("Register during the outage = %v; want ErrUnavailable wrapping the cause", err)
				}
			}
			s.up()
			back := time.Now()
			// Three lease TTLs more: the registrations renew (or register
			// again); every instance must stay visible meanwhile.
			renewed := waitFor(t, 3*ttl, "every lease renewed", func() bool {
				res, err := regs[2].Lookup(ctx, "db_svc")
				return err == nil && !res.Stale && statuses(res.Service, nil) == "3 instances, 0 suspect"
			})
			time.Sleep(time.Until(back.Add(3 * ttl)))
			stop()

			var short []string
			for _, c := range rec.Calls() {
				if c.Op != "get" || c.Err != nil {
					continue
				}
				if want := map[string]int{"db_svc": 3, "solo_svc": 1}[c.Service]; strings.Count(c.Instance, ",")+1 != want {
					short = append(short, fmt.Sprintf("%s saw %s = %q at %+v", c.Caller, c.Service, c.Instance, c.At.Sub(start).Round(time.Millisecond)))
				}
			}
			var stale uint64
			for _, r := range regs {
				stale += r.Stats().Stale
			}
			t.Logf("database cut for %v (lease TTL %v, suspect grace %v): %d calls, failed: %s, %d stale; %d of %d writes failed with ErrUnavailable; every lease renewed %v after the database returned; %d lookups missed an instance",
				cut, ttl, 2*ttl, rec.Len(), failedCalls(&rec), stale, unavailable, writes, renewed.Round(time.Millisecond), len(short))
			if f := rec.Failed(); len(f) != 0 {
				t.Fatalf("failed calls: %s; want 0", failedCalls(&rec))
			}
			if len(short) > 0 {
				t.Fatalf("an instance expired because of the outage: %s", short[0])
			}
		})
	}
}

// The change fan-out of three Registries cut while another publishes 100
// updates (their connections refused throughout, or cut again and again
// while they reconnect): every Registry reads the final revision within 1 s
// of Redis answering again, and none ever reads a revision lower than one
// it read before. Freshness is long (30 s), so only the fan-out and the
// revalidation on resubscription can bring the updates.
func TestPubSubCutDuring100UpdatesFinalRevisionWithin1sNeverOlder(t *testing.T) {
	for _, mode := range []string{"refused", "cut-repeatedly"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			w, proxy, client := faultWorld(t)
			long := discovery.WithCacheFreshness(30*time.Second, 30*time.Second, 5*time.Minute)
			writer := w.registry(t, discovery.WithRedis(w.rdb), long)
			g := mustRegister(t, writer, inst("db_svc", "10.0.0.1", 80))
			var readers []*discovery.Registry
			for range 3 {
				r := w.registry(t, discovery.WithRedis(client(t)), long)
				if _, err := r.Get(ctx, "db_svc"); err != nil {
					t.Fatal(err)
				}
				readers = append(readers, r)
			}
			waitFor(t, 2*time.Second, "every subscription", func() bool {
				return subscribers(w.rdb, w.ns+":changes") == 4
			})
			var rec testutil.Recorder
			stop := callLoad(&rec, readers, []string{"a", "b", "c"}, []string{"db_svc"}, time.Millisecond)
			defer stop()
			time.Sleep(100 * time.Millisecond)

			if mode == "refused" {
				proxy.Down()
			}
			for i := range 100 {
				if mode == "cut-repeatedly" && i%10 == 0 {
					proxy.Cut()
				}
				if err := g.SetWeight(ctx, 1+i%100); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			final := g.Revision()
			proxy.Up()
			back := time.Now()
			waitFor(t, 3*time.Second, "every Registry reading the final revision", func() bool {
				return len(rec.Reached("db_svc", final, back)) == len(readers)
			})
			stop()
			var worst time.Duration
			for _, at := range rec.Reached("db_svc", final, back) {
				worst = max(worst, at.Sub(back))
			}
			var resyncs uint64
			for _, r := range readers {
				resyncs += r.Stats().Resyncs
			}
			t.Logf("fan-out %s during 100 updates: every Registry read the final revision %d within %v of Redis answering again (%d resyncs); %d calls, failed: %s",
				mode, final, worst.Round(time.Millisecond), resyncs, rec.Len(), failedCalls(&rec))
			if reg := rec.Regressions(); len(reg) != 0 {
				t.Fatalf("%d reads went back: %s", len(reg), reg[0])
			}
			if f := rec.Failed(); len(f) != 0 {
				t.Fatalf("failed calls: %s; want 0", failedCalls(&rec))
			}
			if worst > time.Second {
				t.Fatalf("the final revision reached every Registry %v after Redis returned; want within 1s", worst)
			}
		})
	}
}
