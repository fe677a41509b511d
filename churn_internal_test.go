package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// Tests of a process that runs for weeks: what it keeps per service or per
// instance goes once the service or instance is gone and unused.

// churnInterval is the health interval of the churn tests: short, so that
// the fake clock passes a service's use in a few steps.
const churnInterval = time.Second

// sharedChurnRegistry returns a Registry that shares health results
// through Redis, on a fake clock, over a store of its own.
func sharedChurnRegistry(t *testing.T) (*Registry, *fakeclock.Clock, *memory.Store) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	// Without the service reaper: the clock's steps start its rounds, which
	// delete the churned services (left with nothing) while these tests
	// count what the registrations left. In CI (when a round announced
	// each deletion with a write-through of its own) that was 17 goroutines
	// of the reaper's round still running when
	// TestRegistrationChurnLeavesNothingBehind counted. The deletions are
	// TestReaperDeletesServicesLeftWithNothing's.
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0),
		WithHealthCheck(churnInterval, churnInterval/2), WithServiceReap(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if r.hm.share == nil {
		t.Fatal("health results are not shared through Redis")
	}
	return r, clock, mem
}

// churnName is the name of the i-th short-lived service.
func churnName(i int) string { return "churn_" + strconv.Itoa(i) }

// syncMapLen counts a sync.Map's entries.
func syncMapLen(m interface {
	Range(func(any, any) bool)
}) int {
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}

// A process that shares health results reads a service's shared states at
// most once an interval, and remembers when it last did; once the service
// is no longer used (gone, or no longer looked up), that memory goes with
// the monitor's. Kept, a process that looked up a stream of short-lived
// services (one per deployment, per tenant, per job) held one entry for
// every name it had ever checked, for as long as it ran.
func TestSharedHealthForgetsTheReadsOfServicesNoLongerUsed(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := sharedChurnRegistry(t)
	const services = 200
	for i := range services {
		name := churnName(i)
		if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
			Check: core.CheckNone, RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Health(ctx, name); err != nil { // looked up, and its shared states read
			t.Fatal(err)
		}
		r.hm.settle() // the monitor takes it on, and syncs it
	}
	if n := syncMapLen(&r.hm.share.lastRead); n != services {
		t.Fatalf("%d services checked, %d reads remembered: the test does not read what it means to", services, n)
	}
	// Nothing looks any of them up again: past their use, the monitor
	// drops them.
	for range 3 {
		clock.Advance(time.Duration(r.hm.usedFor(churnInterval)) + scanEvery)
		r.hm.settle()
	}
	if n := len(r.hm.svcs); n != 0 {
		t.Fatalf("the monitor still checks %d services nobody uses", n)
	}
	if n := syncMapLen(&r.hm.share.lastRead); n != 0 {
		t.Fatalf("%d services no longer used, yet this process remembers its reads of the shared health of %d", services, n)
	}
}

