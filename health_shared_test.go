package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/health"
	"github.com/rssbot/discovery/internal/testutil"
)

// fleet is several Registry values ("processes") on one fake clock using one
// service served by probe servers.
type fleet struct {
	t       *testing.T
	clock   *discoverytest.Clock
	regs    []*discovery.Registry
	servers []*probeServer
	ids     []string
}

// A fleet's Redis calls have 5 s (WithRedisTimeout), not 250 ms: one
// call past the timeout is Redis failing, the L2's breaker trips, and
// that process probes every instance itself until Redis answers its probe
// again, by design; with 250 ms, load on the host (a race build, ten
// processes, other test binaries) made it so in 2 runs of TestSharedProbing
// in 30, 4 in 15 with two CPU hogs, each failure after a timed-out call,
// and an instance was probed by three processes in an interval. Tests of Redis failing refuse its
// connections (at once) or pass their own timeout. The registries' warnings
// are logged when a test fails.
func newFleet(t *testing.T, w *world, clock *discoverytest.Clock, processes, instances int, opts ...discovery.Option) *fleet {
	t.Helper()
	f := &fleet{t: t, clock: clock}
	zc, warnings := observer.New(zap.WarnLevel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range warnings.All() {
				t.Logf("a process warned: %s %v", e.Message, e.ContextMap())
			}
		}
	})
	base := []discovery.Option{discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout),
		discovery.WithRedisTimeout(5 * time.Second), discovery.WithLogger(zap.New(zc))}
	for range processes {
		r := w.registry(t, append(base[:len(base):len(base)], opts...)...)
		discovery.SettleHealth(r) // its first scan is over: every process finds the service at the same scan
		for _, o := range f.regs {
			if o.ProcessID() == r.ProcessID() {
				t.Fatalf("two Registry values share the process ID %s", r.ProcessID())
			}
		}
		f.regs = append(f.regs, r)
	}
	for range instances {
		p := newProbeServer(t, "")
		in := p.instance("web")
		addInstance(t, f.regs[0], in)
		f.servers = append(f.servers, p)
		f.ids = append(f.ids, in.ID)
	}
	f.use()
	return f
}

// use looks the service up in every process, as callers do.
func (f *fleet) use() {
	for _, r := range f.regs {
		if _, err := r.Get(context.Background(), "web"); err != nil {
			f.t.Fatalf("Get: %v", err)
		}
	}
}

func (f *fleet) step(d time.Duration) {
	step(f.clock, d, f.regs...)
	f.use()
}

func (f *fleet) hits() []int64 {
	out := make([]int64, len(f.servers))
	for i, p := range f.servers {
		out[i] = p.hits.Load()
	}
	return out
}

// interval runs one health interval and returns the probes each instance
// received in it.
func (f *fleet) interval() []int64 { return f.intervals(1) }

// intervals runs n health intervals and returns the probes each instance
// received in them.
func (f *fleet) intervals(n int) []int64 {
	before := f.hits()
	for end := f.clock.Now().Add(time.Duration(n) * hInterval); f.clock.Now().Before(end); {
		f.step(hStep)
	}
	after := f.hits()
	for i := range after {
		after[i] -= before[i]
	}
	return after
}

func sum(xs []int64) (s int64) {
	for _, x := range xs {
		s += x
	}
	return s
}

