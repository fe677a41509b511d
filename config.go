package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Configuration limits and defaults.
const (
	// MaxConfigBytes bounds a configuration document (512 KiB).
	MaxConfigBytes = 512 << 10
	// MaxConfigDepth bounds how deeply objects and arrays of a configuration
	// may nest.
	MaxConfigDepth = 64
	// DefaultConfigHistory is how many versions of a service's configuration
	// are kept (RollbackConfig reaches back this far).
	DefaultConfigHistory = 20
	// DefaultConfigNotifyTimeout bounds each attempt to notify an instance of
	// a new configuration (the seed's 10 s), and each call of a
	// WithConfigFunc callback.
	DefaultConfigNotifyTimeout = 10 * time.Second
	// DefaultConfigNotifyAttempts is how many times an HTTP instance is tried.
	DefaultConfigNotifyAttempts = 3
	// DefaultConfigNotifyBackoff is the wait before the second attempt; it
	// doubles for each further one (+-10% jitter).
	DefaultConfigNotifyBackoff = 200 * time.Millisecond
	// ConfigReloadPath is where HTTP instances receive their configuration:
	// POST http://<host:port>/admin/reload-config with the JSON document.
	ConfigReloadPath = "/admin/reload-config"
)

// notifyParallel bounds the instances notified at once by one update.
const notifyParallel = 16

// maxNotifyBody is how much of an instance's answer is read (and discarded).
const maxNotifyBody = 4 << 10

