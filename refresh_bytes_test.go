package discovery_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/testutil"
)

// bytesWorld is a writer without Redis that registered a service of n
// instances (the backend tells the reader of its changes), and a reader
// whose Redis client counts every byte it reads, holding the service as
// its first load read it from the database and wrote it to Redis, fresh
// for a second.
type bytesWorld struct {
	ns             string
	rdb            *redis.Client
	read           atomic.Int64
	clock          *discoverytest.Clock
	writer, reader *discovery.Registry
}

func newBytesWorld(t *testing.T, instances int) *bytesWorld {
	t.Helper()
	w := &bytesWorld{ns: strings.TrimSuffix(testutil.Prefix(t), "_"), clock: discoverytest.NewClock(t0)}
	addr, db, _ := testutil.RedisAddr(t)
	w.rdb = redis.NewClient(&redis.Options{Addr: addr, DB: db, MaxRetries: -1, Dialer: testutil.CountingDialer(&w.read),
		ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second})
	t.Cleanup(func() {
		testutil.DeleteKeys(w.rdb, w.ns)
		_ = w.rdb.Close()
	})
	backend := discoverytest.NewBackend()
	common := []discovery.Option{discovery.WithClock(w.clock), discovery.WithLeaseTTL(1000 * time.Hour), discovery.WithoutHealthChecks()}
	w.writer = discoverytest.NewRegistry(t, backend, common...)
	for i := range instances {
		mustRegister(t, w.writer, discovery.Instance{Service: "db_svc", Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080,
			Zone: "eu-1a", Tags: []string{"primary"}, Metadata: map[string]string{"team": "core"}})
	}
	w.reader = discoverytest.NewRegistry(t, backend, append(common, discovery.WithRedis(w.rdb), discovery.WithNamespace(w.ns),
		discovery.WithCacheFreshness(time.Second, 0, time.Minute), discovery.WithCacheJitter(0))...)
	if res, err := w.reader.Lookup(context.Background(), "db_svc"); err != nil || res.Layer != discovery.LayerL3 || len(res.Service.Instances) != instances {
		t.Fatalf("first Lookup = %v, %v; want %d instances from the database", res.Layer, err, instances)
	}
	// The load writes what it read to Redis, in the background.
	waitFor(t, 5*time.Second, "the snapshot in Redis", func() bool { return w.reader.Stats().L2Writes == 1 })
	return w
}

// A process that holds a service's snapshot and refreshes it once its
// freshness window has run out, while Redis still holds that same snapshot,
// learns so from Redis without reading it: it reads the value's header
// (GETRANGE), some fifty bytes. It read the whole
// encoded snapshot before (an MGET) only to compare its header and throw it
// away: for a service of 1,000 instances, 86 KiB a refresh, in every
// process that holds the service, every freshness window.
func TestSameRevisionRefreshReadsNoSnapshot(t *testing.T) {
	const instances = 1000
	ctx := context.Background()
	w := newBytesWorld(t, instances)
	rdb, read, ns, clock, reader := w.rdb, &w.read, w.ns, w.clock, w.reader
	size, err := rdb.StrLen(ctx, ns+":svc:{db_svc}").Result()
	if err != nil || size < 10<<10 {
		t.Fatalf("the snapshot in Redis is %d bytes (%v); want tens of KiB", size, err)
	}
	for i := range 3 {
		clock.Advance(2 * time.Second) // past the freshness window: the lookup refreshes, and waits for it
		before := read.Load()
		res, err := reader.Lookup(ctx, "db_svc")
		n := read.Load() - before
		if err != nil || res.Layer != discovery.LayerL2 || len(res.Service.Instances) != instances {
			t.Fatalf("refresh %d: Lookup = %v, %v; want %d instances from Redis", i, res.Layer, err, instances)
		}
		t.Logf("refresh %d of a %d-byte snapshot Redis holds at the revision held: %d bytes read from Redis", i, size, n)
		// The first refresh may open a connection (HELLO's reply).
		if i > 0 && n >= 100 {
			t.Fatalf("a refresh that found the snapshot it holds read %d bytes from Redis (the snapshot is %d); want under 100", n, size)
		}
	}
}

