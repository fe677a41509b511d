package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// writeInstances writes instances straight to the store, as processes that
// registered and then stopped renewing would have left them.
// lapseRegistry returns a Registry on a fake clock at t0 and an in-memory
// backend, with no reaper and no health checks: what leases show is what
// the tests write into the backend.
func lapseRegistry(t *testing.T) (*discovery.Registry, *discoverytest.Clock, *discoverytest.Backend) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	return discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks()), clock, backend
}

func writeInstances(t *testing.T, s discovery.Store, service string, n int, expires func(i int) time.Time) {
	t.Helper()
	for i := 0; i < n; i++ {
		in := discovery.Instance{ID: fmt.Sprintf("i%02d", i), Service: service, Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			RegisteredAt: t0, ExpiresAt: expires(i)}
		if _, err := s.Register(context.Background(), &in); err != nil {
			t.Fatal(err)
		}
	}
}

func statuses(svc *discovery.Service, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	n := map[discovery.Status]int{}
	for _, in := range svc.Instances {
		n[in.Status]++
	}
	return fmt.Sprintf("%d instances, %d suspect", len(svc.Instances), n[discovery.StatusSuspect])
}

// More than 15% of a service's instances stopping to renew at the same
// moment (a partition, not a deploy) are kept visible as suspect for the
// grace period, logged once and counted; a single expiry is not affected.
func TestSelfPreservation(t *testing.T) {
	ttl := discovery.DefaultLeaseTTL
	grace := 2 * ttl
	tests := []struct {
		name        string
		expires     func(i int) time.Time // of 10 instances
		opts        []discovery.Option
		atExpiry    string
		afterGrace  string
		preserved   bool
		firstExpiry time.Duration
	}{
		{"3 of 10 together", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl + time.Duration(i)*time.Second) // within one renewal window
			}
			return t0.Add(time.Hour)
		}, nil, "10 instances, 3 suspect", "7 instances, 0 suspect", true, ttl + 2*time.Second},
		{"1 of 10 alone", func(i int) time.Time {
			if i == 0 {
				return t0.Add(ttl)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "9 instances, 0 suspect", false, ttl},
		{"1 of 10 then 1 more a minute later", func(i int) time.Time {
			switch i {
			case 0:
				return t0.Add(ttl)
			case 1:
				return t0.Add(ttl + time.Minute)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "8 instances, 0 suspect", false, ttl},
		{"3 of 10 spread over a minute", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl + time.Duration(i)*20*time.Second)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "7 instances, 0 suspect", false, ttl},
		{"3 of 10 together, turned off", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl)
			}
			return t0.Add(time.Hour)
		}, []discovery.Option{discovery.WithSelfPreservation(0, 0)}, "7 instances, 0 suspect", "7 instances, 0 suspect", false, ttl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			core, logs := observer.New(zap.InfoLevel)
			backend := discoverytest.NewBackend()
			r := discoverytest.NewRegistry(t, backend, append([]discovery.Option{discovery.WithClock(clock),
				discovery.WithLogger(zap.New(core)), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks()}, tt.opts...)...)
			writeInstances(t, backend, "db_svc", 10, tt.expires)
			if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 0 suspect" {
				t.Fatalf("before: %s", got)
			}
			clock.Set(t0.Add(tt.firstExpiry))
			if got := statuses(r.Get(ctx, "db_svc")); got != tt.atExpiry {
				t.Fatalf("just after the lapse: %s; want %s", got, tt.atExpiry)
			}
			st := r.Stats()
			if tt.preserved != (st.SelfPreservations == 1 && st.Suspects == 3) {
				t.Fatalf("stats %d episodes, %d suspects; preserved = %v", st.SelfPreservations, st.Suspects, tt.preserved)
			}
			clock.Set(t0.Add(2*time.Minute + grace))
			if got := statuses(r.Get(ctx, "db_svc")); got != tt.afterGrace {
				t.Fatalf("after the grace period: %s; want %s", got, tt.afterGrace)
			}
			warned := logs.FilterMessage("discovery: self-preservation: instances stopped renewing together; keeping them as suspect").Len()
			if tt.preserved && warned != 1 || !tt.preserved && warned != 0 {
				t.Fatalf("logged self-preservation %d times; preserved = %v", warned, tt.preserved)
			}
			if tt.preserved && logs.FilterMessage("discovery: self-preservation ended").Len() != 1 {
				t.Fatal("the end of self-preservation was not logged")
			}
		})
	}
}

// A database outage longer than the lease expires no instance: lookups
// answer from memory during it, and when it ends the lapsed leases are
// kept as suspects until their registrations renew (register again).
func TestNoInstanceExpiresBecauseOfADatabaseOutage(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	owner := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	for i := range 4 {
		mustRegister(t, owner, inst("db_svc", "10.0.0."+fmt.Sprint(i+1), 80))
	}
	reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	if got := ids(reader.Get(ctx, "db_svc")); strings.Count(got, ",") != 3 {
		t.Fatalf("before: %s", got)
	}
	backend.SetFailure(errors.New("connection refused"))
	for range 60 { // 30 s: twice the lease
		clock.BlockUntil(4) // the owner's keepalives
		clock.Advance(500 * time.Millisecond)
		if svc, err := reader.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 4 {
			t.Fatalf("at +%v during the outage: %s", clock.Now().Sub(t0), ids(svc, err))
		}
	}
	clock.BlockUntil(4) // every keepalive back asleep: none renews before the next step
	backend.SetFailure(nil)
	_ = reader.Invalidate(ctx, "db_svc")
	// The database is back; no renewal has landed yet: every lease has lapsed.
	if got := statuses(reader.Get(ctx, "db_svc")); got != "4 instances, 4 suspect" {
		t.Fatalf("right after the outage: %s; want all kept as suspect", got)
	}
	for range 20 { // the registrations retry and register again
		clock.BlockUntil(4)
		clock.Advance(500 * time.Millisecond)
		if svc, err := reader.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 4 {
			t.Fatalf("at +%v after the outage: %s", clock.Now().Sub(t0), ids(svc, err))
		}
	}
	waitFor(t, 2*time.Second, "every instance renewed", func() bool {
		return statuses(reader.Get(ctx, "db_svc")) == "4 instances, 0 suspect"
	})
}