func maxOf(xs []int64) (m int64) {
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// With 10 processes sharing Redis and using 50 instances, each instance is
// probed by at most two of them: at most 100 probes per interval, not 500.
// Every process sees a killed instance as unhealthy within 3 intervals.
func TestSharedProbing(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			f := newFleet(t, w, clock, 10, 50)
			f.step(time.Second) // every process finds the service at its next scan
			first := f.interval()
			var steady []int64
			total := make([]int64, len(f.servers))
			for range 4 {
				per := f.interval()
				steady = append(steady, sum(per))
				// each prober waits 1.1-1.2 intervals between probes, so two
				// probers make at most 2 probes per instance per interval
				if m := maxOf(per); m > 2 {
					t.Fatalf("an instance was probed %d times in one interval; want at most 2 (probes per instance: %v)", m, per)
				}
				for i := range per {
					total[i] += per[i]
				}
			}
			for i, n := range total {
				if n < 6 { // two probers over 4 intervals: at least 3 each
					t.Fatalf("instance %d was probed %d times in 4 intervals; want at least 6 (%v)", i, n, total)
				}
			}
			t.Logf("probes per interval: first %d (processes joining), then %v", sum(first), steady)
			for _, n := range steady {
				if n > 100 {
					t.Fatalf("%d probes in one interval; want at most 100", n)
				}
			}
			for _, r := range f.regs {
				for _, id := range f.ids {
					if h := healthOf(t, r, "web", id); h.Status != discovery.StatusHealthy {
						t.Fatalf("process %s sees %s as %v", r.ProcessID(), id, h.Status)
					}
				}
			}

			victim, id := f.servers[7], f.ids[7]
			victim.kill()
			killed := clock.Now()
			seeing := func() int {
				n := 0
				for _, r := range f.regs {
					if viewStatus(t, r, "web", id) == discovery.StatusUnhealthy {
						n++
					}
				}
				return n
			}
			for seeing() == 0 {
				if clock.Now().Sub(killed) > 4*hInterval {
					t.Fatalf("no process saw the killed instance unhealthy within 4 intervals")
				}
				f.step(hStep)
			}
			// the others learn it from Redis at once
			waitFor(t, 2*time.Second, "every process to see the killed instance unhealthy", func() bool { return seeing() == len(f.regs) })
			detected := clock.Now().Sub(killed)
			t.Logf("every process saw the killed instance unhealthy %v (%.2f intervals) after it died", detected, float64(detected)/float64(hInterval))
			if detected > 3*hInterval {
				t.Fatalf("detected after %v; want within 3 intervals", detected)
			}
			// The probers' results reach every process through Redis: each
			// holds a failing check made since the kill by one of at most two
			// probers. They need not hold the same one: only a result that
			// changes the status is pushed; one that does not (the second
			// prober's next failure) is read at the next refresh, an interval
			// on, and this clock stands still (once, CI's load let the second
			// prober's write land between the push and the processes' reads).
			checkers := map[string]bool{}
			for _, r := range f.regs {
				h := healthOf(t, r, "web", id)
				if h.CheckedBy == "" || h.LastError == "" || h.LastCheck.Before(killed) {
					t.Fatalf("process %s holds no failing check since the kill: %+v", r.ProcessID(), h)
				}
				checkers[h.CheckedBy] = true
			}
			if len(checkers) > 2 {
				t.Fatalf("the latest checks come from %d processes; want at most the two probers: %v", len(checkers), checkers)
			}
		})
	}
}

// Without Redis each process probes every instance it uses on its own.
func TestWithoutRedisEachProcessProbes(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	f := newFleet(t, w, clock, 3, 5)
	f.step(time.Second)
	f.interval()
	// each process probes each instance every 1.1-1.2 intervals: 3 or 4
	// times in 4 intervals
	for i, n := range f.intervals(4) {
		if n < 3*3 || n > 3*4 {
			t.Fatalf("instance %d probed %d times in 4 intervals by 3 processes; want 9-12", i, n)
		}
	}
	for _, r := range f.regs {
		for _, id := range f.ids {
			if h := healthOf(t, r, "web", id); h.CheckedBy != r.ProcessID() || h.Status != discovery.StatusHealthy {
				t.Fatalf("process %s: %+v; want its own healthy result", r.ProcessID(), h)
			}
		}
	}
}

