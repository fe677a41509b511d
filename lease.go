package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Registration is a registered instance whose lease this process keeps
// alive: its own goroutine renews the lease every TTL/3, registers the
// instance again if its row vanished or its lease lapsed (a database restore,
// a long pause), and retries with backoff while the database is down. Close
// or Deregister ends it.
type Registration struct {
	r       *Registry
	service string
	id      string

	// writing serialises this registration's writes (renewals, Update,
	// draining, deregistering): a one-slot semaphore, so that a writer waits
	// for another only as long as its context allows. mu guards inst, rev
	// and gone and is held only to read or set them, never across a call
	// to a backend: a renewal stuck on a database that stopped answering
	// held the one mutex for its whole timeout, and with it Instance,
	// Revision, SetWeight whatever its deadline, and every step of Close.
	writing core.Slot
	mu      sync.Mutex
	inst    core.Instance
	rev     int64
	gone    bool
	removed bool // deregistered (or replaced): a Deregister has nothing left to do
	// markedAt is when this registration last wrote the instance draining
	// after it was not (Register, Update, a drain mark): the other
	// processes have heard of it by then plus the propagation bound, which
	// draining it again waits for only what is left of (markDraining).
	markedAt time.Time
	// unsure is what the row holds if a write of this registration whose
	// outcome is unknown (an Update, a drain mark, a Register that was to
	// replace it) landed: the next renewal takes it as the registration's
	// own if the row holds it (renew). Any later write, a renewal
	// included, clears it.
	unsure *core.Instance
	opts   regOptions

	ctx    context.Context // ends when this registration stops
	cancel context.CancelFunc
	done   chan struct{}

	cfg regConfig // the service's configuration as it knows it (configfunc.go)
	// sending serialises the sends of configurations owed to the instance
	// put into service (sendOwedConfig), so that they go out in order.
	sending core.Slot

	// checking is set while a call of its check function (WithCheckFunc)
	// runs, so that one stuck past its timeout is not called again.
	checking atomic.Bool
}

