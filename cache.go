package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/cache/rediscache"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
)

// The read path: L1 (this process) -> L2 (Redis) -> L3 (the Store).
//
// L1 is ristretto, which bounds it and decides by TinyLFU what stays. Reads
// go through a lock-free index (index.go: copy-on-write shards) that mirrors ristretto's
// contents: ristretto's Get takes a shard lock whose reader count every core
// writes, so on a hot key two cores are slower than one; the index scales.
// One read in touchSample also touches ristretto, so its admission policy
// sees the same frequencies, scaled; ristretto's evictions and rejections
// remove the entry from the index.

// touchSample: one L1 hit in touchSample is reported to ristretto's policy.
const touchSample = 16

// maxRefreshes bounds concurrent background refreshes.
const maxRefreshes = 16

// entry is one service in L1: an immutable snapshot plus atomics that the
// read path consults. Entries are replaced, never changed, except for their
// freshness, which invalidation can cut short.
type entry struct {
	name     string
	rev      int64
	layer    Layer // where the loader found it
	loadedAt int64 // Unix ns when the snapshot was read from the database
	// insertedAt is when the entry was built.
	insertedAt int64
	// usedAt is when a lookup of this process (Get, Lookup, Pick, Health,
	// a watch) last used the entry or one it replaced (coarse clock, Unix
	// ns, kept to within a second: markUsed). Change messages rebuild
	// entries without any lookup, so when it was built says nothing of use.
	usedAt atomic.Int64
	raw    *core.Service
	// view holds the live instances with this process's statuses.
	view atomic.Pointer[core.Service]
	// touchedAt is when a hit was last reported to ristretto (coarse clock).
	touchedAt atomic.Int64
	// notFound is returned by lookups of a service with no live instance.
	notFound error

	freshUntil atomic.Int64
	staleUntil int64 // stale-while-revalidate ends (never past a lease)
	errorUntil int64 // stale-if-error ends
	minExpiry  int64

	refreshing atomic.Bool
	failedAt   atomic.Int64

	// slot is what ristretto holds for the name; it outlives entries, so a
	// newer entry of a name it already holds costs ristretto nothing. It is
	// set under the index shard's lock, and changed only there (rejected).
	slot atomic.Pointer[slot]
	// st is the service's state in this process (nil for a negative entry).
	st *svcState
	// inv is st's count of invalidations when the snapshot's read began in
	// this process (see invalidatedSince); guarded says it was counted
	// (readSince), and L1 then refuses the entry once the count has moved.
	inv     uint64
	guarded bool
	// final marks the snapshot of a load's last attempt, which goes into
	// L1 fresh even below the revision lookups wait for (installLoaded).
	// (In guarded's padding.)
	final bool
	// viewGen is st's health generation when the view was built.
	viewGen uint64
	// kept is set on an entry kept for NoWait picks (keep) alone, nil on
	// any other. A pointer: two more words took the entry from Go's
	// 192-byte size class, whose objects all start on a cache line, to
	// the 208-byte one.
	kept *kept
}

// kept says which write of this process superseded a kept entry's
// snapshot (keep): its revision (the highest, after several), and a time
// after its commit (the Registry's clock, Unix ns).
type kept struct{ rev, at int64 }

// markUsed records a use of e at now: a load and a compare on every hit,
// a store at most once a second, so a hot entry's cache line is not
// written by every core on every hit.
func (e *entry) markUsed(now int64) {
	if now-e.usedAt.Load() > int64(time.Second) {
		e.usedAt.Store(now)
	}
}

// readSince marks e as read after inv invalidations of its service.
func (e *entry) readSince(inv uint64) { e.inv, e.guarded = inv, true }

// outdated reports whether e was read before an invalidation of its
// service that has happened since.
func (e *entry) outdated() bool { return e.guarded && e.st != nil && e.st.invalidated.Load() != e.inv }

// slot stands for one service name in ristretto.
type slot struct{ name string }

type l1Cache struct {
	index *index
	rc    *ristretto.Cache[string, *slot]
	// onPut, if set, is called after put stored an entry (watch.go); never
	// on the lookup path.
	onPut func(*entry)
	// onEvict, if set, is called after ristretto's eviction or rejection
	// took an entry out of the index (state.go).
	onEvict func(*entry)
	// onGone, if set, is called when ristretto evicted or rejected a name
	// whose entry had already left the index (remove), and that the index
	// does not hold again (state.go).
	onGone func(name string)
	// lease is the lease TTL (ns): a database read begun a lease after the
	// held snapshot was read may replace it at a lower revision (put).
	lease int64
	// mu keeps ristretto's Close from running while a put or a lookup
	// calls into it (its Close closes the channels Set and Get send on),
	// and closed, under mu, stops those calls once Close has begun.
	mu     sync.RWMutex
	closed bool
}

func newL1(size int) (*l1Cache, error) {
	c := &l1Cache{index: newIndex(size)}
	evict := func(it *ristretto.Item[*slot]) {
		if it.Value != nil {
			c.drop(it.Value, true)
		}
	}
	reject := func(it *ristretto.Item[*slot]) {
		if it.Value != nil {
			c.rejected(it.Value)
		}
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, *slot]{
		NumCounters:        int64(size) * 10,
		MaxCost:            int64(size),
		BufferItems:        64,
		IgnoreInternalCost: true, // cost is 1 per service; internal cost would evict most items
		OnEvict:            evict,
		OnReject:           reject,
	})
	if err != nil {
		return nil, err
	}
	c.rc = rc
	return c, nil
}

// drop takes the entry of sl out of the index, if it is still the one
// there; gone says the service left ristretto too, and onEvict hears of it
// (onGone, if the index held no entry of the name: one removed before, whose
// state was kept for good when only onEvict was told).
func (c *l1Cache) drop(sl *slot, gone bool) {
	var e *entry
	held := false
	c.index.update(sl.name, func(cur *entry) (*entry, bool) {
		held = cur != nil
		if cur != nil && cur.slot.Load() == sl {
			e = cur
		}
		return nil, e != nil
	})
	switch {
	case !gone:
	case e != nil && c.onEvict != nil:
		c.onEvict(e)
	case !held && c.onGone != nil:
		c.onGone(sl.name)
	}
}

// rejected handles ristretto's refusal of sl. Ristretto also "rejects" a
// Set of a key its policy already tracks (a duplicate Set, as touch can
// make, or a new slot of a name whose old one was still being added) while
// keeping the stored value. If ristretto holds no slot of the name, the
// entry of sl leaves the index and the service is gone. If it holds
// another one, the service has not left L1: the entry of sl adopts the held
// slot, so that ristretto's eviction of that slot finds it. Dropped from
// the index instead, a service removed and put back before ristretto took
// in its first slot lost its current entry: the next lookup missed and
// read Redis or the database again, and code that had just put the entry
// found none (a Watch test crashed on it in CI). It runs on ristretto's
// goroutine, which ristretto's Close stops before it closes anything, and
// which also runs evictions, so the held slot stays held while it runs: it
// needs no mu.
func (c *l1Cache) rejected(sl *slot) {
	held, ok := c.rc.Get(sl.name)
	switch {
	case !ok:
		c.drop(sl, true)
	case held != sl:
		c.index.update(sl.name, func(cur *entry) (*entry, bool) {
			if cur != nil {
				cur.slot.CompareAndSwap(sl, held)
			}
			return nil, false
		})
	}
}

func (c *l1Cache) get(name string) *entry { return c.index.load(name) }

// getLocked is get under the lock of the name's index shard: ordered with
// every put of the name (see keep).
func (c *l1Cache) getLocked(name string) (e *entry) {
	c.index.update(name, func(cur *entry) (*entry, bool) {
		e = cur
		return nil, false
	})
	return e
}

// touch reports an access to ristretto's policy and restores an entry that
// ristretto lost track of (a dropped Set).
func (c *l1Cache) touch(e *entry) {
	if !c.mu.TryRLock() {
		return // closing
	}
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	if _, ok := c.rc.Get(e.name); !ok {
		c.rc.Set(e.name, e.slot.Load(), 1)
	}
}

// access reports a lookup of a service L1 does not hold to ristretto's policy.
func (c *l1Cache) access(name string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		c.rc.Get(name)
	}
}

// set hands a new slot to ristretto and reports whether it took it: not if
// its buffer was full, nor once L1 is closed.
func (c *l1Cache) set(sl *slot) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !c.closed && c.rc.Set(sl.name, sl, 1)
}

// put stores e unless L1 holds a newer snapshot of the service (a higher
// revision, or the same one read from the database later), or e was read
// before an invalidation of the service since (outdated). It returns the
// entry L1 holds afterwards (e itself if outdated, which L1 does not hold)
// and whether it took e.
//
// A snapshot this process read from the database after a lease in the held
// one had ended, or a lease TTL after the held one was read (one with no
// live instance has no lease to end), replaces it even at a lower
// revision. Revisions only go back when the database does (restored from a
// backup); a read that began before a write and returned after it began
// before the write's snapshot was read, so before either. Refused, the
// database's snapshot never replaced the old one, which was then answered
// with instances whose leases had ended, two database reads a lookup,
// until the revisions climbed back.
//
// The same holds at the same revision (a lapse bumps none) for a held
// snapshot that claims a later read than this process's: one that another
// process read with its clock ahead of this one's. Refused, it stayed until
// this clock caught up, answering instances whose leases had ended.
func (c *l1Cache) put(e *entry) (held *entry, took bool) {
	held, added := e, false
	c.index.update(e.name, func(old *entry) (*entry, bool) {
		if e.outdated() {
			// Judged under the shard's lock, which Invalidate's drop of the
			// name takes after it counts: either this put comes first and
			// the drop removes e, or it sees the count. Judged only after
			// the put, as before, a lookup right after Invalidate returned
			// could be answered by e in the window between the two.
			// held stays e: its caller sees the count moved and reads again.
			return nil, false
		}
		took = true
		if old != nil && (old.rev > e.rev || old.rev == e.rev && old.loadedAt > e.loadedAt && !invalidatedSince(old, e)) && !c.wentBack(old, e) ||
			old != nil && beforeKept(old, e) {
			held, took = old, false
			return nil, false
		}
		if !e.final && e.st != nil && e.rev < e.st.wantRev.Load() {
			// Superseded already (a write of this process, or a change
			// announced, raised the revision lookups wait for): stale
			// from the start. Marked only after the put (installLoaded),
			// a pick's fast path could choose from it in between an
			// instance a write that had returned had deregistered. Read
			// under the shard's lock, which keep takes after raising the
			// revision: either this sees the raise, or keep sees e.
			e.freshUntil.Store(0)
		}
		if old != nil {
			e.takeOver(old)
		} else {
			e.slot.Store(&slot{name: e.name})
			added = true
		}
		return e, true
	})
	if sl := e.slot.Load(); added && !c.set(sl) {
		// Ristretto dropped the Set (its buffer was full: new services
		// came faster than its goroutine takes them in), or L1 is closed.
		// It never heard of the slot and would never evict it: the entry
		// leaves the index as a rejected one does. Kept, such entries
		// stayed for good, past WithCacheSize.
		c.drop(sl, true)
	}
	if took && c.onPut != nil {
		c.onPut(e)
	}
	return held, took
}