// When Redis goes away, every process probes every instance itself and
// keeps detecting failures; when it comes back, they share again.
func TestSharingFallsBackWhenRedisFails(t *testing.T) {
	ns := testutil.Prefix(t)
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	clock := discoverytest.NewClock(t0)
	w := &world{name: "memory+redis", ns: ns[:len(ns)-1], store: discoverytest.NewBackend(), rdb: rdb}
	w.options = []discovery.Option{discovery.WithNamespace(w.ns), discovery.WithStore(w.store), discovery.WithRedis(rdb)}
	f := newFleet(t, w, clock, 4, 6)
	f.step(time.Second)
	f.interval()
	if per := f.intervals(4); maxOf(per) > 2*4 {
		t.Fatalf("shared: probes per instance in 4 intervals %v; want at most 8 (two probers)", per)
	}
	proxy.Down()
	f.interval() // each process notices
	for i, n := range f.intervals(4) {
		if n < 4*3 {
			t.Fatalf("Redis down: instance %d probed %d times in 4 intervals; want at least 12 (every process)", i, n)
		}
	}
	f.servers[2].kill()
	f.intervals(4)
	for _, r := range f.regs {
		if s := viewStatus(t, r, "web", f.ids[2]); s != discovery.StatusUnhealthy {
			t.Fatalf("with Redis down process %s sees the dead instance as %v", r.ProcessID(), s)
		}
	}
	proxy.Up()
	waitFor(t, 10*time.Second, "sharing through Redis again", func() bool {
		f.step(hStep)
		time.Sleep(10 * time.Millisecond) // the L2 breaker probes Redis on real time
		for _, r := range f.regs {
			if !discovery.HealthSharing(r) {
				return false
			}
		}
		return true
	})
	f.intervals(2)
	if per := f.intervals(4); maxOf(per) > 2*4 {
		t.Fatalf("Redis back: probes per instance in 4 intervals %v; want at most 8 again", per)
	}
}

// Only the registering process can run a router instance's check; with
// Redis every other process that uses the service sees its results.
func TestRouterResultsReachOtherProcesses(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
			owner, other := w.registry(t), w.registry(t)
			var mu sync.Mutex
			var failing error
			g, err := owner.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.7.0.1", Port: 9, Method: discovery.MethodRouter},
				discovery.WithCheckFunc(func(context.Context) error {
					mu.Lock()
					defer mu.Unlock()
					return failing
				}))
			if err != nil {
				t.Fatal(err)
			}
			id := g.Instance().ID
			until := func(want discovery.Status) {
				t.Helper()
				for start := clock.Now(); ; {
					_, _ = other.Get(ctx, "router_svc")
					if h := healthOf(t, other, "router_svc", id); h.Status == want {
						if h.CheckedBy != owner.ProcessID() {
							t.Fatalf("checked by %q; want the owner %q", h.CheckedBy, owner.ProcessID())
						}
						return
					}
					if clock.Now().Sub(start) > 5*hInterval {
						t.Fatalf("the other process does not see %v: %+v", want, healthOf(t, other, "router_svc", id))
					}
					step(clock, time.Second, owner, other)
				}
			}
			until(discovery.StatusHealthy)
			mu.Lock()
			failing = errors.New("worker pool exhausted")
			mu.Unlock()
			until(discovery.StatusUnhealthy)
			if s := viewStatus(t, other, "router_svc", id); s != discovery.StatusUnhealthy {
				t.Fatalf("Get in the other process shows %v", s)
			}
		})
	}
}

