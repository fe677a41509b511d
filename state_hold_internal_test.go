package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// A load holds the state of its service from its start to the install of
// what it read: an eviction that drops the state meanwhile (ristretto
// evicting an older slot of the name, which the index no longer holds) is
// put off until the load has ended, and what was said of the service during
// the load reaches it. Dropped under the load, the state took with it the
// revision this process's own write raised and the count an Invalidate
// made (both went to no state: the service was in no cache), and the load
// put what it had read before them into L1 as fresh: lookups answered it,
// without the write or past the Invalidate, for a freshness window.
func TestALoadUnderWayKeepsItsServiceState(t *testing.T) {
	tests := []struct {
		name string
		// during runs while the load holds what it read (revision 1): it
		// makes revision 2, with a second instance.
		during func(t *testing.T, r *Registry, register func(host string))
	}{
		{"write of this process", func(t *testing.T, r *Registry, _ func(string)) {
			if _, err := r.Register(context.Background(), Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1}); err != nil {
				t.Fatal(err)
			}
		}},
		{"Invalidate after a change behind the Registry's back", func(t *testing.T, r *Registry, register func(string)) {
			register("10.0.0.2")
			if err := r.Invalidate(context.Background(), "db_svc"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store, mem := newHeldStore()
			r, clock := fakeRegistry(t, WithStore(store))
			register := behindTheBack(t, mem, clock)
			register("10.0.0.1")
			store.hold()
			done := make(chan error, 1)
			go func() {
				_, err := r.Get(ctx, "db_svc")
				done <- err
			}()
			<-store.held            // the load has read revision 1
			r.nameEvicted("db_svc") // ristretto evicts an older slot of the name
			tt.during(t, r, register)
			close(store.release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			res, err := r.Lookup(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if res.Revision != 2 || len(res.Service.Instances) != 2 {
				t.Fatalf("Lookup after the load = revision %d, %d instances (layer %v, stale %v); want revision 2, 2 instances",
					res.Revision, len(res.Service.Instances), res.Layer, res.Stale)
			}
		})
	}
}

// An eviction that found the service in no cache, and drops its state
// only after a load has put the service back into L1 with that state,
// leaves the state: L1's entry keeps the state of its service. Dropped,
// the entry's state was no longer the service's: what ReportOutcome (and
// health checks, and announcements) said went to a new state, while Pick
// went on choosing from the entry's: an ejected instance was still picked,
// and outcomes of its picks, reported on a state no longer held, ejected
// nothing.
func TestAStateDroppedAfterAnEvictionsCheckStaysWithL1sEntry(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	for _, host := range []string{"10.0.0.1", "10.0.0.2"} {
		if _, err := r.store.Register(ctx, &core.Instance{Service: "db_svc", ID: host + ":1", Host: host, Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	if err := r.Invalidate(ctx, "db_svc"); err != nil { // out of L1; its state stays
		t.Fatal(err)
	}
	// Ristretto evicts the name's slot: the eviction finds the service in
	// no cache, and stops just before it drops the state (held up here on
	// the lock that the drop takes, as a Stats call can hold it up).
	r.foldMu.RLock()
	evicted := make(chan struct{})
	go func() {
		defer close(evicted)
		r.nameEvicted("db_svc")
	}()
	for deadline := time.Now().Add(10 * time.Second); !blockedIn("discovery.(*Registry).dropState", "sync.(*RWMutex).Lock"); {
		if time.Now().After(deadline) {
			r.foldMu.RUnlock()
			t.Fatal("the eviction did not reach the drop of the state in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil { // a lookup loads it back into L1
		t.Fatal(err)
	}
	r.foldMu.RUnlock()
	<-evicted

	const bad = "10.0.0.1:1"
	for range DefaultEjectionFailures {
		if err := r.ReportOutcome("db_svc", bad, errors.New("refused"), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := r.Get(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if in := svc.Instance(bad); in == nil || in.Status != StatusEjected {
		t.Fatalf("Get after %d failures of %s shows %+v; want it ejected", DefaultEjectionFailures, bad, in)
	}
	for range 4 {
		sel, err := r.Pick(ctx, "db_svc", UseStrategy(StrategyRoundRobin))
		if err != nil {
			t.Fatal(err)
		}
		sel.Done(nil)
		if sel.Instance.ID == bad {
			t.Fatalf("Pick chose %s, which Get shows ejected", bad)
		}
	}
}
