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

// The health monitor marks the state of a service it takes on as checked
// (monitored) while an eviction that found it unchecked is on its way to
// drop it: the state is kept. Dropped, it took the monitor's targets with
// it: their verdicts went to a state no longer the service's, and Get and
// Pick, which read the next one, never saw them (until the monitor built
// its targets again, when what it checked changed).
func TestAStateTheMonitorTakesOnDuringItsDropIsKept(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t, WithHealthCheck(time.Second, time.Second/2), WithHealthThresholds(1, 1), WithLeaseTTL(time.Hour))
	r.hm.settle() // the monitor's first scan is over: the next is a second away
	const svc = "router_svc"
	register := func(host string, check error) string { return registerChecked(t, r, svc, host, check) }
	bad := register("10.0.0.1", errors.New("refused"))
	register("10.0.0.2", nil)
	if _, err := r.Get(ctx, svc); err != nil { // looked up: it has a state
		t.Fatal(err)
	}
	if err := r.Invalidate(ctx, svc); err != nil { // in no cache; its state stays
		t.Fatal(err)
	}
	st := r.stateIfAny(svc)
	if st == nil || st.monitored.Load() {
		t.Fatalf("state before the monitor's scan: %v (monitored %v); want one, not monitored", st != nil, st != nil && st.monitored.Load())
	}
	// An eviction finds the service unused (in no cache, not monitored)
	// and stops just before it drops the state (held up on the lock that
	// the drop takes, as a Stats call can hold it up).
	r.foldMu.RLock()
	evicted := make(chan struct{})
	go func() {
		defer close(evicted)
		r.nameEvicted(svc)
	}()
	for deadline := time.Now().Add(10 * time.Second); !blockedIn("discovery.(*Registry).dropStateAs", "sync.(*RWMutex).Lock"); {
		if time.Now().After(deadline) {
			r.foldMu.RUnlock()
			t.Fatal("the eviction did not reach the drop of the state in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	clock.Advance(scanEvery)
	r.hm.settle() // the monitor's scan takes the service on: its targets hold the state
	r.foldMu.RUnlock()
	<-evicted

	checkedOut(t, r, clock, svc, bad)
}

// unknownStore is a store whose database, while unknown is set, does not
// know any service (restored from a backup older than them, or wiped):
// loads find nothing, while renewals still find their rows.
type unknownStore struct {
	core.Store
	unknown atomic.Bool
}

func (s *unknownStore) Load(ctx context.Context, name string) (*core.Service, error) {
	if s.unknown.Load() {
		return nil, &core.NotFoundError{Service: name}
	}
	return s.Store.Load(ctx, name)
}

// A service the database does not know keeps its state while the health
// monitor checks it (this process's own registrations). Dropped, as the
// state of a made-up name is, it took the monitor's targets with it until
// their registrations changed: once the service was back, the verdicts
// went to a state Get and Pick no longer read, and an instance failing its
// checks stayed pickable.
func TestAServiceNotFoundKeepsTheStateTheMonitorChecks(t *testing.T) {
	ctx := context.Background()
	s := &unknownStore{Store: memory.New()}
	r, clock := fakeRegistry(t, WithStore(s), WithHealthCheck(time.Second, time.Second/2), WithHealthThresholds(1, 1), WithLeaseTTL(time.Hour))
	r.hm.settle()
	const svc = "router_svc"
	register := func(host string, check error) string { return registerChecked(t, r, svc, host, check) }
	bad := register("10.0.0.1", errors.New("refused"))
	register("10.0.0.2", nil)
	clock.Advance(scanEvery)
	r.hm.settle() // the monitor takes the service on
	st := r.stateIfAny(svc)
	if st == nil || !st.monitored.Load() {
		t.Fatal("the monitor did not take the service on")
	}
	s.unknown.Store(true)
	if err := r.Invalidate(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, svc); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get while the database knows no service: %v; want ErrNotFound", err)
	}
	if got := r.stateIfAny(svc); got != st {
		t.Fatalf("after a lookup found no service its state is %p; want the monitor's %p", got, st)
	}
	s.unknown.Store(false)
	if err := r.Invalidate(ctx, svc); err != nil {
		t.Fatal(err)
	}
	checkedOut(t, r, clock, svc, bad)
}

// registerChecked registers a router instance of svc on r whose checks
// answer check, and returns its ID.
func registerChecked(t *testing.T, r *Registry, svc, host string, check error) string {
	t.Helper()
	g, err := r.Register(context.Background(), Instance{Service: svc, Host: host, Port: 1, Method: MethodRouter},
		WithCheckFunc(func(context.Context) error { return check }))
	if err != nil {
		t.Fatal(err)
	}
	return g.Instance().ID
}

// checkedOut runs three check intervals of r's monitor, then wants bad,
// whose checks fail, unhealthy in Get and never chosen by Pick.
func checkedOut(t *testing.T, r *Registry, clock *fakeclock.Clock, svc, bad string) {
	t.Helper()
	ctx := context.Background()
	for range 30 { // three intervals: each instance is checked
		clock.Advance(100 * time.Millisecond)
		r.hm.settle()
	}
	got, err := r.Get(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	if in := got.Instance(bad); in == nil || in.Status != StatusUnhealthy {
		t.Fatalf("Get after failing checks of %s shows %+v; want it unhealthy", bad, in)
	}
	for range 4 {
		sel, err := r.Pick(ctx, svc, UseStrategy(StrategyRoundRobin))
		if err != nil {
			t.Fatal(err)
		}
		sel.Done(nil)
		if sel.Instance.ID == bad {
			t.Fatalf("Pick chose %s, which fails its checks", bad)
		}
	}
}
