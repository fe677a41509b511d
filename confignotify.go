package discovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Notifying instances of a new configuration (UpdateConfig).

// notifyParallel bounds the instances notified at once by one update.
const notifyParallel = 16

// maxNotifyBody is how much of an instance's answer is read (and discarded).
const maxNotifyBody = 4 << 10

// NotifyOutcome says what became of one instance's notification.
type NotifyOutcome uint8

// The outcomes of a notification.
const (
	// NotifyDelivered: the instance accepted the configuration (HTTP 2xx, or
	// its callback returned nil).
	NotifyDelivered NotifyOutcome = iota + 1
	// NotifyFailed: every attempt failed; Err says why.
	NotifyFailed
	// NotifySkipped: the instance was not notified by this call; Reason says
	// why (draining, a router instance that its own process notifies, or a
	// newer configuration that superseded this one).
	NotifySkipped
)

// String returns "delivered", "failed" or "skipped".
func (o NotifyOutcome) String() string {
	switch o {
	case NotifyDelivered:
		return "delivered"
	case NotifyFailed:
		return "failed"
	case NotifySkipped:
		return "skipped"
	}
	return "NotifyOutcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (o NotifyOutcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// NotifyResult is what became of one instance's notification.
type NotifyResult struct {
	// Instance as stored (Status is StatusDraining or StatusUnknown).
	Instance Instance
	// Outcome of the notification.
	Outcome NotifyOutcome
	// Attempts made: HTTP requests, or 1 for a callback.
	Attempts int
	// Err is why the last attempt failed (NotifyFailed).
	Err error
	// Reason is why the instance was skipped (NotifySkipped).
	Reason string
}

// ConfigReport is the outcome of UpdateConfig, UpdateConfigIf,
// RollbackConfig or RollbackConfigIf: the revisions written and what became
// of each live instance's notification.
type ConfigReport struct {
	// Service configured.
	Service string
	// Revision is the service revision the change wrote.
	Revision int64
	// ConfigRevision is the new configuration's revision.
	ConfigRevision int64
	// Instances are the live instances, ordered by ID.
	Instances []NotifyResult
	// NotifyErr is why no instance could be notified: the instances could
	// not be listed after the configuration was stored (the database
	// failing, or the caller's context ending). The configuration is stored
	// all the same; Instances is empty, and instances of this process and
	// others read it within a cache refresh, but no HTTP instance was sent
	// it. nil when the instances were listed.
	NotifyErr error
}

// Count returns how many instances had outcome o.
func (r ConfigReport) Count(o NotifyOutcome) int {
	n := 0
	for i := range r.Instances {
		if r.Instances[i].Outcome == o {
			n++
		}
	}
	return n
}

// WithConfigNotifyTimeout bounds each attempt to notify an instance of a new
// configuration, and each call of a WithConfigFunc callback (10 s).
func WithConfigNotifyTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.notifyTO = d })
}

// WithConfigNotifyRetries sets how many times an HTTP instance is tried (3,
// at most 10) and the wait before the second attempt (200 ms), doubled for
// each further one. Network errors, timeouts, 408, 429 and 5xx answers are
// retried; other answers are not.
func WithConfigNotifyRetries(attempts int, backoff time.Duration) Option {
	return optionFunc(func(o *options) { o.notifyTries, o.notifyBackoff = attempts, backoff })
}

