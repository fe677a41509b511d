package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// A (re)subscription revalidates the "not found" answers L1 holds too: a
// registration whose message was lost meanwhile is seen at once, as a
// change to a service L1 holds is. resync skipped negative entries, and a
// registered service was "not found" until its negative entry aged out.
func TestResyncRevalidatesNegativeEntries(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem))
	const name = "db_svc"
	if _, err := r.Get(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get before any registration: %v; want ErrNotFound", err)
	}
	r.unsubscribe() // the fan-out is cut: the registration's message is lost
	if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	before := r.ctr.resyncs.Load()
	r.resync() // subscribed again
	for r.ctr.resyncs.Load() == before {
		time.Sleep(100 * time.Microsecond)
	}
	svc, err := r.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get after the resync: %v; want the registered service", err)
	}
	if len(svc.Instances) != 1 {
		t.Fatalf("Get after the resync: %d instances; want 1", len(svc.Instances))
	}
}

// allRevisions is a Store whose Revisions answers every service it holds,
// not only those asked for (a store that reads them all at once).
type allRevisions struct{ *memory.Store }

func (s allRevisions) Revisions(ctx context.Context, _ []string) (map[string]int64, error) {
	return s.Store.Revisions(ctx, []string{"db_svc", "other"})
}

// A store's Revisions that answers for services L1 does not hold (the
// optional interface does not forbid it) is no reason to crash: resync
// revalidates what L1 holds and ignores the rest. It looked every name up
// in what it held and dereferenced the nil entry of an extra one: a panic
// on a background goroutine, which ended the process at a reconnection.
func TestResyncIgnoresRevisionsOfServicesNotHeld(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(allRevisions{mem}))
	for _, name := range []string{"db_svc", "other"} {
		if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	before := r.ctr.resyncs.Load()
	r.resync()
	for r.ctr.resyncs.Load() == before {
		time.Sleep(100 * time.Microsecond)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatalf("Get after the resync: %v", err)
	}
}
