package discovery_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// status returns how r's view shows an instance, or "absent".
func status(r *discovery.Registry, service, id string) string {
	svc, err := r.Get(context.Background(), service)
	if err != nil {
		return "absent"
	}
	if in := svc.Instance(id); in != nil {
		return in.Status.String()
	}
	return "absent"
}

// Once Drain has begun, every Registry's view shows the instance draining
// (and the others not), while Drain waits for the change to propagate;
// then the instance is gone everywhere.
func TestDrainShowsDrainingEverywhere(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k, discovery.WithClock(clock), discovery.WithReaper(0, 0))
			regs := []*discovery.Registry{w.registry(t), w.registry(t), w.registry(t)}
			g := mustRegister(t, regs[0], inst("db_svc", "10.0.0.1", 1))
			mustRegister(t, regs[1], inst("db_svc", "10.0.0.2", 2))
			for _, r := range regs {
				waitFor(t, 2*time.Second, "both instances", func() bool { return ids(r.Get(ctx, "db_svc")) == "10.0.0.1:1,10.0.0.2:2" })
			}
			if w.rdb != nil {
				waitFor(t, 2*time.Second, "every subscription", func() bool {
					n, err := w.rdb.PubSubNumSub(ctx, w.ns+":changes").Result()
					return err == nil && n[w.ns+":changes"] == 3
				})
			}
			done := make(chan error, 1)
			go func() { done <- g.Drain(ctx) }()
			var worst time.Duration
			for i, r := range regs {
				worst = max(worst, waitFor(t, 2*time.Second, "the draining mark", func() bool { return status(r, "db_svc", "10.0.0.1:1") == "draining" }))
				if s := status(r, "db_svc", "10.0.0.2:2"); s == "draining" || s == "absent" {
					t.Fatalf("Registry %d shows the other instance %s", i, s)
				}
			}
			t.Logf("every view showed the instance draining within %v of Drain's start (the propagation delay is %v)", worst, discovery.DefaultPropagationDelay)
			select {
			case err := <-done:
				t.Fatalf("Drain returned (%v) before the propagation delay passed", err)
			case <-time.After(20 * time.Millisecond):
			}
			clock.BlockUntilAt(t0.Add(discovery.DefaultPropagationDelay)) // Drain's wait
			clock.Advance(discovery.DefaultPropagationDelay)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for _, r := range regs {
				waitFor(t, 2*time.Second, "the deregistration", func() bool { return ids(r.Get(ctx, "db_svc")) == "10.0.0.2:2" })
			}
		})
	}
}

// drainWithoutFanOut registers db_svc's 10.0.0.1:1 on a (SQLite, no
// Redis), has b look it up, and starts its Drain, which it returns once
// Drain waits on the clock (the freshness window and the propagation delay)
// with the channel its result arrives on.
func drainWithoutFanOut(t *testing.T) (clock *discoverytest.Clock, a, b *discovery.Registry, done chan error) {
	t.Helper()
	clock = discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[1], discovery.WithClock(clock), discovery.WithReaper(0, 0)) // sqlite, no Redis
	a, b = w.registry(t), w.registry(t)
	g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	if s := status(b, "db_svc", "10.0.0.1:1"); s != "unknown" {
		t.Fatalf("b sees %s", s)
	}
	done = make(chan error, 1)
	go func() { done <- g.Drain(context.Background()) }()
	clock.BlockUntilAt(t0.Add(longestFresh + discovery.DefaultPropagationDelay)) // Drain's wait
	return clock, a, b, done
}

// Without Redis, other processes see the mark when their L1 entry stops
// being fresh; Drain waits the longest that can take (the freshness window
// and its jitter), plus the propagation delay.
func TestDrainWithoutFanOutWaitsFreshness(t *testing.T) {
	ctx := context.Background()
	clock, a, b, done := drainWithoutFanOut(t)
	clock.Advance(discovery.DefaultPropagationDelay)
	select {
	case err := <-done:
		t.Fatalf("Drain returned (%v) before b could have seen the mark", err)
	case <-time.After(20 * time.Millisecond):
	}
	clock.Advance(longestFresh - time.Millisecond)
	// b's entry is no longer fresh: one lookup serves it while it refreshes,
	// the next ones show the mark.
	waitFor(t, 10*time.Second, "b seeing the mark", func() bool { return status(b, "db_svc", "10.0.0.1:1") == "draining" })
	select {
	case err := <-done:
		t.Fatalf("Drain returned (%v) early", err)
	case <-time.After(20 * time.Millisecond):
	}
	clock.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if svc, err := a.Store().Load(ctx, "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Drain the store has %+v, %v", svc, err)
	}
}

