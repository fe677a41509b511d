// Package discoverytest helps test code that uses discovery without any
// server: a shared in-memory backend that several Registry values can use at
// once, standing for several processes, and a fake clock that moves only
// when the test says so, firing the Registry's lease and health timers.
//
//	backend := discoverytest.NewBackend()
//	clock := discoverytest.NewClock(time.Now())
//	svcA := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock)) // one "process"
//	svcB := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock)) // another
//	svcA.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
//	got, _ := svcB.Get(ctx, "db_svc") // sees it at once: the backend notifies every Registry
package discoverytest

import (
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/storetest"
)

// Backend is an in-memory Store, safe for concurrent use, that tells every
// Registry using it about each change (it implements discovery.Notifier),
// and keeps configurations (discovery.ConfigStore, discovery.ConfigSwapper) and public keys
// (discovery.KeyStore, for package auth). Its services left with nothing
// are deleted by the reaper as the SQL store's are (discovery.ServiceReaper,
// WithServiceReap). It renews a lease only while the
// row holds the instance as registered (discovery.InstanceRenewer), which
// is how Registries renew through it: a wrapper that intercepts Renew must
// intercept RenewInstance too.
//
// Beyond the Store methods it has Loads, which counts reads of services (to
// assert that caches work), SetFailure, which makes every call fail as a
// database outage would (nil ends it), and Subscribers, which counts the
// Registry values following it (Drain waits for nobody when it is alone).
//
// Make one with NewBackend; the zero value has no store in it.
type Backend struct {
	*memory.Store
}

var (
	_ discovery.Store               = (*Backend)(nil)
	_ discovery.Notifier            = (*Backend)(nil)
	_ discovery.ConfigStore         = (*Backend)(nil)
	_ discovery.ConfigSwapper       = (*Backend)(nil)
	_ discovery.ConfigVersionReader = (*Backend)(nil)
	_ discovery.KeyStore            = (*Backend)(nil)
	_ discovery.RevisionReader      = (*Backend)(nil)
	_ discovery.InstanceRenewer     = (*Backend)(nil)
	_ discovery.ServiceReaper       = (*Backend)(nil)
)

// NewBackend returns an empty backend.
func NewBackend() *Backend { return &Backend{memory.New()} }

// Clock is a fake discovery.Clock: Now stays put until Advance or Set, which
// fire the timers that fall due, in order. They do not wait for the work a
// timer starts: a lease renewal runs on its own goroutine, so one long
// Advance can end a lease whose renewal had no chance to run. To keep
// registrations alive, advance in steps no longer than the renewal interval
// (a third of the lease TTL) and let the renewals of each step finish before
// the next:
//
//	for range 12 { // a minute
//		clock.Advance(5 * time.Second)
//		clock.BlockUntilHandled() // the renewals it fired are done
//	}
//
// Whatever a Registry waits for on its clock lasts until the test moves it:
// the backoff between attempts of a configuration notification that failed
// (UpdateConfig waits for it), a Drain's propagation delay under options
// that set one (NewRegistry's is 0). A health check starts when its timer
// fires but runs in real time on its own goroutine (its timeout included):
// Registry.Health shows its result once it has landed.
//
// Its methods, from the embedded internal clock: Now and NewTimer (the
// discovery.Clock), Advance(d) and Set(t) (never backwards), Timers (how
// many timers are set), BlockUntil(n) (wait until at least n are set, which
// tells that the goroutines a test depends on have reached their sleep),
// BlockUntilAt(t) (wait until one is set to fire at exactly t) and
// BlockUntilHandled (wait until every timer that fired has been stopped or
// reset by its owner: the goroutines the timers woke are asleep again; a
// timer of the test's own that fired must be stopped or reset too).
//
// Make one with NewClock; the zero value has no clock in it.
type Clock struct {
	*fakeclock.Clock
}

var _ discovery.Clock = (*Clock)(nil)

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{fakeclock.New(start)} }

// NewRegistry returns a Registry on backend, closed when the test ends
// (in t.Cleanup, after the test function and its defers have returned: a
// goroutine check of the test's own, such as goleak.VerifyNone, belongs in
// a Cleanup registered before NewRegistry, not in a defer, which runs while
// the Registry is still open).
//
// Its Close deregisters at once (discovery.WithCloseDrain(0); pass another
// to test the drain): the drain waits for the propagation delay on the
// Registry's clock, which a Clock moves only when the test says so, and
// every Close in a test's cleanup took the drain's whole real-time bound
// (1 s). Its propagation delay is 0 (discovery.WithPropagationDelay(0)):
// the backend tells every Registry of a change before the write returns,
// so Registration.Drain has nothing to wait for once its mark is written;
// with the default it waited 100 ms on the Registry's clock, for ever
// under a Clock the test did not move.
func NewRegistry(t testing.TB, backend *Backend, opts ...discovery.Option) *discovery.Registry {
	t.Helper()
	if backend != nil && backend.Store == nil {
		t.Fatalf("discoverytest: NewRegistry: a zero Backend has no store in it; make one with NewBackend")
	}
	defaults := []discovery.Option{discovery.WithStore(backend), discovery.WithCloseDrain(0), discovery.WithPropagationDelay(0)}
	r, err := discovery.New(append(defaults, opts...)...)
	if err != nil {
		t.Fatalf("discoverytest: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("discoverytest: Close: %v", err)
		}
	})
	return r
}

// StoreConformance runs the conformance suite this module's own stores
// pass (in-memory, SQLite, PostgreSQL) against a Store of your own, each
// case in a subtest with a fresh, empty store from newStore. It covers
// registration round trips, leases, reaping, revisions, concurrency,
// listings and, where the store has them, configurations and keys
// (revocations included) and the deletion of services left with nothing
// (a discovery.ServiceReaper: raced with writes, which must never be lost
// nor go back in revision); a failure names the case and what differed.
func StoreConformance(t *testing.T, newStore func(t *testing.T) discovery.Store) {
	t.Helper()
	storetest.Run(t, func(t *testing.T) core.Store { return newStore(t) })
}
