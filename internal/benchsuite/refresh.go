package benchsuite

import (
	"context"
	"net"
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
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				d := net.Dialer{Timeout: time.Second}
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return countingConn{Conn: c, n: &read}, nil
			}})
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

// countingConn counts the bytes read on a connection into n.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}
