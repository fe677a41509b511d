package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/rssbot/discovery/internal/cache/rediscache"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/store/sqlstore"
)

// Registry is a process's view of service discovery: it registers this
// process's instances and keeps their leases alive, and answers lookups from
// its own memory (L1), the shared Redis (L2) and the database (L3). It is
// safe for concurrent use. Create one with New and Close it when done.
type Registry struct {
	opts  options
	store core.Store
	log   *zap.Logger
	clock core.Clock
	now   *coarseClock

	l1 *l1Cache
	l2 *rediscache.Cache // nil without Redis

	sf         singleflight.Group
	refreshSem chan struct{}
	states     sync.Map // service name -> *svcState
	ctr        counters
	// foldMu makes dropState's move of a state's counts into ctr one step
	// for the readers that add both up (Stats, the metrics' Collect): read between the
	// two, the counts were in neither, and Stats went back.
	foldMu sync.RWMutex
	rng    fastRand            // selection's random numbers (fastrand.go)
	picks  [stripes]pickCounts // picks by strategy with metrics off (countPick)
	met    *metrics            // nil without WithMetrics (metrics.go)

	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}

	goMu   sync.RWMutex // guards wg.Add against Close's wg.Wait
	wg     sync.WaitGroup
	cbs    callbacks // the user's functions running (WithCheckFunc, WithConfigFunc)
	closed atomic.Bool
	// stopping is set once Close has deregistered, as it stops the
	// Registry's goroutines: lookups (Get, Lookup, Pick and the
	// Transport's) answer ErrClosed from then on, and not before, so that
	// a process's handlers still reach the services they call while Close
	// drains and deregisters it (a fresh L1 entry answered then, and a
	// stale or missing one was ErrClosed: whether a call went out during a
	// drain depended on the cache).
	stopping atomic.Bool
	closing  chan struct{} // closed when Close has finished
	// closeBy is when Close must have ended (unix ns; 0 before Close):
	// the write-throughs of the writes Close makes are bounded by it
	// (afterWrite).
	closeBy atomic.Int64

	regMu    sync.Mutex
	regs     map[*Registration]struct{}
	regLocks map[string]*instLock // per-instance Register serialisation (lease.go)
	// registering counts the Register calls under way; once Close began,
	// the last to end closes registersDone, which Close waits for
	// (beginRegister). Under regMu.
	registering   int
	registersDone chan struct{}

	storeDown   atomic.Bool            // written under outMu
	listing     atomic.Bool            // a listing for an Overview under way in the background (listInBackground)
	storeOKAt   atomic.Int64           // unix ns of the last database call that answered
	probedAt    atomic.Int64           // unix ns of the last probe of a database known down (probeStore)
	probing     atomic.Bool            // a probe under way
	loadSeq     atomic.Uint64          // loads begun (a failed one's number: loadFailure)
	outage      atomic.Pointer[outage] // the last database outage this process saw; written under outMu
	outMu       sync.Mutex             // serialises the database's going down and coming back
	lostAt      int64                  // when the outage under way began, not joined to an earlier one ("database back"); under outMu
	unsubscribe func()
	hm          *monitor // health monitor (health_monitor.go)

	// unannounced holds the changes this Registry wrote while its Redis was
	// out (service -> revision): announced once Redis is back (reannounce).
	// unsettled holds the services that writes of unknown outcome changed
	// or not while the database was down: settled once it is back
	// (afterFailedWrite). settling holds the services being settled, each
	// with whether a write of unknown outcome failed since (settleSoon).
	unMu        sync.Mutex
	unannounced map[string]int64
	unsettled   map[string]struct{}
	settling    map[string]bool

	// watching and configuration (watch.go, config*.go)
	hubMu  sync.Mutex     // serialises creating and stopping hubs
	hubs   sync.Map       // service name -> *hub
	hooked atomic.Int32   // how many hubs run; 0 skips the watch hooks
	httpc  *http.Client   // configuration notifications
	sends  sendOrder      // their order per instance (confignotify.go)
	pools  transportPools // what Transports share (transport.go)

	// noWaitLoads holds the names of the services being loaded in the
	// background for a NoWait pick that found nothing in L1 (loadAsync):
	// one load a name, however many picks find it missing meanwhile.
	noWaitLoads sync.Map // service name -> struct{}
	// noWaitFailedAt is when such a load last failed (coarse clock): none
	// starts again within retryAfterFailure, so a database that refuses at
	// once is not asked again at every pick.
	noWaitFailedAt atomic.Int64
}