// Register registers an instance and keeps its lease alive until the
// Registration or the Registry is closed. The instance is validated first
// (errors match ErrInvalid and name the field; nothing is written; a nil
// ctx is refused so too, here and by the Registration's methods); its ID
// defaults to Host:Port, and its Host is stored in one spelling (an IP
// address canonical, "2001:db8::1" however written; a DNS name in lower
// case: see Instance), so that one host written two ways is one instance. Registering an ID that exists replaces it in place;
// a registration of it in this process is closed (its methods return
// ErrClosed). One in another process is not, and it cannot tell the row
// written over from a database restored from an older backup: each of the
// two writes its own fields back at its renewals (every TTL/3, each a new
// revision, logged as "lease lost"), and lookups show one, then the other.
// Give every process's instances IDs of their own (the default, Host:Port,
// is one while hosts are reachable addresses).
// Options give the in-process parts of the registration (a router
// instance's handler and health check, a configuration callback). The
// service's configuration current at registration is in Config.
//
// Status may be left zero or set to StatusDraining: an instance registered
// draining is listed but not picked (a standby), until an Update sets its
// Status back to StatusUnknown. UpdateConfig skips a standby; the Update
// that puts an HTTP standby into service sends it the configuration stored
// meanwhile (see Update). Other statuses are this process's view of an
// instance, not something to store, and are refused.
func (r *Registry) Register(ctx context.Context, in Instance, opts ...RegisterOption) (*Registration, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if ctx == nil {
		return nil, nilContext("Register")
	}
	if !r.beginRegister() {
		return nil, ErrClosed
	}
	counted := true // until listed among the registrations Close ends
	defer func() {
		if counted {
			r.regMu.Lock()
			r.endRegister()
			r.regMu.Unlock()
		}
	}()
	var ro regOptions
	for _, o := range opts {
		if o != nil {
			o.applyRegister(&ro)
		}
	}
	inst := in.Clone()
	if err := core.Normalize(&inst); err != nil {
		return nil, err
	}
	if err := checkRegOptions(&inst, &ro); err != nil {
		return nil, err
	}
	if err := checkHealthPath(&inst, ""); err != nil {
		return nil, err
	}
	// A registration of the same instance in this process is replaced:
	// its writes wait until this one is written, and then it is closed,
	// so that none of them can overwrite or delete the instance that
	// replaced it (a replaced handle's SetWeight did both). Registers of
	// one instance run one at a time: two at once each found no other,
	// and both renewed it, so a Deregister stopped one and the other's
	// next renewal registered it again.
	l, err := r.lockInstance(ctx, instanceKey(inst.Service, inst.ID))
	if err != nil {
		return nil, err
	}
	defer r.unlockInstance(l)
	olds := r.registrationsOf(inst.Service, inst.ID)
	for i, old := range olds {
		if err := old.writing.Lock(ctx); err != nil {
			for _, o := range olds[:i] {
				o.writing.Unlock()
			}
			return nil, err
		}
	}
	if r.closed.Load() {
		// Close began while this waited for the instance: nothing to
		// write, and nothing to remove after.
		for _, old := range olds {
			old.writing.Unlock()
		}
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		// Ended before the write began (Slot.Lock takes a free slot
		// whatever the context): nothing is written. Left to the store,
		// its error was one of unknown outcome, and the service was read
		// again and announced as if it might have changed.
		for _, old := range olds {
			old.writing.Unlock()
		}
		return nil, err
	}
	now := r.clock.Now()
	inst.RegisteredAt, inst.ExpiresAt = now, now.Add(r.opts.leaseTTL) // Status: unknown or draining (Normalize)
	for _, old := range olds {
		// The instance was registered first then: the store keeps that
		// time over the row's, and lookups show it. With now, Instance
		// showed another, and a row gone meanwhile (a restore) got it.
		old.mu.Lock()
		if at := old.inst.RegisteredAt; at.Before(inst.RegisteredAt) {
			inst.RegisteredAt = at
		}
		old.mu.Unlock()
	}
	rev, err := r.store.Register(ctx, &inst)
	switch {
	case err == nil:
		for _, old := range olds {
			old.mu.Lock()
			old.gone, old.removed = true, true // replaced: never delete the new one's row
			old.mu.Unlock()
		}
	case outcomeUnknown(err):
		// The replacement may have landed: each registration it was to
		// replace takes it as its own if the row holds it (renew), as an
		// Update of unknown outcome is taken, before a renewal can run.
		// Its renewal found the row different and wrote its own fields
		// back over the landed ones.
		for _, old := range olds {
			u := inst.Clone()
			old.mu.Lock()
			old.unsure = &u
			old.mu.Unlock()
		}
	}
	for _, old := range olds {
		old.writing.Unlock()
	}
	if err := r.written(ctx, "register", inst.Service, rev, wroteRow(&inst), err); err != nil {
		return nil, err
	}

	gctx, cancel := context.WithCancel(r.ctx)
	g := &Registration{r: r, service: inst.Service, id: inst.ID, inst: inst, rev: rev, opts: ro, ctx: gctx, cancel: cancel,
		done: make(chan struct{}), writing: core.NewSlot(), sending: core.NewSlot()}
	if inst.Status == core.StatusDraining { // a standby: marked as it was written
		g.markedAt = now
	}
	for _, old := range olds {
		old.stop()
	}
	r.regMu.Lock()
	for _, old := range olds {
		delete(r.regs, old)
	}
	if r.closed.Load() { // Close began and has taken (or will take) its snapshot without g
		r.regMu.Unlock()
		cancel()
		dctx, dcancel := ownTimeout(context.WithoutCancel(ctx), r.opts.closeTO)
		defer dcancel()
		_, _ = r.deregisterRow(dctx, inst.Service, inst.ID)
		return nil, ErrClosed
	}
	r.regs[g] = struct{}{}
	counted = false
	r.endRegister()
	r.regMu.Unlock()
	// The first renewal's timer is set before Register returns, so that a
	// test that counts a fake clock's timers then counts it (BlockUntil),
	// and a step of that clock cannot come before it is set.
	t := r.clock.NewTimer(g.untilRenewal(r.opts.leaseTTL / 3))
	if !r.spawn(func() { g.keepAlive(t) }) {
		t.Stop()
		cancel()
		close(g.done)
	}
	r.startConfig(ctx, g)
	return g, nil
}