// A refresh that finds in Redis the snapshot it holds, but can no longer
// serve it (read a lease TTL ago), reads the database, and writes what it
// reads to Redis under the service's generation, read before the database
// (the header was read without it): after an Invalidate, whose generation
// Redis holds, the write lands. Written as of no generation, it was
// refused as read before the Invalidate, and Redis kept the snapshot no
// process could serve, each of them reading the database a refresh.
func TestHeldSnapshotRefreshedFromTheDatabaseIsWrittenUnderItsGeneration(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	writer := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour), discovery.WithoutHealthChecks())
	mustRegister(t, writer, inst("db_svc", "10.0.0.1", 1))
	// Its own lease TTL bounds how long a Redis snapshot serves the reader.
	reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLeaseTTL(3*time.Second), discovery.WithoutHealthChecks(),
		discovery.WithRedis(rdb), discovery.WithNamespace(ns), discovery.WithCacheFreshness(time.Second, 0, time.Minute), discovery.WithCacheJitter(0))
	if _, err := reader.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the snapshot in Redis", func() bool { return reader.Stats().L2Writes == 1 })
	// The Invalidate deletes it and moves the generation; the next load
	// writes the snapshot again, under the new generation.
	// Its message reaches the reader too, and counts as an invalidation
	// there: heard after the reload below began, it refuses the reload's
	// write (setL2Unless), as it must for another process's. On a loaded
	// host it came that late 13 runs in 40, and no write followed.
	received := reader.Stats().Received
	if err := reader.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the Invalidate's own message", func() bool { return reader.Stats().Received > received })
	if res, err := reader.Lookup(ctx, "db_svc"); err != nil || res.Layer != discovery.LayerL3 {
		t.Fatalf("Lookup after Invalidate = %v, %v; want the database's answer", res.Layer, err)
	}
	waitFor(t, 5*time.Second, "the reloaded snapshot in Redis", func() bool { return reader.Stats().L2Writes == 2 })
	clock.Advance(4 * time.Second) // a lease TTL since it was read: Redis's snapshot no longer serves
	res, err := reader.Lookup(ctx, "db_svc")
	if err != nil || res.Layer != discovery.LayerL3 {
		t.Fatalf("Lookup = %v, %v; want the database's answer", res.Layer, err)
	}
	var last discovery.Stats
	defer func() {
		if t.Failed() {
			t.Logf("last stats: %+v", last)
		}
	}()
	waitFor(t, 5*time.Second, "the refreshed snapshot written to Redis", func() bool {
		st := reader.Stats()
		if st.L2StaleWrites != 0 {
			t.Fatalf("a snapshot write was refused (stats %+v): written as of another generation than Redis holds", st)
		}
		last = st
		return st.L2Writes == 3
	})
}

// A process that holds a newer snapshot than Redis does (it read the
// database, and its write to Redis failed or has not landed) learns so
// from the header alone (GETRANGE) when it refreshes, and goes on to the
// database, as it did with the older snapshot read: that snapshot is not
// read. It read the whole snapshot before (an MGET), only to find it
// older than the revision it waits for and throw it away: for a service of
// 1,000 instances, 86 KiB a refresh.
func TestOlderRevisionRefreshReadsNoSnapshot(t *testing.T) {
	const instances = 1000
	ctx := context.Background()
	w := newBytesWorld(t, instances)
	rdb, read, clock, writer, reader := w.rdb, &w.read, w.clock, w.writer, w.reader
	key := w.ns + ":svc:{db_svc}"
	old, err := rdb.Get(ctx, key).Result()
	if err != nil || len(old) < 10<<10 {
		t.Fatalf("the snapshot in Redis is %d bytes (%v); want tens of KiB", len(old), err)
	}
	for i := range 3 {
		// A change: the reader hears of it, reads the database and writes
		// the newer snapshot to Redis; then Redis holds the older one again
		// (as if that write had failed).
		mustRegister(t, writer, discovery.Instance{Service: "db_svc", Host: "10.1.0.1", Port: 9000 + i})
		want := instances + i + 1
		waitFor(t, 5*time.Second, "the change's snapshot in Redis", func() bool { return reader.Stats().L2Writes == uint64(2*i+2) })
		if res, err := reader.Lookup(ctx, "db_svc"); err != nil || len(res.Service.Instances) != want {
			t.Fatalf("change %d: Lookup = %v, %v; want %d instances", i, res.Layer, err, want)
		}
		if err := rdb.Set(ctx, key, old, 0).Err(); err != nil {
			t.Fatal(err)
		}
		clock.Advance(2 * time.Second) // past the freshness window: the lookup refreshes, and waits for it
		before, reads := read.Load(), reader.Stats().StoreReads
		res, err := reader.Lookup(ctx, "db_svc")
		n := read.Load() - before
		if err != nil || res.Layer != discovery.LayerL3 || len(res.Service.Instances) != want {
			t.Fatalf("refresh %d: Lookup = %v, %v; want %d instances from the database", i, res.Layer, err, want)
		}
		if got := reader.Stats().StoreReads - reads; got != 1 {
			t.Fatalf("refresh %d read the database %d times; want once", i, got)
		}
		t.Logf("refresh %d over a %d-byte older snapshot in Redis: %d bytes read from Redis", i, len(old), n)
		if n >= 1000 {
			t.Fatalf("refresh %d, over an older snapshot in Redis, read %d bytes from Redis (the snapshot is %d); want under 1000", i, n, len(old))
		}
		// What the database answered is written to Redis, as before.
		waitFor(t, 5*time.Second, "the refresh's snapshot in Redis", func() bool {
			v, err := rdb.Get(ctx, key).Result()
			return err == nil && len(v) > len(old)
		})
		waitFor(t, 5*time.Second, "the write's count", func() bool { return reader.Stats().L2Writes == uint64(2*i+3) })
	}
}