// One long-lived service whose instances come and go (pods rescheduled
// under new IDs) while callers look it up, pick, report outcomes (ejecting
// some) and watch it: what this process keeps per instance (its state, the
// monitor's target, the watch's snapshot and what the reader was told) and
// what Redis keeps (the shared health states) stays at about the instances
// the service has, however many came and went.
func TestInstanceChurnKeepsPerInstanceStateBounded(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := sharedChurnRegistry(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	portN, _ := strconv.Atoi(port)
	const name, keep, churn = "web", 4, 300
	id := func(i int) string { return "pod-" + strconv.Itoa(i) }

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := r.Watch(wctx, name)
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range events {
		}
	}()
	defer func() { cancel(); <-drained }()

	for i := range churn {
		if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: id(i), Host: host, Port: portN, Weight: 100,
			HealthPath: "/health", RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if i >= keep {
			gone := id(i - keep)
			if i%3 == 0 { // ejected before it leaves
				for range 5 {
					_ = r.ReportOutcome(name, gone, errors.New("refused"), time.Millisecond)
				}
			}
			if _, err := mem.Deregister(ctx, name, gone); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Get(ctx, name); err != nil {
			t.Fatal(err)
		}
		if sel, err := r.Pick(ctx, name); err == nil {
			sel.Done(nil)
		}
		clock.Advance(churnInterval)
		r.hm.settle()
	}
	r.hm.settle()

	limit := keep + 2
	st := r.stateIfAny(name)
	if st == nil {
		t.Fatal("the service's state is gone")
	}
	if n := len(*st.insts.Load()); n > limit {
		t.Errorf("%d instances came and went, %d live: the service's state holds %d", churn, keep, n)
	}
	if sm := r.hm.svcs[name]; sm == nil {
		t.Error("the monitor does not check the service")
	} else if n := len(sm.targets); n > limit {
		t.Errorf("the monitor holds %d targets for %d live instances", n, keep)
	}
	// The queue holds a check per target, the service's sync, and the end
	// of each ejection in force (those of instances gone included: each
	// leaves the queue when due, at most WithOutlierEjection's max away).
	checks := 0
	for _, it := range r.hm.q {
		switch it.kind {
		case itemCheck, itemSync:
			checks++
		case itemUneject:
			if it.due > clock.Now().UnixNano()+int64(r.opts.health.ejectMax) {
				t.Errorf("an ejection's end queued for %v", time.Unix(0, it.due).Sub(clock.Now()))
			}
		}
	}
	if checks > limit+1 {
		t.Errorf("the monitor's queue holds %d checks and syncs for %d live instances", checks, keep)
	}
	h := r.hubIfAny(name)
	if h == nil {
		t.Fatal("the watched service has no hub")
	}
	h.mu.Lock()
	hubInsts, hubHealth := len(h.last.insts), len(h.last.health)
	told := 0
	for w := range h.watchers {
		w.mu.Lock()
		told = max(told, len(w.told), len(w.byKey))
		w.mu.Unlock()
	}
	h.mu.Unlock()
	if hubInsts > limit || hubHealth > limit || told > limit {
		t.Errorf("the watch holds %d instances and %d health states, its reader %d statuses, for %d live instances",
			hubInsts, hubHealth, told, keep)
	}
	fields, err := r.opts.redisCmd.HLen(ctx, r.hm.share.healthKey(name)).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Shared states of instances gone are deleted once they are stateTTL old.
	if bound := int64(keep + int(stateTTL(churnInterval)/churnInterval) + 2); fields > bound {
		t.Errorf("Redis holds %d shared health states for %d live instances (at most %d expected)", fields, keep, bound)
	}
	t.Logf("state %d, targets %d, queue %d, hub %d/%d, reader %d, shared states %d",
		len(*st.insts.Load()), len(r.hm.svcs[name].targets), len(r.hm.q), hubInsts, hubHealth, told, fields)
}

// Lookups, picks, health reads, configuration reads and watches of a stream
// of names that no service has (typos, probes, made-up names from the
// outside) leave nothing behind once the negative TTL has passed: no
// service state, no hub, no monitored service, no goroutine, and no key in
// Redis past the few the Registry keeps anyway.
func TestLookupsOfMadeUpNamesLeaveNothingBehind(t *testing.T) {
	ctx := context.Background()
	r, clock, _ := sharedChurnRegistry(t)
	rdb := r.opts.redisCmd
	keys := func() int {
		ks, err := rdb.Keys(ctx, r.opts.namespace+":*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(ks)
	}
	r.hm.settle()
	keysBefore, goroutinesBefore := keys(), libraryGoroutines()
	const names = 500
	for i := range names {
		name := churnName(i)
		if _, err := r.Get(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%s): %v", name, err)
		}
		if _, err := r.Pick(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Pick(%s): %v", name, err)
		}
		if _, err := r.Health(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Health(%s): %v", name, err)
		}
		if _, _, err := r.Config(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Config(%s): %v", name, err)
		}
		wctx, cancel := context.WithCancel(ctx)
		ch, err := r.Watch(wctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		for range ch {
		}
		if i%50 == 0 {
			clock.Advance(r.opts.negativeTTL)
			r.hm.settle()
		}
	}
	for range 3 {
		clock.Advance(time.Duration(r.hm.usedFor(churnInterval)) + scanEvery)
		r.hm.settle()
	}
	r.l1.rc.Wait()
	libraryGoroutinesBackTo(t, goroutinesBefore, fmt.Sprintf("%d watches of made-up names ended", names))
	if n := syncMapLen(&r.states); n > 0 {
		t.Errorf("%d made-up names looked up: this process keeps the state of %d services", names, n)
	}
	if n, hooked := syncMapLen(&r.hubs), r.hooked.Load(); n > 0 || hooked != 0 {
		t.Errorf("%d hubs (%d hooked) after every watch ended", n, hooked)
	}
	if n := len(r.hm.svcs); n > 0 {
		t.Errorf("the monitor checks %d services", n)
	}
	if n := syncMapLen(&r.hm.share.lastRead); n > 0 {
		t.Errorf("this process remembers reads of the shared health of %d made-up services", n)
	}
	if n := keys(); n > keysBefore {
		t.Errorf("Redis: %d keys before, %d after lookups of %d made-up names", keysBefore, n, names)
	}
}

// libraryGoroutines counts the goroutines running this package's code
// (other than the test's own): a Redis client's pool, or miniredis, may
// grow by a connection or two without anything leaking.
// libraryGoroutinesBackTo waits up to 2 s for the library's goroutines to
// be at most before again, and fails the test, with every stack, if not.
func libraryGoroutinesBackTo(t *testing.T, before int, after string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); libraryGoroutines() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := libraryGoroutines(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("the Registry's goroutines: %d before, %d after %s\n%s", before, n, after, buf[:runtime.Stack(buf, true)])
	}
}

func libraryGoroutines() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "github.com/rssbot/discovery.") && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

