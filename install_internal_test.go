package discovery

import (
	"context"
	"testing"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
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
	r, id := webRegistry(t)
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

// Once Health can report a status (it reads the instance's detail under
// is.hmu), Get shows it: the write and the view's rebuild happen together.
// A reader that finds the same state before and after its Get must see that
// state's status in the view, while loads keep installing new entries. Before, a status was written, is.hmu released
// and the view rebuilt afterwards: a Health call in between reported
// unhealthy while Get still showed healthy (TestRouterResultsReachOtherProcesses
// caught that under CI's load).
func TestGetShowsWhatHealthReported(t *testing.T) {
	ctx := context.Background()
	r, id := webRegistry(t)
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	st := r.state("web")
	is := st.instOrNew(id)
	reported := func() (int64, core.Status) {
		is.hmu.Lock()
		defer is.hmu.Unlock()
		return is.health.st.Seq, is.health.st.Status
	}

	const flips = 5000
	done, reloaded := make(chan struct{}), make(chan struct{})
	go func() { // loads keep installing new entries, whose views were built before some flips
		defer close(reloaded)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := r.load("web", true); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { <-reloaded }()
	go func() {
		defer close(done)
		for i := int64(1); i <= flips; i++ {
			s := health.New()
			s.Seq, s.Status = i, core.StatusHealthy
			if i%2 == 0 {
				s.Status = core.StatusUnhealthy
			}
			r.adoptShared(st, is, s, "")
		}
	}()
	checked := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		seq, status := reported()
		svc, err := r.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		shown := svc.Instance(id).Status
		if seq2, _ := reported(); seq2 != seq || seq == 0 {
			continue // changed meanwhile: either status may show
		}
		checked++
		if shown != status {
			t.Fatalf("Health reported %v (state %d) and Get then showed %v", status, seq, shown)
		}
	}
	if checked == 0 {
		t.Fatal("no Get fell between two reads of the same state")
	}
}

// webRegistry returns a Registry without health checks holding one
// registered instance of "web", and its ID.
func webRegistry(t *testing.T) (*Registry, string) {
	t.Helper()
	r, err := New(WithStore(memory.New()), WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	g, err := r.Register(context.Background(), Instance{Service: "web", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	return r, g.Instance().ID
}

// A load that read the database before a write of this process and
// installed after it (the write dropped the older entry from L1, and with
// no Redis put nothing in its place) put the superseded snapshot into L1 as
// fresh: lookups served it as if the write had not happened until it aged
// out (TestKeysTravelBetweenProcesses caught this once under -race). Such
// an entry is installed stale, so a lookup waits for the newer one; the
// last attempt's entry stays fresh.
func TestInstallOfASupersededSnapshotIsNotFresh(t *testing.T) {
	ctx := context.Background()
	r, _ := webRegistry(t)
	raw, err := r.store.Load(ctx, "web") // read before the write
	if err != nil {
		t.Fatal(err)
	}
	now := r.clock.Now()
	g, err := r.Register(ctx, Instance{Service: "web", Host: "10.0.0.2", Port: 80}) // the write
	if err != nil {
		t.Fatal(err)
	}
	// What the write leaves behind without Redis (afterWrite): the revision
	// raised, the older entry dropped.
	st := r.state("web")
	st.raiseWant(g.Revision(), r.now.nanos())
	if e := r.l1.get("web"); e != nil {
		r.l1.remove(e)
	}
	if _, superseded := r.installLoaded(r.newEntry(raw, LayerL3, now, now, now), st, st.invalidated.Load(), false); !superseded { // the racing load finishes
		t.Fatal("an entry older than the write was not reported superseded")
	}
	svc, err := r.Get(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Instances) != 2 || svc.Revision <= raw.Revision {
		t.Fatalf("Get after this process's write = revision %d, %d instances; want the write (2 instances)", svc.Revision, len(svc.Instances))
	}
	last := r.newEntry(raw, LayerL3, now, now, now.Add(1))
	r.l1.remove(r.l1.get("web"))
	if e, _ := r.installLoaded(last, st, st.invalidated.Load(), true); e != last || e.freshUntil.Load() == 0 {
		t.Fatal("the last attempt's entry was not left fresh")
	}
}