// A partition stops a group's renewals at one moment, but their leases end
// over one renewal window (each was renewed at its own time): a lookup
// between two of those lapses must not keep the first ones and drop the
// rest.
func TestSelfPreservationTakesInLaterLapsesOfAGroup(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	// 6 of 10 partitioned at t0: their leases end over TTL/3 after t0+2TTL/3.
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		if i < 6 {
			return t0.Add(ttl*2/3 + time.Duration(i)*ttl/18)
		}
		return t0.Add(time.Hour)
	})
	// The first lapse alone is a single expiry; from the second on the
	// group is known, and all of it stays.
	second := ttl*2/3 + ttl/18
	for step := second; step <= ttl+ttl/2; step += ttl / 30 {
		clock.Set(t0.Add(step))
		_ = r.Invalidate(ctx, "db_svc") // look at the database at every step
		if got := statuses(r.Get(ctx, "db_svc")); !strings.HasPrefix(got, "10 instances") {
			t.Fatalf("at t0+%v: %s; want all 10 kept while their group lapses", step, got)
		}
	}
	if st := r.Stats(); st.SelfPreservations != 1 || st.Suspects != 6 {
		t.Fatalf("%d episodes, %d suspects; want 1 episode of 6", st.SelfPreservations, st.Suspects)
	}
}

// An outage of the database far longer than the lease and its suspect grace
// (30 s against a 3 s lease) drops no instance, even one alone in its
// service: its lease ended because it could not be renewed, which this
// process saw; it stays a suspect until its registration renews it.
func TestDatabaseOutageLongerThanGraceDropsNoInstance(t *testing.T) {
	ctx := context.Background()
	const ttl = 3 * time.Second
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	opts := []discovery.Option{discovery.WithClock(clock), discovery.WithLeaseTTL(ttl), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks()}
	owner := discoverytest.NewRegistry(t, backend, opts...)
	for i := range 3 {
		mustRegister(t, owner, inst("db_svc", "10.0.0."+fmt.Sprint(i+1), 80))
	}
	mustRegister(t, owner, inst("solo_svc", "10.0.1.1", 80))
	// The reader runs a reaper (its first run an hour away); see the end.
	reader := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithReaper(time.Hour, 2*time.Minute))...)
	check := func(when string) {
		t.Helper()
		if got := statuses(reader.Get(ctx, "db_svc")); !strings.HasPrefix(got, "3 instances") {
			t.Fatalf("%s: db_svc %s", when, got)
		}
		if got := statuses(reader.Get(ctx, "solo_svc")); !strings.HasPrefix(got, "1 instances") {
			t.Fatalf("%s: solo_svc %s", when, got)
		}
	}
	check("before")
	backend.SetFailure(errors.New("connection refused"))
	for range 60 { // 30 s
		clock.BlockUntil(5) // the owner's keepalives and the reader's reaper
		clock.Advance(500 * time.Millisecond)
		check(fmt.Sprintf("at +%v into the outage", clock.Now().Sub(t0)))
	}
	clock.BlockUntil(5) // every keepalive back asleep: none renews before the next step
	backend.SetFailure(nil)
	// Drop what the reader holds, so that it reads the database; a load
	// started during the outage may still be failing: read again then.
	for _, name := range []string{"db_svc", "solo_svc"} {
		waitFor(t, 2*time.Second, "a read from the database", func() bool {
			_ = reader.Invalidate(ctx, name)
			res, err := reader.Lookup(ctx, name)
			return err == nil && res.Layer == discovery.LayerL3
		})
	}
	if got := statuses(reader.Get(ctx, "db_svc")); got != "3 instances, 3 suspect" {
		t.Fatalf("right after the outage: %s; want all kept as suspect", got)
	}
	check("right after the outage")
	for range 20 {
		clock.BlockUntil(5)
		clock.Advance(500 * time.Millisecond)
		check(fmt.Sprintf("at +%v after the outage", clock.Now().Sub(t0)))
	}
	waitFor(t, 2*time.Second, "every instance renewed", func() bool {
		_ = reader.Invalidate(ctx, "db_svc")
		return statuses(reader.Get(ctx, "db_svc")) == "3 instances, 0 suspect"
	})
	// The reaper of a process that saw the outage spares the rows whose
	// leases ended during it until its delay has passed after it.
	now := clock.Now()
	if cut := discovery.ReapBefore(reader, now); !cut.Before(t0.Add(time.Second)) {
		t.Fatalf("reaper cutoff %v after the outage; want before it began (%v)", cut.Sub(t0), time.Second)
	}
	if cut := discovery.ReapBefore(reader, now.Add(time.Hour)); !cut.Equal(now.Add(time.Hour - 2*time.Minute)) {
		t.Fatalf("reaper cutoff an hour later = %v; want the usual delay", cut)
	}
}

