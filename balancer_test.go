package discovery_test

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/benchsuite"
)

var allStrategies = benchsuite.Strategies

// registerN registers instances of svc with the given weights (0 means
// ZeroWeight); their IDs are "i0", "i1", ...
func registerN(t *testing.T, r *discovery.Registry, svc string, weights ...int) {
	t.Helper()
	for i, w := range weights {
		if w == 0 {
			w = discovery.ZeroWeight
		}
		mustRegister(t, r, discovery.Instance{ID: fmt.Sprint("i", i), Service: svc, Host: fmt.Sprint("10.0.0.", i+1), Port: 80, Weight: w,
			Zone: []string{"a", "b"}[i%2], Version: []string{"v1", "v2"}[i/2%2], Tags: []string{"t" + fmt.Sprint(i%3)},
			Metadata: map[string]string{"shard": fmt.Sprint(i % 2)}})
	}
}

// picks counts which instance n picks choose; Done is called at once.
func picks(t *testing.T, r *discovery.Registry, svc string, n int, opts ...discovery.PickOption) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		sel, err := r.Pick(context.Background(), svc, opts...)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		got[sel.Instance.ID]++
		sel.Done(nil)
	}
	return got
}

// random with equal weights (its one-draw path) spreads evenly over the
// eligible instances only: an unhealthy one among them gets nothing.
func TestRandomEqualWeightsSpreadEvenlyOverEligible(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithStrategy(discovery.StrategyRandom))
	registerN(t, r, "db_svc", 3, 3, 3, 3, 3)
	if _, err := r.Get(context.Background(), "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i2", discovery.StatusUnhealthy, 0)
	const n = 100000
	got := picks(t, r, "db_svc", n)
	if got["i2"] != 0 {
		t.Fatalf("the unhealthy instance got %d picks: %v", got["i2"], got)
	}
	for _, id := range []string{"i0", "i1", "i3", "i4"} {
		if share := float64(got[id]) / n; math.Abs(share-0.25) > 0.01 {
			t.Errorf("%s got %.2f%% of picks; want 25%% +-1 (%v)", id, 100*share, got)
		}
	}
}

func TestWeightedSharesWithinOnePoint(t *testing.T) {
	for _, s := range []discovery.Strategy{discovery.StrategyWeightedRoundRobin, discovery.StrategyRandom} {
		t.Run(s.String(), func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			registerN(t, r, "db_svc", 1, 2, 7)
			const n = 100000
			got := picks(t, r, "db_svc", n, discovery.UseStrategy(s))
			for id, want := range map[string]float64{"i0": 0.1, "i1": 0.2, "i2": 0.7} {
				if share := float64(got[id]) / n; math.Abs(share-want) > 0.01 {
					t.Errorf("%s got %.2f%% of picks; want %.0f%% +-1", id, 100*share, 100*want)
				}
			}
		})
	}
}

// Weighted round robin interleaves smoothly and deterministically, as
// nginx does: weights 5:1:1 give a a b a c a a.
func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 5, 1, 1)
	var seq string
	for i := 0; i < 14; i++ {
		sel, err := r.Pick(context.Background(), "db_svc", discovery.UseStrategy(discovery.StrategyWeightedRoundRobin))
		if err != nil {
			t.Fatal(err)
		}
		seq += map[string]string{"i0": "a", "i1": "b", "i2": "c"}[sel.Instance.ID]
		sel.Done(nil)
	}
	// from a random place of the sequence, as each process starts
	if !strings.Contains(strings.Repeat("aabacaa", 4), seq) {
		t.Fatalf("sequence %s; want aabacaa twice, from any place of it", seq)
	}
}

func TestRoundRobinIsExact(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 5, 9, 100) // weights do not matter to round robin
	got := picks(t, r, "db_svc", 100000, discovery.UseStrategy(discovery.StrategyRoundRobin))
	for _, id := range []string{"i0", "i1", "i2", "i3"} {
		if got[id] != 25000 {
			t.Fatalf("round robin picks %v; want exactly 25000 each", got)
		}
	}
}

func TestWeightZeroIsNeverPicked(t *testing.T) {
	for _, s := range allStrategies {
		t.Run(s.String(), func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			registerN(t, r, "db_svc", 10, 0, 10)
			opts := []discovery.PickOption{discovery.UseStrategy(s)}
			got := map[string]int{}
			for i := 0; i < 5000; i++ {
				sel, err := r.Pick(context.Background(), "db_svc", append(opts, discovery.HashKey(fmt.Sprint("k", i)))...)
				if err != nil {
					t.Fatal(err)
				}
				got[sel.Instance.ID]++
				sel.Done(nil)
			}
			if got["i1"] != 0 || got["i0"] == 0 || got["i2"] == 0 {
				t.Fatalf("picks %v; the weight-0 instance i1 must never be picked", got)
			}
		})
	}
}

// A weight set to 0 later takes the instance out of selection on every
// Registry, without restarting anything.
func TestWeightChangeTakesEffectEverywhere(t *testing.T) {
	backend := discoverytest.NewBackend()
	a, b := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks()), discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	g := mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	mustRegister(t, a, inst("db_svc", "10.0.0.2", 2))
	if got := picks(t, b, "db_svc", 100); got["10.0.0.1:1"] == 0 {
		t.Fatalf("before: %v", got)
	}
	if err := g.SetWeight(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "weight 0 seen by b", func() bool { return picks(t, b, "db_svc", 200)["10.0.0.1:1"] == 0 })
	if err := g.SetWeight(context.Background(), 50); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "weight 50 seen by b", func() bool { return picks(t, b, "db_svc", 200)["10.0.0.1:1"] > 0 })
}

func TestLeastConnectionsPicksTheIdleInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyLeastConnections), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1)
	ctx := context.Background()
	for round := 0; round < 50; round++ {
		held := map[string]discovery.Selection{}
		for len(held) < 3 {
			sel, err := r.Pick(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if _, dup := held[sel.Instance.ID]; dup {
				t.Fatalf("round %d: picked busy %s while another was idle (held %d)", round, sel.Instance.ID, len(held))
			}
			held[sel.Instance.ID] = sel
		}
		// Free one: the next request goes to it.
		idle := fmt.Sprint("i", round%3)
		held[idle].Done(nil)
		sel, _ := r.Pick(ctx, "db_svc")
		if sel.Instance.ID != idle {
			t.Fatalf("round %d: next request went to %s; want the idle %s", round, sel.Instance.ID, idle)
		}
		sel.Done(nil)
		for id, s := range held {
			if id != idle {
				s.Done(nil)
			}
		}
	}
}

// The least loaded instances share the requests evenly, whether they are
// idle (taken when a pick looks at one first) or not (ties broken in the
// scan). Taking the first after a random start gave an idle instance that
// follows a busy one twice the share of the others.
func TestLeastConnectionsSpreadsOverIdleInstances(t *testing.T) {
	// 6 instances take the one-pass scan, 70 the two-pass one; a filter
	// that keeps every instance takes the filtered path's scan.
	for _, size := range []int{6, 70} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { leastConnectionsSpread(t, size) })
		t.Run(fmt.Sprint(size, "/filtered"), func(t *testing.T) { leastConnectionsSpread(t, size, discovery.Exclude("nobody")) })
	}
}

func leastConnectionsSpread(t *testing.T, size int, opts ...discovery.PickOption) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyLeastConnections), discovery.WithoutHealthChecks())
	weights := make([]int, size)
	for i := range weights {
		weights[i] = 1
	}
	registerN(t, r, "db_svc", weights...)
	ctx := context.Background()
	hold := func(busy []discovery.Selection, n int) []discovery.Selection {
		for len(busy) < n {
			sel, err := r.Pick(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			busy = append(busy, sel)
		}
		return busy
	}
	least := size - 2
	n := 1000 * least
	spread := func(what string, got map[string]int, busy []discovery.Selection) {
		t.Helper()
		for _, sel := range busy {
			if got[sel.Instance.ID] != 0 {
				t.Errorf("%s: busier %s took %d requests", what, sel.Instance.ID, got[sel.Instance.ID])
			}
		}
		if len(got) != least {
			t.Fatalf("%s: requests went to %d instances; want the %d least loaded", what, len(got), least)
		}
		for id, c := range got {
			if c < 750 || c > 1250 {
				t.Errorf("%s: %s took %d of %d requests; want about 1000", what, id, c, n)
			}
		}
	}
	busy := hold(nil, 2)
	spread("2 busy, the rest idle", picks(t, r, "db_svc", n, opts...), busy)
	// Every instance busy, two busier: no idle one to stop at, so the
	// scan breaks the ties among the rest.
	busy = hold(busy, size+2)
	held := map[string]int{}
	var busier []discovery.Selection
	for _, sel := range busy {
		if held[sel.Instance.ID]++; held[sel.Instance.ID] == 2 {
			busier = append(busier, sel)
		}
	}
	if len(held) != size || len(busier) != 2 {
		t.Fatalf("%d held picks went to %v; want every instance, two twice", len(busy), held)
	}
	spread("all busy, 2 busier", picks(t, r, "db_svc", n, opts...), busier)
	for _, sel := range busy {
		sel.Done(nil)
	}
}

// completion is a request in flight in the simulation below.
type completion struct {
	at  time.Time
	sel discovery.Selection
	lat time.Duration
}

type completions []completion

func (c completions) Len() int           { return len(c) }
func (c completions) Less(i, j int) bool { return c[i].at.Before(c[j].at) }
func (c completions) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *completions) Push(x any)        { *c = append(*c, x.(completion)) }
func (c *completions) Pop() any          { x := (*c)[len(*c)-1]; *c = (*c)[:len(*c)-1]; return x }

