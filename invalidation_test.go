package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// subscribed waits until r is the n-th subscriber of the change channel and
// has finished revalidating its cache after subscribing, so that a change
// made afterwards reaches it only by a message (or not at all).
func subscribed(t *testing.T, w *world, r *discovery.Registry, n int64) {
	t.Helper()
	channel := w.ns + ":changes"
	waitFor(t, 2*time.Second, "the subscription", func() bool {
		return subscribers(w.rdb, channel) == n && r.Stats().Resyncs >= 1
	})
}

// A change message for a service that this process holds only because it
// wrote it (no lookup has loaded it yet) still moves the entry to the
// announced revision: the refresh must not settle for the older snapshot
// Redis holds.
func TestChangeMessageAfterOwnWrite(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			b := w.registry(t)
			channel := w.ns + ":changes"
			subscribed(t, w, b, 1)
			mustRegister(t, b, inst("db_svc", "10.0.0.1", 1)) // L1 and Redis hold revision 1
			in := discovery.Instance{ID: "x", Service: "db_svc", Host: "10.0.0.9", Port: 2, Weight: 1,
				RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
			rev, err := b.Store().Register(ctx, &in) // behind the caches: Redis keeps revision 1
			if err != nil {
				t.Fatal(err)
			}
			if err := w.rdb.Publish(ctx, channel, fmt.Sprintf("%d db_svc", rev)).Err(); err != nil {
				t.Fatal(err)
			}
			servesRevision(t, b, rev)
		})
	}
}

// A change message of a later release, with a word after the service that
// this one does not know, still moves the entry to the announced revision
// (within the freshness window: the message is what brings it). Dropped
// whole, it left the process on the older revision until the entry went
// stale, in every process of the older release of a fleet mid-upgrade.
func TestChangeMessageOfALaterReleaseIsHeard(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w, b, rev := changedBehindTheCaches(t, k)
			if err := w.rdb.Publish(ctx, w.ns+":changes", fmt.Sprintf("%d db_svc origin=eu-1", rev)).Err(); err != nil {
				t.Fatal(err)
			}
			servesRevision(t, b, rev)
		})
	}
}

// A writer pushes the new snapshot with its change message: a process that
// holds the service takes it from the message, without reading Redis (one
// network hop instead of two).
func TestChangeMessageCarriesTheSnapshot(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			a, b := w.registry(t), w.registry(t)
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			waitFor(t, 2*time.Second, "the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })
			before := b.Stats()
			mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
			// Pushed is counted just after the snapshot is installed: a Get
			// can see the second instance a moment before the count.
			waitFor(t, 2*time.Second, "the second instance", func() bool {
				return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2" && b.Stats().Pushed > before.Pushed
			})
			after := b.Stats()
			if after.Pushed != before.Pushed+1 || after.L2Hits != before.L2Hits || after.L2Misses != before.L2Misses || after.StoreReads != before.StoreReads {
				t.Fatalf("pushed %d->%d, L2 hits %d->%d, misses %d->%d, store reads %d->%d; want the snapshot from the message and no read",
					before.Pushed, after.Pushed, before.L2Hits, after.L2Hits, before.L2Misses, after.L2Misses, before.StoreReads, after.StoreReads)
			}
		})
	}
}

// A pushed snapshot that does not decode (another schema version, or
// corrupt) is counted and ignored: the process reads the revision the
// message announced from Redis or the database instead. It is no Redis
// read, so it is no L2 miss either: counted as one, every change a writer
// of another format version announced (a rolling upgrade) lowered the L2
// hit rate Stats and Overview report.
func TestUndecodablePushedSnapshotFallsBackToARead(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w, b, rev := changedBehindTheCaches(t, k)
			before := b.Stats()
			if err := w.rdb.Publish(ctx, w.ns+":changes", fmt.Sprintf("%d db_svc\n\x00garbage", rev)).Err(); err != nil {
				t.Fatal(err)
			}
			servesRevision(t, b, rev)
			after := b.Stats()
			if after.Pushed != before.Pushed || after.L2DecodeErrors != before.L2DecodeErrors+1 {
				t.Fatalf("pushed %d->%d, decode errors %d->%d; want the bad snapshot counted and not taken",
					before.Pushed, after.Pushed, before.L2DecodeErrors, after.L2DecodeErrors)
			}
			// One Redis read: the refresh's, which found the older revision.
			if reads := after.L2Hits + after.L2Misses - before.L2Hits - before.L2Misses; reads != 1 {
				t.Fatalf("L2 hits %d->%d, misses %d->%d: %d Redis reads counted; want 1 (the refresh's)",
					before.L2Hits, after.L2Hits, before.L2Misses, after.L2Misses, reads)
			}
		})
	}
}