// New returns a Registry. Without WithDB or WithStore it keeps everything in
// its own memory, which suits a single process and examples; WithDB makes a
// database the source of truth and WithRedis shares a cache and change
// notifications between processes (it needs WithDB or WithStore: New
// refuses it over this process's own memory).
func New(opts ...Option) (*Registry, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.rdb != nil && o.db == nil && o.store == nil {
		// Each process's own memory behind a shared Redis: others saw its
		// instances while a snapshot in Redis lasted, then not, then again.
		return nil, optErr("WithRedis", "", "needs WithDB (or WithStore): Redis shares a cache between processes, "+
			"and without a shared source of truth each process keeps its registrations in its own memory")
	}
	r := &Registry{
		opts: o, log: o.log, clock: o.clock, now: newCoarseClock(o.clock),
		refreshSem: make(chan struct{}, maxRefreshes), stop: make(chan struct{}),
		closing: make(chan struct{}), regs: map[*Registration]struct{}{}, httpc: newNotifyClient(),
	}
	r.rng.seed()
	if o.metrics != nil {
		r.met = newMetrics(r, o.metrics)
	}
	switch {
	case o.store != nil:
		r.store = o.store
	case o.db != nil:
		s, err := sqlstore.New(o.db, o.namespace+"_", o.dbTO)
		if err != nil {
			return nil, err
		}
		s.SetLoadTimeout(o.loadTO)         // loads: WithLoadTimeout, not WithDatabaseTimeout
		s.SetMigrationTimeout(o.migrateTO) // a migration that runs: WithMigrationTimeout
		// The store bounds these: the read of the schema version by
		// WithDatabaseTimeout, as every call that is no lookup, and a
		// migration with work to do by WithMigrationTimeout.
		if o.migrate {
			err = s.Migrate(context.Background())
		} else {
			err = s.CheckSchema(context.Background())
		}
		if err != nil {
			return nil, err
		}
		ctx, cancel := ownTimeout(context.Background(), o.dbTO)
		s.Warm(ctx, 2) // database/sql keeps 2 idle connections by default
		cancel()
		r.store = s
	default:
		r.store = memory.New()
	}
	l1, err := newL1(o.cacheSize)
	if err != nil {
		return nil, err
	}
	l1.lease = int64(o.leaseTTL)
	r.l1 = l1
	l1.onPut = r.entryPut
	l1.onEvict = r.entryEvicted
	l1.onGone = r.nameEvicted
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if r.now.real {
		r.goRun(func() { r.now.run(r.stop) })
	}
	if n, ok := r.store.(core.Notifier); ok {
		r.unsubscribe = n.Subscribe(func(ch core.Change) { r.onChange(ch, false) })
	}
	if o.rdb != nil {
		r.l2 = rediscache.New(o.redisCmd, rediscache.Options{
			Namespace: o.namespace + ":", Channel: redisChannel(o.namespace, "changes", o.rdb), TTL: o.l2TTL, Timeout: o.redisTO, ProbeInterval: 250 * time.Millisecond,
			Log: o.log, OnChange: r.onMessage, OnResync: r.resync, OnWritable: r.reannounce, Now: o.clock.Now,
		})
		if err := r.l2.Start(); err != nil {
			// Taken, a client that Redis refuses (a wrong password, an ACL
			// without a command, the keys or the channels, a read-only
			// replica) left this Registry deaf to the others' changes, or
			// mute about its own.
			_ = r.Close()
			return nil, optErr("WithRedis", fmt.Sprintf("%T", o.rdb), err.Error())
		}
	}
	if o.reapEvery > 0 {
		r.goRun(r.reapLoop)
	}
	r.hm = r.startHealth()
	if err := r.startMetrics(); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// ownTimeout bounds the Registry's own backend calls (not a caller's): the
// deadline's cause, core.ErrTimeout, tells the store that a call it ends is
// the backend not answering (ErrUnavailable), where a caller's deadline is
// the caller giving up.
func ownTimeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(parent, d, core.ErrTimeout)
}