// Without Redis the freshness window does not bound the picks of a process
// that looked the service up last before the mark: its first lookup after
// the window is answered from the entry it holds while that refreshes
// (stale-while-revalidate), so it may still pick the instance after Drain
// returned. Drain's documentation says so; with fan-out it cannot happen.
func TestDrainWithoutFanOutLeavesAStaleWhileRevalidatePick(t *testing.T) {
	ctx := context.Background()
	clock, _, b, done := drainWithoutFanOut(t)
	clock.Advance(longestFresh + discovery.DefaultPropagationDelay)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second) // b does not look db_svc up until well after Drain returned
	sel, err := b.Pick(ctx, "db_svc")
	if err != nil {
		t.Fatalf("Pick = %v; want the stale entry's instance", err)
	}
	sel.Done(nil)
	if sel.Instance.ID != "10.0.0.1:1" {
		t.Fatalf("Pick chose %s", sel.Instance.ID)
	}
	waitFor(t, 10*time.Second, "b's refresh", func() bool { return status(b, "db_svc", "10.0.0.1:1") == "absent" })
}

// With no other process listening there is nobody to wait for.
func TestDrainAloneDoesNotWait(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0) // never advanced: any wait would hang
			w := newWorld(t, k, discovery.WithClock(clock))
			r := w.registry(t)
			g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
			if w.rdb != nil {
				waitFor(t, 2*time.Second, "the subscription", func() bool {
					return subscribers(w.rdb, w.ns+":changes") == 1
				})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := g.Drain(ctx); err != nil || ctx.Err() != nil {
				t.Fatalf("Drain = %v (context %v)", err, ctx.Err())
			}
			if err := g.Drain(ctx); err != nil {
				t.Fatalf("Drain again = %v; want nil", err)
			}
		})
	}
}

// Drain's context bounds the wait: when it ends, the instance is
// deregistered at once.
func TestDrainContextEndsWait(t *testing.T) {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0) // never advanced
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock))
	discoverytest.NewRegistry(t, backend, discovery.WithClock(clock)) // a listener, so Drain waits
	g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := g.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if svc, err := backend.Load(context.Background(), "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Drain the store has %+v, %v", svc, err)
	}
}

// A context that has ended before Drain could mark the instance draining
// (a renewal held the registration, a shutdown deadline passed) deregisters
// it at once all the same, as when the context ends during the wait:
// Drain returned the context's error and left the instance registered,
// renewed and picked.
func TestDrainWithAnEndedContextDeregisters(t *testing.T) {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0) // never advanced
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock))
	discoverytest.NewRegistry(t, backend, discovery.WithClock(clock)) // a listener, so Drain would wait
	g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Drain(ctx); err != nil {
		t.Fatalf("Drain(an ended context) = %v; want the instance deregistered", err)
	}
	if svc, err := backend.Load(context.Background(), "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Drain the store has %+v, %v", svc, err)
	}
}

// Close drains by default: other processes see the instance draining before
// it is removed; WithCloseDrain(0) removes it at once. The drain waits the
// propagation delay, not the whole of its bound: with a bound of a minute
// ("long bound"), Close returns long before it.
func TestCloseDrainsFirst(t *testing.T) {
	drained := []string{"instance_updated 10.0.0.1:1 w=100 draining", "instance_removed 10.0.0.1:1 w=100 draining"}
	tests := []struct {
		name   string
		opts   []discovery.Option
		want   []string
		within time.Duration // how long Close may take, if that is checked
	}{
		{"default", nil, drained, 0},
		{"long bound", []discovery.Option{discovery.WithCloseDrain(time.Minute), discovery.WithCloseTimeout(5 * time.Minute)}, drained, 10 * time.Second},
		{"disabled", []discovery.Option{discovery.WithCloseDrain(0)}, []string{"instance_removed 10.0.0.1:1 w=100"}, 0},
	}
	for _, tt := range tests {
		for _, which := range []string{"Registry", "Registration"} {
			t.Run(tt.name+"/"+which, func(t *testing.T) {
				backend := discoverytest.NewBackend()
				b := discoverytest.NewRegistry(t, backend)
				a, err := discovery.New(append([]discovery.Option{discovery.WithStore(backend)}, tt.opts...)...)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
				ch := watch(t, b, "db_svc")
				next(t, ch, 2*time.Second) // the current state
				start := time.Now()
				if which == "Registry" {
					err = a.Close()
				} else {
					err = g.Close()
				}
				if err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				for _, want := range tt.want {
					if got := describe(next(t, ch, 2*time.Second)); got != want {
						t.Fatalf("event %q; want %q", got, want)
					}
				}
				quiet(t, ch, 50*time.Millisecond)
				// At least the propagation delay when it drains (the clock is
				// real); within tt.within, far short of the drain's bound.
				if len(tt.want) == 2 && took < discovery.DefaultPropagationDelay || tt.within > 0 && took >= tt.within {
					t.Fatalf("Close took %v; want the propagation delay (%v), and less than %v if set", took, discovery.DefaultPropagationDelay, tt.within)
				}
			})
		}
	}
}

