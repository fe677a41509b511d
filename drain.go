package discovery

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Draining defaults.
const (
	// DefaultPropagationDelay is how long a change message takes, at most,
	// to reach every other process and be applied there: one pub/sub
	// delivery (about 0.1 ms on a LAN) and one refresh from Redis (one GET,
	// about 0.1 ms), with a wide margin for a loaded host.
	DefaultPropagationDelay = 100 * time.Millisecond
	// DefaultCloseDrain bounds the drain that Close makes before it
	// deregisters.
	DefaultCloseDrain = time.Second
)

// WithPropagationDelay sets how long a change takes to reach every other
// process once it is announced (100 ms): Drain waits this long after the
// draining mark is announced before it deregisters. Raise it for a slow
// network; see Registration.Drain.
func WithPropagationDelay(d time.Duration) Option {
	return optionFunc(func(o *options) { o.propagation = d })
}

// WithCloseDrain bounds the drain that Registry.Close and Registration.Close
// make before deregistering (1 s, and at most half the close timeout, so
// that the deregistrations keep the other half); 0 makes them deregister at
// once, as Deregister does.
func WithCloseDrain(d time.Duration) Option { return optionFunc(func(o *options) { o.closeDrain = d }) }

// subscriberCounter is implemented by stores that can tell how many
// Registry values follow their notifications (the in-memory backend).
type subscriberCounter interface{ Subscribers() int }

// Drain takes the instance out of service without failing a request:
//
//  1. it stores the instance with Status StatusDraining (a new revision),
//     so that every process's view shows it draining and load balancers
//     stop choosing it, while its lease is still renewed;
//  2. it waits until that change has reached the other processes (for
//     an instance that drains already, a standby or one drained before,
//     what is left of that wait since it was marked);
//  3. it deregisters the instance.
//
// How Drain knows the change has reached the other processes, by how they
// hear of changes:
//
//   - through Redis: Drain first makes sure Redis holds the new revision
//     (the snapshot the others refresh from; it writes it again if not),
//     then asks Redis how many processes subscribe to the change channel.
//     If no other does, nothing is waited for (this one's own subscription
//     is told apart only while Redis has confirmed it: while it is lost,
//     every subscriber counted is another process). Otherwise every
//     subscriber has been sent the message, and applying it is one Redis
//     read: Drain waits the propagation delay (100 ms, WithPropagationDelay).
//     (On a Redis Cluster the counts of every node are summed.)
//   - through the store (the in-memory backend notifies every Registry
//     before the write returns): the same, with the store's count of
//     subscribers.
//   - neither (a database without Redis, or Redis down): the others see the
//     change when their L1 entry stops being fresh; Drain waits the longest L1
//     freshness window (5.5 s: 5 s and its jitter) plus the propagation delay. That bounds what
//     a process that keeps using the service sees, not what one that
//     looked it up last before the mark does: its first lookup after the
//     window is answered from the entry it holds while that refreshes
//     (stale-while-revalidate), so the picks it makes during that one
//     refresh may still choose the instance, even after Drain returned.
//     Callers retry such a pick elsewhere (HTTPClient does, for idempotent
//     requests); with changes fanned out it does not happen. When only this
//     process has lost Redis (the others still read it), the others refresh
//     from the snapshot Redis holds from before the mark, which serves for up
//     to a lease TTL after it was read: for that long they may still choose
//     the instance after Drain returned.
//
// A process that lost the message (a reconnection) revalidates what it
// holds when it subscribes again, and otherwise sees the change when its
// L1 entry stops being fresh, as without Redis. ctx bounds the wait: when it
// ends, during the wait or before the mark could be written, Drain
// deregisters at once. The deregistration runs within the close timeout,
// whether or not ctx ends meanwhile. A mark that fails while ctx runs (the
// database down: ErrUnavailable) is returned, and nothing else is done: the
// instance stays registered, in service and renewed (call Drain again once
// the database is back, or Deregister). Calling Drain on a registration
// that is gone returns nil.
func (g *Registration) Drain(ctx context.Context) error {
	if ctx == nil {
		return nilContext("Drain")
	}
	rev, at, err := g.markDraining(ctx)
	switch {
	case err == nil:
		g.r.sleep(ctx, g.r.propagationBound(ctx, g.service, rev)-g.r.clock.Now().Sub(at))
	case errors.Is(err, ErrClosed):
		// Gone, or a Deregister that failed left the row: Deregister
		// returns nil for the one and retries the other.
	case ctx.Err() == nil:
		return err
	}
	// ctx ended, during the wait or before the mark was written (a renewal
	// held the registration, say): deregister at once all the same. It
	// returned the context's error instead, and the instance stayed
	// registered, renewed and picked. ctx bounds the wait, not the
	// deregistration: under it, a ctx that ended while the deregistration
	// was on its way failed it, and left the instance listed (draining)
	// until Close or its lease's end.
	ctx, cancel := ownTimeout(context.WithoutCancel(ctx), g.r.opts.closeTO)
	defer cancel()
	return g.Deregister(ctx)
}

