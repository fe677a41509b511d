package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/testutil"
)

// next returns the next event of ch, failing the test after d.
func next(t *testing.T, ch <-chan discovery.Event, d time.Duration) discovery.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatalf("watch channel closed")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	panic("unreachable")
}

// quiet fails the test if ch delivers an event within d.
func quiet(t *testing.T, ch <-chan discovery.Event, d time.Duration) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %s", describe(ev))
	case <-time.After(d):
	}
}

// describe renders an event compactly: "kind id weight/status" or
// "config_changed {doc}".
func describe(ev discovery.Event) string {
	switch ev.Kind {
	case discovery.EventConfigChanged:
		return "config_changed " + string(ev.Config)
	case discovery.EventHealthChanged:
		return fmt.Sprintf("health_changed %s %s->%s", ev.Instance.ID, ev.Previous, ev.Instance.Status)
	}
	s := fmt.Sprintf("%s %s w=%d", ev.Kind, ev.Instance.ID, ev.Instance.Weight)
	if ev.Instance.Status == discovery.StatusDraining {
		s += " draining"
	}
	if len(ev.Instance.Metadata) > 0 {
		s += fmt.Sprint(" md=", ev.Instance.Metadata)
	}
	return s
}

func watch(t *testing.T, r *discovery.Registry, service string) <-chan discovery.Event {
	t.Helper()
	ch, err := r.Watch(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// A watcher on one Registry sees every kind of change made on another, in
// revision order, each once.
func TestWatchSeesEveryKindOfChange(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k, discovery.WithCloseDrain(0))
			a, b := w.registry(t), w.registry(t)
			g1 := mustRegister(t, a, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
			if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(1)); err != nil {
				t.Fatal(err)
			}
			ch := watch(t, b, "db_svc")
			expect := func(want string) discovery.Event {
				t.Helper()
				ev := next(t, ch, 2*time.Second)
				if got := describe(ev); got != want {
					t.Fatalf("event %q; want %q", got, want)
				}
				return ev
			}
			// the current state first
			expect("instance_added 10.0.0.1:1 w=100")
			first := expect(`config_changed {"n":1}`)
			steps := []struct {
				do   func()
				want string
			}{
				{func() { mustRegister(t, a, inst("db_svc", "10.0.0.2", 2)) }, "instance_added 10.0.0.2:2 w=100"},
				{func() { _ = g1.SetWeight(ctx, 7) }, "instance_updated 10.0.0.1:1 w=7"},
				{func() {
					_ = g1.Update(ctx, func(in *discovery.Instance) { in.Metadata = map[string]string{"v": "2"} })
				}, "instance_updated 10.0.0.1:1 w=7 md=map[v:2]"},
				{func() { _, _ = a.UpdateConfig(ctx, "db_svc", cfgDoc(2)) }, `config_changed {"n":2}`},
				{func() { _ = a.Deregister(ctx, "db_svc", "10.0.0.2:2") }, "instance_removed 10.0.0.2:2 w=100"},
			}
			rev := first.Revision
			for _, s := range steps {
				s.do()
				ev := expect(s.want)
				if ev.Revision <= rev || ev.Service != "db_svc" {
					t.Fatalf("%s at revision %d after %d", describe(ev), ev.Revision, rev)
				}
				rev = ev.Revision
			}
			// Drain: the draining mark, then the removal.
			done := make(chan error, 1)
			go func() { done <- g1.Drain(ctx) }()
			expect("instance_updated 10.0.0.1:1 w=7 draining md=map[v:2]")
			expect("instance_removed 10.0.0.1:1 w=7 draining md=map[v:2]")
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			quiet(t, ch, 100*time.Millisecond)
		})
	}
}

