package discovery

import (
	"container/heap"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// The health monitor: one goroutine per Registry keeps a queue of what falls
// due (each instance's next check, each service's next Redis sync, each
// ejection's end) on one timer of the Registry's clock, and starts the
// checks and syncs in goroutines that Close waits for. Every second it scans
// L1 for the services this process uses: those whose entry a lookup of this
// process (Get, Lookup, Pick, Health, an open Watch) used within the last
// fresh+stale-while-revalidate window (35 s by default). Lookups mark the
// entry they use (entry.usedAt, at most once a second, so a hit pays a load
// and a compare), and an entry that replaces another of the service inherits
// its mark. When the entry was built says nothing of use: change messages
// rebuild it without any lookup, and judged by that, a service looked up
// once stayed checked (and this process one of its probers) for as long as
// another process changed it every half minute. A service no longer used
// is dropped with its checks. Router instances that this process
// registered with WithCheckFunc are checked as long as they are registered.

const (
	// scanEvery is how often L1 is scanned for used services.
	scanEvery = time.Second
	// probersPerInstance is how many processes probe each instance when they
	// share results through Redis.
	probersPerInstance = 2
	// maxChecks bounds the checks running at once; a check due while the
	// bound is reached waits a tenth of an interval.
	maxChecks = 1024
)

// firstDelay spreads the first checks of a service over one interval.
func firstDelay(interval time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(interval)))
}

// nextDelay is the wait between two checks of an instance: the interval
// lengthened by a random 10-20% (Envoy's interval jitter), so checks that
// started together drift apart and an instance is never checked twice
// within one interval.
func nextDelay(interval time.Duration) time.Duration {
	return interval + interval/10 + time.Duration(rand.Int64N(int64(interval/10)+1))
}

type itemKind uint8

const (
	itemCheck itemKind = iota
	itemSync
	itemUneject
	itemForget
)

// item is one thing the monitor does when it falls due.
type item struct {
	due  int64 // Unix ns
	idx  int   // in the queue; -1 when not queued
	kind itemKind
	t    *target    // itemCheck
	sm   *svcMon    // itemSync
	st   *svcState  // itemUneject (the ejection ends at due), itemForget
	is   *instState // itemUneject
}

type queue []*item

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due < q[j].due }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx, q[j].idx = i, j
}
func (q *queue) Push(x any) {
	it := x.(*item)
	it.idx = len(*q)
	*q = append(*q, it)
}
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	it.idx = -1
	return it
}

// target is one instance the monitor checks.
type target struct {
	it   item
	id   string
	sm   *svcMon
	spec health.Target
	st   *svcState
	is   *instState
	own  bool          // a router instance of this process: never shared out
	reg  *Registration // its registration, when own
	busy atomic.Bool
	// stop ends the check last started (the loop alone reads and writes
	// it): dropping the target ends its check in flight, whose result would
	// apply to nothing. Left running, the check of an instance that left
	// while its health path hung held a connection and a goroutine for the
	// whole check timeout.
	stop context.CancelFunc
	// gen counts the changes of what is checked (spec) and the drop of the
	// target; a check applies its result only while gen is what it was when
	// the check began. Stopping the check is not enough: one that had just
	// ended, its result on its way to Redis, wrote the old address's verdict
	// as the shared state of the instance at its new address, just after
	// the move had forgotten it.
	gen atomic.Uint64
}

// svcMon is one service the monitor checks.
type svcMon struct {
	name              string
	interval, timeout time.Duration
	entry             *entry // the L1 entry the targets were built from
	lastUsed          int64  // the newest use (entry.usedAt) a scan saw
	own               map[string]*Registration
	targets           map[string]*target
	sync              item
	// written by sync jobs, read by the loop
	members atomic.Pointer[memberView]
	syncing atomic.Bool
	gone    atomic.Bool // dropped by the loop: whoever holds syncing next leaves the members
}

// memberView is the set of processes probing a service, as last read.
type memberView struct {
	ids []string
	at  int64 // when it was read (Unix ns)
}

// monitor is the health monitor of one Registry.
type monitor struct {
	r      *Registry
	id     string // this process's ID
	prober *health.Prober
	th     health.Thresholds
	share  *sharer // nil without Redis or without active checks

	wake     chan struct{}
	settleCh chan chan struct{} // tests: run due work now, then answer
	resync   atomic.Bool        // sync every service now (resubscribed)
	busy     atomic.Int64       // jobs running (checks, syncs)
	jobs     atomic.Uint64      // jobs started
	checking atomic.Int64

	ejectMu sync.Mutex // serialises ejection decisions
	pendMu  sync.Mutex
	pending []*item   // unejections handed to the loop
	soon    []*svcMon // services whose members changed: sync again soon

	// owned by the loop
	q        queue
	svcs     map[string]*svcMon
	nextScan int64
	timer    core.Timer
}

