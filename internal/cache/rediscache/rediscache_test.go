package rediscache

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/testutil"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		in    string
		want  core.Change
		force bool
		ok    bool
	}{
		{"5 db_svc", core.Change{Service: "db_svc", Revision: 5}, false, true},
		{"0 db_svc !", core.Change{Service: "db_svc"}, true, true},
		{"7 db_svc gone", core.Change{Service: "db_svc", Revision: 7, Gone: true}, false, true},
		{"x db_svc", core.Change{}, false, false},
		{"-1 db_svc", core.Change{}, false, false},
		{"5 a/b", core.Change{}, false, false},
		{"5", core.Change{}, false, false},
		{"", core.Change{}, false, false},
	}
	for _, tt := range tests {
		got, force, ok := ParseMessage(tt.in)
		if got != tt.want || force != tt.force || ok != tt.ok {
			t.Errorf("ParseMessage(%q) = %v %v %v; want %v %v %v", tt.in, got, force, ok, tt.want, tt.force, tt.ok)
		}
	}
}

// A change announcement of a later version may carry words after the
// service that this one does not know (a flag, a field): the change itself
// still counts. Refused, the whole message was dropped, uncounted, and the
// process served what it held until its entry's freshness ended, in every
// process of the older version of a fleet mid-upgrade. The messages of
// every version so far ("<revision> <service>[ !]") read as before.
func TestParseMessageIgnoresWordsOfLaterVersions(t *testing.T) {
	tests := []struct {
		in    string
		want  core.Change
		force bool
	}{
		{"5 db_svc x", core.Change{Service: "db_svc", Revision: 5}, false},
		{"5 db_svc ! x=1", core.Change{Service: "db_svc", Revision: 5}, true},
		{"5 db_svc x !", core.Change{Service: "db_svc", Revision: 5}, true},
		{"6 db_svc  ", core.Change{Service: "db_svc", Revision: 6}, false},
	}
	for _, tt := range tests {
		got, force, ok := ParseMessage(tt.in)
		if got != tt.want || force != tt.force || !ok {
			t.Errorf("ParseMessage(%q) = %v %v %v; want %v %v true", tt.in, got, force, ok, tt.want, tt.force)
		}
	}
}

// A change message that does not parse is counted (BadMessages), as a
// snapshot that does not decode is: dropped without a trace, a fleet whose
// processes could not read each other's announcements looked healthy.
func TestUnparsedChangeMessagesAreCounted(t *testing.T) {
	var heard atomic.Int64
	c := New(nil, Options{OnChange: func(_ core.Change, _ bool, p Pushed) { heard.Add(1); p.Decode() }})
	for _, msg := range []string{"garbage", "x db_svc", "5 a/b", "5 db_svc\nD1garbage"} {
		c.handle(msg)
	}
	if s := c.Stats(); s.BadMessages != 3 || heard.Load() != 1 || s.PushedDecodeErrors != 1 {
		t.Fatalf("BadMessages %d, changes heard %d, PushedDecodeErrors %d; want 3, 1 (the announcement whose snapshot did not decode), 1",
			s.BadMessages, heard.Load(), s.PushedDecodeErrors)
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add("5 db_svc")
	f.Add("0 db_svc !")
	f.Add("99999999999999999999 x")
	f.Fuzz(func(t *testing.T, s string) {
		ch, _, ok := ParseMessage(s)
		if ok && (ch.Revision < 0 || core.ValidateServiceName(ch.Service) != nil) {
			t.Fatalf("ParseMessage(%q) accepted %+v", s, ch)
		}
	})
}

// A Redis call that fails as the probe finishes (down cleared, the probe
// not yet gone) trips the breaker again, and a new probe closes it: one was
// refused while the old one's flag was set, and the breaker stayed open for
// good although Redis answered. Here the failure happens in OnResync, which
// runs in that window, as a concurrent caller's could.
func TestBreakerClosesAfterATripAsTheProbeFinishes(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	var c *Cache
	var tripped atomic.Bool
	c = New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: 10 * time.Millisecond,
		OnResync: func() {
			if tripped.CompareAndSwap(false, true) { // a flapping Redis: the first call after it came back fails
				_ = c.Failed(context.Background(), "get", errors.New("i/o timeout"))
			}
		}})
	defer c.Close()
	_ = c.Failed(context.Background(), "get", errors.New("connection refused"))
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if tripped.Load() && c.Up() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, _, _, err := c.Get(context.Background(), "db_svc")
	t.Fatalf("Redis answers PING, but the breaker is still open 2s later (tripped=%v, probing=%v): Get = %v",
		tripped.Load(), c.probing.Load(), err)
}

