package discovery

import (
	"math"
	"testing"
)

// p2cPair returns two different indices in range for every n, and every
// ordered pair about equally often.
func TestP2CPairIsUniformOverDistinctPairs(t *testing.T) {
	var f fastRand
	f.seed()
	for n := 2; n <= 12; n++ {
		count := make([]int, n*n)
		const draws = 200000
		for range draws {
			a, b := p2cPair(f.uint64(), n)
			if a < 0 || a >= n || b < 0 || b >= n || a == b {
				t.Fatalf("p2cPair(_, %d) = %d, %d", n, a, b)
			}
			count[a*n+b]++
		}
		want := float64(draws) / float64(n*(n-1))
		for a := range n {
			for b := range n {
				if c := count[a*n+b]; a != b && math.Abs(float64(c)-want) > 6*math.Sqrt(want) {
					t.Errorf("n=%d: pair (%d, %d) drawn %d times; want %.0f", n, a, b, c, want)
				}
			}
		}
	}
}

// The numbers of consecutive steps (the usual pick's, from its count) and
// of the striped generator fall evenly into buckets, and a stripe shared by
// two goroutines still hands out distinct numbers.
func TestFastRandIsUniform(t *testing.T) {
	var f fastRand
	f.seed()
	seed := f.uint64()
	const buckets, draws = 16, 160000
	for name, next := range map[string]func(k uint64) uint64{
		"pick count": func(k uint64) uint64 { return mix64(seed + k*golden) },
		"striped":    func(uint64) uint64 { return f.uint64() },
	} {
		var count [buckets]int
		for k := range uint64(draws) {
			count[boundedInt(uint32(next(k)>>32), buckets)]++
			if x := unitFloat(next(k)); x < 0 || x >= 1 {
				t.Fatalf("%s: unitFloat = %v", name, x)
			}
		}
		want := float64(draws) / buckets
		for i, c := range count {
			if math.Abs(float64(c)-want) > 6*math.Sqrt(want) {
				t.Errorf("%s: bucket %d has %d; want %.0f", name, i, c, want)
			}
		}
	}
	seen := map[uint64]bool{}
	done := make(chan []uint64)
	for range 2 {
		go func() {
			xs := make([]uint64, 10000)
			for i := range xs {
				xs[i] = f.uint64()
			}
			done <- xs
		}()
	}
	for range 2 {
		for _, x := range <-done {
			if seen[x] {
				t.Fatalf("the generator handed out %#x twice", x)
			}
			seen[x] = true
		}
	}
}

// boundedInt stays in [0, n) at the extremes of its input.
func TestBoundedIntRange(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 1000, math.MaxUint32} {
		for _, x := range []uint32{0, 1, math.MaxUint32 / 2, math.MaxUint32} {
			if got := boundedInt(x, n); got < 0 || got >= n {
				t.Fatalf("boundedInt(%d, %d) = %d", x, n, got)
			}
		}
	}
}
