package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// landsUnsure commits every Register and then fails it as a write whose
// caller's deadline ran out on the way back (its outcome unknown, the
// database answering), and holds every read of db_svc (its revision or
// its snapshot) until open is closed, counting them.
type landsUnsure struct {
	discovery.Store
	open chan struct{}
	mu   sync.Mutex
	revs int // Revisions calls that asked for db_svc, and loads of it
}

func (s *landsUnsure) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	if _, err := s.Store.Register(ctx, in); err != nil {
		return 0, err
	}
	return 0, context.DeadlineExceeded
}

func (s *landsUnsure) Revisions(ctx context.Context, names []string) (map[string]int64, error) {
	if slices.Contains(names, "db_svc") {
		if err := s.read(ctx); err != nil {
			return nil, err
		}
	}
	return s.Store.(discovery.RevisionReader).Revisions(ctx, names)
}

func (s *landsUnsure) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if name == "db_svc" {
		if err := s.read(ctx); err != nil {
			return nil, err
		}
	}
	return s.Store.Load(ctx, name)
}

// read counts a read of db_svc and holds it until open is closed.
func (s *landsUnsure) read(ctx context.Context) error {
	s.mu.Lock()
	s.revs++
	s.mu.Unlock()
	select {
	case <-s.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
				t.Fatalf("%d writes of unknown outcome read db_svc %d times; want at most 2", writes, got)
			}
		})
	}
}

// A write of unknown outcome reads the database once to settle, with Redis
// too: the write-through's read gives the revision. It read the revision
// first, then the snapshot, on a database already too slow for the
// write's caller. Settled, the snapshot is in Redis for every process.
func TestAWriteOfUnknownOutcomeSettlesInOneRead(t *testing.T) {
	for _, k := range allWorlds {
		t.Run(k.name, func(t *testing.T) {
			w := newWorld(t, k)
			s := &landsUnsure{Store: w.registry(t).Store(), open: make(chan struct{})}
			close(s.open)
			a := overStore(t, w, s)
			if w.rdb != nil {
				waitFor(t, 10*time.Second, "the first revalidation", func() bool { return a.Stats().Resyncs >= 1 })
			}
			if _, err := a.Register(context.Background(), inst("db_svc", "10.0.0.1", 80)); err == nil {
				t.Fatal("Register succeeded; want the store's error")
			}
			if w.rdb != nil { // the settle ends with the snapshot published
				waitFor(t, 10*time.Second, "the settle", func() bool { return a.Stats().Published >= 1 })
			} else {
				waitFor(t, 10*time.Second, "the settle's read", func() bool { return s.reads() >= 1 })
			}
			if err := a.Close(); err != nil { // waits for the rest of the settle
				t.Fatal(err)
			}
			if got := s.reads(); got != 1 {
				t.Fatalf("a write of unknown outcome read db_svc %d times to settle; want 1", got)
			}
			if w.rdb == nil {
				return
			}
			res, err := w.registry(t).Lookup(context.Background(), "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if res.Layer != discovery.LayerL2 || res.Service.Instance("10.0.0.1:80") == nil {
				t.Fatalf("another process's first lookup after the settle: layer %v, %+v; want the landed write from Redis", res.Layer, res.Service)
			}
		})
	}
}

// landsThenTimesOut makes the next Register commit and then fail as one
// whose caller's deadline ran out on the way back; it renews through the
// store below (an InstanceRenewer).
type landsThenTimesOut struct {
	discovery.Store
	armed atomic.Bool
	lost  atomic.Bool // the next Register times out without landing
}

func (s *landsThenTimesOut) Register(ctx context.Context, in *discovery.Instance) (int64, error) {
	if s.lost.CompareAndSwap(true, false) {
		return 0, context.DeadlineExceeded
	}
	rev, err := s.Store.Register(ctx, in)
	if err == nil && s.armed.CompareAndSwap(true, false) {
		return 0, context.DeadlineExceeded
	}
	return rev, err
}

func (s *landsThenTimesOut) RenewInstance(ctx context.Context, in *discovery.Instance, now time.Time) error {
	return s.Store.(discovery.InstanceRenewer).RenewInstance(ctx, in, now)
}

// registeredOverLandsThenTimesOut returns a Registry of w over a
// landsThenTimesOut store, armed, and a registration of 10.0.0.1:1 on it.
func registeredOverLandsThenTimesOut(t *testing.T, w *world) (*landsThenTimesOut, *discovery.Registry, *discoverytest.Clock, *discovery.Registration) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	s := &landsThenTimesOut{Store: w.registry(t).Store()}
	r := overStore(t, w, s, discovery.WithClock(clock))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	s.armed.Store(true)
	return s, r, clock, g
}

