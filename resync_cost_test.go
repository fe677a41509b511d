package discovery_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// readCountingStore counts the reads a Registry makes of its store: loads
// of one service, and revalidations of many (Revisions).
type readCountingStore struct {
	*discoverytest.Backend
	loads, revisions atomic.Int64
}

func (s *readCountingStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.loads.Add(1)
	return s.Backend.Load(ctx, name)
}

func (s *readCountingStore) Revisions(ctx context.Context, names []string) (map[string]int64, error) {
	s.revisions.Add(1)
	return s.Backend.Revisions(ctx, names)
}

// A Redis that flaps (its connections cut, then taken again) makes every
// process resubscribe, and a resubscription revalidates what the process
// holds, since change messages may have been lost in the gap. That costs
// one read of the revisions of everything held, and a load of each service
// that changed. Each watched service was read again besides, changed or
// not: a process watching W services (a gRPC client per target) read the
// database W times more a flap, and a fleet on a Redis flapping every few
// seconds read it that much more every few seconds.
func TestRedisFlapCostsOneRevalidationNotAReadOfEveryWatch(t *testing.T) {
	const (
		services = 20
		watched  = 10
		flaps    = 4
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	channel := ns + ":changes"
	if db != 0 {
		channel = ns + ":" + strconv.Itoa(db) + ":changes"
	}
	direct := testutil.RedisClient(t, addr, db, ns)
	store := &readCountingStore{Backend: discoverytest.NewBackend()}
	// The services are registered by another process, on the backend
	// itself: r's Close, which deregisters its own, reads nothing.
	writer := discoverytest.NewRegistry(t, store.Backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	r, err := discovery.New(discovery.WithStore(store), discovery.WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)),
		discovery.WithNamespace(ns), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithLeaseTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFor(t, 2*time.Second, "the subscription", func() bool { return subscribers(direct, channel) == 1 && r.Stats().Resyncs >= 1 })
	var wg sync.WaitGroup
	defer wg.Wait()
	var started sync.WaitGroup
	for i := range services {
		name := fmt.Sprintf("svc_%d", i)
		mustRegister(t, writer, inst(name, "10.0.0.1", 1))
		if _, err := r.Get(ctx, name); err != nil {
			t.Fatal(err)
		}
		if i < watched {
			ch, err := r.Watch(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			started.Add(1)
			wg.Go(func() {
				<-ch // the instance, added
				started.Done()
				for range ch {
				}
			})
		}
	}
	started.Wait()
	loads, revisions := store.loads.Load(), store.revisions.Load()
	for i := range flaps {
		resyncs := r.Stats().Resyncs
		proxy.Down()
		waitFor(t, 5*time.Second, "the subscription lost", func() bool { return subscribers(direct, channel) == 0 })
		proxy.Up()
		waitFor(t, 10*time.Second, fmt.Sprintf("flap %d: subscribed again and revalidated", i), func() bool {
			return subscribers(direct, channel) == 1 && r.Stats().Resyncs > resyncs
		})
	}
	cancel()
	wg.Wait()
	if err := r.Close(); err != nil { // waits for every refresh the flaps started
		t.Fatal(err)
	}
	l, rv := store.loads.Load()-loads, store.revisions.Load()-revisions
	t.Logf("%d flaps with %d services held, %d watched: %d loads, %d revalidations", flaps, services, watched, l, rv)
	// A flap is a resubscription, and Redis coming back for the breaker
	// when a call failed in the gap: one revalidation each.
	if l != 0 || rv > 2*flaps {
		t.Fatalf("%d flaps of Redis, nothing changed: %d loads and %d revalidations; want no load and at most two revalidations a flap", flaps, l, rv)
	}
}