// A watcher sees a configuration change made on another Registry by its
// change message: the clock stands still, so no snapshot stops being fresh
// and nothing else could bring it. How fast is the invalidation benchmark's
// to say (BenchmarkInvalidation); this logs what it saw.
func TestWatchHearsChangesMadeOnOtherRegistries(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k, discovery.WithClock(discoverytest.NewClock(t0)))
			a := w.registry(t)
			var chans []<-chan discovery.Event
			for range 3 {
				chans = append(chans, watch(t, w.registry(t), "db_svc"))
			}
			var lat []time.Duration
			for i := 1; i <= 30; i++ {
				start := time.Now()
				if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(i)); err != nil {
					t.Fatal(err)
				}
				for _, ch := range chans {
					ev := next(t, ch, 2*time.Second)
					if ev.Kind != discovery.EventConfigChanged || string(ev.Config) != string(cfgDoc(i)) {
						t.Fatalf("got %s; want config %d", describe(ev), i)
					}
					lat = append(lat, time.Since(start))
				}
			}
			slices.Sort(lat)
			p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
			t.Logf("config change seen by watchers on other Registries (from the start of UpdateConfig): p50 %v, p99 %v, max %v over %d", p50, p99, worst, len(lat))
		})
	}
}

// A change whose message is lost still reaches a watcher when its snapshot
// stops being fresh, though nobody looks the service up.
func TestWatchSurvivesLostMessage(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(t0)
			a, b := w.registry(t, discovery.WithClock(clock)), w.registry(t, discovery.WithClock(clock))
			subscribed(t, w, a, 2)
			subscribed(t, w, b, 2)
			if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(1)); err != nil {
				t.Fatal(err)
			}
			ch := watch(t, b, "db_svc")
			if ev := next(t, ch, 2*time.Second); string(ev.Config) != `{"n":1}` {
				t.Fatalf("first event %s", describe(ev))
			}
			// Written and written through to Redis as a writer does, but
			// never announced.
			cs := a.Store().(discovery.ConfigStore)
			if _, _, err := cs.SetConfig(ctx, "db_svc", cfgDoc(2), clock.Now(), 20); err != nil {
				t.Fatal(err)
			}
			svc, err := a.Store().Load(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if err := w.rdb.Set(ctx, l2Key(w.ns, "db_svc"), codec.Encode(svc, clock.Now()), time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			clock.Advance(shortestFresh - time.Millisecond)
			quiet(t, ch, 100*time.Millisecond)
			clock.Advance(longestFresh - shortestFresh + time.Millisecond)
			if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventConfigChanged || string(ev.Config) != `{"n":2}` {
				t.Fatalf("after the freshness window: %s; want the lost change", describe(ev))
			}
		})
	}
}

// A Watch of a service that does not exist yet sees its first
// registration within the freshness window when the registration's message
// is lost, as Watch promises, even with a negative TTL longer than that
// window: the hub, woken at the window's end, found L1's "not found" still
// fresh and kept it for the whole negative TTL (30 s here).
func TestWatchOfAnUnknownServiceSeesALostRegistrationWithinTheWindow(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			clock := discoverytest.NewClock(t0)
			b := w.registry(t, discovery.WithClock(clock), discovery.WithNegativeTTL(30*time.Second))
			subscribed(t, w, b, 1)
			ch := watch(t, b, "db_svc")
			// L1 remembers "not found" (whether or not the hub's first
			// load came first).
			if _, err := b.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("Get before the registration: %v", err)
			}
			// Written behind the caches' backs: no message.
			in := discovery.Instance{ID: "x1", Service: "db_svc", Host: "10.0.0.9", Port: 2, Weight: 1,
				RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}
			if _, err := b.Store().Register(ctx, &in); err != nil {
				t.Fatal(err)
			}
			clock.BlockUntilAt(t0.Add(discovery.DefaultFresh)) // the hub's wake-up at the window's end
			clock.Advance(longestFresh + time.Millisecond)
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_added x1 w=1" {
				t.Fatalf("after the freshness window: %q", ev)
			}
		})
	}
}