// A pushed snapshot is decoded only by a process that takes it: one that
// holds an older snapshot of the service. Every process decoded every
// message's snapshot, the services it never looked up and its own writes
// included: in a fleet that is most of them, and the decoding cost each
// more than the rest of the message. A snapshot that does not decode shows
// who decoded it (L2DecodeErrors).
func TestPushedSnapshotIsDecodedOnlyWhereTaken(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w, b, rev := changedBehindTheCaches(t, k)
			before := b.Stats()
			for _, msg := range []string{
				fmt.Sprintf("%d never_looked_up\n\x00garbage", rev), // no entry: nothing to take it into
				fmt.Sprintf("%d db_svc\n\x00garbage", rev-1),        // as new as the one held (its own write)
				fmt.Sprintf("%d db_svc\n\x00garbage", rev),          // newer: taken, so decoded
			} {
				if err := w.rdb.Publish(ctx, w.ns+":changes", msg).Err(); err != nil {
					t.Fatal(err)
				}
			}
			// Messages are handled in order: once the last one's revision
			// is served, the first two have been handled.
			servesRevision(t, b, rev)
			if got := b.Stats().L2DecodeErrors - before.L2DecodeErrors; got != 1 {
				t.Fatalf("%d pushed snapshots decoded (each one undecodable); want 1, the one of the change this process takes", got)
			}
		})
	}
}

// A Redis that answers a command with an error (a key of ours holding
// another type, OOM at maxmemory, READONLY) is up: the write-through that
// failed (here its read of the generation, a hash) does not stop the change
// message, and the other processes still hear of the change. The failed write tripped the breaker, and the
// message, sent next, was dropped as if Redis were down: the others served
// the old snapshot until their L1 entry went stale.
func TestRedisErrorReplyKeepsChangeMessages(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(time.Now()) // L1 entries stay fresh: only a message moves them
			a, b := w.registry(t, discovery.WithClock(clock)), w.registry(t, discovery.WithClock(clock))
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			waitFor(t, 2*time.Second, "the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })
			// The generation's key: a snapshot write deletes a key of
			// another type (corrupt data), but a write-through reads the
			// generation first, with a GET that answers WRONGTYPE.
			key := w.ns + ":gen:{db_svc}"
			if err := w.rdb.HSet(ctx, key, "f", "v").Err(); err != nil {
				t.Fatal(err)
			}
			mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
			waitFor(t, 2*time.Second, "the second instance on the other process", func() bool {
				return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2"
			})
		})
	}
}

// A caller whose own deadline has passed does not take Redis out of this
// process: its call fails with its context's error, and the next change is
// still announced. The deadline tripped the breaker as if Redis had timed
// out ("redis lost" logged), and the change messages this process sent
// until the probe brought Redis back were dropped.
func TestCallersDeadlineDoesNotTripTheBreaker(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(time.Now()) // L1 entries stay fresh: only a message moves them
			log, logs := observed()
			a, b := w.registry(t, discovery.WithClock(clock), discovery.WithLogger(log)), w.registry(t, discovery.WithClock(clock))
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
			waitFor(t, 2*time.Second, "the first instance", func() bool { return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1" })
			expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel()
			if err := a.Invalidate(expired, "db_svc"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Invalidate with an expired context = %v; want its context's error", err)
			}
			if n := logs.FilterMessage("discovery: redis lost; serving from memory and the database").Len(); n != 0 {
				t.Errorf("%d 'redis lost' logged after a caller's deadline; want none", n)
			}
			mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
			waitFor(t, 2*time.Second, "the second instance on the other process", func() bool {
				return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2"
			})
		})
	}
}

