package discovery

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// maglevTable is Maglev consistent hashing (Eisenbud et al., NSDI 2016)
// over a picker's eligible instances: each key hashes to a slot, each slot
// names an instance. Instances fill the table in turns along their own
// permutations, so each owns an equal share, and removing one of N moves
// about 1/N of the keys.
type maglevTable struct {
	slots []int32 // candidate indices
}

// maglevSizes are primes; the table is the first at least 100 times the
// number of instances (under 1% imbalance), up to the last, and never
// smaller than maglevMinSize.
var maglevSizes = [...]int{251, 1021, 4093, 16381, 65521, 262139}

// maglevMinSize is the smallest table built (Envoy's is 65537). A key's
// slot depends on the table's size, so a size that followed the number of
// instances remapped almost every key when one was added or removed across
// a boundary (10 to 11 instances moved 82% of keys between instances that
// stayed): up to 655 instances the size is this one, whatever their number.
const maglevMinSize = 65521

// buildMaglev builds the table of the candidates in idx (p.elig, or all
// of them in panic).
func buildMaglev(p *picker, idx []int32) *maglevTable {
	n := len(idx)
	m := maglevSizes[len(maglevSizes)-1]
	for _, s := range maglevSizes {
		if s >= 100*n && s >= maglevMinSize {
			m = s
			break
		}
	}
	// Each instance walks its permutation offset, offset+skip, ... (mod m)
	// from pos: a step is an add and a compare, not the paper's
	// multiply and modulo, which made a build of the 65,521 slots take
	// milliseconds, paid by the first keyed Pick after every change.
	pos := make([]int, n)
	skip := make([]int, n)
	for k, i := range idx {
		h := p.cands[i].hid
		pos[k] = int(h % uint64(m))
		skip[k] = int(mix64(h)%uint64(m-1)) + 1
	}
	slots := make([]int32, m)
	for j := range slots {
		slots[j] = -1
	}
	for filled := 0; filled < m; {
		for k := 0; k < n && filled < m; k++ {
			c := pos[k]
			for slots[c] >= 0 {
				if c += skip[k]; c >= m {
					c -= m
				}
			}
			slots[c] = idx[k]
			if c += skip[k]; c >= m {
				c -= m
			}
			pos[k] = c
			filled++
		}
	}
	return &maglevTable{slots: slots}
}

func (p *picker) maglevPick(key string) int {
	t := p.maglev.Load()
	if t == nil {
		t = buildMaglev(p, p.elig)
		if !p.maglev.CompareAndSwap(nil, t) {
			t = p.maglev.Load()
		}
	}
	return int(t.slots[maglevSlot(key, len(t.slots))])
}

// maglevPanicPick is maglevPick over every candidate, for a panic pick
// (and consistentHash's first choice when filters narrow one). Rendezvous
// hashing served it, whose choices have nothing in common with Maglev's:
// when a service went into panic, 90% of the keys of instances still
// eligible moved (Maglev over the larger set keeps about as many as can
// stay).
func (p *picker) maglevPanicPick(key string) int {
	t := p.maglevAll.Load()
	if t == nil {
		all := make([]int32, len(p.cands))
		for i := range all {
			all[i] = int32(i)
		}
		t = buildMaglev(p, all)
		if !p.maglevAll.CompareAndSwap(nil, t) {
			t = p.maglevAll.Load()
		}
	}
	return int(t.slots[maglevSlot(key, len(t.slots))])
}

// maglevSlot maps a key to one of m slots by multiply-shift (the high word
// of hash x m), not by the paper's modulo: a 64-bit division was a tenth of
// a consistent_hash Pick, and over a 64-bit hash the two are as uniform.
func maglevSlot(key string, m int) int {
	hi, _ := bits.Mul64(xxhash.Sum64String(key), uint64(m))
	return int(hi)
}
