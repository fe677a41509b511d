package discovery_test

import (
	"context"
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// A load that read an older snapshot and finished after a newer one was
// installed is not installed (L1 keeps the newer), but it made this
// process forget the state of the instances the older snapshot lacked: an
// instance ejected after it joined came back eligible, its ejection lost.
func TestLateOlderSnapshotKeepsTheStateOfNewerInstances(t *testing.T) {
	ns := testutil.Prefix(t)
	rdb, _ := testutil.Redis(t, ns)
	s := &gatedStore{Store: discoverytest.NewBackend(), read: make(chan struct{}), release: make(chan struct{})}
	r, err := discovery.New(discovery.WithStore(s), discovery.WithRedis(rdb), discovery.WithNamespace(ns[:len(ns)-1]),
		discovery.WithClock(discoverytest.NewClock(t0)), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	mustRegister(t, r, inst("db_svc", "10.0.0.2", 1))
	// A forced read of the database (RefreshKeys loads as Get does, past
	// L1 and Redis), again until the gate holds one: a Get after an
	// Invalidate was answered, now and then under full runs, from what a
	// background load (the subscription's resync, a change message) had
	// put back meanwhile, and a forced read can join one such load that
	// read before the gate was armed; the test then waited for a read that
	// never came.
	s.armed.Store(true)
	got := make(chan error, 1)
	for held := false; !held; {
		go func() { _, err := r.RefreshKeys(ctx, "db_svc"); got <- err }()
		select {
		case <-s.read: // that load holds revision 2, without 10.0.0.3
			held = true
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	bad := mustRegister(t, r, inst("db_svc", "10.0.0.3", 1)).Instance().ID
	report(t, r, bad, errCall, 5)
	if !ejected(t, r, bad) {
		t.Fatal("not ejected after 5 failures")
	}
	close(s.release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if h := healthOf(t, r, "db_svc", bad); !h.Ejected {
		t.Fatalf("after the older snapshot's late load: %+v; want still ejected", h)
	}
}