// A database that comes back and fails again within the grace (or a call
// that failed before it came back and ended after) is one outage: the
// leases that ended in its first part stay held.
func TestFlappingDatabaseIsOneOutage(t *testing.T) {
	const ttl = 3 * time.Second
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(ttl),
		discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	down := &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("connection refused")}
	discovery.NoteStore(r, nil)
	exp := t0.Add(2 * time.Second) // a lease that ends during the outage
	clock.Set(t0.Add(time.Second))
	discovery.NoteStore(r, down)
	clock.Set(t0.Add(30 * time.Second))
	discovery.NoteStore(r, nil)
	if !discovery.HeldByOutage(r, exp, clock.Now()) {
		t.Fatal("a lease that ended during the outage is not held when it ends")
	}
	clock.Set(t0.Add(31 * time.Second))
	discovery.NoteStore(r, down) // flaps
	clock.Set(t0.Add(32 * time.Second))
	discovery.NoteStore(r, nil)
	if !discovery.HeldByOutage(r, exp, clock.Now()) {
		t.Fatal("after the database flapped, a lease that ended in the first part of the outage is no longer held")
	}
	if discovery.HeldByOutage(r, exp, t0.Add(32*time.Second+2*ttl)) {
		t.Fatal("still held past the grace after the outage")
	}
	if discovery.HeldByOutage(r, t0.Add(-time.Minute), clock.Now()) {
		t.Fatal("a lease that ended before the outage is held")
	}
}

// A database that fails now and then (one call in 20 s, every other call
// answering) is not one endless outage: an instance that died while the
// database answered is dropped, and its row reaped, as usual. Each failure
// came within the grace of the last one and joined it, so the outage
// reached back to the first failure for as long as failures kept coming:
// every instance that died since stayed listed as a suspect, and the
// reaper deleted nothing.
func TestOccasionalDatabaseFailuresHoldNoDeadInstance(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock),
		discovery.WithReaper(0, discovery.DefaultReapAfter), discovery.WithoutHealthChecks())
	down := &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("timeout")}
	discovery.NoteStore(r, nil)
	died := t0.Add(time.Minute) // its lease ended with the database answering
	for range 180 {             // an hour
		clock.Advance(20 * time.Second)
		discovery.NoteStore(r, down)
		clock.Advance(100 * time.Millisecond)
		discovery.NoteStore(r, nil)
	}
	now := clock.Now()
	if discovery.HeldByOutage(r, died, now) {
		t.Errorf("an instance that died %v ago, the database answering, is still held as a suspect", now.Sub(died))
	}
	if cut, want := discovery.ReapBefore(r, now), now.Add(-discovery.DefaultReapAfter-time.Minute); cut.Before(want) {
		t.Errorf("reaper cutoff %v after t0; want at least %v (no row reaped since the first failure)", cut.Sub(t0), want.Sub(t0))
	}
}

// pausingClock pauses the first read of the time made inside noteStoreErr
// (once armed) until resumed: a failed call recording its outage while
// another call answers.
type pausingClock struct {
	*discoverytest.Clock
	armed  atomic.Bool
	paused chan struct{}
	resume chan struct{}
}

func (c *pausingClock) Now() time.Time {
	if c.armed.Load() {
		pc := make([]uintptr, 16)
		frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
		for more := true; more; {
			var f runtime.Frame
			f, more = frames.Next()
			if strings.HasSuffix(f.Function, ".noteStoreErr") && c.armed.CompareAndSwap(true, false) {
				close(c.paused)
				<-c.resume
				break
			}
		}
	}
	return c.Clock.Now()
}

// A database call that answers while a failed one is recording the outage
// does not leave an outage that never ends: once the database has answered
// again, a lease that ends later is not held, and the reaper deletes as
// usual.
func TestRacingStoreOutcomesLeaveNoEndlessOutage(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := &pausingClock{Clock: discoverytest.NewClock(t0), paused: make(chan struct{}), resume: make(chan struct{})}
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0), discovery.WithReaper(0, discovery.DefaultReapAfter))
	discovery.NoteStore(r, nil)

	unavailable := &discovery.BackendError{Backend: "database", Op: "load", Err: discovery.ErrUnavailable}
	clock.armed.Store(true)
	failed := make(chan struct{})
	go func() { discovery.NoteStore(r, unavailable); close(failed) }() // a call that failed...
	<-clock.paused
	discovery.NoteStore(r, nil) // ...while another answered
	close(clock.resume)
	<-failed
	discovery.NoteStore(r, nil) // and the next one answers too

	clock.Advance(10 * time.Minute)
	now := clock.Now()
	dead := discovery.Instance{ID: "d1", Service: "db_svc", Host: "10.0.0.9", Port: 9, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(6 * time.Minute)}
	live := discovery.Instance{ID: "l1", Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: 1, RegisteredAt: now, ExpiresAt: now.Add(time.Hour)}
	for _, in := range []discovery.Instance{dead, live} {
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	if discovery.HeldByOutage(r, dead.ExpiresAt, now) {
		t.Error("a lease that ended 6 min after the database answered again is held by the outage")
	}
	if got := ids(r.Get(ctx, "db_svc")); got != "l1" {
		t.Errorf("Get = %s; want only the live instance", got)
	}
	if cut, want := discovery.ReapBefore(r, now), now.Add(-discovery.DefaultReapAfter); !cut.Equal(want) {
		t.Errorf("reaper cutoff %v; want %v (no outage in the last reapAfter)", cut, want)
	}
}

