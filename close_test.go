package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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

// A function given to Register that ignores its context (a check stuck on
// a lock, a reload waiting on a channel) does not hold Close: Close waits
// for it within the close timeout, then returns a CallbackError naming it.
// Close waited for every goroutine the Registry started, these calls'
// among them, and so waited for good.
func TestCloseIsNotHeldByACallbackThatIgnoresItsContext(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{"check", "config"} {
		t.Run(kind, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			release, entered := make(chan struct{}), make(chan struct{}, 1)
			stuck := func() {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release // deaf to its context
			}
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock),
				discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithCloseDrain(0),
				discovery.WithCloseTimeout(200*time.Millisecond))
			// After NewRegistry's, so run before its Close: the call left
			// running ends (goleak), and a Close that waits for it returns.
			t.Cleanup(func() { close(release) })
			in := discovery.Instance{Service: "router_svc", ID: "r-1", Host: "10.9.9.9", Port: 1, Method: discovery.MethodRouter}
			opt := discovery.WithCheckFunc(func(context.Context) error { stuck(); return nil })
			if kind == "config" {
				opt = discovery.WithConfigFunc(func(context.Context, json.RawMessage) error { stuck(); return nil })
			}
			if _, err := r.Register(ctx, in, opt); err != nil {
				t.Fatal(err)
			}
			if kind == "check" {
				for len(entered) == 0 {
					step(clock, time.Second, r)
				}
			} else {
				go func() {
					uctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					defer cancel()
					_, _ = r.UpdateConfig(uctx, "router_svc", json.RawMessage(`{"v":1}`))
				}()
				select {
				case <-entered:
				case <-time.After(10 * time.Second):
					t.Fatal("the config func was not called within 10s")
				}
			}
			done := make(chan error, 1)
			go func() { done <- r.Close() }()
			select {
			case err := <-done:
				var ce *discovery.CallbackError
				if !errors.As(err, &ce) || len(ce.Running) != 1 || ce.Running[0] != kind+" func of router_svc/r-1" {
					t.Fatalf("Close = %v; want a CallbackError naming the %s func of router_svc/r-1", err, kind)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Close did not return within 10s (close timeout 200ms) while the %s func ignored its context", kind)
			}
		})
	}
}

// While Close drains and deregisters the process's instances, its handlers
// still call other services: a lookup is ErrClosed only once Close has
// deregistered. A service held fresh in L1 answered then, and one not held
// (or stale) was ErrClosed, so whether a call went out during a drain
// depended on the cache.
func TestLookupsAnswerWhileCloseDrains(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	b := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	mustRegister(t, b, inst("other_svc", "10.0.0.9", 9))
	// The drain waits its whole bound: another process listens, and the
	// propagation delay is longer than the drain.
	a, err := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(2*time.Second), discovery.WithCloseTimeout(10*time.Second),
		discovery.WithPropagationDelay(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	ch := watch(t, b, "db_svc")
	next(t, ch, 2*time.Second) // the current state
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	if got := describe(next(t, ch, 2*time.Second)); !strings.Contains(got, "draining") {
		t.Fatalf("event %q; want the instance draining", got)
	}
	// Close is in its drain: a never looked up here must still answer.
	if svc, err := a.Get(ctx, "other_svc"); err != nil || len(svc.Instances) != 1 {
		t.Errorf("Get of a service not held, while Close drains = %v, %v; want its instance", svc, err)
	}
	if sel, err := a.Pick(ctx, "other_svc"); err != nil {
		t.Errorf("Pick while Close drains = %v; want an instance", err)
	} else {
		sel.Done(nil)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the lookups were made: the test checked nothing", err)
	default:
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close still running 20 s after its call")
	}
	if _, err := a.Get(ctx, "other_svc"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Get after Close = %v; want ErrClosed", err)
	}
	if _, err := a.Pick(ctx, "other_svc"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Pick after Close = %v; want ErrClosed", err)
	}
}