// p2c_ewma sends less than 10% of traffic to an instance ten times slower
// than the others: 100,000 requests arriving every 200 µs, each taking
// 2 ms (or 20 ms on the slow one), simulated on a fake clock.
func TestP2CEWMAAvoidsTheSlowInstance(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1)
	var inflight completions
	got := map[string]int{}
	now := t0
	for i := 0; i < 100000; i++ {
		now = now.Add(200 * time.Microsecond)
		for inflight.Len() > 0 && !inflight[0].at.After(now) {
			c := heap.Pop(&inflight).(completion)
			clock.Set(c.at)
			c.sel.DoneLatency(nil, c.lat)
		}
		clock.Set(now)
		sel, err := r.Pick(context.Background(), "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		lat := 2 * time.Millisecond
		if sel.Instance.ID == "i4" {
			lat = 20 * time.Millisecond
		}
		heap.Push(&inflight, completion{at: now.Add(lat), sel: sel, lat: lat})
	}
	share := float64(got["i4"]) / 100000
	t.Logf("picks %v: the slow instance got %.2f%%", got, 100*share)
	if share >= 0.10 {
		t.Fatalf("the 10x slower instance got %.1f%% of traffic; want under 10%%", 100*share)
	}
}

// consistent_hash keeps every key on its instance while the set is
// unchanged (in every process), and moves at most 15% of keys when one of
// 10 instances leaves.
func TestConsistentHashStability(t *testing.T) {
	backend := discoverytest.NewBackend()
	a, b := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks()), discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	registerN(t, a, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	const keys = 20000
	where := func(r *discovery.Registry, opts ...discovery.PickOption) []string {
		out := make([]string, keys)
		for k := range out {
			sel, err := r.Pick(context.Background(), "db_svc", append(opts, discovery.HashKey(fmt.Sprint("user-", k)))...)
			if err != nil {
				t.Fatal(err)
			}
			out[k] = sel.Instance.ID
			sel.Done(nil)
		}
		return out
	}
	before := where(a)
	share := map[string]int{}
	for _, id := range before {
		share[id]++
	}
	for id, n := range share {
		if n < keys/10*8/10 || n > keys/10*12/10 {
			t.Errorf("instance %s owns %d keys; want about %d", id, n, keys/10)
		}
	}
	if again, other := where(a), where(b); fmt.Sprint(again) != fmt.Sprint(before) || fmt.Sprint(other) != fmt.Sprint(before) {
		t.Fatal("a key moved while the set was unchanged (or another Registry maps it elsewhere)")
	}
	// A Registry whose strategy is consistent_hash takes Pick's short path
	// for a key alone (a and b, whose strategy a key overrides, take the
	// long one): the same instance for every key.
	c := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithStrategy(discovery.StrategyConsistentHash))
	if got := where(c); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatal("a Registry configured for consistent_hash maps keys elsewhere than one whose key chose it")
	}
	if err := a.Deregister(context.Background(), "db_svc", "i3"); err != nil {
		t.Fatal(err)
	}
	after := where(a)
	moved := 0
	for k := range before {
		if after[k] != before[k] {
			moved++
		}
		if before[k] == "i3" && after[k] == "i3" {
			t.Fatalf("key %d still maps to the removed instance", k)
		}
	}
	t.Logf("removing 1 of 10 instances moved %.1f%% of keys", 100*float64(moved)/keys)
	if float64(moved)/keys > 0.15 {
		t.Fatalf("%.1f%% of keys moved; want at most 15%%", 100*float64(moved)/keys)
	}
	// With a filter the set is narrowed and rendezvous hashing is used: still stable.
	f1, f2 := where(a, discovery.WithVersion("v1")), where(a, discovery.WithVersion("v1"))
	if fmt.Sprint(f1) != fmt.Sprint(f2) {
		t.Fatal("filtered consistent hashing is not stable")
	}
}

func TestPanicThreshold(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, unhealthy int, opts ...discovery.Option) *discovery.Registry {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), append(opts, discovery.WithoutHealthChecks())...)
		registerN(t, r, "db_svc", 1, 1, 1, 1, 1)
		if _, err := r.Get(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < unhealthy; i++ {
			discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
		}
		return r
	}
	t.Run("2 of 5 unhealthy: only healthy ones", func(t *testing.T) {
		r := setup(t, 2)
		got := picks(t, r, "db_svc", 3000)
		if got["i0"]+got["i1"] != 0 || r.Stats().PanicPicks != 0 {
			t.Fatalf("picks %v, panic picks %d", got, r.Stats().PanicPicks)
		}
	})
	t.Run("3 of 5 unhealthy: spread over all 5, counted", func(t *testing.T) {
		r := setup(t, 3)
		got := map[string]int{}
		for i := 0; i < 5000; i++ {
			sel, err := r.Pick(ctx, "db_svc", discovery.UseStrategy(discovery.StrategyRoundRobin))
			if err != nil || !sel.Panic {
				t.Fatalf("Pick = %+v, %v; want a panic-mode pick", sel, err)
			}
			got[sel.Instance.ID]++
			sel.Done(nil)
		}
		for i := 0; i < 5; i++ {
			if got[fmt.Sprint("i", i)] != 1000 {
				t.Fatalf("panic picks %v; want 1000 each", got)
			}
		}
		if n := r.Stats().PanicPicks; n != 5000 {
			t.Fatalf("PanicPicks = %d; want 5000", n)
		}
	})
	t.Run("fail closed", func(t *testing.T) {
		r := setup(t, 3, discovery.WithFailClosed())
		_, err := r.Pick(ctx, "db_svc")
		var nh *discovery.NoHealthyError
		if !errors.Is(err, discovery.ErrNoHealthyInstances) || !errors.As(err, &nh) || nh.Service != "db_svc" || nh.Live != 5 {
			t.Fatalf("Pick = %v; want NoHealthyError naming db_svc", err)
		}
		// A preferred zone with enough eligible instances of its own (b:
		// i3 of i1, i3) needs no panic, so is not refused; one without (a:
		// i4 of i0, i2, i4) is.
		for range 100 {
			sel, err := r.Pick(ctx, "db_svc", discovery.PreferZone("b"))
			if err != nil || sel.Instance.ID != "i3" || sel.Panic {
				t.Fatalf("Pick(PreferZone(b)) = %+v, %v; want i3, no panic", sel, err)
			}
			sel.Done(nil)
		}
		if _, err := r.Pick(ctx, "db_svc", discovery.PreferZone("a")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
			t.Fatalf("Pick(PreferZone(a)) = %v; want ErrNoHealthyInstances", err)
		}
	})
	t.Run("none healthy", func(t *testing.T) {
		r := setup(t, 5)
		if _, err := r.Pick(ctx, "db_svc"); !errors.Is(err, discovery.ErrNoHealthyInstances) {
			t.Fatalf("Pick = %v; want ErrNoHealthyInstances", err)
		}
	})
	t.Run("low score is not eligible", func(t *testing.T) {
		r := setup(t, 0)
		discovery.SetInstanceHealth(r, "db_svc", "i0", discovery.StatusHealthy, 0.4)
		if got := picks(t, r, "db_svc", 2000); got["i0"] != 0 {
			t.Fatalf("an instance with score 0.4 was picked: %v", got)
		}
		svc, _ := r.Get(ctx, "db_svc")
		if svc.Instance("i0").Status != discovery.StatusHealthy || svc.Instance("i1").Status != discovery.StatusUnknown {
			t.Fatalf("Get shows statuses %v/%v", svc.Instance("i0").Status, svc.Instance("i1").Status)
		}
	})
}

// A service whose instances pass their checks but answer them slower than
// the minimum score allows (200 ms by default) has none to pick: the error
// says so, counting only the instances that are out for that alone and that
// the pick's filters keep, so that "no healthy instances" of a service Get
// shows healthy is not a mystery.
func TestNoHealthyErrorNamesSlowChecks(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1) // shard 0: i0, i2; version v1: i0, i1; tag t1: i1
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	// i0 passes in 250 ms (score 0.4 at best); i1 passes in 10 ms but
	// failed lately (score 0.4); i2 answers a 429 in 150 ms (a warning:
	// 0.6 x 100/150 = 0.4).
	discovery.SetInstanceHealth(r, "db_svc", "i0", discovery.StatusHealthy, 0.4)
	discovery.SetInstanceRTT(r, "db_svc", "i0", 250*time.Millisecond)
	discovery.SetInstanceHealth(r, "db_svc", "i1", discovery.StatusHealthy, 0.4)
	discovery.SetInstanceRTT(r, "db_svc", "i1", 10*time.Millisecond)
	discovery.SetInstanceHealth(r, "db_svc", "i2", discovery.StatusWarning, 0.4)
	discovery.SetInstanceRTT(r, "db_svc", "i2", 150*time.Millisecond)
	for _, tt := range []struct {
		name string
		opts []discovery.PickOption
		slow int
		msg  string
	}{
		{"all", nil, 2, "2 pass their health checks too slowly to score above the minimum score"},
		{"shard 0", []discovery.PickOption{discovery.WithMeta("shard", "0")}, 2, "2 pass their health checks too slowly"},
		{"v1", []discovery.PickOption{discovery.WithVersion("v1")}, 1, "1 passes its health checks too slowly"},
		{"t1", []discovery.PickOption{discovery.WithTag("t1")}, 0, ""},
	} {
		_, err := r.Pick(ctx, "db_svc", tt.opts...)
		var nh *discovery.NoHealthyError
		if !errors.As(err, &nh) || !errors.Is(err, discovery.ErrNoHealthyInstances) {
			t.Fatalf("%s: Pick = %v; want a NoHealthyError", tt.name, err)
		}
		if nh.Slow != tt.slow || nh.Live != 3 {
			t.Errorf("%s: NoHealthyError{Live: %d, Slow: %d}; want Live 3, Slow %d", tt.name, nh.Live, nh.Slow, tt.slow)
		}
		if msg := err.Error(); tt.msg == "" && strings.Contains(msg, "slowly") || !strings.Contains(msg, tt.msg) || !strings.Contains(msg, "WithMinScore") != (tt.msg == "") {
			t.Errorf("%s: error %q; want it to say %q", tt.name, msg, tt.msg)
		}
	}
	// A minimum score the slow checks clear makes them eligible again.
	low := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithMinScore(0.3))
	registerN(t, low, "db_svc", 1)
	if _, err := low.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(low, "db_svc", "i0", discovery.StatusHealthy, 0.4)
	discovery.SetInstanceRTT(low, "db_svc", "i0", 250*time.Millisecond)
	if sel, err := low.Pick(ctx, "db_svc"); err != nil || sel.Instance.ID != "i0" {
		t.Fatalf("Pick with WithMinScore(0.3) = %+v, %v; want i0", sel, err)
	}
}

