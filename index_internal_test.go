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
	x := newIndex(DefaultCacheSize)
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
		mean := float64(len(distinct)) / float64(len(x.shards))
		if len(distinct) < n { // short names: few distinct, all shards not expected
			if len(count) < len(x.shards)/2 {
				t.Errorf("%s: %d distinct names went to %d shards; want at least %d", name, len(distinct), len(count), len(x.shards)/2)
			}
			continue
		}
		if len(count) != len(x.shards) {
			t.Errorf("%s: %d of %d shards used", name, len(count), len(x.shards))
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
	x := newIndex(DefaultCacheSize)
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

// BenchmarkIndexReplace times replacing one service's entry (a refresh of
// it) in an index that holds services of them, sized for that many.
func BenchmarkIndexReplace(b *testing.B) {
	for _, services := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprint("services=", services), func(b *testing.B) {
			x := newIndex(services)
			names := make([]string, services)
			for i := range names {
				names[i] = fmt.Sprintf("svc-%d", i)
				e := &entry{name: names[i]}
				x.update(names[i], func(*entry) (*entry, bool) { return e, true })
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				n := names[i%len(names)]
				e := &entry{name: n}
				x.update(n, func(*entry) (*entry, bool) { return e, true })
				i += 7919
			}
		})
	}
}

// A refresh of a service (a new entry of a name the index holds) replaces
// the entry in place, without copying the shard's table: copied, each
// refresh allocated a table of the shard's size.
func TestIndexReplaceCopiesNoTable(t *testing.T) {
	x := newIndex(DefaultCacheSize)
	for i := range 1000 {
		e := &entry{name: fmt.Sprint("svc-", i)}
		x.update(e.name, func(*entry) (*entry, bool) { return e, true })
	}
	a, b := &entry{name: "svc-7"}, &entry{name: "svc-7"}
	next := a
	swap := func(*entry) (*entry, bool) { return next, true }
	allocs := testing.AllocsPerRun(100, func() {
		x.update("svc-7", swap)
		if next == a {
			next = b
		} else {
			next = a
		}
	})
	if allocs != 0 {
		t.Fatalf("a refresh allocated %.0f times; want no table", allocs)
	}
	if got := x.load("svc-7"); got != a && got != b {
		t.Fatalf("after the refreshes load gives %p; want one of the two entries", got)
	}
}

// The shards grow with the cache's size, so that an insert or a delete
// copies a table of about the same size in an L1 of a million services as
// in one of ten thousand: with 128 shards whatever the size, each copied
// 7,800 slots (448 µs and 262 KB) in the first.
func TestIndexShardsGrowWithTheCache(t *testing.T) {
	for _, services := range []int{1, DefaultCacheSize, 1_000_000} {
		x := newIndex(services)
		n := min(services, 200_000)
		for i := range n {
			e := &entry{name: fmt.Sprint("svc-", i)}
			x.update(e.name, func(*entry) (*entry, bool) { return e, true })
		}
		largest := 0
		for i := range x.shards {
			largest = max(largest, len(x.shards[i].t.Load().slots))
		}
		if want := 4 * indexShardLoad; largest > want {
			t.Errorf("sized for %d services and holding %d: a shard's table has %d slots; want at most %d", services, n, largest, want)
		}
	}
}

// Lookups running beside refreshes, inserts and deletes get an entry of the
// name they asked for, or none (run under -race: a slot's hash is written
// only before its table is published, its entry atomically).
func TestIndexReadsBesideWrites(t *testing.T) {
	x := newIndex(DefaultCacheSize)
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprint("svc-", i)
	}
	stop := make(chan struct{})
	done := make(chan error, 2)
	for range 2 {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				n := names[i%len(names)]
				if e := x.load(n); e != nil && e.name != n {
					done <- fmt.Errorf("load(%q) gave the entry of %q", n, e.name)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		n := names[rng.IntN(len(names))]
		if rng.IntN(4) == 0 {
			x.update(n, func(cur *entry) (*entry, bool) { return nil, cur != nil })
			continue
		}
		e := &entry{name: n}
		x.update(n, func(*entry) (*entry, bool) { return e, true })
	}
	close(stop)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