// Stats().Suspects and the discovery_instances gauge count the instances
// kept as suspects now, not when the view was last built: once the grace
// ends, a service nobody looks up any more reported its suspects for as
// long as it stayed in L1.
func TestSuspectsEndWithTheirGraceWithoutALookup(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0),
		discovery.WithoutHealthChecks(), discovery.WithMetrics(reg))
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		if i < 3 {
			return t0.Add(ttl + time.Duration(i)*time.Second)
		}
		return t0.Add(time.Hour)
	})
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(ttl + 2*time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 3 suspect" {
		t.Fatalf("just after the lapse: %s", got)
	}
	if n := r.Stats().Suspects; n != 3 {
		t.Fatalf("Suspects = %d during the grace; want 3", n)
	}
	if n := scrape(t, reg)["discovery_instances{service=db_svc,status=suspect}"]; n != 3 {
		t.Fatalf("suspect gauge = %v during the grace; want 3", n)
	}
	clock.Set(t0.Add(ttl + 2*time.Second + 2*ttl + time.Second)) // the grace is over; no lookup since
	if n := r.Stats().Suspects; n != 0 {
		t.Fatalf("Suspects = %d after the grace; want 0", n)
	}
	if n := scrape(t, reg)["discovery_instances{service=db_svc,status=suspect}"]; n != 0 {
		t.Fatalf("suspect gauge = %v after the grace; want 0", n)
	}
	if got := statuses(r.Get(ctx, "db_svc")); got != "7 instances, 0 suspect" {
		t.Fatalf("after the grace: %s", got)
	}
}

// suspectIDs returns the IDs a lookup shows as suspect, or the error text.
func suspectIDs(svc *discovery.Service, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, in := range svc.Instances {
		if in.Status == discovery.StatusSuspect {
			out = append(out, in.ID)
		}
	}
	return strings.Join(out, ",")
}

// A group that lapses together is judged against the instances live when
// it began. Of 20 instances, 3 lapsing together are not more than 15%: they
// are dropped. When 3 more lapse together 20 s later (3 of the 17 left),
// those are kept; the first 3 stay dropped. Judged against the instances
// live at the second lapse, the first group qualified then too, and, the
// larger or earlier one winning, came back as suspects 20 s after they had
// disappeared, while the group that had just lapsed was dropped (and came
// back itself once the first group's grace ended).
func TestSelfPreservationJudgesAGroupWhenItLapsed(t *testing.T) {
	ttl := discovery.DefaultLeaseTTL
	twoLapses(t, 3, []lapseStep{
		{ttl + time.Second, "17 instances, 0 suspect", ""},
		{ttl + 21*time.Second, "17 instances, 3 suspect", "i03,i04,i05"},
		{ttl + 31*time.Second, "17 instances, 3 suspect", "i03,i04,i05"},
		{ttl + 51*time.Second, "14 instances, 0 suspect", ""},
	})
}

// A second group lapsing together while a first is kept (a second
// partition, 20 s after the first) is kept too, each for the grace after
// its own lapse. It was dropped while the first group's episode lasted, and
// came back as suspects once that had ended: 16 instances at 36 s, then
// the second group back at 46 s.
func TestSelfPreservationKeepsALaterGroupOfItsOwn(t *testing.T) {
	ttl := discovery.DefaultLeaseTTL
	twoLapses(t, 4, []lapseStep{
		{ttl + time.Second, "20 instances, 4 suspect", "i00,i01,i02,i03"},
		{ttl + 21*time.Second, "20 instances, 8 suspect", "i00,i01,i02,i03,i04,i05,i06,i07"},
		{ttl + 31*time.Second, "16 instances, 4 suspect", "i04,i05,i06,i07"}, // the first group's grace has ended
		{ttl + 51*time.Second, "12 instances, 0 suspect", ""},
	})
}

// lapseStep is what Get and Stats show at a time after t0.
type lapseStep struct {
	at       time.Duration
	statuses string
	suspects string
}

// twoLapses writes 20 instances of which the first group lapse together
// at one lease TTL and the next group 20 s later (the rest live for an
// hour), and checks each step.
func twoLapses(t *testing.T, group int, steps []lapseStep) {
	t.Helper()
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	writeInstances(t, backend, "db_svc", 20, func(i int) time.Time {
		switch {
		case i < group:
			return t0.Add(ttl)
		case i < 2*group:
			return t0.Add(ttl + 20*time.Second)
		}
		return t0.Add(time.Hour)
	})
	for _, tt := range steps {
		clock.Set(t0.Add(tt.at))
		svc, err := r.Get(ctx, "db_svc")
		if got, sus := statuses(svc, err), suspectIDs(svc, err); got != tt.statuses || sus != tt.suspects {
			t.Fatalf("at %v: %s, suspect [%s]; want %s, suspect [%s]", tt.at, got, sus, tt.statuses, tt.suspects)
		}
		if st := r.Stats(); st.Suspects != int64(strings.Count(tt.suspects, "i0")) {
			t.Fatalf("at %v: Stats().Suspects = %d; want %d", tt.at, st.Suspects, strings.Count(tt.suspects, "i0"))
		}
	}
}