// install puts a new entry into L1 and returns the entry L1 holds. A health
// change between building e's view and storing e rebuilt the view of the
// entry L1 held before (or of none), so e's view is rebuilt first if the
// service's health generation moved since. Both happen under the service's
// viewMu, which every status change holds from its write to its rebuild: no
// lookup can get e with a status older than one Health has already reported.
func (r *Registry) install(e *entry) *entry {
	st := e.st
	if st == nil || e.raw == nil {
		held, _ := r.l1.put(e)
		return held
	}
	st.viewMu.Lock()
	defer st.viewMu.Unlock()
	if gen := st.gen.Load(); gen != e.viewGen {
		e.view.Store(r.buildView(e.raw, st, e.insertedAt, r.clock.Now().UnixNano()))
		e.viewGen = gen
	}
	held, took := r.l1.put(e)
	if took {
		// Only the snapshot L1 takes says which instances left: an older
		// one, refused, lacks those added since, and forgot their health
		// and ejections.
		st.retain(e.raw.Instances)
	}
	return held
}

// invalidatedSince reports whether e, at old's revision, was read from the
// database after an invalidation of the service (Invalidate, here or in
// another process, or a write of unknown outcome) that old's read came
// before: e then replaces old, whatever their read times say. Those are
// the clocks of the processes that read them: a snapshot that another
// process read before the invalidation, with its clock ahead of this
// one's, and pushed here (or wrote to Redis before it), claimed a later
// read than the reload the invalidation made here, which was refused, and
// lookups answered what the invalidation was to drop until a lease TTL
// had passed.
func invalidatedSince(old, e *entry) bool {
	return e.layer == LayerL3 && e.st != nil && e.st == old.st && e.inv > old.inv
}

// wentBack reports whether e, at a lower revision than old, shows the
// database gone back (see put): read from it after a lease in old ended,
// or a lease TTL after old was read.
func (c *l1Cache) wentBack(old, e *entry) bool {
	return e.layer == LayerL3 && (e.loadedAt >= old.minExpiry || e.loadedAt >= old.loadedAt+c.lease)
}

// beforeKept reports whether e, older than the write of this process that
// old was kept for (keep), may predate that write: anything but a read of
// the database begun after the write committed (the truth, though at a
// lower revision: the database went back). Taken, a load begun before the
// write (a refresh under way) put the snapshot from before it back, and
// NoWait picks chose an instance this process had just deregistered.
func beforeKept(old, e *entry) bool {
	return old.kept != nil && old.kept.rev > e.rev && !(e.layer == LayerL3 && e.loadedAt >= old.kept.at)
}

// replace puts e in the place of old, if L1 still holds old (keep).
// Ristretto holds the name already: e takes old's slot.
func (c *l1Cache) replace(old, e *entry) bool {
	done := false
	c.index.update(e.name, func(cur *entry) (*entry, bool) {
		if cur != old {
			return nil, false
		}
		e.takeOver(old)
		done = true
		return e, true
	})
	return done
}

// takeOver gives e, which takes old's place in L1, old's slot (ristretto
// already holds the name) and its last use: a rebuild (a change message, a
// refresh, a kept entry) carries the last use forward but makes none.
func (e *entry) takeOver(old *entry) {
	e.slot.Store(old.slot.Load())
	if u := old.usedAt.Load(); u > e.usedAt.Load() {
		e.usedAt.Store(u)
	}
}

// removeName drops whatever entry L1 holds of name. Ristretto keeps the
// name's slot, as after remove.
func (c *l1Cache) removeName(name string) {
	c.index.update(name, func(cur *entry) (*entry, bool) { return nil, cur != nil })
}

// remove drops e if L1 still holds it. Ristretto keeps the name's slot until
// it evicts it; its callback then finds no entry of that slot and does nothing.
func (c *l1Cache) remove(e *entry) { c.index.compareAndDelete(e.name, e) }

func (c *l1Cache) each(fn func(*entry)) { c.index.each(fn) }

// close shuts ristretto down once no call into it runs; loads that finish
// later leave nothing in L1.
func (c *l1Cache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.rc.Close()
}

// newEntry builds the L1 entry of a snapshot read from the database at
// loadedAt, as seen at now: instances whose lease has ended are left out,
// and the entry stops being fresh when the first remaining lease ends.
//
// readAt is when this process began reading the snapshot (from Redis or the
// database): freshness counts from then, so a load that was slow, or a
// goroutine that was descheduled after it, cannot stretch it. loadedAt is
// when the snapshot was read from the database (the same for an L3 load).
func (r *Registry) newEntry(raw *core.Service, layer Layer, loadedAt, readAt, now time.Time) *entry {
	n := now.UnixNano()
	e := &entry{name: raw.Name, rev: raw.Revision, layer: layer, loadedAt: loadedAt.UnixNano(), insertedAt: n, raw: raw}
	// The entry is fresh until the first lease in it ends (or, for a
	// suspect, until its grace ends): then the database must say more.
	minExp := int64(1<<63 - 1)
	grace := int64(r.opts.suspectGrace)
	for i := range raw.Instances {
		switch exp := raw.Instances[i].ExpiresAt.UnixNano(); {
		case exp > n:
			minExp = min(minExp, exp)
		case exp+grace > n:
			minExp = min(minExp, exp+grace)
		case r.heldByOutage(exp, n):
			// Kept while the database is out; look again within freshness.
			minExp = min(minExp, n+int64(r.opts.fresh))
		}
	}
	st := r.state(raw.Name)
	e.st = st
	e.viewGen = st.gen.Load() // before the view reads any status (see install)
	e.minExpiry = minExp
	e.setView(r.buildView(raw, st, n, n))
	fresh, swr, sie := int64(r.opts.fresh), int64(r.opts.swr), int64(r.opts.sie)
	if j := r.opts.jitter; j > 0 {
		fresh += int64((rand.Float64()*2 - 1) * j * float64(fresh))
	}
	read := min(readAt.UnixNano(), n)
	// A snapshot another process read from the database (through Redis, or
	// pushed with a change message) serves at most one lease TTL after that
	// read, however recently this process got it: that bounds what a writer
	// without Redis leaves stale.
	if layer == LayerL2 {
		minExp = min(minExp, e.loadedAt+int64(r.opts.leaseTTL))
	}
	e.freshUntil.Store(min(read+fresh, minExp))
	e.staleUntil = min(read+fresh+swr, minExp)
	e.errorUntil = read + fresh + sie
	return e
}

// setView sets the first view of a new entry, e not yet in L1: a view
// with no live instance makes the entry a "not found".
func (e *entry) setView(view *core.Service) {
	e.view.Store(view)
	if len(view.Instances) == 0 {
		e.notFound = &core.NotFoundError{Service: e.name}
	}
}

// buildView returns what lookups of a snapshot see: the instances live at
// at (or kept as suspects then), each with its status in this process at
// now. It shares the snapshot's instances when nothing differs.
//
// at is when the entry was built (insertedAt): a view rebuilt for a change
// of status keeps the instances its entry was built with. An entry is fresh
// only while they stay so (minExpiry), and served past that only stale, as
// it was built (stale-if-error, leases included). Judged at the rebuild's
// now instead, the view of a service not looked up for a lease TTL, whose
// snapshot keeps the lease ends it was read with (renewals change no
// revision), lost every instance at an ejection or a shared health change,
// and an outage then served "no instances" (or all suspect, with a
// self-preservation warning for instances renewed all along).
func (r *Registry) buildView(raw *core.Service, st *svcState, at, now int64) *core.Service {
	view := &core.Service{Name: raw.Name, Revision: raw.Revision, Config: raw.Config, ConfigRevision: raw.ConfigRevision, Keys: raw.Keys}
	ep := r.preserved(raw, st, at)
	visible := func(exp int64) bool {
		return exp > at || r.kept(exp, at, ep)
	}
	live, suspects, preserved, same := 0, 0, 0, true
	for i := range raw.Instances {
		in := &raw.Instances[i]
		exp := in.ExpiresAt.UnixNano()
		if !visible(exp) {
			same = false
			continue
		}
		live++
		if exp <= at {
			suspects++
			if ep != nil && ep.holds(exp, at, int64(r.opts.suspectGrace)) {
				preserved++
			}
			same = false
		} else if st != nil && viewStatus(in, st.inst(in.ID), now) != in.Status {
			same = false
		}
	}
	r.notePreservation(st, ep, preserved, suspects, len(raw.Instances))
	if same {
		view.Instances = raw.Instances // all live, no status to show: share, both are immutable
		return view
	}
	if live == 0 {
		return view
	}
	view.Instances = make([]core.Instance, 0, live)
	for i := range raw.Instances {
		in := raw.Instances[i]
		exp := in.ExpiresAt.UnixNano()
		if !visible(exp) {
			continue
		}
		if exp <= at {
			in.Status = core.StatusSuspect
		} else if st != nil {
			in.Status = viewStatus(&in, st.inst(in.ID), now)
		}
		view.Instances = append(view.Instances, in)
	}
	return view
}

