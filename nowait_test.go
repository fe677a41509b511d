package discovery_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// heldLoadsStore is a database whose loads stop answering (a black hole)
// while a gate is held: Load waits for it to open, or for its context.
type heldLoadsStore struct {
	*discoverytest.Backend
	gate atomic.Pointer[chan struct{}]
}

func (s *heldLoadsStore) hold() {
	g := make(chan struct{})
	s.gate.Store(&g)
}

func (s *heldLoadsStore) release() {
	if g := s.gate.Swap(nil); g != nil {
		close(*g)
	}
}

func (s *heldLoadsStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if g := s.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Backend.Load(ctx, name)
}

// pickNoWait returns Pick(NoWait)'s answer, failing t if it has not
// returned within 10 s (the loads here wait a minute).
func pickNoWait(t *testing.T, r *discovery.Registry, service, what string) (discovery.Selection, error) {
	t.Helper()
	type picked struct {
		sel discovery.Selection
		err error
	}
	done := make(chan picked, 1)
	go func() {
		sel, err := r.Pick(context.Background(), service, discovery.NoWait())
		done <- picked{sel, err}
	}()
	select {
	case p := <-done:
		if p.err == nil {
			p.sel.Done(nil)
		}
		return p.sel, p.err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Pick(NoWait) still waiting for the database after 10 s", what)
	}
	return discovery.Selection{}, nil
}

// A NoWait pick never waits for the database: it answers from what the
// Registry holds, stale as it is, for as long as a lookup would in an
// outage, and otherwise fails at once (ErrUnavailable) with a load started
// in the background, whose result the picks after it use.
func TestPickNoWaitNeverWaitsForTheDatabase(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	s := &heldLoadsStore{Backend: discoverytest.NewBackend()}
	r, err := discovery.New(discovery.WithStore(s), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	t.Cleanup(s.release) // first: the loads end, then Close
	register := func(port int) string {
		t.Helper()
		in := discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: port, Weight: 100, RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if _, err := s.Register(context.Background(), &in); err != nil {
			t.Fatal(err)
		}
		return in.ID
	}
	// until picks with NoWait until the Registry picks want, failing t
	// after 10 s: the load runs in the background.
	until := func(want, what string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if sel, err := pickNoWait(t, r, "db_svc", what); err == nil && sel.Instance.ID == want {
				return
			}
		}
		t.Fatalf("%s: in 10 s no NoWait pick chose %s", what, want)
	}
	a := register(1)

	s.hold()
	if _, err := pickNoWait(t, r, "db_svc", "nothing held"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("nothing held: Pick(NoWait) = %v; want an error matching ErrUnavailable", err)
	}
	s.release()
	until(a, "nothing held, then the database answered")

	s.hold()
	clock.Advance(time.Minute) // past the stale window (35 s), within stale-if-error (5 min)
	b := register(2)
	if sel, err := pickNoWait(t, r, "db_svc", "stale entry"); err != nil || sel.Instance.ID != a {
		t.Fatalf("stale entry: Pick(NoWait) = %v, %v; want %s, from the entry held", sel.Instance.ID, err, a)
	}
	s.release()
	until(b, "stale entry, then the database answered")

	s.hold()
	clock.Advance(10 * time.Minute) // past stale-if-error: nothing of use held
	if _, err := pickNoWait(t, r, "db_svc", "past stale-if-error"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("past stale-if-error: Pick(NoWait) = %v; want an error matching ErrUnavailable", err)
	}
	if _, err := pickNoWait(t, r, "db svc", "bad name"); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("bad name: Pick(NoWait) = %v; want an error matching ErrInvalid", err)
	}
	s.release()
	until(a, "past stale-if-error, then the database answered")
}

