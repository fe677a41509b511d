package discovery_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// stallLoads makes every Load wait for its context once stalling is set:
// a database that took a write and then stopped answering reads.
type stallLoads struct {
	discovery.Store
	stalling atomic.Bool
}

func (s *stallLoads) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.stalling.Load() {
		<-ctx.Done()
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: ctx.Err()}
	}
	return s.Store.Load(ctx, name)
}

// Close ends within WithCloseTimeout even when the read that writes its
// deregistration through to Redis stalls: that read ran on past Close's
// deadline for the whole load timeout (a minute here), and Close waited
// for it. The other processes still hear of the deregistration.
func TestCloseIsNotHeldByAWriteThrough(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, allWorlds[2]) // sqlite+redis: Redis is what a write goes through to
	backend := discoverytest.NewBackend()
	s := &stallLoads{Store: backend}
	other := overStore(t, w, struct{ discovery.Store }{backend}) // hears of changes through Redis only
	subscribed(t, w, other, 1)
	r, err := discovery.New(discovery.WithNamespace(w.ns), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithRedis(w.rdb), discovery.WithStore(s),
		discovery.WithCloseTimeout(200*time.Millisecond), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if got := ids(other.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
		t.Fatalf("other.Get = %s; want the instance", got)
	}
	s.stalling.Store(true)
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close = %v; want the deregistration done", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close still running 5 s past its 200 ms close timeout")
	}
	waitFor(t, 2*time.Second, "the deregistration on the other process", func() bool {
		_, err := other.Get(ctx, "db_svc")
		return errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrNoHealthyInstances)
	})
}

// A lookup whose load Close ends returns ErrClosed: not ErrUnavailable, as
// if the database had failed, with "database lost" logged by a process
// that was only shutting down.
func TestLookupEndedByCloseIsErrClosed(t *testing.T) {
	backend := discoverytest.NewBackend()
	gate := &loadGate{Store: backend, entered: make(chan struct{}), release: make(chan struct{})}
	defer close(gate.release)
	log, logs := observed()
	r, err := discovery.New(discovery.WithStore(gate), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithLoadTimeout(time.Minute), discovery.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Get(context.Background(), "cold_svc")
		done <- err
	}()
	<-gate.entered
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, discovery.ErrClosed) || errors.Is(err, discovery.ErrUnavailable) {
			t.Errorf("Get whose load Close ended = %v; want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Get still waits 10 s after Close returned")
	}
	if n := logs.FilterMessage("discovery: database lost; serving cached data").Len(); n != 0 {
		t.Errorf("%d 'database lost' logged by Close; want none", n)
	}
}

// A close timeout no longer than the close drain (WithCloseTimeout(300ms)
// with the drain's default 1 s): the drain took the whole close timeout,
// and the deregistrations that followed failed on its expired deadline, so
// Close returned a deadline error and the instance stayed listed, live
// everywhere, until its lease ran out. The drain now takes at most half of
// the close timeout, and the deregistration has the rest.
func TestCloseDrainLeavesTheDeregistrationTime(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	discoverytest.NewRegistry(t, backend) // another process listens: the drain waits the propagation delay
	for _, which := range []string{"Registry", "Registration"} {
		t.Run(which, func(t *testing.T) {
			r, err := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks(),
				discovery.WithCloseTimeout(300*time.Millisecond), discovery.WithPropagationDelay(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
			start := time.Now()
			if which == "Registry" {
				err = r.Close()
			} else {
				err = g.Close()
			}
			// A drain not bounded by the close timeout would wait the
			// propagation delay, a minute.
			if d := time.Since(start); err != nil || d >= 10*time.Second {
				t.Fatalf("Close = %v after %v; want the instance deregistered within the close timeout (300ms), well within 10s", err, d)
			}
			if svc, err := backend.Load(ctx, "db_svc"); err != nil || len(svc.Instances) != 0 {
				t.Fatalf("after Close the store has %+v, %v; want the instance gone", svc, err)
			}
		})
	}
}

// slowReaps makes every Reap take a while, as one that waits for a lock or
// deletes many rows does, and reports what each returned.
type slowReaps struct {
	discovery.Store
	took time.Duration
	errs chan error
}

func (s *slowReaps) Reap(ctx context.Context, cutoff time.Time) ([]discovery.Change, error) {
	select {
	case <-time.After(s.took):
	case <-ctx.Done():
		s.errs <- ctx.Err()
		return nil, &discovery.BackendError{Backend: "database", Op: "reap", Err: ctx.Err()}
	}
	changes, err := s.Store.Reap(ctx, cutoff)
	s.errs <- err
	return changes, err
}

// The reaper is bounded by WithDatabaseTimeout, as its documentation says,
// not by WithLoadTimeout, the bound of a lookup's load: a reap longer than
// the load timeout (300 ms against 100 ms here) was cut short, and noted as
// the database lost.
func TestReaperIsBoundedByTheDatabaseTimeout(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	s := &slowReaps{Store: discoverytest.NewBackend(), took: 300 * time.Millisecond, errs: make(chan error, 1)}
	core, logs := observer.New(zap.WarnLevel)
	discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStore(s), discovery.WithClock(clock),
		discovery.WithoutHealthChecks(), discovery.WithLogger(zap.New(core)),
		discovery.WithReaper(10*time.Second, time.Minute), discovery.WithLoadTimeout(100*time.Millisecond), discovery.WithDatabaseTimeout(time.Minute))
	clock.BlockUntil(1) // the reaper
	clock.Advance(20 * time.Second)
	if err := <-s.errs; err != nil {
		t.Fatalf("a reap of 300 ms under a 1 min database timeout = %v; want it to finish", err)
	}
	if n := logs.FilterMessage("discovery: database lost; serving cached data").Len(); n != 0 {
		t.Fatalf("a slow reap was logged as the database lost")
	}
}

// slowWrites makes every Register and Deregister take a while, as on a
// database across a region, within the call's context.
type slowWrites struct {
	discovery.Store
	took atomic.Int64 // nanoseconds
}

func (s *slowWrites) wait(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(s.took.Load())):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowWrites) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.Store.Register(ctx, in)
}

func (s *slowWrites) Deregister(ctx context.Context, service, id string) (int64, error) {
	if err := s.wait(ctx); err != nil {
		return 0, err
	}
	return s.Store.Deregister(ctx, service, id)
}

// Close deregisters every registration within its close timeout when the
// database is slow but answers: 20 registrations and 100 ms a write, under
// a 1 s close timeout. They were drained and deregistered one after
// another, so the close timeout ran out after a handful, and the others
// stayed listed (and picked) until their leases ended, their process gone.
func TestCloseDeregistersManyRegistrationsOnASlowDatabase(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	s := &slowWrites{Store: backend}
	r, err := discovery.New(discovery.WithStore(s), discovery.WithoutHealthChecks(), discovery.WithCloseTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		mustRegister(t, r, inst("db_svc", "10.0.0.1", 1000+i))
	}
	s.took.Store(int64(100 * time.Millisecond)) // set after the registrations: no write is under way
	if err := r.Close(); err != nil {
		t.Errorf("Close = %v; want every instance deregistered", err)
	}
	if svc, err := backend.Load(ctx, "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Close %d of %d instances are still registered (%v)", len(svc.Instances), n, err)
	}
}
