package discovery

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
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

// A configuration callback is never called once Deregister has returned.
// A delivery that the loop had taken up as Deregister ended the
// registration called the callback after Deregister returned, with its
// context already ended: a caller that deregisters and then frees what
// its callback uses had it called into what it freed. Held here by the
// Registry's goroutine lock, which the call's goroutine takes to start;
// the same window is open whenever the scheduler runs that goroutine late.
func TestConfigCallbackNotCalledAfterDeregister(t *testing.T) {
	ctx := context.Background()
	// A store that announces no change: the memory store's announcement of
	// the deregistration starts a goroutine, which the lock held below
	// would hold.
	r, _ := fakeRegistry(t, WithStore(struct{ core.Store }{memory.New()}))
	var calls atomic.Int64
	g, err := r.Register(ctx, Instance{Service: "router_svc", Host: "10.0.0.1", Port: 1, Method: MethodRouter},
		WithConfigFunc(func(context.Context, json.RawMessage) error { calls.Add(1); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if h := r.hubIfAny("router_svc"); h != nil {
			h.mu.Lock()
			_, joined := h.listeners[g]
			h.mu.Unlock()
			if joined {
				break // the loop waits for deliveries
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the configuration loop did not join the service's hub")
		}
	}
	r.goMu.Lock() // the call's goroutine cannot start
	locked := true
	defer func() {
		if locked {
			r.goMu.Unlock()
		}
	}()
	g.offerConfig(1, json.RawMessage(`{"n":1}`), false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.cfg.mu.Lock()
		taken := g.cfg.call != nil
		g.cfg.mu.Unlock()
		if taken {
			break // the loop is past its last look at the registration's end
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivery was not taken up")
		}
		time.Sleep(time.Millisecond)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	r.goMu.Unlock()
	locked = false
	// The loop hands its hub back as it returns, after the call it took up
	// is started (counted in r.cbs) or refused; then that call ends.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		r.cbs.mu.Lock()
		n := len(r.cbs.running)
		r.cbs.mu.Unlock()
		if r.hooked.Load() == 0 && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the configuration loop or its call did not end")
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("callback called %d time(s) after Deregister returned; want 0", n)
	}
}