// On a Ring, SUBSCRIBE goes to the shard of the channel's name but PUBSUB
// NUMSUB, which names no key, to a random shard: Subscribers counted the
// subscribers of one shard at random, 0 half the time on two shards, and
// Drain then took the others to have nothing to wait for. Every shard is
// asked now, as on a Cluster.
func TestSubscribersOnARingCountsEveryShard(t *testing.T) {
	m1, m2 := miniredis.RunT(t), miniredis.RunT(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": m1.Addr(), "b": m2.Addr()}, MaxRetries: -1})
	defer ring.Close()
	subscribed := make(chan struct{}, 1)
	c := New(ring, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: time.Second,
		OnResync: func() { subscribed <- struct{}{} }})
	defer c.Close()
	c.Start()
	<-subscribed
	for i := range 32 { // a random shard each time: 2^-32 to pass by chance
		if n, ok := c.Subscribers(context.Background()); !ok || n != 1 {
			t.Fatalf("Subscribers() #%d = %d, %v; want 1, true", i+1, n, ok)
		}
	}
}

// A subscription whose connection went silent without being closed (a
// partition, a crashed host: its writes still succeed, nothing comes back)
// is dropped and made again on a new connection, with a resynchronisation:
// the pings sent on it were written without error, so it was kept, and every
// change message was lost for as long as the kernel kept the connection
// (many minutes), with no resynchronisation to make up for them.
func TestSilentSubscriptionIsReplaced(t *testing.T) {
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	ns := testutil.Prefix(t)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	pub := testutil.RedisClient(t, addr, db, ns)
	resyncs := make(chan struct{}, 10)
	changes := make(chan core.Change, 10)
	c := New(rdb, Options{Namespace: ns, TTL: time.Minute, Timeout: 250 * time.Millisecond, ProbeInterval: 100 * time.Millisecond,
		OnResync: func() { resyncs <- struct{}{} },
		OnChange: func(ch core.Change, _ bool, _ Pushed) { changes <- ch }})
	defer c.Close()
	c.Start()
	<-resyncs
	proxy.Stall()
	select {
	case <-resyncs:
	case <-time.After(10 * time.Second):
		t.Fatal("no resubscription 10 s after the subscription's connection went silent")
	}
	if err := pub.Publish(context.Background(), c.Channel(), "7 db_svc").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-changes:
		if ch.Revision != 7 {
			t.Fatalf("change %+v; want revision 7", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a change published after the resubscription did not arrive")
	}
}

// Hits counts Redis reads whose snapshot the caller served, and never goes
// back: it is discovery_cache_hits_total{layer="L2"} and Stats.L2Hits. A
// read was counted as a hit at once and taken back when the caller found
// the snapshot unusable (Unusable), so a Stats read in between saw one hit
// more than every read after it, which Prometheus takes for a reset.
func TestHitsNeverGoBackWhenAHitIsUnusable(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: time.Second})
	defer c.Close()
	at := time.Unix(1_800_000_000, 0)
	if _, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 3}, at, ""); err != nil {
		t.Fatal(err)
	}
	var last uint64
	check := func(step string, wantHits, wantMisses uint64) {
		t.Helper()
		s := c.Stats()
		if s.Hits < last {
			t.Fatalf("%s: Hits went back from %d to %d", step, last, s.Hits)
		}
		last = s.Hits
		if s.Hits+s.Misses != wantHits+wantMisses || s.Hits > wantHits {
			t.Fatalf("%s: Hits %d, Misses %d; want at most %d hits, %d reads in all", step, s.Hits, s.Misses, wantHits, wantHits+wantMisses)
		}
	}
	// A hit the caller cannot serve (too old): a miss.
	if svc, _, _, _, err := c.GetIfChanged(ctx, "db_svc", -1, -1); err != nil || svc == nil {
		t.Fatalf("GetIfChanged = %v, %v; want the snapshot", svc, err)
	}
	s := c.Stats()
	last = s.Hits
	c.Unusable()
	check("after Unusable", 0, 1)
	// A hit the caller serves: a hit.
	if svc, _, _, _, err := c.GetIfChanged(ctx, "db_svc", -1, -1); err != nil || svc == nil {
		t.Fatalf("GetIfChanged = %v, %v; want the snapshot", svc, err)
	}
	c.Hit()
	check("after Hit", 1, 1)
	// Get, which has no caller to decide, counts its hits itself.
	if svc, _, _, err := c.Get(ctx, "db_svc"); err != nil || svc == nil {
		t.Fatalf("Get = %v, %v; want the snapshot", svc, err)
	}
	check("after Get", 2, 1)
}

