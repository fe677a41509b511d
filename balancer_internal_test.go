package discovery

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
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