// An instance that answers its checks with 429 (a warning: throttling)
// is not slow, however fast it answers: with WithMinScore(0.6) or more a
// warning keeps an instance out of Pick (0.6 x at most 1), and
// NoHealthyError.Slow counted it, telling the reader to speed up checks
// answered in milliseconds. Only an instance that a faster check would
// bring back is slow.
func TestNoHealthyErrorDoesNotCallThrottlingSlow(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithMinScore(0.6))
	registerN(t, r, "db_svc", 1, 1, 1)
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	// i0: 429 in 5 ms; i1: 429 in 250 ms (out at any speed); i2: 200 in
	// 250 ms (0.4: out for its speed alone).
	discovery.InjectCheck(r, "db_svc", "i0", discovery.StatusWarning, 5*time.Millisecond, "429 Too Many Requests")
	discovery.InjectCheck(r, "db_svc", "i1", discovery.StatusWarning, 250*time.Millisecond, "429 Too Many Requests")
	discovery.InjectCheck(r, "db_svc", "i2", discovery.StatusHealthy, 250*time.Millisecond, "")
	for _, id := range []string{"i0", "i1", "i2"} {
		if h := healthOf(t, r, "db_svc", id); h.Status == discovery.StatusUnknown || h.Score > 0.6 {
			t.Fatalf("%s: %v, score %v; want it checked, scoring at most 0.6", id, h.Status, h.Score)
		}
	}
	_, err := r.Pick(ctx, "db_svc")
	var nh *discovery.NoHealthyError
	if !errors.As(err, &nh) {
		t.Fatalf("Pick = %v; want a NoHealthyError", err)
	}
	if nh.Slow != 1 {
		t.Errorf("NoHealthyError.Slow = %d (%v); want 1, i2: i0 and i1 are throttled, not slow", nh.Slow, err)
	}
	// What keeps i0 and i1 out is said, too: a slow 429 (i1) is throttled
	// only, as no speed brings it back.
	if nh.Throttled != 2 {
		t.Errorf("NoHealthyError.Throttled = %d (%v); want 2, i0 and i1", nh.Throttled, err)
	}
	if msg, want := err.Error(), "2 answer their health checks with 429 (throttling)"; !strings.Contains(msg, want) || !strings.Contains(msg, "1 passes its health checks too slowly") {
		t.Errorf("error %q; want it to say %q and that 1 passes too slowly", msg, want)
	}
	// With one throttled, the text is singular; at a minimum score a fast
	// 429 clears (0.5), a slow 429 is slow, not throttled.
	for _, tt := range []struct {
		min             float64
		rtt             time.Duration
		throttled, slow int
		say             string
	}{
		{0.6, 250 * time.Millisecond, 1, 0, "1 answers its health checks with 429 (throttling)"},
		{0.5, 250 * time.Millisecond, 0, 1, "1 passes its health checks too slowly"},
	} {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithMinScore(tt.min))
		registerN(t, r, "db_svc", 1)
		if _, err := r.Get(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		discovery.InjectCheck(r, "db_svc", "i0", discovery.StatusWarning, tt.rtt, "429 Too Many Requests")
		_, err := r.Pick(ctx, "db_svc")
		var nh *discovery.NoHealthyError
		if !errors.As(err, &nh) {
			t.Fatalf("min %v: Pick = %v; want a NoHealthyError", tt.min, err)
		}
		if msg := err.Error(); nh.Throttled != tt.throttled || nh.Slow != tt.slow || !strings.Contains(msg, tt.say) {
			t.Errorf("min %v: NoHealthyError{Throttled: %d, Slow: %d} %q; want Throttled %d, Slow %d, saying %q", tt.min, nh.Throttled, nh.Slow, msg, tt.throttled, tt.slow, tt.say)
		}
	}
}

func TestFilters(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	// i0..i7: zones a,b alternating; versions v1,v1,v2,v2,...; tags t0,t1,t2; shard 0/1.
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1)
	tests := []struct {
		name string
		opts []discovery.PickOption
		want string
	}{
		{"tag", []discovery.PickOption{discovery.WithTag("t1")}, "i1,i4,i7"},
		{"two tags", []discovery.PickOption{discovery.WithTag("t1"), discovery.WithTag("t0")}, ""},
		{"metadata", []discovery.PickOption{discovery.WithMeta("shard", "1")}, "i1,i3,i5,i7"},
		{"version", []discovery.PickOption{discovery.WithVersion("v2")}, "i2,i3,i6,i7"},
		{"version and meta", []discovery.PickOption{discovery.WithVersion("v2"), discovery.WithMeta("shard", "0")}, "i2,i6"},
		{"zone", []discovery.PickOption{discovery.PreferZone("b")}, "i1,i3,i5,i7"},
		{"exclude", []discovery.PickOption{discovery.WithVersion("v1"), discovery.Exclude("i0")}, "i1,i4,i5"},
	}
	for _, tt := range tests {
		for _, s := range allStrategies {
			got := map[string]bool{}
			for i := 0; i < 400; i++ {
				sel, err := r.Pick(ctx, "db_svc", append(tt.opts, discovery.UseStrategy(s), discovery.HashKey(fmt.Sprint(i)))...)
				if tt.want == "" {
					if !errors.Is(err, discovery.ErrNoHealthyInstances) {
						t.Fatalf("%s/%s: Pick = %v; want ErrNoHealthyInstances", tt.name, s, err)
					}
					break
				}
				if err != nil {
					t.Fatalf("%s/%s: %v", tt.name, s, err)
				}
				got[sel.Instance.ID] = true
				sel.Done(nil)
			}
			if tt.want == "" {
				continue
			}
			var ids []string
			for i := 0; i < 8; i++ {
				if got[fmt.Sprint("i", i)] {
					ids = append(ids, fmt.Sprint("i", i))
				}
			}
			// Every strategy keeps to the filter; round robin shows the
			// filter keeps all of the matching instances too.
			exact := s == discovery.StrategyRoundRobin
			if list := fmt.Sprint(ids); list != "["+stringsJoin(tt.want)+"]" && (exact || !isSubset(ids, tt.want)) {
				t.Errorf("%s/%s: picked %v; want only %s", tt.name, s, ids, tt.want)
			}
		}
	}
	// Zone preference falls back to every zone when the zone has too few
	// healthy instances.
	for _, id := range []string{"i1", "i3", "i5"} {
		discovery.SetInstanceHealth(r, "db_svc", id, discovery.StatusUnhealthy, 0)
	}
	got := picks(t, r, "db_svc", 2000, discovery.PreferZone("b"), discovery.UseStrategy(discovery.StrategyRoundRobin))
	if got["i0"] == 0 || got["i7"] == 0 {
		t.Fatalf("zone b has 1 of 4 healthy: picks %v; want every zone used", got)
	}
	if _, err := r.Pick(ctx, "db_svc", discovery.PickOption{}); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("a zero PickOption = %v; want ErrInvalid", err)
	}
}

func stringsJoin(s string) string {
	out := ""
	for _, c := range s {
		if c == ',' {
			out += " "
		} else {
			out += string(c)
		}
	}
	return out
}

func isSubset(ids []string, want string) bool {
	allowed := map[string]bool{}
	cur := ""
	for _, c := range want + "," {
		if c == ',' {
			allowed[cur] = true
			cur = ""
		} else {
			cur += string(c)
		}
	}
	for _, id := range ids {
		if !allowed[id] {
			return false
		}
	}
	return len(ids) > 0
}

// The strategy comes from the call, else the service (option, then its
// configuration), else the Registry.
func TestStrategyPrecedence(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithStrategy(discovery.StrategyRandom),
		discovery.WithServiceStrategy("opt_svc", discovery.StrategyLeastConnections), discovery.WithoutHealthChecks())
	registerN(t, r, "opt_svc", 1, 1)
	registerN(t, r, "cfg_svc", 1, 1)
	registerN(t, r, "plain", 1, 1)
	if _, _, err := backend.SetConfig(ctx, "cfg_svc", []byte(`{"balancer":{"strategy":"round_robin"}}`), time.Now(), 20); err != nil {
		t.Fatal(err)
	}
	for svc, want := range map[string]discovery.Strategy{"opt_svc": discovery.StrategyLeastConnections, "cfg_svc": discovery.StrategyRoundRobin, "plain": discovery.StrategyRandom} {
		waitFor(t, time.Second, svc+" strategy", func() bool {
			sel, err := r.Pick(ctx, svc)
			if err != nil {
				t.Fatal(err)
			}
			sel.Done(nil)
			return sel.Strategy == want
		})
		sel, _ := r.Pick(ctx, svc, discovery.UseStrategy(discovery.StrategyWeightedRoundRobin))
		if sel.Strategy != discovery.StrategyWeightedRoundRobin {
			t.Fatalf("%s: a per-call strategy was ignored: %v", svc, sel.Strategy)
		}
		sel.Done(nil)
	}
	for _, svc := range []string{"plain", "opt_svc", "cfg_svc"} { // whichever way the service's strategy is set
		if sel, _ := r.Pick(ctx, svc, discovery.HashKey("k")); sel.Strategy != discovery.StrategyConsistentHash {
			t.Fatalf("%s: a hash key without a strategy for the call gave %v; want consistent_hash", svc, sel.Strategy)
		}
	}
	if _, err := discovery.ParseStrategy("fastest"); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("ParseStrategy(unknown) = %v", err)
	}
	for _, s := range allStrategies {
		if p, err := discovery.ParseStrategy(s.String()); err != nil || p != s {
			t.Fatalf("ParseStrategy(%q) = %v, %v", s.String(), p, err)
		}
	}
}