// On a Cluster the probe that brings Redis back asks every master. One
// master that stopped answering (the others fine) trips the breaker at the
// first call to a key of its; a probe that sent one PING, which names no key
// and so went to a node at random, closed the breaker again two times in
// three, and the next call to that master's keys waited out the timeout
// again, where the breaker is there so that no call waits after the first.
func TestProbeOnAClusterAsksEveryMaster(t *testing.T) {
	nodes := os.Getenv(testutil.EnvRedisCluster)
	if nodes == "" {
		t.Skipf("%s is not set", testutil.EnvRedisCluster)
	}
	ctx := context.Background()
	ns := testutil.Prefix(t)
	c0 := New(nil, Options{Namespace: ns}) // for its key
	defer c0.Close()
	admin := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(nodes, ",")})
	defer admin.Close()
	master, err := admin.MasterForKey(ctx, c0.Key("db_svc"))
	if err != nil {
		t.Fatal(err)
	}
	silent := master.Options().Addr
	proxy := testutil.NewProxy(t, silent)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(nodes, ","), ContextTimeoutEnabled: true,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == silent {
				addr = proxy.Addr() // db_svc's master, through the proxy
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	defer rdb.Close()
	c := New(rdb, Options{Namespace: ns, TTL: time.Minute, Timeout: 100 * time.Millisecond, ProbeInterval: 10 * time.Millisecond})
	defer c.Close()
	if _, _, _, err := c.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	if _, _, _, err := c.Get(ctx, "db_svc"); err == nil || c.Up() {
		t.Fatalf("Get through a silent master: %v, breaker up %v; want an error and the breaker open", err, c.Up())
	}
	// Every probe for a second (about 10, each waiting out the silent
	// master) must leave the breaker open.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if c.Up() {
			t.Fatalf("the breaker closed while %s, the master of db_svc's key, still does not answer", silent)
		}
	}
	proxy.Blackhole(false)
	for end := time.Now().Add(10 * time.Second); !c.Up(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the breaker still open 10 s after every master answers again")
		}
	}
}