// Registrations that come and go (router instances with a check function,
// a configuration callback and a handler, and plain HTTP ones; each
// service name used once, and one service reused throughout) leave nothing
// behind once deregistered: no registration, instance lock, hub, monitored
// service, service state or goroutine.
func TestRegistrationChurnLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	r, clock, _ := sharedChurnRegistry(t)
	r.hm.settle()
	before := libraryGoroutines()
	const rounds = 100
	for i := range rounds {
		svc := "web"
		if i%2 == 1 {
			svc = churnName(i)
		}
		g, err := r.Register(ctx, Instance{Service: svc, ID: "pod-" + strconv.Itoa(i), Host: "10.0.0.1", Port: 1 + i, Method: MethodRouter},
			WithCheckFunc(func(context.Context) error { return nil }),
			WithConfigFunc(func(context.Context, json.RawMessage) error { return nil }),
			WithHandler(http.NotFoundHandler()))
		if err != nil {
			t.Fatal(err)
		}
		h, err := r.Register(ctx, Instance{Service: svc, ID: "http-" + strconv.Itoa(i), Host: "10.0.0.2", Port: 1 + i, Check: CheckNone})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, svc); err != nil {
			t.Fatal(err)
		}
		clock.Advance(churnInterval)
		r.hm.settle() // the check function runs
		if err := g.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		clock.Advance(time.Duration(r.hm.usedFor(churnInterval)) + scanEvery)
		r.hm.settle()
	}
	libraryGoroutinesBackTo(t, before, fmt.Sprintf("%d registrations ended", 2*rounds))
	r.regMu.Lock()
	regs, locks := len(r.regs), len(r.regLocks)
	r.regMu.Unlock()
	if regs+locks > 0 {
		t.Errorf("%d registrations and %d instance locks held after every registration ended", regs, locks)
	}
	if n, hooked := syncMapLen(&r.hubs), r.hooked.Load(); n > 0 || hooked != 0 {
		t.Errorf("%d hubs (%d hooked) after every configuration callback's registration ended", n, hooked)
	}
	if n := len(r.hm.svcs); n > 0 {
		t.Errorf("the monitor checks %d services", n)
	}
	// L1 still holds the services (empty), and with them their states, up
	// to WithCacheSize: what this test bounds is the rest.
	if st := r.stateIfAny("web"); st != nil {
		if m := st.insts.Load(); m != nil && len(*m) > 0 {
			e := r.l1.get("web")
			t.Errorf("the state of web holds %d instances (%v), none registered; L1 holds %v", len(*m), slices.Collect(maps.Keys(*m)), e.raw)
		}
	}
	if n := syncMapLen(&r.hm.share.lastRead); n > 0 {
		t.Errorf("this process remembers reads of the shared health of %d services", n)
	}
	r.cbs.mu.Lock()
	running := len(r.cbs.running)
	r.cbs.mu.Unlock()
	if running > 0 {
		t.Errorf("%d callbacks counted as running", running)
	}
}

