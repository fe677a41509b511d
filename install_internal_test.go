package discovery

import (
	"context"
	"testing"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// A health change that lands between building a new entry's view and
// storing the entry (a refresh racing a failing check) is in the view that
// lookups get afterwards: the rebuild after the change found the old entry,
// so install must rebuild the new one. Without it, Get showed the instance
// healthy until the next change (TestRouterResultsReachOtherProcesses
// caught it once under CI's load).
func TestInstallRebuildsAViewAHealthChangeOvertook(t *testing.T) {
	ctx := context.Background()
	r, err := New(WithStore(memory.New()), WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	g, err := r.Register(ctx, Instance{Service: "web", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	id := g.Instance().ID
	if _, err := r.Get(ctx, "web"); err != nil { // L1 holds an entry: the change's rebuild goes there
		t.Fatal(err)
	}
	raw, err := r.store.Load(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	now := r.clock.Now()
	e := r.newEntry(raw, LayerL3, now, now, now.Add(1)) // a newer read: put replaces the held entry

	st := r.state("web")
	st.instOrNew(id).status.Store(uint32(core.StatusUnhealthy))
	r.instancesChanged(st) // rebuilds the entry L1 holds, not e

	if held := r.install(e); held != e {
		t.Fatalf("install kept the older entry")
	}
	svc, err := r.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if s := svc.Instance(id).Status; s != StatusUnhealthy {
		t.Fatalf("Get shows %v after the instance turned unhealthy; want unhealthy", s)
	}
}