// newNegative builds the entry of a service the database does not know.
func (r *Registry) newNegative(name string, now time.Time) *entry {
	n := now.UnixNano()
	e := &entry{name: name, layer: LayerL3, loadedAt: n, insertedAt: n, notFound: &core.NotFoundError{Service: name}}
	e.view.Store(&core.Service{Name: name})
	e.freshUntil.Store(n + int64(r.opts.negativeTTL))
	e.staleUntil = n + int64(r.opts.negativeTTL)
	e.errorUntil = n + int64(r.opts.sie)
	e.minExpiry = e.staleUntil
	return e
}

// l2ClockSkew is how far ahead of this process's clock a snapshot's claimed
// read may be and still be served from Redis, judged as read that much
// earlier. Clocks kept by NTP differ by milliseconds, and a snapshot
// written through on a change is read by the other processes within a
// millisecond of its read: refused for any skew, every change of a service
// too large to push with its message sent every process whose clock is
// behind the writer's to the database.
const l2ClockSkew = time.Second

// l2Fits judges a snapshot in Redis by its header: revision rev, claimed
// read from the database at at, found by a fetch begun at readAt, at now.
// It returns when the snapshot is taken as read (see fetch: a claim ahead
// of readAt is taken l2ClockSkew earlier) and whether it can serve as far
// as the header tells: no further ahead than l2ClockSkew, at revision
// want or above, read less than a lease TTL ago. Its leases tell the rest
// (usableL2).
func (r *Registry) l2Fits(rev int64, at, readAt, now time.Time, want int64) (time.Time, bool) {
	ahead := at.Sub(readAt)
	if ahead > 0 {
		at = at.Add(-l2ClockSkew)
	}
	return at, ahead <= l2ClockSkew && rev >= want && now.Sub(at) < r.opts.leaseTTL
}

// usableL2 reports whether a snapshot read from the database at at can
// serve at now: no lease in it ended in between (the instance may have
// renewed since, or may be dead; only the database knows).
func usableL2(svc *core.Service, at, now time.Time) bool {
	for i := range svc.Instances {
		exp := svc.Instances[i].ExpiresAt
		if exp.After(at) && !exp.After(now) {
			return false
		}
	}
	return true
}

// Get returns the live instances of a service, or an error matching
// ErrNotFound when it has none. It answers from this process's memory almost
// always, without allocating; see Lookup for where an answer came from.
func (r *Registry) Get(ctx context.Context, service string) (*Service, error) {
	// Lookup's fast path, written out again: taking the Service out of
	// Lookup's Result copied the Result with wide loads that stalled on its
	// narrow stores (a quarter of an L1 hit in a parallel loop, 25 -> 15 ns
	// a Get there), and a shared helper that did not inline cost both 3-6%.
	if r.met == nil {
		if e := r.l1.get(service); e != nil {
			if now := r.now.nanos(); now < e.freshUntil.Load() {
				if err := r.countHit(e, now); err != nil {
					return nil, err
				}
				return e.view.Load(), nil
			}
		}
	}
	res, err := r.Lookup(ctx, service)
	return res.Service, err
}

// Lookup is Get with provenance: which layer answered, the revision, the
// age of the snapshot and whether it is stale.
//
// An L1 entry is fresh for the freshness window (5 s +-10%, drawn for each
// entry: WithCacheJitter) or until the first lease in it ends, whichever is
// sooner; then it is served while one background refresh runs
// (stale-while-revalidate), but never past a lease, and never once a change
// message has announced a newer revision: then the lookup waits for the
// newer snapshot. When every lower layer fails it is
// served stale for the stale-if-error window, leases included: they cannot
// be renewed while the database is down.
func (r *Registry) Lookup(ctx context.Context, service string) (Result, error) {
	if r.met != nil && rand.Uint32()%lookupSample == 0 {
		return r.lookupTimed(ctx, service)
	}
	if e := r.l1.get(service); e != nil {
		now := r.now.nanos()
		if now < e.freshUntil.Load() {
			// The Result is built here, not in a callee: a struct returned
			// through a call is copied with loads that stall on the
			// field-by-field stores (a fifth of an L1 hit).
			if err := r.countHit(e, now); err != nil {
				return Result{}, err
			}
			return l1Result(e, now), nil
		}
	}
	return r.lookupSlow(ctx, service)
}

// l1Result is a fresh L1 entry's answer (inlined: see Lookup).
func l1Result(e *entry, now int64) Result {
	return Result{Service: e.view.Load(), Layer: LayerL1, Revision: e.rev, Age: age(now, e.loadedAt)}
}

// countHit counts an L1 hit and returns the entry's not-found error, if any.
func (r *Registry) countHit(e *entry, now int64) error {
	// With metrics on, a found service's hits count in its own counter
	// (which Stats adds up) instead of the Registry's: one counter either way.
	hits := &r.ctr.l1Hits
	if st := e.st; st != nil {
		if m := st.met.Load(); m != nil {
			hits = &m.l1
		} else if r.met != nil && e.raw != nil {
			hits = &r.countService(st).l1 // its first lookup with metrics on
		}
	}
	// Report one hit in touchSample to ristretto, and at most one per
	// coarse-clock tick (1 ms) for a service: its Get takes a shard
	// read-lock whose count every core writes, and a hot service touched by
	// two cores thousands of times a millisecond made that cache line what
	// they fought over. The cap leaves the frequencies of all but the
	// hottest services as they were, and those stay the hottest.
	e.markUsed(now)
	if hits.add(1)%touchSample == 0 && e.touchedAt.Load() != now {
		e.touchedAt.Store(now)
		r.l1.touch(e)
	}
	if e.notFound != nil {
		r.ctr.notFound.Add(1) // as answer counts it on the slow path
	}
	return e.notFound
}

func age(now, loadedAt int64) time.Duration {
	if now < loadedAt {
		return 0
	}
	return time.Duration(now - loadedAt)
}

// retryAfterFailure is how long after a failed load of a service lookups
// serve stale data at once instead of waiting for the database again.
const retryAfterFailure = time.Second

func (r *Registry) lookupSlow(ctx context.Context, name string) (Result, error) {
	return r.lookupSlowAs(ctx, name, false)
}

// lookupSlowAs is lookupSlow; sampled says the lookup is the metrics'
// sample (lookupTimed). An answer from L1 (stale, or a load that finished
// just before) is timed only then, as a fresh hit is: timed every time,
// stale answers outnumbered fresh ones 64 to 1 in the histogram.
func (r *Registry) lookupSlowAs(ctx context.Context, name string, sampled bool) (Result, error) {
	var start time.Time
	if r.met != nil {
		start = time.Now()
	}
	e, layer, stale, err := r.lookupEntry(ctx, name)
	if err != nil {
		return Result{}, err
	}
	res, err := r.answer(e, layer, r.now.nanos(), stale)
	if r.met != nil && (layer != LayerL1 || sampled) {
		r.met.observe(layer, time.Since(start))
	}
	return res, err
}

// lookupEntry finds the entry that answers a lookup: L1 if fresh, else L1
// stale while a refresh runs, else a load, else L1 stale if every lower
// layer failed.
func (r *Registry) lookupEntry(ctx context.Context, name string) (e *entry, layer Layer, stale bool, err error) {
	if r.stopping.Load() { // not before Close has deregistered: see stopping
		return nil, 0, false, ErrClosed
	}
	if ctx == nil { // found by a load instead, a panic in the caller's goroutine
		return nil, 0, false, nilContext("a lookup (Get, Lookup, Pick, Health)")
	}
	if err := core.ValidateServiceName(name); err != nil {
		return nil, 0, false, err
	}
	now := r.now.nanos()
	e = r.l1.get(name)
	if e != nil && e.kept != nil {
		// Kept for NoWait picks after a write of this process (keep): a
		// lookup that waits reads the write, as with no entry at all.
		e = nil
	}
	if e == nil && r.ctr.l1Misses.add(1)%touchSample == 0 {
		// A miss counts as an access too (sampled as hits are), so that
		// ristretto's admission policy learns a service is popular before
		// it holds it.
		r.l1.access(name)
	}
	if e != nil {
		if fu := e.freshUntil.Load(); now < fu {
			e.markUsed(now)
			return e, LayerL1, false, nil
		}
		// Past its freshness window an entry is served while a background
		// refresh runs; but one a change message said is superseded is not:
		// the lookup waits for the newer snapshot (unless loads are failing),
		// so a process that has heard of a change never answers with what it
		// replaced.
		// While the database is known to be down (a call to it failed and
		// none has answered since), every entry serves stale at once, not
		// just one whose own load failed lately: an Overview of N cached
		// services waited N load timeouts in an outage.
		failedLately := now-e.failedAt.Load() < int64(retryAfterFailure)
		recentFailure := failedLately || r.storeDown.Load()
		superseded := e.st != nil && e.rev < e.st.wantRev.Load()
		if now < e.staleUntil && !superseded || recentFailure && now < e.errorUntil {
			// Not again within retryAfterFailure of its own failed load:
			// each stale lookup after a failure started another, and a
			// database refusing at once got a load of a hot service for
			// every lookup (2,000 for 2,000) for as long as it refused.
			if !failedLately {
				r.refreshAsync(e, false)
			}
			e.markUsed(now)
			return e, LayerL1, true, nil
		}
	}
	begun := r.loadSeq.Load() // loads begun before this lookup's
	ne, err := r.loadWait(ctx, name)
	var lf *loadFailure
	if errors.As(err, &lf) && errors.Is(err, ErrUnavailable) && !isCallerErr(ctx, err) {
		// The load failed, yet the database answered a call after that
		// load began (an outage that has ended: a load still finishing
		// when the database came back), or this lookup joined a load
		// already under way when it began (a refresh begun in an outage,
		// whose failure it did not wait for). Once more, rather than
		// answer with a failure met before it asked; the retries of the
		// lookups that joined share one load.
		if r.storeOKAt.Load() >= lf.began || lf.seq <= begun {
			ne, err = r.loadWait(ctx, name)
		}
	}
	if err == nil && ne.raw != nil && now >= ne.minExpiry {
		// A load this lookup joined was read before a lease in it ended
		// (it started earlier): load again rather than answer with it.
		ne, err = r.loadWait(ctx, name)
	}
	if err != nil {
		// Judged when the load failed, not when the lookup began up to two
		// load timeouts ago: a lookup begun just inside the stale-if-error
		// window answered with the entry past it.
		if failed := r.now.nanos(); e != nil && failed < e.errorUntil && !isCallerErr(ctx, err) {
			e.failedAt.Store(failed)
			e.markUsed(failed)
			return e, LayerL1, true, nil
		}
		return nil, 0, false, plainLoadErr(err)
	}
	ne.markUsed(r.now.nanos())
	return ne, ne.layer, false, nil
}

