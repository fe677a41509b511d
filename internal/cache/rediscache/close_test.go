package rediscache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// A failure met while Close runs (Close's own cancellation ends the calls
// under way, and the Registry's lookups go on meanwhile) starts no probe
// behind Close's back: it found the cache open, then added to the
// WaitGroup that Close was already waiting on at zero, which WaitGroup
// forbids (the race detector reports it), and the probe's goroutine
// started after Close. Many rounds, as the window is narrow; run with -race.
func TestFailureDuringCloseStartsNoProbeAfterIt(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	for range 2000 {
		c := New(rdb, Options{Namespace: "t:", TTL: time.Minute, Timeout: time.Second, ProbeInterval: time.Hour})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = c.Failed(context.Background(), "get", errors.New("connection refused"))
		}()
		c.Close()
		<-done
	}
}
