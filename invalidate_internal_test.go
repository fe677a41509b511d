package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// heldStore is a database whose next Load, once hold is called, reads the
// service and then waits for the test before it returns: a read that began
// before something the test does next and finishes after it. It tells no
// Registry of changes (a SQL database without Redis's messages does not).
type heldStore struct {
	core.Store
	held    chan struct{} // receives when a held Load has read
	release chan struct{} // closed to let it return
	arm     chan struct{} // holds one token while the next Load is to be held
}

func newHeldStore() (*heldStore, *memory.Store) {
	mem := memory.New()
	return &heldStore{Store: mem, held: make(chan struct{}), release: make(chan struct{}), arm: make(chan struct{}, 1)}, mem
}

func (s *heldStore) hold() { s.arm <- struct{}{} }

func (s *heldStore) Load(ctx context.Context, name string) (*core.Service, error) {
	svc, err := s.Store.Load(ctx, name)
	select {
	case <-s.arm:
		s.held <- struct{}{}
		<-s.release
	default:
	}
	return svc, err
}

// refreshesDone waits until no background refresh of r is running.
func refreshesDone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for blockedIn("discovery.(*Registry).refreshAsync.func") {
		if time.Now().After(deadline) {
			t.Fatal("background refreshes still running after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// refreshHeldAfterRead sets up what both tests below start from: db_svc
// cached at revision 1, gone stale, and the background refresh a lookup then
// started holding what it read (revision 1) until the test closes
// store.release. register adds an instance behind the Registry's back.
func refreshHeldAfterRead(t *testing.T) (r *Registry, store *heldStore, register func(host string)) {
	t.Helper()
	ctx := context.Background()
	store, mem := newHeldStore()
	r, clock := fakeRegistry(t, WithStore(store))
	register = func(host string) {
		t.Helper()
		if _, err := mem.Register(ctx, &core.Instance{Service: "db_svc", ID: host + ":1", Host: host, Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	register("10.0.0.1")
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultFresh * 2) // stale: the next lookup starts a background refresh
	store.hold()
	if res, err := r.Lookup(ctx, "db_svc"); err != nil || !res.Stale {
		t.Fatalf("Lookup past the freshness window = %+v, %v; want the stale entry", res, err)
	}
	<-store.held // the refresh has read revision 1
	return r, store, register
}

// releaseAndWantRevision2 lets the held refresh finish and checks that a
// lookup then answers revision 2, what the database holds, after what.
func releaseAndWantRevision2(t *testing.T, r *Registry, store *heldStore, after string) {
	t.Helper()
	close(store.release)
	refreshesDone(t)
	res, err := r.Lookup(context.Background(), "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 2 || len(res.Service.Instances) != 2 {
		t.Fatalf("Lookup after %s = revision %d, %d instances (layer %v, stale %v); want revision 2, 2 instances",
			after, res.Revision, len(res.Service.Instances), res.Layer, res.Stale)
	}
}

// A forced reload (the message Invalidate publishes) reads the database
// even while an ordinary background refresh of the same entry, begun before
// the invalidation, is still under way. The forced refresh was skipped (one
// refresh per entry), and the older refresh then installed what it had read
// before the invalidation as fresh: lookups answered it for a whole
// freshness window after the operator had invalidated it.
func TestForcedReloadIsNotSkippedForARefreshUnderWay(t *testing.T) {
	r, store, register := refreshHeldAfterRead(t)
	register("10.0.0.2") // behind this process's back: revision 2
	// What Invalidate's message does in every process that holds the service.
	r.onMessage(core.Change{Service: "db_svc"}, true, nil, time.Time{})
	releaseAndWantRevision2(t, r, store, "the forced reload")
}

// The same holds in the process that calls Invalidate: a background refresh
// begun before it, finishing after Invalidate had dropped the entry, put
// back what it had read before, fresh, and lookups answered it though
// Invalidate had returned.
func TestInvalidateIsNotUndoneByARefreshUnderWay(t *testing.T) {
	ctx := context.Background()
	r, store, register := refreshHeldAfterRead(t)
	register("10.0.0.2") // behind this process's back: revision 2
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	releaseAndWantRevision2(t, r, store, "Invalidate")
}

// A lookup whose context has already ended gets its context's error and
// starts no load. It started one, and then chose at random between its
// context and that load's answer when the load was quick (the in-memory
// backend's): Get with a cancelled context said "not found" now and then.
func TestLookupWithAnEndedContextStartsNoLoad(t *testing.T) {
	store, _ := newHeldStore()
	r, _ := fakeRegistry(t, WithStore(store))
	store.hold() // a load would read, then wait here for the test
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Get(ctx, "web"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context = %v; want context.Canceled", err)
	}
	// Joins the Get's load if it started one; else runs on its own at once.
	ch := r.sf.DoChan("web", func() (any, error) { return nil, nil })
	select {
	case res := <-ch:
		if res.Shared {
			t.Fatal("a Get whose context had ended shared a load")
		}
	case <-store.held:
		close(store.release)
		<-ch
		t.Fatal("a Get whose context had ended started a load")
	}
}