// Corrupt shared state in Redis and corrupt messages are counted and
// ignored, never a panic; the next probe overwrites the corrupt state. A
// sequence no process writes (the largest int64) is corrupt too: adopted,
// every later write's sequence (one more) wrapped below it, no result was
// ever adopted again, and a healthy instance stayed unhealthy in every
// process that had read it.
func TestCorruptSharedStateIgnored(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			f := newFleet(t, w, clock, 2, 1)
			f.step(time.Second)
			f.interval()
			key := fmt.Sprintf("%s:health:{web}", w.ns)
			for _, v := range []string{"garbage", "h1 1 9 1 0 0 0 0 0 - 0", "h1 99999999999999 3 0 1 0 3 3 3 ZZ 0",
				"h1 9223372036854775807 3 0 1 0 3 3 3 - 0"} {
				if err := w.rdb.HSet(ctx, key, f.ids[0], v).Err(); err != nil {
					t.Fatal(err)
				}
				if err := w.rdb.Publish(ctx, w.ns+":health", "web "+f.ids[0]+" "+v).Err(); err != nil {
					t.Fatal(err)
				}
				f.interval()
			}
			for _, msg := range []string{"", "web", "web x", "bad/svc x h1", "\x00\xff"} {
				_ = w.rdb.Publish(ctx, w.ns+":health", msg).Err()
			}
			waitFor(t, 2*time.Second, "corrupt data counted", func() bool {
				return discovery.HealthCorrupt(f.regs[0]) > 0 && discovery.HealthCorrupt(f.regs[1]) > 0
			})
			// Counted where users see it: a state or message of a format this
			// release does not read (another release's, mid-upgrade) left
			// health unshared with no sign of it.
			for i, r := range f.regs {
				n := discovery.HealthCorrupt(r)
				if got := r.Stats().L2DecodeErrors; got < n {
					t.Fatalf("process %d: Stats().L2DecodeErrors = %d; want at least the %d health states and messages that did not decode", i, got, n)
				}
			}
			f.interval()
			for _, r := range f.regs {
				if h := healthOf(t, r, "web", f.ids[0]); h.Status != discovery.StatusHealthy {
					t.Fatalf("after corrupt data: %+v", h)
				}
			}
			v, err := w.rdb.HGet(ctx, key, f.ids[0]).Result()
			if err != nil || len(v) < 3 || v[:3] != "h1 " || v == "h1 1 9 1 0 0 0 0 0 - 0" {
				t.Fatalf("the shared state was not rewritten: %q, %v", v, err)
			}
		})
	}
}

// syncGate is a go-redis hook that holds the first heartbeat of one process
// into one member set until released.
type syncGate struct {
	key     string
	id      atomic.Value // string: the process's ID, known once it exists
	once    sync.Once
	held    chan struct{} // closed when the heartbeat is held
	release chan struct{}
}

func (g *syncGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *syncGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *syncGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			args := fmt.Sprint(cmd.Args()...)
			if id, _ := g.id.Load().(string); id != "" && strings.Contains(args, g.key) && strings.Contains(args, id) {
				g.once.Do(func() {
					close(g.held)
					<-g.release
				})
			}
		}
		return next(ctx, cmd)
	}
}

// A process that stops using a service while its sync of the service is
// still on its way to Redis leaves the service's members all the same: the
// heartbeat must not land after the removal and keep the process a member
// (a prober the others leave instances to) for 3 intervals.
func TestLeaveDuringSyncLeaves(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			gate := &syncGate{key: w.ns + ":hmembers:{web}", held: make(chan struct{}), release: make(chan struct{})}
			w.rdb.AddHook(gate)
			r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithRedisTimeout(5*time.Second))
			gate.id.Store(r.ProcessID())
			released := false
			defer func() {
				if !released {
					close(gate.release) // let a held sync end if the test fails first
				}
			}()
			discovery.SettleHealth(r)
			addInstance(t, r, newProbeServer(t, "").instance("web"))
			if _, err := r.Get(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Second)
			discovery.StepHealth(r) // the scan finds web and starts its first sync
			select {
			case <-gate.held:
			case <-time.After(5 * time.Second):
				t.Fatal("the first sync of web did not reach Redis")
			}
			clock.Advance(time.Minute)
			discovery.StepHealth(r) // web is no longer used: the monitor drops it
			// whatever the drop started besides the held sync (a removal
			// from the members) ends before the heartbeat goes on
			waitFor(t, 5*time.Second, "the jobs besides the held sync", func() bool { return discovery.HealthJobs(r) == 1 })
			released = true
			close(gate.release)
			discovery.SettleHealth(r)
			members, err := w.rdb.ZRange(ctx, gate.key, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(members, r.ProcessID()) {
				t.Fatalf("members of web after the process stopped using it: %v; want it gone", members)
			}
		})
	}
}

