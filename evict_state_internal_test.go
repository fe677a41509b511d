package discovery

import (
	"context"
	"errors"
	"testing"
	"time"
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
