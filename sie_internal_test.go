package discovery

import (
	"context"
	"errors"
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
	r, err := New(WithStore(store), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	const name = "db_svc"
	if _, err := store.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
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
