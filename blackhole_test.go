package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// blackholedDB returns a Registry on PostgreSQL through a fault proxy, with
// the shortest lease (3 s: a renewal every second, bounded by a second).
func blackholedDB(t *testing.T, opts ...discovery.Option) (*discovery.Registry, *testutil.Proxy) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db, proxy := testutil.PostgresVia(t, ns+"_")
	// New migrates within WithMigrationTimeout: the 300 ms some tests give
	// the database is the outage's bound, not the schema's.
	r, err := discovery.New(append([]discovery.Option{discovery.WithDB(db), discovery.WithNamespace(ns),
		discovery.WithoutHealthChecks(), discovery.WithLeaseTTL(3 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Blackhole(false); _ = r.Close() })
	return r, proxy
}

// A renewal stuck on a black-holed database held the registration's one
// mutex for its whole timeout: Instance and Revision waited for it, and
// SetWeight waited past its own deadline. Now the reads do not wait, and a
// write waits only as long as its context allows. The lease is 9 s, so the
// renewal at 3 s stays stuck until 6 s: waiting for it would take about
// 2.8 s, which each call here must stay well within.
func TestStuckRenewalHoldsNoReader(t *testing.T) {
	const within = 1400 * time.Millisecond
	r, proxy := blackholedDB(t, discovery.WithLeaseTTL(9*time.Second))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	proxy.Blackhole(true)
	time.Sleep(3200 * time.Millisecond) // the renewal at 3 s is stuck until 6 s
	start := time.Now()
	_ = g.Instance()
	_ = g.Revision()
	if d := time.Since(start); d >= within {
		t.Fatalf("Instance and Revision took %v behind a stuck renewal; want no wait (well within %v)", d, within)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	err := g.SetWeight(ctx, 5)
	if d := time.Since(start); d >= within || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SetWeight with a 100ms deadline = %v after %v; want its deadline's error, well within %v", err, d, within)
	}
}

// Close with the database black-holed and renewals stuck: it ended after
// one close timeout per registration (11.6 s of a 5 s timeout with three),
// with bare context errors. Now it stops the renewals first, marks
// draining within the close-drain timeout, and ends within the close
// timeout with ErrUnavailable.
func TestCloseKeepsItsTimeoutOnABlackholedDatabase(t *testing.T) {
	const closeTO = 2 * time.Second
	r, proxy := blackholedDB(t, discovery.WithCloseTimeout(closeTO), discovery.WithCloseDrain(500*time.Millisecond))
	for i := range 3 {
		mustRegister(t, r, inst("db_svc", "10.0.0.1", 1+i))
	}
	proxy.Blackhole(true)
	time.Sleep(1200 * time.Millisecond) // every renewal stuck
	start := time.Now()
	err := r.Close()
	// One close timeout per registration (6 s here) is what this guards
	// against; a loaded machine may add to the one, not double it.
	if d := time.Since(start); d >= 2*closeTO || !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Close = %v after %v; want ErrUnavailable within the close timeout (%v), well under two", err, d, closeTO)
	}
}

// A renewal that the Registry's own deadline (a third of the lease) ends is
// the database not answering: the outage is noted (logged once, and the
// leases that end meanwhile are not taken as deaths). It came back as a
// bare context error, which nothing took for an outage.
func TestRenewalTimeoutIsAnOutage(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r, proxy := blackholedDB(t, discovery.WithLogger(zap.New(core)))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	proxy.Blackhole(true)
	deadline := time.Now().Add(15 * time.Second) // the renewal at 1 s fails at 2 s; the rest is room for a loaded machine
	for logs.FilterMessage("discovery: database lost; serving cached data").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("renewals failed on a black-holed database but no outage was noted; logs: %v", logs.All())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = r
}

// Health results are shared through Redis. With Redis black-holed, every
// Health call paid the Redis timeout again, Overview once per service
// (1.76 s for 8 services, each time), and Redis was never marked down. Now
// a failed read counts against the L2's breaker: the first one waits, the
// rest do not. With 24 services, paying per service is 6 s; each Overview
// must take less than half of that.
func TestHealthSharingOnABlackholedRedisWaitsOnce(t *testing.T) {
	ctx := context.Background()
	ns, proxy, db := redisBehindProxy(t)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
		discovery.WithCacheFreshness(time.Minute, 0, 5*time.Minute))
	const services = 24
	const bound = services * 250 * time.Millisecond / 2
	for i := range services {
		in := inst(fmt.Sprintf("svc%d", i), "127.0.0.1", 1)
		in.Check = discovery.CheckNone
		mustRegister(t, r, in)
		if _, err := r.Get(ctx, in.Service); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Blackhole(true)
	defer proxy.Blackhole(false)
	for i := range 2 {
		start := time.Now()
		ov, err := r.Overview(ctx)
		if d := time.Since(start); err != nil || d >= bound {
			t.Fatalf("Overview %d with Redis black-holed: %d services, %v, after %v; want one Redis timeout (250ms), well within %v", i, ov.TotalServices, err, d, bound)
		}
	}
	if r.Stats().L2Errors == 0 {
		t.Fatal("no Redis failure counted")
	}
}

