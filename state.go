package discovery

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// svcState is what this process keeps about one service across snapshots:
// the newest revision announced, and per-instance state (health, load) that
// outlives any one snapshot.
type svcState struct {
	name string
	// wantRev is the newest revision announced; loads repeat until they
	// reach it. wantAt is when it last rose (Unix ns): a snapshot older
	// than it, read from the database before then, serves from Redis for a
	// lease TTL at most, after which the revision protects nothing a state
	// out of L1 is kept for (forgetNotHeld).
	wantRev atomic.Int64
	wantAt  atomic.Int64
	// invalidated counts the invalidations of the service (Invalidate, a
	// forced change message): a load that read it before the latest one
	// reads the database again.
	invalidated atomic.Uint64

	mu    sync.Mutex                            // serialises writers of insts
	insts atomic.Pointer[map[string]*instState] // by instance ID, copy-on-write

	// gen increases whenever something that selection depends on changes
	// (a health status, an ejection); pickers built for an older gen are
	// rebuilt.
	gen atomic.Uint64
	// viewMu is held from a health or ejection change's write to the
	// rebuild of the views it changes, and while a loaded entry of the
	// service is installed (install): a lookup never shows a status older
	// than one Health reported, and an older view never replaces a newer one.
	viewMu sync.Mutex

	pickerState // balancer.go

	// preserving is true while self-preservation keeps lapsed instances of
	// the service as suspects, in the episode that began at preservedSince
	// (episode.since); both under preserveMu. suspects counts the
	// instances kept as suspects (preserve.go).
	preserveMu     sync.Mutex
	preserving     bool
	preservedSince int64
	suspects       atomic.Int64
	episode        atomic.Pointer[episode]

	// ejections counts passive ejections of the service's instances; met
	// counts its lookups by layer, once it was found with metrics on
	// (metrics.go).
	ejections atomic.Uint64
	met       atomic.Pointer[svcMetrics]

	// monitored is true while the health monitor checks the service
	// (health_monitor.go): its targets hold this state. The monitor sets
	// it under holdMu (monitoredState).
	monitored atomic.Bool

	// holds counts the loads (and write-throughs, and pushed snapshots)
	// under way that will put an entry of the service into L1 with this
	// state (holdState); while there are any, the state is not dropped,
	// and forget keeps the drop asked for meanwhile, which the last of
	// them runs when it ends (releaseState). Both are guarded by holdMu.
	holdMu sync.Mutex
	holds  int
	forget dropKind

	// putOff is the drop (a dropKind) that forgetUnusedAs put off for a
	// request in flight or an ejection in force; the last request's Done,
	// or the ejection's end, asks for it again (forgetPutOff). Nothing else
	// looks at the state of a service out of L1 again.
	putOff atomic.Uint32
	// forgetAt is when the latest drop put off for a self-preservation
	// episode is asked for again (Unix ns; 0 if none).
	forgetAt atomic.Int64
}

// dropKind says how a state that something held was to be dropped, from
// the least willing to the most: as forgetNotHeld drops it, as
// forgetUnused does, or at once (dropState).
type dropKind uint8

const (
	dropNone dropKind = iota
	dropNotHeld
	dropUnused
	dropNow
)

// raiseWant makes rev, announced or written at now (Unix ns), the revision
// loads wait for, unless a newer one is.
func (st *svcState) raiseWant(rev, now int64) {
	for {
		cur := st.wantRev.Load()
		if rev <= cur {
			return
		}
		if st.wantRev.CompareAndSwap(cur, rev) {
			break
		}
	}
	for {
		at := st.wantAt.Load()
		if now <= at || st.wantAt.CompareAndSwap(at, now) {
			return
		}
	}
}