// A snapshot write lands only while Redis holds the generation its writer
// read before its database read: Invalidate gives the service a new one
// (and deletes the snapshot in the same script), so a write of what was
// read before it is refused, in whichever process it was read. A
// generation that is missing (expired, lost) is a value of its own: a
// write that read one before is refused, not taken as unchanged. Run on
// one Redis (miniredis, or DISCOVERY_TEST_REDIS) and, when it is set, on
// DISCOVERY_TEST_REDIS_CLUSTER: every script and MGET touches the keys of
// one slot.
func TestSnapshotWritesFollowTheGeneration(t *testing.T) {
	eachRedis(t, func(t *testing.T, rdb redis.UniversalClient, c *Cache) {
		ctx := context.Background()
		at := time.Unix(1_800_000_000, 0)
		svc := &core.Service{Name: "db_svc", Revision: 3}
		held := func(step string, want bool) {
			t.Helper()
			n, err := rdb.Exists(ctx, c.Key("db_svc")).Result()
			if err != nil || (n == 1) != want {
				t.Fatalf("%s: snapshot key exists %d, %v; want %v", step, n, err, want)
			}
		}
		set := func(step string, gen Gen, wantErr error, wantWrote bool) {
			t.Helper()
			wrote, err := c.Set(ctx, svc, at, gen)
			if !errors.Is(err, wantErr) || wrote != wantWrote {
				t.Fatalf("%s: Set(gen %q) = %v, %v; want %v, %v", step, gen, wrote, err, wantWrote, wantErr)
			}
		}

		// Never invalidated: the generation is none, and a write that
		// read none lands.
		gen0, err := c.Generation(ctx, "db_svc")
		if err != nil || gen0 != "" {
			t.Fatalf("Generation before any Invalidate = %q, %v; want none", gen0, err)
		}
		set("never invalidated", gen0, nil, true)
		got, _, _, gen, err := c.GetIfChanged(ctx, "db_svc", -1, -1)
		if err != nil || got == nil || gen != "" {
			t.Fatalf("GetIfChanged = %v, gen %q, %v; want the snapshot and no generation", got, gen, err)
		}

		// Invalidate deletes the snapshot and moves the generation: a
		// write that read the one before is refused, and counted stale.
		before := c.Stats().StaleWrites
		if err := c.Invalidate(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		held("after Invalidate", false)
		set("read before the Invalidate", gen0, ErrInvalidated, false)
		held("after a write read before the Invalidate", false)
		if d := c.Stats().StaleWrites - before; d != 1 {
			t.Fatalf("StaleWrites went up by %d for a refused write; want 1", d)
		}
		gen1, err := c.Generation(ctx, "db_svc")
		if err != nil || gen1 == "" {
			t.Fatalf("Generation after Invalidate = %q, %v; want one", gen1, err)
		}
		if pttl, err := rdb.PTTL(ctx, c.GenKey("db_svc")).Result(); err != nil || pttl <= GenerationTTL-time.Minute {
			t.Fatalf("the generation's TTL = %v, %v; want about %v", pttl, err, GenerationTTL)
		}
		// Read with the (absent) snapshot in one command.
		if got, _, _, gen, err := c.GetIfChanged(ctx, "db_svc", -1, -1); err != nil || got != nil || gen != gen1 {
			t.Fatalf("GetIfChanged after Invalidate = %v, gen %q, %v; want a miss with gen %q", got, gen, err, gen1)
		}
		set("read after the Invalidate", gen1, nil, true)

		// Another Invalidate gives another generation.
		if err := c.Invalidate(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		gen2, err := c.Generation(ctx, "db_svc")
		if err != nil || gen2 == "" || gen2 == gen1 {
			t.Fatalf("Generation after a second Invalidate = %q, %v; want a new one (not %q)", gen2, err, gen1)
		}
		set("read between the two", gen1, ErrInvalidated, false)

		// The generation's key gone (expired) between a writer's read
		// and its write: refused, not taken for the generation it read.
		if err := rdb.Del(ctx, c.GenKey("db_svc")).Err(); err != nil {
			t.Fatal(err)
		}
		set("read before the generation expired", gen2, ErrInvalidated, false)
		held("after a write refused for an expired generation", false)
		set("read after it expired", "", nil, true)
	})
}

// A service's generation and its snapshot hash to one Cluster slot (the
// scripts touch both), and other services' keys differ.
func TestGenerationKeySharesTheSnapshotsSlot(t *testing.T) {
	c := New(nil, Options{Namespace: "ns:"})
	defer c.Close()
	tag := func(key string) string {
		if i := strings.IndexByte(key, '{'); i >= 0 {
			if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
				return key[i+1 : i+1+j]
			}
		}
		return key
	}
	for _, svc := range []string{"db_svc", "a.b-c", "x"} {
		k, g := c.Key(svc), c.GenKey(svc)
		if tag(k) != svc || tag(g) != svc || k == g {
			t.Fatalf("keys %q and %q: want distinct keys tagged {%s}", k, g, svc)
		}
	}
}

// Delete removes the snapshot its caller wrote, and not one written since
// in its place: a DEL removed a newer snapshot another process had written
// between the caller's write and its delete. Run on one Redis (miniredis,
// or DISCOVERY_TEST_REDIS) and, when it is set, on
// DISCOVERY_TEST_REDIS_CLUSTER (the script touches one key).
func TestDeleteRemovesOnlyTheSnapshotItNames(t *testing.T) {
	eachRedis(t, func(t *testing.T, rdb redis.UniversalClient, c *Cache) {
		ctx := context.Background()
		at := time.Unix(1_800_000_000, 0)
		mine := codec.Encode(&core.Service{Name: "db_svc", Revision: 3}, at)
		newer := codec.Encode(&core.Service{Name: "db_svc", Revision: 4}, at)
		held := func(step string, want []byte) {
			t.Helper()
			v, err := rdb.Get(ctx, c.Key("db_svc")).Result()
			if errors.Is(err, redis.Nil) && want == nil {
				return
			}
			if err != nil || v != string(want) {
				t.Fatalf("%s: Redis holds %.22q, %v; want %.22q", step, v, err, want)
			}
		}
		for _, enc := range [][]byte{mine, newer} {
			if wrote, err := c.SetEncoded(ctx, "db_svc", enc, ""); !wrote || err != nil {
				t.Fatalf("SetEncoded = %v, %v", wrote, err)
			}
		}
		if err := c.Delete(ctx, "db_svc", mine); err != nil {
			t.Fatal(err)
		}
		held("after a delete of the snapshot replaced since", newer)
		if err := c.Delete(ctx, "db_svc", newer); err != nil {
			t.Fatal(err)
		}
		held("after a delete of the snapshot held", nil)
	})
}

// A change message with its pushed snapshot, as a process of an earlier
// release (1bd4bc7, 2026-11-28) published it, is heard with its snapshot.
func TestHearsChangesOfEarlierReleases(t *testing.T) {
	b, err := os.ReadFile("testdata/change-1bd4bc7.bin")
	if err != nil {
		t.Fatal(err)
	}
	var (
		got    core.Change
		pushed *core.Service
	)
	c := New(nil, Options{OnChange: func(ch core.Change, _ bool, p Pushed) { got = ch; pushed, _, _ = p.Decode() }})
	c.handle(string(b))
	if got != (core.Change{Service: "svce", Revision: 2}) || pushed == nil || pushed.Revision != 2 || len(pushed.Instances) != 2 {
		t.Fatalf("heard %+v with %+v", got, pushed)
	}
	if s := c.Stats(); s.BadMessages != 0 || s.PushedDecodeErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// eachRedis runs fn as a subtest on each Redis of testutil.RedisKinds (one
// Redis, and a Cluster when one is set), with a Cache of a namespace of the
// test's own on it.
func eachRedis(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient, c *Cache)) {
	for _, tt := range testutil.RedisKinds() {
		t.Run(tt.Name, func(t *testing.T) {
			ns := testutil.Prefix(t)
			rdb := tt.Open(t, ns)
			c := New(rdb, Options{Namespace: ns, TTL: time.Minute, Timeout: 5 * time.Second, ProbeInterval: time.Second})
			defer c.Close()
			fn(t, rdb, c)
		})
	}
}

// A value at a snapshot's key that is no snapshot of any release (another
// program's value under the namespace, or garbage; its header is not a
// revision and a load time in digits) does not hold off the writes of the
// service's snapshots: the next write replaces it. The set script compared
// its bytes 3-42 with the snapshot's header as if they were one, and letters
// sort after digits: a value such as "hello, ..." claimed a revision above
// every one, each write was refused as stale, and every lookup of the
// service past its freshness window read the database for as long as the
// value lived (for good, without an expiry). A snapshot of a later release
// (another format version, its header in digits) still holds off older
// revisions.
func TestForeignValueDoesNotHoldOffSnapshotWrites(t *testing.T) {
	eachRedis(t, func(t *testing.T, rdb redis.UniversalClient, c *Cache) {
		ctx := context.Background()
		at := time.Unix(1_800_000_000, 0)
		svc := &core.Service{Name: "db_svc", Revision: 3}
		tests := []struct {
			name  string
			held  string
			wrote bool
		}{
			{"another program's value", "hello, this is not a snapshot of any service at all", true},
			{"garbage with a version tag", "D9" + strings.Repeat("z", 60), true},
			{"a later release's newer snapshot", "D2" + codec.Header(4, at.UnixNano())[2:] + "body", false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := rdb.Set(ctx, c.Key("db_svc"), tt.held, 0).Err(); err != nil {
					t.Fatal(err)
				}
				if got, _, _, _, err := c.GetIfChanged(ctx, "db_svc", -1, -1); got != nil || err != nil {
					t.Fatalf("GetIfChanged = %v, %v; want a miss", got, err)
				}
				wrote, err := c.Set(ctx, svc, at, "")
				if err != nil || wrote != tt.wrote {
					t.Fatalf("Set of revision 3 over %.20q = %v, %v; want %v", tt.held, wrote, err, tt.wrote)
				}
				got, _, _, _, err := c.GetIfChanged(ctx, "db_svc", -1, -1)
				if err != nil || (got != nil) != tt.wrote {
					t.Fatalf("GetIfChanged after the write = %v, %v; want the snapshot: %v", got, err, tt.wrote)
				}
			})
		}
	})
}