// startHealth creates the monitor and starts its goroutines (the loop and,
// with Redis, the subscriber of shared results).
func (r *Registry) startHealth() *monitor {
	var b [8]byte
	_, _ = crand.Read(b[:])
	ho := &r.opts.health
	m := &monitor{
		r: r, id: hex.EncodeToString(b[:]), th: health.Thresholds{Healthy: ho.healthy, Unhealthy: ho.unhealthy},
		wake: make(chan struct{}, 1), settleCh: make(chan chan struct{}),
		svcs: map[string]*svcMon{},
	}
	m.prober = health.NewProber(r.goCallback)
	if ho.active && r.opts.rdb != nil {
		m.share = newSharer(r, m)
		r.spawn(m.share.listen)
	}
	r.spawn(m.run)
	return m
}

// ProcessID returns the random ID this Registry goes by when it shares
// health results with other processes (InstanceHealth.CheckedBy).
func (r *Registry) ProcessID() string { return r.hm.id }

func (m *monitor) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// scheduleUneject asks the loop to end an ejection at till.
func (m *monitor) scheduleUneject(st *svcState, is *instState, till int64) {
	m.pendMu.Lock()
	m.pending = append(m.pending, &item{due: till, idx: -1, kind: itemUneject, st: st, is: is})
	m.pendMu.Unlock()
	m.poke()
}

// scheduleForget asks again, at till, for the drop of st that
// forgetUnusedAs put off for a self-preservation episode ending then:
// nothing else looks at the state of a service out of L1 again.
func (m *monitor) scheduleForget(st *svcState, till int64) {
	m.pendMu.Lock()
	m.pending = append(m.pending, &item{due: till, idx: -1, kind: itemForget, st: st})
	m.pendMu.Unlock()
	m.poke()
}

func (m *monitor) run() {
	defer func() {
		if m.timer != nil {
			m.timer.Stop()
		}
	}()
	for {
		now := m.r.clock.Now().UnixNano()
		m.step(now)
		var tick <-chan time.Time
		if len(m.q) > 0 || m.r.opts.health.active {
			next := m.nextScan
			if !m.r.opts.health.active || len(m.q) > 0 && m.q[0].due < next {
				next = m.q[0].due
			}
			d := time.Duration(next - now)
			if m.timer == nil {
				m.timer = m.r.clock.NewTimer(d)
			} else {
				m.timer.Reset(d)
			}
			tick = m.timer.C()
		} else if m.timer != nil {
			m.timer.Stop()
		}
		select {
		case <-m.r.ctx.Done():
			return
		case <-tick:
		case <-m.wake:
		case done := <-m.settleCh:
			m.step(m.r.clock.Now().UnixNano())
			close(done)
		}
	}
}

// step does everything due at now.
func (m *monitor) step(now int64) {
	if m.r.opts.health.active && now >= m.nextScan {
		m.scan(now)
		m.nextScan = now + int64(scanEvery)
	}
	m.pendMu.Lock()
	pending, soon := m.pending, m.soon
	m.pending, m.soon = nil, nil
	m.pendMu.Unlock()
	for _, it := range pending {
		heap.Push(&m.q, it)
	}
	for _, sm := range soon {
		if m.svcs[sm.name] == sm && sm.sync.idx >= 0 {
			m.reschedule(&sm.sync, min(sm.sync.due, now+int64(sm.interval/8)))
		}
	}
	if m.resync.Swap(false) {
		for _, sm := range m.svcs {
			m.reschedule(&sm.sync, now)
		}
	}
	for len(m.q) > 0 && m.q[0].due <= now {
		it := m.q[0]
		switch it.kind {
		case itemUneject:
			heap.Pop(&m.q)
			m.r.unejectAt(it.st, it.is, it.due)
		case itemForget:
			heap.Pop(&m.q)
			m.r.forgetPutOff(it.st)
		case itemSync:
			m.startSync(it.sm, now)
			m.reschedule(it, now+int64(m.syncDelay(it.sm)))
		case itemCheck:
			m.due(it.t, now)
		}
	}
}

func (m *monitor) reschedule(it *item, due int64) {
	it.due = due
	if it.idx >= 0 {
		heap.Fix(&m.q, it.idx)
	} else {
		heap.Push(&m.q, it)
	}
}

