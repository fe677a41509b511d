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

// A write-through that Redis answers with an error reply (out of memory
// under maxmemory; an ACL that lost EVAL and PUBLISH; a read-only replica,
// CLUSTERDOWN) is no network failure: the breaker stays closed, and it
// was not announced again. Out of memory, the change message still went
// out but the snapshot write did not: Redis kept the old snapshot, and a
// process that did not hold the service served it for up to a lease TTL
// (an hour here). Refused both, the other processes heard nothing: they
// served their snapshots for their whole freshness window (an hour here),
// even once Redis took writes again. Now the write-through is made again
// and announced once Redis takes writes.
func TestWriteThroughRefusedByRedisIsAnnouncedOnceRedisTakesWrites(t *testing.T) {
	tests := []struct {
		name          string
		refuse, allow []any
		// dropped: Redis takes the DEL of the old snapshot meanwhile
		dropped bool
	}{
		{"out of memory", []any{"CONFIG", "SET", "maxmemory", "1"}, []any{"CONFIG", "SET", "maxmemory", "0"}, true},
		{"EVAL and PUBLISH revoked", []any{"ACL", "SETUSER", "a", "-eval", "-evalsha", "-publish"}, []any{"ACL", "SETUSER", "a", "+@all"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			srv := testutil.NewRedisServer(t, "--maxmemory-policy", "noeviction")
			srv.Do("ACL", "SETUSER", "a", "on", ">pw", "~*", "&*", "+@all")
			w := redisFaultWorld(t, srv)
			ra := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "a", Password: "pw", MaxRetries: -1})
			t.Cleanup(func() { _ = ra.Close() })
			a := w.registry(t, discovery.WithRedis(ra))
			b := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, srv.Addr(), 0, w.ns)))
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			waitFor(t, 2*time.Second, "b sees the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })

			srv.Do(tt.refuse...)
			errs := a.Stats().L2Errors
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 2)) // the database takes it
			if a.Stats().L2Errors == errs {
				t.Fatal("Redis took the write-through: the test refuses nothing")
			}
			const want = "10.0.0.1:1,10.0.0.1:2"
			if tt.dropped {
				// Redis refuses the new snapshot but deletes the old one: a
				// process that does not hold the service reads the database.
				early := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, srv.Addr(), 0, w.ns)))
				if got := ids(early.Get(ctx, "db_svc")); got != want {
					t.Fatalf("a new Registry's Get while Redis refuses writes = %s, want %s", got, want)
				}
			}
			srv.Do(tt.allow...)
			c := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, srv.Addr(), 0, w.ns)))
			for _, p := range []struct {
				name string
				r    *discovery.Registry
			}{{"b (held the service)", b}, {"c (did not)", c}} {
				took := waitFor(t, 5*time.Second, p.name+" sees the change once Redis takes writes", func() bool {
					return ids(p.r.Get(ctx, "db_svc")) == want
				})
				t.Logf("%s saw the change %v after Redis took writes again", p.name, took)
			}
		})
	}
}