// A key of the service's that holds another type than a string (a hash,
// a list: another program's, under the namespace) is corrupt data: the
// next snapshot write deletes it, writes, and counts it (DecodeErrors).
// Every command on it answered WRONGTYPE: each snapshot write of the
// service failed (a Redis error counted for every load), nothing deleted
// the key, and the service never hit L2 again for as long as it lived
// (for good: such a key has no expiry).
func TestKeyOfAnotherTypeIsReplacedBySnapshotWrites(t *testing.T) {
	eachRedis(t, func(t *testing.T, rdb redis.UniversalClient, c *Cache) {
		ctx := context.Background()
		at := time.Unix(1_800_000_000, 0)
		svc := &core.Service{Name: "db_svc", Revision: 3}
		for _, key := range []string{c.Key("db_svc"), c.GenKey("db_svc")} {
			t.Run(strings.TrimPrefix(key, c.opt.Namespace), func(t *testing.T) {
				if err := rdb.Del(ctx, c.Key("db_svc"), c.GenKey("db_svc")).Err(); err != nil {
					t.Fatal(err)
				}
				if err := rdb.HSet(ctx, key, "f", "v").Err(); err != nil {
					t.Fatal(err)
				}
				got, _, _, gen, err := c.GetIfChanged(ctx, "db_svc", -1, -1)
				if got != nil || err != nil {
					t.Fatalf("GetIfChanged = %v, %v; want a miss", got, err)
				}
				before := c.Stats()
				if wrote, err := c.Set(ctx, svc, at, gen); !wrote || err != nil {
					t.Fatalf("Set over a hash at %s = %v, %v; want it written", key, wrote, err)
				}
				if d := c.Stats().DecodeErrors - before.DecodeErrors; d != 1 {
					t.Fatalf("DecodeErrors went up by %d; want 1 (the hash)", d)
				}
				if got, _, _, _, err := c.GetIfChanged(ctx, "db_svc", -1, -1); got == nil || err != nil {
					t.Fatalf("GetIfChanged after the write = %v, %v; want the snapshot", got, err)
				}
				if g, err := c.Generation(ctx, "db_svc"); g != "" || err != nil {
					t.Fatalf("Generation after the write = %q, %v; want none", g, err)
				}
			})
		}
	})
}

