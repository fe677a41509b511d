package discovery

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"
)

// indexShards splits the L1 read index so that a write copies only a small
// map (a few dozen entries at 10,000 services).
const (
	indexShardBits = 7
	indexShards    = 1 << indexShardBits
)

// index maps service names to L1 entries. Reads are an atomic load and a
// map lookup, with no write to shared memory, so they scale across cores;
// writes copy one shard's map under its mutex (copy-on-write). sync.Map would
// also scale, but it hashes keys through interface{}, which costs more than
// the rest of an L1 hit.
type index struct {
	shards [indexShards]indexShard
}

type indexShard struct {
	m  atomic.Pointer[map[string]*entry]
	mu sync.Mutex
	_  [40]byte // keep hot shard pointers on separate cache lines
}

func newIndex() *index {
	x := &index{}
	for i := range x.shards {
		m := map[string]*entry{}
		x.shards[i].m.Store(&m)
	}
	return x
}

// shard picks a shard from a name's first 16 and last 8 bytes (read as
// words; a name shorter than 8 bytes gives its length and first and last
// bytes), multiplied by 2^64/phi: a few instructions, where FNV-1a over the
// same bytes was a chain of 24 multiplications (an eighth of a Pick). Names that differ
// only in a numeric suffix still spread (their last word differs). Only
// balance depends on it, not correctness.
func (x *index) shard(name string) *indexShard {
	n := len(name)
	var h uint64
	if n >= 8 {
		h = word(name) ^ bits.RotateLeft64(word(name[n-8:]), 31)
		if n >= 16 {
			h ^= bits.RotateLeft64(word(name[8:]), 17)
		}
	} else if n > 0 { // a short name: its length and first and last bytes
		h = uint64(n) | uint64(name[0])<<8 | uint64(name[n-1])<<16
	}
	// The top bits of the product depend on every bit of h.
	return &x.shards[(h*golden)>>(64-indexShardBits)]
}

// word reads the first 8 bytes of s (len(s) >= 8) as a little-endian word:
// one load. The bytes are only read, never written.
func word(s string) uint64 {
	return binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s), len(s)))
}

func (x *index) load(name string) *entry {
	return (*x.shard(name).m.Load())[name]
}

// update applies fn to the current entry of name under the shard's lock; fn
// returns the entry to store (nil deletes) and whether to change anything.
func (x *index) update(name string, fn func(cur *entry) (next *entry, change bool)) {
	s := x.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.m.Load()
	next, change := fn(old[name])
	if !change {
		return
	}
	m := make(map[string]*entry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if next == nil {
		delete(m, name)
	} else {
		m[name] = next
	}
	s.m.Store(&m)
}

// compareAndDelete removes name if it maps to e.
func (x *index) compareAndDelete(name string, e *entry) {
	x.update(name, func(cur *entry) (*entry, bool) { return nil, cur == e })
}

func (x *index) each(fn func(*entry)) {
	for i := range x.shards {
		for _, e := range *x.shards[i].m.Load() {
			fn(e)
		}
	}
}