// casFailer is a go-redis hook that fails every compare-and-set of a
// shared health state (the one script with a single key, the health hash).
// casFailer fails every write of a check's result: at once, or with hang
// when the call's context ends, as a call to a black-holed Redis does.
type casFailer struct {
	failed atomic.Int64
	hang   bool
}

func (h *casFailer) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *casFailer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *casFailer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && len(args) > 3 &&
			fmt.Sprint(args[2]) == "1" && strings.Contains(fmt.Sprint(args[3]), ":health:{") {
			h.failed.Add(1)
			err := errors.New("injected failure")
			if h.hang {
				<-ctx.Done()
				err = ctx.Err()
			}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// A Redis call of health sharing that fails is a failed Redis call like
// any other: counted in Stats().L2Errors (and discovery_backend_errors_total)
// and reported to the breaker, whichever call it was, the write of a check's
// result included.
func TestFailedSharedWriteCounted(t *testing.T) {
	for _, k := range redisWorlds() {
		for _, hang := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/timeout=%v", k.name, hang), func(t *testing.T) { failedSharedWriteCounted(t, k, hang) })
		}
	}
}

// failedSharedWriteCounted is one run of TestFailedSharedWriteCounted: a
// write that fails at once, or (hang) one that ends at the Redis timeout,
// which is Redis's failure, not a caller giving up.
func failedSharedWriteCounted(t *testing.T, k worldKind, hang bool) {
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, k)
	h := &casFailer{hang: hang}
	w.rdb.AddHook(h)
	redisTO := 5 * time.Second
	if hang {
		// no shorter than the client's own timeouts, or New would use a
		// clone of it, which has no hooks
		switch c := w.rdb.(type) {
		case *redis.Client:
			redisTO = max(c.Options().ReadTimeout, c.Options().WriteTimeout)
		case *redis.ClusterClient:
			redisTO = max(c.Options().ReadTimeout, c.Options().WriteTimeout)
		}
	}
	f := newFleet(t, w, clock, 1, 1, discovery.WithRedisTimeout(redisTO)) // the client as given, with its hooks
	f.step(time.Second)
	for f.servers[0].hits.Load() == 0 || h.failed.Load() == 0 {
		if clock.Now().Sub(t0) > 3*hInterval {
			t.Fatalf("no shared write of a check's result within 3 intervals (%d probes, %d writes, stats %+v)", f.servers[0].hits.Load(), h.failed.Load(), f.regs[0].Stats())
		}
		f.step(hStep)
	}
	// a write that hangs ends at the Redis timeout, in real time
	waitFor(t, redisTO+5*time.Second, "Stats().L2Errors counting the failed writes of shared health", func() bool {
		return f.regs[0].Stats().L2Errors > 0
	})
}