// outageOverSoloLease takes the database out for 20 s from 1 s before now,
// across the end of solo_svc's lease (t0+10s), brings it back and checks
// that reader, which saw the outage, keeps the lapsed instance as a suspect.
func outageOverSoloLease(t *testing.T, reader *discovery.Registry, backend *discoverytest.Backend, clock *discoverytest.Clock) {
	t.Helper()
	ctx := context.Background()
	backend.SetFailure(errors.New("connection refused"))
	clock.Advance(time.Second)
	if _, err := reader.Get(ctx, "other_svc"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get during the outage = %v; want ErrUnavailable", err)
	}
	clock.Advance(19 * time.Second) // the lease ended 10 s into the outage
	backend.SetFailure(nil)
	_ = reader.Invalidate(ctx, "solo_svc")
	if got := statuses(reader.Get(ctx, "solo_svc")); got != "1 instances, 1 suspect" {
		t.Fatalf("right after the outage: %s; want the lapsed instance kept as suspect", got)
	}
}

// README: a lease that ended while this process could not reach the
// database is kept as a suspect until two lease TTLs after the database
// answers again, separately from self-preservation. Turning
// self-preservation off (WithSelfPreservation(0, 0)) or giving it a short
// grace must not take that away: the instance vanished the moment the
// database came back, before its registration could renew.
func TestDatabaseOutageHoldOutlastsAShortSelfPreservationGrace(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprint("grace=", grace), func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			backend := discoverytest.NewBackend()
			reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0),
				discovery.WithoutHealthChecks(), discovery.WithSelfPreservation(0, grace))
			writeInstances(t, backend, "solo_svc", 1, func(int) time.Time { return t0.Add(10 * time.Second) })
			if got := statuses(reader.Get(ctx, "solo_svc")); got != "1 instances, 0 suspect" {
				t.Fatalf("before: %s", got)
			}
			outageOverSoloLease(t, reader, backend, clock)
			clock.Advance(2*discovery.DefaultLeaseTTL - time.Second)
			_ = reader.Invalidate(ctx, "solo_svc")
			if got := statuses(reader.Get(ctx, "solo_svc")); got != "1 instances, 1 suspect" {
				t.Fatalf("just under two lease TTLs after the outage: %s; want it still kept", got)
			}
			clock.Advance(2 * time.Second)
			_ = reader.Invalidate(ctx, "solo_svc")
			if _, err := reader.Get(ctx, "solo_svc"); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("two lease TTLs after the outage: Get = %v; want ErrNotFound", err)
			}
		})
	}
}

// The reaper of a process that saw a database outage spares the rows whose
// leases ended during it for as long as that process holds them as
// suspects: with a reap delay shorter than two lease TTLs (allowed with a
// short self-preservation grace), it deleted a held row, and the instance
// vanished before the hold README promises had ended.
func TestReaperSparesRowsHeldAfterAnOutage(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(time.Hour, 20*time.Second), discovery.WithSelfPreservation(0.15, 10*time.Second))
	writeInstances(t, backend, "solo_svc", 1, func(int) time.Time { return t0.Add(10 * time.Second) })
	if _, err := reader.Get(ctx, "solo_svc"); err != nil {
		t.Fatal(err)
	}
	outageOverSoloLease(t, reader, backend, clock)
	back := clock.Now()
	held := back.Add(2*discovery.DefaultLeaseTTL - time.Second) // still held: two lease TTLs after the return
	if cut := discovery.ReapBefore(reader, held); cut.After(t0.Add(10 * time.Second)) {
		t.Fatalf("reaper cutoff %v after the outage's end = %v after t0: it deletes the row of an instance still held as suspect (lease ended at +10s)",
			held.Sub(back), cut.Sub(t0))
	}
}

// A group is the lapses within one renewal window of each other; lapses
// one by one after it, each within a window of the one before (a rolling
// restart that kills its pods, a crash loop), are single expiries, not
// the group's. Taken in as the group's, each moved the group's last lapse,
// and so its grace, forward: the group's dead instances were kept as
// suspects for as long as the lapses kept coming, and every single expiry
// was kept with them.
func TestSelfPreservationGroupDoesNotGrowByLaterSingleLapses(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	// 40 instances: 7 (17.5%) lapse together at one TTL, then 10 one by
	// one every 6 s from 6 s after them; the rest live for an hour.
	const group, singles = 7, 10
	every := 6 * time.Second
	writeInstances(t, backend, "db_svc", 40, func(i int) time.Time {
		switch {
		case i < group:
			return t0.Add(ttl)
		case i < group+singles:
			return t0.Add(ttl + time.Duration(i-group+1)*every)
		}
		return t0.Add(time.Hour)
	})
	grace := 2 * ttl
	steps := []lapseStep{
		// The group and the lapse 6 s after it (within one renewal
		// window of the group's first) are kept; the later ones are not.
		{ttl + grace + time.Second, "36 instances, 8 suspect", "i00,i01,i02,i03,i04,i05,i06,i07"},
		// The group's grace has ended: 13 lapsed, none kept.
		{ttl + grace + 10*time.Second, "27 instances, 0 suspect", ""},
	}
	// Looked up every second, as a service in use is.
	for at, next := ttl, 0; next < len(steps); at += time.Second {
		clock.Set(t0.Add(at))
		_ = r.Invalidate(ctx, "db_svc")
		svc, err := r.Get(ctx, "db_svc")
		if tt := steps[next]; at == tt.at {
			next++
			if got, sus := statuses(svc, err), suspectIDs(svc, err); got != tt.statuses || sus != tt.suspects {
				t.Fatalf("at t0+%v: %s, suspect [%s]; want %s, suspect [%s]", tt.at, got, sus, tt.statuses, tt.suspects)
			}
		}
	}
}

