package discovery_test

import (
	"context"
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
	a := w.registry(t, discovery.WithRedis(w.rdb))
	b := w.registry(t, discovery.WithRedis(rb))
	subscribed(t, w, a, 2)
	subscribed(t, w, b, 2)
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	waitFor(t, 2*time.Second, "b sees the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })

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