// ConfigError says why a configuration was refused: malformed, too large,
// nested too deeply, or refused by the service's validator (Err is then the
// validator's error). It matches ErrInvalid; nothing was stored.
type ConfigError struct {
	// Service whose configuration was refused.
	Service string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any (a JSON syntax error, or what the
	// validator returned).
	Err error
}

// Error implements error.
func (e *ConfigError) Error() string {
	s := "discovery: invalid config of service " + strconv.Quote(e.Service) + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalid }

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
	// why (draining, or a router instance that its own process notifies).
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

// ConfigReport is the outcome of UpdateConfig or RollbackConfig: the
// revisions written and what became of each live instance's notification.
type ConfigReport struct {
	// Service configured.
	Service string
	// Revision is the service revision the change wrote.
	Revision int64
	// ConfigRevision is the new configuration's revision.
	ConfigRevision int64
	// Instances are the live instances, ordered by ID.
	Instances []NotifyResult
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

// WithConfigValidator makes UpdateConfig and RollbackConfig run fn on every
// configuration of service before storing it; an error refuses it (a
// ConfigError wrapping fn's error, matching ErrInvalid). fn sees documents
// that already passed the built-in checks (a JSON object, at most 512 KiB,
// nested at most 64 deep) and must not keep or modify them. A later
// validator for the same service replaces an earlier one.
func WithConfigValidator(service string, fn func(json.RawMessage) error) Option {
	return optionFunc(func(o *options) {
		if o.validators == nil {
			o.validators = map[string]func(json.RawMessage) error{}
		}
		o.validators[service] = fn
	})
}

// WithConfigHistory sets how many versions of each configuration are kept
// (20 by default, 1 to 1000).
func WithConfigHistory(versions int) Option {
	return optionFunc(func(o *options) { o.configKeep = versions })
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

func (o *options) validateConfigOptions() error {
	for svc, fn := range o.validators {
		if err := core.ValidateServiceName(svc); err != nil {
			return optErr("WithConfigValidator", svc, "not a valid service name")
		}
		if fn == nil {
			return optErr("WithConfigValidator", svc, "validator must not be nil")
		}
	}
	switch {
	case o.configKeep < 1 || o.configKeep > 1000:
		return optErr("WithConfigHistory", strconv.Itoa(o.configKeep), "must be 1..1000")
	case o.notifyTO <= 0:
		return optErr("WithConfigNotifyTimeout", o.notifyTO.String(), "must be positive")
	case o.notifyTries < 1 || o.notifyTries > 10:
		return optErr("WithConfigNotifyRetries", strconv.Itoa(o.notifyTries), "attempts must be 1..10")
	case o.notifyBackoff < 0:
		return optErr("WithConfigNotifyRetries", o.notifyBackoff.String(), "backoff must not be negative")
	case o.propagation < 0:
		return optErr("WithPropagationDelay", o.propagation.String(), "must not be negative")
	case o.closeDrain < 0:
		return optErr("WithCloseDrain", o.closeDrain.String(), "must not be negative (0 disables)")
	}
	return nil
}

// checkConfig applies the built-in checks to a configuration document and
// returns why it is refused ("" if it is not). It reads doc once at most
// for the depth and once for the syntax, whatever doc holds.
func checkConfig(doc []byte) (reason string, err error) {
	if len(doc) > MaxConfigBytes {
		return "larger than 512 KiB (" + strconv.Itoa(len(doc)) + " bytes)", nil
	}
	i := 0
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	if i == len(doc) {
		return "empty", nil
	}
	if doc[i] != '{' {
		return "must be a JSON object", nil
	}
	// Depth first: a document nested thousands deep is refused before any
	// parser recurses into it.
	depth, inString, escaped := 0, false, false
	for _, c := range doc[i:] {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > MaxConfigDepth {
				return "nested deeper than " + strconv.Itoa(MaxConfigDepth) + " levels", nil
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	if !utf8.Valid(doc) {
		return "not valid UTF-8", nil
	}
	if !json.Valid(doc) {
		var raw json.RawMessage
		err := json.Unmarshal(doc, &raw)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return "malformed JSON", err
	}
	return "", nil
}

// validateConfig runs the built-in checks, then the service's validator.
func (r *Registry) validateConfig(service string, doc []byte) error {
	if reason, err := checkConfig(doc); reason != "" {
		return &ConfigError{Service: service, Reason: reason, Err: err}
	}
	if fn := r.opts.validators[service]; fn != nil {
		if err := fn(slices.Clone(doc)); err != nil {
			return &ConfigError{Service: service, Reason: "refused by its validator", Err: err}
		}
	}
	return nil
}

func (r *Registry) configStore() (core.ConfigStore, error) {
	cs, ok := r.store.(core.ConfigStore)
	if !ok {
		return nil, fmt.Errorf("%w: the Store does not implement ConfigStore", ErrUnsupported)
	}
	return cs, nil
}

// UpdateConfig stores cfg as the configuration of service and notifies the
// service's live instances.
//
// cfg must be a JSON object of at most 512 KiB nested at most 64 levels deep,
// and pass the service's validator (WithConfigValidator); otherwise the
// error is a ConfigError matching ErrInvalid and nothing is stored. The
// Store must implement ConfigStore (ErrUnsupported). The change bumps the
// service's revision and its configuration revision, keeps the previous
// versions (20), and reaches every process's cache like any change.
//
// Then each live instance is notified, and the report says how:
//   - an HTTP instance gets POST http://<host:port>/admin/reload-config with
//     the document, Content-Type application/json, the headers
//     X-Discovery-Service and X-Discovery-Config-Revision, and
//     "Authorization: Bearer <token>" for audience service when a
//     TokenSource is set; each attempt is bounded by 10 s, three attempts
//     with backoff (WithConfigNotifyTimeout, WithConfigNotifyRetries);
//     redirects are not followed;
//   - a router instance registered by this Registry with WithConfigFunc has
//     its callback called (the report waits for it);
//   - router instances of other processes are skipped here: their own
//     Registry calls their callback when it learns of the change (by the
//     change message, or within the L1 freshness window if that is lost);
//   - draining instances are skipped.
//
// The error is non-nil only when nothing was stored; failed notifications
// are in the report. ctx bounds the whole call, notifications included.
func (r *Registry) UpdateConfig(ctx context.Context, service string, cfg json.RawMessage) (ConfigReport, error) {
	if r.closed.Load() {
		return ConfigReport{}, ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return ConfigReport{}, err
	}
	doc := slices.Clone([]byte(cfg))
	if err := r.validateConfig(service, doc); err != nil {
		return ConfigReport{}, err
	}
	return r.setConfig(ctx, service, doc)
}

// RollbackConfig restores the configuration that had configRevision as a
// new revision, validated and notified as UpdateConfig does. The error
// matches ErrNotFound when that revision is no longer (or never was) in the
// history.
func (r *Registry) RollbackConfig(ctx context.Context, service string, configRevision int64) (ConfigReport, error) {
	hist, err := r.ConfigHistory(ctx, service)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return ConfigReport{}, err
	}
	for _, v := range hist {
		if v.Revision == configRevision {
			doc := slices.Clone(v.Config)
			if err := r.validateConfig(service, doc); err != nil {
				return ConfigReport{}, err
			}
			return r.setConfig(ctx, service, doc)
		}
	}
	return ConfigReport{}, fmt.Errorf("discovery: config revision %d of service %q is not in its history (the last %d versions are kept): %w",
		configRevision, service, r.opts.configKeep, ErrNotFound)
}

// ConfigHistory returns the kept versions of a service's configuration,
// newest first (the last 20 by default). The error matches ErrNotFound if
// the service never had one, ErrUnsupported if the Store keeps none.
func (r *Registry) ConfigHistory(ctx context.Context, service string) ([]ConfigVersion, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return nil, err
	}
	cs, err := r.configStore()
	if err != nil {
		return nil, err
	}
	hist, err := cs.ConfigHistory(ctx, service)
	r.noteStoreResult("config history", err)
	return hist, err
}

// Config returns the configuration of a service and its configuration
// revision, read through the cache layers like Get (so a change made
// anywhere is seen within the same bounds), also when the service has no
// live instance. A service that exists without a configuration gives
// (nil, 0, nil); an unknown one an error matching ErrNotFound.
func (r *Registry) Config(ctx context.Context, service string) (json.RawMessage, int64, error) {
	svc, err := r.serviceData(ctx, service)
	if err != nil {
		return nil, 0, err
	}
	return slices.Clone(svc.Config), svc.ConfigRevision, nil
}

func (r *Registry) setConfig(ctx context.Context, service string, doc []byte) (ConfigReport, error) {
	cs, err := r.configStore()
	if err != nil {
		return ConfigReport{}, err
	}
	rev, cfgRev, err := cs.SetConfig(ctx, service, doc, r.clock.Now(), r.opts.configKeep)
	r.noteStoreResult("set config", err)
	if err != nil {
		return ConfigReport{}, err
	}
	r.afterWrite(ctx, core.Change{Service: service, Revision: rev})
	rep := ConfigReport{Service: service, Revision: rev, ConfigRevision: cfgRev}
	rep.Instances = r.notifyConfig(ctx, service, cfgRev, doc)
	return rep, nil
}

// notifyConfig notifies the live instances of service, as the database has
// them now, of configuration cfgRev.
func (r *Registry) notifyConfig(ctx context.Context, service string, cfgRev int64, doc []byte) []NotifyResult {
	svc, err := r.store.Load(ctx, service)
	r.noteStoreResult("load", err)
	if err != nil {
		r.log.Warn("discovery: cannot list the instances to notify of a config change",
			zap.String("service", service), zap.Int64("config_revision", cfgRev), zap.Error(err))
		return nil
	}
	now := r.clock.Now()
	var (
		out   []NotifyResult
		token string
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
		switch {
		case in.Status == core.StatusDraining:
			res.Outcome, res.Reason = NotifySkipped, "draining"
			continue
		case in.Method == core.MethodRouter:
			g := r.ownRegistration(service, in.ID)
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
			if r.opts.tokens != nil && !tokOK && tokEr == nil {
				token, tokEr = r.opts.tokens.Token(ctx, service)
				tokOK = tokEr == nil
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
				r.postConfig(ctx, service, cfgRev, doc, token, res)
			})
		}
	}
	wg.Wait()
	return out
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
	g.offerConfig(cfgRev, doc)
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

// postConfig sends a configuration to an HTTP instance, retrying with
// backoff, and records the outcome in res.
func (r *Registry) postConfig(ctx context.Context, service string, cfgRev int64, doc []byte, token string, res *NotifyResult) {
	url := "http://" + res.Instance.Addr() + ConfigReloadPath
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		err, retry := r.postOnce(ctx, url, service, cfgRev, doc, token)
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
		if !r.sleep(ctx, jitter(r.opts.notifyBackoff<<(attempt-1))) {
			return
		}
	}
}

// postOnce makes one attempt; retry says whether another may succeed.
func (r *Registry) postOnce(ctx context.Context, url, service string, cfgRev int64, doc []byte, token string) (err error, retry bool) {
	actx, cancel := context.WithTimeout(ctx, r.opts.notifyTO)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("discovery: config notification to %s: %w", url, err), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Discovery-Service", service)
	req.Header.Set("X-Discovery-Config-Revision", strconv.FormatInt(cfgRev, 10))
	if token != "" {
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
	done      chan struct{} // closed and replaced after every delivery; made on first use
	kick      chan struct{} // made on first use
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

// WithConfigFunc gives a router instance its configuration callback: this
// process calls fn with the service's new configuration whenever it learns
// of one, whether it made the change itself or another process did (by the
// change message, or within the L1 freshness window when that is lost).
//
// Each registration's callback is called at most once per configuration
// revision, one call at a time, in increasing revision order, each call
// bounded by the notification timeout (10 s); revisions superseded before
// this process learned of them are skipped, so the last call always carries
// the current configuration. The configuration current at registration is
// not passed to fn: read it from Registration.Config. An error from fn is
// logged and reported to the UpdateConfig caller of this process; it is not
// retried. HTTP instances get POST /admin/reload-config instead; Register
// refuses this option for them.
func WithConfigFunc(fn func(ctx context.Context, config json.RawMessage) error) RegisterOption {
	return regOptionFunc(func(o *regOptions) { o.onConfig = fn })
}

// checkRegOptions refuses registration options that do not fit the instance.
func checkRegOptions(in *core.Instance, ro *regOptions) error {
	if ro.onConfig != nil && in.Method != core.MethodRouter {
		return &ValidationError{Field: "config func", Value: in.Method.String(),
			Reason: "only router instances take WithConfigFunc; HTTP instances get POST " + ConfigReloadPath}
	}
	return nil
}

// Config returns the service's configuration and its revision as this
// registration knows them: the configuration current when it registered
// (so an instance that was down starts with the current one), then, with
// WithConfigFunc, each one delivered to the callback. (nil, 0) if the
// service has none.
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
		if svc.ConfigRevision > c.rev {
			c.doc, c.rev = svc.Config, svc.ConfigRevision
		}
		c.seen, c.delivered = max(c.seen, svc.ConfigRevision), max(c.delivered, svc.ConfigRevision)
		c.mu.Unlock()
	} else {
		r.log.Debug("discovery: no configuration read at registration", zap.String("service", g.service), zap.Error(err))
	}
	if g.opts.onConfig == nil {
		return
	}
	h, err := r.hubFor(g.service)
	if err != nil {
		return // closing
	}
	if !r.spawn(func() { g.configLoop(h) }) {
		return
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
	r.ctr.storeReads.Add(1)
	svc, err := r.store.Load(ctx, service)
	r.noteStoreResult("load", err)
	return svc, err
}

// offerConfig tells the registration of configuration rev; its callback
// gets it unless it has seen a newer one.
func (g *Registration) offerConfig(rev int64, doc json.RawMessage) {
	c := &g.cfg
	c.mu.Lock()
	if g.opts.onConfig == nil || rev <= c.seen {
		c.mu.Unlock()
		return
	}
	c.seen, c.pending = rev, &ConfigVersion{Revision: rev, Config: doc}
	_, kick := c.chans()
	c.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// awaitConfig waits until the callback has been given configuration rev or
// a newer one, and returns the revision it got (0 if the wait ended first)
// and what the callback returned.
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
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-g.ctx.Done():
			return 0, ErrClosed
		}
	}
}

// configLoop delivers configurations to the callback, one at a time, until
// the registration stops; it follows the service through its hub meanwhile.
func (g *Registration) configLoop(h *hub) {
	c := &g.cfg
	c.mu.Lock()
	_, kick := c.chans()
	c.mu.Unlock()
	if !h.addListener(g) {
		return
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
			c.pending = nil
			c.mu.Unlock()
			if p == nil || g.ctx.Err() != nil {
				break
			}
			ctx, cancel := context.WithTimeout(g.ctx, g.r.opts.notifyTO)
			err := g.opts.onConfig(ctx, slices.Clone(p.Config))
			cancel()
			if err != nil {
				g.r.log.Warn("discovery: config callback failed", zap.String("service", g.service),
					zap.String("instance", g.id), zap.Int64("config_revision", p.Revision), zap.Error(err))
			}
			c.mu.Lock()
			c.delivered, c.err = p.Revision, err
			c.doc, c.rev = p.Config, p.Revision
			done, _ := c.chans()
			close(done)
			c.done = make(chan struct{})
			c.mu.Unlock()
		}
	}
}