// Overview in a database outage: Services fails, and every cached service
// is shown from this process's memory. Each lookup behind it waited one
// load timeout (2.1 s for 6 services with 300 ms timeouts, each call; the
// admin handler's GET /overview ran out of its 10 s at the defaults and
// answered 503). Now the database is known to be down and they serve stale
// at once. With 20 services, waiting per service is 6 s; each Overview must
// take less than half of that.
func TestOverviewInADatabaseOutageDoesNotWaitPerService(t *testing.T) {
	const to = 300 * time.Millisecond
	ctx := context.Background()
	r, proxy := blackholedDB(t, discovery.WithDatabaseTimeout(to), discovery.WithLoadTimeout(to))
	const services = 20
	const bound = services * to / 2
	for i := range services {
		name := fmt.Sprintf("svc%d", i)
		mustRegister(t, r, inst(name, "10.0.0.1", 1000+i))
		if _, err := r.Get(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Blackhole(true)
	time.Sleep(4 * time.Second) // past every lease: no entry is fresh
	for round := range 2 {
		start := time.Now()
		ov, err := r.Overview(ctx)
		if d := time.Since(start); err != nil || !ov.FromCache || ov.TotalServices != services || d >= bound {
			t.Fatalf("Overview %d: %d services, FromCache %v, %v, after %v; want all %d from memory within about one timeout (%v), well within %v",
				round, ov.TotalServices, ov.FromCache, err, d, services, to, bound)
		}
	}
	rec := httptest.NewRecorder()
	r.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/overview", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /overview = %d %.200s; want 200 with the services from memory", rec.Code, rec.Body.String())
	}
}

// WithLoadTimeout bounds a lookup's load, even when it is longer than
// WithDatabaseTimeout, which bounds the other calls: the store bounded
// every call by the database timeout, so a load that the 10 s load timeout
// allowed failed with ErrUnavailable after the 300 ms database timeout.
// The load here waits about a second for a lock another transaction holds.
func TestLoadTimeoutLongerThanTheDatabaseTimeoutHolds(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db := testutil.Postgres(t, ns+"_")
	opts := []discovery.Option{discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithLoadTimeout(10 * time.Second), discovery.WithDatabaseTimeout(300 * time.Millisecond)}
	a, err := discovery.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	b, err := discovery.New(opts...) // another process: nothing cached
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tx := db.Begin()
	if err := tx.Exec(`LOCK TABLE ` + ns + `_instances IN ACCESS EXCLUSIVE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(time.Second) // holds the lock a while; nothing is timed against it
		tx.Rollback()
	}()
	defer func() { <-released }()
	svc, err := b.Get(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 {
		t.Fatalf("Get = %+v, %v; want the instance: the load waited about 1 s of its 10 s load timeout", svc, err)
	}
}

// Close with Redis stalled (a partition: nothing answers, nothing is
// closed) and health sharing on, as it is by default with Redis: it waited
// for the health subscription's read under way, which go-redis ends on its
// deadline, not on a cancellation, until the subscription's silence
// deadline (4 s measured with a 1 s close timeout; 1.3-1.6 s on a quiet
// Redis that answers). Now Close closes the subscription.
func TestCloseDoesNotWaitForTheHealthSubscriptionOnAStalledRedis(t *testing.T) {
	const closeTO = time.Second
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithNamespace(ns),
		discovery.WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)), discovery.WithCloseTimeout(closeTO))
	if err != nil {
		t.Fatal(err)
	}
	direct := testutil.RedisClient(t, addr, db, ns)
	waitFor(t, 5*time.Second, "the health subscription", func() bool { return subscribers(direct, ns+":health") == 1 })
	proxy.Stall()
	start := time.Now()
	_ = r.Close()
	if d := time.Since(start); d > closeTO {
		t.Fatalf("Close took %v with Redis stalled; want within the close timeout (%v)", d, closeTO)
	}
}

// Close deregisters this process's instances; with Redis black-holed, the
// deregistration's write-through hangs (a Redis timeout, or Close's
// deadline). Meanwhile Pick's fast path still chose the deregistered
// instance: its entry stayed fresh, though the write had raised the
// revision lookups wait for, which the fast path does not look at. The
// write now takes the superseded entry out of the fast path itself, so a
// pick after the row is gone never chooses it (picks made while Close
// deregisters may fail, or wait for the database: never that).
func TestPickWhileCloseDeregistersOnABlackholedRedis(t *testing.T) {
	ns, proxy, db := redisBehindProxy(t)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	backend := discoverytest.NewBackend()
	r, err := discovery.New(discovery.WithStore(struct{ discovery.Store }{backend}), // hears of changes through Redis only
		discovery.WithRedis(rdb), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0),
		discovery.WithCloseDrain(0), discovery.WithCloseTimeout(3*time.Second), discovery.WithRedisTimeout(time.Second),
		discovery.WithCacheFreshness(time.Minute, 0, 5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Blackhole(false); _ = r.Close() })
	ctx := context.Background()
	other := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks()) // another process
	for port := 2; port <= 3; port++ {
		mustRegister(t, other, inst("db_svc", "10.0.0.1", port))
	}
	own := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1)).Instance().ID
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 3 {
		t.Fatalf("Get = %v, %v; want the 3 instances", svc, err)
	}
	proxy.Blackhole(true)
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	waitFor(t, 5*time.Second, "the deregistration in the database", func() bool {
		svc, err := backend.Load(ctx, "db_svc")
		return err == nil && svc.Instance(own) == nil
	})
	for i := range 200 {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		sel, err := r.Pick(pctx, "db_svc")
		cancel()
		if err == nil {
			sel.Done(nil)
			if sel.Instance.ID == own {
				t.Fatalf("pick %d after Close deleted the row: chose %s, the instance Close is deregistering", i, own)
			}
		}
	}
	if err := <-closed; err != nil && !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Close = %v", err)
	}
}