// spawn runs fn in a goroutine that Close waits for, unless the Registry is
// closing; it reports whether it did.
func (r *Registry) spawn(fn func()) bool {
	r.goMu.RLock()
	defer r.goMu.RUnlock()
	if r.ctx.Err() != nil {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
	return true
}

func (r *Registry) goRun(fn func()) { r.spawn(fn) }

// callbacks tracks the calls of functions the user gave Register
// (WithCheckFunc, WithConfigFunc). They run on goroutines of their own,
// which Close waits for only within the close timeout: such a function is
// asked to return by its context, and one that ignored it (a check stuck
// on a lock, a reload waiting on a channel) made Close, which waited for
// every goroutine the Registry started, wait for good.
type callbacks struct {
	mu      sync.Mutex
	running map[*callback]struct{}
	idle    chan struct{} // closed when the last call returns, if Close waits
}

// callback is one call under way, named as Close's error names it.
type callback struct{ name string }

// goCallback runs fn, a call of the user's function named name, on a
// goroutine of its own, unless the Registry is closing; it reports whether
// it did.
func (r *Registry) goCallback(name string, fn func()) bool {
	r.goMu.RLock()
	defer r.goMu.RUnlock()
	if r.ctx.Err() != nil {
		return false
	}
	cb := &callback{name: name}
	c := &r.cbs
	c.mu.Lock()
	if c.running == nil {
		c.running = make(map[*callback]struct{})
	}
	c.running[cb] = struct{}{}
	c.mu.Unlock()
	go func() {
		defer c.end(cb)
		fn()
	}()
	return true
}

func (c *callbacks) end(cb *callback) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.running, cb)
	if len(c.running) == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// await waits up to d for the calls under way, and returns a
// CallbackError naming those still running then. No call starts once
// Close has stopped the Registry's goroutines, which start them.
func (c *callbacks) await(d time.Duration) error {
	c.mu.Lock()
	if len(c.running) == 0 {
		c.mu.Unlock()
		return nil
	}
	idle := make(chan struct{})
	c.idle = idle
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return nil
	case <-t.C:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.running) == 0 { // the last returned as the timer fired
		return nil
	}
	c.idle = nil
	names := make([]string, 0, len(c.running))
	for cb := range c.running {
		names = append(names, cb.name)
	}
	slices.Sort(names)
	return &CallbackError{Running: names, Waited: d}
}

// Close drains every instance this Registry registered (for at most the
// close-drain timeout, 1 s, and half the close timeout; see WithCloseDrain and
// Registration.Drain), then
// deregisters them, waits for the Register calls under way, which return
// ErrClosed and remove what they wrote, closes every Watch channel,
// stops every goroutine it started and unsubscribes. It
// never closes the database or Redis client it was given. Calling it again
// waits for the first call and returns nil.
//
// Lookups (Get, Lookup, Pick, the Transport's requests) answer until the
// deregistrations are done, so that the process's handlers still reach the
// services they call while it drains; from then on, and once Close has
// returned, they are ErrClosed. Every other call is ErrClosed from Close's
// call on.
//
// Close returns within the close timeout (WithCloseTimeout, 5 s), counted
// from its call, plus at most CloseSlack (200 ms), whatever the database,
// Redis and the functions given to Register do: set the close timeout to
// fit a shutdown grace period (Kubernetes' SIGTERM one, say). The
// deregistrations, with the writes that make them known through Redis, get
// most of it; then, within what is left (and at least 100 ms each, so that
// a fast Redis is still written), Close waits for its goroutines and for
// the calls under way of the functions given to Register (WithCheckFunc,
// WithConfigFunc), whose contexts it ends, and finally removes this
// process from the health probes it shares through Redis.
//
// A function given to Register still running then is left to return when
// it will, and Close returns a CallbackError naming it, with whatever else
// failed. So Close called from such a function returns too, after that
// timeout; start it on a goroutine of its own there to have it return at
// once. A goroutine of the Registry still waiting then on a Redis or
// database call (a write-through started before Close, on a Redis that
// stopped answering) is left to end on that call's own timeout (the Redis
// timeout, the load timeout), and the health monitor's leave is made
// once it has, after Close returned; every call after Close is ErrClosed
// all the same.
func (r *Registry) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		<-r.closing
		return nil
	}
	defer close(r.closing)
	deadline := time.Now().Add(r.opts.closeTO)
	r.closeBy.Store(deadline.Add(closeGrace).UnixNano())
	r.regMu.Lock()
	regs := make([]*Registration, 0, len(r.regs))
	for g := range r.regs {
		regs = append(regs, g)
	}
	var registers chan struct{}
	if r.registering > 0 {
		registers = make(chan struct{})
		r.registersDone = registers
	}
	r.regMu.Unlock()
	ctx, cancel := context.WithDeadlineCause(context.Background(), deadline, core.ErrTimeout)
	errs := r.closeRegistrations(ctx, regs)
	if registers != nil {
		// Each removes what it wrote once it sees the Registry closed:
		// returned before, Close left a write under way to land after it,
		// and a process that exits when Close returns left the instance
		// listed, and picked, for a lease TTL.
		select {
		case <-registers:
		case <-ctx.Done():
		}
	}
	cancel()

	r.stopping.Store(true)
	r.goMu.Lock()
	r.cancel()
	close(r.stop)
	r.goMu.Unlock()
	// The goroutines and the callbacks at once, within what is left: one
	// after the other, each with a close timeout of its own, Close had no
	// bound (4 s of a 2 s close timeout, the database or Redis black-holed
	// and a callback deaf to its context).
	wait := max(time.Until(deadline), closeGrace)
	until := time.Now().Add(wait)
	stopped := make(chan struct{})
	go func() {
		if r.unsubscribe != nil {
			r.unsubscribe()
		}
		if r.l2 != nil {
			r.l2.Close() // waits for its own goroutines: a probe on its way to Redis
		}
		r.wg.Wait()
		close(stopped)
	}()
	if err := r.cbs.await(wait); err != nil {
		errs = append(errs, err)
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-stopped:
		// Hand this process's share of health probes to the others at once.
		r.hm.leave(min(r.opts.redisTO, max(time.Until(deadline), closeGrace)))
	case <-t.C:
		// A goroutine still waits on a call of its own, bounded by its own
		// timeout: the leave, which needs the monitor stopped, is made once
		// it has.
		go func() {
			<-stopped
			r.hm.leave(r.opts.redisTO)
		}()
	}
	// Whether or not a goroutine still runs: L1 emptied, the Registry
	// answers ErrClosed even for a service it held (left to run after
	// Close, a lookup of one answered from L1 for its freshness window).
	// What such a goroutine loads or releases then leaves nothing (put, the
	// transport's closeIdle at a body's end).
	r.httpc.CloseIdleConnections()
	r.pools.closeIdle(nil)
	r.l1.close()
	r.stopMetrics()
	return errors.Join(errs...)
}

