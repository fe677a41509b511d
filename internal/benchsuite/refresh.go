package benchsuite

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// RefreshL2 times the refresh of a service of n instances that the
// process holds, once its freshness window has run out, while Redis holds
// that same snapshot (nothing changed): the lookup waits for the refresh,
// which Redis answers. It reports the bytes read from Redis a refresh
// (bytes-read/op, every byte read on the client's connections) beside the
// p50 and p99.
func RefreshL2(n int) func(*testing.B) {
	return func(b *testing.B) {
		namespace := ns(b)
		addr, db, _ := testutil.RedisAddr(b)
		var read atomic.Int64
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db, MaxRetries: -1,
			ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second,
			Dialer: testutil.CountingDialer(&read)})
		b.Cleanup(func() {
			testutil.DeleteKeys(rdb, namespace)
			_ = rdb.Close()
		})
		clock, o := missEveryTime()
		r := Registry(b, n, append(o, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(namespace))...)
		settle(b, r, clock, discovery.LayerL2)
		missOnce(b, r, clock, discovery.LayerL2) // the script loaded, if any
		d := make(durations, b.N)
		before := read.Load()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			d[i] = missOnce(b, r, clock, discovery.LayerL2)
		}
		b.StopTimer()
		b.ReportMetric(float64(read.Load()-before)/float64(b.N), "bytes-read/op")
		d.report(b)
	}
}

// RefreshL2Older times the refresh of a service of n instances that the
// process holds, once its freshness window has run out, while Redis holds
// an older snapshot (a revision below the one held and waited for: this
// process's write of the newer one failed, or has not landed): the lookup
// waits for the refresh, which the database answers. It reports the bytes
// read from Redis a refresh (bytes-read/op) beside the p50 and p99. Between
// refreshes, untimed, the refresh's write of what the database answered
// lands, and Redis is given the older snapshot again (by another client,
// whose bytes are not counted).
func RefreshL2Older(n int) func(*testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		namespace := ns(b)
		addr, db, _ := testutil.RedisAddr(b)
		var read atomic.Int64
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db, MaxRetries: -1,
			ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second,
			Dialer: testutil.CountingDialer(&read)})
		admin := redis.NewClient(&redis.Options{Addr: addr, DB: db})
		b.Cleanup(func() {
			testutil.DeleteKeys(rdb, namespace)
			_ = rdb.Close()
			_ = admin.Close()
		})
		key := namespace + ":svc:{" + Service + "}"
		clock, o := missEveryTime()
		r := Registry(b, n, append(o, discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithNamespace(namespace))...)
		settle(b, r, clock, discovery.LayerL2)
		old, err := admin.Get(ctx, key).Result()
		if err != nil {
			b.Fatal(err)
		}
		// One more instance: L1 and Redis hold the newer revision (written
		// through), and it is the one waited for.
		if _, err := r.Register(ctx, discovery.Instance{Service: Service, Host: "10.1.0.1", Port: 8080}); err != nil {
			b.Fatal(err)
		}
		// landed waits for the write of a refresh begun at w writes (and
		// for the writes to stop for a millisecond: a load may write
		// twice), then gives Redis the older snapshot again.
		landed := func(w uint64) {
			b.Helper()
			for deadline := time.Now().Add(5 * time.Second); r.Stats().L2Writes == w; time.Sleep(50 * time.Microsecond) {
				if time.Now().After(deadline) {
					b.Fatal("the refresh's snapshot was not written to Redis in 5 s")
				}
			}
			for w = r.Stats().L2Writes; ; w = r.Stats().L2Writes {
				time.Sleep(time.Millisecond)
				if r.Stats().L2Writes == w {
					break
				}
			}
			if err := admin.Set(ctx, key, old, 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
		if err := admin.Set(ctx, key, old, 0).Err(); err != nil { // the Register's write-through has landed
			b.Fatal(err)
		}
		w := r.Stats().L2Writes
		missOnce(b, r, clock, discovery.LayerL3) // the script loaded, if any
		landed(w)
		d := make(durations, b.N)
		var bytes int64
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			w := r.Stats().L2Writes
			before := read.Load()
			d[i] = missOnce(b, r, clock, discovery.LayerL3)
			bytes += read.Load() - before
			b.StopTimer()
			landed(w)
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(float64(bytes)/float64(b.N), "bytes-read/op")
		d.report(b)
	}
}
