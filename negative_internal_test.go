package discovery

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
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

// downStore fails every Load while down is set, as a database that is out.
type downStore struct {
	*memory.Store
	down atomic.Bool
}

func (s *downStore) Load(ctx context.Context, name string) (*core.Service, error) {
	if s.down.Load() {
		return nil, &core.BackendError{Backend: "test", Op: "load", Err: errors.New("down")}
	}
	return s.Store.Load(ctx, name)
}

// Lookups of names this process does not hold, made while the database is
// out, leave no state behind: each failed load kept its service's state
// (for the lookup's retry rule), and nothing dropped it, so names looked up
// in an outage (made-up callers of package auth, say, chosen by whoever
// sends the requests) grew the map for good. A service L1 holds keeps its
// state through the outage; the lookups that join a failed load still load
// again once the database is back.
func TestLookupsInAnOutageLeaveNoState(t *testing.T) {
	ctx := context.Background()
	store := &downStore{Store: memory.New()}
	r, clock := fakeRegistry(t, WithStore(store))
	if _, err := store.Register(ctx, &core.Instance{Service: "held", ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "held"); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	for i := range 100 {
		if _, err := r.Get(ctx, fmt.Sprintf("made_up_%d", i)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get of a made-up name in an outage: %v; want ErrUnavailable", err)
		}
	}
	clock.Advance(time.Minute) // past the held entry's freshness: its refresh fails too
	failed := r.Stats().StoreErrors
	if _, err := r.Get(ctx, "held"); err != nil {
		t.Fatalf("Get of a held service in an outage: %v; want it served stale", err)
	}
	for deadline := time.Now().Add(5 * time.Second); r.Stats().StoreErrors == failed; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the held service's refresh did not fail within 5s (%d store errors)", r.Stats().StoreErrors)
		}
	}
	var names []string
	r.states.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	if len(names) != 1 || names[0] != "held" {
		t.Fatalf("states after the outage's lookups: %v; want only the held service's", names)
	}
	store.down.Store(false)
	if _, err := r.Get(ctx, "made_up_0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get once the database is back: %v; want ErrNotFound", err)
	}
}

// A failed load of a service this process does not hold keeps the
// revision the process has written or heard announced: a lookup once the
// database is back refuses an older snapshot Redis still holds. Dropping
// the service's state with the failure forgot that revision, and the
// process served the snapshot from before its own write (read-your-writes
// broken) for a freshness window, and from Redis for up to a lease TTL.
func TestFailedLoadKeepsTheRevisionWritten(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	store := &downStore{Store: memory.New()}
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	open := func(s core.Store) *Registry {
		r, err := New(WithStore(s), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	a, b := open(store), open(store)
	const name = "db_svc"
	if _, err := b.Register(ctx, Instance{Service: name, Host: "10.0.0.1", Port: 1}); err != nil {
		t.Fatal(err) // Redis holds the snapshot with one instance
	}
	// a's own write commits, but its write-through cannot read the
	// service back (nor can b's refresh): Redis keeps the older snapshot.
	store.down.Store(true)
	if _, err := a.Register(ctx, Instance{Service: name, Host: "10.0.0.2", Port: 2}); err != nil {
		t.Fatal(err)
	}
	if svc, err := a.Get(ctx, name); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get while the database cannot be read: %v, %v; want ErrUnavailable, not the snapshot from before a's write", svc, err)
	}
	store.down.Store(false)
	svc, err := a.Get(ctx, name)
	if err != nil || len(svc.Instances) != 2 {
		t.Fatalf("Get once the database is back: %v, %v; want both instances (a's own registration included)", svc, err)
	}
}