// A lease that ended during a database outage is held as a suspect, but
// that is not self-preservation: one instance alone, with self-preservation
// turned off, was logged as "instances stopped renewing together" and
// counted as an episode (Stats().SelfPreservations) with a grace of 0.
func TestDatabaseOutageHoldIsNotSelfPreservation(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	clock := discoverytest.NewClock(t0)
	core, logs := observer.New(zap.InfoLevel)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLogger(zap.New(core)),
		discovery.WithReaper(0, 0), discovery.WithoutHealthChecks(), discovery.WithSelfPreservation(0, 0))
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		if i == 0 {
			return t0.Add(ttl)
		}
		return t0.Add(time.Hour)
	})
	if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 0 suspect" {
		t.Fatalf("before: %s", got)
	}
	backend.SetFailure(errors.New("connection refused"))
	clock.Set(t0.Add(ttl + time.Second))
	_, _ = r.Get(ctx, "db_svc") // served from memory; the outage is noted
	backend.SetFailure(nil)
	_ = r.Invalidate(ctx, "db_svc")
	if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 1 suspect" {
		t.Fatalf("after the outage: %s; want the lease that ended during it held", got)
	}
	if st := r.Stats(); st.SelfPreservations != 0 || st.Suspects != 1 {
		t.Errorf("stats: %d self-preservation episodes, %d suspects; want 0 episodes (turned off), 1 suspect", st.SelfPreservations, st.Suspects)
	}
	if n := logs.FilterMessage("discovery: self-preservation: instances stopped renewing together; keeping them as suspect").Len(); n != 0 {
		t.Errorf("logged self-preservation %d times for one lease held by a database outage, self-preservation off; want 0", n)
	}
}

// A second episode of self-preservation, in a service not looked up between
// the end of the first one's grace and the second group's lapse, is logged
// and counted as one: the end of the first was noted only by a lookup, so
// the service still counted as preserving when the second group came, and
// Stats().SelfPreservations said 1 for two partitions minutes apart.
func TestSelfPreservationEpisodesApartAreEachLoggedAndCounted(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	clock := discoverytest.NewClock(t0)
	core, logs := observer.New(zap.InfoLevel)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLogger(zap.New(core)),
		discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	second := 5 * time.Minute
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		switch {
		case i < 3:
			return t0.Add(ttl + time.Duration(i)*time.Second)
		case i < 6:
			return t0.Add(second + time.Duration(i)*time.Second)
		}
		return t0.Add(time.Hour)
	})
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0.Add(ttl + 3*time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 3 suspect" {
		t.Fatalf("after the first group's lapse: %s", got)
	}
	clock.Set(t0.Add(second + 6*time.Second)) // no lookup in between
	if got := statuses(r.Get(ctx, "db_svc")); got != "7 instances, 3 suspect" {
		t.Fatalf("after the second group's lapse: %s", got)
	}
	warned := logs.FilterMessage("discovery: self-preservation: instances stopped renewing together; keeping them as suspect").Len()
	ended := logs.FilterMessage("discovery: self-preservation ended").Len()
	if st := r.Stats(); st.SelfPreservations != 2 || warned != 2 || ended != 1 {
		t.Fatalf("two episodes 4.5 min apart: counted %d, logged %d starts and %d ends; want 2, 2, 1", st.SelfPreservations, warned, ended)
	}
}

// WithSelfPreservation's error says which of its two arguments is wrong,
// with its value: a negative grace was reported with the (valid) fraction
// as the value, under a reason naming both bounds.
func TestSelfPreservationErrorNamesTheWrongArgument(t *testing.T) {
	tests := []struct {
		name     string
		opt      discovery.Option
		want     []string
		unwanted string
	}{
		{"negative grace", discovery.WithSelfPreservation(0.15, -time.Second), []string{"WithSelfPreservation", "-1s", "grace"}, "fraction"},
		{"fraction of 1", discovery.WithSelfPreservation(1, time.Minute), []string{"WithSelfPreservation", "1", "fraction"}, "grace"},
		{"negative fraction", discovery.WithSelfPreservation(-0.1, time.Minute), []string{"WithSelfPreservation", "-0.1", "fraction"}, "grace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := discovery.New(tt.opt)
			if r != nil {
				_ = r.Close()
			}
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) {
				t.Fatalf("New = %v; want a ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: %v; want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tt.unwanted) {
				t.Errorf("New: %v; want no word of the %s, which is valid", err, tt.unwanted)
			}
		})
	}
}

// An outage holds the leases that ended while the database could not be
// reached, not those that ended after it answered again: an instance
// renewed after the outage and then dead (its process crashed) is dropped
// when its lease ends, as any other. Held until the outage's grace ended,
// it stayed listed as a suspect, and picked, for up to two lease TTLs
// after the database came back.
func TestDatabaseOutageHoldsNoLeaseEndedLongAfterIt(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	down := &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("connection refused")}
	discovery.NoteStore(r, nil)
	clock.Set(t0.Add(time.Second))
	discovery.NoteStore(r, down)
	back := t0.Add(10 * time.Second)
	clock.Set(back)
	discovery.NoteStore(r, nil)
	// "crashed" renewed a second after the database came back, then died;
	// "live" renews on.
	crashed := back.Add(time.Second + ttl)
	writeInstances(t, backend, "db_svc", 2, func(i int) time.Time {
		if i == 0 {
			return crashed
		}
		return t0.Add(time.Hour)
	})
	clock.Set(crashed.Add(time.Second))
	if discovery.HeldByOutage(r, crashed, clock.Now()) {
		t.Errorf("a lease that ended %v after the database answered again is held by the outage", crashed.Sub(back))
	}
	_ = r.Invalidate(ctx, "db_svc")
	if got := ids(r.Get(ctx, "db_svc")); got != "i01" {
		t.Errorf("Get = %s; want only the live instance", got)
	}
	// A lease that ended during the outage is held still, and so is one
	// that ended as the database came back, before its registration, still
	// backing off, could renew it.
	if !discovery.HeldByOutage(r, back.Add(-time.Second), clock.Now()) {
		t.Error("a lease that ended during the outage is not held")
	}
	if !discovery.HeldByOutage(r, back.Add(time.Second), back.Add(2*time.Second)) {
		t.Error("a lease that ended a second after the database came back is not held")
	}
}

