package discovery

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The shard hash spreads realistic service names: names that share a long
// prefix and differ in a numeric suffix, or in a word in the middle, fill
// every shard within twice the mean.
func TestIndexShardsSpreadNames(t *testing.T) {
	x := newIndex()
	patterns := map[string]func(i int) string{
		"numeric suffix":  func(i int) string { return fmt.Sprintf("payments-api-eu-west-1-%d", i) },
		"padded suffix":   func(i int) string { return fmt.Sprintf("svc-%05d", i) },
		"prefix and team": func(i int) string { return fmt.Sprintf("team%d.orders.grpc", i) },
		"middle differs":  func(i int) string { return fmt.Sprintf("checkout-%d-service-v2", i) },
		// the first 24 and the last 8 bytes alike: all in one shard
		// under the shard hash before nameHash
		"long shared ends": func(i int) string { return fmt.Sprintf("acme-platform-production-%d-service-eu1", i) },
		"exactly 8 bytes":  func(i int) string { return fmt.Sprintf("s%07d", i) },
		"short, many kind": func(i int) string { return fmt.Sprintf("%c%c", 'a'+i%26, 'a'+i/26%26) },
	}
	for name, gen := range patterns {
		count := make(map[*indexShard]int)
		const n = 10000
		distinct := map[string]bool{}
		for i := range n {
			s := gen(i)
			distinct[s] = true
			count[x.shard(x.nameHash(s))]++
		}
		mean := float64(len(distinct)) / indexShards
		if len(distinct) < n { // short names: few distinct, all shards not expected
			if len(count) < indexShards/2 {
				t.Errorf("%s: %d distinct names went to %d shards; want at least %d", name, len(distinct), len(count), indexShards/2)
			}
			continue
		}
		if len(count) != indexShards {
			t.Errorf("%s: %d of %d shards used", name, len(count), indexShards)
		}
		for _, c := range count {
			if float64(c) > 2*mean {
				t.Errorf("%s: a shard holds %d names; the mean is %.0f", name, c, mean)
				break
			}
		}
	}
}

// The index finds what was stored and nothing else, through inserts,
// replacements and deletes that grow and shrink its tables (names of every
// length up to the longest a service may have, so every branch of nameHash).
func TestIndexLoadUpdateDelete(t *testing.T) {
	x := newIndex()
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]*entry{}
	name := func() string {
		b := make([]byte, 1+rng.IntN(253))
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz0123456789-_."[rng.IntN(39)]
		}
		return string(b[:1+rng.IntN(len(b))])
	}
	names := make([]string, 3000)
	for i := range names {
		names[i] = name()
	}
	for step := range 20000 {
		n := names[rng.IntN(len(names))]
		switch step % 3 {
		case 0, 1: // store a new entry (insert or replace)
			e := &entry{name: n}
			x.update(n, func(cur *entry) (*entry, bool) {
				if cur != want[n] {
					t.Fatalf("update(%q) saw %p; want %p", n, cur, want[n])
				}
				return e, true
			})
			want[n] = e
		case 2: // delete, through compareAndDelete with a stale entry first
			x.compareAndDelete(n, &entry{name: n})
			if x.load(n) != want[n] {
				t.Fatalf("compareAndDelete of another entry changed %q", n)
			}
			x.compareAndDelete(n, want[n])
			delete(want, n)
		}
	}
	for _, n := range names {
		if got := x.load(n); got != want[n] {
			t.Fatalf("load(%q) = %p; want %p", n, got, want[n])
		}
		if x.load(n+"x") != want[n+"x"] {
			t.Fatalf("load(%q) found an entry never stored", n+"x")
		}
	}
	seen := 0
	x.each(func(e *entry) {
		seen++
		if want[e.name] != e {
			t.Fatalf("each gave %q, not stored", e.name)
		}
	})
	if seen != len(want) {
		t.Fatalf("each gave %d entries; %d stored", seen, len(want))
	}
}