func TestPickErrors(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	if _, err := r.Pick(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("Pick(unknown) = %v; want ErrNotFound", err)
	}
	if _, err := r.Pick(ctx, "a/b"); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("Pick(invalid) = %v; want ErrInvalid", err)
	}
	registerN(t, r, "db_svc", 0)
	if _, err := r.Pick(ctx, "db_svc"); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick with only weight-0 instances = %v; want ErrNoHealthyInstances", err)
	}
}

// An instance that was slow once is not starved: its average decays while
// it goes unpicked, and it gets traffic again once it is fast.
func TestP2CEWMARecovers(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1)
	run := func(n int, slow time.Duration) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			clock.Advance(time.Millisecond)
			sel, err := r.Pick(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			got[sel.Instance.ID]++
			lat := time.Millisecond
			if sel.Instance.ID == "i0" {
				lat = slow
			}
			sel.DoneLatency(nil, lat)
		}
		return got
	}
	if got := run(3000, 50*time.Millisecond); got["i0"] > 100 {
		t.Fatalf("while i0 was 50x slower it got %d of 3000", got["i0"])
	}
	first := run(60000, time.Millisecond)
	if first["i0"] == 0 {
		t.Fatalf("in the minute after i0 recovered it got no traffic: %v", first)
	}
	for range 3 {
		run(60000, time.Millisecond)
	}
	fifth := run(60000, time.Millisecond)
	t.Logf("after recovery: minute 1 %v, minute 5 %v", first, fifth)
	if fifth["i0"] < 60000/5 {
		t.Fatalf("five minutes after i0 recovered it got %v; want at least 20%%", fifth)
	}
}

// Before any Done has reported a latency, p2c_ewma prefers an idle
// instance to a busy one: of two instances, two picks with no Done between
// them always go to both. Each of 100 services is a fresh trial; taking
// the first of the pair would land both picks on one instance about half
// the time.
func TestP2CEWMAWithoutLatencyPrefersTheIdleInstance(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithLeaseTTL(time.Hour), discovery.WithoutHealthChecks())
	for s := range 100 {
		svc := fmt.Sprint("svc", s)
		registerN(t, r, svc, 1, 1)
		first, err := r.Pick(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		second, err := r.Pick(ctx, svc)
		if err != nil {
			t.Fatal(err)
		}
		if first.Instance.ID == second.Instance.ID {
			t.Fatalf("%s: both picks went to %s while the other instance was idle", svc, first.Instance.ID)
		}
	}
}

// health_based (the seed's rule) weighs each instance by health score x
// weight / response time, and by load: score 1 at 10 ms, 1 at 20 ms and
// 0.8 at 10 ms share picks 0.1 : 0.05 : 0.08; an instance with requests in
// flight gets proportionally less.
func TestHealthBasedWeighsScoreResponseTimeAndLoad(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1)
	if _, err := r.Get(context.Background(), "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i2", discovery.StatusHealthy, 0.8)
	for id, rtt := range map[string]time.Duration{"i0": 10 * time.Millisecond, "i1": 20 * time.Millisecond, "i2": 10 * time.Millisecond} {
		discovery.SetInstanceRTT(r, "db_svc", id, rtt)
	}
	const n = 100000
	got := picks(t, r, "db_svc", n, discovery.UseStrategy(discovery.StrategyHealthBased))
	total := 0.1 + 0.05 + 0.08
	for id, w := range map[string]float64{"i0": 0.1, "i1": 0.05, "i2": 0.08} {
		if share, want := float64(got[id])/n, w/total; math.Abs(share-want) > 0.01 {
			t.Errorf("%s got %.2f%% of picks; want %.1f%% +-1", id, 100*share, 100*want)
		}
	}
	// Three requests in flight on i0 divide its weight by four.
	var held []discovery.Selection
	for len(held) < 3 {
		sel, err := r.Pick(context.Background(), "db_svc", discovery.UseStrategy(discovery.StrategyRoundRobin))
		if err != nil {
			t.Fatal(err)
		}
		if sel.Instance.ID == "i0" {
			held = append(held, sel)
		} else {
			sel.Done(nil)
		}
	}
	got = picks(t, r, "db_svc", n, discovery.UseStrategy(discovery.StrategyHealthBased))
	total = 0.1/4 + 0.05 + 0.08
	if share, want := float64(got["i0"])/n, 0.1/4/total; math.Abs(share-want) > 0.01 {
		t.Errorf("i0 with 3 in flight got %.2f%% of picks; want %.1f%% +-1", 100*share, 100*want)
	}
	for _, sel := range held {
		sel.Done(nil)
	}
}

// health_based on a service too large for its stack buffer (300 instances,
// read in chunks of 64) still picks in proportion to the weights: three
// heavy instances in different chunks (the first, the third and the last)
// get their shares, and the 297 light ones theirs.
func TestHealthBasedIsProportionalOnLargeServices(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(),
		discovery.WithStrategy(discovery.StrategyHealthBased))
	heavy := map[string]int{"i7": 50, "i150": 100, "i299": 25}
	const count = 300
	total := 0
	for i := range count {
		id := fmt.Sprint("i", i)
		w := heavy[id]
		if w == 0 {
			w = 1
		}
		total += w
		mustRegister(t, r, discovery.Instance{ID: id, Service: "db_svc", Host: fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), Port: 80, Weight: w})
	}
	if _, err := r.Get(context.Background(), "db_svc"); err != nil {
		t.Fatal(err)
	}
	const n = 200000
	got := picks(t, r, "db_svc", n)
	light := n
	for id, w := range heavy {
		light -= got[id]
		if share, want := float64(got[id])/n, float64(w)/float64(total); math.Abs(share-want) > 0.01 {
			t.Errorf("%s (weight %d) got %.2f%% of picks; want %.1f%% +-1", id, w, 100*share, 100*want)
		}
	}
	if share, want := float64(light)/n, float64(count-len(heavy))/float64(total); math.Abs(share-want) > 0.01 {
		t.Errorf("the light instances got %.2f%% of picks; want %.1f%% +-1", 100*share, 100*want)
	}
	for i := range count { // and none of them is starved: 200,000 picks give each about 420
		if id := fmt.Sprint("i", i); heavy[id] == 0 && got[id] < 200 {
			t.Errorf("%s got %d picks; want about %d", id, got[id], n/total)
		}
	}
}

// Every path a pick can take (no options, options, a filter, a preferred
// zone, one unhealthy instance) spreads p2c_ewma's picks evenly over equal
// instances: the random numbers behind each path (the pick count's step of
// SplitMix64 for the usual pick, the Registry's striped generator for the
// others) are uniform.
func TestP2CSpreadsEvenlyOnEveryPath(t *testing.T) {
	ctx := context.Background()
	paths := []struct {
		name string
		opts []discovery.PickOption
		sick bool
	}{
		{name: "no options"},
		{name: "strategy option", opts: []discovery.PickOption{discovery.UseStrategy(discovery.StrategyP2CEWMA)}},
		{name: "filter", opts: []discovery.PickOption{discovery.WithMeta("team", "core")}},
		{name: "zone with too few instances", opts: []discovery.PickOption{discovery.PreferZone("nowhere")}},
		{name: "one instance unhealthy", sick: true},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			for i := range 10 {
				mustRegister(t, r, discovery.Instance{ID: fmt.Sprint("i", i), Service: "web", Host: fmt.Sprint("10.0.0.", i+1), Port: 80,
					Metadata: map[string]string{"team": "core"}})
			}
			if _, err := r.Get(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			want := 10
			if path.sick {
				discovery.SetInstanceHealth(r, "web", "i9", discovery.StatusUnhealthy, 0)
				want = 9
			}
			const n = 90000
			got := map[string]int{}
			for range n {
				sel, err := r.Pick(ctx, "web", path.opts...)
				if err != nil {
					t.Fatal(err)
				}
				got[sel.Instance.ID]++
				sel.DoneLatency(nil, time.Millisecond) // equal costs: p2c's choice is its random pair's
			}
			if len(got) != want {
				t.Fatalf("picks went to %d instances (%v); want %d", len(got), got, want)
			}
			for id, c := range got {
				if share := float64(c) / n; math.Abs(share-1/float64(want)) > 0.015 {
					t.Errorf("%s got %.3f of the picks; want %.3f +- 0.015 (%v)", id, share, 1/float64(want), got)
				}
			}
		})
	}
}