// loadFailure is the error of a failed load, with what a lookup that got
// it needs to decide whether to load again: when the load began, and its
// place among every load this Registry began. Callers never see it
// (plainLoadErr). Kept on the service's state instead, it had to outlive
// the failure, and a lookup of a name no store knows, made while the
// database was down, left that state behind for good.
type loadFailure struct {
	err   error
	seq   uint64 // r.loadSeq of the load
	began int64  // unix ns, the Registry's clock
}

func (f *loadFailure) Error() string { return f.err.Error() }
func (f *loadFailure) Unwrap() error { return f.err }

// plainLoadErr returns the error a load failed with, without the
// loadFailure around it.
func plainLoadErr(err error) error {
	if f, ok := err.(*loadFailure); ok {
		return f.err
	}
	return err
}

// serviceData returns a service's snapshot through the cache layers even when
// it has no live instance, for its configuration and keys.
func (r *Registry) serviceData(ctx context.Context, name string) (*core.Service, error) {
	e, _, _, err := r.lookupEntry(ctx, name)
	if err != nil {
		return nil, err
	}
	if e.raw == nil {
		return nil, e.notFound
	}
	return e.view.Load(), nil
}

func isCallerErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

func (r *Registry) answer(e *entry, layer Layer, now int64, stale bool) (Result, error) {
	var m *svcMetrics
	if e.st != nil {
		if m = e.st.met.Load(); m == nil && r.met != nil && e.raw != nil {
			m = r.countService(e.st)
		}
	}
	switch {
	case m != nil:
		m.add(layer) // counted per service instead (see countHit)
	case layer == LayerL1:
		r.ctr.l1Hits.add(1)
	case layer == LayerL2:
		r.ctr.l2.Add(1)
	case layer == LayerL3:
		r.ctr.l3.Add(1)
	}
	if stale {
		r.ctr.stale.Add(1)
	}
	if e.notFound != nil {
		r.ctr.notFound.Add(1)
		return Result{}, e.notFound
	}
	return resultOf(e, layer, now, stale), nil
}

// resultOf is the Result of a lookup that e answered from layer.
func resultOf(e *entry, layer Layer, now int64, stale bool) Result {
	return Result{Service: e.view.Load(), Layer: layer, Revision: e.rev, Age: age(now, e.loadedAt), Stale: stale}
}

