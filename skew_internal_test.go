package discovery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// A snapshot another process read from the database with its clock ahead of
// this one's (its load time is still in this process's future) gives way to
// this process's own database read once a lease in it has ended: an
// instance that stopped renewing leaves lookups at once, as the design
// promises. Refused because it claimed a later read at the same revision
// (a lapse bumps no revision), the skewed snapshot stayed in L1: every
// lookup read the database twice and still answered with the dead instance
// until this clock caught up with the other process's.
func TestSnapshotFromAClockAheadGivesWayToALaterRead(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem))
	now := clock.Now()
	for _, in := range []core.Instance{
		{Service: "web", ID: "dies", Host: "10.0.0.1", Port: 80, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(10 * time.Second)},
		{Service: "web", ID: "lives", Host: "10.0.0.2", Port: 80, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(time.Hour)},
	} {
		if _, err := mem.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := mem.Load(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	// As pushed with a change message by a writer whose clock runs a minute ahead.
	r.install(r.newEntry(raw, LayerL2, now.Add(time.Minute), now, now))

	clock.Advance(11 * time.Second) // "dies" did not renew
	before := mem.Loads()
	res, err := r.Lookup(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if in := res.Service.Instance("dies"); in != nil {
		t.Fatalf("Lookup (layer %v) answers an instance whose lease ended a second ago (expires %v, now %v)",
			res.Layer, in.ExpiresAt, clock.Now())
	}
	if res.Layer != LayerL3 {
		t.Errorf("Lookup answered from %v; want the database's read (L3)", res.Layer)
	}
	if n := mem.Loads() - before; n > 1 {
		t.Errorf("one lookup read the database %d times", n)
	}
}

// A snapshot in Redis that another process read with its clock a minute
// ahead of this one's claims a read this process has not reached yet: no
// lease in it can be judged ended since. Taken, its instance, renewed in
// the database all along but past the lease end the snapshot was read
// with, was left out of lookups: a live service was "not found" until
// this clock passed the claimed read by a lease TTL (75 s here). Kept in
// Redis, it stood against every write of its revision by a correct clock.
// Now it is not served, and the database's answer replaces it in Redis.
func TestSnapshotInRedisFromAClockAheadHidesNoLiveInstance(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	r, clock := fakeRegistry(t, WithStore(mem), WithRedis(rdb), WithNamespace(ns))
	now := clock.Now()
	in := core.Instance{Service: "web", ID: "a", Host: "10.0.0.1", Port: 80, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(15 * time.Second)}
	if _, err := mem.Register(ctx, &in); err != nil {
		t.Fatal(err)
	}
	raw, err := mem.Load(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	// Written by a process whose clock runs a minute ahead, read at now.
	if ok, err := r.l2.Set(ctx, raw, now.Add(time.Minute), ""); !ok || err != nil {
		t.Fatalf("Set = %v, %v", ok, err)
	}
	// The instance renews every 10 s (renewals move no revision).
	renewAndLookUp := func(when string) {
		t.Helper()
		for range 2 {
			clock.Advance(10 * time.Second)
			if err := mem.Renew(ctx, "web", "a", clock.Now(), clock.Now().Add(15*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		before := r.l2.Stats()
		res, err := r.Lookup(ctx, "web")
		if err != nil || res.Service.Instance("a") == nil {
			t.Fatalf("%s: Lookup = %+v, %v; want the live instance", when, res, err)
		}
		// The load's write to Redis runs on in the background: done once
		// Redis answered it.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if s := r.l2.Stats(); s.Writes+s.StaleWrites+s.Errors > before.Writes+before.StaleWrites+before.Errors {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the load's write to Redis not done within 10 s", when)
			}
		}
	}
	renewAndLookUp("20 s on") // the claimed read is still ahead
	renewAndLookUp("40 s on")
	renewAndLookUp("60 s on") // the claimed read reached: its snapshot judged from it
}