// inst returns the state of an instance, or nil.
func (st *svcState) inst(id string) *instState {
	if m := st.insts.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// instOrNew returns the state of an instance, creating it.
func (st *svcState) instOrNew(id string) *instState {
	if is := st.inst(id); is != nil {
		return is
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	old := st.insts.Load()
	if old != nil {
		if is := (*old)[id]; is != nil {
			return is
		}
	}
	m := make(map[string]*instState, 8)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	is := newInstState(st.name, id)
	m[id] = is
	st.insts.Store(&m)
	return is
}

// retain forgets the state of instances not in keep (they left the
// service), and the service's round robin rotations with them (see
// perNarrowing.reset): a new pick of each set of filters starts its own
// again, from a random place.
func (st *svcState) retain(keep []core.Instance) {
	old := st.insts.Load()
	if old == nil || len(*old) <= len(keep) && allKept(*old, keep) {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	old = st.insts.Load()
	m := make(map[string]*instState, len(keep))
	for i := range keep {
		if is := (*old)[keep[i].ID]; is != nil {
			m[keep[i].ID] = is
		}
	}
	st.insts.Store(&m)
	st.narrow.reset()
}

func allKept(m map[string]*instState, keep []core.Instance) bool {
	n := 0
	for i := range keep {
		if m[keep[i].ID] != nil {
			n++
		}
	}
	return n == len(m)
}

// instState is this process's state of one instance. Its fields are atomics
// read on the selection path without locks. Ownership:
//
//   - health.go writes status, score, rtt and ejectedUntil (active checks,
//     passive outcomes, shared results) and keeps its detail under hmu;
//   - balancer.go writes inflight, ewma and the strategies' counters.
type instState struct {
	service, id string

	// status is the health status (a core.Status): StatusUnknown until a
	// check finishes, then Healthy, Warning or Unhealthy.
	status atomic.Uint32
	// score is the health score in [0, 1] as float64 bits; 1 until checked.
	score atomic.Uint64
	// rtt is the last check's response time in nanoseconds; 0 if unknown.
	rtt atomic.Int64
	// hbase is score x 1e9 / max(rtt, 1 ms) as float64 bits: the part of
	// the health_based weight that changes only with a check, kept so that
	// a pick does not compute it for every candidate.
	hbase atomic.Uint64
	// ejectedUntil is when a passive ejection ends (Unix ns); 0 if none.
	ejectedUntil atomic.Int64

	// inflight counts this process's requests to the instance.
	inflight atomic.Int64
	// ewma is the peak-EWMA latency in nanoseconds as float64 bits, and
	// ewmaAt when it was last updated (Unix ns).
	ewma   atomic.Uint64
	ewmaAt atomic.Int64

	// hmu guards health.go's detail (thresholds, history, last error).
	hmu    sync.Mutex
	health healthDetail
}

func newInstState(service, id string) *instState {
	is := &instState{service: service, id: id}
	is.score.Store(math.Float64bits(1))
	is.updateHBase()
	return is
}

// updateHBase recomputes hbase after score or rtt changed.
func (is *instState) updateHBase() {
	rtt := max(float64(is.rtt.Load()), float64(time.Millisecond))
	is.hbase.Store(math.Float64bits(is.Score() * 1e9 / rtt))
}

// Status returns the health status.
func (is *instState) Status() core.Status { return core.Status(is.status.Load()) }

// Score returns the health score.
func (is *instState) Score() float64 { return math.Float64frombits(is.score.Load()) }

// ejected reports whether a passive ejection is in force at now (Unix ns).
func (is *instState) ejected(now int64) bool {
	u := is.ejectedUntil.Load()
	return u != 0 && now < u
}

// state returns the state of a service, creating it.
func (r *Registry) state(name string) *svcState {
	if v, ok := r.states.Load(name); ok {
		return v.(*svcState)
	}
	v, _ := r.states.LoadOrStore(name, &svcState{name: name})
	return v.(*svcState)
}

func (r *Registry) stateIfAny(name string) *svcState {
	if v, ok := r.states.Load(name); ok {
		return v.(*svcState)
	}
	return nil
}

// holdState returns the state of a service, creating it, and keeps it
// from being dropped until releaseState: a load holds it from its start to
// the install of what it read, which points at it (entry.st), and what is
// said of the service meanwhile (a revision announced or written, an
// Invalidate, a health verdict) goes to it. Dropped under the load (an
// eviction of an older slot of the name, another load's failure), the
// state took with it the revision and the invalidation that the load was
// to see, which then went to no state at all, and the load put what it had
// read before them into L1 as fresh; or L1's new entry pointed at the
// dropped state, and health verdicts and ejections went to the next one,
// which Pick never read.
func (r *Registry) holdState(name string) *svcState {
	return r.markState(name, func(st *svcState) { st.holds++ })
}

// markState runs mark on the state of a service, creating it, under the
// state's holdMu, which dropState deletes under: either the drop sees the
// mark, or it has already deleted the state and mark goes to the next one.
func (r *Registry) markState(name string, mark func(*svcState)) *svcState {
	for {
		st := r.state(name)
		st.holdMu.Lock()
		if r.stateIfAny(name) == st {
			mark(st)
			st.holdMu.Unlock()
			return st
		}
		st.holdMu.Unlock() // dropped since state returned it
	}
}

// releaseState ends a hold (holdState). The last one runs the drop that
// was put off while the state was held.
func (r *Registry) releaseState(st *svcState) {
	st.holdMu.Lock()
	st.holds--
	kind := dropNone
	if st.holds == 0 {
		kind, st.forget = st.forget, dropNone
	}
	st.holdMu.Unlock()
	switch kind {
	case dropNotHeld:
		r.forgetNotHeld(st)
	case dropUnused:
		r.forgetUnused(st)
	case dropNow:
		r.dropState(st)
	}
}

// dropState forgets the state of a service: one the database does not know
// (lookups of made-up names leave nothing behind), or one nothing uses any
// more (forgetUnused). What it counted stays in the Registry's totals.
func (r *Registry) dropState(st *svcState) { r.dropStateAs(st, dropNow) }

// dropStateAs is dropState, asked for as kind says. A state held
// (holdState) is dropped only when the last hold ends, as kind says then;
// one that L1's entry of the service points at is kept: put there since
// the caller found the service in no cache. So is one the health monitor
// checks, whatever the kind: it marks it under holdMu (monitoredState), so
// a drop that found it unchecked sees a mark made since. A service the
// database does not know (dropState) may still be this process's own, its
// rows lost to a restore: dropped, its state took the monitor's targets
// with it, and once the service was back their verdicts went to a state
// Get and Pick no longer read.
func (r *Registry) dropStateAs(st *svcState, kind dropKind) {
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	st.holdMu.Lock()
	defer st.holdMu.Unlock()
	if st.holds > 0 {
		st.forget = max(st.forget, kind)
		return
	}
	if e := r.l1.get(st.name); e != nil && e.st == st {
		return
	}
	if st.monitored.Load() {
		return // checked by the health monitor, or taken on since forgetUnused looked (monitoredState)
	}
	if r.states.CompareAndDelete(st.name, st) {
		if m := st.met.Load(); m != nil { // keep its lookups in the Registry's totals
			r.ctr.l1Hits.add(m.l1.load())
			r.ctr.l2.Add(m.l2.Load())
			r.ctr.l3.Add(m.l3.Load())
			if r.met != nil { // and its series where they were (metrics.go)
				r.met.retire(st, m)
			}
		}
		for i := range st.picks { // and its picks (metrics on), panics and ejections
			r.picks[0][i].Add(st.picks[i].Load())
		}
		r.ctr.panics.Add(st.panics.Load())
		r.ctr.ejections.Add(st.ejections.Load())
	}
}

// entryEvicted is called when ristretto evicted a service from L1.
func (r *Registry) entryEvicted(e *entry) {
	if e.st != nil {
		r.forgetUnused(e.st)
	}
}

// nameEvicted is called when ristretto evicted a service whose entry had
// already left L1 (a write, an Invalidate): its state is forgotten as an
// evicted entry's is, unless something still uses it. With Redis, one that
// holds a revision written or announced is kept, as a failed load keeps it
// (load): Redis may still hold an older snapshot, which it refuses.
func (r *Registry) nameEvicted(name string) {
	if st := r.stateIfAny(name); st != nil {
		r.forgetNotHeld(st)
	}
}

// forgetNotHeld forgets, as forgetUnused does, the state of a service L1
// does not hold (a failed load's, an evicted name's, or a write's of a
// service not looked up). With Redis, one that wants a revision (written
// or announced) is kept for as long as Redis may still serve an older
// snapshot, which the next load took once the state was dropped (this
// process's own write undone): a lease TTL, and the clock skew Redis
// snapshots are allowed, after the revision rose. Its drop is asked for
// again then. Kept for good, as it was, the state of every service
// invalidated (Invalidate takes the entry out of L1, and ristretto evicts
// the name later) that had heard of a change stayed after its name left
// L1, for as long as the process ran, beyond WithCacheSize. A revision
// raised while the state was dropped goes to the state that follows it.
func (r *Registry) forgetNotHeld(st *svcState) {
	if r.l2 == nil {
		r.forgetUnusedAs(st, dropNotHeld)
		return
	}
	w := st.wantRev.Load()
	if w != 0 {
		until := st.wantAt.Load() + int64(r.opts.leaseTTL+l2ClockSkew)
		if now := r.clock.Now().UnixNano(); now < until {
			st.putOff.Store(uint32(dropNotHeld))
			// One drop asked for at a time: one already due later looks
			// again then. Asked for at each write, a service written
			// often queued one per write for a lease TTL.
			if at := st.forgetAt.Load(); at <= now && st.forgetAt.CompareAndSwap(at, until) {
				r.hm.scheduleForget(st, until)
			}
			return
		}
	}
	r.forgetUnusedAs(st, dropNotHeld)
	if w2 := st.wantRev.Load(); w2 > w {
		if next := r.state(st.name); next != st {
			next.raiseWant(w2, st.wantAt.Load())
			r.forgetNotHeld(next) // out of L1 too: dropped in its turn
		}
	}
}

// forgetUnused drops the state of a service that nothing in this process
// uses any more: not in L1, not watched, not checked by the health
// monitor, with no ejection or self-preservation episode in force. Kept,
// the states (with their instances' health, picks and metrics) of every
// service ever looked up grew without bound behind an L1 bounded by
// WithCacheSize. A load under way keeps it until it has ended (holdState).
func (r *Registry) forgetUnused(st *svcState) { r.forgetUnusedAs(st, dropUnused) }

// forgetUnusedAs is forgetUnused, asked for as kind says (dropStateAs).
func (r *Registry) forgetUnusedAs(st *svcState, kind dropKind) {
	if st.monitored.Load() || r.l1.get(st.name) != nil || r.hubIfAny(st.name) != nil {
		// In use again: no drop is put off (the next eviction asks), and
		// the Done that ends a last request no longer asks for one.
		st.putOff.Store(0)
		return
	}
	now := r.clock.Now().UnixNano()
	// Noted before the instances are read: a Done that ends the last
	// request after they were read sees it (finish), and asks again.
	st.putOff.Store(uint32(kind))
	if ep := r.episodeOf(st, now); ep != nil {
		// Self-preservation remembers its group here (preserve.go); asked
		// again when the episode ends (once for each end).
		if end, at := ep.hi+int64(r.opts.suspectGrace), st.forgetAt.Load(); end > at && st.forgetAt.CompareAndSwap(at, end) {
			r.hm.scheduleForget(st, end)
		}
		return
	}
	if m := st.insts.Load(); m != nil {
		for _, is := range *m {
			if is.ejected(now) {
				return // its end is scheduled on this state, and asks again
			}
			if is.inflight.Load() > 0 {
				// Dropped, the counts of requests still in flight went
				// with it: the next least_connections or p2c_ewma pick
				// saw every instance idle.
				return
			}
		}
	}
	r.dropStateAs(st, kind)
}

// forgetPutOff asks again for the drop of st that forgetUnusedAs put off
// (for requests in flight, or an ejection), if it did.
func (r *Registry) forgetPutOff(st *svcState) {
	switch dropKind(st.putOff.Load()) {
	case dropNotHeld:
		r.forgetNotHeld(st)
	case dropUnused, dropNow:
		r.forgetUnused(st)
	}
}

// viewStatus is the status an instance shows in this process's view: a
// stored draining flag wins, then an ejection, then the health status.
func viewStatus(in *core.Instance, is *instState, now int64) core.Status {
	if in.Status == core.StatusDraining {
		return core.StatusDraining
	}
	if is == nil {
		return in.Status
	}
	if is.ejected(now) {
		return core.StatusEjected
	}
	return is.Status()
}

// instancesChanged is called when the health or ejection of instances of a
// service changed in this process: it rebuilds the view that lookups return
// and tells selection to rebuild. The caller holds st.viewMu.
func (r *Registry) instancesChanged(st *svcState) {
	st.gen.Add(1)
	if e := r.l1.get(st.name); e != nil && e.raw != nil {
		now := r.clock.Now()
		e.view.Store(r.buildView(e.raw, st, e.insertedAt, now.UnixNano()))
	}
}

// serviceGone forgets what this process keeps of a service that ch says was
// deleted (ch.Gone: the reaper's deletion, this process's or another's):
// its metric series (buryService), and its state once nothing uses it
// (forgetNotHeld; a snapshot of it in L1 is being reloaded, and the load,
// which finds the service no more, drops it). A process that holds a newer
// revision of the name (created again since, its announcement come first)
// keeps all of it. Kept, the series and the state of every service a
// process had found stayed for as long as it ran: a fleet that churns
// service names (CI jobs, canaries) grew every process's metrics and
// memory without bound.
func (r *Registry) serviceGone(ch core.Change) {
	st := r.stateIfAny(ch.Service)
	if st != nil && st.wantRev.Load() > ch.Revision {
		return
	}
	if e := r.l1.get(ch.Service); e != nil && e.raw != nil && e.rev > ch.Revision {
		return
	}
	r.buryService(ch.Service)
	if st = r.stateIfAny(ch.Service); st != nil {
		r.forgetNotHeld(st)
	}
}