// The reaper's default delay keeps the rows of a self-preservation group
// until the group's grace has ended: it counts from the group's last lapse,
// up to a renewal window after its first. With a lease of a minute or more
// the default delay (two lease TTLs) was the grace itself, and the reaper
// deleted the first lapses of a group, partitioned and alive, up to half a
// lease TTL before the grace promised for them ended.
func TestReaperDefaultKeepsASelfPreservedGroupThroughItsGrace(t *testing.T) {
	const ttl = time.Minute
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	// The default reaper (its own rounds, on the fake clock, cut as the
	// test's do).
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLeaseTTL(ttl), discovery.WithoutHealthChecks())
	keepsGroupThroughGrace(t, r, clock, backend, ttl)
}

// keepsGroupThroughGrace partitions 4 of a service's 10 instances, their
// leases ending over 25 s from t0+ttl, and reaps as r's reaper would every
// 5 s: every instance must stay listed until the grace (two lease TTLs)
// after the group's last lapse.
func keepsGroupThroughGrace(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock, backend *discoverytest.Backend, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	first := t0.Add(ttl)
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		if i < 4 {
			return first.Add(time.Duration(i) * 25 * time.Second / 3)
		}
		return t0.Add(time.Hour)
	})
	last := first.Add(25 * time.Second)
	for step := first.Add(time.Second); step.Before(last.Add(2 * ttl)); step = step.Add(5 * time.Second) {
		clock.Set(step)
		if _, err := backend.Reap(ctx, discovery.ReapBefore(r, step)); err != nil {
			t.Fatal(err)
		}
		_ = r.Invalidate(ctx, "db_svc")
		if step.After(last) && !strings.HasPrefix(statuses(r.Get(ctx, "db_svc")), "10 instances") {
			t.Fatalf("at %v after the group's last lapse (grace %v): %s; want all 10 kept",
				step.Sub(last), 2*ttl, statuses(r.Get(ctx, "db_svc")))
		}
	}
}

// A reaper delay given with WithReaper was taken as given if it was at
// least the self-preservation grace: with the grace itself (or anything
// under the grace and half a lease TTL), the reaper deleted the first
// lapses of a group, partitioned and alive, before the grace, which counts
// from the group's last lapse, had ended. Every delay New accepts keeps
// the group through its grace; shorter ones are refused, naming the
// option given.
func TestReaperDelayGivenKeepsASelfPreservedGroupThroughItsGrace(t *testing.T) {
	const ttl = time.Minute
	grace := 2 * ttl
	tests := []struct {
		name  string
		opts  []discovery.Option
		after time.Duration
		field string // the option a refusal names; "" if New must accept it
	}{
		{"the default grace", nil, grace, "option WithReaper"},
		{"the default grace and a quarter TTL", nil, grace + ttl/4, "option WithReaper"},
		{"the default grace and half a TTL", nil, grace + ttl/2, ""},
		{"a grace given, and that grace", []discovery.Option{discovery.WithSelfPreservation(0.15, grace)}, grace, "option WithSelfPreservation"},
		{"a grace given, and half a TTL more", []discovery.Option{discovery.WithSelfPreservation(0.15, grace)}, grace + ttl/2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			backend := discoverytest.NewBackend()
			opts := append([]discovery.Option{discovery.WithStore(backend), discovery.WithClock(clock), discovery.WithLeaseTTL(ttl),
				discovery.WithoutHealthChecks(), discovery.WithReaper(time.Hour, tt.after)}, tt.opts...)
			r, err := discovery.New(opts...)
			var ve *discovery.ValidationError
			switch {
			case tt.field != "" && err == nil:
				_ = r.Close()
				t.Fatalf("New(WithReaper(1h, %v)) with a grace of %v accepted; want it refused: its reaper deletes a self-preserved group's rows before its grace ends", tt.after, grace)
			case tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field):
				t.Fatalf("New(WithReaper(1h, %v)) = %v; want a ValidationError on %s", tt.after, err, tt.field)
			case tt.field != "":
				return
			case err != nil:
				t.Fatalf("New(WithReaper(1h, %v)) = %v; want it accepted", tt.after, err)
			}
			t.Cleanup(func() { _ = r.Close() })
			keepsGroupThroughGrace(t, r, clock, backend, ttl)
		})
	}
}

