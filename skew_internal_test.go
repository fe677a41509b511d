package discovery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
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
	r, clock, mem := redisRegistry(t)
	now := clock.Now()
	in := core.Instance{Service: "web", ID: "a", Host: "10.0.0.1", Port: 80, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(15 * time.Second)}
	if _, err := mem.Register(ctx, &in); err != nil {
		t.Fatal(err)
	}
	// Written by a process whose clock runs a minute ahead, read at now.
	setL2As(t, r, mem, "web", now.Add(time.Minute))
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

// A snapshot in Redis from a clock a few milliseconds ahead, as NTP leaves
// clocks, is served: a snapshot written through on a change is read by the
// other processes within a millisecond of its read, and refused for any
// skew it sent every process whose clock is behind the writer's to the
// database on every change of a service too large to push. It is judged
// as read l2ClockSkew before its claim: a lease that ended in that second
// makes it unusable, as one that ended since its read does.
func TestSnapshotInRedisFromAClockSlightlyAheadIsServed(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := redisRegistry(t)
	now := clock.Now()
	for _, id := range []string{"a", "b"} {
		in := core.Instance{Service: "web", ID: id, Host: "10.0.0.1", Port: 80, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(15 * time.Second)}
		if _, err := mem.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	setL2As(t, r, mem, "web", now.Add(5*time.Millisecond))
	reads := r.ctr.storeReads.Load()
	res, err := r.Lookup(ctx, "web")
	if err != nil || res.Layer != LayerL2 || len(res.Service.Instances) != 2 {
		t.Fatalf("Lookup of a snapshot 5 ms ahead = %+v, %v; want both instances from L2", res, err)
	}
	if n := r.ctr.storeReads.Load() - reads; n != 0 {
		t.Fatalf("the lookup read the database %d times; want none", n)
	}

	// Another service whose lease "b" ended 500 ms before the claimed read:
	// within the skew, so the snapshot may have been read before it ended.
	for _, id := range []string{"a", "b"} {
		exp := now.Add(15 * time.Second)
		if id == "b" {
			exp = now.Add(-495 * time.Millisecond)
		}
		in := core.Instance{Service: "api", ID: id, Host: "10.0.0.2", Port: 80, Weight: 100, RegisteredAt: now.Add(-time.Minute), ExpiresAt: exp}
		if _, err := mem.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	setL2As(t, r, mem, "api", now.Add(5*time.Millisecond))
	if res, err := r.Lookup(ctx, "api"); err != nil || res.Layer != LayerL3 {
		t.Fatalf("Lookup of a snapshot 5 ms ahead with a lease that ended 500 ms before its claim = %+v, %v; want the database's answer", res, err)
	}
}

// redisRegistry returns a Registry on a memory store and Redis (under a
// namespace of the test's), on a fake clock.
func redisRegistry(t *testing.T) (*Registry, *fakeclock.Clock, *memory.Store) {
	t.Helper()
	mem := memory.New()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	r, clock := fakeRegistry(t, WithStore(mem), WithRedis(rdb), WithNamespace(ns))
	return r, clock, mem
}

// setL2As writes the service as mem holds it to Redis, as a process that
// read it at at would.
func setL2As(t *testing.T, r *Registry, mem *memory.Store, service string, at time.Time) {
	t.Helper()
	raw, err := mem.Load(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := r.l2.Set(context.Background(), raw, at, ""); !ok || err != nil {
		t.Fatalf("Set = %v, %v", ok, err)
	}
}