// beginRegister counts a Register call under way, for Close to wait for,
// unless the Registry is closing; it reports whether it did. endRegister,
// under regMu, ends what it began: once the registration is listed (Close
// ends it with the others), or the call has returned.
func (r *Registry) beginRegister() bool {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if r.closed.Load() {
		return false
	}
	r.registering++
	return true
}

func (r *Registry) endRegister() {
	if r.registering--; r.registering == 0 && r.registersDone != nil {
		close(r.registersDone)
		r.registersDone = nil
	}
}

// registrationsOf returns this process's registrations of an instance.
func (r *Registry) registrationsOf(service, id string) []*Registration {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	var out []*Registration
	for g := range r.regs {
		if g.service == service && g.id == id {
			out = append(out, g)
		}
	}
	return out
}

// Instance returns the instance as registered (a copy). Its RegisteredAt
// is when this process first registered the instance (a Register that
// replaced a registration of it keeps that one's); a row of the same ID
// left by another process (one that died, not yet reaped) keeps its own
// time in the store, which lookups show instead.
func (g *Registration) Instance() Instance {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inst.Clone()
}

// Revision returns the service revision of the latest write of this
// registration.
func (g *Registration) Revision() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rev
}

// Done is closed when the registration stops renewing its lease.
func (g *Registration) Done() <-chan struct{} { return g.done }

// Update changes the registered instance (weight, metadata, tags, ...) in
// place: fn edits a copy, which is validated and written with a new revision.
// Service and ID cannot change. fn reads the weight as stored (0 for an
// instance out of selection, which stays 0 if fn leaves it); a weight fn
// sets to 0 means DefaultWeight, as in Register, and ZeroWeight (or
// SetWeight(ctx, 0)) takes the instance out of selection. fn may read the
// Registration (Instance, Revision) but not write it: a write waits for this
// one.
//
// An HTTP instance that this Update takes out of draining (a standby put
// into service) is then sent the service's configuration, if it is newer
// than the one the registration knows (Config): UpdateConfig skipped it
// while it was draining. It is sent as UpdateConfig sends it (POST
// /admin/reload-config, same headers, token, timeout and attempts), after
// the write and within ctx, so Update returns once it is delivered or has
// failed (three 10 s attempts at most by default); Config moves to it once
// the instance accepted it.
// A failure is logged, not returned (the instance is in service): the next
// Update of the registration that leaves it in service tries again.
//
// An Update that fails with its outcome unknown (its context ended, or the
// database failed, while the write was on its way) may have landed: if the
// row holds it, the registration takes it as its own at its next renewal
// (Instance shows it), rather than write its earlier fields over it.
func (g *Registration) Update(ctx context.Context, fn func(*Instance)) error {
	if ctx == nil {
		return nilContext("Update")
	}
	owed, err := g.update(ctx, fn)
	if err == nil && owed {
		g.sendOwedConfig(ctx)
	}
	return err
}

