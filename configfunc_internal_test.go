package discovery

import (
	"context"
	"testing"
	"time"
)

// A registration's configuration loop that begins after the registration
// ended leaves no hub behind. Deregister right after a Register with
// WithConfigFunc ends the registration before the loop's goroutine has run
// (200 of 200 such rounds did): the loop made the service's hub, saw the
// registration gone and returned without handing it back, so a goroutine
// followed the deregistered service until Close, reading it from the
// database every freshness window (10 reads a minute on a fake clock), and
// the watch hooks stayed on for every lookup.
func TestConfigLoopOfAnEndedRegistrationLeavesNoHub(t *testing.T) {
	ctx := context.Background()
	r, _ := fakeRegistry(t)
	// Registered without a callback, so that no loop of its own races the
	// one run below, as the late goroutine runs it.
	g, err := r.Register(ctx, Instance{Service: "router_svc", Host: "10.0.0.1", Port: 1, Method: MethodRouter})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	g.configLoop()
	if n := r.hooked.Load(); n != 0 {
		t.Fatalf("%d hub(s) running after the configuration loop of a deregistered registration returned; want 0", n)
	}
	if _, ok := r.hubs.Load("router_svc"); ok {
		t.Fatal("the deregistered service still has a hub")
	}
}

// The wait before each retry of a configuration notification doubles from
// the backoff, at most MaxDuration, and never wraps negative: a backoff the
// option takes (up to MaxDuration) shifted by the 9 doublings of 10 attempts
// overflowed int64 from about 208 days on, and the last attempt went out at
// once.
func TestNotifyBackoffNeverWraps(t *testing.T) {
	tests := []struct {
		backoff time.Duration
		attempt int
		want    time.Duration
	}{
		{200 * time.Millisecond, 1, 200 * time.Millisecond},
		{200 * time.Millisecond, 3, 800 * time.Millisecond},
		{0, 9, 0},
		{MaxDuration, 1, MaxDuration},
		{MaxDuration, 10, MaxDuration},
		{MaxDuration / 256, 10, MaxDuration},
		{MaxDuration / 1024, 10, MaxDuration / 1024 * 512},
	}
	for _, tt := range tests {
		if got := notifyWait(tt.backoff, tt.attempt); got != tt.want {
			t.Errorf("notifyWait(%v, %d) = %v; want %v", tt.backoff, tt.attempt, got, tt.want)
		}
	}
}