// Health results of two deployments kept apart by Redis database, under
// one namespace, stay apart too: pub/sub channels are not per database.
// A process adopted the other deployment's status of an instance with the
// same ID (an address both use), which it does not even check itself.
func TestRedisDatabasesKeepHealthApart(t *testing.T) {
	ctx := context.Background()
	addr, db, _ := testutil.RedisAddr(t)
	clock := discoverytest.NewClock(t0)
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	process := func(db int) *discovery.Registry {
		r, err := discovery.New(discovery.WithNamespace(ns), discovery.WithDB(testutil.SQLite(t)),
			discovery.WithRedis(testutil.RedisClient(t, addr, db, ns)), discovery.WithClock(clock),
			discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		discovery.SettleHealth(r)
		return r
	}
	prod, staging := process(db), process(db+1)
	p := newProbeServer(t, "")
	p.set(mode500)
	shared := p.instance("web")
	addInstance(t, staging, shared)
	unchecked := shared
	unchecked.Check = discovery.CheckNone // prod never probes it: any status it shows came from elsewhere
	addInstance(t, prod, unchecked)
	// a router instance without a check function here: not probed by prod,
	// yet it takes shared results (one with its checks off would not)
	marker := discovery.Instance{ID: "marker", Service: "web", Host: "10.0.0.9", Port: 1, Weight: 1, Method: discovery.MethodRouter,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
	addInstance(t, prod, marker)
	for _, r := range []*discovery.Registry{prod, staging} {
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	for end := clock.Now().Add(5 * hInterval); clock.Now().Before(end); { // staging finds its instance unhealthy and shares it
		step(clock, hStep, prod, staging)
	}
	if got := viewStatus(t, staging, "web", shared.ID); got != discovery.StatusUnhealthy {
		t.Fatalf("staging shows %v; want unhealthy", got)
	}
	// A change on prod's own channel, published after staging's: once prod
	// shows it, prod has read every message sent before it.
	st := health.New()
	st.Seq, st.Status, st.Score = 1, discovery.StatusWarning, 0.5
	rdb := testutil.RedisClient(t, addr, db, ns)
	if err := rdb.Publish(ctx, ns+":health", health.EncodeMessage("web", marker.ID, &st)).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "prod's own health message", func() bool {
		return viewStatus(t, prod, "web", marker.ID) == discovery.StatusWarning
	})
	if got := viewStatus(t, prod, "web", shared.ID); got == discovery.StatusUnhealthy {
		t.Fatalf("prod shows %s %v, as staging (Redis database %d) found it; want prod's own view", shared.ID, got, db+1)
	}
}

// A process whose health subscription went silent without being closed (a
// partition, a crashed host: its pings are written without error, nothing
// comes back) subscribes again and reads the shared states: go-redis's
// Channel kept the connection as long as the kernel did, many minutes, deaf
// to every status change the other processes announced, which reached it
// only at its own syncs, an interval apart, with no resynchronisation.
// Here the deaf process's clock stands still: no sync of its own comes.
func TestSilentHealthSubscriptionIsReplaced(t *testing.T) {
	ctx := context.Background()
	ns := testutil.Prefix(t)
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	direct, behind := testutil.RedisClient(t, addr, db, ns), testutil.RedisClient(t, proxy.Addr(), db, ns)
	ns = strings.TrimSuffix(ns, "_")
	store := discoverytest.NewBackend()
	ownerClock, otherClock := discoverytest.NewClock(t0), discoverytest.NewClock(t0)
	newReg := func(rdb redis.UniversalClient, clock *discoverytest.Clock) *discovery.Registry {
		return discoverytest.NewRegistry(t, store, discovery.WithNamespace(ns), discovery.WithRedis(rdb), discovery.WithClock(clock),
			discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour), discovery.WithCloseDrain(0))
	}
	owner, other := newReg(direct, ownerClock), newReg(behind, otherClock)
	var failing atomic.Bool
	g, err := owner.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.7.0.1", Port: 9, Method: discovery.MethodRouter},
		discovery.WithCheckFunc(func(context.Context) error {
			if failing.Load() {
				return errors.New("worker pool exhausted")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	id := g.Instance().ID
	for i := 0; viewStatus(t, other, "router_svc", id) != discovery.StatusHealthy; i++ {
		if i > 5*int(hInterval/time.Second) {
			t.Fatalf("the other process does not see the instance healthy: %+v; owner %+v", healthOf(t, other, "router_svc", id), healthOf(t, owner, "router_svc", id))
		}
		step(ownerClock, time.Second, owner)
		step(otherClock, time.Second, other)
	}
	proxy.Stall()
	// The connections the other process's commands used are stalled too:
	// drop them from its pool, so that only its subscriptions stay deaf.
	waitFor(t, 10*time.Second, "a command through the proxy", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		return behind.Ping(pctx).Err() == nil
	})
	failing.Store(true)
	for i := 0; viewStatus(t, owner, "router_svc", id) != discovery.StatusUnhealthy; i++ {
		if i > 5*int(hInterval/time.Second) {
			t.Fatal("the owner does not see its instance unhealthy")
		}
		step(ownerClock, time.Second, owner)
	}
	waitFor(t, 15*time.Second, "the other process to hear of the change", func() bool {
		return viewStatus(t, other, "router_svc", id) == discovery.StatusUnhealthy
	})
}

// A Health call whose caller gave up (its context canceled, its deadline
// passed) before the shared states were read says nothing about Redis: it
// marked sharing as failing, logged "sharing health results through redis
// failed" and made this process probe every instance until its next sync.
func TestHealthCallerGivingUpIsNotARedisFailure(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			core, logs := observer.New(zap.InfoLevel)
			w := newWorld(t, k)
			r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLogger(zap.New(core)))
			p := newProbeServer(t, "")
			in := p.instance("web")
			addInstance(t, r, in)
			discovery.SettleHealth(r)
			if _, err := r.Get(context.Background(), "web"); err != nil { // not synced yet: Health reads the shared states
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, _ = r.Health(ctx, "web")
			if !discovery.HealthSharing(r) {
				t.Fatal("a canceled Health call marked sharing through Redis as failing")
			}
			if n := logs.FilterMessageSnippet("sharing health results through redis failed").Len(); n != 0 {
				t.Fatalf("a canceled Health call logged %d Redis failures; want 0", n)
			}
		})
	}
}

