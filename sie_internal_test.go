package discovery

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
)

// slowDownStore fails every Load, while down is set, after the clock has
// moved by took: a database that is black-holed, whose calls end at the
// load timeout.
type slowDownStore struct {
	*downStore
	clock *fakeclock.Clock
	took  time.Duration
}

func (s *slowDownStore) Load(ctx context.Context, name string) (*core.Service, error) {
	if s.down.Load() {
		s.clock.Advance(s.took)
	}
	return s.downStore.Load(ctx, name)
}

// A lookup whose load failed after the stale-if-error window ended does not
// answer with the entry: the window is judged when the load has failed, not
// when the lookup began. Judged at the lookup's start, a lookup that began
// just inside the window and waited a load timeout (the database
// black-holed) answered with the entry past it, up to two load timeouts
// late.
func TestStaleIfErrorEndsWhileTheLoadWaits(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	store := &slowDownStore{downStore: &downStore{Store: memory.New()}, clock: clock, took: DefaultLoadTimeout}
	const name = "db_svc"
	r, _ := cachedOn(t, store, clock, name)
	e := r.l1.get(name)
	store.down.Store(true)
	// Just inside the window; the load takes a load timeout, and fails.
	clock.Advance(time.Duration(e.errorUntil-clock.Now().UnixNano()) - time.Millisecond)
	res, err := r.Lookup(ctx, name)
	if now := clock.Now().UnixNano(); err == nil && now >= e.errorUntil {
		t.Fatalf("Lookup answered (stale %v) %v after the stale-if-error window ended; want ErrUnavailable",
			res.Stale, time.Duration(now-e.errorUntil))
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lookup after the window: %v; want ErrUnavailable", err)
	}
}

// countingDownStore is a downStore that counts its loads.
type countingDownStore struct {
	downStore
	loads atomic.Int64
}

func (s *countingDownStore) Load(ctx context.Context, name string) (*core.Service, error) {
	s.loads.Add(1)
	return s.downStore.Load(ctx, name)
}

// Stale lookups in an outage start no load of their service within
// retryAfterFailure of its last failed one: each started another as soon
// as the last had failed, and a database refusing at once got a load for
// every few lookups of a hot service (200 for 2,000) for as long as it
// refused. Once retryAfterFailure has passed, one lookup tries again, and
// after the database is back the service is fresh again.
func TestStaleLookupsInAnOutageRetryOnceASecond(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	store := &countingDownStore{downStore: downStore{Store: memory.New()}}
	const name = "db_svc"
	r, _ := cachedOn(t, store, clock, name)
	store.down.Store(true)
	clock.Advance(2 * DefaultFresh) // past freshness, within stale-if-error
	lookUp := func(n int) {
		t.Helper()
		for range n {
			if _, err := r.Get(ctx, name); err != nil {
				t.Fatalf("Get in the outage = %v; want the stale snapshot", err)
			}
			waitRefreshed(t, r, name) // the refresh it started, if any, has ended
		}
	}
	before := store.loads.Load()
	lookUp(2000)
	if n := store.loads.Load() - before; n > 2 {
		t.Fatalf("2000 stale lookups within a second of the outage loaded the service %d times; want 1 or 2", n)
	}
	clock.Advance(retryAfterFailure)
	before = store.loads.Load()
	lookUp(100)
	if n := store.loads.Load() - before; n != 1 {
		t.Fatalf("100 stale lookups a second after the last failed load loaded the service %d times; want 1", n)
	}
	store.down.Store(false)
	clock.Advance(retryAfterFailure)
	lookUp(1)
	if res, err := r.Lookup(ctx, name); err != nil || res.Stale {
		t.Fatalf("Lookup once the database is back = %+v, %v; want a fresh answer", res, err)
	}
}

// waitRefreshed waits until no background refresh of name runs.
func waitRefreshed(t *testing.T, r *Registry, name string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Microsecond) {
		if e := r.l1.get(name); e == nil || !e.refreshing.Load() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a background refresh still runs after 10 s")
		}
	}
}

// cachedOn returns a Registry on store and clock (opts added) whose L1
// holds name, registered in store with one instance, 10.0.0.1:5432, and a
// lease of an hour; it returns the instance's ID too.
func cachedOn(t *testing.T, store core.Store, clock Clock, name string, opts ...Option) (*Registry, string) {
	t.Helper()
	ctx := context.Background()
	r, err := New(append([]Option{WithStore(store), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	const id = "10.0.0.1:5432"
	if _, err := store.Register(ctx, &core.Instance{Service: name, ID: id, Host: "10.0.0.1", Port: 5432, Weight: 1,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
	return r, id
}
