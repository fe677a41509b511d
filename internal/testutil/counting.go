package testutil

import (
	"context"
	"net"
	"sync/atomic"
	"time"
)

// CountingDialer dials as go-redis does (a TCP dial bounded by a second),
// counting every byte read on the connections it makes into n: what a
// client read from Redis, replies and pushed messages alike.
func CountingDialer(n *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: n}, nil
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