// Two processes that start at the same moment must not pick in lockstep
// (every caller sending its next request to the same instance): each
// Registry draws its own random numbers.
func TestRegistriesDoNotPickInLockstep(t *testing.T) {
	ctx := context.Background()
	be := discoverytest.NewBackend()
	seqs := make([][]string, 2)
	for k := range seqs {
		r := discoverytest.NewRegistry(t, be, discovery.WithoutHealthChecks())
		if k == 0 {
			registerN(t, r, "web", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
		}
		for range 64 {
			sel, err := r.Pick(ctx, "web")
			if err != nil {
				t.Fatal(err)
			}
			seqs[k] = append(seqs[k], sel.Instance.ID)
			sel.DoneLatency(nil, time.Millisecond)
		}
	}
	same := 0
	for i := range seqs[0] {
		if seqs[0][i] == seqs[1][i] {
			same++
		}
	}
	if same > 24 { // 6.4 expected by chance; 24 or more has odds below 1e-8
		t.Fatalf("two Registries chose the same instance on %d of 64 picks:\n%v\n%v", same, seqs[0], seqs[1])
	}
}

// Stats().Picks counts every pick once, by the strategy that made it, on
// every path; a pick that fails is not counted.
func TestStatsCountEveryPickByStrategy(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "web", 1, 1, 1, 1)
	do := func(n int, opts ...discovery.PickOption) {
		t.Helper()
		for range n {
			sel, err := r.Pick(ctx, "web", opts...)
			if err != nil {
				t.Fatal(err)
			}
			sel.Done(nil)
		}
	}
	do(7)                                                                           // the default, p2c_ewma
	do(5, discovery.UseStrategy(discovery.StrategyRoundRobin))                      // an option
	do(3, discovery.HashKey("user-1"))                                              // a key selects consistent hashing
	do(2, discovery.WithTag("t0"), discovery.UseStrategy(discovery.StrategyRandom)) // a filter
	if _, err := r.Pick(ctx, "web", discovery.WithTag("nobody")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick with a tag no instance has = %v; want ErrNoHealthyInstances", err)
	}
	for i := range 3 { // 1 of 4 eligible: panic mode
		discovery.SetInstanceHealth(r, "web", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	do(4)
	st := r.Stats()
	want := map[discovery.Strategy]uint64{discovery.StrategyP2CEWMA: 11, discovery.StrategyRoundRobin: 5,
		discovery.StrategyConsistentHash: 3, discovery.StrategyRandom: 2}
	for s := discovery.StrategyP2CEWMA; s <= discovery.StrategyRandom; s++ {
		if st.Picks[s] != want[s] {
			t.Errorf("Stats().Picks[%v] = %d; want %d", s, st.Picks[s], want[s])
		}
	}
	if st.PanicPicks != 4 {
		t.Errorf("PanicPicks = %d; want 4", st.PanicPicks)
	}
}

// After an outage in which every pick failed, p2c_ewma goes back to
// preferring the faster instance: the failures' penalty is bounded, so the
// averages come down again.
func TestP2CEWMARecoversFromAnOutage(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour),
		discovery.WithoutHealthChecks(), discovery.WithOutlierEjection(0, 30*time.Second, 300*time.Second, 10))
	registerN(t, r, "db_svc", 1, 1)
	outage := errors.New("upstream database down")
	for range 3000 {
		clock.Advance(time.Millisecond)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		sel.DoneLatency(outage, time.Millisecond)
	}
	picks := map[string]int{}
	const n = 40000 // 200 s, one pick every 5 ms; the last 6,000 (30 s) counted
	for i := range n {
		clock.Advance(5 * time.Millisecond)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		if i >= n-6000 {
			picks[sel.Instance.ID]++
		}
		lat := time.Millisecond
		if sel.Instance.ID == "i0" {
			lat = 50 * time.Millisecond
		}
		sel.DoneLatency(nil, lat)
	}
	if picks["i0"] > 600 {
		t.Fatalf("200 s after the outage, i0 (50x slower) got %d of the last 6000 picks: %v", picks["i0"], picks)
	}
}

// Adding one instance to a consistent_hash service moves about 1/N of the
// keys, whatever N: the table must not be resized (and every key remapped)
// when the count crosses a size boundary (2 -> 3, 10 -> 11, ...).
func TestConsistentHashAddingAnInstanceMovesFewKeys(t *testing.T) {
	for _, n := range []int{2, 10, 40} {
		t.Run(fmt.Sprint(n, " to ", n+1), func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithStrategy(discovery.StrategyConsistentHash))
			w := make([]int, n)
			for i := range w {
				w[i] = 1
			}
			registerN(t, r, "db_svc", w...)
			const keys = 20000
			where := func() []string {
				out := make([]string, keys)
				for k := range out {
					sel, err := r.Pick(context.Background(), "db_svc", discovery.HashKey(fmt.Sprint("user-", k)))
					if err != nil {
						t.Fatal(err)
					}
					out[k] = sel.Instance.ID
					sel.Done(nil)
				}
				return out
			}
			before := where()
			mustRegister(t, r, discovery.Instance{ID: "new", Service: "db_svc", Host: "10.0.1.1", Port: 80})
			after := where()
			moved := 0
			for k := range before {
				if after[k] != before[k] && after[k] != "new" {
					moved++
				}
			}
			// keys that moved to another old instance: ideally none (Maglev: a few percent)
			if frac := float64(moved) / keys; frac > 0.05 {
				t.Fatalf("adding 1 instance to %d moved %.1f%% of keys between instances that stayed; want under 5%%", n, 100*frac)
			}
		})
	}
}

// Round robin gives each caller every instance in turn, whatever other
// callers' picks of the service ask for: picks with other filters (or none)
// in between must not make one caller's picks skip instances.
func TestRoundRobinIsFairToInterleavedCallers(t *testing.T) {
	rr := discovery.UseStrategy(discovery.StrategyRoundRobin)
	tests := []struct {
		name   string
		a, b   []discovery.PickOption
		wa, wb []string // the instances each caller should see, evenly
	}{
		{"no filter and a version", []discovery.PickOption{rr}, []discovery.PickOption{rr, discovery.WithVersion("v1")},
			[]string{"i0", "i1", "i2", "i3"}, []string{"i0", "i1"}},
		{"two zones", []discovery.PickOption{rr, discovery.PreferZone("a")}, []discovery.PickOption{rr, discovery.PreferZone("b")},
			[]string{"i0", "i2"}, []string{"i1", "i3"}},
		{"round robin and weighted round robin", []discovery.PickOption{rr}, []discovery.PickOption{discovery.UseStrategy(discovery.StrategyWeightedRoundRobin)},
			[]string{"i0", "i1", "i2", "i3"}, []string{"i0", "i1", "i2", "i3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			registerN(t, r, "db_svc", 1, 1, 1, 1)
			const rounds = 1200
			ga, gb := map[string]int{}, map[string]int{}
			for range rounds { // the two callers take turns
				for _, c := range []struct {
					opts []discovery.PickOption
					got  map[string]int
				}{{tt.a, ga}, {tt.b, gb}} {
					sel, err := r.Pick(context.Background(), "db_svc", c.opts...)
					if err != nil {
						t.Fatal(err)
					}
					c.got[sel.Instance.ID]++
					sel.Done(nil)
				}
			}
			for _, c := range []struct {
				got  map[string]int
				want []string
			}{{ga, tt.wa}, {gb, tt.wb}} {
				for _, id := range c.want {
					if c.got[id] != rounds/len(c.want) {
						t.Fatalf("caller's round robin picks %v; want %d each of %v", c.got, rounds/len(c.want), c.want)
					}
				}
			}
		})
	}
}

// Weighted round robin interleaves as smoothly and deterministically when a
// filter or a zone narrows the pick as without: zone a (and shard 0) is
// i0, i2, i4 with weights 5:1:1, so a a b a c a a.
func TestWeightedRoundRobinIsSmoothWhenNarrowed(t *testing.T) {
	for _, opt := range []discovery.PickOption{discovery.PreferZone("a"), discovery.WithMeta("shard", "0")} {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
		registerN(t, r, "db_svc", 5, 1, 1, 1, 1, 1)
		var seq string
		for i := 0; i < 14; i++ {
			sel, err := r.Pick(context.Background(), "db_svc", discovery.UseStrategy(discovery.StrategyWeightedRoundRobin), opt)
			if err != nil {
				t.Fatal(err)
			}
			seq += map[string]string{"i0": "a", "i2": "b", "i4": "c"}[sel.Instance.ID]
			sel.Done(nil)
		}
		if !strings.Contains(strings.Repeat("aabacaa", 4), seq) {
			t.Fatalf("with %v: sequence %s; want aabacaa twice, from any place of it", opt, seq)
		}
	}
}

// A service going into panic mode keeps its consistent_hash keys on their
// instances as far as it can: spread over all 10 instances, each of the 4
// still eligible keeps a tenth of the keys, half of what it had; picks in
// panic used rendezvous hashing, which kept a tenth of them.
func TestConsistentHashKeepsKeysIntoPanic(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithStrategy(discovery.StrategyConsistentHash))
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // 5 of 10 eligible: not yet panic
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	const keys = 20000
	where := func(inPanic bool) []string {
		out := make([]string, keys)
		for k := range out {
			sel, err := r.Pick(ctx, "db_svc", discovery.HashKey(fmt.Sprint("user-", k)))
			if err != nil || sel.Panic != inPanic {
				t.Fatalf("Pick = %+v, %v; want Panic %v", sel, err, inPanic)
			}
			out[k] = sel.Instance.ID
			sel.Done(nil)
		}
		return out
	}
	before := where(false)
	discovery.SetInstanceHealth(r, "db_svc", "i5", discovery.StatusUnhealthy, 0)
	after := where(true)
	on, stayed := 0, 0
	for k := range before {
		if before[k] != "i5" {
			on++
			if after[k] == before[k] {
				stayed++
			}
		}
	}
	if frac := float64(stayed) / float64(on); frac < 0.4 {
		t.Fatalf("going into panic kept %.1f%% of the keys of instances still eligible on them; want about 50%%", 100*frac)
	}
}