// A write of this process (here a Drain: the draining mark, then the
// deregistration) dropped its L1 snapshot of the service, and a NoWait
// pick (gRPC's picker's) then found nothing held: it failed with
// ErrUnavailable until a background load landed, and gRPC's picker went
// round-robin over every connected server, the draining one among them.
// Now the write leaves the snapshot it superseded, with the change this
// process made applied to it, to NoWait picks until the new one is in: they
// keep picking, and never the instance this process drained or
// deregistered. A lookup that waits still reads the database, as before.
func TestPickNoWaitAfterADrainHereKeepsPickingTheOthers(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	s := &heldLoadsStore{Backend: discoverytest.NewBackend()}
	opts := []discovery.Option{discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0),
		discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute)}
	r, err := discovery.New(append(opts, discovery.WithStore(s))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	t.Cleanup(s.release) // first: the loads end, then Close
	// Another process on the same database: Drain waits the propagation
	// delay (on the test's clock) between the mark and the deregistration.
	other, err := discovery.New(append(opts, discovery.WithStore(s.Backend))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	var regs []*discovery.Registration
	for port := 1; port <= 3; port++ {
		regs = append(regs, mustRegister(t, r, inst("db_svc", "10.0.0.1", port)))
	}
	if svc, err := r.Get(context.Background(), "db_svc"); err != nil || len(svc.Instances) != 3 {
		t.Fatalf("Get = %v, %v; want the 3 instances", svc, err)
	}
	drained := regs[0].Instance().ID
	// picks makes NoWait picks: each must choose one of the others.
	picks := func(what string) {
		t.Helper()
		for range 30 {
			sel, err := pickNoWait(t, r, "db_svc", what)
			if err != nil {
				t.Fatalf("%s: Pick(NoWait) = %v; want one of the two others, picked from what this process knows", what, err)
			}
			if sel.Instance.ID == drained {
				t.Fatalf("%s: Pick(NoWait) chose %s, which this process drained; want one of the two others", what, drained)
			}
		}
	}
	s.hold() // the database stops answering loads: no background load lands
	timers := clock.Timers()
	done := make(chan error, 1)
	go func() { done <- regs[0].Drain(context.Background()) }()
	// Drain sleeps the propagation delay on the test's clock once its mark
	// is written and made visible here.
	clock.BlockUntil(timers + 1)
	picks("marked draining, the database black-holed")
	clock.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("Drain = %v", err)
	}
	picks("drained and deregistered, the database black-holed")

	// A lookup that waits reads the database, as before the fix: not the
	// snapshot kept for NoWait picks.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if svc, err := r.Get(ctx, "db_svc"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with the database black-holed = %v, %v; want its deadline: it waits for the database, as before", svc, err)
	}
	s.release()
	if svc, err := r.Get(context.Background(), "db_svc"); err != nil || len(svc.Instances) != 2 || svc.Instance(drained) != nil {
		t.Fatalf("Get after the database answered = %v, %v; want the two others", svc, err)
	}
	picks("after the database answered")
}

// A configuration write of this process (UpdateConfig, RollbackConfig)
// left the snapshot it superseded to NoWait picks with the old
// configuration in it: they kept the old balancer strategy until a
// background load landed, for as long as the database took. The write's
// configuration is now applied to the kept snapshot, as an instance write
// is: NoWait picks follow the new strategy at once.
func TestPickNoWaitAfterAConfigWriteHereFollowsIt(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	s := &heldLoadsStore{Backend: discoverytest.NewBackend()}
	r, err := discovery.New(discovery.WithStore(s), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	t.Cleanup(s.release) // first: the loads end, then Close
	ctx := context.Background()
	if _, _, err := s.SetConfig(ctx, "db_svc", []byte(`{"balancer":{"strategy":"round_robin"}}`), t0, 20); err != nil {
		t.Fatal(err)
	}
	for port := 1; port <= 3; port++ {
		mustRegister(t, r, inst("db_svc", "10.0.0.1", port))
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 3 {
		t.Fatalf("Get = %v, %v; want the 3 instances", svc, err)
	}
	picks := func(want discovery.Strategy, what string) {
		t.Helper()
		for range 10 {
			sel, err := pickNoWait(t, r, "db_svc", what)
			if err != nil {
				t.Fatalf("%s: Pick(NoWait) = %v; want a pick from what this process holds", what, err)
			}
			if sel.Strategy != want {
				t.Fatalf("%s: Pick(NoWait) picked by %v; want %v", what, sel.Strategy, want)
			}
		}
	}
	picks(discovery.StrategyRoundRobin, "before the write")

	s.hold() // the database stops answering loads: no background load lands
	// The notifications list the instances with a load, which waits:
	// bounded here, the write is done by then.
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := r.UpdateConfig(wctx, "db_svc", []byte(`{"balancer":{"strategy":"consistent_hash"}}`)); err != nil {
		t.Fatalf("UpdateConfig = %v", err)
	}
	picks(discovery.StrategyConsistentHash, "strategy changed here, the database black-holed")

	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := r.RollbackConfig(rctx, "db_svc", 1); err != nil {
		t.Fatalf("RollbackConfig = %v", err)
	}
	picks(discovery.StrategyRoundRobin, "rolled back here, the database black-holed")

	s.release()
	if cfg, rev, err := r.Config(ctx, "db_svc"); err != nil || rev != 3 || !strings.Contains(string(cfg), "round_robin") {
		t.Fatalf("Config after the database answered = %s, %d, %v; want round_robin at config revision 3", cfg, rev, err)
	}
	picks(discovery.StrategyRoundRobin, "after the database answered")
}