// markDraining stores the instance as draining and returns the revision
// and when the mark was written: a registration that drains already (a
// standby, or one drained before) was marked earlier, and the wait for
// the mark to reach the other processes is counted from then. Counted
// from now, Close spent its whole close drain (1 s without Redis) on a
// standby marked when it was registered.
func (g *Registration) markDraining(ctx context.Context) (int64, time.Time, error) {
	r := g.r
	cur, rev, err := g.lockLive(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer g.writing.Unlock()
	if cur.Status == core.StatusDraining {
		g.mu.Lock()
		at := g.markedAt
		g.mu.Unlock()
		if at.IsZero() { // not known: counted from now
			at = r.clock.Now()
		}
		return rev, at, nil
	}
	next := cur.Clone()
	next.Status = core.StatusDraining
	next.ExpiresAt = r.clock.Now().Add(r.opts.leaseTTL)
	rev, err = r.store.Register(ctx, &next)
	r.noteStoreResult("register", err)
	if err != nil {
		g.mayHaveWritten(next, err)
		return 0, time.Time{}, err
	}
	g.set(next, rev)
	r.afterWriteOf(ctx, core.Change{Service: g.service, Revision: rev}, wroteRow(&next))
	return rev, r.clock.Now(), nil
}

// propagationBound returns how long to wait for a change of service at rev,
// just announced, to reach every other process (see Drain).
func (r *Registry) propagationBound(ctx context.Context, service string, rev int64) time.Duration {
	if _, ok := r.store.(core.Notifier); ok {
		if sc, ok := r.store.(subscriberCounter); ok && sc.Subscribers() <= 1 {
			return 0
		}
		return r.opts.propagation
	}
	if r.l2 != nil && r.l2.Up() {
		r.ensureL2(ctx, service, rev)
		if n, ok := r.l2.OtherSubscribers(ctx); ok && n == 0 {
			return 0
		}
		if r.l2.Up() {
			return r.opts.propagation
		}
	}
	return r.opts.longestFresh() + r.opts.propagation
}

// ensureL2 makes Redis hold revision rev of service or a newer one, and
// announces it again if it had to write it.
func (r *Registry) ensureL2(ctx context.Context, service string, rev int64) {
	// The generation comes with the snapshot; what the database answers is
	// written only while Redis holds it (no Invalidate since).
	svc, _, gen, err := r.l2.Get(ctx, service)
	if err != nil || svc != nil && svc.Revision >= rev {
		return
	}
	r.ctr.storeReads.Add(1)
	svc, err = r.store.Load(ctx, service)
	if err != nil {
		r.countStoreErr(err)
		return
	}
	if _, err := r.l2.Set(ctx, svc, r.clock.Now(), gen); err == nil {
		_ = r.l2.Publish(ctx, core.Change{Service: service, Revision: svc.Revision}, false)
	}
}

// closeRegistrations drains (for at most the close-drain timeout, marking
// included, and half of what ctx leaves) and then deregisters regs, within
// ctx, each step for up to closeParallel registrations at once; it returns
// the errors of the deregistrations.
//
// Renewals stop first: the lease outlives the close by far, and a renewal
// stuck on a database that stopped answering would otherwise hold each
// registration's writes for its own timeout, one registration after
// another (Close took 11.6 s of a 5 s close timeout with three).
func (r *Registry) closeRegistrations(ctx context.Context, regs []*Registration) []error {
	for _, g := range regs {
		g.cancel()
	}
	if r.opts.closeDrain > 0 && len(regs) > 0 {
		// At most half of what ctx leaves: a drain as long as the close
		// timeout left the deregistrations an expired deadline, and the
		// instances listed until their leases ran out.
		drain := r.opts.closeDrain
		if dl, ok := ctx.Deadline(); ok {
			drain = min(drain, time.Until(dl)/2)
		}
		dctx, cancel := ownTimeout(ctx, drain)
		defer cancel()
		var (
			mu     sync.Mutex
			wait   time.Duration
			marked bool
		)
		eachAtOnce(regs, func(_ int, g *Registration) {
			rev, at, err := g.markDraining(dctx)
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					r.log.Warn("discovery: cannot drain before deregistering", zap.String("service", g.service), zap.String("id", g.id), zap.Error(err))
				}
				return
			}
			d := r.propagationBound(dctx, g.service, rev) - r.clock.Now().Sub(at)
			mu.Lock()
			marked, wait = true, max(wait, d)
			mu.Unlock()
		})
		if marked {
			r.sleep(dctx, wait)
		}
	}
	found := make([]error, len(regs))
	eachAtOnce(regs, func(i int, g *Registration) {
		if err := g.deregister(ctx); err != nil && !errors.Is(err, ErrClosed) {
			found[i] = err
		}
	})
	var errs []error
	for _, err := range found {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// closeParallel bounds how many registrations closeRegistrations writes at
// once.
const closeParallel = 16

// eachAtOnce calls fn for every registration, up to closeParallel at once,
// and returns when every call has. Close drains and deregisters its
// registrations so: one after another, on a database that took 100 ms a
// write, a 1 s close timeout deregistered 4 of 20, and the others stayed
// listed, and picked, until their leases ended.
func eachAtOnce(regs []*Registration, fn func(i int, g *Registration)) {
	if len(regs) == 1 {
		fn(0, regs[0])
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, closeParallel)
	for i, g := range regs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i, g)
		})
	}
	wg.Wait()
}

// Draining reports whether instance id of service drains in the snapshot
// this process holds: drained by whichever process registered it
// (Registration.Drain), or registered as a standby. Get and Watch
// show an instance whose lease lapsed and is kept as a suspect as
// StatusSuspect, draining or not (suspect wins), and Pick never chooses one
// that drains: a reader of Get or Watch that mirrors Pick's choice (a gRPC
// resolver) asks here about its suspects. It reads only what this process
// holds (the cache, else what Watch last delivered from), without I/O, and
// is false for a service it does not hold.
func (r *Registry) Draining(service, id string) bool {
	if e := r.l1.get(service); e != nil {
		return drainingIn(e.raw, id)
	}
	h := r.hubIfAny(service)
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// The hub keeps each instance's stored draining mark under a suspect
	// (see snapshot.suspect).
	in, ok := h.last.insts[id]
	return ok && in.Status == core.StatusDraining
}