// DropOlder, a writer's answer to a snapshot too slow to write
// (ErrTooSlow), deletes an older snapshot of the service (a lower
// revision, or the same one read earlier) and keeps a newer one: what
// another process wrote since must stay.
func TestDropOlderKeepsANewerSnapshot(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: time.Second})
	defer c.Close()
	at := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name       string
		held, ours *core.Service
		heldAt     time.Time
		dropped    bool
	}{
		{"older revision", &core.Service{Name: "db_svc", Revision: 3}, &core.Service{Name: "db_svc", Revision: 4}, at, true},
		{"same revision read earlier", &core.Service{Name: "db_svc", Revision: 4}, &core.Service{Name: "db_svc", Revision: 4}, at.Add(-time.Second), true},
		{"same snapshot", &core.Service{Name: "db_svc", Revision: 4}, &core.Service{Name: "db_svc", Revision: 4}, at, false},
		{"newer revision", &core.Service{Name: "db_svc", Revision: 5}, &core.Service{Name: "db_svc", Revision: 4}, at, false},
	}
	for _, tt := range tests {
		mr.FlushAll()
		if _, err := c.Set(ctx, tt.held, tt.heldAt, ""); err != nil {
			t.Fatal(err)
		}
		if err := c.DropOlder(ctx, "db_svc", codec.Encode(tt.ours, at)); err != nil {
			t.Fatalf("%s: DropOlder: %v", tt.name, err)
		}
		if got := !mr.Exists(c.Key("db_svc")); got != tt.dropped {
			t.Errorf("%s: dropped = %v; want %v", tt.name, got, tt.dropped)
		}
	}
}

// A write that Redis answers with an error reply leaves the breaker
// closed; AwaitWrites then calls OnWritable once Redis takes a write and a
// publication again, and not before.
func TestAwaitWritesCallsOnWritableOnceRedisTakesWrites(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	var calls atomic.Int64
	rdb.AddHook(countingHook{&calls})
	writable := make(chan struct{}, 1)
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: 10 * time.Millisecond,
		OnWritable: func() { writable <- struct{}{} }})
	defer c.Close()
	mr.SetError("OOM command not allowed when used memory > 'maxmemory'.")
	if _, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 1}, time.Unix(1_800_000_000, 0), ""); err == nil || !c.Up() {
		t.Fatalf("Set on a refusing Redis = %v (up: %v); want its error reply, and the breaker closed", err, c.Up())
	}
	c.AwaitWrites("db_svc")
	c.AwaitWrites("db_svc") // one probe at a time
	// Ten of the probe's writes refused, and no OnWritable.
	base := calls.Load()
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < base+10 {
		if time.Now().After(deadline) {
			t.Fatalf("the probe made %d calls in 5 s", calls.Load()-base)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-writable:
		t.Fatal("OnWritable while Redis refuses writes")
	default:
	}
	mr.SetError("")
	select {
	case <-writable:
	case <-time.After(2 * time.Second):
		t.Fatal("OnWritable not called within 2 s of Redis taking writes")
	}
	if c.writeProbing.Load() {
		t.Fatal("the write probe still runs")
	}
}