// closeGrace is the least time each of Close's steps after the
// deregistrations gets (waiting for its goroutines and callbacks, the
// health monitor's leave), however late the deregistrations end: enough
// for a Redis that answers to be written (a write-through, the leave) and
// for a callback that heeds its context to return.
const closeGrace = 100 * time.Millisecond

// CloseSlack is how long Registry.Close may take past its close timeout
// (WithCloseTimeout), counted from its call: the least time each of its
// two last steps gets (see Registry.Close).
const CloseSlack = 2 * closeGrace

// Services lists every service the database knows, with its revision and
// counts of live and expired instances, read from the database. A service
// left with nothing is listed until the reaper deletes it (WithServiceReap).
func (r *Registry) Services(ctx context.Context) ([]ServiceInfo, error) {
	if ctx == nil {
		return nil, nilContext("Services")
	}
	if r.closed.Load() {
		return nil, ErrClosed
	}
	infos, err := r.store.Services(ctx, r.clock.Now())
	r.noteStoreResult("services", err)
	return infos, err
}

// Deregister removes an instance's row at once, wherever it was registered
// from. If this Registry holds its Registration, that stops renewing too
// (one that a Register under way in this process is writing is waited for,
// and stopped). A
// process that still holds the Registration registers the instance again at
// its next renewal (within TTL/3), as after any loss of its row: to take a
// live instance out, drain or deregister it through its Registration, in
// its own process. Deregister is for the rows of processes that died.
func (r *Registry) Deregister(ctx context.Context, service, id string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if ctx == nil {
		return nilContext("Deregister")
	}
	if err := core.ValidateServiceName(service); err != nil {
		return err
	}
	if err := core.ValidateInstanceID(id); err != nil {
		return err
	}
	// After any Register of the instance under way in this process: one
	// whose write was on its way had no registration listed yet, and the
	// row was deleted under it; it then listed its registration, whose
	// next renewal wrote the instance back.
	l, err := r.lockInstance(ctx, instanceKey(service, id))
	if err != nil {
		return err
	}
	defer r.unlockInstance(l)
	if own := r.registrationsOf(service, id); len(own) > 0 {
		return own[0].Deregister(ctx) // one: Registers of an instance replace each other
	}
	_, err = r.deregisterRow(ctx, service, id)
	return err
}

