package discovery_test

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// p2cWeightCases are services whose instances differ in weight, as a user
// sets them: a canary of weight 1 among nine of weight 10, a 99:1 split
// and one large machine among nine small ones (a share that two uniform
// draws out of ten, 20%, cannot reach).
var p2cWeightCases = []struct {
	name    string
	weights []int
}{
	{"canary 1 among nine 10s", []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 1}},
	{"99 and 1", []int{99, 1}},
	{"100 among nine 1s", []int{100, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
}

// checkWeightShares fails unless each instance's count of n picks is
// within 6 standard deviations of a binomial draw at its weight's share
// (a chance of a false failure of about 2e-9 an instance).
func checkWeightShares(t *testing.T, got map[string]int, n int, weights []int) {
	t.Helper()
	total := 0
	for _, w := range weights {
		total += w
	}
	var bad []string
	for i, w := range weights {
		id := fmt.Sprint("i", i)
		p := float64(w) / float64(total)
		want, tol := float64(n)*p, 6*math.Sqrt(float64(n)*p*(1-p))
		if c := float64(got[id]); math.Abs(c-want) > tol {
			bad = append(bad, fmt.Sprintf("%s (weight %d of %d) got %.0f (%.2f%%), want %.0f +- %.0f (%.2f%%)",
				id, w, total, c, 100*c/float64(n), want, tol, 100*p))
		}
	}
	if len(bad) > 0 {
		t.Errorf("of %d picks, %s; all picks %v", n, strings.Join(bad, "; "), got)
	}
}

// Without Done (a caller that never reports, or the first picks of one
// that does), p2c_ewma's picks follow the instances' weights, as every
// weighted strategy's do: a canary of weight 1 among nine of weight 10
// gets about 1.1% of them, not a tenth. On every path: the usual pick,
// and one through the selector (an Exclude that leaves nothing out).
func TestP2CEWMAFollowsWeightsWithoutDone(t *testing.T) {
	ctx := context.Background()
	paths := []struct {
		name string
		opts []discovery.PickOption
	}{
		{"no options", nil},
		{"selector", []discovery.PickOption{discovery.Exclude("nobody")}},
	}
	for _, tc := range p2cWeightCases {
		for _, path := range paths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithLeaseTTL(time.Hour), discovery.WithoutHealthChecks())
				registerN(t, r, "db_svc", tc.weights...)
				const n = 100_000
				got := map[string]int{}
				for range n {
					sel, err := r.Pick(ctx, "db_svc", path.opts...)
					if err != nil {
						t.Fatal(err)
					}
					if sel.Strategy != discovery.StrategyP2CEWMA {
						t.Fatalf("picked by %v", sel.Strategy)
					}
					got[sel.Instance.ID]++ // no Done
				}
				checkWeightShares(t, got, n, tc.weights)
			})
		}
	}
}

// With latencies reported, equal ones, p2c_ewma's picks still follow the
// weights: requests one at a time (each done before the next is picked),
// and 100,000 requests arriving every 200 µs that each take 2 ms (about
// ten in flight), simulated on a fake clock. The weight is no divisor of
// the cost that two instances of different weights are compared by: so
// divided, a weight-10 instance won every pair with a weight-1 one until
// it had ten times as many requests in flight, and one at a time the
// weight-1 instance got nothing.
func TestP2CEWMAFollowsWeightsWithLatencies(t *testing.T) {
	ctx := context.Background()
	for _, tc := range p2cWeightCases {
		t.Run(tc.name+"/one at a time", func(t *testing.T) {
			clock, r := weightedRegistry(t, tc.weights)
			const n = 100_000
			checkWeightShares(t, picksAt5ms(ctx, t, clock, r, n), n, tc.weights)
		})
		t.Run(tc.name+"/ten in flight", func(t *testing.T) {
			clock, r := weightedRegistry(t, tc.weights)
			const n = 100_000
			got := loadedPicks(ctx, t, clock, r, n, func(string) time.Duration { return 2 * time.Millisecond })
			checkWeightShares(t, got, n, tc.weights)
		})
	}
}

// loadedPicks simulates n requests to db_svc arriving every 200 µs, each
// taking latency(instance ID), on the fake clock, and counts the picks of
// each instance.
func loadedPicks(ctx context.Context, t *testing.T, clock *discoverytest.Clock, r *discovery.Registry, n int, latency func(string) time.Duration) map[string]int {
	t.Helper()
	var inflight completions
	got := map[string]int{}
	now := clock.Now()
	for range n {
		now = now.Add(200 * time.Microsecond)
		for inflight.Len() > 0 && !inflight[0].at.After(now) {
			c := heap.Pop(&inflight).(completion)
			clock.Set(c.at)
			c.sel.DoneLatency(nil, c.lat)
		}
		clock.Set(now)
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		lat := latency(sel.Instance.ID)
		heap.Push(&inflight, completion{at: now.Add(lat), sel: sel, lat: lat})
	}
	for _, c := range inflight {
		c.sel.DoneLatency(nil, c.lat)
	}
	return got
}

// Weights set the share of each weight's instances; among instances of one
// weight p2c_ewma still balances by latency and load: of nine weight-10
// instances one ten times slower than the others gets well under its
// share, the others take it over, and the canary (weight 1) keeps its
// share, as Finagle's traffic distributor keeps a weight class's.
func TestP2CEWMAAvoidsTheSlowInstanceAmongEqualWeights(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock),
		discovery.WithLeaseTTL(1000*time.Hour), discovery.WithoutHealthChecks())
	weights := []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 1}
	registerN(t, r, "db_svc", weights...)
	const n = 100_000
	got := loadedPicks(ctx, t, clock, r, n, func(id string) time.Duration {
		if id == "i0" {
			return 20 * time.Millisecond
		}
		return 2 * time.Millisecond
	})
	t.Logf("picks %v", got)
	if share := float64(got["i0"]) / n; share >= 0.05 {
		t.Errorf("the 10x slower weight-10 instance got %.2f%% of picks; want under 5%% (its weight's share is 11%%)", 100*share)
	}
	// the canary's count is a binomial draw at its share, whatever the load
	p := 1.0 / 91
	if c, want, tol := float64(got["i9"]), n*p, 6*math.Sqrt(n*p*(1-p)); math.Abs(c-want) > tol {
		t.Errorf("the canary (weight 1 of 91) got %.0f picks; want %.0f +- %.0f", c, want, tol)
	}
}

// weightedRegistry is a Registry on a fake clock, without health checks,
// with db_svc's instances i0, i1, ... registered with weights, their
// leases longer than any test.
func weightedRegistry(t *testing.T, weights []int, opts ...discovery.Option) (*discoverytest.Clock, *discovery.Registry) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), append([]discovery.Option{discovery.WithClock(clock),
		discovery.WithLeaseTTL(1000 * time.Hour), discovery.WithoutHealthChecks()}, opts...)...)
	registerN(t, r, "db_svc", weights...)
	return clock, r
}
