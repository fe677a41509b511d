package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

var errCall = errors.New("connection reset")

// ejectWorld is a Registry without active checks using a service of n
// made-up instances; it returns their IDs.
func ejectWorld(t *testing.T, n int, opts ...discovery.Option) (*discovery.Registry, *discoverytest.Clock, []string) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0]) // no active checks
	r := w.registry(t, append([]discovery.Option{discovery.WithClock(clock)}, opts...)...)
	var ids []string
	for i := range n {
		host := fmt.Sprintf("10.0.0.%d", i+1)
		in := discovery.Instance{ID: host + ":5432", Service: "db_svc", Host: host, Port: 5432, Weight: 1,
			RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
		addInstance(t, r, in)
		ids = append(ids, in.ID)
	}
	if _, err := r.Get(context.Background(), "db_svc"); err != nil {
		t.Fatal(err)
	}
	return r, clock, ids
}

func report(t *testing.T, r *discovery.Registry, id string, err error, times int) {
	t.Helper()
	for range times {
		if e := r.ReportOutcome("db_svc", id, err, time.Millisecond); e != nil {
			t.Fatalf("ReportOutcome: %v", e)
		}
	}
}

func ejected(t *testing.T, r *discovery.Registry, id string) bool {
	t.Helper()
	h := healthOf(t, r, "db_svc", id)
	inView := viewStatus(t, r, "db_svc", id) == discovery.StatusEjected
	if h.Ejected != inView {
		t.Fatalf("Health says ejected=%v but Get shows %v", h.Ejected, viewStatus(t, r, "db_svc", id))
	}
	return h.Ejected
}

// A host failing every call is ejected after 5 failures, for 30 s, then
// 60 s the next time; successes reset the count, and the caller's
// cancellations and the instance's overload answers (429) do not count.
func TestEjectionAfterConsecutiveFailures(t *testing.T) {
	r, clock, ids := ejectWorld(t, 10)
	bad := ids[0]
	report(t, r, bad, errCall, 4)
	report(t, r, bad, nil, 1) // a success resets the count
	report(t, r, bad, errCall, 4)
	report(t, r, bad, context.Canceled, 3) // the caller's, not the instance's
	report(t, r, bad, fmt.Errorf("call: %w", context.Canceled), 1)
	if ejected(t, r, bad) {
		t.Fatal("ejected before 5 failures in a row")
	}
	report(t, r, bad, fmt.Errorf("HTTP 429: %w", discovery.ErrOverloaded), 3) // load, not health
	if ejected(t, r, bad) {
		t.Fatal("overload answers counted toward ejection")
	}
	report(t, r, bad, errCall, 1) // the 5th
	if !ejected(t, r, bad) {
		t.Fatalf("not ejected after 5 failures: %+v", healthOf(t, r, "db_svc", bad))
	}
	h := healthOf(t, r, "db_svc", bad)
	if got := h.EjectedUntil.Sub(clock.Now()); got != discovery.DefaultEjectionTime || h.TimesEjected != 1 {
		t.Fatalf("ejected for %v (times %d); want %v", got, h.TimesEjected, discovery.DefaultEjectionTime)
	}
	step(clock, discovery.DefaultEjectionTime-time.Second, r)
	if !ejected(t, r, bad) {
		t.Fatal("back before its ejection ended")
	}
	step(clock, time.Second, r)
	if ejected(t, r, bad) {
		t.Fatal("still ejected after 30 s")
	}
	report(t, r, bad, errCall, 5)
	if h := healthOf(t, r, "db_svc", bad); !h.Ejected || h.EjectedUntil.Sub(clock.Now()) != 2*discovery.DefaultEjectionTime {
		t.Fatalf("second ejection: %+v; want 60 s", h)
	}
	for _, id := range ids[1:] {
		if ejected(t, r, id) {
			t.Fatalf("%s ejected", id)
		}
	}
}

// With 3 of 5 hosts failing every call, only one is ejected at a time (10%
// of 5 rounds down to 0, and at least one may always be).
func TestEjectionCap(t *testing.T) {
	r, clock, ids := ejectWorld(t, 5)
	for round := range 3 {
		for range 20 {
			for _, id := range ids[:3] {
				report(t, r, id, errCall, 1)
			}
			for _, id := range ids[3:] {
				report(t, r, id, nil, 1)
			}
		}
		n := 0
		for _, id := range ids {
			if ejected(t, r, id) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d hosts ejected; want 1", round, n)
		}
		step(clock, discovery.DefaultMaxEjectionTime, r) // every ejection ends
	}
}