// An older snapshot in Redis than the one held that its header alone
// cannot rule out (at or above the revision the process waits for, read
// lately: its leases decide) is read and judged as before, with the same
// outcome: served, L1 keeps the newer snapshot it holds, and the database
// is not read. (A guard of TestOlderRevisionRefreshReadsNoSnapshot's
// change, which passes before it too.)
func TestOlderRevisionThatMayServeIsJudgedAsBefore(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	key := ns + ":svc:{db_svc}"
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	writer := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour), discovery.WithoutHealthChecks())
	mustRegister(t, writer, inst("db_svc", "10.0.0.1", 1))
	// The reader hears of no change (its store tells none, the writer has
	// no Redis): the revision it waits for stays where it was.
	reader, err := discovery.New(discovery.WithStore(struct{ discovery.Store }{backend}), discovery.WithClock(clock),
		discovery.WithLeaseTTL(3*time.Second), discovery.WithoutHealthChecks(), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
		discovery.WithCacheFreshness(time.Second, 0, time.Minute), discovery.WithCacheJitter(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	// The subscription's first resync, before the lookup: this store reads
	// no revisions, so a resync after it reloaded the service and wrote it
	// to Redis again (1 run in 20).
	waitFor(t, 5*time.Second, "the subscription's resync", func() bool { return reader.Stats().Resyncs >= 1 })
	if _, err := reader.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the snapshot in Redis", func() bool { return reader.Stats().L2Writes == 1 })
	old, err := rdb.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, writer, inst("db_svc", "10.0.0.1", 2))
	clock.Advance(4 * time.Second) // a lease TTL since Redis's snapshot was read: the refresh reads the database
	if res, err := reader.Lookup(ctx, "db_svc"); err != nil || res.Layer != discovery.LayerL3 || len(res.Service.Instances) != 2 {
		t.Fatalf("Lookup = %v, %v; want 2 instances from the database", res, err)
	}
	waitFor(t, 5*time.Second, "the newer snapshot in Redis", func() bool { return reader.Stats().L2Writes == 2 })
	// Redis holds the older revision again, read just now as it claims.
	if err := rdb.Set(ctx, key, old[:22]+codec.LoadedAtField(clock.Now().UnixNano())+old[42:], 0).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second) // past the freshness window, within the lease TTL of the older snapshot's read
	st := reader.Stats()
	res, err := reader.Lookup(ctx, "db_svc")
	if err != nil || len(res.Service.Instances) != 2 {
		t.Fatalf("Lookup over an older snapshot in Redis = %v, %v; want the 2 instances held", res, err)
	}
	if after := reader.Stats(); after.StoreReads != st.StoreReads || after.L2Hits != st.L2Hits+1 {
		t.Fatalf("Lookup over an older snapshot in Redis: %d database reads, %d Redis hits; want none and one, as before",
			after.StoreReads-st.StoreReads, after.L2Hits-st.L2Hits)
	}
}