// deregisterRow deletes an instance's row and makes the change visible
// (afterWrite); it returns the service's new revision.
func (r *Registry) deregisterRow(ctx context.Context, service, id string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err // nothing deleted: not a write of unknown outcome (see Register)
	}
	rev, err := r.store.Deregister(ctx, service, id)
	if err := r.written(ctx, "deregister", service, rev, wroteGone(id), err); err != nil {
		return 0, err
	}
	return rev, nil
}

// Store returns the Store the Registry reads and writes.
func (r *Registry) Store() Store { return r.store }

// Stats returns what the Registry did since New.
func (r *Registry) Stats() Stats {
	r.foldMu.RLock()
	defer r.foldMu.RUnlock()
	s := Stats{
		StoreReads: r.ctr.storeReads.Load(), StoreErrors: r.ctr.storeErrs.Load(),
		Stale: r.ctr.stale.Load(), NotFound: r.ctr.notFound.Load(),
		Invalidations: r.ctr.invalidated.Load(), Refreshes: r.ctr.refreshes.Load(), Pushed: r.ctr.pushed.Load(), Resyncs: r.ctr.resyncs.Load(),
		SelfPreservations: r.ctr.preservations.Load(),
		ChecksPassed:      r.ctr.checks[0].Load(), ChecksWarned: r.ctr.checks[1].Load(), ChecksFailed: r.ctr.checks[2].Load(),
	}
	s.Lookups[LayerL1] = r.ctr.l1Hits.load()
	s.Lookups[LayerL2] = r.ctr.l2.Load()
	s.Lookups[LayerL3] = r.ctr.l3.Load()
	s.PanicPicks, s.Ejections = r.ctr.panics.Load(), r.ctr.ejections.Load() // of forgotten services
	now := r.clock.Now().UnixNano()
	r.states.Range(func(_, v any) bool {
		st := v.(*svcState)
		if m := st.met.Load(); m != nil {
			s.Lookups[LayerL1] += m.l1.load()
			s.Lookups[LayerL2] += m.l2.Load()
			s.Lookups[LayerL3] += m.l3.Load()
		}
		for i := range s.Picks {
			s.Picks[i] += st.picks[i].Load() // metrics on
		}
		s.PanicPicks += st.panics.Load()
		s.Ejections += st.ejections.Load()
		s.Suspects += r.suspectsNow(st, now)
		return true
	})
	for k := range r.picks { // metrics off
		for i := range s.Picks {
			s.Picks[i] += r.picks[k][i].Load()
		}
	}
	if r.l2 != nil {
		l2 := r.l2.Stats()
		s.L2Hits, s.L2Misses, s.L2Errors = l2.Hits, l2.Misses+l2.DecodeErrors+l2.VersionMisses, l2.Errors
		s.L2DecodeErrors = l2.DecodeErrors + l2.VersionMisses + l2.PushedDecodeErrors + l2.BadMessages
		s.L2Writes, s.L2StaleWrites, s.Published, s.Received = l2.Writes, l2.StaleWrites, l2.Published, l2.Received
	}
	if r.hm != nil && r.hm.share != nil {
		s.L2DecodeErrors += r.hm.share.corrupt.Load()
	}
	return s
}

// noteStoreResult logs the database going away and coming back, once each,
// and counts a failed call in StoreErrors.
func (r *Registry) noteStoreResult(op string, err error) {
	if err == nil {
		r.noteStoreOK()
	} else if errors.Is(err, ErrUnavailable) {
		r.ctr.storeErrs.Add(1)
		r.noteStoreErr(op, err)
	}
}

// countStoreErr counts a failed database call in StoreErrors, for the calls
// whose failure is not noted otherwise (noteStoreResult).
func (r *Registry) countStoreErr(err error) {
	if errors.Is(err, ErrUnavailable) {
		r.ctr.storeErrs.Add(1)
	}
}