// When a message announces a revision that the caches cannot give (earlier
// messages and the write-through lost), the watcher reads the store and
// delivers everything that changed in between.
func TestWatchGapReadsStore(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			b := w.registry(t)
			subscribed(t, w, b, 1)
			ch := watch(t, b, "db_svc")
			mustRegister(t, b, inst("db_svc", "10.0.0.1", 1))
			if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceAdded {
				t.Fatalf("first event %s", describe(ev))
			}
			// Three changes behind every cache's back; only the last is announced.
			var rev int64
			for i := 2; i <= 3; i++ {
				in := discovery.Instance{ID: fmt.Sprint("x", i), Service: "db_svc", Host: "10.0.0.9", Port: i, Weight: 1,
					RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
				if _, err := b.Store().Register(ctx, &in); err != nil {
					t.Fatal(err)
				}
			}
			cs := b.Store().(discovery.ConfigStore)
			rev, _, err := cs.SetConfig(ctx, "db_svc", cfgDoc(9), time.Now(), 20)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.rdb.Publish(ctx, w.ns+":changes", fmt.Sprintf("%d db_svc", rev)).Err(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for range 3 {
				ev := next(t, ch, 2*time.Second)
				if ev.Revision != rev {
					t.Fatalf("%s at revision %d; want %d", describe(ev), ev.Revision, rev)
				}
				got = append(got, describe(ev))
			}
			if want := `[instance_added x2 w=1 instance_added x3 w=1 config_changed {"n":9}]`; fmt.Sprint(got) != want {
				t.Fatalf("events %v; want %s", got, want)
			}
		})
	}
}

// 100 updates in a burst reach every watcher, on every Registry, in order,
// without duplicates, ending at the final revision.
func TestWatchBurstInOrder(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			regs := []*discovery.Registry{w.registry(t), w.registry(t), w.registry(t)}
			type result struct {
				n    int
				last int64
				err  string
			}
			results := make([]result, 2*len(regs))
			var wg sync.WaitGroup
			for i := range results {
				ch := watch(t, regs[i%len(regs)], "db_svc")
				wg.Go(func() {
					res := &results[i]
					var rev, cfgRev int64
					for {
						select {
						case ev := <-ch:
							if ev.Kind != discovery.EventConfigChanged {
								res.err = "unexpected " + describe(ev)
								return
							}
							var c struct{ N int64 }
							_ = json.Unmarshal(ev.Config, &c)
							if ev.Revision <= rev || c.N <= cfgRev {
								res.err = fmt.Sprintf("revision %d (config %d) after %d (config %d)", ev.Revision, c.N, rev, cfgRev)
								return
							}
							rev, cfgRev = ev.Revision, c.N
							res.n++
							res.last = c.N
							if c.N == 100 {
								return
							}
						case <-time.After(5 * time.Second):
							res.err = fmt.Sprintf("stuck at config %d", cfgRev)
							return
						}
					}
				})
			}
			start := time.Now()
			for i := 1; i <= 100; i++ {
				if _, err := regs[0].UpdateConfig(ctx, "db_svc", cfgDoc(i)); err != nil {
					t.Fatal(err)
				}
			}
			writes := time.Since(start)
			wg.Wait()
			for i, res := range results {
				if res.err != "" || res.last != 100 {
					t.Errorf("watcher %d (Registry %d): %s, last config %d", i, i%len(regs), res.err, res.last)
				}
			}
			t.Logf("100 updates in %v; events received per watcher: %v", writes, results)
		})
	}
}

