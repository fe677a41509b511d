package discovery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// Faults of a Redis of the test's own (testutil.RedisServer): what a shared
// one must not be put through.

// redisFaultWorld is a SQLite world whose Registries reach srv; fanOnly
// keeps L1 entries and leases for an hour, so that only the fan-out (a
// message, or a resubscription's revalidation) brings a change.
func redisFaultWorld(t *testing.T, srv *testutil.RedisServer) *world {
	t.Helper()
	w := newWorld(t, worldKind{name: "sqlite", sql: sqlite},
		discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithLeaseTTL(time.Hour))
	w.rdb = testutil.RedisClient(t, srv.Addr(), 0, w.ns)
	return w
}

// A subscription that Redis refused once New had taken the client (its
// user's channels revoked by an operator's mistake, a password changed, and
// Redis dropped the subscribed connection) was never asked for again:
// go-redis keeps a connection whose command Redis answered with an error,
// and subscribes again only on a new one. Once the mistake was put right
// the Registry stayed deaf to every other process's changes until it was
// restarted. Now the subscription is asked for again, and its
// revalidation brings what changed meanwhile.
func TestSubscriptionRefusedAfterNewIsAskedForAgain(t *testing.T) {
	ctx := context.Background()
	srv := testutil.NewRedisServer(t)
	w := redisFaultWorld(t, srv)
	srv.Do("ACL", "SETUSER", "b", "on", ">pw", "~*", "&*", "+@all")
	rb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "b", Password: "pw", MaxRetries: -1})
	t.Cleanup(func() { _ = rb.Close() })
	a, b := twoOnOneRedis(t, w, rb)

	// Revoked: Redis drops b's subscribed connection, and refuses it the
	// channel when it subscribes again.
	srv.Do("ACL", "SETUSER", "b", "resetchannels")
	waitFor(t, 2*time.Second, "b's subscription dropped", func() bool { return subscribers(w.rdb, w.ns+":changes") == 1 })
	resyncs := b.Stats().Resyncs
	srv.Do("ACL", "SETUSER", "b", "&*") // put right
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 2))
	waitFor(t, 5*time.Second, "b subscribed again", func() bool { return subscribers(w.rdb, w.ns+":changes") == 2 })
	waitFor(t, 2*time.Second, "b sees the change made while it was refused", func() bool {
		return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.1:2"
	})
	if b.Stats().Resyncs <= resyncs {
		t.Fatalf("b resubscribed without revalidating (%d resyncs, %d before)", b.Stats().Resyncs, resyncs)
	}
}

// Redis restarted, its data lost (SHUTDOWN NOSAVE), while a change is
// made: the write succeeds (the database is the truth), every Registry
// subscribes again, and the change made while Redis was away reaches the
// other Registry through its resubscription's revalidation, not a
// freshness window later (an hour here). Changes made after the restart
// travel by message again, and lookups keep answering throughout.
func TestRedisRestartedWithItsDataLostResubscribesAndResyncs(t *testing.T) {
	ctx := context.Background()
	srv := testutil.NewRedisServer(t)
	w := redisFaultWorld(t, srv)
	rb := testutil.RedisClient(t, srv.Addr(), 0, w.ns)
	a, b := twoOnOneRedis(t, w, rb)
	for round := 2; round <= 3; round++ {
		resyncs := b.Stats().Resyncs
		srv.Stop()
		mustRegister(t, a, inst("db_svc", "10.0.0.1", round)) // Redis away: written to the database
		if got := ids(b.Get(ctx, "db_svc")); !strings.HasPrefix(got, "10.0.0.1:1") {
			t.Fatalf("round %d: b's Get with Redis away = %s", round, got)
		}
		srv.Start()
		want := ids(a.Get(ctx, "db_svc"))
		if strings.Count(want, ",") != round-1 {
			t.Fatalf("round %d: a's Get = %s", round, want)
		}
		took := waitFor(t, 10*time.Second, "b sees the change made while Redis was away", func() bool {
			return ids(b.Get(ctx, "db_svc")) == want
		})
		if b.Stats().Resyncs <= resyncs {
			t.Fatalf("round %d: b saw the change without a resubscription (%d resyncs, %d before)", round, b.Stats().Resyncs, resyncs)
		}
		t.Logf("round %d: b saw the change %v after Redis was back", round, took)
	}
	subscribed(t, w, a, 2)
	mustRegister(t, b, inst("other_svc", "10.0.0.9", 9))
	waitFor(t, 2*time.Second, "a sees b's registration after the restarts", func() bool { return ids(a.Get(ctx, "other_svc")) == "10.0.0.9:9" })
}

// FLUSHALL (or every key evicted) empties the L2 under running
// Registries: it is a cache only. Lookups answer from L1 and the database,
// write-throughs fill it again, changes still travel, and an Invalidate
// still reaches every Registry.
func TestRedisFlushedUnderRunningRegistriesLosesNothing(t *testing.T) {
	ctx := context.Background()
	srv := testutil.NewRedisServer(t)
	w := redisFaultWorld(t, srv)
	a := w.registry(t, discovery.WithRedis(w.rdb))
	b := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, srv.Addr(), 0, w.ns)))
	subscribed(t, w, a, 2)
	subscribed(t, w, b, 2)
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	waitFor(t, 2*time.Second, "b sees the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })
	srv.Do("FLUSHALL")
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 2))
	waitFor(t, 2*time.Second, "b sees the change after the flush", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.1:2" })
	if n, err := w.rdb.Exists(ctx, l2Key(w.ns, "db_svc")).Result(); err != nil || n != 1 {
		t.Fatalf("the snapshot is not written through again after the flush: %d, %v", n, err)
	}
	c := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, srv.Addr(), 0, w.ns)))
	srv.Do("FLUSHALL")
	if got := ids(c.Get(ctx, "db_svc")); got != "10.0.0.1:1,10.0.0.1:2" {
		t.Fatalf("a new Registry's Get after the flush = %s", got)
	}
	if err := b.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*discovery.Registry{a, b, c} {
		if got := ids(r.Get(ctx, "db_svc")); got != "10.0.0.1:1,10.0.0.1:2" {
			t.Fatalf("Get after the Invalidate = %s", got)
		}
	}
}

// twoOnOneRedis returns Registries a (on w's client) and b (on rb), both
// subscribed to both channels, once b sees the instance a registered.
func twoOnOneRedis(t *testing.T, w *world, rb redis.UniversalClient) (a, b *discovery.Registry) {
	t.Helper()
	a = w.registry(t, discovery.WithRedis(w.rdb))
	b = w.registry(t, discovery.WithRedis(rb))
	subscribed(t, w, a, 2)
	subscribed(t, w, b, 2)
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	waitFor(t, 2*time.Second, "b sees the first instance", func() bool { return ids(b.Get(context.Background(), "db_svc")) == "10.0.0.1:1" })
	return a, b
}
