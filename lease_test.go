package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// hookStore is a Store whose Register calls a hook first, and another once
// the write is done.
type hookStore struct {
	discovery.Store
	onRegister    func()
	afterRegister func()
}

func (s *hookStore) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	if s.onRegister != nil {
		s.onRegister()
	}
	rev, err := s.Store.Register(ctx, in)
	if s.afterRegister != nil {
		s.afterRegister()
	}
	return rev, err
}

// Two Register calls of one instance at once in one process leave one
// registration renewing it (the other replaced), so a Deregister sticks:
// with two, the other's next renewal found the row gone and wrote it again.
func TestConcurrentRegistersOfOneInstanceLeaveOneRegistration(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	// Each store write waits (up to 1 s) until both Register calls have
	// reached the store: both have then passed registrationsOf.
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	hs := &hookStore{Store: backend, onRegister: func() {
		arrived.Done()
		select {
		case <-both:
		case <-time.After(time.Second):
		}
	}}
	clock := discoverytest.NewClock(t0)
	r, err := discovery.New(discovery.WithStore(hs), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	gs := make([]*discovery.Registration, 2)
	for i := range gs {
		wg.Go(func() {
			g, err := r.Register(ctx, inst("db_svc", "10.0.0.1", 1))
			if err != nil {
				t.Error(err)
			}
			gs[i] = g
		})
	}
	wg.Wait()
	hs.onRegister = nil
	select { // a correct Register serialises the two, and the second arrives after the first returned
	case <-both:
	case <-time.After(time.Second):
		t.Fatal("the second Register never reached the store")
	}
	live := 0
	for _, g := range gs {
		select {
		case <-g.Done():
		default:
			live++
		}
	}
	if live != 1 {
		t.Errorf("%d registrations of one instance renew its lease; want 1 (the other replaced)", live)
	}
	if err := r.Deregister(ctx, "db_svc", "10.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	clock.BlockUntil(live) // the keepalives left (one was deregistered) and the reaper
	clock.Advance(discovery.DefaultLeaseTTL / 3)
	clock.BlockUntil(live)
	svc, err := backend.Load(ctx, "db_svc")
	if err == nil && len(svc.Instances) != 0 {
		t.Fatalf("after Deregister and one renewal interval the store holds %d instance(s) (revision %d): the deregistered instance came back", len(svc.Instances), svc.Revision)
	}
}

// A Register whose store write is still under way when Close takes its
// list of registrations returns ErrClosed and removes what it wrote: it
// returned success on a closed Registry and left the instance listed for a
// lease TTL. Close waits for it no longer than its close timeout.
func TestRegisterRacingCloseLeavesNoInstance(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	entered, release := make(chan struct{}), make(chan struct{})
	hs := &hookStore{Store: backend, onRegister: func() { close(entered); <-release }}
	r, err := discovery.New(discovery.WithStore(hs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithCloseTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		g   *discovery.Registration
		err error
	}
	res := make(chan result, 1)
	go func() {
		g, err := r.Register(ctx, inst("db_svc", "10.0.0.1", 1))
		res <- result{g, err}
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("Close did not return")
	}
	close(release)
	got := <-res
	svc, err := backend.Load(ctx, "db_svc")
	n := 0
	if err == nil {
		for _, in := range svc.Instances {
			if in.Live(time.Now()) {
				n++
			}
		}
	}
	if got.err == nil || n != 0 {
		t.Fatalf("Register racing Close returned err=%v; after both returned the store holds %d live instance(s); want ErrClosed or the instance deregistered", got.err, n)
	}
}

// Close waits (within its close timeout) for a Register under way, which
// removes what it wrote once it sees the Registry closed. Close returned at
// once and the write landed after it: a process that exits when Close
// returns (defer reg.Close() in main) left the instance listed, and picked,
// for a lease TTL.
func TestCloseWaitsForARegisterUnderWay(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	entered, release := make(chan struct{}), make(chan struct{})
	var closeReturned, landedAfterClose atomic.Bool
	hs := &hookStore{Store: backend, onRegister: func() { close(entered); <-release },
		afterRegister: func() { landedAfterClose.Store(closeReturned.Load()) }}
	r, err := discovery.New(discovery.WithStore(hs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	regErr := make(chan error, 1)
	go func() {
		_, err := r.Register(ctx, inst("db_svc", "10.0.0.1", 1))
		regErr <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() {
		err := r.Close()
		closeReturned.Store(true)
		closed <- err
	}()
	// A Close that does not wait returns at once (microseconds with the
	// in-memory store); one that waits is still waiting when the write is
	// let through.
	select {
	case <-closed:
		closed <- nil
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-regErr; !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Register racing Close = %v; want ErrClosed", err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if landedAfterClose.Load() {
		t.Fatal("Close returned while a Register's write was under way; the write landed after it, and nothing in this process was left to remove it once the process exits")
	}
	if svc, err := backend.Load(ctx, "db_svc"); err == nil && len(svc.Instances) != 0 {
		t.Fatalf("after Close the store holds %d instance(s); want none", len(svc.Instances))
	}
}

// Registry.Deregister of an instance that a Register of this process is
// writing at that moment stops that registration too: it found no
// registration yet, deleted the row and returned nil, and the Register
// then listed its registration, whose next renewal wrote the instance back.
func TestRegistryDeregisterDuringARegisterStopsIt(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	hs := &hookStore{Store: backend}
	r, err := discovery.New(discovery.WithStore(hs), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deregistered := make(chan error, 1)
	hs.afterRegister = func() {
		hs.afterRegister = nil
		go func() { deregistered <- r.Deregister(ctx, "db_svc", "10.0.0.1:1") }()
		// A Deregister that does not wait for the Register ends at once
		// (microseconds with the in-memory store); one that waits still
		// waits when this Register goes on.
		select {
		case err := <-deregistered:
			deregistered <- err
		case <-time.After(200 * time.Millisecond):
		}
	}
	g, err := r.Register(ctx, inst("db_svc", "10.0.0.1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-deregistered; err != nil {
		t.Fatalf("Deregister = %v", err)
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("Registry.Deregister returned nil during the Register of its instance, and the registration still renews: its next renewal registers the instance again")
	}
	if svc, err := backend.Load(ctx, "db_svc"); err == nil && len(svc.Instances) != 0 {
		t.Fatalf("after Deregister the store holds %d instance(s); want none", len(svc.Instances))
	}
}

// failedDeregister registers an instance and deregisters it while the
// database is down (ErrUnavailable), then brings the database back.
func failedDeregister(t *testing.T) (*discovery.Registry, *discoverytest.Backend, *discovery.Registration) {
	t.Helper()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	backend.SetFailure(errors.New("connection refused"))
	if err := g.Deregister(context.Background()); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Deregister during the outage = %v; want ErrUnavailable", err)
	}
	backend.SetFailure(nil)
	return r, backend, g
}

// A Deregister that failed (database down) can be retried: once the
// database is back, the retry removes the instance (it returned nil and
// deleted nothing).
func TestDeregisterRetriedAfterAFailureRemovesTheInstance(t *testing.T) {
	ctx := context.Background()
	_, backend, g := failedDeregister(t)
	err := g.Deregister(ctx)
	svc, lerr := backend.Load(ctx, "db_svc")
	if lerr == nil && len(svc.Instances) != 0 {
		t.Fatalf("retried Deregister = %v, but the instance is still registered (%d row(s), live=%v)", err, len(svc.Instances), svc.Instances[0].Live(time.Now()))
	}
}

// A Deregister that failed, retried after the instance was registered
// again, leaves the new registration's row alone: the new Register
// replaced the old handle.
func TestDeregisterRetriedAfterARegisterAgainKeepsTheNewOne(t *testing.T) {
	ctx := context.Background()
	r, backend, old := failedDeregister(t)
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if err := old.Deregister(ctx); err != nil {
		t.Fatalf("the old handle's Deregister = %v; want nil (nothing left to do)", err)
	}
	svc, err := backend.Load(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 {
		t.Fatalf("after the old handle's Deregister the store holds %v (%v); want the new registration", svc, err)
	}
}

// stallingRenew is a store whose next renewal (Renew or RenewInstance)
// waits, once stall is set, until released: a renewal under way when its
// process was stopped.
type stallingRenew struct {
	*discoverytest.Backend
	stall   atomic.Bool
	stalled chan struct{}
	release chan struct{}
}

func (s *stallingRenew) Renew(ctx context.Context, service, id string, now, expires time.Time) error {
	return s.stallAfter(s.Backend.Renew(ctx, service, id, now, expires))
}

func (s *stallingRenew) RenewInstance(ctx context.Context, in *discovery.Instance, now time.Time) error {
	return s.stallAfter(s.Backend.RenewInstance(ctx, in, now))
}

func (s *stallingRenew) stallAfter(err error) error {
	if s.stall.CompareAndSwap(true, false) {
		close(s.stalled)
		<-s.release
	}
	return err
}

// renewalStalled registers db_svc on a fake clock and lets its first renewal
// begin and stall in the store (its process stopped) until the test closes
// store.release.
func renewalStalled(t *testing.T) (*discoverytest.Clock, *stallingRenew) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	store := &stallingRenew{Backend: discoverytest.NewBackend(), stalled: make(chan struct{}), release: make(chan struct{})}
	r := discoverytest.NewRegistry(t, store.Backend, discovery.WithStore(store), discovery.WithClock(clock),
		discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	store.stall.Store(true)
	clock.BlockUntil(1)
	clock.Advance(discovery.DefaultLeaseTTL / 3) // the renewal begins, and its process stops
	<-store.stalled
	return clock, store
}

// A renewal whose process stops while the call is under way returns, once
// the process resumes, having written a lease that has since ended. The
// registration renews again at once, and so registers again, instead of a
// renewal interval later: an instance paused past its lease was back 1 s
// after it resumed (CI saw 1.006 s) instead of at once.
func TestRenewalThatOutlivedItsLeaseRenewsAtOnce(t *testing.T) {
	ctx := context.Background()
	clock, store := renewalStalled(t)
	clock.Advance(2 * discovery.DefaultLeaseTTL) // stopped past the lease it is writing
	close(store.release)
	waitFor(t, 2*time.Second, "the instance registered again, the clock standing still", func() bool {
		svc, err := store.Load(ctx, "db_svc")
		return err == nil && len(svc.Instances) == 1 && svc.Instances[0].ExpiresAt.After(clock.Now())
	})
}

// A renewal whose process stops while the call is under way, for less than
// the lease but more than the lease less one interval, returns with less
// than a renewal interval of its lease left. The next renewal comes before
// that lease ends: it came one interval later, after the lease had ended,
// so the instance dropped out of every lookup until it registered again.
func TestRenewalLeftWithLessThanAnIntervalRenewsBeforeItsLeaseEnds(t *testing.T) {
	ctx := context.Background()
	clock, store := renewalStalled(t)
	written := clock.Now().Add(discovery.DefaultLeaseTTL) // the lease the stalled renewal wrote
	clock.Advance(discovery.DefaultLeaseTTL * 4 / 5)      // 12 s: 3 s of it left when it resumes
	close(store.release)
	waitFor(t, 2*time.Second, "a renewal before the lease ends, the clock standing still", func() bool {
		svc, err := store.Load(ctx, "db_svc")
		return err == nil && len(svc.Instances) == 1 && svc.Instances[0].ExpiresAt.After(written)
	})
}

// pausingRegister is a store whose Register, once pause is set, moves the
// clock on while the call is under way: its process was stopped meanwhile.
type pausingRegister struct {
	*discoverytest.Backend
	clock *discoverytest.Clock
	pause atomic.Int64 // nanoseconds
}

func (s *pausingRegister) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	rev, err := s.Backend.Register(ctx, in)
	if d := s.pause.Swap(0); d > 0 {
		s.clock.Advance(time.Duration(d))
	}
	return rev, err
}

// A Register whose process stops while the write is under way returns with
// less than a renewal interval of its lease left; the first renewal comes
// before the lease ends, not one interval after Register returned.
func TestRegisterLeftWithLessThanAnIntervalRenewsBeforeItsLeaseEnds(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	store := &pausingRegister{Backend: discoverytest.NewBackend(), clock: clock}
	r := discoverytest.NewRegistry(t, store.Backend, discovery.WithStore(store), discovery.WithClock(clock),
		discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	store.pause.Store(int64(discovery.DefaultLeaseTTL * 4 / 5))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	written := t0.Add(discovery.DefaultLeaseTTL) // the lease Register wrote, the clock at t0
	waitFor(t, 2*time.Second, "a renewal before the lease ends, the clock standing still", func() bool {
		svc, err := store.Load(ctx, "db_svc")
		return err == nil && len(svc.Instances) == 1 && svc.Instances[0].ExpiresAt.After(written)
	})
}

// A database outage shorter than what is left of a lease does not end the
// lease: the renewal retries before the lease ends, whatever its backoff
// has grown to. The outage here runs from the first renewal (5 s) to 12 s
// of a 15 s lease; the backoff's attempts (5, 5.2, 5.6, 6.4, 8, 11.2 s) put
// the next one at 16.2 s, after the lease had ended, and the instance
// dropped out of every lookup of a process that had not seen the outage
// until it registered again (a new revision).
func TestOutageShorterThanTheLeaseDoesNotEndIt(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	rev := g.Revision()
	const idle = 1 // the renewal's timer
	clock.BlockUntil(idle)
	step := func(until time.Duration) {
		for clock.Now().Before(t0.Add(until)) {
			clock.BlockUntil(idle)
			clock.Advance(50 * time.Millisecond)
		}
		clock.BlockUntil(idle)
	}
	step(4900 * time.Millisecond)
	backend.SetFailure(errors.New("connection refused"))
	step(12 * time.Second)
	backend.SetFailure(nil)
	step(discovery.DefaultLeaseTTL - 50*time.Millisecond)
	svc, err := backend.Load(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 {
		t.Fatalf("Load = %+v, %v", svc, err)
	}
	if end := svc.Instances[0].ExpiresAt; !end.After(t0.Add(discovery.DefaultLeaseTTL)) || svc.Revision != rev {
		t.Fatalf("at %v the lease ends at %v (revision %d, registered at %d); want it renewed past %v before it ended",
			clock.Now().Sub(t0), end.Sub(t0), svc.Revision, rev, discovery.DefaultLeaseTTL)
	}
}

// An Update whose outcome its caller could not know, and which landed just
// before the database went away for longer than the lease, is kept: when
// the database is back, the row still holds it (its lease ended, the
// reaper has not removed it), and the registration registers again what
// the row holds, as a renewal in time would have taken it. It registered
// its fields from before the Update: the landed write, announced to every
// process, was undone though no one asked.
func TestUpdateOfUnknownOutcomeKeptAcrossAnOutageLongerThanTheLease(t *testing.T) {
	backend := discoverytest.NewBackend()
	s := &landsThenTimesOut{Store: backend}
	u := setWeightOfUnknownOutcome(t, backend, s, &s.armed)
	if got := u.weight(); got != "7" {
		t.Fatalf("after SetWeight the row holds weight %s; want 7 (it landed)", got)
	}
	u.outageLongerThanTheLease(t)
	if got := u.g.Instance().Weight; got != 7 {
		t.Fatalf("Registration.Instance().Weight = %d; want 7, as the row held", got)
	}
}

// A Deregister that ends before it gets the registration's writes (its
// context ended while an Update held them) has stopped the renewals all the
// same: the registration no longer renews (Done), so an Update after it is
// refused with ErrClosed, as after a Deregister that went through. It
// succeeded, and the caller took for live an instance whose lease then ran
// out with nothing to renew it.
func TestUpdateAfterAFailedDeregisterIsRefused(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	entered, release := make(chan struct{}), make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		updated <- g.Update(ctx, func(in *discovery.Instance) { close(entered); <-release; in.Weight = 7 })
	}()
	<-entered
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := g.Deregister(dctx); err == nil {
		t.Fatal("Deregister returned nil while an Update held the registration's writes past its deadline")
	}
	close(release)
	if err := <-updated; err != nil {
		t.Fatalf("the Update under way = %v", err)
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("the registration still renews after its Deregister failed")
	}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Weight = 9 }); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Update after a failed Deregister = %v; want ErrClosed: nothing renews the registration", err)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatalf("Deregister again = %v; want it to go through", err)
	}
	if svc, err := r.Get(ctx, "db_svc"); err == nil && len(svc.Instances) != 0 {
		t.Fatalf("after the second Deregister Get = %v; want none", svc.Instances)
	}
}

// plainLandsThenTimesOut is a Store of the user's own, with no
// InstanceRenewer (its renewals cannot tell what the row holds), whose
// next Register, once armed, lands and then fails as a deadline would.
type plainLandsThenTimesOut struct {
	discovery.Store
	armed atomic.Bool
}

func (s *plainLandsThenTimesOut) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	rev, err := s.Store.Register(ctx, in)
	if err == nil && s.armed.CompareAndSwap(true, false) {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

// On a Store without InstanceRenewer too, an Update of unknown outcome that
// landed is taken as the registration's own at its next renewal, as the
// README promises: the renewal reads the row when such a write is pending.
// It renewed the row as it was and forgot the write: Instance showed the
// fields from before it, and once the lease lapsed (an outage longer than
// it) the registration wrote them back, undoing the landed Update.
func TestUpdateOfUnknownOutcomeOnAStoreWithoutInstanceRenewerIsTakenAsItsOwn(t *testing.T) {
	backend := discoverytest.NewBackend()
	s := &plainLandsThenTimesOut{Store: backend}
	if _, ok := discovery.Store(s).(discovery.InstanceRenewer); ok {
		t.Fatal("the test store must not be an InstanceRenewer")
	}
	u := setWeightOfUnknownOutcome(t, backend, s, &s.armed)
	u.step(time.Second + discovery.DefaultLeaseTTL/3 + 100*time.Millisecond) // the next renewal
	if got := u.g.Instance().Weight; got != 7 {
		t.Fatalf("after the next renewal Registration.Instance().Weight = %d; want 7, as the row holds (%s)", got, u.weight())
	}
	u.outageLongerThanTheLease(t)
}

// deadConns is a store whose next renewals, once dead is set, each wait
// for their deadline and fail, as a call does on a pooled connection that
// a failover, or a firewall's idle timeout, left half-open: new
// connections answer, so the renewal after them does.
type deadConns struct {
	*discoverytest.Backend
	dead atomic.Int32
}

func (s *deadConns) hang(ctx context.Context) error {
	if s.dead.Add(-1) < 0 {
		s.dead.Store(0)
		return nil
	}
	<-ctx.Done()
	return &discovery.BackendError{Backend: "database", Op: "renew", Err: context.Cause(ctx)}
}

func (s *deadConns) Renew(ctx context.Context, service, id string, now, expires time.Time) error {
	if err := s.hang(ctx); err != nil {
		return err
	}
	return s.Backend.Renew(ctx, service, id, now, expires)
}

func (s *deadConns) RenewInstance(ctx context.Context, in *discovery.Instance, now time.Time) error {
	if err := s.hang(ctx); err != nil {
		return err
	}
	return s.Backend.RenewInstance(ctx, in, now)
}

// Two renewals in a row that hang until their deadline (two dead
// connections in the pool, the database itself answering) do not end the
// lease: a retry is bounded by half of what is left of it, so another comes
// before it ends, as the README promises ("at least once in each half of
// what is left of the lease"). Each attempt waited a whole renewal interval:
// with a 9 s lease the second, from 6.2 s, was still waiting at 9 s, the
// lease ended (the instance left every lookup) and it registered again
// with a new revision.
func TestRenewalsHangingOnDeadConnectionsRenewBeforeTheLeaseEnds(t *testing.T) {
	const ttl = 9 * time.Second
	ctx := context.Background()
	store := &deadConns{Backend: discoverytest.NewBackend()}
	r := discoverytest.NewRegistry(t, store.Backend, discovery.WithStore(store), discovery.WithLeaseTTL(ttl),
		discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	registered := time.Now()
	rev := g.Revision()
	store.dead.Store(2)
	for time.Since(registered) < ttl+500*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	svc, err := store.Load(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 {
		t.Fatalf("Load = %+v, %v", svc, err)
	}
	if svc.Revision != rev || !svc.Instances[0].ExpiresAt.After(registered.Add(ttl)) {
		t.Fatalf("%v after Register the service is at revision %d (registered at %d), the lease ends %v after Register; "+
			"want it renewed before it ended, not registered again", time.Since(registered).Round(time.Millisecond),
			svc.Revision, rev, svc.Instances[0].ExpiresAt.Sub(registered).Round(time.Millisecond))
	}
}

// unknownOutcome is what setWeightOfUnknownOutcome sets up.
type unknownOutcome struct {
	backend *discoverytest.Backend
	clock   *discoverytest.Clock
	g       *discovery.Registration
	// step moves the clock to t0+until, letting each renewal it fires
	// finish (BlockUntilHandled).
	step func(until time.Duration)
	// weight is the weight the backend's row holds (or what it holds
	// instead of one row).
	weight func() string
}

// setWeightOfUnknownOutcome registers an instance through s, a store over
// backend whose next Register, once armed, lands and then fails as one
// whose deadline ran out, and has a SetWeight(7) land that way.
func setWeightOfUnknownOutcome(t *testing.T, backend *discoverytest.Backend, s discovery.Store, armed *atomic.Bool) unknownOutcome {
	t.Helper()
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(s), discovery.WithClock(clock),
		discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	u := unknownOutcome{backend: backend, clock: clock, g: mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))}
	u.step = func(until time.Duration) {
		for clock.Now().Before(t0.Add(until)) {
			clock.Advance(50 * time.Millisecond)
			clock.BlockUntilHandled()
		}
	}
	u.weight = func() string {
		svc, err := backend.Load(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 1 {
			return fmt.Sprintf("%+v, %v", svc, err)
		}
		return strconv.Itoa(svc.Instances[0].Weight)
	}
	u.step(time.Second)
	armed.Store(true)
	if err := u.g.SetWeight(ctx, 7); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SetWeight = %v; want the store's context.DeadlineExceeded", err)
	}
	return u
}

// outageLongerThanTheLease takes the database away until the lease the
// landed SetWeight wrote has ended, brings it back, and checks that the
// instance is registered again with that write (weight 7).
func (u unknownOutcome) outageLongerThanTheLease(t *testing.T) {
	t.Helper()
	u.backend.SetFailure(errors.New("connection refused"))
	u.step(time.Second + 2*discovery.DefaultLeaseTTL) // the lease the Update wrote ends meanwhile
	u.backend.SetFailure(nil)
	// A retry comes within the backoff's cap, a renewal interval (TTL/3)
	// +10% jitter, of the database's return: waited for TTL/3 alone, the
	// test failed whenever the jitter drew more (about 1 run in 10).
	u.step(time.Second + 2*discovery.DefaultLeaseTTL + discovery.DefaultLeaseTTL/3*11/10 + 100*time.Millisecond)
	svc, err := u.backend.Load(context.Background(), "db_svc")
	if err != nil || len(svc.Instances) != 1 || !svc.Instances[0].ExpiresAt.After(u.clock.Now()) {
		t.Fatalf("after the outage the store has %+v, %v; want the instance registered again", svc, err)
	}
	if got := u.weight(); got != "7" {
		t.Fatalf("after the outage the row holds weight %s; want 7 (the Update that landed kept)", got)
	}
}