// Round robin keeps a rotation per set of filters (Exclude among them, as
// the Transport's retries and the gRPC balancer use); instances that come
// and go leave rotations that exclude instances gone. However many came
// and went, two callers excluding other instances still each get their
// own rotation. Kept, those rotations filled the service's 256 in a few
// hours of rescheduled pods, and every rotation made after shared one:
// two retries' callers taking turns each got the same instance every time.
func TestRotationsOfInstancesGoneLeaveRoomForNewOnes(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem), WithStrategy(StrategyRoundRobin))
	reg := func(id string) {
		t.Helper()
		if _, err := mem.Register(ctx, &core.Instance{Service: "web", ID: id, Host: "10.0.0.1", Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		reg(id)
	}
	for i := range 2 * maxNarrowRotations {
		pod := "pod-" + strconv.Itoa(i)
		reg(pod)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		sel, err := r.Pick(ctx, "web", Exclude(pod)) // a retry, say
		if err != nil {
			t.Fatal(err)
		}
		sel.Done(nil)
		if _, err := mem.Deregister(ctx, "web", pod); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]int{"a": {}, "b": {}}
	for range 20 {
		for _, x := range []string{"a", "b"} {
			sel, err := r.Pick(ctx, "web", Exclude(x))
			if err != nil {
				t.Fatal(err)
			}
			got[x][sel.Instance.ID]++
			sel.Done(nil)
		}
	}
	for x, picked := range got {
		if len(picked) != 2 {
			t.Errorf("after %d instances came and went, 20 picks excluding %s, taking turns with picks excluding another: %v; want both others in turn",
				2*maxNarrowRotations, x, picked)
		}
	}
	if m := r.stateIfAny("web").narrow.m.Load(); m != nil && len(*m) > 3 {
		t.Errorf("%d rotations kept for 2 sets of filters in use", len(*m))
	}
}

// Watches that come and go on a service leave no goroutine, hub or state
// behind; one whose reader stopped reading while the service's instances
// came and went holds about the instances it was told of and those the
// service has, not an event for each that came and went.
func TestWatchChurnLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem))
	reg := func(id string) {
		t.Helper()
		if _, err := mem.Register(ctx, &core.Instance{Service: "web", ID: id, Host: "10.0.0.1", Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	reg("a")
	before := libraryGoroutines()
	for range 1000 {
		wctx, cancel := context.WithCancel(ctx)
		ch, err := r.Watch(wctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		<-ch // the current state
		cancel()
		for range ch {
		}
	}
	// A reader that stops reading.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled, err := r.Watch(wctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	<-stalled
	const keep = 3
	for i := range 300 {
		reg("pod-" + strconv.Itoa(i))
		if i >= keep {
			if _, err := mem.Deregister(ctx, "web", "pod-"+strconv.Itoa(i-keep)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	h := r.hubIfAny("web")
	if h == nil {
		t.Fatal("no hub for the watch")
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
		}
	}
	waitFor("the hub did not catch up", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.last.insts["pod-299"].ID != ""
	})
	h.mu.Lock()
	if n := len(h.watchers); n != 1 {
		t.Errorf("%d watchers on the hub, 1 watching", n)
	}
	pending := 0
	for w := range h.watchers {
		w.mu.Lock()
		pending = max(pending, w.q.Len(), len(w.byKey))
		w.mu.Unlock()
	}
	h.mu.Unlock()
	// At most: the instance it was told of, and the ones there now, each
	// with its registration and its health.
	if pending > 2*(1+keep+1) {
		t.Errorf("a reader that stopped reading while 300 instances came and went has %d events pending", pending)
	}
	cancel()
	for range stalled {
	}
	waitFor("the hub outlived its watches", func() bool { return r.hubIfAny("web") == nil && syncMapLen(&r.hubs) == 0 })
	libraryGoroutinesBackTo(t, before, "1,001 watches ended")
}

// With Redis, services that this process heard a change of, looked up and then
// invalidated (Invalidate, or changes written behind the library's back),
// and never looked up again, keep their state only while L1 holds their
// slots, and a lease TTL after the revision they wait for: the states of
// the process stay within L1's bound.
func TestInvalidatedServicesLeaveNoStateOnceGone(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks(),
		WithCacheSize(evictSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	const services = 300
	add := func(name, id string) {
		t.Helper()
		if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: id, Host: "10.0.0.1", Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range services {
		name := churnName(i)
		add(name, "a")
		if _, err := r.Get(ctx, name); err != nil {
			t.Fatal(err)
		}
		add(name, "b") // a change announced: the state waits for its revision
		if svc, err := r.Get(ctx, name); err != nil || len(svc.Instances) != 2 {
			t.Fatalf("Get(%s) = %v, %v", name, svc, err)
		}
		if err := r.Invalidate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	r.l1.rc.Wait()
	// Kept a while: Redis may serve a snapshot older than the revision
	// written or announced for a lease TTL.
	clock.Advance(r.opts.leaseTTL + l2ClockSkew)
	r.hm.settle()
	if n := syncMapLen(&r.states); n > evictSize+1 {
		kept := 0
		r.states.Range(func(k, v any) bool {
			st := v.(*svcState)
			_, inRC := r.l1.rc.Get(k.(string))
			if kept++; kept <= 3 {
				t.Logf("%s: want %d, in L1 %v, in ristretto %v", k, st.wantRev.Load(), r.l1.get(k.(string)) != nil, inRC)
			}
			return true
		})
		t.Errorf("%d services changed, looked up and invalidated: an L1 of %d, and this process keeps the state of %d", services, evictSize, n)
	}
}

// With Redis out, this process's writes of services it never looks up
// leave no state behind once Redis can no longer serve a snapshot older
// than what they wrote: nothing puts such a service in L1, to be evicted.
func TestWritesWhileRedisIsOutLeaveNoStateOfServicesNeverLookedUp(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(memory.New()), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks(),
		WithCacheSize(evictSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	proxy.Refuse(true)
	proxy.Cut()
	const services = 100
	for i := range services {
		g, err := r.Register(ctx, Instance{Service: churnName(i), Host: "10.0.0.1", Port: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// One service written again and again meanwhile: its drop is asked
	// for once, not once a write.
	for range 200 {
		g, err := r.Register(ctx, Instance{Service: "busy", Host: "10.0.0.1", Port: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Millisecond)
	}
	r.hm.settle()
	forgets := 0
	for _, it := range r.hm.q {
		if it.kind == itemForget {
			forgets++
		}
	}
	if forgets > services+1 {
		t.Errorf("%d drops asked for, for %d services", forgets, services+1)
	}
	clock.Advance(r.opts.leaseTTL + l2ClockSkew)
	r.hm.settle()
	r.l1.rc.Wait()
	if n := syncMapLen(&r.states); n > evictSize+1 {
		t.Errorf("%d services written while Redis was out, never looked up: this process keeps the state of %d", services+1, n)
	}
}