// subscribers counts the clients subscribed to a channel, on every node of a
// cluster.
func subscribers(rdb redis.UniversalClient, channel string) int64 {
	ctx := context.Background()
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var total atomic.Int64
		_ = cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			n, err := node.PubSubNumSub(ctx, channel).Result()
			total.Add(n[channel])
			return err
		})
		return total.Load()
	}
	n, err := rdb.PubSubNumSub(ctx, channel).Result()
	if err != nil {
		return -1
	}
	return n[channel]
}

// An instance registered draining is stored draining: listed everywhere,
// never picked, until an Update brings it into selection. Register used to
// store it as unknown, so a standby took traffic at once.
func TestRegisterDrainingIsAStandby(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend)
	in := inst("db_svc", "10.0.0.1", 1)
	in.Status = discovery.StatusDraining
	g := mustRegister(t, r, in)
	if got := g.Instance().Status; got != discovery.StatusDraining {
		t.Fatalf("the Registration holds %v; want draining", got)
	}
	other := discoverytest.NewRegistry(t, backend)
	if got := status(other, "db_svc", "10.0.0.1:1"); got != "draining" {
		t.Fatalf("another Registry sees %s; want draining", got)
	}
	if _, err := other.Pick(ctx, "db_svc"); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick of a standby = %v; want ErrNoHealthyInstances", err)
	}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Status = discovery.StatusUnknown }); err != nil {
		t.Fatal(err)
	}
	sel, err := r.Pick(ctx, "db_svc")
	if err != nil || sel.Instance.ID != "10.0.0.1:1" {
		t.Fatalf("Pick after the Update = %+v, %v; want the instance", sel.Instance, err)
	}
	sel.Done(nil)
	// Statuses that are this process's view are still refused.
	in.Status = discovery.StatusHealthy
	if _, err := r.Register(ctx, in); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("Register(Status healthy) = %v; want ErrInvalid", err)
	}
}

// Deregister failed (the database was down): Drain, called once it is back,
// removes the instance as a second Deregister would. It returned nil and left
// the row (the registration looked gone), so the instance stayed listed until
// its lease ran out.
func TestDrainAfterAFailedDeregisterRemovesTheInstance(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	backend.SetFailure(errors.New("database down"))
	if err := g.Deregister(ctx); err == nil {
		t.Fatal("Deregister with the database down = nil; want an error")
	}
	backend.SetFailure(nil)
	if err := g.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if svc, err := backend.Load(ctx, "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Drain returned nil the store still has %d instance(s) (%v)", len(svc.Instances), err)
	}
}

// subscribeVia is a Redis client whose subscriptions go through another
// client (sub) and whose commands do not: the test breaks a process's
// subscription while its commands still reach Redis, as when the
// subscription's connection is lost and cannot be made again while the
// command connections still answer.
type subscribeVia struct {
	redis.UniversalClient
	sub redis.UniversalClient
}

func (c subscribeVia) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.sub.Subscribe(ctx, channels...)
}