// A process's first Health of a service reports each instance's Shown
// status as Get shows it after the shared results it read: Health read the
// shared results after its lookup, and reported the status the lookup's
// view had from before them (unknown) beside the shared check status
// (unhealthy), where Get right after showed unhealthy.
func TestFirstHealthShowsTheSharedStatus(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
			owner := w.registry(t)
			g, err := owner.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.7.0.1", Port: 9, Method: discovery.MethodRouter},
				discovery.WithCheckFunc(func(context.Context) error { return errors.New("worker pool exhausted") }))
			if err != nil {
				t.Fatal(err)
			}
			id := g.Instance().ID
			for start := clock.Now(); healthOf(t, owner, "router_svc", id).Status != discovery.StatusUnhealthy; {
				if clock.Now().Sub(start) > 5*hInterval {
					t.Fatalf("the owner does not see its instance unhealthy: %+v", healthOf(t, owner, "router_svc", id))
				}
				step(clock, time.Second, owner)
			}
			late := w.registry(t)
			h := healthOf(t, late, "router_svc", id)
			if h.Status != discovery.StatusUnhealthy || h.Shown != discovery.StatusUnhealthy {
				t.Fatalf("first Health in another process: Status %v, Shown %v; want both unhealthy (Get shows %v)",
					h.Status, h.Shown, viewStatus(t, late, "router_svc", id))
			}
		})
	}
}

// An instance whose checks were turned off shows no verdict in a process
// that starts using its service afterwards either: that process adopted
// the shared state the last checks had left in Redis (unhealthy, score 0,
// skipped by every pick), which no check was left to change, until its
// next reload of the service forgot it again, 10 s later here, or for as
// long as it used the service when it looked it up only once.
func TestNewProcessTakesNoVerdictOfChecksTurnedOff(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			a, in := unhealthyInOne(t, w, clock, newProbeServer(t, ""))
			off := in
			off.Check = discovery.CheckNone
			rewritten(t, a, off)
			step(clock, 2*time.Second, a) // a scan finds the checks off
			if got := viewStatus(t, a, "web", in.ID); got != discovery.StatusUnknown {
				t.Fatalf("checks off: the process that checked it shows %v; want unknown", got)
			}
			b := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout))
			for start := clock.Now(); clock.Now().Sub(start) < 2*hInterval; step(clock, hStep, a, b) {
				if got := viewStatus(t, b, "web", in.ID); got != discovery.StatusUnknown {
					t.Fatalf("checks off before this process started: Get shows %v at +%v; want unknown", got, clock.Now().Sub(start))
				}
			}
			if h := healthOf(t, b, "web", in.ID); h.Status != discovery.StatusUnknown || h.Score != 1 {
				t.Errorf("checks off before this process started: Health says %v, score %v; want unknown, 1", h.Status, h.Score)
			}
		})
	}
}

