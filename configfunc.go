package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// The registration side of configuration: what a registration knows of its
// service's configuration, and its WithConfigFunc callback.

// regConfig is a registration's view of its service's configuration, and
// the delivery state of its WithConfigFunc callback.
type regConfig struct {
	mu  sync.Mutex
	doc json.RawMessage // the latest configuration known
	rev int64
	// seen is the newest revision accepted for delivery (pending, being
	// delivered, or delivered); delivered the newest given to the callback,
	// err what that call returned.
	seen      int64
	delivered int64
	err       error
	pending   *ConfigVersion
	// back: the database went back (restored from a backup) since the
	// last delivery; the next one replaces what was delivered, older or not.
	back bool
	// owed: an HTTP instance put into service (taken out of draining) may
	// lack a configuration stored while it was draining, and has not been
	// sent it yet (sendOwedConfig).
	owed bool
	// call is the context of the callback call under way (nil between
	// calls): awaitConfig waits for a call no longer than it is bounded.
	call context.Context
	done chan struct{} // closed and replaced after every delivery; made on first use
	kick chan struct{} // made on first use
}

// learn takes configuration rev if it is newer than the one known (Config
// goes back only when the database does, by a delivery). c.mu must be held.
func (c *regConfig) learn(doc json.RawMessage, rev int64) {
	if rev > c.rev {
		c.doc, c.rev = doc, rev
	}
}

// rewritten reports whether doc differs from what the registration holds
// as configuration rev (pending, or learned); false if it holds neither.
// c.mu must be held.
func (c *regConfig) rewritten(rev int64, doc json.RawMessage) bool {
	switch {
	case c.pending != nil && c.pending.Revision == rev:
		return !bytes.Equal(c.pending.Config, doc)
	case c.rev == rev:
		return !bytes.Equal(c.doc, doc)
	}
	return false
}

// chans returns the registration's delivery channels, making them on first
// use (the registration is visible to UpdateConfig before Register returns).
// c.mu must be held.
func (c *regConfig) chans() (done, kick chan struct{}) {
	if c.done == nil {
		c.done, c.kick = make(chan struct{}), make(chan struct{}, 1)
	}
	return c.done, c.kick
}

// wake wakes the waiters of awaitConfig, making the channel on first use.
// c.mu must be held.
func (c *regConfig) wake() {
	done, _ := c.chans()
	close(done)
	c.done = make(chan struct{})
}

// WithConfigFunc gives a router instance its configuration callback: this
// process calls fn with the service's new configuration whenever it learns
// of one, whether it made the change itself or another process did (by the
// change message, or within the L1 freshness window when that is lost).
//
// Each registration's callback is called at most once per configuration
// revision, one call at a time, in increasing revision order, each call
// bounded by the notification timeout (10 s: its context ends then, and an
// UpdateConfig of this process waits no longer for it); revisions
// superseded before this process learned of them are skipped, so the last
// call always carries the current configuration. The order goes back only
// when the database does (restored from a backup): as Get and Watch follow
// it, fn is called with the restored configuration, or an empty one if the
// backup has none, and with a configuration written after the restore
// under a revision number the restore lost (the same number, other
// content). The configuration current at registration is not passed to
// fn: read it from Registration.Config. If Register could not read it
// (the database failing; Config is then empty until it is read again),
// fn is called with it once this process reads it, as with any revision
// it has not seen. An error from fn (a panic in it is one) is logged and
// reported to the UpdateConfig caller of this process; it is not retried.
// Deregister cancels the context of a call under way but does not wait
// for it to return (a callback may itself deregister), and no call begins
// once it has returned; Registry.Close
// waits for it within the close timeout (see Close). HTTP instances get
// POST /admin/reload-config instead; Register refuses this option for
// them, and it given twice (the second would replace the first).
func WithConfigFunc(fn func(ctx context.Context, config json.RawMessage) error) RegisterOption {
	return regOptionFunc(func(o *regOptions) {
		o.noteTwice("config func", o.onConfig != nil)
		o.onConfig = fn
		o.noteNil("config func", fn == nil)
	})
}

// Config returns the service's configuration and its revision as this
// registration knows them: the configuration current when it registered
// (so an instance that was down starts with the current one; empty for a
// while if Register could not read it, which is then read again), then, with
// WithConfigFunc, each one delivered to the callback, and for an HTTP
// instance each one sent to it when an Update took it out of draining (see
// Update; it stays put while that send fails). Configurations that
// UpdateConfig sends an HTTP instance in service do not move it. (nil, 0)
// if the service has none.
func (g *Registration) Config() (json.RawMessage, int64) {
	g.cfg.mu.Lock()
	defer g.cfg.mu.Unlock()
	return slices.Clone(g.cfg.doc), g.cfg.rev
}

