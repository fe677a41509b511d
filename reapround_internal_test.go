package discovery

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// BenchmarkServiceReapRound times one round of the service reaper that
// deletes 100 services (reapServices), announcing each deletion through
// Redis (the real one with DISCOVERY_TEST_REDIS); the store is in memory,
// so the round is mostly its announcements. Against a real Redis:
//
//	go test -run '^$' -bench BenchmarkServiceReapRound -count 8 .
func BenchmarkServiceReapRound(b *testing.B) {
	const n = 100
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(b), "_")
	rdb, _ := testutil.Redis(b, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0),
		WithoutHealthChecks(), WithReaper(0, time.Minute), WithServiceReap(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		now := clock.Now()
		for j := range n {
			name := "reaped_" + strconv.Itoa(i) + "_" + strconv.Itoa(j)
			in := &core.Instance{Service: name, ID: "a", Host: "10.0.0.1", Port: 1, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(time.Hour)}
			if _, err := mem.Register(ctx, in); err != nil {
				b.Fatal(err)
			}
			if _, err := mem.Deregister(ctx, name, "a"); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := mem.ReapServices(ctx, now, now.Add(-time.Minute)); err != nil { // found with nothing
			b.Fatal(err)
		}
		clock.Advance(2 * time.Minute)
		pub := r.l2.Stats().Published
		b.StartTimer()
		r.reapServices()
		b.StopTimer()
		if got := r.l2.Stats().Published - pub; got != n {
			b.Fatalf("%d deletions announced; want %d", got, n)
		}
		b.StartTimer()
	}
}

// roundTrips is a go-redis hook that counts round trips: a command (but
// those that set a new connection up), or a pipeline of them.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch cmd.Name() {
		case "hello", "client", "auth", "select": // a new connection's
		default:
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// emptyServices creates n services under prefix on mem and leaves them
// with nothing, found so at now by a reaper round.
func emptyServices(t testing.TB, mem *memory.Store, prefix string, n int, now time.Time) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for j := range n {
		name := prefix + strconv.Itoa(j)
		in := &core.Instance{Service: name, ID: "a", Host: "10.0.0.1", Port: 1, Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(time.Hour)}
		if _, err := mem.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, err := mem.Deregister(ctx, name, "a"); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if _, err := mem.ReapServices(ctx, now, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	return names
}

// gones subscribes to r's change channel on rdb and returns the services
// of the deletions announced there ("<revision> <service> gone"), as they
// come.
func gones(t *testing.T, r *Registry, rdb redis.UniversalClient) <-chan string {
	t.Helper()
	ps := rdb.Subscribe(context.Background(), r.l2.Channel())
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	out := make(chan string, 1000)
	go func() {
		for m := range ps.Channel() {
			if f := strings.Fields(m.Payload); len(f) == 3 && f[2] == "gone" {
				out <- f[1]
			}
		}
	}()
	return out
}

func allHeard(t *testing.T, heard <-chan string, names []string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case n := <-heard:
			delete(want, n)
		case <-timeout:
			t.Fatalf("%d deletions never announced as such, e.g. %v", len(want), want)
		}
	}
}

// A reaper round that deletes many services announces the deletions in one
// pipeline: a few Redis round trips, not a few per service. Before, each
// deletion was written through on its own, one after the other (a read of
// the service's generation, a read of the database, which said "not
// found", and the message): 50 deletions made 100 round trips and more,
// and the round lasted as long.
func TestReapRoundAnnouncesItsDeletionsTogether(t *testing.T) {
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0),
		WithoutHealthChecks(), WithReaper(0, time.Minute), WithServiceReap(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	trips := new(roundTrips)
	r.opts.redisCmd.AddHook(trips) // the client the Registry sends its commands through (redisbound.go)
	heard := gones(t, r, rdb)
	names := emptyServices(t, mem, "ci_job_", 50, clock.Now())
	clock.Advance(2 * time.Minute)
	before := trips.n.Load()
	r.reapServices()
	if n := trips.n.Load() - before; n == 0 {
		t.Fatal("no Redis round trip counted: the hook does not see the Registry's commands")
	} else if n > 3 {
		t.Errorf("a round deleting %d services made %d Redis round trips; want 1 (at most 3 with the Registry's other traffic meanwhile)", len(names), n)
	}
	allHeard(t, heard, names)
}

// Deletions that a reaper round could not announce (Redis out) are
// announced, as deletions, once Redis is back, as every write's are.
func TestReapRoundWithRedisOutAnnouncesOnceBack(t *testing.T) {
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	direct := testutil.RedisClient(t, addr, db, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0),
		WithoutHealthChecks(), WithReaper(0, time.Minute), WithServiceReap(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	heard := gones(t, r, direct)
	names := emptyServices(t, mem, "ci_job_", 20, clock.Now())
	clock.Advance(2 * time.Minute)
	proxy.Down()
	r.reapServices()
	if r.l2.Up() {
		t.Fatal("Redis still up for the Registry: the test announces through it")
	}
	r.unMu.Lock()
	owed := len(r.unannounced)
	r.unMu.Unlock()
	if owed != len(names) {
		t.Fatalf("%d changes kept to announce; want %d", owed, len(names))
	}
	select {
	case n := <-heard:
		t.Fatalf("%s announced through a Redis that was out", n)
	default:
	}
	proxy.Up()
	allHeard(t, heard, names)
}