// notifyConfig notifies the live instances of service, as the database has
// them now, of configuration cfgRev.
func (r *Registry) notifyConfig(ctx context.Context, service string, cfgRev int64, doc []byte) ([]NotifyResult, error) {
	svc, err := r.storeLoad(ctx, service) // counted as every store read is
	if err != nil {
		r.log.Warn("discovery: cannot list the instances to notify of a config change",
			zap.String("service", service), zap.Int64("config_revision", cfgRev), zap.Error(err))
		return nil, err
	}
	now := r.clock.Now()
	var (
		out   []NotifyResult
		src   TokenSource // signs each attempt, once it gave a first token
		tokOK bool
		tokEr error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, notifyParallel)
	)
	for i := range svc.Instances {
		in := svc.Instances[i]
		if !in.Live(now) {
			continue
		}
		out = append(out, NotifyResult{Instance: in})
	}
	for i := range out {
		res := &out[i]
		in := &res.Instance
		var g *Registration // this process's registration of a router instance
		if in.Method == core.MethodRouter {
			g = r.ownRegistration(service, in.ID)
		}
		switch {
		case in.Status == core.StatusDraining && (g == nil || g.opts.onConfig == nil):
			// A callback of this process is called draining or not (its
			// hub offers it every revision): reported below as it went.
			res.Outcome, res.Reason = NotifySkipped, "draining"
			continue
		case in.Method == core.MethodRouter:
			switch {
			case g == nil:
				res.Outcome, res.Reason = NotifySkipped, "router instance of another process: its own Registry calls its callback"
				continue
			case g.opts.onConfig == nil:
				res.Outcome, res.Reason = NotifySkipped, "router instance registered without WithConfigFunc"
				continue
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				r.notifyOwn(ctx, g, cfgRev, doc, res)
			})
		default:
			if ts := r.TokenSource(); ts != nil && !tokOK && tokEr == nil {
				_, tokEr = ts.Token(ctx, service)
				tokOK = tokEr == nil
				if tokOK {
					src = ts
				}
				if tokEr != nil {
					tokEr = fmt.Errorf("discovery: no token for audience %q: %w", service, tokEr)
				}
			}
			if tokEr != nil { // never send a notification unsigned when signing is configured
				res.Outcome, res.Err = NotifyFailed, tokEr
				continue
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				r.postConfig(ctx, service, cfgRev, doc, src, res)
			})
		}
	}
	wg.Wait()
	return out, nil
}

// ownRegistration returns this Registry's registration of an instance, or nil.
func (r *Registry) ownRegistration(service, id string) *Registration {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	for g := range r.regs {
		if g.service == service && g.id == id {
			return g
		}
	}
	return nil
}

// notifyOwn hands configuration cfgRev to a registration of this process
// and waits for its callback.
func (r *Registry) notifyOwn(ctx context.Context, g *Registration, cfgRev int64, doc []byte, res *NotifyResult) {
	g.offerConfig(cfgRev, doc, false)
	res.Attempts = 1
	got, err := g.awaitConfig(ctx, cfgRev)
	switch {
	case got == 0:
		res.Outcome, res.Err = NotifyFailed, err
	case got > cfgRev:
		res.Outcome, res.Reason = NotifySkipped, "superseded by config revision "+strconv.FormatInt(got, 10)
	case err != nil:
		res.Outcome, res.Err = NotifyFailed, err
	default:
		res.Outcome = NotifyDelivered
	}
}

// Configurations owed to an HTTP instance put into service: UpdateConfig
// skips draining instances, a standby (registered draining) included, so
// the Update that takes one out of draining sends it what it missed.