// startConfig reads the configuration current at registration and, for a
// registration with a callback, starts following the service's changes.
func (r *Registry) startConfig(ctx context.Context, g *Registration) {
	if svc, err := r.snapshotSince(ctx, g.service, g.Revision()); err == nil {
		c := &g.cfg
		c.mu.Lock()
		c.learn(svc.Config, svc.ConfigRevision)
		// A revision offered before this read (an UpdateConfig of this
		// process that found the registration already listed) and older
		// than the configuration just read is superseded: delivering it
		// would move the registration back and, seen being ahead, the
		// current one would never follow.
		if c.pending != nil && c.pending.Revision <= svc.ConfigRevision {
			c.pending = nil
		}
		c.seen, c.delivered = max(c.seen, svc.ConfigRevision), max(c.delivered, svc.ConfigRevision)
		if c.done != nil { // wake awaitConfig: delivered may have moved
			c.wake()
		}
		c.mu.Unlock()
	} else {
		r.log.Debug("discovery: no configuration read at registration; reading it later", zap.String("service", g.service), zap.Error(err))
		r.spawn(func() { r.readConfigLater(g) })
	}
	if g.opts.onConfig == nil {
		return
	}
	r.spawn(g.configLoop)
}

// readConfigLater reads the configuration that Register could not, with
// backoff (200 ms doubling, at most 5 s), until it has it or the
// registration stops: one failed read left Registration.Config empty for
// good. The callback's deliveries are left to the hub, which gives it this
// configuration too (seen is still 0), as WithConfigFunc says.
func (r *Registry) readConfigLater(g *Registration) {
	const most = 5 * time.Second
	t := r.clock.NewTimer(backoff(1, most))
	defer t.Stop()
	for failures := 1; ; failures++ {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C():
		}
		ctx, cancel := ownTimeout(g.ctx, r.opts.loadTO)
		svc, err := r.snapshotSince(ctx, g.service, g.Revision())
		cancel()
		if err == nil {
			c := &g.cfg
			c.mu.Lock()
			c.learn(svc.Config, svc.ConfigRevision)
			c.mu.Unlock()
			return
		}
		t.Reset(backoff(failures+1, most))
	}
}

// snapshotSince returns a snapshot of service at revision rev or newer: the
// one L1 holds if it is that recent (a write with Redis just put it there),
// else the store's, without caching it (a process that registers a service
// need not look it up).
func (r *Registry) snapshotSince(ctx context.Context, service string, rev int64) (*core.Service, error) {
	if e := r.l1.get(service); e != nil && e.raw != nil && e.rev >= rev {
		return e.raw, nil
	}
	return r.storeLoad(ctx, service)
}

// storeLoad reads a service from the store, bypassing the caches, counted
// and noted as every store read is.
func (r *Registry) storeLoad(ctx context.Context, service string) (*core.Service, error) {
	r.ctr.storeReads.Add(1)
	svc, err := r.store.Load(ctx, service)
	r.noteStoreResult("load", err)
	return svc, err
}