// Two deployments that keep their keys apart in two databases of one Redis
// server, under the same namespace, do not hear each other's changes:
// Redis's pub/sub channels are not per database. A process took the other
// deployment's snapshot pushed with its change message and served its
// instances as its own.
func TestRedisDatabasesKeepChangesApart(t *testing.T) {
	ctx := context.Background()
	addr, db, _ := testutil.RedisAddr(t)
	clock := discoverytest.NewClock(time.Now()) // L1 entries stay fresh: only a message moves them
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	prodDB := testutil.SQLite(t)
	process := func(sql *gorm.DB, db int) *discovery.Registry {
		r, err := discovery.New(discovery.WithNamespace(ns), discovery.WithDB(sql),
			discovery.WithRedis(testutil.RedisClient(t, addr, db, ns)), discovery.WithClock(clock),
			discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	prod, reader, staging := process(prodDB, db), process(prodDB, db), process(testutil.SQLite(t), db+1)
	waitFor(t, 2*time.Second, "the subscriptions", func() bool {
		return prod.Stats().Resyncs >= 1 && reader.Stats().Resyncs >= 1 && staging.Stats().Resyncs >= 1
	})
	mustRegister(t, prod, inst("db_svc", "10.0.0.1", 1))    // revision 1 in prod
	mustRegister(t, prod, inst("other_svc", "10.0.0.3", 1)) // revision 1 in prod
	for _, svc := range []string{"db_svc", "other_svc"} {
		if _, err := reader.Get(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	mustRegister(t, staging, inst("db_svc", "10.9.0.1", 1))
	mustRegister(t, staging, inst("db_svc", "10.9.0.2", 1)) // revision 2 in staging
	mustRegister(t, prod, inst("other_svc", "10.0.0.4", 1)) // announced after staging's changes
	waitFor(t, 2*time.Second, "prod's change on the reader", func() bool {
		return ids(reader.Get(ctx, "other_svc")) == "10.0.0.3:1,10.0.0.4:1"
	})
	if got := ids(reader.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
		t.Fatalf("prod Get = %s after staging's changes (Redis database %d); want prod's own instance", got, db+1)
	}
}

// An L2 TTL under a millisecond is positive, as WithL2TTL asks, but Redis
// takes expiries in whole milliseconds: it was sent as PX 0, which Redis
// refuses ("invalid expire time"), and no snapshot was ever written.
func TestSubMillisecondL2TTLStillWrites(t *testing.T) {
	w := newWorld(t, allWorlds[2]) // sqlite+redis
	r := w.registry(t, discovery.WithL2TTL(500*time.Microsecond))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1)) // written through before Register returns
	if st := r.Stats(); st.L2Writes != 1 || st.L2Errors != 0 {
		t.Fatalf("L2 writes %d, errors %d after a registration; want 1 and 0", st.L2Writes, st.L2Errors)
	}
}

// writerBehindAProxy returns two processes on one store and one Redis: a
// reaches Redis through the proxy, b directly, and b already sees a's
// first instance of db_svc. Their clock stands still, so b's snapshot stays
// fresh: only a change message moves it. Without Redis the shared backend
// would tell b itself: each has a store of its own over it.
func writerBehindAProxy(t *testing.T) (a, b *discovery.Registry, proxy *testutil.Proxy) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy = testutil.NewProxy(t, addr)
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	opts := []discovery.Option{discovery.WithNamespace(ns), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0)}
	a = discoverytest.NewRegistry(t, backend, append(opts, discovery.WithStore(quietStore{backend, backend}),
		discovery.WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)))...)
	b = discoverytest.NewRegistry(t, backend, append(opts, discovery.WithStore(quietStore{backend, backend}),
		discovery.WithRedis(testutil.RedisClient(t, addr, db, ns)))...)
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	waitFor(t, 5*time.Second, "b to see the first instance", func() bool { return ids(b.Get(context.Background(), "db_svc")) == "10.0.0.1:1" })
	return a, b, proxy
}

// A writer that lost Redis while the others kept it announces what it
// wrote meanwhile once Redis is back: its changes were neither written
// through nor published, and the others, whose snapshots are fresh (the
// clock stands still here), served the old ones for up to a lease TTL.
func TestWriterAnnouncesWhatItWroteWithoutRedisOnceBack(t *testing.T) {
	ctx := context.Background()
	a, b, proxy := writerBehindAProxy(t)
	proxy.Down()
	if _, err := a.Register(ctx, inst("db_svc", "10.0.0.2", 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to take Redis out", func() bool { return a.Stats().L2Errors > 0 })
	if got := ids(b.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
		t.Fatalf("b sees %s while a's Redis is out; the test cannot show the announcement", got)
	}
	proxy.Up()
	waitFor(t, 5*time.Second, "b to see the instance a registered without Redis", func() bool {
		return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2"
	})
}

// A writer whose caller stops waiting before a hung Redis fails the
// write-through still announces the change once Redis is back: the
// write-through runs on, trips the breaker when its call times out, and
// what it could not publish is kept. It was looked for only when the caller
// stopped waiting, while Redis still seemed up: the change was neither
// published nor kept, and the others served their snapshots for up to a
// lease TTL.
func TestWriterWhoseCallerLeftBeforeRedisFailedAnnouncesOnceBack(t *testing.T) {
	ctx := context.Background()
	a, b, proxy := writerBehindAProxy(t)
	proxy.Blackhole(true) // a's calls hang until WithRedisTimeout (250 ms)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := a.Register(short, inst("db_svc", "10.0.0.2", 2))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to take Redis out", func() bool { return a.Stats().L2Errors > 0 })
	if got := ids(b.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
		t.Fatalf("b sees %s while a's Redis hangs; the test cannot show the announcement", got)
	}
	proxy.Blackhole(false)
	waitFor(t, 5*time.Second, "b to see the instance a registered while its Redis hung", func() bool {
		return ids(b.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2"
	})
}

// changedBehindTheCaches returns a world of k and a subscribed Registry b
// of it holding db_svc with 10.0.0.1:1, after a second instance was
// written straight to the store (no message, nothing in Redis) as
// revision rev.
// servesRevision waits until b serves db_svc at revision rev, fresh.
func servesRevision(t *testing.T, b *discovery.Registry, rev int64) {
	t.Helper()
	waitFor(t, 2*time.Second, "the announced revision", func() bool {
		res, err := b.Lookup(context.Background(), "db_svc")
		return err == nil && res.Revision == rev && !res.Stale
	})
}

func changedBehindTheCaches(t *testing.T, k worldKind) (*world, *discovery.Registry, int64) {
	t.Helper()
	w := newWorld(t, k)
	b := w.registry(t)
	subscribed(t, w, b, 1)
	mustRegister(t, b, inst("db_svc", "10.0.0.1", 1))
	in := discovery.Instance{ID: "x", Service: "db_svc", Host: "10.0.0.9", Port: 2, Weight: 1,
		RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
	rev, err := b.Store().Register(context.Background(), &in)
	if err != nil {
		t.Fatal(err)
	}
	return w, b, rev
}