// oweIfInService reports whether next, an Update of cur just written, is an
// HTTP instance in service that may lack a configuration: it left draining
// now, or a send owed earlier has not succeeded. It takes c.mu.
func (c *regConfig) oweIfInService(cur, next core.Instance) bool {
	if next.Method != core.MethodHTTP || next.Status == core.StatusDraining {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur.Status == core.StatusDraining {
		c.owed = true
	}
	return c.owed
}

// sendOwedConfig sends the instance the service's configuration, read from
// the store, if it is newer than the one the registration knows, as
// UpdateConfig sends it; the registration then knows it (Config). It reads
// the configuration again after each send, and sends again if a newer one
// was stored meanwhile: the one sent here may have reached the instance
// after a newer one that an UpdateConfig sent it once it was in service.
// Sends of one registration go one at a time. A send that fails (or that
// ctx or the registration's end cuts short) leaves the configuration owed,
// for the next Update in service.
func (g *Registration) sendOwedConfig(ctx context.Context) {
	r, c := g.r, &g.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	sent := false
	defer func() {
		if !sent {
			c.mu.Lock()
			c.owed = true
			c.mu.Unlock()
		}
	}()
	if g.sending.Lock(ctx) != nil {
		return
	}
	defer g.sending.Unlock()
	// From before the read: an UpdateConfig that sends a newer one after
	// it supersedes the send (sendOrder), rather than be followed by it.
	sends := r.sends.acquire(g.service)
	defer r.sends.release(g.service, sends)
	var skipped int64 // the last revision read whose send a newer one superseded
	for {
		inst, _, gone := g.state()
		if gone || inst.Method != core.MethodHTTP || inst.Status == core.StatusDraining {
			return // back on standby: sent when it leaves draining again
		}
		c.mu.Lock()
		known := c.rev
		c.mu.Unlock()
		lctx, lcancel := ownTimeout(ctx, r.opts.loadTO)
		svc, err := r.storeLoad(lctx, g.service)
		lcancel()
		if err != nil {
			r.log.Warn("discovery: cannot read the configuration owed to an instance put in service",
				zap.String("service", g.service), zap.String("instance", g.id), zap.Error(err))
			return
		}
		if svc.ConfigRevision <= known {
			c.mu.Lock()
			c.owed, sent = false, true
			c.mu.Unlock()
			return
		}
		doc := slices.Clone(svc.Config)
		res := NotifyResult{Instance: inst}
		r.postConfig(ctx, g.service, svc.ConfigRevision, doc, r.TokenSource(), &res)
		if res.Outcome == NotifySkipped && svc.ConfigRevision > skipped {
			// An UpdateConfig is sending a newer one: read it (once per
			// revision read: after a restore from a backup, the newer one
			// being sent may be a revision the database lost).
			skipped = svc.ConfigRevision
			continue
		}
		if res.Outcome != NotifyDelivered {
			return // logged by postConfig
		}
		c.mu.Lock()
		c.learn(doc, svc.ConfigRevision)
		c.mu.Unlock()
	}
}

// sendOrder keeps this process's notifications of each HTTP instance in
// revision order: one attempt at a time per instance, and none with a
// revision older than one an attempt already started with. Without it a
// retry of an older configuration, waiting out its backoff, went out after
// a newer one that another UpdateConfig delivered meanwhile, and left the
// instance on the older one, both reported delivered. A service has an
// entry from the write of a configuration (setConfigIf) until the last of
// its notifications under way ends: an UpdateConfig that lists its
// instances after a newer one's notifications ended still finds what they
// sent. Kept longer, an entry would hold revisions that a database
// restored from a backup has lost, and refuse the ones written after.
type sendOrder struct {
	mu sync.Mutex
	m  map[string]*serviceSends
}

// serviceSends is one service's entry in sendOrder.
type serviceSends struct {
	users int // writes and notifications of the service under way
	insts map[string]*instanceSends
}

// instanceSends is one instance's: a slot held during an attempt, and the
// newest configuration revision an attempt started with (under
// sendOrder.mu).
type instanceSends struct {
	slot   core.Slot
	newest int64
}

// acquire returns the entry of service, made if need be, counting one user.
func (o *sendOrder) acquire(service string) *serviceSends {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.m[service]
	if e == nil {
		if o.m == nil {
			o.m = map[string]*serviceSends{}
		}
		e = &serviceSends{insts: map[string]*instanceSends{}}
		o.m[service] = e
	}
	e.users++
	return e
}

// release drops a user of service's entry, and the entry with its last one.
func (o *sendOrder) release(service string, e *serviceSends) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.users--; e.users == 0 {
		delete(o.m, service)
	}
}

// instance returns the entry of an instance (key) of e, made if need be.
func (o *sendOrder) instance(e *serviceSends, key string) *instanceSends {
	o.mu.Lock()
	defer o.mu.Unlock()
	in := e.insts[key]
	if in == nil {
		in = &instanceSends{slot: core.NewSlot()}
		e.insts[key] = in
	}
	return in
}

// begin reports the revision that supersedes rev (0 if none), or makes rev
// the newest started.
func (o *sendOrder) begin(in *instanceSends, rev int64) (newer int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if in.newest > rev {
		return in.newest
	}
	in.newest = rev
	return 0
}

