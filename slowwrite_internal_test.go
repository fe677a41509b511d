package discovery

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// A snapshot too large to cross a slow link within the Redis timeout is no
// sign that Redis stopped answering (it answers a ping at once on the same
// link), and is not taken for one. Taken for one, its read or write tripped
// the breaker: every call skipped Redis, the probe brought it back within
// 250 ms, the resync wrote the snapshot through again, and it tripped
// again (5 trips, a store read and a resync each, within 3 s of one
// write), for as long as the service stayed that large. Now the read
// misses, the write is not made again, and the older snapshot it was to
// replace leaves Redis (a command of a few bytes).
func TestSlowLargeSnapshotDoesNotTripTheBreaker(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	direct := testutil.RedisClient(t, addr, db, ns)
	mem := memory.New()
	open := func() *Registry {
		r, err := New(WithStore(mem), WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)), WithNamespace(ns),
			WithoutHealthChecks(), WithCloseDrain(0), WithRedisTimeout(250*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	a := open()
	md := map[string]string{}
	for i := range 8 {
		md[fmt.Sprintf("k%d", i)] = strings.Repeat("x", 1000)
	}
	for i := range 60 { // about 500 KB encoded
		if _, err := a.Register(ctx, Instance{Service: "big_svc", Host: "10.0.0.1", Port: 1000 + i, Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := direct.StrLen(ctx, l2Key(ns, "big_svc")).Result(); err != nil || n < 400<<10 {
		t.Fatalf("the snapshot in Redis: %d bytes, %v; the test needs it written through, and large", n, err)
	}
	proxy.Latency(20 * time.Millisecond) // each 32 KiB: the snapshot takes about 300 ms more; a ping 40 ms

	b := open()
	if svc, err := b.Get(ctx, "big_svc"); err != nil || len(svc.Instances) != 60 {
		t.Fatalf("b's Get on the slow link = %v; want 60 instances", err)
	}
	if st := b.l2.Stats(); st.Trips != 0 || st.SlowReads == 0 || !b.l2.Up() {
		t.Fatalf("b's read of the large snapshot: %d trips, %d slow reads (up: %v); want it slow, and no trip", st.Trips, st.SlowReads, b.l2.Up())
	}

	trips := a.l2.Stats().Trips
	if _, err := a.Register(ctx, Instance{Service: "big_svc", Host: "10.0.0.2", Port: 1, Metadata: md}); err != nil {
		t.Fatal(err)
	}
	if st := a.l2.Stats(); st.Trips != trips || st.SlowWrites == 0 || !a.l2.Up() {
		t.Fatalf("a's write-through of the large snapshot: %d trips, %d slow writes (up: %v); want it slow, and no trip", st.Trips-trips, st.SlowWrites, a.l2.Up())
	}
	want := a.l1.get("big_svc").rev
	if v, err := direct.Get(ctx, l2Key(ns, "big_svc")).Result(); err == nil {
		if rev, _, herr := codec.ParseHeader(v); herr != nil || rev < want {
			t.Fatalf("Redis still holds the snapshot of revision %d (%v); want it dropped, or revision %d", rev, herr, want)
		}
	}
}

func l2Key(ns, service string) string { return ns + ":svc:{" + service + "}" }