// A process whose lookups Redis answers, with no registration to renew and
// its reaper off (a client of the services, nothing more), made no call to
// the database once it had seen it fail: it never learnt the outage had
// ended. The outage stayed open in it, and every lease that ended since
// it began was held as a suspect for good (listed, and picked, long after
// the processes that reached the database had dropped it), where the hold
// ends two lease TTLs after the database is back. A lookup that Redis
// answers while the database is known down now asks the database, in the
// background, at most once a second, whether it is back.
func TestReaderOnRedisNoticesTheDatabaseBack(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	opts := []discovery.Option{discovery.WithClock(clock), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
		discovery.WithReaper(0, 0), discovery.WithoutHealthChecks()}
	// i00's process dies 10 s in, during the outage; the others live on.
	writeInstances(t, backend, "db_svc", 4, func(i int) time.Time {
		if i == 0 {
			return t0.Add(10 * time.Second)
		}
		return t0.Add(time.Hour)
	})
	// Another process, which reaches the database: each of its lookups of
	// a service it does not hold loads it and writes it to Redis.
	loadIntoRedis := func() {
		t.Helper()
		other := discoverytest.NewRegistry(t, backend, opts...)
		if _, err := other.Get(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the snapshot written to Redis", func() bool { return other.Stats().L2Writes > 0 })
		_ = other.Close()
	}
	core, logs := observer.New(zap.InfoLevel)
	// No stale answers past the freshness window: each lookup after it
	// reads Redis (or the database) at once, not in the background.
	reader := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithLogger(zap.New(core)),
		discovery.WithCacheFreshness(time.Second, 0, 0))...)
	if got := statuses(reader.Get(ctx, "db_svc")); got != "4 instances, 0 suspect" {
		t.Fatalf("before: %s", got)
	}
	backend.SetFailure(errors.New("connection refused"))
	clock.Advance(time.Second)
	if _, err := reader.Get(ctx, "other_svc"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get during the outage = %v; want ErrUnavailable", err)
	}
	clock.Advance(19 * time.Second)
	backend.SetFailure(nil)
	loadIntoRedis()
	if got := statuses(reader.Get(ctx, "db_svc")); got != "4 instances, 1 suspect" {
		t.Fatalf("right after the outage: %s; want i00, whose lease ended during it, held as suspect", got)
	}
	back := func() bool { return logs.FilterMessage("discovery: database back").Len() > 0 }
	for start := time.Now(); !back() && time.Since(start) < 2*time.Second; {
		time.Sleep(time.Millisecond)
	}
	if !back() {
		t.Errorf("the reader did not notice the database back (no %q logged) after a lookup Redis answered", "discovery: database back")
	}
	clock.Advance(2*ttl + 10*time.Second)
	loadIntoRedis()
	if got := statuses(reader.Get(ctx, "db_svc")); got != "3 instances, 0 suspect" {
		t.Errorf("two lease TTLs and more after the outage: %s; want i00, dead, dropped", got)
	}
}

// A process whose only database calls during an outage are the
// revalidations that follow Redis reconnecting (its lookups answered from
// L1, no registration to renew, its reaper off) learns from them that the
// database is back. A revision read that answered was not noted: the
// outage stayed open in it, and leases that ended during it were held as
// suspects for as long as nothing else reached the database.
func TestRevalidationAfterRedisReconnectNoticesTheDatabaseBack(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	mr := miniredis.RunT(t)
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb := testutil.RedisClient(t, mr.Addr(), 0, ns)
	writeInstances(t, backend, "db_svc", 2, func(int) time.Time { return t0.Add(time.Hour) })
	core, logs := observer.New(zap.InfoLevel)
	reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithRedis(rdb),
		discovery.WithNamespace(ns), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks(),
		discovery.WithLogger(zap.New(core)), discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour))
	// the first subscription's revalidation over, so that the one counted
	// below is the reconnection's
	waitFor(t, 10*time.Second, "the first subscription", func() bool { return reader.Stats().Resyncs > 0 })
	if _, err := reader.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	backend.SetFailure(errors.New("connection refused"))
	if _, err := reader.Get(ctx, "other_svc"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get during the outage = %v; want ErrUnavailable", err)
	}
	if logs.FilterMessage("discovery: database lost; serving cached data").Len() == 0 {
		t.Fatal("the reader did not notice the outage")
	}
	backend.SetFailure(nil)
	resyncs := reader.Stats().Resyncs
	if logs.FilterMessage("discovery: database back").Len() != 0 {
		t.Fatal("the database seen back before any call reached it")
	}
	mr.Close() // the subscription drops ...
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	// ... and comes back: the Registry revalidates db_svc, and that
	// revision read is its only call to the database.
	waitFor(t, 10*time.Second, "a revalidation after Redis reconnected", func() bool { return reader.Stats().Resyncs > resyncs })
	if logs.FilterMessage("discovery: database back").Len() == 0 {
		t.Errorf("the reader did not notice the database back (no %q logged) after its revalidation read the revisions", "discovery: database back")
	}
}

// "Not found" is the database answering: a lookup whose load it answered
// so ends an outage as any other answer does. It returned before the
// answer was noted, and a process whose calls after an outage were lookups
// of services that no longer exist did not learn the database was back.
func TestNotFoundLoadNoticesTheDatabaseBack(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	core, logs := observer.New(zap.InfoLevel)
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(discoverytest.NewClock(t0)), discovery.WithReaper(0, 0),
		discovery.WithoutHealthChecks(), discovery.WithLogger(zap.New(core)))
	backend.SetFailure(errors.New("connection refused"))
	if _, err := r.Get(ctx, "gone_svc"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get during the outage = %v; want ErrUnavailable", err)
	}
	backend.SetFailure(nil)
	if _, err := r.Get(ctx, "gone_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("Get after the outage = %v; want ErrNotFound", err)
	}
	if logs.FilterMessage("discovery: database back").Len() == 0 {
		t.Errorf("the database's %q answer did not end the outage (no %q logged)", "not found", "discovery: database back")
	}
}
