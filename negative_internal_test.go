package discovery

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// A lookup that read "not found" just before another process registered
// the service does not leave that answer in L1 once the registration has
// been announced. The load dropped the service's state before it installed
// its negative entry: an announcement in between found neither an entry to
// drop nor a state to raise, and the negative entry then went in fresh, so
// every lookup said "not found" for the negative TTL (1 s) though the
// service was registered.
func TestNegativeEntryDoesNotOutliveARegistrationAnnouncedDuringItsLoad(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem))
	const name = "db_svc"
	// Hold the index shard of the name: the load stops at its put.
	s := r.l1.index.shard(r.l1.index.nameHash(name))
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()
	first := make(chan error, 1)
	go func() {
		_, err := r.Get(ctx, name)
		first <- err
	}()
	// The store has answered "not found" and the load waits at its put.
	for !blockedIn("discovery.(*Registry).load", "discovery.(*index).update") {
		time.Sleep(100 * time.Microsecond)
	}
	// Another process registers it; the change is announced to r.
	if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	s.mu.Unlock()
	locked = false
	if err := <-first; err != nil && !errors.Is(err, ErrNotFound) { // it began before the registration: either answer
		t.Fatalf("the lookup that began before the registration: %v", err)
	}
	svc, err := r.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get after the registration was announced: %v", err)
	}
	if len(svc.Instances) != 1 {
		t.Fatalf("Get after the registration: %d instances; want 1", len(svc.Instances))
	}
}

// blockedIn reports whether some goroutine's stack holds every one of the
// functions (a goroutine waiting where a test holds a lock).
func blockedIn(funcs ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, f := range funcs {
			all = all && strings.Contains(g, f)
		}
		if all {
			return true
		}
	}
	return false
}
