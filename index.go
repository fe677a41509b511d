package discovery

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"unsafe"
)

// indexMinShardBits and indexShardLoad size the L1 read index: an insert
// or a delete copies its shard's table, so the shards are as many as keep that table to
// about indexShardLoad entries at the cache's size (128 shards, a few dozen
// entries each, at the default 10,000 services). With 128 shards whatever
// the size, a refresh of one service in an L1 of a million copied 7,800
// slots: 448 µs and 262 KB a refresh.
const (
	indexMinShardBits = 7
	indexShardLoad    = 128
)

// index maps service names to L1 entries. Reads are an atomic load and a
// probe of an open-addressing table, with no write to shared memory, so
// they scale across cores; writes rebuild one shard's table under its
// mutex (copy-on-write). sync.Map would also scale, but it hashes keys
// through interface{}, which costs more than the rest of an L1 hit; so did
// a map[string]*entry per shard, for less: Go's maps hash every string key
// of up to 64 bytes even in a map of one entry, and that hash and its
// call were half of an L1 hit (aeshashbody alone a tenth of a Pick). The
// index hashes a name once, with a hash of its own (nameHash), and uses
// that one hash for the shard and the slot.
type index struct {
	seed   uint64 // random per index: names cannot be chosen to collide
	shift  uint8  // 64 - log2(len(shards)): a hash's top bits pick its shard
	shards []indexShard
}

type indexShard struct {
	t  atomic.Pointer[indexTable]
	mu sync.Mutex
	_  [48]byte // keep hot shard pointers on separate cache lines
}

// indexTable is one shard's table: linear probing over a power of two of
// slots, at most half of them used, so a miss ends at an empty slot within
// a probe or two. Which names it holds, and where, never changes once it is
// published; the entry of a name may (update).
type indexTable struct {
	mask  uint64
	n     int // entries
	slots []indexSlot
}

type indexSlot struct {
	h uint64                // the name's hash, compared before the name; set before the table is published
	e atomic.Pointer[entry] // nil: empty. A refresh replaces the entry in place
}

// newIndex returns an empty index sized for services entries.
func newIndex(services int) *index {
	b := indexMinShardBits
	for b < 62 && services > indexShardLoad<<b {
		b++
	}
	x := &index{seed: rand.Uint64(), shift: uint8(64 - b), shards: make([]indexShard, 1<<b)}
	empty := &indexTable{slots: make([]indexSlot, 1)}
	for i := range x.shards {
		x.shards[i].t.Store(empty)
	}
	return x
}

// wyhash's constants and its multiply-fold.
const (
	wyK1 = 0xa0761d6478bd642f
	wyK2 = 0xe7037ed1a0b428db
)

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// nameHash is wyhash's structure over a name: 16 bytes per 128-bit
// multiply, the last 1-16 bytes read as two (overlapping) words, seeded per
// index. Every byte counts, so names that differ only in the middle spread
// as well as any (the shard hash this replaced read the first 24 and the
// last 8 bytes). Service names are at most 63 bytes.
func (x *index) nameHash(name string) uint64 {
	n := len(name)
	h := x.seed
	p := name
	for len(p) > 16 {
		h = mum(word(p)^wyK1, word(p[8:])^h)
		p = p[16:]
	}
	var a, b uint64
	switch m := len(p); {
	case m >= 8:
		a, b = word(p), word(p[m-8:])
	case m >= 4:
		a, b = uint64(word32(p)), uint64(word32(p[m-4:]))
	case m > 0:
		a = uint64(p[0])<<16 | uint64(p[m>>1])<<8 | uint64(p[m-1])
	}
	return mum(wyK1^uint64(n), mum(a^wyK1, b^h^wyK2))
}

// word reads the first 8 bytes of s (len(s) >= 8) as a little-endian word:
// one load. The bytes are only read, never written.
func word(s string) uint64 {
	return binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// word32 reads the first 4 bytes of s (len(s) >= 4).
func word32(s string) uint32 {
	return binary.LittleEndian.Uint32(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// shard picks a shard by the top bits of a name's hash; slots use the low
// bits.
func (x *index) shard(h uint64) *indexShard { return &x.shards[h>>x.shift] }

func (x *index) load(name string) *entry {
	h := x.nameHash(name)
	return x.shard(h).t.Load().find(h, name)
}

// find returns the entry of name (hash h), or nil.
func (t *indexTable) find(h uint64, name string) *entry {
	_, e := t.slot(h, name)
	return e
}

// slot returns the slot of name (hash h) and its entry, or nils. The probe
// ends at an empty slot: a table is never full.
func (t *indexTable) slot(h uint64, name string) (*indexSlot, *entry) {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		e := s.e.Load()
		if e == nil {
			return nil, nil
		}
		if s.h == h && e.name == name {
			return s, e
		}
	}
}

// update applies fn to the current entry of name under the shard's lock; fn
// returns the entry to store (nil deletes) and whether to change anything.
//
// A new entry of a name the table holds (a refresh) takes its slot in
// place: a lookup reads the old entry or the new one, as it would from the
// table before or after a copy. Only an insert or a delete copies the
// shard's table, which a refresh did too (7 µs and 5 KB a refresh at
// 10,000 services, 0.5 µs and no table now; see BenchmarkIndexReplace).
func (x *index) update(name string, fn func(cur *entry) (next *entry, change bool)) {
	h := x.nameHash(name)
	s := x.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.t.Load()
	sl, cur := old.slot(h, name)
	next, change := fn(cur)
	switch {
	case !change || next == nil && cur == nil:
		return
	case cur != nil && next != nil:
		sl.e.Store(next)
		return
	}
	n := old.n
	if cur == nil {
		n++
	} else {
		n--
	}
	size := 1
	for size < 2*n {
		size <<= 1
	}
	t := &indexTable{mask: uint64(size - 1), n: n, slots: make([]indexSlot, size)}
	for i := range old.slots {
		if e := old.slots[i].e.Load(); e != nil && e != cur {
			t.insert(old.slots[i].h, e)
		}
	}
	if next != nil {
		t.insert(h, next)
	}
	s.t.Store(t)
}

// insert puts an entry in a table being built (it has room: at most half
// full).
func (t *indexTable) insert(h uint64, e *entry) {
	i := h & t.mask
	for t.slots[i].e.Load() != nil {
		i = (i + 1) & t.mask
	}
	t.slots[i].h = h
	t.slots[i].e.Store(e)
}

// compareAndDelete removes name if it maps to e.
func (x *index) compareAndDelete(name string, e *entry) {
	x.update(name, func(cur *entry) (*entry, bool) { return nil, cur == e })
}

func (x *index) each(fn func(*entry)) {
	for i := range x.shards {
		t := x.shards[i].t.Load()
		for j := range t.slots {
			if e := t.slots[j].e.Load(); e != nil {
				fn(e)
			}
		}
	}
}