// syncDelay is the wait between two syncs of a service: an interval and up
// to 10% (a sync that sees the members change brings the next one forward
// to an eighth of an interval, see syncedChanged).
func (m *monitor) syncDelay(sm *svcMon) time.Duration {
	return sm.interval + time.Duration(rand.Int64N(int64(sm.interval/10)+1))
}

// syncedChanged is called by a sync that saw a service's members change:
// the next sync comes after an eighth of an interval, so that processes
// joining together converge on who probes what within a few seconds.
func (m *monitor) syncedChanged(sm *svcMon) {
	m.pendMu.Lock()
	m.soon = append(m.soon, sm)
	m.pendMu.Unlock()
	m.poke()
}

// due handles a target whose check falls due: check it now unless another
// process probes it, its previous check still runs, or too many run.
func (m *monitor) due(t *target, now int64) {
	interval := t.sm.interval
	switch {
	case t.busy.Load():
		m.reschedule(&t.it, now+int64(nextDelay(interval)))
	case m.checking.Load() >= maxChecks:
		m.reschedule(&t.it, now+int64(interval/10))
	default:
		m.reschedule(&t.it, now+int64(nextDelay(interval)))
		if m.probes(t, now) {
			m.startCheck(t)
		}
	}
}

// probes reports whether this process probes t: always without Redis, for
// its own router instances, and while it cannot tell who else does (no
// recent members, or members read before it joined them); otherwise when
// rendezvous hashing over the service's members picks it.
func (m *monitor) probes(t *target, now int64) bool {
	if m.share == nil || t.own || m.share.failing.Load() {
		return true
	}
	mv := t.sm.members.Load()
	if mv == nil || now-mv.at > int64(m.share.memberTTL(t.sm)) || !slices.Contains(mv.ids, m.id) {
		return true
	}
	return health.Owns(mv.ids, m.id, t.id, probersPerInstance)
}

func (m *monitor) startCheck(t *target) {
	spec, st, is, sm := t.spec, t.st, t.is, t.sm
	// This process's own instance is checked while it is registered: its
	// registration's context ends at Deregister (and Close), before the
	// next scan drops the target, and ends a check in flight. A check
	// falling due in between ran the function of an instance its owner had
	// taken away.
	base := m.r.ctx
	if t.reg != nil {
		if t.reg.ctx.Err() != nil {
			return
		}
		base = t.reg.ctx
	}
	run, stop := context.WithCancel(base)
	t.stop = stop
	gen := t.gen.Load()
	stale := func() bool { return t.gen.Load() != gen }
	t.busy.Store(true)
	m.busy.Add(1)
	m.jobs.Add(1)
	m.checking.Add(1)
	ok := m.r.spawn(func() {
		defer func() {
			stop()
			m.checking.Add(-1)
			t.busy.Store(false)
			m.busy.Add(-1)
		}()
		ctx, cancel := context.WithTimeout(run, sm.timeout)
		res := m.prober.Check(ctx, spec)
		cancel()
		if run.Err() != nil || res.Status == core.StatusUnknown {
			return // closing, deregistered, or dropped (see dropTarget)
		}
		m.r.countCheck(res.Status)
		c := health.Check{At: m.r.clock.Now().UnixNano(), RTT: res.RTT, Status: res.Status}
		if res.Err != nil {
			c.Err = res.Err.Error()
		}
		if m.share != nil {
			m.share.record(sm, st, is, c, stale)
			return
		}
		m.r.applyLocalIf(st, is, c, stale)
	})
	if !ok {
		stop()
		m.checking.Add(-1)
		t.busy.Store(false)
		m.busy.Add(-1)
	}
}

func (m *monitor) startSync(sm *svcMon, now int64) {
	if m.share == nil || !sm.syncing.CompareAndSwap(false, true) {
		return
	}
	// Only a process that uses the service probes its instances and joins
	// its members; one kept for its own router instances alone does not.
	join := sm.entry != nil
	m.busy.Add(1)
	m.jobs.Add(1)
	if !m.r.spawn(func() {
		defer m.busy.Add(-1)
		m.share.sync(sm, now, join)
		sm.syncing.Store(false)
		// dropped while this sync was on its way: its heartbeat may have
		// landed after the removal, so leave again (see removeService)
		if sm.gone.Load() && sm.syncing.CompareAndSwap(false, true) {
			m.share.leave(sm.name)
		}
	}) {
		sm.syncing.Store(false)
		m.busy.Add(-1)
	}
}

// usedFor is how recently a lookup must have used a service's L1 entry
// (entry.usedAt) for the service to count as used.
func (m *monitor) usedFor(interval time.Duration) int64 {
	return int64(max(m.r.opts.longestFresh()+m.r.opts.swr, 2*interval))
}

