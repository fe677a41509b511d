package discovery

import (
	"context"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
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