// offerConfig tells the registration of configuration rev; its callback
// gets it unless it has seen a newer one and back is false. back says the
// database went back to rev (restored from a backup): Get and Watch follow
// it, and so does the callback (rev 0 and no doc when the restored database
// has no configuration).
func (g *Registration) offerConfig(rev int64, doc json.RawMessage, back bool) {
	c := &g.cfg
	c.mu.Lock()
	// The number it has with other content: written after a restore, as
	// one the restore lost. As after any restore, the callback follows.
	back = back || rev == c.seen && c.rewritten(rev, doc)
	if g.opts.onConfig == nil || rev <= c.seen && !back {
		c.mu.Unlock()
		return
	}
	c.seen, c.pending = rev, &ConfigVersion{Revision: rev, Config: doc}
	c.back = c.back || back
	_, kick := c.chans()
	c.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// awaitConfig waits until the callback has been given configuration rev or
// a newer one, and returns the revision it got (0 if the wait ended first)
// and what the callback returned. It stops waiting when a call under way
// outlives its notification timeout (an error matching
// context.DeadlineExceeded): a callback deaf to its context held the
// UpdateConfig that waited for it, whose ctx need not end, for good, and
// the call it waits for cannot begin before the one under way returns.
func (g *Registration) awaitConfig(ctx context.Context, rev int64) (int64, error) {
	c := &g.cfg
	for {
		c.mu.Lock()
		if c.delivered >= rev {
			got, err := c.delivered, c.err
			c.mu.Unlock()
			return got, err
		}
		ch, _ := c.chans()
		var over <-chan struct{} // the call under way reaching its timeout
		if call := c.call; call != nil {
			switch err := call.Err(); {
			case errors.Is(err, context.DeadlineExceeded):
				c.mu.Unlock()
				return 0, fmt.Errorf("discovery: config callback of %s/%s still running after %v: %w",
					g.service, g.id, g.r.opts.notifyTO, context.DeadlineExceeded)
			case err == nil: // else ended with the registration: g.ctx below
				over = call.Done()
			}
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-over: // looked at again
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-g.ctx.Done():
			return 0, ErrClosed
		}
	}
}

// configLoop delivers configurations to the callback, one at a time, until
// the registration stops; it follows the service through its hub meanwhile.
func (g *Registration) configLoop() {
	c := &g.cfg
	c.mu.Lock()
	_, kick := c.chans()
	c.mu.Unlock()
	// As Watch does: a hub whose last watcher just left is closing, and
	// refuses a listener; the next hubFor starts a new one. Giving up
	// there (as this did) left the registration without deliveries, and an
	// UpdateConfig without a deadline waiting for it for good.
	var h *hub
	for {
		if g.ctx.Err() != nil {
			return // deregistered (or replaced) before this loop began
		}
		var err error
		if h, err = g.r.hubFor(g.service); err != nil {
			return // closing
		}
		if g.ctx.Err() != nil {
			// Ended while the hub was found or made: hand it back. Left
			// as it was, a hub made for this registration alone (one
			// deregistered right after Register) ran until Close, reading
			// the service from the database every freshness window.
			h.release()
			return
		}
		if h.addListener(g) {
			break
		}
	}
	defer h.removeListener(g)
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-kick:
		}
		for {
			c.mu.Lock()
			p := c.pending
			back := c.back && p != nil
			if p != nil {
				c.pending, c.back = nil, false
			}
			stale := p != nil && p.Revision <= c.delivered && !back
			c.mu.Unlock()
			if p == nil || g.ctx.Err() != nil {
				break
			}
			if stale { // superseded by the configuration read at registration
				continue
			}
			ctx, cancel := context.WithTimeout(g.ctx, g.r.opts.notifyTO)
			c.mu.Lock()
			c.call = ctx
			c.wake() // a waiter follows this call's timeout
			c.mu.Unlock()
			ok, err := g.deliver(ctx, p.Config)
			if !ok { // ended (Deregister, Close) while the call ran
				cancel()
				return
			}
			if err != nil {
				g.r.log.Warn("discovery: config callback failed", zap.String("service", g.service),
					zap.String("instance", g.id), zap.Int64("config_revision", p.Revision), zap.Error(err))
			}
			c.mu.Lock()
			c.call = nil
			if p.Revision > c.delivered || back {
				c.delivered, c.err = p.Revision, err
			}
			if back {
				c.doc, c.rev = p.Config, p.Revision
			} else {
				c.learn(p.Config, p.Revision)
			}
			c.wake()
			c.mu.Unlock()
			// Cancelled once recorded, not before: a waiter that ctx's end
			// wakes finds the call recorded, or still under way past its
			// deadline, never one cut short by this cancel.
			cancel()
		}
	}
}

// deliver calls the callback on a goroutine of its own, which Close waits
// for only within the close timeout, and waits for the call while the
// registration lasts: ok is false if the registration ended first (or the
// Registry is closing), the call left to return when it will, its
// context ended. Called on this loop's goroutine, a callback that ignored
// its context made Close, which waits for that goroutine, wait for good.
func (g *Registration) deliver(ctx context.Context, doc json.RawMessage) (ok bool, err error) {
	done := make(chan error, 1)
	if !g.r.goCallback("config func of "+g.service+"/"+g.id, func() { done <- g.callConfigFunc(ctx, doc) }) {
		return false, nil
	}
	select {
	case err := <-done:
		return true, err
	case <-g.ctx.Done():
		return false, nil
	}
}

// callConfigFunc calls the registration's callback with a copy of doc. A
// panic in it is a failed delivery, as one in a WithCheckFunc check is a
// failed check: it ran on this Registry's goroutine, where the caller could
// not recover it, and took the whole process down.
//
// A call whose context has ended before it began is not made: the
// registration ended (Deregister, Close) after configLoop took the
// delivery up, and the callback was called after Deregister had returned,
// into whatever its caller freed once it had.
func (g *Registration) callConfigFunc(ctx context.Context, doc json.RawMessage) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("discovery: config callback of %s/%s panicked: %v", g.service, g.id, v)
		}
	}()
	return g.opts.onConfig(ctx, slices.Clone(doc))
}