// update makes Update's write; owed says whether the instance is an HTTP
// one in service that may lack configurations stored while it was draining.
func (g *Registration) update(ctx context.Context, fn func(*Instance)) (owed bool, err error) {
	if fn == nil {
		return false, &ValidationError{Field: "update func", Value: "nil", Reason: "must not be nil"}
	}
	cur, _, err := g.lockLive(ctx)
	if err != nil {
		return false, err
	}
	defer g.writing.Unlock()
	next := cur.Clone()
	fn(&next)           // reads the weight as stored: 0, not ZeroWeight (a ramp from 0 by 25 reached 24)
	next = next.Clone() // fn may have assigned the caller's own slice or map
	if next.Weight == 0 && cur.Weight == 0 {
		next.Weight = ZeroWeight // a zero left alone stays zero through Normalize
	}
	if next.Service != g.service || next.ID != g.id {
		return false, &ValidationError{Field: "instance id", Value: next.Service + "/" + next.ID, Reason: "Update cannot change the service or ID"}
	}
	if err := core.Normalize(&next); err != nil {
		return false, err
	}
	if err := checkRegOptions(&next, &g.opts); err != nil {
		return false, err // what Register refuses (a router's callbacks on an HTTP instance), Update does too
	}
	if err := checkHealthPath(&next, cur.HealthPath); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err // nothing written: not a write of unknown outcome (see Register)
	}
	next.RegisteredAt, next.ExpiresAt = cur.RegisteredAt, g.r.clock.Now().Add(g.r.opts.leaseTTL)
	rev, err := g.r.store.Register(ctx, &next)
	g.r.noteStoreResult("register", err)
	if err != nil {
		g.mayHaveWritten(next, err)
		return false, err
	}
	g.set(next, rev)
	g.r.afterWriteOf(ctx, core.Change{Service: g.service, Revision: rev}, wroteRow(&next))
	return g.cfg.oweIfInService(cur, next), nil
}

// state returns the instance (not a copy), its revision and whether the
// registration is gone. The instance is never changed in place, only
// replaced.
// lockLive takes the registration's write slot for a write of the
// caller's (Update, a drain mark) and returns its state; the caller
// unlocks. A registration that is gone is ErrClosed, before and after the
// wait: not the caller's context's error while another call holds the
// slot.
func (g *Registration) lockLive(ctx context.Context) (core.Instance, int64, error) {
	if _, _, gone := g.state(); gone {
		return core.Instance{}, 0, ErrClosed
	}
	if err := g.writing.Lock(ctx); err != nil {
		return core.Instance{}, 0, err
	}
	cur, rev, gone := g.state()
	if gone {
		g.writing.Unlock()
		return core.Instance{}, 0, ErrClosed
	}
	return cur, rev, nil
}

func (g *Registration) state() (core.Instance, int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inst, g.rev, g.gone
}

// set records a write, and when it marked the instance draining.
func (g *Registration) set(inst core.Instance, rev int64) {
	g.mu.Lock()
	if inst.Status == core.StatusDraining && g.inst.Status != core.StatusDraining {
		g.markedAt = g.r.clock.Now()
	}
	g.inst, g.rev, g.unsure = inst, rev, nil
	g.mu.Unlock()
}

// mayHaveWritten keeps next, which a write that failed with err tried to
// store, for the next renewal to take as the registration's own if the row
// holds it: with an error of unknown outcome (outcomeUnknown) it may have
// landed, and it is announced as possibly committed (afterFailedWrite).
// Renewed with the fields from before it, the row no longer matched, and the
// renewal registered them again: a write that had landed, seen by every
// process, undone within TTL/3 with a new revision, though no one asked.
// It first hands the failure to afterFailedWrite, as every failed write does.
func (g *Registration) mayHaveWritten(next core.Instance, err error) {
	g.r.afterFailedWrite(g.service, err)
	if !outcomeUnknown(err) {
		return
	}
	g.mu.Lock()
	g.unsure = &next
	g.mu.Unlock()
}

// unsureWrite returns what the row holds if a write of unknown outcome
// landed, or nil.
func (g *Registration) unsureWrite() *core.Instance {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unsure
}

// dropUnsure forgets u, which the row does not hold (the write did not
// land, or was written over since), unless a write replaced it meanwhile.
func (g *Registration) dropUnsure(u *core.Instance) {
	g.mu.Lock()
	if g.unsure == u {
		g.unsure = nil
	}
	g.mu.Unlock()
}

// SetWeight changes the instance's weight; 0 takes it out of selection
// without deregistering it.
func (g *Registration) SetWeight(ctx context.Context, w int) error {
	if ctx == nil { // Update's check would name Update
		return nilContext("SetWeight")
	}
	if w < 0 || w > MaxWeight {
		return &ValidationError{Field: "weight", Value: itoa(w), Reason: "must be 0..10000"}
	}
	return g.Update(ctx, func(in *Instance) {
		in.Weight = w
		if w == 0 {
			in.Weight = ZeroWeight
		}
	})
}