// An instance that sheds load with fast 429s (ErrOverloaded) is not made
// cheaper by them: they count against its load in p2c_ewma's average, as a
// failure does (without its health). Counted as fast successes, they drew
// almost every pick to the overloaded instance.
func TestP2CEWMAAvoidsAnOverloadedInstance(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour),
		discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1)
	picks := map[string]int{}
	const n = 20000
	for i := range n {
		clock.Advance(time.Millisecond)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		if i >= n/2 {
			picks[sel.Instance.ID]++
		}
		if sel.Instance.ID == "i0" {
			sel.DoneLatency(fmt.Errorf("429: %w", discovery.ErrOverloaded), time.Millisecond)
		} else {
			sel.DoneLatency(nil, 20*time.Millisecond)
		}
	}
	if picks["i0"] > n/2/4 {
		t.Fatalf("i0, answering every call with a fast 429, got %d of the last %d picks: %v", picks["i0"], n/2, picks)
	}
	if n := r.Stats().Ejections; n != 0 {
		t.Fatalf("%d ejections; overloads must not eject", n)
	}
}

// Exclude (a retry going elsewhere) does not put the service into panic:
// with 2 of 4 instances healthy, a retry that leaves one of them out goes to
// the other, not to the unhealthy ones two times in three.
func TestExcludeDoesNotTriggerPanic(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1)
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i2", discovery.StatusUnhealthy, 0)
	discovery.SetInstanceHealth(r, "db_svc", "i3", discovery.StatusUnhealthy, 0)
	for _, s := range allStrategies {
		got := picks(t, r, "db_svc", 300, discovery.UseStrategy(s), discovery.Exclude("i0"))
		if got["i1"] != 300 {
			t.Fatalf("%v: Pick(Exclude(i0)) chose %v; want i1, the one healthy instance left", s, got)
		}
	}
	if n := r.Stats().PanicPicks; n != 0 {
		t.Fatalf("%d panic picks; want none", n)
	}
	// With i1 excluded too no healthy instance is left: an error, as before.
	if _, err := r.Pick(ctx, "db_svc", discovery.Exclude("i0"), discovery.Exclude("i1")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick excluding both healthy instances = %v; want ErrNoHealthyInstances", err)
	}
}

// In panic mode every strategy spreads over all live instances, as Pick's
// documentation says, the unhealthy ones included: that is what keeps the
// few healthy ones from taking the whole load. health_based weighed each
// instance by its health score, 0 while unhealthy, so it sent every panic
// pick to the healthy minority while reporting them as panic picks.
func TestPanicSpreadsOverAllLiveInstancesWithEveryStrategy(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1)
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	for _, filtered := range []bool{false, true} {
		for _, s := range allStrategies {
			got := map[string]int{}
			for k := 0; k < 2000; k++ {
				opts := []discovery.PickOption{discovery.UseStrategy(s), discovery.HashKey(fmt.Sprint("key", k))}
				if filtered {
					opts = append(opts, discovery.WithMeta("shard", "0")) // i0, i2, i4: one healthy
				}
				sel, err := r.Pick(ctx, "db_svc", opts...)
				if err != nil || !sel.Panic {
					t.Fatalf("%v: Pick = %+v, %v; want a panic pick", s, sel, err)
				}
				got[sel.Instance.ID]++
				sel.DoneLatency(nil, time.Millisecond) // alike, so that p2c_ewma has no latency to prefer
			}
			for i := 0; i < 5; i++ {
				id := fmt.Sprint("i", i)
				if filtered && i%2 == 1 {
					if got[id] != 0 {
						t.Fatalf("%v with a filter: picks %v; the filter keeps i0, i2, i4", s, got)
					}
				} else if got[id] == 0 {
					t.Fatalf("%v (filtered %v): panic picks %v; want every live instance chosen", s, filtered, got)
				}
			}
		}
	}
}

// Exclude does not move a pick out of its preferred zone: the zone is
// judged on the instances the filters keep, Exclude aside, as panic is.
// Counting the excluded instance out, a retry that left out one of a
// zone's two healthy instances (of four) found the zone below its
// threshold and went to another zone, though the other healthy one was
// there to take it.
func TestExcludeKeepsThePreferredZone(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1) // zone a: i0, i2, i4, i6; b: the others
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i4", discovery.StatusUnhealthy, 0)
	discovery.SetInstanceHealth(r, "db_svc", "i6", discovery.StatusUnhealthy, 0)
	for _, s := range allStrategies {
		got := picks(t, r, "db_svc", 300, discovery.UseStrategy(s), discovery.PreferZone("a"), discovery.Exclude("i0"))
		if got["i2"] != 300 {
			t.Fatalf("%v: Pick(PreferZone(a), Exclude(i0)) chose %v; want i2, zone a's other healthy instance", s, got)
		}
	}
	// With both of zone a's healthy instances excluded, the pick leaves the zone.
	got := picks(t, r, "db_svc", 300, discovery.PreferZone("a"), discovery.Exclude("i0"), discovery.Exclude("i2"))
	for id := range got {
		if id == "i4" || id == "i6" || id == "i0" || id == "i2" {
			t.Fatalf("Pick(PreferZone(a), Exclude(i0), Exclude(i2)) chose %v; want zone b", got)
		}
	}
}

// slowLoadStore advances a fake clock by delay on every Load: a database
// that takes that long to answer.
type slowLoadStore struct {
	discovery.Store
	clock *discoverytest.Clock
	delay time.Duration
}

func (s *slowLoadStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.clock.Advance(s.delay)
	return s.Store.Load(ctx, name)
}