// renewal moves the clock to the next renewal and waits until it is done.
func renewal(clock *discoverytest.Clock) {
	clock.BlockUntil(2) // the keepalive and the reaper are waiting
	clock.Advance(discovery.DefaultLeaseTTL / 3)
	clock.BlockUntil(2) // the renewal has finished
}

// An Update whose outcome its caller could not know, and which landed, is
// kept (and one that did not land changes nothing): announced as possibly committed, it is what the row holds, and the
// registration's next renewal takes it as its own. It renewed with the
// fields from before the Update, found the row different, and registered
// them again: the landed write, announced to every process, was undone
// within TTL/3 with a new revision (and a "lease lost" log), though no one
// asked for it.
func TestUpdateOfUnknownOutcomeThatLandedIsKept(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		s, r, clock, g := registeredOverLandsThenTimesOut(t, w)
		if err := g.SetWeight(ctx, 7); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SetWeight = %v; want the store's context.DeadlineExceeded", err)
		}
		row := func() string {
			svc, err := r.Store().Load(ctx, "db_svc")
			if err != nil || len(svc.Instances) != 1 {
				return fmt.Sprintf("%+v, %v", svc, err)
			}
			return fmt.Sprintf("revision %d: weight %d", svc.Revision, svc.Instances[0].Weight)
		}
		landed := row()
		if landed != "revision 2: weight 7" {
			t.Fatalf("after SetWeight the row holds %s; want revision 2: weight 7 (it landed)", landed)
		}
		for range 2 {
			renewal(clock)
			if got := row(); got != landed {
				t.Fatalf("after a renewal the row holds %s; want %s (the Update that landed kept)", got, landed)
			}
		}
		if got := g.Instance().Weight; got != 7 {
			t.Fatalf("Registration.Instance().Weight = %d; want 7, as the row holds", got)
		}
		// One that did not land leaves the row, and the registration, as
		// they were.
		s.lost.Store(true)
		if err := g.SetWeight(ctx, 9); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("SetWeight = %v; want the store's context.DeadlineExceeded", err)
		}
		renewal(clock)
		if got := row(); got != landed || g.Instance().Weight != 7 {
			t.Fatalf("after a write that did not land and a renewal: row %s, registration weight %d; want %s, 7", got, g.Instance().Weight, landed)
		}
	})
}

// A Register that replaces this process's registration of the instance,
// whose outcome its caller could not know, and which landed, is kept: the
// registration it would have replaced takes it as its own at its next
// renewal. That renewal found the row different and wrote its own fields
// back over it, undoing a write announced to every process.
func TestReplacingRegisterOfUnknownOutcomeThatLandedIsKept(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		s, r, clock, g := registeredOverLandsThenTimesOut(t, w)
		next := inst("db_svc", "10.0.0.1", 1)
		next.Weight = 7
		if _, err := r.Register(ctx, next); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Register = %v; want the store's context.DeadlineExceeded", err)
		}
		row := func() string {
			svc, err := r.Store().Load(ctx, "db_svc")
			if err != nil || len(svc.Instances) != 1 {
				return fmt.Sprintf("%+v, %v", svc, err)
			}
			return fmt.Sprintf("weight %d", svc.Instances[0].Weight)
		}
		if got := row(); got != "weight 7" {
			t.Fatalf("after the Register the row holds %s; want weight 7 (it landed)", got)
		}
		for range 2 {
			renewal(clock)
			if got := row(); got != "weight 7" {
				t.Fatalf("after a renewal the row holds %s; want weight 7 (the Register that landed kept)", got)
			}
		}
		if got := g.Instance().Weight; got != 7 {
			t.Fatalf("the registration's Instance().Weight = %d; want 7, as the row holds", got)
		}
		// One that did not land leaves the row, and the registration, as
		// they were.
		s.lost.Store(true)
		next.Weight = 9
		if _, err := r.Register(ctx, next); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Register = %v; want the store's context.DeadlineExceeded", err)
		}
		renewal(clock)
		if got := row(); got != "weight 7" || g.Instance().Weight != 7 {
			t.Fatalf("after a Register that did not land and a renewal: row %s, registration weight %d; want weight 7, 7", got, g.Instance().Weight)
		}
	})
}
