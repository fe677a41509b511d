package discovery

import (
	"sync"
	"sync/atomic"
)

// indexShards splits the L1 read index so that a write copies only a small
// map (a few dozen entries at 10,000 services).
const indexShards = 128

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

// shard picks a shard by FNV-1a over at most the first 16 and last 8 bytes
// of the name: inlined, a few nanoseconds, and names that differ only in a
// numeric suffix still spread. Only balance depends on it, not correctness.
func (x *index) shard(name string) *indexShard {
	h := uint32(2166136261)
	n := len(name)
	for i := 0; i < n && i < 16; i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	for i := max(16, n-8); i < n; i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return &x.shards[(h^h>>16)%indexShards]
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