// The latency Done reports is the call's, from the end of Pick: a Pick that
// had to load the service (a cold or expired cache, a slow database) began
// its clock before the load, and charged the load's time to the instance
// it chose, which p2c_ewma then shunned for seconds.
func TestDoneLatencyExcludesPicksLoad(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	writer := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	mustRegister(t, writer, inst("db_svc", "10.0.0.1", 1))
	r, err := discovery.New(discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithStore(&slowLoadStore{Store: backend, clock: clock, delay: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	sel, err := r.Pick(ctx, "db_svc") // a cold cache: the load takes 2 s
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Millisecond) // the call
	sel.Done(nil)
	if got := discovery.LatencyAverage(r, "db_svc", sel.Instance.ID); got != 10*time.Millisecond {
		t.Fatalf("latency average %v after a call of 10ms; want 10ms", got)
	}
}

// A draining instance whose lease lapsed with others (self-preservation
// keeps the group as suspects) is still draining: Get shows it suspect,
// Draining says it drains, and Pick never chooses it. Its draining mark was read from what Get
// shows, where suspect wins, so drained instances that stopped together (a
// scale-down whose deregistrations failed) were picked again for the grace.
func TestDrainingInstanceKeptAsSuspectIsNeverPicked(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, clock, backend := lapseRegistry(t)
	for i := 0; i < 10; i++ {
		in := discovery.Instance{ID: fmt.Sprintf("i%02d", i), Service: "db_svc", Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if i < 3 { // drained, then lapsed together
			in.Status, in.ExpiresAt = discovery.StatusDraining, t0.Add(ttl+time.Duration(i)*time.Second)
		}
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(t0.Add(ttl + 3*time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 3 suspect" {
		t.Fatalf("Get: %s; want the 3 lapsed draining instances kept as suspects", got)
	}
	for _, tt := range []struct {
		service, id string
		want        bool
	}{{"db_svc", "i00", true}, {"db_svc", "i02", true}, {"db_svc", "i03", false}, {"db_svc", "i99", false}, {"other", "i00", false}} {
		if got := r.Draining(tt.service, tt.id); got != tt.want {
			t.Errorf("Draining(%s, %s) = %v; want %v", tt.service, tt.id, got, tt.want)
		}
	}
	for _, s := range allStrategies {
		for _, filtered := range []bool{false, true} {
			opts := []discovery.PickOption{discovery.UseStrategy(s)}
			if filtered {
				opts = append(opts, discovery.Exclude("i09"))
			}
			got := map[string]int{}
			for i := 0; i < 300; i++ {
				sel, err := r.Pick(ctx, "db_svc", append(opts, discovery.HashKey(fmt.Sprint("k", i)))...)
				if err != nil {
					t.Fatalf("%s: Pick: %v", s, err)
				}
				got[sel.Instance.ID]++
				sel.Done(nil)
			}
			for id, n := range got {
				if id < "i03" {
					t.Errorf("%s (filtered %v): the draining instance %s, kept as a suspect, got %d of 300 picks; want 0 (%v)", s, filtered, id, n, got)
				}
			}
		}
	}
}

// A Strategy reads back what it writes as text (JSON, YAML, flags): it had
// MarshalText and no UnmarshalText, so a configuration struct holding one
// encoded as "round_robin" and could not be decoded again.
func TestStrategyTextRoundTrips(t *testing.T) {
	type conf struct{ S discovery.Strategy }
	for _, s := range append([]discovery.Strategy{0}, allStrategies...) {
		b, err := json.Marshal(conf{S: s})
		if err != nil {
			t.Fatal(err)
		}
		var got conf
		if err := json.Unmarshal(b, &got); err != nil || got.S != s {
			t.Errorf("%s: %s decodes to %v, %v; want %v", s, b, got.S, err, s)
		}
	}
	var got conf
	if err := json.Unmarshal([]byte(`{"S":"fastest"}`), &got); !errors.Is(err, discovery.ErrInvalid) {
		t.Errorf("an unknown strategy decodes with %v; want an error matching ErrInvalid", err)
	}
}

// A consistent_hash pick narrowed by a filter, a zone or Exclude keeps each
// key on the instance the unnarrowed pick gives it whenever that instance
// passes: excluding an instance that is not eligible anyway leaves the
// eligible set, and so every key, as it was; a filter or Exclude moves only
// the keys of the instances it leaves out, spread evenly over those it
// keeps. Narrowed picks used rendezvous hashing, unrelated to the Maglev of
// the others: excluding an unhealthy instance, or one bad instance on every
// call, moved about 90% of keys.
func TestConsistentHashNarrowedKeepsKeys(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1) // i0..i10; shard 0 and zone a: the even ones
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i10", discovery.StatusUnhealthy, 0)
	const keys = 20000
	where := func(opts ...discovery.PickOption) []string {
		out := make([]string, keys)
		for k := range out {
			sel, err := r.Pick(ctx, "db_svc", append(opts, discovery.HashKey(fmt.Sprint("user-", k)))...)
			if err != nil || sel.Panic {
				t.Fatalf("Pick = %+v, %v", sel, err)
			}
			out[k] = sel.Instance.ID
			sel.Done(nil)
		}
		return out
	}
	before := where()
	tests := []struct {
		name string
		opts []discovery.PickOption
		kept func(id string) bool
	}{
		{"Exclude of an ineligible instance", []discovery.PickOption{discovery.Exclude("i10")}, func(string) bool { return true }},
		{"Exclude", []discovery.PickOption{discovery.Exclude("i3")}, func(id string) bool { return id != "i3" }},
		{"WithMeta", []discovery.PickOption{discovery.WithMeta("shard", "0")}, isEven},
		{"PreferZone", []discovery.PickOption{discovery.PreferZone("a")}, isEven},
	}
	for _, tt := range tests {
		after := where(tt.opts...)
		moved, share := 0, map[string]int{}
		for k := range before {
			if tt.kept(before[k]) && after[k] != before[k] {
				moved++
			}
			if !tt.kept(after[k]) {
				t.Fatalf("%s: key %d went to %s, which it leaves out", tt.name, k, after[k])
			}
			share[after[k]]++
		}
		if moved > 0 {
			t.Errorf("%s: %d of the keys of instances it keeps (%.1f%%) moved; want none", tt.name, moved, 100*float64(moved)/keys)
		}
		for id, n := range share { // each kept instance about keys / len(share); 15% is many standard deviations
			if want := float64(keys) / float64(len(share)); math.Abs(float64(n)-want) > 0.15*want {
				t.Errorf("%s: %s owns %d keys; want about %.0f (%v)", tt.name, id, n, want, share)
			}
		}
	}
}

// In panic the same holds over every live instance: a filtered or
// excluding pick keeps each key on the instance the unnarrowed panic pick
// gives it, when that one passes.
func TestConsistentHashNarrowedKeepsKeysInPanic(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // 4 of 10 eligible: panic, with or without a filter below
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	const keys = 20000
	where := func(opts ...discovery.PickOption) []string {
		out := make([]string, keys)
		for k := range out {
			sel, err := r.Pick(ctx, "db_svc", append(opts, discovery.HashKey(fmt.Sprint("user-", k)))...)
			if err != nil || !sel.Panic {
				t.Fatalf("Pick = %+v, %v; want a panic pick", sel, err)
			}
			out[k] = sel.Instance.ID
			sel.Done(nil)
		}
		return out
	}
	before := where()
	for _, tt := range []struct {
		name string
		opt  discovery.PickOption
		kept func(id string) bool
	}{
		{"Exclude", discovery.Exclude("i7"), func(id string) bool { return id != "i7" }},
		{"WithMeta", discovery.WithMeta("shard", "0"), isEven},
	} {
		after := where(tt.opt)
		moved := 0
		for k := range before {
			if tt.kept(before[k]) && after[k] != before[k] {
				moved++
			}
		}
		if moved > 0 {
			t.Errorf("%s in panic: %d of the keys of instances it keeps (%.1f%%) moved; want none", tt.name, moved, 100*float64(moved)/keys)
		}
	}
}

func isEven(id string) bool { return (id[len(id)-1]-'0')%2 == 0 }

// Processes that start together do not send their round robin picks to one
// instance in lockstep: each starts its rotation at a random place, as
// gRPC's round_robin does. Every rotation started at the first instance,
// so a fleet's first pick of a service (after a deploy, say) all went to it;
// weighted round robin's too, whose period is walked from a random place
// (one too long to hold, from one of its first steps).
func TestRoundRobinProcessesStartApart(t *testing.T) {
	ctx := context.Background()
	be := discoverytest.NewBackend()
	reg := discoverytest.NewRegistry(t, be, discovery.WithoutHealthChecks())
	registerN(t, reg, "web", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	// 30 weights near the maximum, coprime: a period of ~300,000 picks
	// x 30 instances, too long for weighted round robin to hold
	long := make([]int, 30)
	for i := range long {
		long[i] = discovery.MaxWeight - 29 + i
	}
	registerN(t, reg, "long", long...)
	const procs = 30
	for _, s := range []discovery.Strategy{discovery.StrategyRoundRobin, discovery.StrategyWeightedRoundRobin} {
		for _, tt := range []struct {
			name    string
			service string
			opts    []discovery.PickOption
			n       int // instances the pick chooses among
		}{
			{"direct", "web", nil, 10},
			{"filtered", "web", []discovery.PickOption{discovery.WithMeta("shard", "0")}, 5},
			{"long period", "long", nil, 30},
			{"long period, filtered", "long", []discovery.PickOption{discovery.WithMeta("shard", "0")}, 15},
		} {
			first := map[string]int{}
			for range procs {
				r := discoverytest.NewRegistry(t, be, discovery.WithoutHealthChecks(), discovery.WithStrategy(s))
				sel, err := r.Pick(ctx, tt.service, tt.opts...)
				if err != nil {
					t.Fatal(err)
				}
				first[sel.Instance.ID]++
				sel.Done(nil)
			}
			// procs/n expected each; the bound's odds by chance are below 1e-5
			for id, c := range first {
				if c >= procs/2+procs/(2*tt.n)+3 {
					t.Errorf("%s, %s: %d of %d processes sent their first pick to %s: %v", s, tt.name, c, procs, id, first)
				}
			}
		}
	}
}

// A service in panic spreads a pick over its live instances, and a retry
// that excludes the one healthy instance is no exception: it goes to the
// others, as the first pick might have. It failed with "no healthy
// instances", though the service had a healthy one, and a retry that
// excluded an unhealthy instance was spread as panic says: whether a retry
// was made depended on which instance the first pick had chosen.
func TestExcludeInPanicSpreadsOverTheOthers(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, opts ...discovery.Option) *discovery.Registry {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), append(opts, discovery.WithoutHealthChecks())...)
		registerN(t, r, "db_svc", 1, 1, 1, 1)
		if _, err := r.Get(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 4; i++ { // 1 of 4 eligible: panic
			discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
		}
		return r
	}
	r := setup(t)
	for _, s := range allStrategies {
		got := map[string]int{}
		for k := range 600 {
			sel, err := r.Pick(ctx, "db_svc", discovery.UseStrategy(s), discovery.HashKey(fmt.Sprint("k", k)), discovery.Exclude("i0"))
			if err != nil || !sel.Panic {
				t.Fatalf("%v: Pick(Exclude(i0)) = %+v, %v; want a panic pick", s, sel.Instance, err)
			}
			got[sel.Instance.ID]++
			sel.DoneLatency(nil, time.Millisecond)
		}
		if got["i0"] != 0 || got["i1"] == 0 || got["i2"] == 0 || got["i3"] == 0 {
			t.Fatalf("%v: Pick(Exclude(i0)) in panic chose %v; want i1, i2 and i3", s, got)
		}
	}
	// Fail closed refuses it, as every panic pick; with none eligible, an error still.
	if _, err := setup(t, discovery.WithFailClosed()).Pick(ctx, "db_svc", discovery.Exclude("i0")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("fail closed: Pick(Exclude(i0)) = %v; want ErrNoHealthyInstances", err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i0", discovery.StatusUnhealthy, 0)
	if _, err := r.Pick(ctx, "db_svc", discovery.Exclude("i1")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("none eligible: Pick(Exclude(i1)) = %v; want ErrNoHealthyInstances", err)
	}
}

// An instance's first failure, before it has a latency average of its own,
// counts as twice its peers' average. Taken as it was, a refused connection
// reported in a microsecond made the new instance the cheapest by far:
// p2c_ewma sent it every pick it was offered until failures had doubled its
// average up to its peers' (a dozen failed requests here, ejection aside).
func TestFirstFastFailureIsNotTheCheapestAverage(t *testing.T) {
	ctx := context.Background()
	clock, r := peersAt5ms(t, []int{1, 1, 1}, discovery.WithOutlierEjection(1000, time.Second, time.Minute, 10))
	refused := errors.New("connection refused")
	got := map[string]int{}
	for range 300 {
		clock.Advance(time.Millisecond)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		if sel.Instance.ID == "i0" {
			sel.DoneLatency(refused, time.Microsecond)
		} else {
			sel.DoneLatency(nil, 5*time.Millisecond)
		}
	}
	if got["i0"] > 2 {
		t.Fatalf("picks %v: the instance failing every request in 1 µs got %d of 300; want at most its first and one more", got, got["i0"])
	}
}

// Retries that each exclude another instance start a new weighted round
// robin rotation each time (one per set of filters). Each starts at a random
// place in nginx's sequence, so their first picks follow the weights:
// started at the sequence's beginning, every one went to the heaviest
// instance.
func TestWeightedRoundRobinRetriesFollowTheWeights(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(),
		discovery.WithStrategy(discovery.StrategyWeightedRoundRobin))
	registerN(t, r, "web", 1, 1, 8)
	got := map[string]int{}
	const n = 250 // distinct Exclude sets, each a fresh rotation (fewer than the 256 kept)
	for i := range n {
		sel, err := r.Pick(ctx, "web", discovery.Exclude(fmt.Sprint("gone-", i)))
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		sel.Done(nil)
	}
	if got["i0"] < 8 || got["i1"] < 8 || got["i2"] > 235 {
		t.Fatalf("first picks of %d fresh rotations over weights 1, 1, 8: %v; want about 25, 25, 200", n, got)
	}
}

// An instance's first failure counts as twice the average of its peers in
// selection, not of an instance ejected meanwhile: the timeouts that got
// that one ejected had raised its average to the failure penalty's 10 s,
// and counted in the mean, they made a new instance's first fast failure
// cost it 6.7 s, so that p2c_ewma sent it nothing for more than a minute
// (its peers answer in 5 ms).
func TestFirstFailureIgnoresAnEjectedPeer(t *testing.T) {
	ctx := context.Background()
	clock, r := peersAt5ms(t, []int{1, 1, 1, 1})
	timeout := errors.New("i/o timeout")
	for range 5 { // the default ejection: 5 failures in a row
		if err := r.ReportOutcome("db_svc", "i0", timeout, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if h := healthOf(t, r, "db_svc", "i0"); !h.Ejected {
		t.Fatalf("Health(i0) = %+v; want it ejected", h)
	}
	if err := r.ReportOutcome("db_svc", "i3", errors.New("connection refused"), time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if avg := discovery.LatencyAverage(r, "db_svc", "i3"); avg > 20*time.Millisecond {
		t.Errorf("i3's first failure (1 µs) made its average %v; want twice its peers' (5 ms)", avg)
	}
	got := picksAt5ms(ctx, t, clock, r, 15000) // 15 s: twice 5 ms decays below 5 ms in 7 s
	if got["i3"] == 0 {
		t.Fatalf("in the 15 s after its one fast failure, i3 got none of 15000 picks: %v", got)
	}
}

// A pick that WithFailClosed refuses says why: the service has healthy
// instances, too few of them (below the panic threshold) to pick without
// panic. It said "no healthy instances", the same as a service with none,
// while Get and Health showed two of five healthy.
func TestFailClosedErrorSaysWhy(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithFailClosed())
	registerN(t, r, "db_svc", 1, 1, 1, 1, 1) // shard 0: i0, i2, i4
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	for _, tt := range []struct {
		name     string
		opts     []discovery.PickOption
		eligible int
	}{
		{"all", nil, 2},
		{"shard 0", []discovery.PickOption{discovery.WithMeta("shard", "0")}, 1},
	} {
		_, err := r.Pick(ctx, "db_svc", tt.opts...)
		var nh *discovery.NoHealthyError
		if !errors.As(err, &nh) || !errors.Is(err, discovery.ErrNoHealthyInstances) {
			t.Fatalf("%s: Pick = %v; want a NoHealthyError", tt.name, err)
		}
		msg := err.Error()
		if nh.Live != 5 || nh.Eligible != tt.eligible || strings.Contains(msg, "no healthy") || !strings.Contains(msg, fmt.Sprint(tt.eligible, " eligible")) ||
			!strings.Contains(msg, "panic threshold") || !strings.Contains(msg, "WithFailClosed") {
			t.Errorf("%s: Pick = %q (Live %d, Eligible %d); want it to say %d eligible, below the panic threshold, refused by WithFailClosed",
				tt.name, msg, nh.Live, nh.Eligible, tt.eligible)
		}
	}
	// With none eligible, it says so, as without WithFailClosed.
	for i := 3; i < 5; i++ {
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	if _, err := r.Pick(ctx, "db_svc"); err == nil || !strings.Contains(err.Error(), "no healthy instances") {
		t.Fatalf("none eligible: Pick = %v; want no healthy instances", err)
	}
}

// A pick that finds nothing because its own options left the instances out
// says so, as the gRPC resolver's WithFilter error does: "no healthy
// instances (4 live)" sent the reader to the health of four sound instances
// that a tag no instance carries, or a retry's Exclude, had left out.
func TestNoHealthyErrorSaysWhatThePickLeftOut(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1, 1) // version v1: i0, i1; tag t1: i1
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i1", discovery.StatusUnhealthy, 0)
	for _, tt := range []struct {
		name               string
		opts               []discovery.PickOption
		filtered, excluded int
		say                string
	}{
		{"a tag no instance has", []discovery.PickOption{discovery.WithTag("nobody")}, 4, 0, "filters left out 4"},
		{"a version", []discovery.PickOption{discovery.WithVersion("v1"), discovery.Exclude("i0")}, 2, 1, "filters left out 2"},
		{"Exclude", []discovery.PickOption{discovery.Exclude("i0"), discovery.Exclude("i2"), discovery.Exclude("i3")}, 0, 3, "Exclude left out 3 eligible"},
		{"tag t1, unhealthy", []discovery.PickOption{discovery.WithTag("t1")}, 3, 0, "filters left out 3"},
	} {
		_, err := r.Pick(ctx, "db_svc", tt.opts...)
		var nh *discovery.NoHealthyError
		if !errors.As(err, &nh) || !errors.Is(err, discovery.ErrNoHealthyInstances) {
			t.Fatalf("%s: Pick = %v; want a NoHealthyError", tt.name, err)
		}
		if msg := err.Error(); !strings.Contains(msg, tt.say) || nh.Live != 4 {
			t.Errorf("%s: Pick = %q (Live %d); want it to say %q", tt.name, msg, nh.Live, tt.say)
		}
	}
	// Without options the error is as before.
	for i := range 4 {
		discovery.SetInstanceHealth(r, "db_svc", fmt.Sprint("i", i), discovery.StatusUnhealthy, 0)
	}
	if _, err := r.Pick(ctx, "db_svc"); err == nil || err.Error() != `discovery: no healthy instances of service "db_svc" (4 live)` {
		t.Fatalf("Pick = %v; want no healthy instances (4 live)", err)
	}
}

// An instance that comes back into selection with a request still in
// flight (a stream, a long poll opened before it left) gets its share of
// p2c_ewma's picks: here each of three instances holds one. Selection drops the latency average of an instance
// that comes back, and an instance with no average and a request in flight
// costs a prohibitive amount (the one probing request at a time): it got
// no pick at all until that old request ended, for as long as a stream
// stayed open.
func TestP2CEWMAPicksAnInstanceBackWithARequestInFlight(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLeaseTTL(1000*time.Hour),
		discovery.WithoutHealthChecks())
	registerN(t, r, "db_svc", 1, 1, 1)
	run := func(n int) map[string]int { return picksAt5ms(ctx, t, clock, r, n) }
	run(300)
	streams := map[string]discovery.Selection{} // a long-lived request to each instance
	for len(streams) < 3 {
		sel, err := r.Pick(ctx, "db_svc", discovery.UseStrategy(discovery.StrategyLeastConnections))
		if err != nil {
			t.Fatal(err)
		}
		streams[sel.Instance.ID] = sel
	}
	defer func() {
		for _, sel := range streams {
			sel.Done(nil)
		}
	}()
	discovery.SetInstanceHealth(r, "db_svc", "i0", discovery.StatusUnhealthy, 0)
	if got := run(100); got["i0"] != 0 {
		t.Fatalf("picks %v while i0 was unhealthy", got)
	}
	discovery.SetInstanceHealth(r, "db_svc", "i0", discovery.StatusHealthy, 1)
	if got := run(3000); got["i0"] < 500 { // a third is 1000
		t.Fatalf("back in selection with one request in flight, i0 got %d of 3000 picks: %v", got["i0"], got)
	}
}

// Weighted round robin narrowed by a zone or a filter keeps its place in
// nginx's sequence when the service's picker is rebuilt (any instance's
// health status or ejection changing), as the unnarrowed rotation does.
// Each rebuild started every narrowed rotation again at a random place, so
// a caller preferring its zone got one instance twice in a row about once
// a rebuild: here, with a zone b instance flapping between healthy and
// warning before every pick, 50 repeats in 200 picks over 4 instances.
func TestWeightedRoundRobinNarrowedKeepsItsPlaceAcrossRebuilds(t *testing.T) {
	ctx := context.Background()
	for _, opt := range []discovery.PickOption{discovery.PreferZone("a"), discovery.WithMeta("shard", "0")} {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(),
			discovery.WithStrategy(discovery.StrategyWeightedRoundRobin))
		registerN(t, r, "db_svc", 1, 1, 1, 1, 1, 1, 1, 1) // zone a and shard 0: i0, i2, i4, i6
		if _, err := r.Get(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		var seq []string
		for k := range 200 {
			st := discovery.StatusHealthy
			if k%2 == 0 {
				st = discovery.StatusWarning
			}
			discovery.SetInstanceHealth(r, "db_svc", "i7", st, 1) // eligible either way: a rebuild, same instances
			sel, err := r.Pick(ctx, "db_svc", opt)
			if err != nil {
				t.Fatal(err)
			}
			seq = append(seq, sel.Instance.ID)
			sel.Done(nil)
		}
		for k := 4; k < len(seq); k++ {
			if seq[k] != seq[k-4] {
				t.Fatalf("with %v: picks %v; want i0, i2, i4, i6 in turn, from any place", opt, seq)
			}
		}
	}
}

// peersAt5ms is the set-up of the first-failure tests: db_svc's instances
// i0, i1, ... with weights, looked up on a fake clock, i1 and i2 with a
// latency average of 5 ms and the others with none.
func peersAt5ms(t *testing.T, weights []int, opts ...discovery.Option) (*discoverytest.Clock, *discovery.Registry) {
	t.Helper()
	clock, r := weightedRegistry(t, weights, opts...)
	if _, err := r.Get(context.Background(), "db_svc"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"i1", "i2"} {
		if err := r.ReportOutcome("db_svc", id, nil, 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	return clock, r
}

// picksAt5ms picks db_svc n times, a millisecond apart, each answered in
// 5 ms, and counts the picks of each instance.
func picksAt5ms(ctx context.Context, t *testing.T, clock *discoverytest.Clock, r *discovery.Registry, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		clock.Advance(time.Millisecond)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		sel.DoneLatency(nil, 5*time.Millisecond)
	}
	return got
}