// A watcher that never reads blocks neither writers nor other watchers;
// when it reads, it gets the latest state of each instance.
func TestWatchSlowConsumer(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k, discovery.WithCloseDrain(0))
			a, b := w.registry(t), w.registry(t)
			slow := watch(t, b, "db_svc")
			fast := watch(t, b, "db_svc")
			const n = 20
			var regs []*discovery.Registration
			start := time.Now()
			for i := range n {
				regs = append(regs, mustRegister(t, a, inst("db_svc", "10.0.0.1", 1000+i)))
			}
			for round := 1; round <= 5; round++ {
				for _, g := range regs {
					if err := g.SetWeight(ctx, round); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, g := range regs[:n/2] {
				if err := g.Deregister(ctx); err != nil {
					t.Fatal(err)
				}
			}
			writes := time.Since(start)
			// want: the second half, at weight 5
			want := map[string]int{}
			for _, g := range regs[n/2:] {
				want[g.Instance().ID] = 5
			}
			apply := func(state map[string]int, ev discovery.Event) {
				switch ev.Kind {
				case discovery.EventInstanceAdded, discovery.EventInstanceUpdated:
					state[ev.Instance.ID] = ev.Instance.Weight
				case discovery.EventInstanceRemoved:
					delete(state, ev.Instance.ID)
				}
			}
			fastState := map[string]int{}
			fastN := 0
			deadline := time.After(10 * time.Second)
			for fmt.Sprint(fastState) != fmt.Sprint(want) {
				select {
				case ev := <-fast:
					apply(fastState, ev)
					fastN++
				case <-deadline:
					t.Fatalf("the reading watcher is stuck at %v", fastState)
				}
			}
			// The hub hands each change to one watcher after the other, so
			// the last ones may not have reached the slow watcher yet: read
			// now, it would take an addition still pending and then its
			// removal, two events where it should get none (16 and 18 of
			// at most 12, twice, under a CPU hog). A new Watch joins the hub
			// under the lock that hub holds while handing a change out, so
			// once it returns every change the fast one saw was handed to
			// the slow one too.
			barrier, stop := context.WithCancel(ctx)
			if _, err := b.Watch(barrier, "db_svc"); err != nil {
				t.Fatal(err)
			}
			stop()
			// The slow one now reads what it has, until it is quiet.
			slowState := map[string]int{}
			var slowEvs []string
			seen := map[string]bool{}
			for done := false; !done; {
				select {
				case ev := <-slow:
					key := fmt.Sprint(ev.Kind, ev.Instance.ID, ev.Revision, ev.Instance.Weight)
					if seen[key] {
						t.Fatalf("duplicate event %s at %d", describe(ev), ev.Revision)
					}
					seen[key] = true
					apply(slowState, ev)
					slowEvs = append(slowEvs, fmt.Sprintf("%s@%d", describe(ev), ev.Revision))
				case <-time.After(300 * time.Millisecond):
					done = true
				}
			}
			t.Logf("%d writes in %v; the reading watcher got %d events, the one that did not read %d", n*7-n/2, writes, fastN, len(slowEvs))
			if fmt.Sprint(slowState) != fmt.Sprint(want) {
				t.Fatalf("the slow watcher ends with %v; want %v", slowState, want)
			}
			// One event per instance it must learn about (the live ones), plus
			// the one it held all along, plus that one's removal if it was
			// removed.
			if len(slowEvs) > n/2+2 {
				t.Fatalf("the slow watcher got %d events; want at most one per live instance, plus the one it held and its removal: %v", len(slowEvs), slowEvs)
			}
		})
	}
}

// An instance whose lease ends without a deregistration is reported
// removed when the lease ends.
func TestWatchLeaseExpiry(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock))
	dead := discovery.Instance{ID: "dead", Service: "db_svc", Host: "10.0.0.2", Port: 2, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(8 * time.Second)}
	if _, err := backend.Register(ctx, &dead); err != nil {
		t.Fatal(err)
	}
	ch := watch(t, a, "db_svc")
	if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceAdded {
		t.Fatalf("first event %s", describe(ev))
	}
	for clock.Now().Before(t0.Add(8 * time.Second)) {
		quiet(t, ch, 10*time.Millisecond)
		clock.Advance(time.Second)
	}
	if ev := next(t, ch, 2*time.Second); ev.Kind != discovery.EventInstanceRemoved || ev.Instance.ID != "dead" {
		t.Fatalf("at the end of the lease: %s", describe(ev))
	}
}

// Close closes every watch channel; a watch's context closes its own.
func TestWatchChannelsClose(t *testing.T) {
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()))
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	ctx, cancel := context.WithCancel(context.Background())
	own, err := r.Watch(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drained := func(ch <-chan discovery.Event) bool {
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return true
				}
			case <-time.After(2 * time.Second):
				return false
			}
		}
	}
	if !drained(own) {
		t.Fatal("the channel stayed open after its context ended")
	}
	var chans []<-chan discovery.Event
	for _, svc := range []string{"db_svc", "db_svc", "other", "not_yet"} {
		chans = append(chans, watch(t, r, svc))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		if !drained(ch) {
			t.Fatalf("watch %d stayed open after Close", i)
		}
	}
	if _, err := r.Watch(context.Background(), "db_svc"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Watch after Close = %v; want ErrClosed", err)
	}
}

