package discovery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// The bounds of an L1 entry's freshness window under the default jitter.
const (
	shortestFresh = discovery.DefaultFresh - discovery.DefaultFresh/10
	longestFresh  = discovery.DefaultFresh + discovery.DefaultFresh/10
)

// world is one deployment: a database and (optionally) a Redis shared by
// every Registry a test makes in it, each standing for a process.
type world struct {
	name    string
	ns      string
	store   discovery.Store // memory worlds
	db      *gorm.DB        // SQL worlds
	rdb     redis.UniversalClient
	options []discovery.Option
}

type worldKind struct {
	name    string
	redis   bool
	cluster bool // a Redis Cluster (DISCOVERY_TEST_REDIS_CLUSTER) instead of one Redis
	sql     func(t testing.TB, prefix string) *gorm.DB
}

func sqlite(t testing.TB, _ string) *gorm.DB { return testutil.SQLite(t) }

// allWorlds are the backends every behaviour runs against: memory, SQLite and
// PostgreSQL, without and with Redis (miniredis unless DISCOVERY_TEST_REDIS),
// and with a Redis Cluster when DISCOVERY_TEST_REDIS_CLUSTER is set.
var allWorlds = []worldKind{
	{name: "memory"},
	{name: "sqlite", sql: sqlite},
	{name: "sqlite+redis", sql: sqlite, redis: true},
	{name: "postgres", sql: testutil.Postgres},
	{name: "postgres+redis", sql: testutil.Postgres, redis: true},
	{name: "sqlite+cluster", sql: sqlite, redis: true, cluster: true},
}

func newWorld(t *testing.T, k worldKind, opts ...discovery.Option) *world {
	t.Helper()
	w := &world{name: k.name, ns: strings.TrimSuffix(testutil.Prefix(t), "_")}
	// Worlds register made-up addresses, which must not be probed, and count
	// fake-clock timers; health tests turn checks on with WithHealthCheck.
	// Made-up addresses: no active checks. Close deregisters at once (drain
	// tests turn draining back on).
	w.options = append(w.options, discovery.WithNamespace(w.ns), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if k.sql != nil {
		w.db = k.sql(t, w.ns+"_")
		w.options = append(w.options, discovery.WithDB(w.db))
	} else {
		w.store = discoverytest.NewBackend()
		w.options = append(w.options, discovery.WithStore(w.store))
	}
	switch {
	case k.cluster:
		w.rdb = testutil.RedisCluster(t, w.ns)
		w.options = append(w.options, discovery.WithRedis(w.rdb))
	case k.redis:
		w.rdb, _ = testutil.Redis(t, w.ns)
		w.options = append(w.options, discovery.WithRedis(w.rdb))
	}
	w.options = append(w.options, opts...)
	return w
}

// forEachWorld runs fn as a subtest in every world.
func forEachWorld(t *testing.T, fn func(t *testing.T, w *world), opts ...discovery.Option) {
	for _, k := range allWorlds {
		t.Run(k.name, func(t *testing.T) { fn(t, newWorld(t, k, opts...)) })
	}
}

// registry returns a new Registry (a "process") of the world, closed at the
// end of the test.
func (w *world) registry(t *testing.T, opts ...discovery.Option) *discovery.Registry {
	t.Helper()
	r, err := discovery.New(append(append([]discovery.Option{}, w.options...), opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func inst(service, host string, port int) discovery.Instance {
	return discovery.Instance{Service: service, Host: host, Port: port}
}

// redisBehindProxy returns a key namespace for the test, a fault proxy in
// front of its Redis (real, or a fresh miniredis) and the Redis database
// number.
func redisBehindProxy(t *testing.T) (ns string, proxy *testutil.Proxy, db int) {
	t.Helper()
	ns = strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	return ns, testutil.NewProxy(t, addr), db
}

func mustRegister(t *testing.T, r *discovery.Registry, in discovery.Instance) *discovery.Registration {
	t.Helper()
	g, err := r.Register(context.Background(), in)
	if err != nil {
		t.Fatalf("Register(%+v): %v", in, err)
	}
	return g
}

// ids returns the instance IDs of a lookup, or the error text.
func ids(svc *discovery.Service, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, in := range svc.Instances {
		out = append(out, in.ID)
	}
	return strings.Join(out, ",")
}

// waitFor polls cond every millisecond until it holds or d passes, for
// effects that cross goroutines or processes on real time.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// eventsBefore reads a Watch until an event of the instance id, and returns
// the events before it.
func eventsBefore(t *testing.T, ch <-chan discovery.Event, id string) []discovery.Event {
	t.Helper()
	var evs []discovery.Event
	for ev := range ch {
		if ev.Instance.ID == id {
			return evs
		}
		evs = append(evs, ev)
	}
	t.Fatal("watch ended")
	return nil
}
