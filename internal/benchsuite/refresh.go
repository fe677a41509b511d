package benchsuite

import (
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
