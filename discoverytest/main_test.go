package discoverytest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Several Registry values on one backend stand for several processes: each
// sees the others' changes at once.
func TestBackendSharedByRegistries(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	a := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	b := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	if _, err := b.Get(ctx, "db_svc"); err == nil {
		t.Fatal("found a service nobody registered")
	}
	g, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if svc, err := b.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 1 {
		t.Fatalf("b.Get = %v, %v; want a's instance at once", svc, err)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "db_svc"); err == nil {
		t.Fatal("b still sees a deregistered instance")
	}
	if n := backend.Loads(); n < 2 {
		t.Fatalf("Loads = %d", n)
	}
}

// The fake clock fires timers in order as it advances, and BlockUntil waits
// for the goroutines that sleep on it.
func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := discoverytest.NewClock(start)
	t1, t2 := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	c.BlockUntil(2)
	c.Advance(1500 * time.Millisecond)
	select {
	case at := <-t2.C():
		if !at.Equal(start.Add(time.Second)) {
			t.Fatalf("t2 fired at %v", at)
		}
	default:
		t.Fatal("t2 did not fire")
	}
	select {
	case <-t1.C():
		t.Fatal("t1 fired early")
	default:
	}
	if !t1.Stop() || c.Timers() != 0 {
		t.Fatal("Stop did not remove the timer")
	}
	if !c.Now().Equal(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("Now = %v", c.Now())
	}
}

// A user's own Store runs the module's conformance suite through
// StoreConformance: here the in-memory one behind a wrapper, as a user's
// store would be.
func TestStoreConformance(t *testing.T) {
	discoverytest.StoreConformance(t, func(*testing.T) discovery.Store { return userStore{discoverytest.NewBackend()} })
}

// userStore is a Store of a user's own: it embeds the in-memory backend.
type userStore struct{ *discoverytest.Backend }

// Close under a Clock the test does not move deregisters at once: the
// close drain waited for the propagation delay on that clock, which never
// came, until its real-time bound (1 s) ended it, in every test's cleanup.
func TestCloseUnderAStillClockDoesNotWaitForIt(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Now())
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	b := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if _, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// The bound the drain ran into is 1 s: half of it tells the two apart
	// on any machine.
	if d := time.Since(start); d >= 500*time.Millisecond {
		t.Fatalf("Close took %v with the clock standing still; want it to deregister at once", d)
	}
	if _, err := b.Get(ctx, "db_svc"); err == nil {
		t.Fatal("b still sees the instance a's Close deregistered")
	}
}

// README's recipe for keeping registrations alive across fake time: step
// the clock by the renewal interval and let the renewals each step fired
// finish before the next. Done with BlockUntil(n), n the timers counted
// after Register, it lost the lease within a few steps in most runs: the
// renewal goroutine had not set its first timer yet when n was counted
// (Timers was 0 to 2 where 3 were set at rest), so BlockUntil(n) returned
// before the renewal it was to wait for had run.
func TestLeaseKeptAliveStepByStep(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Now())
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock))
	b := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock))
	for i := range 20 {
		if _, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	for step := range 24 { // two minutes, eight lease TTLs
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntilHandled()
		if svc, err := b.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 20 {
			n := 0
			if svc != nil {
				n = len(svc.Instances)
			}
			t.Fatalf("after %v: b.Get has %d instances (%v); want the 20 a keeps renewing", time.Duration(step+1)*discovery.DefaultLeaseTTL/3, n, err)
		}
	}
}

// A registration's renewal timer is set when Register returns: a test that
// counts the clock's timers then (to BlockUntil them later) counts it.
func TestRegisterSetsItsRenewalTimerBeforeReturning(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(time.Now())
	a := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0))
	for i := range 20 {
		if _, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8000 + i}); err != nil {
			t.Fatal(err)
		}
		if n := clock.Timers(); n != i+1 {
			t.Fatalf("after %d Register calls the clock has %d timers; want one renewal timer each", i+1, n)
		}
	}
}

// Drain on a NewRegistry under a Clock the test does not move returns: the
// backend tells every Registry of the draining mark before the write
// returns, so there is no propagation to wait for. Drain waited the
// propagation delay on that clock, which never came, until ctx ended.
func TestDrainUnderAStillClockReturns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Now())
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	b := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	g, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	if err := g.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Drain returned only when its context ended: it waited on a clock nobody moves")
	}
	if _, err := b.Get(ctx, "db_svc"); err == nil {
		t.Fatal("b still sees the drained instance")
	}
}

// The Clock never goes backwards, as its documentation says of Advance and
// Set: a negative Advance moved it back, and with it every lease, timer
// and cache age the Registry computes from it.
func TestClockAdvanceNeverGoesBackwards(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := discoverytest.NewClock(start)
	c.Advance(-time.Minute)
	if !c.Now().Equal(start) {
		t.Fatalf("after Advance(-1m) Now = %v; want %v (never backwards)", c.Now(), start)
	}
	c.Set(start.Add(-time.Minute))
	if !c.Now().Equal(start) {
		t.Fatalf("after Set(start-1m) Now = %v; want %v", c.Now(), start)
	}
}

// fatalTB records the Fatalf NewRegistry calls and stops there, as
// testing's does (by a panic this test recovers).
type fatalTB struct {
	testing.TB
	msg string
}

type fatalStop struct{}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalStop{})
}

// A zero Backend (declared, not made with NewBackend) is refused with a
// message that says what to do: it panicked with a nil pointer inside
// discovery.New.
func TestNewRegistryRefusesAZeroBackend(t *testing.T) {
	tb := &fatalTB{TB: t}
	func() {
		defer func() {
			if p := recover(); p != nil {
				if _, ok := p.(fatalStop); !ok {
					t.Fatalf("NewRegistry with a zero Backend panicked: %v", p)
				}
			}
		}()
		var backend discoverytest.Backend
		discoverytest.NewRegistry(tb, &backend)
	}()
	if !strings.Contains(tb.msg, "NewBackend") {
		t.Fatalf("NewRegistry with a zero Backend: %q; want a failure that names NewBackend", tb.msg)
	}
}

// discovery.New refuses a zero Backend or Clock (declared, not made with
// NewBackend or NewClock) with an ErrInvalid error, as it refuses a zero
// gorm.DB: each panicked with a nil pointer inside New.
func TestNewRefusesZeroBackendAndClock(t *testing.T) {
	tests := []struct {
		name string
		opt  discovery.Option
		want string
	}{
		{"Backend", discovery.WithStore(&discoverytest.Backend{}), "NewBackend"},
		{"Clock", discovery.WithClock(&discoverytest.Clock{}), "NewClock"},
		{"a user's store around a zero Backend", discovery.WithStore(userStore{}), "WithStore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("New panicked: %v", p)
					}
				}()
				var r *discovery.Registry
				r, err = discovery.New(tt.opt, discovery.WithoutHealthChecks())
				if err == nil {
					r.Close()
				}
			}()
			if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v; want an ErrInvalid error naming %s", err, tt.want)
			}
		})
	}
}

// auth's constructors refuse a zero Clock as New does: a Verifier given
// one was made, and panicked with a nil pointer at its first request.
func TestAuthRefusesAZeroClock(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("NewVerifier panicked: %v", p)
			}
		}()
		_, err = auth.NewVerifier(r, "inventory", auth.WithIssuer("test"), auth.WithClock(&discoverytest.Clock{}))
	}()
	if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "NewClock") {
		t.Fatalf("NewVerifier with a zero Clock = %v; want an ErrInvalid error naming NewClock", err)
	}
}