func (r *Registry) noteStoreErr(op string, err error) {
	if !errors.Is(err, ErrUnavailable) || r.storeDown.Load() {
		return
	}
	// Under outMu: a call that answered while this one recorded its outage
	// ended it before it began (the flag read, the outage stored), and left
	// an outage with no end that held every lease ended since.
	r.outMu.Lock()
	if r.storeDown.Load() {
		r.outMu.Unlock()
		return
	}
	now := r.clock.Now().UnixNano()
	// Leases could not be renewed from the last call that answered on,
	// or for at most one lease TTL before this one failed.
	from := max(r.storeOKAt.Load(), now-int64(r.opts.leaseTTL))
	r.lostAt = from
	// A failure before a live registration could have renewed since the
	// database answered (a flapping database, or a call that failed
	// before it returned and ended after) is the same outage: leases that
	// ended in the first part are still held. A later one is an outage of
	// its own, and the last one's leases stay held until its own grace
	// ends: joined to it whenever it came within the grace, failures now
	// and then (one call in 20 s) made one outage that never ended, and
	// every instance that died since stayed a suspect, never reaped.
	var earlier *outage
	if o := r.outage.Load(); o != nil {
		if now < o.to+r.groupWindow() {
			from, earlier = min(from, o.from), o.earlier
		} else {
			earlier = o
		}
		earlier = earlier.inForce(now, r.outageKeep())
	}
	r.outage.Store(&outage{from: from, earlier: earlier})
	r.storeDown.Store(true)
	r.outMu.Unlock()
	r.log.Warn("discovery: database lost; serving cached data", zap.String("op", op), zap.Error(err))
}

func (r *Registry) noteStoreOK() {
	now := r.clock.Now().UnixNano()
	r.storeOKAt.Store(now)
	if !r.storeDown.Load() {
		return
	}
	r.outMu.Lock()
	if !r.storeDown.Load() {
		r.outMu.Unlock()
		return
	}
	from := now
	var earlier *outage
	if o := r.outage.Load(); o != nil {
		from, earlier = o.from, o.earlier
	}
	r.outage.Store(&outage{from: from, to: now, earlier: earlier})
	r.storeDown.Store(false)
	lost := r.lostAt
	r.outMu.Unlock()
	r.log.Info("discovery: database back", zap.Duration("down", time.Duration(now-lost)))
	r.resettle()
}

// probeStore asks the database, in the background, whether it answers
// again, for a lookup of service that Redis answered while it is known down;
// at most one probe a second (retryAfterFailure). A process whose lookups
// Redis answers, with no registration to renew and its reaper off, made no
// other call to the database: it never learnt that an outage had ended,
// and held every lease that ended since it began as a suspect for good
// (heldByOutage), with its lookups served stale at once and its writes of
// unknown outcome never settled. The probe reads the service's revision
// (one key's read); "not found" is an answer too. One at a time: on a
// black-holed database each waits out the load timeout.
func (r *Registry) probeStore(service string) {
	now := r.now.nanos()
	last := r.probedAt.Load()
	if now-last < int64(retryAfterFailure) || !r.probedAt.CompareAndSwap(last, now) {
		return
	}
	if !r.probing.CompareAndSwap(false, true) {
		return
	}
	started := r.spawn(func() {
		defer r.probing.Store(false)
		ctx, cancel := ownTimeout(r.ctx, r.opts.loadTO)
		defer cancel()
		_, err := r.revisionOf(ctx, service)
		if r.ctx.Err() != nil {
			return // Close ended it: the database did not fail
		}
		if errors.Is(err, ErrNotFound) {
			err = nil
		}
		r.noteStoreResult("probe", err)
	})
	if !started {
		r.probing.Store(false)
	}
}

// reapServices deletes the services left with nothing for the service reap
// delay (WithServiceReap), if the store can, and announces the deletions
// as changes: every process drops what it holds of them (its next lookup
// finds none), and a name registered again comes at a higher revision.
func (r *Registry) reapServices() {
	sr, ok := r.store.(core.ServiceReaper)
	if !ok || r.opts.serviceReap <= 0 {
		return
	}
	ctx, cancel := ownTimeout(r.ctx, r.opts.dbTO)
	defer cancel()
	now := r.clock.Now()
	changes, err := sr.ReapServices(ctx, now, now.Add(-r.opts.serviceReap))
	r.noteStoreResult("reap services", err)
	r.afterWrites(ctx, changes)
}

// reapLoop deletes rows whose lease ended long ago and announces the
// changes. Every Registry runs it; the store lets one work at a time.
func (r *Registry) reapLoop() {
	t := r.clock.NewTimer(jitter(r.opts.reapEvery))
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C():
		}
		ctx, cancel := ownTimeout(r.ctx, r.opts.dbTO) // a write, not a lookup's load: WithDatabaseTimeout
		changes, err := r.store.Reap(ctx, r.reapBefore(r.clock.Now().UnixNano()))
		r.noteStoreResult("reap", err)
		r.afterWrites(ctx, changes)
		cancel()
		r.reapServices()
		t.Reset(jitter(r.opts.reapEvery))
	}
}
