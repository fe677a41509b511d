package discovery

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// decay's polynomial agrees with math.Exp to within rounding wherever it
// serves, takes over from it without a step, and never exceeds 1.
func TestDecayMatchesExp(t *testing.T) {
	edge := int64(ewmaDecay) / 1024
	ages := []int64{-5, 0, 1, int64(time.Microsecond), int64(time.Millisecond), edge - 1, edge, edge + 1, int64(time.Second), int64(time.Minute)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		ages = append(ages, rng.Int64N(2*edge))
	}
	for _, age := range ages {
		got, want := decay(age), math.Exp(-float64(max(age, 0))/float64(ewmaDecay))
		if d := math.Abs(got-want) / want; d > 1e-15 || got > 1 {
			t.Fatalf("decay(%d ns) = %.17g; math.Exp gives %.17g (relative difference %.3g)", age, got, want, d)
		}
	}
	if a, b := decay(edge-1), decay(edge); b > a {
		t.Fatalf("decay rises where math.Exp takes over: %.17g then %.17g", a, b)
	}
}

// Keys spread evenly over every slot of a Maglev table, its last ones
// included: 100,000 keys over each of the two smallest table sizes.
func TestMaglevKeysSpreadOverTheWholeTable(t *testing.T) {
	for _, m := range []int{maglevSizes[0], maglevSizes[1]} {
		const keys = 100_000
		counts := make([]int, m)
		for k := range keys {
			s := maglevSlot("user-"+strconv.Itoa(k), m)
			if s < 0 || s >= m {
				t.Fatalf("maglevSlot(_, %d) = %d", m, s)
			}
			counts[s]++
		}
		mean := float64(keys) / float64(m)
		for s, c := range counts {
			// 6 standard deviations (sqrt(mean)) either side.
			if math.Abs(float64(c)-mean) > 6*math.Sqrt(mean) {
				t.Fatalf("table of %d: slot %d got %d keys; want about %.0f", m, s, c, mean)
			}
		}
	}
}

// Failures in a row raise an average to maxFailurePenalty at most, never to
// +Inf, and successes bring it back down.
func TestFailuresKeepTheAverageFinite(t *testing.T) {
	is := newInstState("s", "a")
	now := int64(1e18)
	for range 1100 { // doubled each time from 1 ms, +Inf after ~1,000
		now += int64(time.Millisecond)
		is.observe(time.Millisecond, outcomeFailure, now)
	}
	if v := math.Float64frombits(is.ewma.Load()); v != float64(10*time.Second) {
		t.Fatalf("after 1100 failures of 1 ms the average is %v ns; want the cap, 10 s", v)
	}
	is.observe(time.Minute, outcomeFailure, now) // a slower latency counts as it is
	if v := math.Float64frombits(is.ewma.Load()); v != float64(time.Minute) {
		t.Fatalf("a failure that took a minute leaves the average at %v ns", v)
	}
	for range 200000 {
		now += int64(time.Millisecond)
		is.observe(time.Millisecond, outcomeSuccess, now)
	}
	if v := math.Float64frombits(is.ewma.Load()); v > float64(2*time.Millisecond) {
		t.Fatalf("after 200 s of 1 ms successes the average is %v ns", v)
	}
}

// A failure counts as at least twice the average as it stands when it
// happens, decayed since the last sample: an instance slow a minute ago
// (1 s) whose first request back fails in 5 ms is not charged 2 s, 400
// times its current average, for another ten seconds or so.
func TestAFailureCountsTwiceTheDecayedAverage(t *testing.T) {
	is := newInstState("s", "a")
	now := int64(1e18)
	is.observe(time.Second, outcomeSuccess, now)
	now += int64(time.Minute)
	cur := float64(time.Second) * decay(int64(time.Minute)) // about 2.5 ms
	is.observe(5*time.Millisecond, outcomeFailure, now)
	v := math.Float64frombits(is.ewma.Load())
	if v < max(2*cur, float64(5*time.Millisecond)) || v > 4*cur+float64(5*time.Millisecond) {
		t.Fatalf("a 5 ms failure a minute after a 1 s average (%.2f ms now) leaves it at %.2f ms; want at least twice the current average, not twice the old one",
			cur/1e6, v/1e6)
	}
}

// A negative latency (DoneLatency from a clock that went back) is no sample:
// taken as 1 ns, it pulled a 10 ms average down to under 4 ms in one call
// 10 s on, and to nothing after a few, so p2c sent the instance nearly every
// pick.
func TestNegativeLatencyLeavesTheAverage(t *testing.T) {
	is := newInstState("s", "a")
	now := int64(1e18)
	is.observe(10*time.Millisecond, outcomeSuccess, now)
	for range 5 {
		now += int64(10 * time.Second)
		is.observe(-time.Second, outcomeSuccess, now)
	}
	if v := math.Float64frombits(is.ewma.Load()); v != float64(10*time.Millisecond) {
		t.Fatalf("after five successes of -1 s the average is %.3f ms; want 10 ms, untouched", v/1e6)
	}
	is.observe(-time.Second, outcomeFailure, now)
	if v := math.Float64frombits(is.ewma.Load()); v <= float64(10*time.Millisecond)*decay(int64(50*time.Second)) {
		t.Fatalf("a failure of -1 s left the average at %.3f ms; want its penalty", v/1e6)
	}
}

// Removing one of N instances moves about 1/N of the keys, at every N
// whose table is the size of N-1's: 65,521 slots up to 655 instances,
// 262,139 past that (100 slots each). A key's slot and the table's
// contents both depend on the size, so going from 656 instances to 655
// moves almost every key (99.7% here): the docs say so. One size for every
// N (262,139 slots: 1 MiB, and four times the build on the first keyed
// pick after every change) would pay that for every service to spare
// the few that cross 655.
func TestMaglevRemovingOneMovesFewKeysAtEverySize(t *testing.T) {
	for _, n := range []int{10, 655, 657, 2000} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256) + ":80"
		}
		table := func(ids []string) *maglevTable {
			p := &picker{}
			for i, id := range ids {
				p.cands = append(p.cands, candidate{hid: xxhash.Sum64String(id)})
				p.elig = append(p.elig, int32(i))
			}
			return buildMaglev(p, p.elig)
		}
		a, b := table(ids), table(ids[:n-1])
		const keys = 50_000
		moved := 0
		for k := range keys {
			key := "user-" + strconv.Itoa(k)
			if x := a.slots[maglevSlot(key, len(a.slots))]; x != int32(n-1) && x != b.slots[maglevSlot(key, len(b.slots))] {
				moved++
			}
		}
		// Maglev moves a few keys between instances that stay (under 1% here
		// up to 655)
		if frac := float64(moved) / keys; frac > 0.02 {
			t.Errorf("removing 1 of %d instances moved %.1f%% of the keys of the others; want under 2%%", n, 100*frac)
		}
	}
}
