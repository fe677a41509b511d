package discovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// gatedStore holds the Loads whose number (from 1) has a gate: each sends
// its number on held once it has read, and returns when its gate is closed.
// It tells no Registry of changes (a SQL database without Redis's messages
// does not).
type gatedStore struct {
	core.Store
	n     atomic.Int32
	gates map[int32]chan struct{} // set before the first Load
	held  chan int32
}

func (s *gatedStore) Load(ctx context.Context, name string) (*core.Service, error) {
	svc, err := s.Store.Load(ctx, name)
	k := s.n.Add(1)
	if g := s.gates[k]; g != nil {
		s.held <- k
		<-g
	}
	return svc, err
}

// A refresh that read the service before an Invalidate, and installs it
// after, leaves nothing a lookup answers with while it reads the database
// again: the lookup waits for that read. The refresh put what it had read
// back into L1, merely stale, and lookups answered it (stale while
// revalidating) after Invalidate had returned; had the second read failed,
// for stale-if-error's 5 minutes.
func TestInvalidatedSnapshotIsNotServedWhileItsLoadReadsAgain(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	store := &gatedStore{Store: mem, gates: map[int32]chan struct{}{2: make(chan struct{}), 3: make(chan struct{})}, held: make(chan int32)}
	r, clock := fakeRegistry(t, WithStore(store))
	register := behindTheBack(t, mem, clock)
	register("10.0.0.1")
	if _, err := r.Get(ctx, "db_svc"); err != nil { // load 1
		t.Fatal(err)
	}
	clock.Advance(DefaultFresh * 2)
	if res, err := r.Lookup(ctx, "db_svc"); err != nil || !res.Stale { // starts a refresh: load 2
		t.Fatalf("Lookup past the freshness window = %+v, %v; want the stale entry", res, err)
	}
	if k := <-store.held; k != 2 {
		t.Fatalf("held load %d; want 2", k)
	}
	register("10.0.0.2") // behind this process's back: revision 2
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	close(store.gates[2]) // the refresh installs revision 1, and reads again (load 3)
	if k := <-store.held; k != 3 {
		t.Fatalf("held load %d; want 3", k)
	}
	type answer struct {
		res Result
		err error
	}
	got := make(chan answer, 1)
	go func() {
		res, err := r.Lookup(ctx, "db_svc")
		got <- answer{res, err}
	}()
	select {
	case a := <-got:
		close(store.gates[3])
		refreshesDone(t)
		if a.err != nil || a.res.Revision != 2 {
			t.Fatalf("Lookup after Invalidate, while the refresh reads again = revision %d (stale %v), %v; want revision 2",
				a.res.Revision, a.res.Stale, a.err)
		}
	case <-time.After(50 * time.Millisecond): // waiting for load 3, as it should
		close(store.gates[3])
		a := <-got
		refreshesDone(t)
		if a.err != nil || a.res.Revision != 2 {
			t.Fatalf("Lookup after Invalidate = revision %d, %v; want revision 2", a.res.Revision, a.err)
		}
	}
}
