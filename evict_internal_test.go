package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
)

// An L1 sized for N services keeps the state of about N: evicted services
// take their state (instances' health, picks, metrics) with them, unless
// something still uses it (a Watch), and are looked up as before. Kept,
// the states of every service ever looked up grew without bound behind
// the bounded L1.
func TestEvictionForgetsTheStateOfUnusedServices(t *testing.T) {
	ctx := context.Background()
	r, _, _ := evictionRegistry(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, evictName(0))
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-ch; ev.Kind != EventInstanceAdded {
		t.Fatalf("first event %v", ev.Kind)
	}
	states := func() int {
		n := 0
		r.states.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	for round := range 2 {
		for i := range evictServices {
			if svc, err := r.Get(ctx, evictName(i)); err != nil || len(svc.Instances) != 1 {
				t.Fatalf("round %d: Get(%s) = %v, %v", round, evictName(i), svc, err)
			}
		}
		r.l1.rc.Wait()
		if n := states(); n > evictSize+1 {
			t.Fatalf("round %d: %d services looked up with an L1 of %d: this process keeps the state of %d", round, evictServices, evictSize, n)
		}
		if r.stateIfAny(evictName(0)) == nil {
			t.Fatalf("round %d: the watched service's state was dropped", round)
		}
	}
}

// Forgetting an evicted service's state keeps what it counted in the
// Registry's totals: Stats never goes back.
func TestEvictionKeepsStatsTotals(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := evictionRegistry(t)
	for _, id := range []string{"10.0.0.2:1", "10.0.0.3:1"} { // svc-0: 3 instances, 1 healthy
		if _, err := mem.Register(ctx, &core.Instance{Service: evictName(0), ID: id, Host: id[:8], Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		SetInstanceHealth(r, evictName(0), id, StatusUnhealthy, 0)
	}
	if _, err := r.Get(ctx, evictName(0)); err != nil {
		t.Fatal(err)
	}
	sel, err := r.Pick(ctx, evictName(0))
	if err != nil || !sel.Panic {
		t.Fatalf("Pick = %+v, %v; want a pick in panic mode", sel, err)
	}
	sel.Done(nil)
	before := r.Stats()
	if before.PanicPicks != 1 {
		t.Fatalf("PanicPicks = %d; want 1", before.PanicPicks)
	}
	for i := 1; i < evictServices; i++ {
		if _, err := r.Get(ctx, evictName(i)); err != nil {
			t.Fatal(err)
		}
	}
	r.l1.rc.Wait()
	if r.stateIfAny(evictName(0)) != nil {
		t.Skip("svc-0 stayed in L1")
	}
	after := r.Stats()
	if after.PanicPicks != before.PanicPicks || after.Picks != before.Picks {
		t.Fatalf("after svc-0 was evicted: PanicPicks %d, Picks %v; before %d, %v", after.PanicPicks, after.Picks, before.PanicPicks, before.Picks)
	}
}

// A burst of new services faster than ristretto's goroutine takes them in
// leaves L1 at its bound once ristretto has caught up. A Set that
// ristretto dropped (its buffer full) left the service in the index, where
// ristretto, which never heard of it, could never evict it: 160,000
// lookups of unknown names with the in-memory store, from 8 goroutines, in
// an L1 of 1,000 left 90,000 entries there for good.
func TestBurstOfNewServicesLeavesL1AtItsBound(t *testing.T) {
	ctx := context.Background()
	r, _ := fakeRegistry(t, WithCacheSize(evictSize))
	// Ristretto's goroutine stops at its first eviction, as a busy one
	// falls behind, until the burst is over.
	var first atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	r.l1.onEvict = func(e *entry) {
		if first.CompareAndSwap(false, true) {
			close(entered)
			<-release
		}
		r.entryEvicted(e)
	}
	n := 0
	lookup := func() {
		if _, err := r.Get(ctx, fmt.Sprintf("unknown-%d", n)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(unknown-%d) = %v; want ErrNotFound", n, err)
		}
		n++
	}
	for stopped := false; !stopped; {
		lookup()
		select {
		case <-entered:
			stopped = true
		default:
		}
	}
	for range 33 << 10 { // more than ristretto buffers (32 Ki Sets)
		lookup()
	}
	close(release)
	r.l1.rc.Wait()
	held := 0
	r.l1.each(func(*entry) { held++ })
	if held > evictSize {
		t.Fatalf("after %d lookups of unknown services, L1 of %d holds %d", n, evictSize, held)
	}
}

// Both eviction tests: an L1 of 10 services in front of a store that holds
// 300 of them, svc-0 to svc-299, one instance each.
const evictSize, evictServices = 10, 300

func evictName(i int) string { return fmt.Sprintf("svc-%d", i) }

func evictionRegistry(t *testing.T) (*Registry, *fakeclock.Clock, *memory.Store) {
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem), WithCacheSize(evictSize))
	for i := range evictServices {
		if _, err := mem.Register(context.Background(), &core.Instance{Service: evictName(i), ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	return r, clock, mem
}

// Ristretto rejects a second slot of a name it holds (a service removed
// from L1 and looked up again before ristretto took in its first slot):
// the service has not left L1. Its entry stays in the index, on the slot
// ristretto holds, and its state stays; ristretto's eviction of that slot
// later takes both. The entry was dropped from the index: the next lookup
// missed and loaded again. (Before that, the state was dropped too, and a
// self-preservation episode with it: TestSelfPreservationTakesInLater-
// LapsesOfAGroup counted two, under -race on CI.)
func TestRejectOfASecondSlotAdoptsTheHeldSlot(t *testing.T) {
	ctx := context.Background()
	r, _, _ := evictionRegistry(t)
	name := evictName(1)
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
	e := r.l1.get(name)
	r.l1.rc.Wait()
	held, ok := r.l1.rc.Get(name)
	if !ok || held != e.slot.Load() {
		t.Fatalf("ristretto holds %v, %v; want the entry's slot", held, ok)
	}
	second := &slot{name: name}
	r.l1.index.update(name, func(*entry) (*entry, bool) { // a second slot, as put makes after a remove
		e.slot.Store(second)
		return e, true
	})
	r.l1.rejected(second)
	if got := r.l1.get(name); got != e {
		t.Fatalf("after the reject the index holds %p; want the current entry %p", got, e)
	}
	if e.slot.Load() != held {
		t.Fatal("the entry did not adopt the slot ristretto holds")
	}
	if r.stateIfAny(name) == nil {
		t.Fatal("the service's state was dropped, though ristretto still holds it")
	}
	r.l1.drop(held, true) // ristretto evicts the held slot
	if r.l1.get(name) != nil {
		t.Fatal("the eviction of the held slot left the entry in the index")
	}
	if r.stateIfAny(name) != nil {
		t.Fatal("the eviction of the held slot kept the state of a service nobody uses")
	}
}

// A service removed from L1 and put back at once, over and over, keeps an
// entry in the index on the slot ristretto holds, whenever ristretto takes
// the slots in: the index mirrors ristretto.
func TestRemoveAndPutAgainKeepsTheIndexOnRistrettosSlot(t *testing.T) {
	ctx := context.Background()
	r, _, _ := evictionRegistry(t)
	name := evictName(2)
	if _, err := r.Get(ctx, name); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		e := r.l1.get(name)
		r.l1.remove(e)
		if _, err := r.Get(ctx, name); err != nil { // loads and puts a new entry, on a new slot
			t.Fatal(err)
		}
		r.l1.rc.Wait()
		cur := r.l1.get(name)
		if cur == nil {
			t.Fatalf("round %d: the index lost the service's current entry", i)
		}
		if held, ok := r.l1.rc.Get(name); !ok || held != cur.slot.Load() {
			t.Fatalf("round %d: ristretto holds %p (%v); the index's entry is on %p", i, held, ok, cur.slot.Load())
		}
	}
}

// A service in a self-preservation episode keeps its state when it leaves
// L1: the episode is what keeps its group's later lapses as suspects.
func TestEvictionKeepsAnEpisodeOfSelfPreservation(t *testing.T) {
	ctx := context.Background()
	r, clock, _ := evictionRegistry(t)
	if _, err := r.Get(ctx, evictName(2)); err != nil {
		t.Fatal(err)
	}
	st := r.stateIfAny(evictName(2))
	now := clock.Now().UnixNano()
	st.episode.Store(&episode{lo: now - int64(time.Second), hi: now})
	r.l1.remove(r.l1.get(evictName(2)))
	r.forgetUnused(st)
	if r.stateIfAny(evictName(2)) != st {
		t.Fatal("the state of a service in a self-preservation episode was dropped")
	}
	clock.Advance(r.opts.suspectGrace)
	r.forgetUnused(st)
	if r.stateIfAny(evictName(2)) != nil {
		t.Fatal("the state was kept after its episode ended")
	}
}

// Stats read while the state of a service is being forgotten still counts
// what that service counted: a Prometheus counter (discovery_cache_hits_total
// is Stats' L1 lookups) that dips for one scrape reads as a reset, and rate()
// then counts every lookup since New again. Stats read the Registry's totals
// before the per-service states; a state dropped in between had moved its
// counts into totals already read and left the states, and was counted
// nowhere.
func TestStatsNeverGoBackWhileStatesAreDropped(t *testing.T) {
	r, _ := fakeRegistry(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200000; i++ {
			st := r.state(fmt.Sprintf("svc-%d", i%64))
			r.countService(st).l1.add(1000)
			r.dropState(st)
		}
	}()
	var last uint64
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		n := r.Stats().Lookups[LayerL1]
		if n < last {
			<-done
			t.Fatalf("Stats().Lookups[L1] went back from %d to %d while states were dropped", last, n)
		}
		last = n
	}
}

// Without Redis, a process that registers and deregisters services it never
// looks up (workers of short-lived jobs, each its own service) keeps no
// state for them: every write made one, which nothing ever dropped, as the
// service never entered L1 to be evicted. 300 such services, each
// registered and closed, left 300 states behind an L1 of 10 holding none.
func TestWritesWithoutRedisLeaveNoStateOfServicesNeverLookedUp(t *testing.T) {
	ctx := context.Background()
	r, _ := fakeRegistry(t, WithCacheSize(evictSize))
	for i := range evictServices {
		g, err := r.Register(ctx, Instance{Service: evictName(i), Host: "10.0.0.1", Port: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.l1.rc.Wait()
	n := 0
	r.states.Range(func(_, _ any) bool { n++; return true })
	if n > evictSize {
		t.Fatalf("%d services registered and closed, none looked up, with an L1 of %d: this process keeps %d states", evictServices, evictSize, n)
	}
}

// A service whose entry left L1 by a write or an Invalidate, and that is
// not looked up again, loses its state when ristretto evicts the name: its
// eviction found no entry of the slot, and nothing else ever dropped the
// state. 300 services each looked up, then invalidated, kept 300 states
// behind an L1 of 10.
func TestEvictionOfARemovedServiceForgetsItsState(t *testing.T) {
	ctx := context.Background()
	r, _, _ := evictionRegistry(t)
	for i := range evictServices {
		if _, err := r.Get(ctx, evictName(i)); err != nil {
			t.Fatal(err)
		}
		r.l1.rc.Wait() // ristretto holds the name, as it has once a lookup is done
		if err := r.Invalidate(ctx, evictName(i)); err != nil {
			t.Fatal(err)
		}
	}
	r.l1.rc.Wait()
	n := 0
	r.states.Range(func(_, _ any) bool { n++; return true })
	if n > evictSize+1 {
		t.Fatalf("%d services looked up, then invalidated, with an L1 of %d: this process keeps %d states", evictServices, evictSize, n)
	}
}