func TestEjectionOptions(t *testing.T) {
	r, clock, ids := ejectWorld(t, 4, discovery.WithOutlierEjection(2, 10*time.Second, 15*time.Second, 50))
	report(t, r, ids[0], errCall, 2)
	report(t, r, ids[1], errCall, 2)
	report(t, r, ids[2], errCall, 2)
	if !ejected(t, r, ids[0]) || !ejected(t, r, ids[1]) || ejected(t, r, ids[2]) {
		t.Fatal("with 50% of 4 at most 2 ejected")
	}
	step(clock, 10*time.Second, r)
	report(t, r, ids[0], errCall, 2)
	if h := healthOf(t, r, "db_svc", ids[0]); h.EjectedUntil.Sub(clock.Now()) != 15*time.Second {
		t.Fatalf("second ejection %v; want the 15 s cap", h.EjectedUntil.Sub(clock.Now()))
	}
	r2, _, ids2 := ejectWorld(t, 2, discovery.WithOutlierEjection(0, 0, 0, 0))
	report(t, r2, ids2[0], errCall, 50)
	if ejected(t, r2, ids2[0]) {
		t.Fatal("ejected with ejection disabled")
	}
}

// A passing active check ends an ejection early.
func TestPassingCheckEndsEjection(t *testing.T) {
	p := newProbeServer(t, "")
	r, clock, id := oneInstance(t, p)
	nextCheck(t, r, clock, p)
	for range 5 {
		if err := r.ReportOutcome("web", id, errCall, 0); err != nil {
			t.Fatal(err)
		}
	}
	if h := healthOf(t, r, "web", id); !h.Ejected {
		t.Fatal("not ejected")
	}
	start := clock.Now()
	nextCheck(t, r, clock, p)
	if h := healthOf(t, r, "web", id); h.Ejected || viewStatus(t, r, "web", id) != discovery.StatusHealthy {
		t.Fatalf("still ejected after a passing check: %+v", h)
	}
	if d := clock.Now().Sub(start); d >= discovery.DefaultEjectionTime {
		t.Fatalf("back after %v: not early", d)
	}
}

func TestReportOutcomeErrors(t *testing.T) {
	r, _, ids := ejectWorld(t, 1)
	tests := []struct {
		service, id string
		want        error
	}{
		{"db_svc", "nope:1", discovery.ErrNotFound},
		{"other", ids[0], discovery.ErrNotFound},
		{"bad/name", "x", discovery.ErrInvalid},
		{"db_svc", "a b", discovery.ErrInvalid},
		{"db_svc", ids[0], nil},
	}
	for _, tt := range tests {
		if err := r.ReportOutcome(tt.service, tt.id, nil, 0); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("ReportOutcome(%q, %q) = %v; want %v", tt.service, tt.id, err, tt.want)
		}
	}
	_ = r.Close()
	if err := r.ReportOutcome("db_svc", ids[0], nil, 0); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// An overload reported through ReportOutcome weighs on p2c_ewma's latency
// average as one reported through Done does, as ErrOverloaded and
// ReportOutcome say: it dropped the latency and the overload, and an
// instance that answered 429 looked no dearer than an idle one.
func TestReportOutcomeFeedsSelectionLatency(t *testing.T) {
	ctx := context.Background()
	r, _, ids := ejectWorld(t, 2)
	busy, idle := ids[0], ids[1]
	report := func(id string, err error) {
		t.Helper()
		if e := r.ReportOutcome("db_svc", id, err, time.Millisecond); e != nil {
			t.Fatalf("ReportOutcome: %v", e)
		}
	}
	report(busy, nil)
	report(idle, nil)
	report(busy, fmt.Errorf("HTTP 429: %w", discovery.ErrOverloaded))
	picked := map[string]int{}
	for range 20 {
		sel, err := r.Pick(ctx, "db_svc", discovery.UseStrategy(discovery.StrategyP2CEWMA))
		if err != nil {
			t.Fatal(err)
		}
		picked[sel.Instance.ID]++
		sel.DoneLatency(nil, time.Millisecond)
	}
	if picked[busy] != 0 {
		t.Fatalf("picks %v: the overloaded instance (%s) was picked %d times of 20; want 0", picked, busy, picked[busy])
	}
}

