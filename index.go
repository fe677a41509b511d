package discovery

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"unsafe"
)

// indexShards splits the L1 read index so that a write copies only a small
// table (a few dozen entries at 10,000 services).
const (
	indexShardBits = 7
	indexShards    = 1 << indexShardBits
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
	shards [indexShards]indexShard
}

type indexShard struct {
	t  atomic.Pointer[indexTable]
	mu sync.Mutex
	_  [48]byte // keep hot shard pointers on separate cache lines
}

// indexTable is one shard's immutable table: linear probing over a power of
// two of slots, at most half of them used, so a miss ends at an empty slot
// within a probe or two.
type indexTable struct {
	mask  uint64
	n     int // entries
	slots []indexSlot
}

type indexSlot struct {
	h uint64 // the name's hash, compared before the name
	e *entry // nil: empty
}

func newIndex() *index {
	x := &index{seed: rand.Uint64()}
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
func (x *index) shard(h uint64) *indexShard { return &x.shards[h>>(64-indexShardBits)] }

func (x *index) load(name string) *entry {
	h := x.nameHash(name)
	return x.shard(h).t.Load().find(h, name)
}

// find returns the entry of name (hash h), or nil. The probe ends at an
// empty slot: a table is never full.
func (t *indexTable) find(h uint64, name string) *entry {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.e == nil {
			return nil
		}
		if s.h == h && s.e.name == name {
			return s.e
		}
	}
}

// update applies fn to the current entry of name under the shard's lock; fn
// returns the entry to store (nil deletes) and whether to change anything.
func (x *index) update(name string, fn func(cur *entry) (next *entry, change bool)) {
	h := x.nameHash(name)
	s := x.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.t.Load()
	cur := old.find(h, name)
	next, change := fn(cur)
	if !change || next == nil && cur == nil {
		return
	}
	n := old.n
	if cur == nil {
		n++
	} else if next == nil {
		n--
	}
	size := 1
	for size < 2*n {
		size <<= 1
	}
	t := &indexTable{mask: uint64(size - 1), n: n, slots: make([]indexSlot, size)}
	for _, sl := range old.slots {
		if sl.e != nil && sl.e != cur {
			t.insert(sl)
		}
	}
	if next != nil {
		t.insert(indexSlot{h: h, e: next})
	}
	s.t.Store(t)
}

// insert puts a slot in a table being built (it has room: at most half full).
func (t *indexTable) insert(sl indexSlot) {
	i := sl.h & t.mask
	for t.slots[i].e != nil {
		i = (i + 1) & t.mask
	}
	t.slots[i] = sl
}

// compareAndDelete removes name if it maps to e.
func (x *index) compareAndDelete(name string, e *entry) {
	x.update(name, func(cur *entry) (*entry, bool) { return nil, cur == e })
}

func (x *index) each(fn func(*entry)) {
	for i := range x.shards {
		for _, sl := range x.shards[i].t.Load().slots {
			if sl.e != nil {
				fn(sl.e)
			}
		}
	}
}