// scan finds the services this process uses and its own checked router
// instances, and brings the targets in line with them.
func (m *monitor) scan(now int64) {
	r := m.r
	own := map[string]map[string]*Registration{}
	r.regMu.Lock()
	for g := range r.regs {
		if g.opts.check != nil {
			if own[g.service] == nil {
				own[g.service] = map[string]*Registration{}
			}
			own[g.service][g.id] = g
		}
	}
	r.regMu.Unlock()
	r.l1.each(func(e *entry) {
		if e.raw == nil {
			return
		}
		sm := m.svcs[e.name]
		interval, _ := r.opts.health.timing(e.name)
		used := e.usedAt.Load()
		if now-used > m.usedFor(interval) {
			return
		}
		if sm == nil {
			sm = m.addService(e.name, now)
		}
		sm.lastUsed = max(sm.lastUsed, used)
		if sm.entry != e {
			if sm.entry == nil && m.share != nil {
				m.reschedule(&sm.sync, now) // used from now on: join the probers at once
			}
			sm.entry = e
			// This process's own instances as they are now: with those of
			// the last scan, an instance deregistered since (its entry
			// just taken out of L1's snapshot, with its state) was wanted
			// again, and its state made again, for nothing.
			sm.own = own[e.name]
			m.reconcile(sm, now)
		}
	})
	for name := range own {
		if m.svcs[name] == nil {
			m.addService(name, now)
		}
	}
	for name, sm := range m.svcs {
		regs := own[name]
		if !sameRegs(sm.own, regs) {
			sm.own = regs
			m.reconcile(sm, now)
		}
		interval, _ := r.opts.health.timing(name)
		if len(sm.own) == 0 && now-sm.lastUsed > m.usedFor(interval) {
			m.removeService(sm)
			continue
		}
		if sm.entry != nil && now-sm.entry.usedAt.Load() > m.usedFor(interval) {
			// no longer used, but kept for this process's own instances:
			// the others' go, and so does this process from the probers
			sm.entry = nil
			m.reconcile(sm, now)
			if m.share != nil {
				m.reschedule(&sm.sync, now)
			}
		}
	}
	if m.share != nil {
		m.share.prune(now)
	}
}

func sameRegs(a, b map[string]*Registration) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (m *monitor) addService(name string, now int64) *svcMon {
	interval, timeout := m.r.opts.health.timing(name)
	sm := &svcMon{name: name, interval: interval, timeout: timeout, lastUsed: now, targets: map[string]*target{}}
	sm.sync = item{idx: -1, kind: itemSync, sm: sm}
	m.svcs[name] = sm
	m.monitoredState(name)
	if m.share != nil {
		m.reschedule(&sm.sync, now) // join the probers and read the shared state first
	}
	return sm
}

// monitoredState returns the state of a service, creating it, marked as
// checked by the monitor (svcState.monitored), which keeps forgetUnused
// from dropping it. The mark is made under the state's holdMu, under which
// dropStateAs looks at it again and deletes, and only on the state the
// service still has: a drop that found the state unchecked either sees the
// mark and keeps the state, or has deleted it, and the mark goes to the
// next one. Marked in a separate step, a state that the drop had already
// found unchecked was deleted once marked: the monitor's targets held it,
// and their verdicts went to a state that Get and Pick no longer read.
func (m *monitor) monitoredState(name string) *svcState {
	return m.r.markState(name, func(st *svcState) { st.monitored.Store(true) })
}

func (m *monitor) removeService(sm *svcMon) {
	for _, t := range sm.targets {
		m.dropTarget(t)
	}
	if st := m.r.stateIfAny(sm.name); st != nil {
		st.monitored.Store(false)
		m.r.forgetUnused(st) // evicted from L1 meanwhile
	}
	if sm.sync.idx >= 0 {
		heap.Remove(&m.q, sm.sync.idx)
	}
	delete(m.svcs, sm.name)
	// A sync still running could heartbeat this process back into the
	// members after a removal sent now (where it stayed for 3 intervals,
	// a prober nobody stood in for): whoever takes syncing after the drop
	// leaves, this loop when no sync runs, else the sync when it ends.
	sm.gone.Store(true)
	if m.share != nil && sm.syncing.CompareAndSwap(false, true) {
		m.share.leaveAsync(sm.name)
	}
}

// dropTarget stops checking an instance, and ends its check in flight.
func (m *monitor) dropTarget(t *target) {
	t.gen.Add(1)
	if t.stop != nil {
		t.stop()
	}
	if t.it.idx >= 0 {
		heap.Remove(&m.q, t.it.idx)
	}
	delete(t.sm.targets, t.id)
}

