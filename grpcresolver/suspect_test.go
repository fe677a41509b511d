package grpcresolver_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// An instance kept as a suspect (its lease lapsed with its service's
// others: a partition) that this process ejected is out of selection, as
// Pick says, and so no endpoint: Get and Watch show a suspect as suspect
// whatever its health, so the resolver, reading only that status, resolved
// it, and round_robin sent it a share of the calls. A suspect ejected (or
// found unhealthy) while the resolver runs changes nothing Watch tells of:
// it leaves at the next ResolveNow (gRPC's, when a connection fails), or
// when the resolver reads the suspects' health again, within a second.
func TestEjectedSuspectIsNoEndpoint(t *testing.T) {
	ctx := context.Background()
	r, _, ins, _ := lapsedGreeters(t, func(*discovery.Instance) {}, discovery.WithOutlierEjection(1, time.Hour, time.Hour, 100))
	var ids, all []string
	for _, in := range ins {
		ids, all = append(ids, in.ID), append(all, in.Addr())
	}
	// eject fails one call to id, picked alone.
	eject := func(id string) {
		t.Helper()
		var opts []discovery.PickOption
		for _, o := range ids {
			if o != id {
				opts = append(opts, discovery.Exclude(o))
			}
		}
		sel, err := r.Pick(ctx, "greeter", opts...)
		if err != nil || sel.Instance.ID != id {
			t.Fatalf("Pick = %v, %v; want %s", sel.Instance, err, id)
		}
		sel.Done(errors.New("refused"))
		hs, err := r.Health(ctx, "greeter")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if h.ID == id && (!h.Ejected || h.Shown != discovery.StatusSuspect) {
				t.Fatalf("%s: ejected %v, shown %v; want an ejected suspect", id, h.Ejected, h.Shown)
			}
		}
	}
	eject(ids[0])
	for range 30 {
		sel, err := r.Pick(ctx, "greeter")
		if err != nil {
			t.Fatal(err)
		}
		sel.Done(nil)
		if sel.Instance.ID == ids[0] {
			t.Fatal("Pick chose the ejected suspect")
		}
	}

	cc, res := resolve(t, r, "greeter")
	if got := addrs(nextUpdate(t, cc, "")); !slices.Equal(got, all[1:]) {
		t.Fatalf("endpoints %v; want %v (no ejected suspect)", got, all[1:])
	}

	eject(ids[1])
	res.ResolveNow(resolver.ResolveNowOptions{}) // as gRPC does when a connection fails
	if got := addrs(nextUpdate(t, cc, "after ResolveNow: ")); !slices.Equal(got, all[2:]) {
		t.Fatalf("after ResolveNow: endpoints %v; want %v (the suspect ejected since gone)", got, all[2:])
	}
}

// suspectT0 is when lapsedGreeters registers its instances.
var suspectT0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// lapsedGreeters registers 10 instances of greeter straight into a backend
// at suspectT0, the first 3 (as lapsed marks them) with leases that end
// together a lease TTL later, and moves the Registry's clock past them:
// self-preservation keeps the 3 as suspects. It returns the Registry (no
// health checks, no reaper, opts), its backend, the instances and the
// Registry's clock.
func lapsedGreeters(t *testing.T, lapsed func(*discovery.Instance), opts ...discovery.Option) (*discovery.Registry, *discoverytest.Backend, []discovery.Instance, *discoverytest.Clock) {
	t.Helper()
	ttl := discovery.DefaultLeaseTTL
	clock := discoverytest.NewClock(suspectT0)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, append([]discovery.Option{discovery.WithClock(clock), discovery.WithReaper(0, 0),
		discovery.WithoutHealthChecks()}, opts...)...)
	ins := make([]discovery.Instance, 10)
	for i := range ins {
		in := discovery.Instance{ID: "i0" + strconv.Itoa(i), Service: "greeter", Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			RegisteredAt: suspectT0, ExpiresAt: suspectT0.Add(time.Hour)}
		if i < 3 {
			in.ExpiresAt = suspectT0.Add(ttl + time.Duration(i)*time.Second)
			lapsed(&in)
		}
		if _, err := backend.Register(t.Context(), &in); err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	clock.Set(suspectT0.Add(ttl + 3*time.Second))
	return r, backend, ins, clock
}

// A suspect this process ejected is an endpoint again once its ejection
// ends, and one ejected while the resolver runs leaves, without waiting for
// a connection to fail: nothing Watch tells of changes either way (a suspect
// shows as suspect whatever its health), and gRPC calls ResolveNow only
// when a connection fails. The ejected suspect, its connection shut down,
// stayed out for the rest of the database outage that made it a suspect,
// ejection long over, its share of the calls on the others.
func TestEjectedSuspectComesBackWhenItsEjectionEnds(t *testing.T) {
	ctx := context.Background()
	r, _, ins, clock := lapsedGreeters(t, func(*discovery.Instance) {}, discovery.WithOutlierEjection(1, 10*time.Second, time.Hour, 100))
	var all []string
	for _, in := range ins {
		all = append(all, in.Addr())
	}
	cc, _ := resolve(t, r, "greeter")
	if got := addrs(nextUpdate(t, cc, "")); !slices.Equal(got, all) {
		t.Fatalf("endpoints %v; want %v", got, all)
	}
	quiet(t, cc) // the watch's first events told nothing new

	var opts []discovery.PickOption
	for _, in := range ins[1:] {
		opts = append(opts, discovery.Exclude(in.ID))
	}
	sel, err := r.Pick(ctx, "greeter", opts...)
	if err != nil || sel.Instance.ID != ins[0].ID {
		t.Fatalf("Pick = %v, %v; want %s", sel.Instance, err, ins[0].ID)
	}
	sel.Done(errors.New("refused")) // ejects the suspect for 10 s
	if got := addrs(nextUpdate(t, cc, "once the suspect was ejected: ")); !slices.Equal(got, all[1:]) {
		t.Fatalf("once the suspect was ejected: endpoints %v; want %v", got, all[1:])
	}

	clock.Advance(15 * time.Second) // the ejection is over; the suspect is kept (30 s)
	if hs, err := r.Health(ctx, "greeter"); err != nil || hs[0].Ejected || hs[0].Shown != discovery.StatusSuspect {
		t.Fatalf("Health = %+v, %v; want the suspect no longer ejected", hs[0], err)
	}
	if got := addrs(nextUpdate(t, cc, "once the ejection ended: ")); !slices.Equal(got, all) {
		t.Fatalf("once the ejection ended: endpoints %v; want %v", got, all)
	}
}

// quiet waits until cc has had no update for 300 ms.
func quiet(t *testing.T, cc *recordingConn) {
	t.Helper()
	for {
		select {
		case <-cc.updates:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}