// Changes made while a process was cut from Redis reach its watchers when
// it resubscribes, not a freshness window later: its clock never moves here,
// so only the resynchronisation can deliver them.
func TestWatchResyncsAfterReconnect(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	sql := testutil.SQLite(t)
	w := &world{ns: ns, options: []discovery.Option{discovery.WithDB(sql), discovery.WithNamespace(ns)}}
	w.rdb = testutil.RedisClient(t, addr, db, ns)
	a := w.registry(t, discovery.WithRedis(w.rdb))
	b := w.registry(t, discovery.WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)), discovery.WithClock(discoverytest.NewClock(t0)))
	subscribed(t, w, a, 2)
	subscribed(t, w, b, 2)
	ch := watch(t, b, "db_svc")
	if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch, 2*time.Second); string(ev.Config) != `{"n":1}` {
		t.Fatalf("first event %s", describe(ev))
	}
	// The event may come from the hub's first load, before the message.
	waitFor(t, 2*time.Second, "the message of the first change", func() bool { return b.Stats().Received == 1 })
	proxy.Down()
	received := b.Stats().Received
	if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(2)); err != nil {
		t.Fatal(err)
	}
	quiet(t, ch, 300*time.Millisecond)
	if n := b.Stats().Received; n != received {
		t.Fatalf("b received %d messages while cut off", n-received)
	}
	resyncs := b.Stats().Resyncs
	proxy.Up()
	if ev := next(t, ch, 5*time.Second); ev.Kind != discovery.EventConfigChanged || string(ev.Config) != `{"n":2}` {
		t.Fatalf("after the reconnection: %s", describe(ev))
	}
	waitFor(t, 2*time.Second, "the resynchronisation that brought it", func() bool { return b.Stats().Resyncs > resyncs })
}

// A watcher sees its own Registry's writes at once where nothing announces
// changes (a database without Redis): Get shows them at once
// (read-your-writes), and the watcher waited for the end of the freshness
// window.
func TestWatchSeesOwnWritesWithoutFanOut(t *testing.T) {
	for _, k := range allWorlds {
		if k.redis || k.sql == nil {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0) // never advanced: the freshness window never ends
			w := newWorld(t, k, discovery.WithClock(clock))
			r := w.registry(t)
			g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
			ch := watch(t, r, "db_svc")
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_added 10.0.0.1:1 w=100" {
				t.Fatalf("first event %q", ev)
			}
			mustRegister(t, r, inst("db_svc", "10.0.0.2", 2))
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_added 10.0.0.2:2 w=100" {
				t.Fatalf("after Register: %q", ev)
			}
			if err := g.SetWeight(ctx, 7); err != nil {
				t.Fatal(err)
			}
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_updated 10.0.0.1:1 w=7" {
				t.Fatalf("after SetWeight: %q", ev)
			}
		})
	}
}

// Invalidate reaches this process's own watchers at once, as it reaches its
// Get: a change made behind the caches' backs (here, straight into the
// store) and revealed by Invalidate was shown by Get and not by Watch, whose
// hub nothing told, until the freshness window ended (never, on this clock).
func TestWatchSeesWhatInvalidateReveals(t *testing.T) {
	for _, k := range allWorlds {
		if k.sql == nil || k.cluster {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0) // never advanced: the freshness window never ends
			w := newWorld(t, k, discovery.WithClock(clock))
			r := w.registry(t)
			mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
			ch := watch(t, r, "db_svc")
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_added 10.0.0.1:1 w=100" {
				t.Fatalf("first event %q", ev)
			}
			in := discovery.Instance{ID: "x2", Service: "db_svc", Host: "10.0.0.9", Port: 2, Weight: 1,
				RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}
			if _, err := r.Store().Register(ctx, &in); err != nil {
				t.Fatal(err)
			}
			if err := r.Invalidate(ctx, "db_svc"); err != nil {
				t.Fatal(err)
			}
			if ev := describe(next(t, ch, 2*time.Second)); ev != "instance_added x2 w=1" {
				t.Fatalf("after Invalidate: %q", ev)
			}
			if got := ids(r.Get(ctx, "db_svc")); got != "10.0.0.1:1,x2" {
				t.Fatalf("Get after Invalidate: %s", got)
			}
		})
	}
}