// countingHook counts the commands a client sends.
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A write that Redis refuses while it takes the probe's (a snapshot too
// large for the memory left under maxmemory, whose own arguments count
// against it while the probe's few bytes fit) is refused again each time
// the probe passes: the caller (the Registry's reannounce) writes it again
// at once, reading the database for it first, and asks for the next probe.
// Probed every ProbeInterval, that was a database read and a refused write
// every 250 ms, with a warning and an info line each time, for as long as
// Redis stayed so full (hours). Now a probe that follows such a false
// recovery waits twice as long as the last, up to maxWriteProbeInterval,
// and only the first refusal is a warning.
func TestAwaitWritesBacksOffWhenTheWriteIsRefusedAgainAfterTheProbe(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	rdb.AddHook(refuseLargeScripts(1 << 10))
	obs, logs := observer.New(zap.InfoLevel)
	const interval = 10 * time.Millisecond
	big := &core.Service{Name: "big_svc", Revision: 1, Instances: []core.Instance{{Service: "big_svc", Host: "10.0.0.1", Port: 1,
		Metadata: map[string]string{"k": strings.Repeat("x", 4<<10)}}}}
	at := time.Unix(1_800_000_000, 0)
	const rounds = 6
	var (
		c    *Cache
		n    atomic.Int64
		done = make(chan struct{})
	)
	c = New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: interval, Log: zap.New(obs),
		OnWritable: func() { // as the Registry's reannounce
			if _, err := c.Set(ctx, big, at, ""); err != nil {
				if n.Add(1) == rounds {
					close(done)
					return
				}
				c.AwaitWrites("big_svc")
			}
		}})
	defer c.Close()
	start := time.Now()
	if _, err := c.Set(ctx, big, at, ""); err == nil || !c.Up() {
		t.Fatalf("Set of a large snapshot = %v (up: %v); want an error reply, and the breaker closed", err, c.Up())
	}
	c.AwaitWrites("big_svc")
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%d refused writes after the probe passed in 20 s; want %d", n.Load(), rounds)
	}
	took := time.Since(start)
	// Doubling from the first probe: 1+2+4+8+16+32 intervals at least.
	if least := 63 * interval; took < least {
		t.Errorf("%d probes that passed, each followed by a refused write, in %v; want them backed off (at least %v)", rounds, took, least)
	}
	if w := logs.FilterLevelExact(zap.WarnLevel).Len(); w != 1 {
		t.Errorf("%d warnings for one run of refused writes; want 1", w)
	}
	if i := logs.FilterLevelExact(zap.InfoLevel).Len(); i > 1 {
		t.Errorf("%d info lines saying Redis takes writes again, though it refused the write each time; want at most 1", i)
	}
}

// refuseLargeScripts answers a script call with an argument over limit
// bytes as a Redis out of memory does: the snapshot writes, not the probe's.
func refuseLargeScripts(limit int) refuseSlots {
	return refuseSlots{refused: func(arg string) bool { return len(arg) > limit }}
}

type oomReply string

func (e oomReply) Error() string { return string(e) }
func (oomReply) RedisError()     {}

// On a Cluster each master refuses writes on its own (one out of memory,
// one a replica just promoted): a probe that writes in the slot of the
// first service refused stands only for that master. A change of another
// service, refused by another master while the probe ran, waited on the
// first one's master: one that took writes again a second later, while the
// first stayed full for hours, had its change announced by no one for as
// long. Now the probe writes in the slot of every service refused, and
// OnWritable follows the first that Redis takes. Here the shard of a_svc
// refuses throughout (a hook, on miniredis behind a Cluster client), and
// b_svc's from the start only.
func TestAwaitWritesProbesTheSlotOfEveryRefusedService(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t) // a Cluster of one master, for the client
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr()}, MaxRetries: -1})
	defer rdb.Close()
	var bRefused atomic.Bool
	bRefused.Store(true)
	rdb.AddHook(refuseSlots{refused: func(key string) bool {
		return strings.Contains(key, "{a_svc}") || strings.Contains(key, "{b_svc}") && bRefused.Load()
	}})
	writable := make(chan struct{}, 1)
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: 10 * time.Millisecond,
		OnWritable: func() { writable <- struct{}{} }})
	defer c.Close()
	at := time.Unix(1_800_000_000, 0)
	for _, name := range []string{"a_svc", "b_svc"} {
		if _, err := c.Set(ctx, &core.Service{Name: name, Revision: 1}, at, ""); err == nil {
			t.Fatalf("Set of %s on a refusing shard = nil; want its error reply", name)
		}
		c.AwaitWrites(name)
	}
	bRefused.Store(false) // b_svc's master takes writes again; a_svc's does not
	select {
	case <-writable:
	case <-time.After(5 * time.Second):
		t.Fatal("OnWritable not called within 5 s of b_svc's master taking writes again, while a_svc's still refuses them")
	}
	if _, err := c.Set(ctx, &core.Service{Name: "b_svc", Revision: 1}, at, ""); err != nil {
		t.Fatalf("Set of b_svc after OnWritable = %v", err)
	}
}