// reconcile makes a service's targets its live instances that can be
// checked here, plus this process's router instances with a check function.
func (m *monitor) reconcile(sm *svcMon, now int64) {
	want := map[string]*core.Instance{}
	if e := sm.entry; e != nil && now-e.usedAt.Load() <= m.usedFor(sm.interval) {
		// Instances live when the snapshot was read are checked while the
		// service is used: renewals change no revision, so their lease ends
		// in it pass while they renew, and dropped then, a service looked
		// up every 20 s went unchecked for a third of the time. So are
		// those kept as suspects (holdsLive), which selection still picks
		// unless their checks say otherwise: left out, a suspect lost its
		// checks at the first reload after its lapse and kept its last
		// verdict, healthy, for the whole grace, dead or not.
		for i := range e.raw.Instances {
			in := &e.raw.Instances[i]
			if m.r.holdsLive(e, in, now) {
				want[in.ID] = in
			}
		}
	}
	owned := map[string]Instance{}
	for id, g := range sm.own {
		owned[id] = g.Instance()
		if want[id] == nil {
			in := owned[id]
			want[id] = &in
		}
	}
	st := m.monitoredState(sm.name) // the targets hold it (a state forgotten meanwhile is made again)
	for id, in := range want {
		g := sm.own[id]
		kind := health.KindOf(in, g != nil)
		if kind == health.KindNone {
			if in.Check == core.CheckNone { // checks turned off: their verdict goes
				if is := st.inst(id); is != nil {
					m.forget(sm, st, is)
				}
			}
			continue
		}
		spec := health.Target{Kind: kind, Addr: in.Addr(), Path: in.HealthPath}
		if spec.Path == "" {
			spec.Path = core.DefaultHealthPath
		}
		if g != nil {
			spec.Func, spec.Running = g.opts.check, &g.checking
			spec.Name = "check func of " + st.name + "/" + id
		}
		t := sm.targets[id]
		if t == nil {
			t = &target{id: id, sm: sm}
			t.it = item{idx: -1, kind: itemCheck, t: t}
			sm.targets[id] = t
			m.reschedule(&t.it, now+int64(firstDelay(sm.interval)))
		} else if t.spec.Addr != spec.Addr || t.spec.Kind != spec.Kind || t.spec.Path != spec.Path {
			// What is checked changed (the instance registered again under
			// its ID at another address, another path or kind of check):
			// the verdict of the old checks says nothing of the new ones.
			// Kept, an instance found unhealthy at its old address stayed
			// so at the new one until two checks there passed. Nor does
			// the old check still in flight: landing after the verdict was
			// forgotten, its pass made the instance healthy (one pass is
			// enough for one never checked) before the new address was
			// checked at all. A check that has ended already, its result
			// on its way, sees gen moved (before the verdict is forgotten).
			t.gen.Add(1)
			if t.stop != nil {
				t.stop()
			}
			if is := st.inst(id); is != nil && is == t.is {
				m.forget(sm, st, is)
			}
		}
		t.spec, t.st, t.is, t.own, t.reg = spec, st, st.instOrNew(id), g != nil, g
	}
	for id, t := range sm.targets {
		if in := want[id]; in == nil || health.KindOf(in, sm.own[id] != nil) == health.KindNone {
			m.dropTarget(t)
		}
	}
}

// forget forgets the verdict of an instance's checks (forgetVerdict), in
// Redis too: left there, it was adopted by every process that started
// using the service before the next check wrote over it (a verdict of the
// old address for an instance that moved, unhealthy say, up to an interval
// after the move), and by a process whose first sync found it. Every
// process that sees the change does this; the first write wins, the others
// find the state changed and leave it, as does a check's result written
// meanwhile.
func (m *monitor) forget(sm *svcMon, st *svcState, is *instState) {
	raw := m.r.forgetVerdict(st, is)
	if m.share == nil || raw == "" {
		return
	}
	m.busy.Add(1)
	m.jobs.Add(1)
	if !m.r.spawn(func() {
		defer m.busy.Add(-1)
		m.share.forget(sm, st, is, raw)
	}) {
		m.busy.Add(-1)
	}
}

// settle runs the monitor's due work at the clock's current time and waits
// until the checks and syncs it started have finished, repeating while they
// start more. Tests use it to step a fake clock deterministically.
func (m *monitor) settle() {
	for {
		before := m.jobs.Load()
		done := make(chan struct{})
		select {
		case m.settleCh <- done:
		case <-m.r.ctx.Done():
			return
		}
		<-done
		for m.busy.Load() != 0 {
			time.Sleep(100 * time.Microsecond)
		}
		if m.jobs.Load() == before {
			return
		}
	}
}