// Deregister stops renewing and removes the instance now. Calling it again
// returns nil. One that fails (the database down, its context ended) has
// stopped the renewals all the same: call it again (or Close) to remove the
// row; Update then returns ErrClosed.
func (g *Registration) Deregister(ctx context.Context) error {
	err := g.deregister(ctx)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Close drains the instance for at most the close-drain timeout (1 s, and
// half the close timeout; see WithCloseDrain and Drain), then deregisters
// it, within the Registry's close timeout.
func (g *Registration) Close() error {
	ctx, cancel := ownTimeout(context.Background(), g.r.opts.closeTO)
	defer cancel()
	return errors.Join(g.r.closeRegistrations(ctx, []*Registration{g})...)
}

func (g *Registration) deregister(ctx context.Context) error {
	if ctx == nil { // before the renewals stop
		return nilContext("Deregister")
	}
	g.stop()
	// Gone from here on, whether or not the row goes: nothing renews it
	// now. Marked only once the writes were had, an Update after a
	// Deregister whose context ended first was let through, and the caller
	// took for live an instance whose lease then ran out.
	g.mu.Lock()
	g.gone = true
	removed := g.removed
	g.mu.Unlock()
	if removed { // nothing to wait for: not the caller's context's error while another call holds the slot
		return ErrClosed
	}
	if err := g.writing.Lock(ctx); err != nil {
		return err
	}
	defer g.writing.Unlock()
	g.mu.Lock()
	removed = g.removed
	g.mu.Unlock()
	if removed {
		return ErrClosed
	}
	rev, err := g.r.deregisterRow(ctx, g.service, g.id)
	if err != nil && !errors.Is(err, ErrNotFound) { // NotFound: already gone (reaped, or deregistered elsewhere)
		// Not removed: calling Deregister again (or Close) retries. It
		// stays among the Registry's registrations meanwhile, so that a
		// new Register of the instance replaces it, and its retry cannot
		// delete the new one's row.
		return err
	}
	g.mu.Lock()
	g.removed = true
	if err == nil {
		g.rev = rev
	}
	g.mu.Unlock()
	g.r.regMu.Lock()
	delete(g.r.regs, g)
	g.r.regMu.Unlock()
	return nil
}

// stop ends the renewals and waits for the goroutine.
func (g *Registration) stop() {
	g.cancel()
	<-g.done
}

// keepAlive renews the lease every TTL/3 until stopped, first when t
// fires.
func (g *Registration) keepAlive(t core.Timer) {
	defer close(g.done)
	ctx := g.ctx
	interval := g.r.opts.leaseTTL / 3
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		err := g.renew()
		next := interval
		switch {
		case err == nil:
			if failures > 0 {
				g.r.log.Info("discovery: lease renewal recovered", zap.String("service", g.service), zap.String("id", g.id), zap.Int("failures", failures))
			}
			failures = 0
			next = g.untilRenewal(interval)
		case ctx.Err() != nil:
			return
		default:
			failures++
			if failures == 1 {
				g.r.log.Warn("discovery: lease renewal failed; retrying", zap.String("service", g.service), zap.String("id", g.id), zap.Error(err))
			}
			next = g.retryIn(failures, interval)
		}
		t.Reset(next)
	}
}

// untilRenewal returns how long to wait for the next renewal: an interval,
// unless less than two are left of the lease, when the renewal comes one
// interval (the bound of its call) before the lease ends, or at once. The
// process was stopped (SIGSTOP, a VM paused) or starved while the write
// (Register's, or a renewal's) was under way: made an interval later, the
// renewal came after the lease had ended, and the instance stayed out of
// every lookup until it registered again.
func (g *Registration) untilRenewal(interval time.Duration) time.Duration {
	cur, _, gone := g.state()
	if gone { // replaced or deregistered: being stopped
		return interval
	}
	left := cur.ExpiresAt.Sub(g.r.clock.Now())
	return max(min(interval, left-interval), 0)
}

// retryIn returns how long to wait after the failures-th failed renewal in
// a row: the backoff, but while the lease runs no longer than half of what
// is left of it (and no shorter than the backoff's first step), so that a
// database back before the lease ends is met by a renewal before then.
// With the backoff alone, an outage from the first renewal (5 s) to 12 s of
// a 15 s lease met its next attempt at 16.2 s: the lease ended, and the
// instance dropped out of every lookup until it registered again.
func (g *Registration) retryIn(failures int, interval time.Duration) time.Duration {
	next := backoff(failures, interval)
	cur, _, gone := g.state()
	if gone {
		return next
	}
	if left := cur.ExpiresAt.Sub(g.r.clock.Now()); left > 0 {
		next = min(next, max(left/2, backoff(1, interval)))
	}
	return next
}

// attemptTimeout returns how long a renewal may wait for the database: an
// interval, but while the lease runs no more than half of what is left of
// it (and no less than the backoff's first step), so that the next attempt
// that retryIn promises for each half of it can still start before it
// ends. A call hung on a pooled connection that a failover or a firewall
// left half-open waits for its deadline, and the next call may take
// another: with an interval each, two of them in a row ended the lease,
// though the database answered new connections all along.
func (g *Registration) attemptTimeout(interval time.Duration) time.Duration {
	cur, _, gone := g.state()
	if gone {
		return interval
	}
	if left := cur.ExpiresAt.Sub(g.r.clock.Now()); left > 0 {
		return min(interval, max(left/2, 200*time.Millisecond))
	}
	return interval // ended: the registration again gets the whole interval
}

// renew moves the lease forward, or registers the instance again when its
// row is gone, its lease lapsed, or (with a store that can tell: an
// InstanceRenewer) it holds other fields than this registration wrote: a
// database restored from an older backup.
func (g *Registration) renew() error {
	r := g.r
	ctx, cancel := ownTimeout(g.ctx, g.attemptTimeout(r.opts.leaseTTL/3))
	defer cancel()
	if err := g.writing.Lock(ctx); err != nil {
		return err
	}
	defer g.writing.Unlock()
	cur, rev, gone := g.state()
	if gone {
		return nil
	}
	now := r.clock.Now()
	var (
		err  error
		keep *core.Instance // a write of unknown outcome still to be read back
	)
	if rn, ok := r.store.(core.InstanceRenewer); ok {
		next := cur // a copy: cur.ExpiresAt is set below only once renewed
		next.ExpiresAt = now.Add(r.opts.leaseTTL)
		err = rn.RenewInstance(ctx, &next, now)
		if u := g.unsureWrite(); u != nil && errors.Is(err, ErrNotFound) {
			// A write of unknown outcome landed if the row holds it:
			// then it is this registration's, not something to undo.
			alt := u.Clone()
			alt.ExpiresAt = next.ExpiresAt
			switch err = rn.RenewInstance(ctx, &alt, now); {
			case err == nil:
				cur = alt
				if v, rerr := r.revisionOf(ctx, g.service); rerr == nil {
					rev = max(rev, v) // at least the landed write's
				}
			case errors.Is(err, ErrNotFound):
				// Its lease may have ended (a database away for longer
				// than it): the row may hold the write all the same, and
				// it is what is registered again. Registered from cur, a
				// landed write was undone after every outage that
				// outlived its lease.
				switch held, _, lerr := g.rowHolds(ctx, u); {
				case lerr != nil:
					err = lerr // u is kept for the next try
				case held:
					cur = u.Clone()
				default:
					g.dropUnsure(u)
				}
			}
		}
	} else {
		err = r.store.Renew(ctx, g.service, g.id, now, now.Add(r.opts.leaseTTL))
		// A Store that cannot compare the row (no InstanceRenewer) renews
		// it whatever it holds: a write of unknown outcome is then read
		// back, once. Renewed as it was, the registration kept the fields
		// from before a landed Update, and wrote them back over it when
		// its lease was next lost.
		if u := g.unsureWrite(); u != nil && (err == nil || errors.Is(err, ErrNotFound)) {
			switch held, v, lerr := g.rowHolds(ctx, u); {
			case lerr != nil && err == nil:
				keep = u // renewed all the same: read again at the next renewal
			case lerr != nil:
				err = lerr // u is kept for the next try
			case held:
				cur, rev = u.Clone(), max(rev, v)
			default:
				g.dropUnsure(u)
			}
		}
	}
	if err == nil {
		cur.ExpiresAt = now.Add(r.opts.leaseTTL)
		g.set(cur, rev)
		if keep != nil {
			g.mu.Lock()
			if g.unsure == nil {
				g.unsure = keep
			}
			g.mu.Unlock()
		}
		r.noteStoreOK()
		return nil
	}
	if !errors.Is(err, ErrNotFound) {
		r.noteStoreResult("renew", err)
		return err
	}
	inst := cur.Clone()
	inst.ExpiresAt = now.Add(r.opts.leaseTTL)
	rev, err = r.store.Register(ctx, &inst)
	r.noteStoreResult("register", err)
	if err != nil {
		r.afterFailedWrite(g.service, err)
		return err
	}
	g.set(inst, rev)
	r.log.Info("discovery: lease lost; registered again", zap.String("service", g.service), zap.String("id", g.id), zap.Int64("revision", rev))
	r.afterWriteOf(ctx, core.Change{Service: g.service, Revision: rev}, wroteRow(&inst))
	return nil
}

// rowHolds reports whether the instance's row, whatever its lease, holds u,
// and the revision of the service read.
func (g *Registration) rowHolds(ctx context.Context, u *core.Instance) (bool, int64, error) {
	r := g.r
	r.ctr.storeReads.Add(1)
	svc, err := r.store.Load(ctx, g.service)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, 0, nil
	case err != nil:
		return false, 0, err
	}
	in := svc.Instance(g.id)
	return in != nil && core.SameRegistration(in, u), svc.Revision, nil
}