// refuseSlots answers a script call with an argument refused (a key of a
// refused slot, say) as a master out of memory does.
type refuseSlots struct{ refused func(arg string) bool }

func (h refuseSlots) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h refuseSlots) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			for _, a := range cmd.Args() {
				if s, ok := a.(string); ok && h.refused(s) {
					err := oomReply("OOM command not allowed when used memory > 'maxmemory'.")
					cmd.SetErr(err)
					return err
				}
			}
		}
		return next(ctx, cmd)
	}
}

func (h refuseSlots) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// On a Ring, as on a Cluster, a PING names no key and goes to a shard at
// random: with one shard silent, the confirming ping of a read of one of
// its keys that timed out (tooSlow) reached the other shard half the time,
// the read was taken for a snapshot too slow for the link (ErrTooSlow),
// and the breaker did not trip; the breaker's probe closed it again as
// often. ping now asks every shard the Ring holds up, as it asks every
// Cluster master.
func TestPingOnARingAsksEveryShard(t *testing.T) {
	ctx := context.Background()
	quiet, fine := miniredis.RunT(t), miniredis.RunT(t)
	proxy := testutil.NewProxy(t, quiet.Addr())
	rdb := redis.NewRing(&redis.RingOptions{
		Addrs:              map[string]string{"quiet": proxy.Addr(), "fine": fine.Addr()},
		HeartbeatFrequency: time.Hour, // the Ring keeps the silent shard: its keys still go there
		MaxRetries:         -1, ContextTimeoutEnabled: true,
	})
	defer rdb.Close()
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: 50 * time.Millisecond, ProbeInterval: time.Hour})
	defer c.Close()
	if err := c.ping(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	for i := range 20 {
		pctx, cancel := context.WithTimeout(ctx, c.opt.Timeout) // as tooSlow and the probe bound it
		err := c.ping(pctx)
		cancel()
		if err == nil {
			t.Fatalf("ping %d answered while one of the Ring's two shards is silent", i+1)
		}
	}
}

// A refusal long after a write probe passed is a new one, warned of and
// probed every ProbeInterval, even when no snapshot write landed in
// between (the one the probe stood for was stale by then): only a refusal
// right after a pass backs off.
func TestAwaitWritesAfterAQuietSpellWarnsAgain(t *testing.T) {
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	var refuse atomic.Bool
	rdb.AddHook(refuseSlots{refused: func(string) bool { return refuse.Load() }})
	obs, logs := observer.New(zap.InfoLevel)
	var now atomic.Int64
	now.Store(time.Unix(1_800_000_000, 0).UnixNano())
	writable := make(chan struct{}, 1)
	c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: 10 * time.Millisecond,
		Log: zap.New(obs), Now: func() time.Time { return time.Unix(0, now.Load()) },
		OnWritable: func() { writable <- struct{}{} }})
	defer c.Close()
	at := time.Unix(1_800_000_000, 0)
	if _, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 2}, at, ""); err != nil {
		t.Fatal(err)
	}
	refuse.Store(true)
	if _, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 3}, at, ""); err == nil {
		t.Fatal("Set on a refusing Redis = nil")
	}
	c.AwaitWrites("db_svc")
	refuse.Store(false)
	select {
	case <-writable:
	case <-time.After(5 * time.Second):
		t.Fatal("OnWritable not called within 5 s of Redis taking writes")
	}
	// The change written again turns out stale (another process wrote a
	// newer snapshot): no write lands.
	if ok, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 1}, at, ""); ok || err != nil {
		t.Fatalf("Set of an older revision = %v, %v; want it refused as stale", ok, err)
	}
	now.Add(int64(time.Hour))
	refuse.Store(true)
	if _, err := c.Set(ctx, &core.Service{Name: "db_svc", Revision: 4}, at, ""); err == nil {
		t.Fatal("Set on a refusing Redis = nil")
	}
	c.AwaitWrites("db_svc")
	if w := logs.FilterLevelExact(zap.WarnLevel).Len(); w != 2 {
		t.Errorf("%d warnings for two refusals an hour apart; want 2", w)
	}
}
