package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// evictAllBut looks up every service of evictionRegistry but the i-th, so
// that ristretto evicts it, and reports whether it did.
func evictAllBut(t *testing.T, r *Registry, i int) bool {
	t.Helper()
	for j := range evictServices {
		if j == i {
			continue
		}
		if _, err := r.Get(context.Background(), evictName(j)); err != nil {
			t.Fatal(err)
		}
	}
	r.l1.rc.Wait()
	return r.l1.get(evictName(i)) == nil
}

// A service evicted from L1 while requests picked from it are in flight
// keeps their count until they are done: the next least_connections (or
// p2c_ewma) pick weighs them, and the state goes once the last is done.
// Dropped with the eviction, the state took the counts with it: the next
// pick saw every instance idle, and sent a new request to the one still
// busy with the others (a stream, a long poll).
func TestEvictionKeepsInFlightCountsUntilDone(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := evictionRegistry(t)
	name := evictName(0)
	if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.2:1", Host: "10.0.0.2", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	sel, err := r.Pick(ctx, name, UseStrategy(StrategyLeastConnections))
	if err != nil {
		t.Fatal(err)
	}
	busy := sel.Instance.ID
	if !evictAllBut(t, r, 0) {
		t.Skip("the service stayed in L1")
	}
	for range 20 {
		next, err := r.Pick(ctx, name, UseStrategy(StrategyLeastConnections))
		if err != nil {
			t.Fatal(err)
		}
		if next.Instance.ID == busy {
			t.Fatalf("after the eviction, least_connections picked %s, which has a request in flight, over an idle instance", busy)
		}
		next.Done(nil)
	}
	// Looked up again, it is in use: no drop is put off, and a Done that
	// ends a last request no longer asks for one (an index lookup each).
	if st := r.stateIfAny(name); st == nil || st.putOff.Load() != 0 {
		t.Fatalf("the state of a service back in L1 is %v, with a drop put off; want it held, with none", st)
	}
	// Once the requests are done and the service is evicted again, its state goes.
	sel.Done(nil)
	if !evictAllBut(t, r, 0) {
		t.Skip("the service stayed in L1")
	}
	if r.stateIfAny(name) != nil {
		t.Fatal("the state of a service evicted after its requests were done was kept")
	}
}

// A state kept only for requests in flight goes when the last is done:
// nothing else looks at it again (the service is out of L1, and may never
// be looked up again).
func TestStateKeptForRequestsInFlightGoesWithTheLast(t *testing.T) {
	ctx := context.Background()
	r, _, _ := evictionRegistry(t)
	name := evictName(0)
	sel, err := r.Pick(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !evictAllBut(t, r, 0) {
		t.Skip("the service stayed in L1")
	}
	if r.stateIfAny(name) == nil {
		t.Fatal("the state of a service with a request in flight was dropped")
	}
	sel.Done(nil)
	if r.stateIfAny(name) != nil {
		t.Fatal("the state of an evicted service whose last request is done was kept")
	}
}

// A service evicted from L1 during an ejection of one of its instances
// keeps its state until the ejection ends, and no longer: nothing else
// looks at it again. Kept for good, the state of every service that had an
// instance ejected and was not looked up again grew the map.
func TestStateKeptForAnEjectionGoesWhenItEnds(t *testing.T) {
	ctx := context.Background()
	r, clock, _ := evictionRegistry(t)
	name := evictName(0)
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
	for range DefaultEjectionFailures {
		if err := r.ReportOutcome(name, "10.0.0.1:1", errors.New("connection refused"), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if !evictAllBut(t, r, 0) {
		t.Skip("the service stayed in L1")
	}
	st := r.stateIfAny(name)
	if st == nil {
		t.Fatal("the state of a service with an ejection in force was dropped")
	}
	if is := st.inst("10.0.0.1:1"); is == nil || !is.ejected(clock.Now().UnixNano()) {
		t.Fatal("the instance is not ejected")
	}
	clock.Advance(DefaultEjectionTime)
	r.hm.settle() // the monitor ends the ejection
	if is := st.inst("10.0.0.1:1"); is.ejected(clock.Now().UnixNano()) {
		t.Fatal("the ejection did not end")
	}
	if r.stateIfAny(name) != nil {
		t.Fatal("the state of an evicted service was kept after its ejection ended")
	}
}

// A service evicted from L1 during a self-preservation episode keeps its
// state until the episode ends, and no longer: nothing else looks at it
// again. Kept for good, the state of every service evicted in an episode
// (a partition makes many) and not looked up again grew the map.
func TestStateKeptForAnEpisodeGoesWhenItEnds(t *testing.T) {
	ctx := context.Background()
	r, clock, _ := evictionRegistry(t)
	name := evictName(2)
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
	st := r.stateIfAny(name)
	now := clock.Now().UnixNano()
	st.episode.Store(&episode{lo: now - int64(time.Second), hi: now})
	e := r.l1.get(name)
	r.l1.remove(e) // as ristretto's eviction does
	r.entryEvicted(e)
	if r.stateIfAny(name) != st {
		t.Fatal("the state of a service in a self-preservation episode was dropped")
	}
	clock.Advance(r.opts.suspectGrace)
	r.hm.settle()
	if r.stateIfAny(name) != nil {
		t.Fatal("the state of an evicted service was kept after its self-preservation episode ended")
	}
}
