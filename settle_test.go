package discovery_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rssbot/discovery"
)

// landsUnsure commits every Register and then fails it as a write whose
// caller's deadline ran out on the way back (its outcome unknown, the
// database answering), and holds every read of db_svc's revision until
// open is closed, counting them.
type landsUnsure struct {
	discovery.Store
	open chan struct{}
	mu   sync.Mutex
	revs int // Revisions calls that asked for db_svc
}

func (s *landsUnsure) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	if _, err := s.Store.Register(ctx, in); err != nil {
		return 0, err
	}
	return 0, context.DeadlineExceeded
}

func (s *landsUnsure) Revisions(ctx context.Context, names []string) (map[string]int64, error) {
	if slices.Contains(names, "db_svc") {
		s.mu.Lock()
		s.revs++
		s.mu.Unlock()
		select {
		case <-s.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.(discovery.RevisionReader).Revisions(ctx, names)
}

func (s *landsUnsure) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs
}

// Writes of one service whose outcome is unknown while the database is slow
// (their callers' deadlines ran out) settle it together: the revision is
// read once for those that failed while a read was under way, and once more
// for any that failed since it began, not once each. Each spawned a read of
// its own (and a write-through's load), all at once, on a database already
// too slow for its callers: n failed writes, 2n more reads.
func TestWritesOfUnknownOutcomeSettleTogether(t *testing.T) {
	for _, k := range allWorlds {
		t.Run(k.name, func(t *testing.T) {
			w := newWorld(t, k)
			s := &landsUnsure{Store: w.registry(t).Store(), open: make(chan struct{})}
			a := overStore(t, w, s)
			if w.rdb != nil {
				// Its first revalidation, which reads the revisions of what
				// L1 holds, is done before a settle puts db_svc there.
				waitFor(t, 10*time.Second, "the first revalidation", func() bool { return a.Stats().Resyncs >= 1 })
			}
			const writes = 20
			for i := range writes {
				_, err := a.Register(context.Background(), inst("db_svc", fmt.Sprintf("10.0.0.%d", i+1), 80))
				if err == nil {
					t.Fatal("Register succeeded; want the store's error")
				}
			}
			waitFor(t, 10*time.Second, "the first settle's read", func() bool { return s.reads() >= 1 })
			close(s.open)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if got := s.reads(); got > 2 {
				t.Fatalf("%d writes of unknown outcome read db_svc's revision %d times; want at most 2", writes, got)
			}
		})
	}
}