// postConfig sends a configuration to an HTTP instance, retrying with
// backoff, and records the outcome in res. Each attempt is signed with a
// token of ts (if any) taken as it starts: one taken before the first
// attempt had expired by a retry after slow attempts (or by an attempt
// that waited for others), and the instance refused it. Attempts to one
// instance go one at a time (sendOrder); one whose revision a newer one
// started after is not made, and res says skipped, superseded.
func (r *Registry) postConfig(ctx context.Context, service string, cfgRev int64, doc []byte, ts TokenSource, res *NotifyResult) {
	addr := res.Instance.Addr()
	url := "http://" + addr + ConfigReloadPath
	svc := r.sends.acquire(service)
	defer r.sends.release(service, svc)
	sends := r.sends.instance(svc, res.Instance.ID+"\x00"+addr)
	for attempt := 1; ; attempt++ {
		if err := sends.slot.Lock(ctx); err != nil { // ended waiting for another notification's attempt
			if attempt == 1 {
				res.Outcome, res.Err = NotifyFailed, err
				r.log.Warn("discovery: config notification failed", zap.String("service", service),
					zap.String("instance", res.Instance.ID), zap.Int64("config_revision", cfgRev), zap.Int("attempts", 0), zap.Error(err))
			}
			return
		}
		if newer := r.sends.begin(sends, cfgRev); newer != 0 {
			sends.slot.Unlock()
			res.Outcome, res.Err, res.Reason = NotifySkipped, nil, "superseded by config revision "+strconv.FormatInt(newer, 10)
			return
		}
		res.Attempts = attempt
		err, retry := r.postOnce(ctx, url, service, cfgRev, doc, ts)
		sends.slot.Unlock()
		if err == nil {
			res.Outcome, res.Err = NotifyDelivered, nil
			return
		}
		res.Outcome, res.Err = NotifyFailed, err
		if !retry || attempt >= r.opts.notifyTries || ctx.Err() != nil {
			r.log.Warn("discovery: config notification failed", zap.String("service", service),
				zap.String("instance", res.Instance.ID), zap.Int64("config_revision", cfgRev), zap.Int("attempts", attempt), zap.Error(err))
			return
		}
		if !r.sleep(ctx, jitter(notifyWait(r.opts.notifyBackoff, attempt))) {
			return
		}
	}
}

// notifyWait is the wait after failed attempt number attempt: backoff
// doubled for each attempt after the first, at most MaxDuration. Shifted
// as is, a backoff the option takes (up to MaxDuration) wrapped negative
// by the tenth attempt, which then went out at once.
func notifyWait(backoff time.Duration, attempt int) time.Duration {
	d := backoff
	for range attempt - 1 {
		if d >= MaxDuration/2 {
			return MaxDuration
		}
		d *= 2
	}
	return min(d, MaxDuration)
}

// postOnce makes one attempt; retry says whether another may succeed.
func (r *Registry) postOnce(ctx context.Context, url, service string, cfgRev int64, doc []byte, ts TokenSource) (err error, retry bool) {
	actx, cancel := context.WithTimeout(ctx, r.opts.notifyTO)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("discovery: config notification to %s: %w", url, err), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Discovery-Service", service)
	req.Header.Set("X-Discovery-Config-Revision", strconv.FormatInt(cfgRev, 10))
	if ts != nil {
		token, err := ts.Token(actx, service)
		if err != nil { // never sent unsigned
			return fmt.Errorf("discovery: no token for audience %q: %w", service, err), true
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.httpc.Do(req)
	if err != nil {
		return fmt.Errorf("discovery: config notification to %s: %w", url, err), true
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxNotifyBody))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil, false
	}
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout
	return fmt.Errorf("discovery: config notification to %s: answered %s", url, resp.Status), retry
}

// newNotifyClient returns the client of configuration notifications: no
// proxy, no redirects, no kept connections (notifications are rare, and a
// Registry must leave no goroutine behind).
func newNotifyClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 16 << 10,
			ForceAttemptHTTP2:      false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// sleep waits d on the Registry's clock; it reports false if ctx ended first.
func (r *Registry) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}