// An instance that moved (registered again under its ID at another
// address) shows no verdict of its old address in a process that starts
// using its service afterwards: the move forgot that verdict in the
// processes that saw it, but not in Redis, and the new process adopted it
// (unhealthy here, its new address never checked) until a prober's check
// of the new address came, up to an interval later.
func TestNewProcessTakesNoVerdictOfTheOldAddress(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			moved := newProbeServer(t, "")
			a, in := unhealthyInOne(t, w, clock, newProbeServer(t, ""))
			at := moved.instance("web")
			at.ID = in.ID
			rewritten(t, a, at)
			step(clock, time.Second, a) // a scan finds it moved
			if got := viewStatus(t, a, "web", in.ID); moved.hits.Load() == 0 && got != discovery.StatusUnknown {
				t.Fatalf("moved, never checked at %s: the process that checked it shows %v; want unknown", at.Addr(), got)
			}
			b := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout))
			for start := clock.Now(); moved.hits.Load() == 0 && clock.Now().Sub(start) < 2*hInterval; step(clock, hStep, a, b) {
				if got := viewStatus(t, b, "web", in.ID); moved.hits.Load() == 0 && got != discovery.StatusUnknown {
					t.Fatalf("moved to %s before this process started, never checked there: Get shows %v at +%v; want unknown",
						at.Addr(), got, clock.Now().Sub(start))
				}
			}
		})
	}
}

// unhealthyInOne registers an instance of "web" at p, whose health
// endpoint it makes fail, on a new Registry of w's (checks every hInterval
// on clock), and waits until that Registry shows it unhealthy.
func unhealthyInOne(t *testing.T, w *world, clock *discoverytest.Clock, p *probeServer) (*discovery.Registry, discovery.Instance) {
	t.Helper()
	a := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout))
	p.set(mode500)
	in := p.instance("web")
	addInstance(t, a, in)
	for start := clock.Now(); viewStatus(t, a, "web", in.ID) != discovery.StatusUnhealthy; step(clock, hStep, a) {
		if clock.Now().Sub(start) > 5*hInterval {
			t.Fatalf("not unhealthy after %v of failing checks", clock.Now().Sub(start))
		}
	}
	return a, in
}

// rewritten writes in to a's store behind its caches, invalidates the
// service and looks it up again, so that a holds in.
func rewritten(t *testing.T, a *discovery.Registry, in discovery.Instance) {
	t.Helper()
	ctx := context.Background()
	addInstance(t, a, in)
	if err := a.Invalidate(ctx, in.Service); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, in.Service); err != nil {
		t.Fatal(err)
	}
}

// A key of the service's shared health that holds another type (a string,
// a list: not the library's) is corrupt data: the next sync deletes it, and
// the processes share their probing again. Every command on it answered
// WRONGTYPE: each sync of the service failed, every process probed every
// instance itself, and nothing removed the key (without an expiry, for
// good).
func TestSharedHealthKeyOfAnotherTypeIsReplaced(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			for _, key := range []string{"hmembers", "health"} {
				t.Run(key, func(t *testing.T) {
					ctx := context.Background()
					clock := discoverytest.NewClock(t0)
					w := newWorld(t, k)
					f := newFleet(t, w, clock, 4, 6)
					f.step(time.Second)
					f.interval()
					name := w.ns + ":" + key + ":{web}"
					if err := w.rdb.Set(ctx, name, "not the library's", 0).Err(); err != nil {
						t.Fatal(err)
					}
					f.intervals(2)
					if per := f.intervals(4); maxOf(per) > 2*4 {
						t.Fatalf("a string at %s: probes per instance in 4 intervals %v; want at most 8 (two probers)", name, per)
					}
					for i, r := range f.regs {
						if !discovery.HealthSharing(r) {
							t.Fatalf("process %d does not share health results", i)
						}
					}
				})
			}
		})
	}
}