// backoff is 200 ms doubling per failure, capped at limit, with jitter.
func backoff(failures int, limit time.Duration) time.Duration {
	d := 200 * time.Millisecond << min(failures-1, 10)
	return jitter(min(d, limit))
}

// jitter spreads d by +-10%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

func itoa(i int) string { return strconv.Itoa(i) }

// nilContext is the error of a call given a nil context, checked before
// anything changes: found by the backend's call, its panic left the
// registration's writes held (Register), or its renewals stopped
// (Deregister), or crashed the process from a library goroutine (Watch).
// A lookup answered from L1 needs no context and takes a nil one.
func nilContext(call string) error {
	return &ValidationError{Field: "context", Value: "nil", Reason: call + " needs a context (context.Background() for one that never ends)"}
}

// instanceKey is an instance's key for lockInstance.
func instanceKey(service, id string) string { return service + "\x00" + id }

// lockInstance serialises this process's Register calls of one instance
// (and Registry.Deregister's); unlockInstance ends what it returned.
func (r *Registry) lockInstance(ctx context.Context, key string) (*instLock, error) {
	r.regMu.Lock()
	if r.regLocks == nil {
		r.regLocks = map[string]*instLock{}
	}
	l := r.regLocks[key]
	if l == nil {
		l = &instLock{key: key, slot: core.NewSlot()}
		r.regLocks[key] = l
	}
	l.refs++
	r.regMu.Unlock()
	if err := l.slot.Lock(ctx); err != nil {
		r.releaseInstance(l)
		return nil, err
	}
	return l, nil
}

func (r *Registry) unlockInstance(l *instLock) {
	l.slot.Unlock()
	r.releaseInstance(l)
}

// releaseInstance drops a caller's reference to l, and l once unreferenced.
func (r *Registry) releaseInstance(l *instLock) {
	r.regMu.Lock()
	if l.refs--; l.refs == 0 {
		delete(r.regLocks, l.key)
	}
	r.regMu.Unlock()
}

type instLock struct {
	key  string
	slot core.Slot
	refs int // Register calls holding or waiting for it; under regMu
}
