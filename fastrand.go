package discovery

import "math/rand/v2"

// fastRand draws the random numbers selection uses: SplitMix64 over striped
// Weyl sequences. A draw is one uncontended atomic add on the caller's
// stripe (stats.go) and a mix, about 3 ns here against about 8 ns for
// math/rand/v2's ChaCha8 (rand.Uint64), which p2c called on every Pick.
// Two goroutines on one stripe still draw different numbers: the add hands
// each its own step of the sequence. Statistical quality is SplitMix64's
// (it passes BigCrush); not for secrets.
type fastRand struct{ cells stripedCounter }

// golden is 2^64 / phi (odd): SplitMix64's increment, and the multiplier of
// Fibonacci hashing (index shards, counter stripes).
const golden = 0x9e3779b97f4a7c15

// seed starts every stripe at a random place, so that two Registries (or
// two processes) do not draw the same sequence.
func (f *fastRand) seed() {
	for i := range f.cells.cells {
		f.cells.cells[i].Store(rand.Uint64())
	}
}

func (f *fastRand) uint64() uint64 { return mix64(f.cells.add(golden)) }

// intn returns a number in [0, n) for 0 < n < 2^32, by Lemire's
// multiply-shift (no division); its bias is below n / 2^32.
func (f *fastRand) intn(n int) int { return boundedInt(uint32(f.uint64()>>32), n) }

// float64 returns a number in [0, 1).
func (f *fastRand) float64() float64 { return unitFloat(f.uint64()) }

// unitFloat maps 64 random bits to [0, 1).
func unitFloat(x uint64) float64 { return float64(x>>11) * 0x1p-53 }

// boundedInt maps 32 random bits to [0, n).
func boundedInt(x uint32, n int) int { return int(uint64(x) * uint64(n) >> 32) }