// A process whose own subscription is down is not among the subscribers
// Redis counts: one subscriber is then another process, which has been sent
// the draining mark and uses the instance until it applies it. Drain took
// the one for itself and, "alone", deregistered at once.
func TestDrainWithItsSubscriptionDownWaitsForTheOthers(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, dbn, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	direct := testutil.RedisClient(t, addr, dbn, ns)
	viaProxy := testutil.RedisClient(t, proxy.Addr(), dbn, ns)
	db := testutil.SQLite(t)
	clock := discoverytest.NewClock(t0) // advanced only past Drain's wait
	newRegistry := func(rdb redis.UniversalClient) *discovery.Registry {
		r, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
			discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0), discovery.WithClock(clock))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	a := newRegistry(subscribeVia{direct, viaProxy})
	b := newRegistry(subscribeVia{direct, direct})
	channel := ns + ":changes"
	if dbn != 0 {
		channel = ns + ":" + strconv.Itoa(dbn) + ":changes"
	}
	waitFor(t, 2*time.Second, "both subscriptions", func() bool { return subscribers(direct, channel) == 2 })
	g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	waitFor(t, 2*time.Second, "b seeing the instance", func() bool { return status(b, "db_svc", "10.0.0.1:1") != "absent" })

	proxy.Down() // a's subscription only
	waitFor(t, 5*time.Second, "a's subscription lost", func() bool { return subscribers(direct, channel) == 1 })
	done := make(chan error, 1)
	go func() { done <- g.Drain(ctx) }()
	wait := t0.Add(discovery.DefaultPropagationDelay)
	waiting := make(chan struct{})
	go func() { clock.BlockUntilAt(wait); close(waiting) }()
	select {
	case err := <-done:
		release := clock.NewTimer(discovery.DefaultPropagationDelay) // BlockUntilAt's
		<-waiting
		release.Stop()
		t.Fatalf("Drain = %v without waiting, with b subscribed (a's own subscription down)", err)
	case <-waiting:
	}
	waitFor(t, 2*time.Second, "b seeing the mark", func() bool { return status(b, "db_svc", "10.0.0.1:1") == "draining" })
	clock.Advance(discovery.DefaultPropagationDelay)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the deregistration", func() bool { return status(b, "db_svc", "10.0.0.1:1") == "absent" })
}

// A standby (registered draining) has been out of selection everywhere
// since it was registered: draining it (Drain, or Close) waits only for what
// is left of the propagation bound since it was marked. Both waited the
// whole bound again (without Redis, the freshness window: Close spent its
// whole 1 s close drain on a mark written long before).
func TestDrainOfALongMarkedStandbyDoesNotWaitAgain(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[1]) // sqlite, no Redis: the bound is the freshness window (5.6 s)
	r, err := discovery.New(append(w.options, discovery.WithClock(clock), discovery.WithCloseDrain(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	standby := func(port int) *discovery.Registration {
		in := inst("db_svc", "10.0.0.1", port)
		in.Status = discovery.StatusDraining
		return mustRegister(t, r, in)
	}
	g := standby(1)
	standby(2)
	clock.Advance(6 * time.Second) // past the bound since both were marked
	const within = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if d := time.Since(start); d >= within {
		t.Fatalf("Drain of a standby marked 6 s ago took %v; want no wait (well within %v)", d, within)
	}
	start = time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if d := time.Since(start); d >= within {
		t.Fatalf("Close of a standby marked 6 s ago took %v; want no drain wait (well within %v)", d, within)
	}
}

// endsCallerOnDeregister ends the caller's context as its deregistration
// reaches the database, which then fails it if that context is the one
// the write runs under.
type endsCallerOnDeregister struct {
	*discoverytest.Backend
	cancel context.CancelFunc
}

func (s *endsCallerOnDeregister) Deregister(ctx context.Context, service, id string) (int64, error) {
	if s.cancel != nil {
		s.cancel()
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return s.Backend.Deregister(ctx, service, id)
}

// A context that ends while Drain's deregistration is on its way does not
// stop it, as one that ends during the wait does not: Drain returned the
// context's error and left the instance registered (draining) until Close
// or its lease's end, depending on when in Drain the context ended.
func TestDrainContextEndingDuringTheDeregistrationDeregisters(t *testing.T) {
	s := &endsCallerOnDeregister{Backend: discoverytest.NewBackend()}
	r := discoverytest.NewRegistry(t, s.Backend, discovery.WithStore(s))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.cancel = cancel
	if err := g.Drain(ctx); err != nil {
		t.Errorf("Drain = %v; want the instance deregistered", err)
	}
	if svc, err := s.Load(context.Background(), "db_svc"); err != nil || len(svc.Instances) != 0 {
		t.Fatalf("after Drain the store has %+v, %v", svc, err)
	}
}