// loadWait loads a service once for all concurrent callers; each caller
// waits only as long as its own context allows.
func (r *Registry) loadWait(ctx context.Context, name string) (*entry, error) {
	// A caller whose context can never end runs the load itself: no
	// goroutine to start (and to grow a stack for). Others wait on a channel
	// so that their context still holds: one that can be cancelled (a
	// request's, with no deadline) waited here for the whole load timeout,
	// then got ErrUnavailable instead of its own error.
	if ctx.Done() == nil {
		v, err, _ := r.sf.Do(name, func() (any, error) { return r.load(name, false) })
		if err != nil {
			return nil, err
		}
		return v.(*entry), nil
	}
	if err := ctx.Err(); err != nil {
		// Ended before the wait: its own error, not a load's answer. The
		// select below picks at random when the load is quick enough to be
		// done too (the in-memory backend's): Get with a cancelled context
		// said "not found" one call in a few.
		return nil, err
	}
	ch := r.sf.DoChan(name, func() (any, error) { return r.load(name, false) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*entry), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// load fetches a service from the nearest layer that has it fresh enough,
// and puts it in L1. It repeats (a few times) while changes newer than what
// it found are announced meanwhile. force skips L1 and L2.
//
// It holds the service's state throughout (holdState): the entry it
// installs points at it, and what is said of the service while it reads
// (an announced or written revision, an Invalidate) is counted on it. A
// drop of the state asked for meanwhile, its own too (a failure, a
// service not found), runs when it ends.
func (r *Registry) load(name string, force bool) (*entry, error) {
	st := r.holdState(name)
	defer r.releaseState(st)
	seq, began := r.loadSeq.Add(1), r.clock.Now().UnixNano()
	for attempt := 0; ; attempt++ {
		want, inv := st.wantRev.Load(), st.invalidated.Load()
		if !force {
			if e := r.l1.get(name); e != nil && e.rev >= want && r.now.nanos() < e.freshUntil.Load() {
				return e, nil // a load that finished just before ours
			}
		}
		e, err := r.fetch(name, want, force, st, inv)
		if err != nil {
			// A name looked up in an outage, made up or not: kept, the
			// state of every such name grew the map for good.
			r.forgetNotHeld(st)
			return nil, &loadFailure{err: err, seq: seq, began: began}
		}
		if e.layer == LayerL3 && e.rev < want {
			// The database, read after want was announced (and every
			// announcement follows its commit), holds less: it went back (a
			// restore), or does not have the service at all (a "not
			// found", revision 0: a backup from before it). Its revision is
			// the truth now; waiting for want made every load read it three
			// times and every lookup past the freshness window wait for
			// that. A newer announcement since keeps its own.
			st.wantRev.CompareAndSwap(want, e.rev)
		}
		var superseded bool
		if e, superseded = r.installLoaded(e, st, inv, attempt == 2); !superseded {
			if e.raw == nil {
				// The database does not know a service this process
				// had found: deleted (or lost to a restore), whether or
				// not this process heard of it.
				r.buryService(name)
				// Dropped only once the negative entry is in L1 (as
				// the load ends, or as the last other load holding
				// the state does): an announcement before finds the
				// state (installLoaded sees the revision it raised),
				// one after drops the entry. Dropped before, an
				// announcement in between found neither, and the
				// entry stayed fresh: "not found" for a registered
				// service.
				r.dropState(st)
			}
			return e, nil
		}
		// Invalidated meanwhile: what the caches hold is not to be trusted.
		force = force || st.invalidated.Load() != inv
	}
}

// installLoaded installs an entry a load fetched and reports whether the
// service had meanwhile reached a newer revision (a write of this process,
// or an announced change, while the load read the database). Such an entry
// is left stale, not fresh, unless last: lookups then wait for the next
// attempt's newer snapshot instead of serving it as if the write had not
// happened (the write had dropped the older entry from L1, and this put it
// back; TestKeysTravelBetweenProcesses caught that once under -race). The
// revision is checked after the put and raised before the drop, so one of
// the two sees the other. The last attempt's entry stays fresh: a revision
// the database never reaches must not send every lookup to it.
//
// An entry read before an invalidation of the service that followed (inv
// is the count of invalidations when the attempt began) leaves L1 again
// instead: the invalidation's own reload was skipped while this one ran
// (one refresh an entry), or found no entry to reload yet, and what was
// read before it went in fresh for a whole freshness window (left stale,
// it was still served while revalidating).
func (r *Registry) installLoaded(e *entry, st *svcState, inv uint64, last bool) (*entry, bool) {
	ours := e
	e.final = last
	e = r.install(e)
	if last && e.kept != nil {
		// An entry kept for NoWait picks (keep) answers no lookup: the
		// snapshot read does, though L1 refused it.
		return ours, false
	}
	if (e.rev >= st.wantRev.Load() && (e != ours || st.invalidated.Load() == inv)) || last {
		return e, false
	}
	if e == ours && st.invalidated.Load() != inv {
		// Not in L1 (put refused it, or the Invalidate dropped it), and not
		// made stale: left stale, no change announced marked it
		// superseded, and lookups answered what the invalidation was to
		// drop while the next attempt read the database (and for
		// stale-if-error's window if that failed).
		return e, true
	}
	e.freshUntil.Store(0)
	return e, true
}

func (r *Registry) fetch(name string, want int64, force bool, st *svcState, inv uint64) (*entry, error) {
	readAt := r.clock.Now() // before any read: a snapshot is at least this recent
	// The service's generation in Redis, read before the database: what the
	// database answers is written to Redis only while Redis still holds it
	// (setL2Unless). Unknown (Redis failed, or is out), nothing is written.
	var (
		gen      rediscache.Gen
		genKnown bool
		// unread: Redis holds the snapshot L1 does, or an older one that
		// could not serve, and told so without the generation
		// (GetIfChanged)
		unread bool
	)
	if r.l2 != nil && !force && r.l2.Up() {
		haveRev, haveAt := int64(-1), int64(-1)
		cur := r.l1.get(name)
		if cur != nil && cur.raw != nil && cur.kept == nil { // a kept entry's snapshot has a write applied (keep)
			haveRev, haveAt = cur.rev, cur.loadedAt
		}
		// bounded by the Redis timeout; a snapshot we already hold is
		// neither read again (its header alone is) nor decoded; the
		// generation comes with any other, in the same command
		svc, at, held, g, err := r.l2.GetIfChanged(r.ctx, name, haveRev, haveAt)
		if err == nil && held.Older {
			if _, fits := r.l2Fits(held.Revision, at, readAt, r.clock.Now(), want); fits {
				// Older than L1's, but its header alone cannot say it does
				// not serve (its leases do): read, as it was before the
				// header told it older, for the same outcome. (Served,
				// L1 refuses it: the lookup gets the snapshot L1 holds.)
				svc, at, held, g, err = r.l2.GetIfChanged(r.ctx, name, -1, -1)
			} else {
				// Older than the revision waited for, or read too long
				// ago: it could not serve, and is not read (tens of KiB
				// for a service of a thousand instances, each refresh
				// while Redis held an older snapshot than this process),
				// but counted as when it was.
				r.l2.Unusable()
			}
		}
		gen, genKnown, unread = g, err == nil && !held.Unread(), held.Unread()
		if held.Same {
			svc = cur.raw
		}
		if err == nil && svc != nil {
			now := r.clock.Now()
			// Write-through and change messages keep Redis at the newest
			// revision; leases age, so a snapshot serves only while no lease in
			// it ended since it was read, and never longer than one lease TTL
			// (which bounds what a lost write-through can leave behind). One
			// that claims a read after this one began was read by a clock
			// ahead of this one's, at a time it cannot tell: judged from its
			// claim, a lease that ended in between went unseen, and the
			// instance, renewed since, was left out of lookups (a live
			// service "not found") for as long as the clocks differ. Up to
			// l2ClockSkew ahead it is judged as read that much before its
			// claim (a lease that ended since makes it unusable); further
			// ahead it is not served, and the database's answer, written
			// next, replaces it (setScript).
			var fits bool
			if at, fits = r.l2Fits(svc.Revision, at, readAt, now, want); fits && usableL2(svc, at, now) {
				r.l2.Hit()
				if r.storeDown.Load() {
					r.probeStore(name)
				}
				e := r.newEntry(svc, LayerL2, at, readAt, now)
				e.readSince(inv)
				return e, nil
			}
			r.l2.Unusable() // found, but the database answers: a miss
		}
	}
	if r.l2 != nil && (force || unread) && r.l2.Up() {
		// Forced, Redis is not read for the snapshot; unread, only its
		// header was (a refresh that finds what it holds, or an older
		// snapshot that could not serve, reads no more):
		// the generation is still needed for the write below, and read
		// before the database.
		g, err := r.l2.Generation(r.ctx, name)
		gen, genKnown = g, err == nil
	}
	var (
		svc *core.Service
		err error
	)
	for attempt := 0; ; attempt++ {
		r.ctr.storeReads.Add(1)
		readAt = r.clock.Now()
		ctx, cancel := ownTimeout(r.ctx, r.opts.loadTO) // the store maps a call it ends to ErrUnavailable
		svc, err = r.store.Load(ctx, name)
		cancel()
		// A lease that ended while the snapshot was being read makes it
		// ambiguous (renewed since, or dead?): read it again.
		if err != nil || attempt == 2 || usableL2(svc, readAt, r.clock.Now()) {
			break
		}
	}
	if errors.Is(err, core.ErrNotFound) {
		// the database answered: an outage ends here as with a snapshot
		r.noteStoreOK()
		return r.newNegative(name, readAt), nil
	}
	if err != nil && r.ctx.Err() != nil {
		return nil, ErrClosed // Close ended the load: the database did not fail
	}
	if err != nil {
		r.ctr.storeErrs.Add(1)
		r.noteStoreErr("load", err)
		return nil, err
	}
	r.noteStoreOK()
	if genKnown {
		r.spawn(func() { _, _ = r.setL2Unless(r.ctx, st, inv, gen, svc.Name, codec.Encode(svc, readAt)) })
	}
	e := r.newEntry(svc, LayerL3, readAt, readAt, r.clock.Now())
	e.readSince(inv)
	return e, nil
}

// setL2Unless writes enc, a snapshot of service this process read from the
// database (codec.Encode), to Redis (bounded by the Redis timeout), unless
// the service was invalidated since the read began: in this process (inv,
// its count of invalidations then), or in any (gen, the service's
// generation in Redis, read before the database was). An Invalidate between
// the read and this write deleted the L2 copy, and the write put back what
// was read before it, for every process, for an L2 TTL. The count is
// looked at again after the write: an Invalidate whose Redis step failed
// counts all the same, and a write that landed then is deleted in turn,
// and only it, not what another process wrote since (Delete compares). It
// reports whether the snapshot stands (no invalidation came first), and
// the error of a write that failed (Redis out, or an error reply) and did
// not land: the snapshot then stands for no one. A snapshot too large to
// write within the Redis timeout on this link (ErrTooSlow: Redis answers
// all the same) deletes the older one Redis holds instead, with a command
// of a few bytes: it would serve the processes that did not hear of the
// change, and writing it again would only fail again.
func (r *Registry) setL2Unless(ctx context.Context, st *svcState, inv uint64, gen rediscache.Gen, service string, enc []byte) (bool, error) {
	if st.invalidated.Load() != inv {
		return false, nil
	}
	_, err := r.l2.SetEncoded(ctx, service, enc, gen)
	if errors.Is(err, rediscache.ErrInvalidated) {
		return false, nil
	}
	if errors.Is(err, rediscache.ErrTooSlow) {
		_ = r.l2.DropOlder(ctx, service, enc)
	}
	if err != nil {
		return false, err
	}
	if st.invalidated.Load() != inv {
		_ = r.l2.Delete(ctx, service, enc)
		return false, nil
	}
	return true, nil
}

// refreshAsync starts one background refresh of e unless one is running or
// too many are.
func (r *Registry) refreshAsync(e *entry, force bool) {
	if !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	r.loadInBackground(e.name, force, func() { e.refreshing.Store(false) }, &e.failedAt)
}

// loadInBackground runs one load of name on a goroutine of its own,
// within the refreshes' semaphore (not at all when it is full, or the
// Registry closed), under the key lookups load under, so that a lookup
// meanwhile joins it; a forced one under a key of its own. release is
// called once it has ended (or did not start); a failure is timed in
// failedAt. refreshAsync and loadAsync differ only in what keeps them one
// at a time.
func (r *Registry) loadInBackground(name string, force bool, release func(), failedAt *atomic.Int64) {
	select {
	case r.refreshSem <- struct{}{}:
	default:
		release()
		return
	}
	ok := r.spawn(func() {
		defer func() { <-r.refreshSem }()
		defer release()
		r.ctr.refreshes.Add(1)
		key := name
		if force {
			key = "!" + key
		}
		if _, err, _ := r.sf.Do(key, func() (any, error) { return r.load(name, force) }); err != nil {
			failedAt.Store(r.now.nanos())
		}
	})
	if !ok {
		<-r.refreshSem
		release()
	}
}

// heldEntry is lookupEntry for a NoWait pick, which waits for nothing:
// e, the entry L1 holds of name (nil for none), stale or not, for as long
// as a lookup would serve it in an outage (its stale-if-error window),
// with a refresh started in the background once it is past its freshness
// window. That includes an entry kept after a write of this process
// (keep), which lookups that wait ignore. With nothing of use held it
// starts a load in the background and returns an error matching
// ErrUnavailable.
func (r *Registry) heldEntry(name string, e *entry, now int64) (*entry, error) {
	if r.stopping.Load() { // as lookupEntry
		return nil, ErrClosed
	}
	if e == nil {
		if err := core.ValidateServiceName(name); err != nil {
			return nil, err
		}
		if r.ctr.l1Misses.add(1)%touchSample == 0 {
			r.l1.access(name) // as lookupEntry: admission learns of misses too
		}
		r.loadAsync(name)
		return nil, &notHeldError{service: name}
	}
	// As lookupEntry: not again within retryAfterFailure of its own
	// failed load.
	if now >= e.freshUntil.Load() && now-e.failedAt.Load() >= int64(retryAfterFailure) {
		r.refreshAsync(e, false)
	}
	if now >= e.errorUntil {
		return nil, &notHeldError{service: name}
	}
	e.markUsed(now)
	return e, nil
}

// notHeldError is a NoWait pick's answer for a service this process holds
// nothing usable of. It matches ErrUnavailable: the database would have to
// be asked, and the caller asked not to wait for it.
type notHeldError struct{ service string }

func (e *notHeldError) Error() string {
	return "discovery: nothing usable in memory of " + e.service + " (NoWait: loading it in the background)"
}

func (e *notHeldError) Is(target error) bool { return target == ErrUnavailable }

// loadAsync starts one background load of a service L1 holds nothing of,
// for a NoWait pick, unless one is running, too many refreshes are, or
// such a load failed within retryAfterFailure.
func (r *Registry) loadAsync(name string) {
	if r.now.nanos()-r.noWaitFailedAt.Load() < int64(retryAfterFailure) {
		return
	}
	if _, running := r.noWaitLoads.LoadOrStore(name, struct{}{}); running {
		return
	}
	r.loadInBackground(name, false, func() { r.noWaitLoads.Delete(name) }, &r.noWaitFailedAt)
}

// onChange handles a change announced by another process (or this one):
// an L1 entry older than it becomes stale and is refreshed in the
// background; a remembered "not found" is forgotten.
func (r *Registry) onChange(ch core.Change, force bool) { r.onMessage(ch, force, rediscache.Pushed{}) }

// onMessage handles a change message. The writer pushes the new snapshot
// with it: a process that holds an older one takes it as if read from
// Redis, sparing that read; otherwise, or when the snapshot is not usable,
// it refreshes in the background. It is decoded only then: every other
// process (one that holds no entry of the service, or one as new, as the
// writer's own) hears the change for the price of its first line.
func (r *Registry) onMessage(ch core.Change, force bool, pushed rediscache.Pushed) {
	// Watchers hear of it last, when L1 already holds the pushed snapshot
	// (or its refresh has begun, which they join).
	defer r.changeAnnounced(ch, force)
	if ch.Gone {
		defer r.serviceGone(ch) // once the revision is raised
	}
	if force {
		// Before the entry is read: a load that installs after this sees it
		// (installLoaded), and one that installed before left the entry
		// found below, which is reloaded.
		if st := r.stateIfAny(ch.Service); st != nil {
			st.invalidated.Add(1)
		}
	}
	e := r.l1.get(ch.Service)
	// An entry put without a load (afterWrite) has no state yet; the refresh
	// below must still know which revision to wait for, or it accepts the
	// older snapshot Redis holds.
	if e != nil && e.raw != nil {
		r.state(ch.Service).raiseWant(ch.Revision, r.now.nanos())
	} else if st := r.stateIfAny(ch.Service); st != nil {
		st.raiseWant(ch.Revision, r.now.nanos())
	}
	if e == nil || !force && e.rev >= ch.Revision {
		return
	}
	r.ctr.invalidated.Add(1)
	if e.raw == nil {
		r.l1.remove(e)
		return
	}
	var (
		svc      *core.Service
		loadedAt time.Time
	)
	if !force {
		svc, loadedAt, _ = pushed.Decode()
	}
	if svc != nil && svc.Revision >= ch.Revision {
		now := r.clock.Now()
		if now.Sub(loadedAt) < r.opts.leaseTTL && usableL2(svc, loadedAt, now) {
			st := r.holdState(ch.Service) // the entry's, until it is in L1 (see load)
			// Not over an entry read before an invalidation heard since (a
			// forced message, or this process's own Invalidate): the pushed
			// snapshot may come from before it too. Its writer's Redis
			// write landed before the Invalidate, and its message after the
			// forced one; taken, it was served fresh until the
			// invalidation's reload replaced it, and for up to a lease TTL
			// if its writer's clock was ahead of this one's (put). The
			// refresh below reads the service instead.
			var held *entry
			if inv := st.invalidated.Load(); e.st == st && e.inv == inv {
				ne := r.newEntry(svc, LayerL2, loadedAt, now, now)
				ne.readSince(inv)
				if held = r.install(ne); held == ne && ne.outdated() {
					held = nil // invalidated meanwhile: refused by put, or dropped by the Invalidate
				}
			}
			r.releaseState(st)
			if held != nil {
				if held.rev >= svc.Revision {
					r.ctr.pushed.Add(1)
				}
				if held.st != nil && held.rev >= held.st.wantRev.Load() {
					return
				}
				e = held
			}
		}
	}
	e.freshUntil.Store(0)
	r.refreshAsync(e, force)
}

// resync revalidates everything L1 holds against the database's revisions,
// after a (re)subscription or Redis coming back: messages may have been lost.
//
// It reads the revisions of everything held in one call (RevisionReader),
// and loads only what changed; a watch whose service L1 holds hears of a
// change from that (onChange), and only the others (and all of them when
// the revisions cannot be read) read their service again. Every watch read
// its service again on every resync before, changed or not: a process
// watching W services read the database W times more at each recovery, and
// a fleet on a Redis that flapped every few seconds read it that often.
func (r *Registry) resync() {
	r.reannounce()
	r.spawn(func() {
		defer r.ctr.resyncs.Add(1)
		var (
			names []string
			held  = map[string]*entry{}
		)
		// "Not found" too: a registration whose message was lost is
		// seen at once, not when the negative entry ages out.
		r.l1.each(func(e *entry) {
			names = append(names, e.name)
			held[e.name] = e
		})
		if len(names) == 0 {
			r.resyncHubs(nil)
			return
		}
		if rr, ok := r.store.(core.RevisionReader); ok {
			ctx, cancel := ownTimeout(r.ctx, r.opts.loadTO)
			revs, err := rr.Revisions(ctx, names)
			cancel()
			// Noted as any call: in a process whose lookups L1 answers,
			// with nothing to renew, this read may be its only call to
			// the database, and counted only, it left an outage open (every
			// lease ended since held as a suspect) once the database was
			// back. Not when Close ended it: the database did not fail.
			if err == nil || r.ctx.Err() == nil {
				r.noteStoreResult("revalidate", err)
			}
			if err == nil {
				// Watches of what L1 holds hear of a change below; the
				// others read their service again. Before, so that none
				// that the revalidation tells is read twice.
				r.resyncHubs(held)
				for name, rev := range revs {
					// only what L1 holds: a store may answer for more
					if e := held[name]; e != nil && rev > e.rev {
						r.onChange(core.Change{Service: name, Revision: rev}, true)
					}
				}
				return
			}
			r.log.Warn("discovery: revalidating the cache failed; refreshing every entry", zap.Error(err))
		}
		r.resyncHubs(nil)
		for _, e := range held {
			e.freshUntil.Store(0)
			r.refreshAsync(e, true)
		}
	})
}

// afterWrite makes a change this Registry wrote visible: in this process at
// once (read-your-writes), in Redis by writing the new snapshot through, and
// in every other process by publishing the revision.
//
// The change is committed: its write-through runs on, bounded by the
// Registry's own timeouts, when the caller's context ends, and the caller
// waits for it only while its context allows. Run on the caller's context,
// a write whose deadline the commit used up returned nil and told no one:
// Redis kept the old snapshot, and every process (this one too) served it
// for up to a lease TTL.
func (r *Registry) afterWrite(ctx context.Context, ch core.Change) { r.afterWriteOf(ctx, ch, wrote{}) }

// afterWriteOf is afterWrite of a write that did w to one instance.
//
// The snapshot L1 holds from before the write stops answering lookups at
// once (keep), before anything waits on Redis: left fresh until the
// write-through installed the new one, it answered Get and Pick's fast path
// with what the write had changed (an instance Close was deregistering,
// for as long as a black-holed Redis held the write-through). It stays in
// L1, with w applied, for NoWait picks alone, until a newer snapshot
// replaces it: dropped, as it was, a NoWait pick (gRPC's picker's) found
// nothing held and its call went round-robin over every connected
// instance, the one just drained among them, until a background load
// landed.
func (r *Registry) afterWriteOf(ctx context.Context, ch core.Change, w wrote) {
	r.writeCommitted(ch, w)
	if r.l2 != nil && r.l2.Up() {
		done := make(chan struct{})
		wctx, cancel := r.announceContext(ctx)
		through := func() {
			defer close(done)
			defer cancel()
			delivered := r.writeThrough(wctx, ch)
			// Lost on the way, or refused: announced once Redis takes it.
			// Looked at here, where the write-through has ended, not once
			// the caller stops waiting: a caller whose context ended
			// before a hung Redis failed left the change neither published
			// nor kept, and the other processes served their snapshots for
			// up to a lease TTL.
			r.undelivered(ch, delivered)
			r.forgetIfNotHeld(ch.Service)
		}
		if !r.spawn(through) { // closed: nothing else to wait for
			through()
		}
		select {
		case <-done:
		case <-ctx.Done():
		}
	} else if r.l2 != nil {
		r.owe(ch) // out: announced once back
	}
	r.writtenHere(ch)
	r.forgetIfNotHeld(ch.Service)
}

// writeCommitted is afterWriteOf's first step, before anything waits on
// Redis: the revision written is the one lookups want, and L1's older
// snapshot stops answering them (keep).
func (r *Registry) writeCommitted(ch core.Change, w wrote) {
	at := r.clock.Now().UnixNano() // after the commit: a read begun since sees it
	// raised even before this process has looked the service up, so that
	// its first lookup refuses an older snapshot still in Redis. Without
	// Redis there is none, and only a state that exists (a load under way
	// holds it) needs the revision: one made here stayed for good, as
	// nothing put the service in L1 to be evicted, and a process that
	// registered services it never looked up kept a state for each.
	if r.l2 != nil {
		r.state(ch.Service).raiseWant(ch.Revision, r.now.nanos())
	} else if st := r.stateIfAny(ch.Service); st != nil {
		st.raiseWant(ch.Revision, r.now.nanos())
	}
	r.keep(ch, w, at)
}

// announceContext is the context of a write's announcement in Redis: not
// ended with the caller's (the change is committed), and bounded by
// Close's end once Close has begun.
func (r *Registry) announceContext(ctx context.Context) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
	if by := r.closeBy.Load(); by != 0 {
		// A write of Close's (a deregistration, a Register's undoing):
		// Close ends by then, and this with it. Bounded by the Redis
		// timeout of each call alone, it held Close past its timeout.
		wctx, cancel = context.WithDeadline(wctx, time.Unix(0, by))
	}
	return wctx, cancel
}

// maxWriteThroughs bounds the write-throughs of one batch of changes
// (afterWrites) under way at once.
const maxWriteThroughs = 8

// afterWrites makes changes that this Registry wrote (a reaper round's)
// visible, as afterWrite makes each, together. A deletion (Gone) has no
// snapshot to write through, only its message: the deletions are
// announced in pipelines (rediscache.PublishAll, one round trip for up to
// rediscache.MaxPipelined of them), and the other changes written through
// side by side, up to maxWriteThroughs at a time. One after the other, a
// round that deleted N services waited for N write-throughs, each a read of
// the database (which said "not found") and three Redis round trips.
// What Redis does not take is announced once it does, as afterWrite's.
func (r *Registry) afterWrites(ctx context.Context, changes []core.Change) {
	var (
		gone []core.Change
		wg   sync.WaitGroup
		sem  = make(chan struct{}, maxWriteThroughs)
	)
	for _, ch := range changes {
		if ch.Gone {
			gone = append(gone, ch)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() { // joined below
			defer wg.Done()
			defer func() { <-sem }()
			r.afterWrite(ctx, ch)
		}()
	}
	defer wg.Wait()
	if len(gone) == 0 {
		return
	}
	for _, ch := range gone {
		r.writeCommitted(ch, wrote{})
	}
	if r.l2 != nil && r.l2.Up() {
		wctx, cancel := r.announceContext(ctx)
		errs := r.l2.PublishAll(wctx, gone)
		cancel()
		for i, ch := range gone {
			r.undelivered(ch, errs[i] == nil) // as afterWrite does
		}
	} else if r.l2 != nil {
		for _, ch := range gone {
			r.owe(ch) // out: announced once back
		}
	}
	for _, ch := range gone {
		r.writtenHere(ch)
		r.forgetIfNotHeld(ch.Service)
	}
}

// forgetIfNotHeld asks for the drop of the state of a service that a write
// of this process left out of L1 (forgetNotHeld: with Redis, once the
// revision written can no longer be undone by an older snapshot there).
// A write's state is made even before this process looks the service up
// (afterWrite); when no write-through put the service in L1 (Redis out,
// or failing), nothing else did, and no eviction dropped it: a process
// that registered services it never looked up while its Redis was out kept
// a state for each, for as long as it ran.
func (r *Registry) forgetIfNotHeld(service string) {
	if r.l2 == nil || r.l1.get(service) != nil {
		return
	}
	if st := r.stateIfAny(service); st != nil {
		r.forgetNotHeld(st)
	}
}

// writtenHere ends the work of making a change visible (afterWrite) in
// this process: an older entry leaves L1 (but one kept for the change, see
// keep), and the watchers hear of it. Without a message (a database without
// Redis, or Redis down) nothing else tells them, and they saw the change
// only when their snapshot stopped being fresh.
func (r *Registry) writtenHere(ch core.Change) {
	// A deleted service's kept entry too: there is nothing to pick.
	if e := r.l1.get(ch.Service); e != nil && e.rev < ch.Revision && (ch.Gone || e.kept == nil || e.kept.rev < ch.Revision) {
		r.l1.remove(e)
	}
	if ch.Gone {
		r.serviceGone(ch)
	}
	r.changeAnnounced(ch, false)
}

// wrote is what a write of this process did to a service: to one
// instance, stored row (the instance as written) or deleted it (row nil);
// or stored cfg as its configuration, at configuration revision cfgRev.
// The zero value tells nothing (a write of a key, a reap, a write of
// unknown outcome read back).
type wrote struct {
	id     string
	row    *core.Instance
	cfg    []byte
	cfgRev int64
}

// wroteRow is a write of in's row; wroteGone, the deletion of id's;
// wroteConfig, the storing of doc as configuration revision cfgRev.
func wroteRow(in *core.Instance) wrote           { return wrote{id: in.ID, row: in} }
func wroteGone(id string) wrote                  { return wrote{id: id} }
func wroteConfig(doc []byte, cfgRev int64) wrote { return wrote{cfg: doc, cfgRev: cfgRev} }

// apply returns svc with w applied, svc itself if w tells nothing. The
// instances stay in order of ID, as stores return them. A configuration
// older than the one svc holds (two writes of this process, kept out of
// order) is not applied.
func (w wrote) apply(svc *core.Service) *core.Service {
	if w.cfgRev > svc.ConfigRevision {
		out := *svc
		out.Config, out.ConfigRevision = slices.Clone(w.cfg), w.cfgRev
		return &out
	}
	if w.id == "" {
		return svc
	}
	out := *svc
	out.Instances = make([]core.Instance, 0, len(svc.Instances)+1)
	found := false
	for i := range svc.Instances {
		if svc.Instances[i].ID != w.id {
			out.Instances = append(out.Instances, svc.Instances[i])
			continue
		}
		found = true
		if w.row != nil {
			out.Instances = append(out.Instances, w.row.Clone())
		}
	}
	if !found && w.row != nil {
		out.Instances = append(out.Instances, w.row.Clone())
		slices.SortFunc(out.Instances, func(a, b core.Instance) int { return strings.Compare(a.ID, b.ID) })
	}
	return &out
}

// keep takes the snapshot L1 holds of a service out of the lookups' way
// once a write of this process has superseded it (committed at
// ch.Revision, before at), and leaves it in L1, with what the write did
// (w: to the instance it wrote, or the configuration it stored, whose
// balancer strategy the picks follow) applied, for NoWait picks alone, until a
// snapshot at least as new replaces it (put: not one read before the
// write, beforeKept). Such an entry is never fresh, so neither Get nor
// Pick's fast path answers with it, and a lookup that waits ignores it and
// loads (lookupEntry), as if L1 held nothing: what it reads has the write.
// A NoWait pick uses it (heldEntry), with a refresh started: it never
// chooses an instance this process has just deregistered or drained, and
// never finds nothing held because of a write of its own. It is built from
// the entry L1 holds, so the changes of writes of this process that follow
// each other add up. Nothing is kept of a service L1 holds nothing of, or
// only "not found" of.
func (r *Registry) keep(ch core.Change, w wrote, at int64) {
	for range 4 { // again if another snapshot took the entry's place meanwhile
		cur := r.l1.getLocked(ch.Service)
		if cur == nil || cur.raw == nil || cur.st == nil || cur.rev >= ch.Revision || r.keepOver(cur, ch, w, at) {
			return
		}
	}
}

// keepOver puts the kept entry of cur in its place (keep), if L1 still
// holds cur, and reports whether it did.
func (r *Registry) keepOver(cur *entry, ch core.Change, w wrote, at int64) bool {
	st := cur.st
	raw := w.apply(cur.raw)
	e := &entry{name: cur.name, rev: cur.rev, layer: cur.layer, loadedAt: cur.loadedAt, insertedAt: cur.insertedAt, raw: raw,
		staleUntil: cur.staleUntil, errorUntil: cur.errorUntil, minExpiry: cur.minExpiry, st: st,
		inv: cur.inv, guarded: cur.guarded, kept: &kept{rev: ch.Revision, at: at}}
	if k := cur.kept; k != nil { // kept already, for an earlier write: the changes add up
		e.kept.rev, e.kept.at = max(k.rev, ch.Revision), max(k.at, at)
	}
	// Under viewMu, as install: a status change rebuilds the view of the
	// entry L1 holds, this one once it is in.
	st.viewMu.Lock()
	defer st.viewMu.Unlock()
	e.viewGen = st.gen.Load()
	e.setView(r.buildView(raw, st, e.insertedAt, r.clock.Now().UnixNano()))
	return r.l1.replace(cur, e)
}

// written ends a write of service to the store, which answered rev and
// err: the answer is noted (noteStoreResult, as op), and the change (w, if
// it wrote one instance) made visible (afterWriteOf) or the failure
// handled (afterFailedWrite).
func (r *Registry) written(ctx context.Context, op, service string, rev int64, w wrote, err error) error {
	r.noteStoreResult(op, err)
	if err != nil {
		r.afterFailedWrite(service, err)
		return err
	}
	r.afterWriteOf(ctx, core.Change{Service: service, Revision: rev}, w)
	return nil
}

// afterFailedWrite handles a write of service that failed with err. An
// error that says nothing was written (invalid input, not found, a revoked
// key, a conflict) ends it there. Any other leaves the outcome unknown: the
// caller's context ended, or the database stopped answering, while the
// commit was on its way, and it may have landed. The write is then taken as
// possibly done: this process stops answering with its snapshot of the
// service at once (unsettle), and reads the revision the service is at and
// announces it as a write's (settle), in the background, or once the
// database answers again if it is down. One announced in vain costs each
// process one reload. Treated as failed, a write that had landed told no
// one: every process, this one too, answered with the snapshot from before
// it until that aged out (a lease TTL, in Redis).
func (r *Registry) afterFailedWrite(service string, err error) {
	if !outcomeUnknown(err) {
		return
	}
	r.unsettle(service)
	if r.storeDown.Load() {
		// A read now would fail as the write did (and every process told
		// to reload would fail in turn): settled when the database is back.
		r.settleLater(service)
		return
	}
	r.settleSoon(service)
}

// settleSoon settles service in the background, together with every other
// write of it whose outcome is unknown: one that fails while a settle of
// the service is under way has it run once more when done (its read may
// have come before the write's commit), instead of one settle each. Failed
// writes come in numbers when the database is slow (their callers'
// deadlines run out), and each settle reads it.
func (r *Registry) settleSoon(service string) {
	r.unMu.Lock()
	if _, running := r.settling[service]; running {
		r.settling[service] = true
		r.unMu.Unlock()
		return
	}
	if r.settling == nil {
		r.settling = map[string]bool{}
	}
	r.settling[service] = false
	r.unMu.Unlock()
	settled := func() bool { // whether no write failed since this settle began; it is then done
		r.unMu.Lock()
		defer r.unMu.Unlock()
		if r.settling[service] && r.ctx.Err() == nil {
			r.settling[service] = false
			return false
		}
		delete(r.settling, service)
		return true
	}
	if !r.spawn(func() { // not once closed: nothing to announce to
		for {
			r.settle(service)
			if settled() {
				return
			}
		}
	}) {
		r.unMu.Lock()
		delete(r.settling, service)
		r.unMu.Unlock()
	}
}

// outcomeUnknown reports whether a write that failed with err may have
// committed all the same.
func outcomeUnknown(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnavailable)
}

// unsettle makes this process's snapshot of service, which a write of
// unknown outcome may have superseded, unfit to answer a lookup unless a
// load of it fails (stale-if-error): the entry is superseded (any revision
// the write made is above its own), as by a change message, and a
// negative entry is dropped. A load under way, which may have read the
// database before the commit, leaves what it read stale and loads again.
func (r *Registry) unsettle(service string) {
	if st := r.stateIfAny(service); st != nil {
		st.invalidated.Add(1)
	}
	switch e := r.l1.get(service); {
	case e == nil:
	case e.raw == nil:
		r.l1.remove(e)
	default:
		// A database still below it (the write did not land) is taken
		// at its revision by the load (load: it "went back").
		e.st.raiseWant(e.rev+1, r.now.nanos())
		e.freshUntil.Store(0)
	}
}

// settle reads the revision of service after a write of unknown outcome
// and makes it visible as afterWrite makes a write's. With Redis up, the
// write-through's read of the service gives the revision (readThrough):
// read apart first, as without Redis (whose afterWrite reads nothing
// more), the database was read twice, when it was already too slow for
// the write's caller. A database that does not answer leaves it to settle
// once it does.
func (r *Registry) settle(service string) {
	ch := core.Change{Service: service}
	var (
		err       error
		delivered bool
	)
	through := r.l2 != nil && r.l2.Up()
	if through {
		ch, delivered, err = r.readThrough(r.ctx, ch)
	} else {
		ctx, cancel := ownTimeout(r.ctx, r.opts.loadTO)
		ch.Revision, err = r.revisionOf(ctx, service)
		cancel()
	}
	r.noteStoreResult("settle", err)
	switch {
	case err == nil && through:
		r.undelivered(ch, delivered) // as afterWrite does
		r.writtenHere(ch)
	case err == nil:
		r.afterWrite(r.ctx, ch)
	case errors.Is(err, ErrNotFound):
		// No such service: the write did not land, or it did and the
		// service was left with nothing and deleted since (WithServiceReap),
		// which the reaper announced as a change of its own.
	case errors.Is(err, ErrUnavailable):
		r.settleLater(service)
	}
	// Else Close ended the read: nothing to announce to.
}

// settleLater keeps service to settle once the database answers again.
// It may have come back since the caller found it down, and its return
// settled what was kept before this one: then it is settled now.
func (r *Registry) settleLater(service string) {
	r.unMu.Lock()
	if r.unsettled == nil {
		r.unsettled = map[string]struct{}{}
	}
	if len(r.unsettled) < maxUnannounced {
		r.unsettled[service] = struct{}{}
	}
	r.unMu.Unlock()
	if !r.storeDown.Load() {
		r.resettle()
	}
}

// resettle settles, once the database is back, the services that writes
// of unknown outcome left while it was down.
func (r *Registry) resettle() {
	workThrough(r, &r.unsettled, func(service string, _ struct{}) { r.settle(service) })
}

// workThrough takes the services kept in *pending (under unMu) and runs fn
// on each in the background, until Close: reannounce's and resettle's loop.
func workThrough[V any](r *Registry, pending *map[string]V, fn func(string, V)) {
	r.unMu.Lock()
	taken := *pending
	*pending = nil
	r.unMu.Unlock()
	if len(taken) == 0 {
		return
	}
	r.spawn(func() { // not once closed: nothing to announce to
		for service, v := range taken {
			if r.ctx.Err() != nil {
				return
			}
			fn(service, v)
		}
	})
}

// revisionOf reads the revision of a service from the database: cheaply
// from a RevisionReader, else through a load.
func (r *Registry) revisionOf(ctx context.Context, service string) (int64, error) {
	r.ctr.storeReads.Add(1)
	if rr, ok := r.store.(core.RevisionReader); ok {
		revs, err := rr.Revisions(ctx, []string{service})
		if err != nil {
			return 0, err
		}
		rev, ok := revs[service]
		if !ok {
			return 0, &core.NotFoundError{Service: service}
		}
		return rev, nil
	}
	svc, err := r.store.Load(ctx, service)
	if err != nil {
		return 0, err
	}
	return svc.Revision, nil
}

// writeThrough reads a changed service, installs it in L1, writes it to
// Redis and publishes it (the revision alone if the read failed).
//
// An invalidation of the service since the read began (inv, counted before
// it, as a load counts) leaves the caches as Invalidate left them: the
// snapshot is neither installed nor written, and only the revision is
// published (pushed with it, the snapshot went into other processes' L1
// too). Installed and written, what was read before the invalidation undid
// it, here for a freshness window and in Redis for an L2 TTL, though the
// database may have changed behind this Registry's back in between (what
// Invalidate is for). The next lookup reads the database, which holds the
// write. Counted once the read had returned, the count missed an
// Invalidate during the read, which the read may predate.
//
// It holds the service's state throughout, as a load does (load). It
// reports whether Redis took what it was sent (see readThrough).
func (r *Registry) writeThrough(ctx context.Context, ch core.Change) bool {
	_, delivered, err := r.readThrough(ctx, ch)
	if err != nil {
		r.countStoreErr(err)
		// No such service: deleted (the reaper's own change, or one
		// announced again once Redis was back, whose reason is not kept),
		// which the message says.
		ch.Gone = ch.Gone || errors.Is(err, ErrNotFound)
		// bounded by the Redis timeout, as readThrough's writes
		delivered = r.l2.Publish(ctx, ch, false) == nil
	}
	return delivered
}

// readThrough is writeThrough's read and what follows it, up to the
// snapshot published; a read that fails is left to the caller. A change
// of revision 0 (a write of unknown outcome: settle) takes the
// revision it reads, and raises the one lookups want to it. It returns the
// change it made visible, and whether Redis took the snapshot (or refused
// it as no newer than its own, or as read before an Invalidate) and the
// message: not when either failed, out or answered with an error reply.
func (r *Registry) readThrough(ctx context.Context, ch core.Change) (core.Change, bool, error) {
	st := r.holdState(ch.Service)
	defer r.releaseState(st)
	inv := st.invalidated.Load()
	// Read before the database, as inv is counted (see setL2Unless). Unknown,
	// the snapshot is not written to Redis, nor pushed: what was read may
	// come from before another process's Invalidate.
	gen, genErr := r.l2.Generation(ctx, ch.Service)
	r.ctr.storeReads.Add(1)
	readAt := r.clock.Now()
	lctx, cancel := ownTimeout(ctx, r.opts.loadTO)
	// Close ends the read (and waits for this): the revision alone is
	// still published, where a stalled read held Close past its timeout.
	stop := context.AfterFunc(r.ctx, cancel)
	svc, err := r.store.Load(lctx, ch.Service)
	stop()
	cancel()
	if err != nil {
		return ch, false, err
	}
	if ch.Revision == 0 {
		// Raised before the install, as afterWrite raises it before the
		// write-through: a load that read the database before the write
		// then finds its snapshot superseded (installLoaded).
		ch.Revision = svc.Revision
		st.raiseWant(ch.Revision, r.now.nanos())
	}
	if st.invalidated.Load() == inv {
		// An Invalidate after the read either comes first, and put refuses
		// the entry, or drops it after the put (put).
		e := r.newEntry(svc, LayerL3, readAt, readAt, r.clock.Now())
		e.readSince(inv)
		r.install(e)
	}
	enc := codec.Encode(svc, readAt)
	var stands bool
	var setErr error
	if genErr == nil {
		stands, setErr = r.setL2Unless(ctx, st, inv, gen, ch.Service, enc)
	}
	var pubErr error
	if stands {
		pubErr = r.l2.PublishSnapshot(ctx, ch, enc) // one encoding for both
	} else {
		pubErr = r.l2.Publish(ctx, ch, false)
	}
	// A snapshot too slow to write is not written again: the message
	// (the revision alone) tells the others, and the older snapshot is
	// gone from Redis (setL2Unless).
	written := setErr == nil || errors.Is(setErr, rediscache.ErrTooSlow)
	return ch, written && pubErr == nil, nil
}

// maxUnannounced bounds the changes a Registry keeps to announce once Redis
// is back; past it, the others see a change within a lease TTL, as before.
const maxUnannounced = 10000

// noteUnannounced keeps a change that neither reached Redis nor was
// announced (Redis was out for this process): other processes, whose Redis
// may be fine, served their snapshots of it for up to a lease TTL.
func (r *Registry) noteUnannounced(ch core.Change) {
	r.unMu.Lock()
	defer r.unMu.Unlock()
	if r.unannounced == nil {
		r.unannounced = map[string]int64{}
	}
	if cur, ok := r.unannounced[ch.Service]; ok || len(r.unannounced) < maxUnannounced {
		r.unannounced[ch.Service] = max(cur, ch.Revision)
	}
}

// owe keeps a change that Redis did not get (it is out) to announce once it
// is back. Redis may have come back since it was found out, and its return
// announced what was kept before this one: then it is announced now.
func (r *Registry) owe(ch core.Change) {
	r.noteUnannounced(ch)
	if r.l2.Up() {
		r.reannounce()
	}
}

// undelivered keeps a change whose write-through Redis did not take in full
// (delivered false: see readThrough) to write through and announce again
// once Redis takes it. Out (the breaker tripped), that is once it is back
// (owe). Up, Redis answered the snapshot's write or the message with an
// error reply (out of memory, a read-only replica, CLUSTERDOWN, an ACL
// without EVAL or PUBLISH): then once a write probe finds it takes writes
// again (AwaitWrites). Dropped, such a change was written to Redis by no
// one: the other processes served their snapshots for their freshness
// window, and Redis kept the old one, which a process that did not hold
// the service took and served for up to a lease TTL, though Redis had
// long taken writes again.
func (r *Registry) undelivered(ch core.Change, delivered bool) {
	switch {
	case !r.l2.Up():
		r.owe(ch)
	case !delivered:
		r.noteUnannounced(ch)
		r.l2.AwaitWrites(ch.Service) // after the note: its OnWritable sees it
	}
}

// reannounce writes through and announces, once Redis is back or takes
// writes again, the changes this Registry wrote while it was out or
// refused them: each service as the database holds it now. One that Redis
// loses or refuses again waits for the next return.
func (r *Registry) reannounce() {
	workThrough(r, &r.unannounced, func(svc string, rev int64) {
		ch := core.Change{Service: svc, Revision: rev}
		delivered := r.l2.Up() && r.writeThrough(r.ctx, ch)
		switch {
		case !r.l2.Up():
			r.noteUnannounced(ch)
		case !delivered:
			r.noteUnannounced(ch)
			r.l2.AwaitWrites(ch.Service)
		}
	})
}

// Invalidate drops a service from every cache layer in every process: this
// L1, Redis, and (through a forced change message) every other L1, each of
// which reloads it from the database. In Redis it also moves the service's
// generation: a snapshot any process read from the database before it is
// refused when its writer reaches Redis after it (setL2Unless), so no
// process puts back what was read before. Without Redis there is no message:
// only this process's L1 is dropped (and its watchers reload the service),
// and the others reload within their freshness window. It is for operators; the library keeps caches coherent
// without it.
func (r *Registry) Invalidate(ctx context.Context, service string) error {
	if ctx == nil {
		return nilContext("Invalidate")
	}
	if r.closed.Load() {
		return ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return err
	}
	// Redis first: its snapshot goes, and the service gets a new
	// generation, so that a write of a snapshot that any process read from
	// the database before this is refused (setL2Unless). Then this
	// process's count and its entry: a load that reads the count after it
	// moved reads Redis after the delete. Counted first, a load that began
	// in between took the count as its own and the old snapshot from
	// Redis, and put it back in L1 after the drop, fresh: a Get right after
	// Invalidate returned answered what it was to drop.
	var err error
	if r.l2 != nil {
		err = r.l2.Invalidate(ctx, service)
	}
	if st := r.stateIfAny(service); st != nil {
		st.invalidated.Add(1) // a load under way must not put back what it read before
	}
	// Whatever entry the name has, under the index's lock, after the count:
	// a put of an entry read before is either refused, having seen the
	// count, or came first and is dropped here (put).
	r.l1.removeName(service)
	if r.l2 != nil && err == nil {
		if err = r.l2.Publish(ctx, core.Change{Service: service}, true); err == nil {
			return nil // its message reaches this process's watchers too
		}
	}
	// No message (no Redis, or it failed): this process's watchers are told
	// here, as its lookups are by the entry gone. Left alone, they kept what
	// Get no longer showed until their snapshot's freshness window ended.
	r.changeAnnounced(core.Change{Service: service}, true)
	return err
}