// Failures reported (Done) for an instance after it left the service eject
// nothing: the ejection of a state no one holds any more showed as a
// health_changed event of an instance that no longer exists, was logged and
// counted.
func TestDoneAfterTheInstanceLeftEjectsNothing(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1)
	var sels []discovery.Selection
	for range 5 { // i0: the one v1 instance once i1 is excluded
		sel, err := r.Pick(ctx, "db_svc", discovery.WithVersion("v1"), discovery.Exclude("i1"))
		if err != nil || sel.Instance.ID != "i0" {
			t.Fatalf("Pick = %v, %v; want i0", sel.Instance, err)
		}
		sels = append(sels, sel)
	}
	if err := r.Deregister(ctx, "db_svc", "i0"); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || svc.Instance("i0") != nil {
		t.Fatalf("Get = %v, %v; want i0 gone", svc, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range sels {
		sel.Done(errors.New("connection refused"))
	}
	mustRegister(t, r, discovery.Instance{ID: "last", Service: "db_svc", Host: "10.0.9.1", Port: 80})
	for ev := range ch {
		if ev.Instance.ID == "i0" {
			t.Errorf("Watch delivered %v of i0 (%v), which left before its failures were reported", ev.Kind, ev.Instance.Status)
		}
		if ev.Instance.ID == "last" {
			break
		}
	}
	if n := r.Stats().Ejections; n != 0 {
		t.Errorf("Stats().Ejections = %d; want 0", n)
	}
}

// An ejection of an instance that then left ends on its own timer: when
// the instance came back (same ID) and was ejected anew, the old timer
// announced the end of the new ejection to watchers (and in the log) with
// the old state's status, while Get and Pick still kept it out.
func TestOldEjectionEndDoesNotUnejectReturnedInstance(t *testing.T) {
	ctx := context.Background()
	r, clock, ids := ejectWorld(t, 3, discovery.WithLeaseTTL(time.Hour))
	a := ids[0]
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	until := func(id string) []discovery.Event { return eventsBefore(t, ch, id) }
	report(t, r, a, errCall, 5) // ejected until 30 s
	if !ejected(t, r, a) {
		t.Fatal("not ejected")
	}
	if err := r.Deregister(ctx, "db_svc", a); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || svc.Instance(a) != nil {
		t.Fatalf("Get = %v, %v; want %s gone", svc, err, a)
	}
	step(clock, 10*time.Second, r)
	mustRegister(t, r, discovery.Instance{ID: a, Service: "db_svc", Host: "10.0.0.1", Port: 5432, Weight: 1})
	if svc, err := r.Get(ctx, "db_svc"); err != nil || svc.Instance(a) == nil {
		t.Fatalf("Get = %v, %v; want %s back", svc, err, a)
	}
	report(t, r, a, errCall, 5) // ejected again, until 40 s
	if !ejected(t, r, a) {
		t.Fatal("not ejected again")
	}
	mustRegister(t, r, discovery.Instance{ID: "mid", Service: "db_svc", Host: "10.0.9.2", Port: 80})
	until("mid")
	step(clock, 25*time.Second, r) // the first ejection's end (30 s) passes
	if !ejected(t, r, a) {
		t.Fatal("the second ejection ended with the first's time")
	}
	mustRegister(t, r, discovery.Instance{ID: "last", Service: "db_svc", Host: "10.0.9.1", Port: 80})
	for _, ev := range until("last") {
		if ev.Instance.ID == a {
			t.Errorf("Watch delivered %v of %s (%v, was %v) while it is still ejected", ev.Kind, a, ev.Instance.Status, ev.Previous)
		}
	}
}

// The ejection cap counts the ejections of live instances only: an ejected
// instance whose lease then ended (it died) no longer counts, or it kept
// every other failing instance in selection until its ejection ran out
// (up to 300 s), though none of the service's live instances was ejected.
func TestEjectionCapIgnoresInstancesThatLeft(t *testing.T) {
	ctx := context.Background()
	r, clock, ids := ejectWorld(t, 9)
	dying := discovery.Instance{ID: "10.0.1.1:5432", Service: "db_svc", Host: "10.0.1.1", Port: 5432, Weight: 1,
		RegisteredAt: t0, ExpiresAt: t0.Add(10 * time.Second)}
	addInstance(t, r, dying)
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 10 {
		t.Fatalf("Get = %v, %v; want 10 instances", svc, err)
	}
	report(t, r, dying.ID, errCall, 5)
	if !ejected(t, r, dying.ID) {
		t.Fatal("not ejected")
	}
	step(clock, 15*time.Second, r) // its lease ends; its ejection (30 s) goes on
	if svc, err := r.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 9 || svc.Instance(dying.ID) != nil {
		t.Fatalf("Get = %v, %v; want the 9 live instances", svc, err)
	}
	report(t, r, ids[0], errCall, 5)
	if !ejected(t, r, ids[0]) {
		t.Fatal("a failing instance stayed in selection: the cap counted the ejection of an instance that left")
	}
}

// An instance back from an ejection needs 5 failed calls in a row to be
// ejected again: failures reported while it was out (calls in flight when
// it was ejected) counted on, and it went back out, for twice as long,
// after as few as one failure.
func TestEjectionEndResetsTheFailures(t *testing.T) {
	r, clock, ids := ejectWorld(t, 10)
	bad := ids[0]
	report(t, r, bad, errCall, 5)
	if !ejected(t, r, bad) {
		t.Fatal("not ejected")
	}
	report(t, r, bad, errCall, 4) // calls in flight when it was ejected
	step(clock, discovery.DefaultEjectionTime, r)
	if ejected(t, r, bad) {
		t.Fatal("still ejected after 30 s")
	}
	report(t, r, bad, errCall, 1)
	if h := healthOf(t, r, "db_svc", bad); h.Ejected || h.PassiveFailures != 1 {
		t.Fatalf("after 1 failure back in selection: ejected %v, failures %d; want not ejected, 1", h.Ejected, h.PassiveFailures)
	}
	report(t, r, bad, errCall, 4)
	if !ejected(t, r, bad) {
		t.Fatal("not ejected again after 5 failures")
	}
}

// The same holds when a passing check ends the ejection early.
func TestPassingCheckEndResetsTheFailures(t *testing.T) {
	p := newProbeServer(t, "")
	r, clock, id := oneInstance(t, p)
	nextCheck(t, r, clock, p)
	for range 5 + 4 { // ejected, then 4 calls in flight fail
		if err := r.ReportOutcome("web", id, errCall, 0); err != nil {
			t.Fatal(err)
		}
	}
	nextCheck(t, r, clock, p)
	if h := healthOf(t, r, "web", id); h.Ejected {
		t.Fatal("still ejected after a passing check")
	}
	if err := r.ReportOutcome("web", id, errCall, 0); err != nil {
		t.Fatal(err)
	}
	if h := healthOf(t, r, "web", id); h.Ejected || h.PassiveFailures != 1 {
		t.Fatalf("after 1 failure back in selection: ejected %v, failures %d; want not ejected, 1", h.Ejected, h.PassiveFailures)
	}
}

// ReportOutcome takes outcomes of an instance that Get returned while the
// instance renews its lease, however long ago this process last looked the
// service up: renewals change no revision, so the snapshot L1 holds keeps
// the lease end it was read with, and from then on an instance this
// Registry had never held state for was "not found", its failures dropped
// and never ejecting it.
func TestReportOutcomeOfARenewedInstanceOfAnIdleService(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock))
	r := w.registry(t)
	ttl := discovery.DefaultLeaseTTL
	for _, id := range []string{"a", "b"} {
		addInstance(t, r, discovery.Instance{ID: id, Service: "idle", Host: "10.0.0.1", Port: 80, Check: discovery.CheckNone,
			RegisteredAt: t0, ExpiresAt: t0.Add(ttl)})
	}
	svc, err := r.Get(ctx, "idle")
	if err != nil || len(svc.Instances) != 2 {
		t.Fatalf("Get(idle) = %v", ids(svc, err))
	}
	for range 4 { // past the lease end the snapshot was read with, renewed all along
		clock.Advance(ttl / 3)
		now := clock.Now()
		for _, id := range []string{"a", "b"} {
			if err := r.Store().Renew(ctx, "idle", id, now, now.Add(ttl)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range discovery.DefaultEjectionFailures {
		if err := r.ReportOutcome("idle", "a", errCall, time.Millisecond); err != nil {
			t.Fatalf("ReportOutcome #%d of a renewed instance Get returned: %v", i+1, err)
		}
	}
	hs, err := r.Health(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.ID == "a" && !h.Ejected {
			t.Fatalf("a not ejected after %d failures reported: %+v", discovery.DefaultEjectionFailures, h)
		}
	}
}

// The cap on ejected instances holds for a service this process has not
// looked up for a lease TTL: an ejection rebuilt the service's view at
// now, from a snapshot whose lease ends (renewals change no revision) had
// all passed, so the view, from which the cap counted the instances and
// the ejected ones, was empty: a second instance of two was ejected too,
// past "at most 10%, at least one".
func TestEjectionCapHoldsForAnIdleService(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock), discovery.WithSelfPreservation(0, 0))
	r := w.registry(t)
	ttl := discovery.DefaultLeaseTTL
	for _, id := range []string{"a", "b"} {
		addInstance(t, r, discovery.Instance{ID: id, Service: "idle", Host: "10.0.0.1", Port: 80, Check: discovery.CheckNone,
			RegisteredAt: t0, ExpiresAt: t0.Add(ttl)})
	}
	if _, err := r.Get(ctx, "idle"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} { // both held in this process (as a Pick's Done would)
		if err := r.ReportOutcome("idle", id, nil, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		clock.Advance(ttl / 3)
		now := clock.Now()
		for _, id := range []string{"a", "b"} {
			if err := r.Store().Renew(ctx, "idle", id, now, now.Add(ttl)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range []string{"a", "b"} {
		for range discovery.DefaultEjectionFailures {
			if err := r.ReportOutcome("idle", id, errCall, time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	hs, err := r.Health(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	ejected := 0
	for _, h := range hs {
		if h.Ejected {
			ejected++
		}
	}
	if len(hs) != 2 || ejected != 1 {
		t.Fatalf("%d of %d instances ejected; want 1 of 2 (at most 10%%, at least one)", ejected, len(hs))
	}
}

// A view rebuilt for a change of status (here an ejection) keeps the
// instances its entry was built with. Rebuilt at now, the view of a service
// not looked up for a lease TTL, whose snapshot keeps the lease ends it was
// read with (renewals change no revision), had none left, and a database
// outage then served an empty service (no error) where it had served both
// instances stale a moment before.
func TestStaleViewSurvivesAnEjectionInAnOutage(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks(), discovery.WithSelfPreservation(0, 0))
	ttl := discovery.DefaultLeaseTTL
	for _, id := range []string{"a", "b"} {
		addInstance(t, r, discovery.Instance{ID: id, Service: "idle", Host: "10.0.0.1", Port: 80, Check: discovery.CheckNone,
			RegisteredAt: t0, ExpiresAt: t0.Add(ttl)})
	}
	addInstance(t, r, discovery.Instance{ID: "c", Service: "other", Host: "10.0.0.2", Port: 80, Check: discovery.CheckNone,
		RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)})
	if got := ids(r.Get(ctx, "idle")); got != "a,b" {
		t.Fatalf("Get(idle) = %s", got)
	}
	for range 4 {
		clock.Advance(ttl / 3)
		now := clock.Now()
		for _, id := range []string{"a", "b"} {
			if err := backend.Renew(ctx, "idle", id, now, now.Add(ttl)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := r.Get(ctx, "other"); err != nil { // the database answers after idle's snapshot's leases ended
		t.Fatal(err)
	}
	backend.SetFailure(errors.New("connection refused"))
	clock.Advance(time.Second)
	if got := ids(r.Get(ctx, "idle")); got != "a,b" {
		t.Fatalf("Get(idle) in the outage = %s; want a,b (stale-if-error)", got)
	}
	for range discovery.DefaultEjectionFailures {
		if err := r.ReportOutcome("idle", "a", errCall, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(r.Get(ctx, "idle")); got != "a,b" {
		t.Fatalf("Get(idle) in the outage after an ejection = %q; want a,b (stale-if-error, a ejected)", got)
	}
}