// Instances kept as suspects (self-preservation: several stopped renewing
// together) stay in a Watch as they stay in Get, with the status Get shows,
// and leave it when Get drops them: a reader that applies the events in
// order ends with the instances and statuses Get shows. Watch reported them
// removed at the lapse while Get still returned them, so a reader that kept
// its pool from Watch dropped the very instances self-preservation keeps
// (three of ten here), and got them back as new ones when they renewed.
func TestWatchKeepsSuspectsAsGetDoes(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	writeInstances(t, backend, "db_svc", 10, func(i int) time.Time {
		if i < 3 {
			return t0.Add(ttl) // three stop renewing together
		}
		return t0.Add(time.Hour)
	})
	ch := watch(t, r, "db_svc")
	reader := map[string]discovery.Status{}
	var seen []string
	markers := 0
	// settle writes a marker instance (the backend announces it), reads the
	// events up to its addition and compares what the reader holds with Get.
	settle := func(when string) {
		t.Helper()
		markers++
		id := fmt.Sprintf("m%d", markers)
		in := discovery.Instance{ID: id, Service: "db_svc", Host: "10.0.0.2", Port: 2000 + markers, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: t0.Add(time.Hour)}
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
		for {
			ev := next(t, ch, 5*time.Second)
			seen = append(seen, fmt.Sprintf("%s %s %s", ev.Kind, ev.Instance.ID, ev.Instance.Status))
			switch ev.Kind {
			case discovery.EventInstanceRemoved:
				delete(reader, ev.Instance.ID)
			case discovery.EventInstanceAdded, discovery.EventInstanceUpdated, discovery.EventHealthChanged:
				reader[ev.Instance.ID] = ev.Instance.Status
			}
			if ev.Kind == discovery.EventInstanceAdded && ev.Instance.ID == id {
				break
			}
		}
		svc, err := r.Get(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]discovery.Status{}
		for _, in := range svc.Instances {
			want[in.ID] = in.Status
		}
		if fmt.Sprint(reader) != fmt.Sprint(want) {
			t.Fatalf("%s: the reader holds\n%v\nGet shows\n%v\nafter %q", when, reader, want, seen)
		}
		seen = nil
	}
	settle("before the lapse")
	clock.Set(t0.Add(ttl + time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "11 instances, 3 suspect" {
		t.Fatalf("after the lapse Get shows %s; want the three kept as suspects", got)
	}
	settle("while three are kept as suspects")
	back := discovery.Instance{ID: "i00", Service: "db_svc", Host: "10.0.0.1", Port: 1000, Weight: 100,
		RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := backend.Register(ctx, &back); err != nil { // i00 renews
		t.Fatal(err)
	}
	settle("after one of them renewed")
	clock.Set(t0.Add(ttl + 2*ttl + time.Minute))
	settle("after the grace period")
	if _, ok := reader["i00"]; !ok || len(reader) != 12 {
		t.Fatalf("the reader holds %v after the grace period; want i00 and i03-i09 and the 4 markers", reader)
	}
}

// An event's JSON names the status a health change started from, also when
// it was StatusUnknown (an instance's first check): "previous" was left out
// for that status, the commonest one to start from, as for every event that
// has none, so a reader of the JSON could not tell where a change began.
// Other events still have none.
func TestEventJSONNamesThePreviousStatusOfEveryHealthChange(t *testing.T) {
	in := discovery.Instance{ID: "i1", Service: "db_svc", Host: "10.0.0.1", Port: 1, Status: discovery.StatusHealthy}
	tests := []struct {
		ev   discovery.Event
		want string // in the JSON, or "" for no "previous" at all
	}{
		{discovery.Event{Kind: discovery.EventHealthChanged, Service: "db_svc", Instance: in, Previous: discovery.StatusUnknown}, `"previous":"unknown"`},
		{discovery.Event{Kind: discovery.EventHealthChanged, Service: "db_svc", Instance: in, Previous: discovery.StatusUnhealthy}, `"previous":"unhealthy"`},
		{discovery.Event{Kind: discovery.EventInstanceAdded, Service: "db_svc", Instance: in}, ""},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(b); tt.want != "" && !strings.Contains(got, tt.want) || tt.want == "" && strings.Contains(got, `"previous"`) {
			t.Errorf("%s: %s; want %q", tt.ev.Kind, got, tt.want)
		}
		if !strings.Contains(string(b), `"kind":"`+tt.ev.Kind.String()+`"`) || !strings.Contains(string(b), `"status":"healthy"`) {
			t.Errorf("%s: %s lacks the kind or the instance", tt.ev.Kind, b)
		}
	}
}

// Each reader of a Watch gets events of its own, as it gets its own
// configuration: two Watch calls on one service shared the instance's tags
// and metadata, so a reader that sorted the tags it was given, or edited
// the metadata, changed the other reader's events (a data race when they
// run concurrently).
func TestWatchReadersDoNotShareInstances(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	a, b := watch(t, r, "db_svc"), watch(t, r, "db_svc")
	in := inst("db_svc", "10.0.0.1", 80)
	in.Tags, in.Metadata = []string{"blue", "alpha"}, map[string]string{"team": "search"}
	g := mustRegister(t, r, in)
	evA, evB := next(t, a, 5*time.Second), next(t, b, 5*time.Second)
	if evA.Kind != discovery.EventInstanceAdded || evB.Kind != discovery.EventInstanceAdded {
		t.Fatalf("got %s and %s; want the addition on both", describe(evA), describe(evB))
	}
	slices.Sort(evA.Instance.Tags)
	evA.Instance.Metadata["team"] = "edited"
	if got := evB.Instance.Tags; !slices.Equal(got, []string{"blue", "alpha"}) || evB.Instance.Metadata["team"] != "search" {
		t.Fatalf("the other reader's addition has tags %v, metadata %v; want [blue alpha], team=search", got, evB.Instance.Metadata)
	}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Metadata = map[string]string{"team": "ads"} }); err != nil {
		t.Fatal(err)
	}
	evA, evB = next(t, a, 5*time.Second), next(t, b, 5*time.Second)
	evA.Instance.Metadata["team"] = "edited"
	if evB.Kind != discovery.EventInstanceUpdated || evB.Instance.Metadata["team"] != "ads" {
		t.Fatalf("the other reader got %s; want the update with team=ads", describe(evB))
	}
}

// What the library encodes to JSON (a Service from Get or the admin API, an
// Event from Watch) decodes back to the same value: the names of statuses,
// methods and event kinds had no way back ("json: cannot unmarshal string
// into Go struct field Event.kind of type discovery.EventKind"). An unknown
// name is a ValidationError.
func TestJSONOfServicesAndEventsDecodesBack(t *testing.T) {
	in := discovery.Instance{ID: "a", Service: "db_svc", Host: "10.0.0.1", Port: 80, Method: discovery.MethodRouter, Weight: 100,
		Status: discovery.StatusDraining, RegisteredAt: t0.UTC(), ExpiresAt: t0.Add(time.Minute).UTC()}
	svc := discovery.Service{Name: "db_svc", Revision: 7, Instances: []discovery.Instance{in}}
	b, err := json.Marshal(svc)
	if err != nil {
		t.Fatal(err)
	}
	var gotSvc discovery.Service
	if err := json.Unmarshal(b, &gotSvc); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if len(gotSvc.Instances) != 1 || gotSvc.Instances[0].Status != discovery.StatusDraining || gotSvc.Instances[0].Method != discovery.MethodRouter {
		t.Fatalf("%s decoded to %+v", b, gotSvc)
	}
	ev := discovery.Event{Kind: discovery.EventHealthChanged, Service: "db_svc", Revision: 7, Instance: in, Previous: discovery.StatusHealthy}
	if b, err = json.Marshal(ev); err != nil {
		t.Fatal(err)
	}
	var gotEv discovery.Event
	if err := json.Unmarshal(b, &gotEv); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if gotEv.Kind != ev.Kind || gotEv.Previous != ev.Previous || gotEv.Instance.Status != in.Status {
		t.Fatalf("%s decoded to %+v", b, gotEv)
	}
	for _, bad := range []string{`{"kind":"instance_exploded"}`, `{"previous":"sleepy"}`, `{"instance":{"method":"carrier_pigeon"}}`} {
		var e discovery.Event
		err := json.Unmarshal([]byte(bad), &e)
		var ve *discovery.ValidationError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) {
			t.Errorf("decoding %s: %v; want a ValidationError", bad, err)
		}
	}
}
