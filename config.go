package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
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

// WithConfigValidator makes UpdateConfig, UpdateConfigIf, RollbackConfig and
// RollbackConfigIf (and so the admin handler's PUT) run fn on every configuration of service
// before storing it; an error refuses it (a ConfigError wrapping fn's
// error, matching ErrInvalid), and so does a panic in fn. fn sees documents
// that already passed the built-in checks (a JSON object, at most 512 KiB,
// nested at most 64 deep) and must not keep or modify them. A later
// validator for the same service replaces an earlier one. It is this
// Registry's check, run before the write, not the database's: a Registry
// without it (another process's) stores what fn would refuse, so give it to
// every Registry that writes the service's configuration.
func WithConfigValidator(service string, fn func(json.RawMessage) error) Option {
	return optionFunc(func(o *options) {
		if o.validators == nil {
			o.validators = map[string]func(json.RawMessage) error{}
		}
		o.validators[service] = fn
	})
}

// WithConfigHistory sets how many versions of each configuration are kept
// (20 by default, 1 to 1000). Each write of a configuration trims the
// service's history to the writing Registry's setting, so give it to every
// Registry that writes configurations (UpdateConfig, RollbackConfig, the
// admin handler's PUT): one left at the default cuts a longer history to
// 20 with its first write.
func WithConfigHistory(versions int) Option {
	return optionFunc(func(o *options) { o.configKeep = versions })
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

// checkBalancer refuses a "balancer" member that selection would ignore
// (stored, it left every pick on the default strategy without a word): one
// that does not decode as serviceStrategy reads it, or names no strategy.
// checkConfig has judged the syntax, so a decoding error is a type.
func checkBalancer(doc []byte) (reason string, err error) {
	var c serviceConfig
	if err := json.Unmarshal(doc, &c); err != nil {
		return `"balancer" must be an object whose "strategy" is a string`, err
	}
	if c.Balancer.Strategy == "" {
		// Decoded as serviceStrategy decodes it (field names in any case),
		// with the member's presence told apart: null is no balancer, but
		// an object without a strategy (a misspelt key) is ignored by
		// selection, and its writer never told.
		var present struct {
			Balancer *struct {
				Strategy *string `json:"strategy"`
			} `json:"balancer"`
		}
		if json.Unmarshal(doc, &present) == nil && present.Balancer != nil {
			return `"balancer" names no "strategy"`, nil
		}
		return "", nil
	}
	if _, err := ParseStrategy(c.Balancer.Strategy); err != nil {
		return `"balancer.strategy" is not a strategy`, err
	}
	return "", nil
}

// validateConfig runs the built-in checks, then the service's validator.
func (r *Registry) validateConfig(service string, doc []byte) error {
	if reason, err := checkConfig(doc); reason != "" {
		return &ConfigError{Service: service, Reason: reason, Err: err}
	}
	if reason, err := checkBalancer(doc); reason != "" {
		return &ConfigError{Service: service, Reason: reason, Err: err}
	}
	if fn := r.opts.validators[service]; fn != nil {
		if err := callValidator(fn, slices.Clone(doc)); err != nil {
			return &ConfigError{Service: service, Reason: "refused by its validator", Err: err}
		}
	}
	return nil
}

// callValidator calls a WithConfigValidator function; a panic in it refuses
// the document, as a panic in a WithConfigFunc callback is a failed
// delivery. It went up the caller's stack before, and in the admin handler
// to net/http, which cut the connection without an answer: a validator
// that panics does so on a document it did not expect, which is refused.
func callValidator(fn func(json.RawMessage) error, doc json.RawMessage) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("discovery: config validator panicked: %v", v)
		}
	}()
	return fn(doc)
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
//     TokenSource is set (a token taken for each attempt); each attempt is bounded by 10 s, three attempts
//     with backoff (WithConfigNotifyTimeout, WithConfigNotifyRetries);
//     redirects are not followed. This process sends an instance one
//     configuration at a time, in revision order: an attempt whose
//     revision is older than one another UpdateConfig has begun sending it
//     is not made (reported skipped, "superseded by config revision N"),
//     rather than leave the instance on the older one. Across processes
//     only the X-Discovery-Config-Revision header orders them;
//   - a router instance registered by this Registry with WithConfigFunc has
//     its callback called, draining or not (the report waits for it, but
//     not past the notification timeout of the call under way: a callback still running
//     then, its context ignored, is reported failed with an error matching
//     context.DeadlineExceeded, and is given the configuration once it
//     returns);
//   - router instances of other processes are skipped here: their own
//     Registry calls their callback when it learns of the change (by the
//     change message, or within the L1 freshness window if that is lost);
//   - other draining instances are skipped (they may be shutting down).
//     An HTTP instance registered as a standby (Status StatusDraining) or drained
//     with Update is sent the configuration later, by its own Registry,
//     when an Update of its Registration takes it out of draining (see
//     Registration.Update).
//
// The last writer wins: a read-modify-write that must not lose a
// concurrent one stores its edit with UpdateConfigIf.
//
// An error says nothing was stored, except one of unknown outcome (ctx
// ended, or the database failed, while the write was on its way: it
// matches ErrUnavailable, context.Canceled or context.DeadlineExceeded),
// whose write may have landed all the same (no instance notified by this
// call): Config tells, once the database answers (this process announces
// the change then, as for any such write). Failed notifications are in
// the report, and so (NotifyErr) is a failure to list the instances to
// notify. ctx bounds the whole call, notifications included.
func (r *Registry) UpdateConfig(ctx context.Context, service string, cfg json.RawMessage) (ConfigReport, error) {
	if ctx == nil {
		return ConfigReport{}, nilContext("UpdateConfig")
	}
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

// UpdateConfigIf is UpdateConfig with a compare-and-set: cfg is stored only
// if the service's configuration revision is still configRevision, the one
// its writer read (Config; 0 for a service without a configuration).
// Otherwise nothing is stored and nobody notified, and the error is a
// ConfigConflictError matching ErrConflict, which says the revision stored:
// read the configuration again (Config reads it anew after a conflict),
// and apply the change to it; after an error of unknown outcome (see UpdateConfig),
// a conflict may be this writer's own edit having landed. Two writers that
// read the same revision and write their edits with UpdateConfig both
// succeed, and the first edit is lost; with UpdateConfigIf the second is
// refused. The Store must implement ConfigSwapper (the SQL store and
// discoverytest's do; ErrUnsupported otherwise). A negative configRevision
// is bad input (ErrInvalid).
func (r *Registry) UpdateConfigIf(ctx context.Context, service string, configRevision int64, cfg json.RawMessage) (ConfigReport, error) {
	if ctx == nil {
		return ConfigReport{}, nilContext("UpdateConfigIf")
	}
	if r.closed.Load() {
		return ConfigReport{}, ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return ConfigReport{}, err
	}
	if configRevision < 0 {
		return ConfigReport{}, &ValidationError{Field: "config revision", Value: strconv.FormatInt(configRevision, 10), Reason: "must not be negative"}
	}
	doc := slices.Clone([]byte(cfg))
	if err := r.validateConfig(service, doc); err != nil {
		return ConfigReport{}, err
	}
	return r.setConfigIf(ctx, service, doc, configRevision)
}

// RollbackConfig restores the configuration that had configRevision as a
// new revision, validated and notified as UpdateConfig does. The error
// matches ErrNotFound when that revision is no longer (or never was) in the
// history.
//
// Like UpdateConfig, the last writer wins: a configuration another writer
// stored after its caller decided to roll back (even one stored while the
// rollback runs) is replaced without a word. A rollback that must not erase
// a newer configuration is RollbackConfigIf.
func (r *Registry) RollbackConfig(ctx context.Context, service string, configRevision int64) (ConfigReport, error) {
	if ctx == nil {
		return ConfigReport{}, nilContext("RollbackConfig")
	}
	return r.rollback(ctx, service, configRevision, anyConfigRevision)
}

// RollbackConfigIf is RollbackConfig with a compare-and-set, as
// UpdateConfigIf is UpdateConfig's: version to is restored only if the
// service's configuration revision is still from, the one its caller read
// (Config) and decided to roll back. Otherwise nothing is stored and nobody
// notified, and the error is a ConfigConflictError matching ErrConflict,
// which names the revision stored: a fix another writer stored meanwhile,
// even while the rollback ran, is not erased. The Store must implement
// ConfigSwapper (ErrUnsupported otherwise). The error matches ErrNotFound
// when version to is no longer in the history.
func (r *Registry) RollbackConfigIf(ctx context.Context, service string, from, to int64) (ConfigReport, error) {
	if ctx == nil {
		return ConfigReport{}, nilContext("RollbackConfigIf")
	}
	if from < 0 {
		return ConfigReport{}, &ValidationError{Field: "config revision", Value: strconv.FormatInt(from, 10), Reason: "must not be negative"}
	}
	return r.rollback(ctx, service, to, from)
}

// rollback stores version to of the service's configuration as a new
// revision, if its configuration revision is want (any if
// anyConfigRevision).
func (r *Registry) rollback(ctx context.Context, service string, to, want int64) (ConfigReport, error) {
	if to < 1 { // no revision is ever below 1: bad input, not a revision the history lost
		return ConfigReport{}, &ValidationError{Field: "config revision", Value: strconv.FormatInt(to, 10), Reason: "must be at least 1"}
	}
	v, err := r.configVersion(ctx, service, to)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return ConfigReport{}, fmt.Errorf("discovery: config revision %d of service %q is not in its history (the last %d versions are kept): %w",
				to, service, r.opts.configKeep, ErrNotFound)
		}
		return ConfigReport{}, err
	}
	doc := slices.Clone(v.Config)
	if err := r.validateConfig(service, doc); err != nil {
		return ConfigReport{}, err
	}
	return r.setConfigIf(ctx, service, doc, want)
}

// configVersion reads one kept version of a service's configuration: just
// that one from a Store that can (ConfigVersionReader), else out of the
// whole history (up to 1000 versions of up to 512 KiB each, read to restore
// one).
func (r *Registry) configVersion(ctx context.Context, service string, rev int64) (ConfigVersion, error) {
	if r.closed.Load() {
		return ConfigVersion{}, ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return ConfigVersion{}, err
	}
	cs, err := r.configStore()
	if err != nil {
		return ConfigVersion{}, err
	}
	if vr, ok := cs.(core.ConfigVersionReader); ok {
		v, err := vr.ConfigVersion(ctx, service, rev)
		r.noteStoreResult("config version", err)
		return v, err
	}
	hist, err := cs.ConfigHistory(ctx, service)
	r.noteStoreResult("config history", err)
	if err != nil {
		return ConfigVersion{}, err
	}
	for _, v := range hist {
		if v.Revision == rev {
			return v, nil
		}
	}
	return ConfigVersion{}, &core.NotFoundError{Service: service}
}

// ConfigHistory returns the kept versions of a service's configuration,
// newest first (the last 20 by default). The error matches ErrNotFound if
// the service never had one, ErrUnsupported if the Store keeps none.
func (r *Registry) ConfigHistory(ctx context.Context, service string) ([]ConfigVersion, error) {
	if ctx == nil {
		return nil, nilContext("ConfigHistory")
	}
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
	if ctx == nil {
		return nil, 0, nilContext("Config")
	}
	svc, err := r.serviceData(ctx, service)
	if err != nil {
		return nil, 0, err
	}
	return slices.Clone(svc.Config), svc.ConfigRevision, nil
}

// anyConfigRevision makes setConfigIf store whatever the revision stored.
const anyConfigRevision = -1

func (r *Registry) setConfig(ctx context.Context, service string, doc []byte) (ConfigReport, error) {
	return r.setConfigIf(ctx, service, doc, anyConfigRevision)
}

// setConfigIf stores doc if the service's configuration revision is want
// (any if anyConfigRevision), and notifies the instances.
func (r *Registry) setConfigIf(ctx context.Context, service string, doc []byte, want int64) (ConfigReport, error) {
	cs, err := r.configStore()
	if err != nil {
		return ConfigReport{}, err
	}
	// From before the write to the notifications' end: notifications of a
	// newer configuration that end meanwhile leave what they sent for
	// these to see (sendOrder).
	sends := r.sends.acquire(service)
	defer r.sends.release(service, sends)
	var rev, cfgRev int64
	if want == anyConfigRevision {
		rev, cfgRev, err = cs.SetConfig(ctx, service, doc, r.clock.Now(), r.opts.configKeep)
	} else {
		sw, ok := cs.(core.ConfigSwapper)
		if !ok {
			return ConfigReport{}, fmt.Errorf("%w: the Store does not implement ConfigSwapper", ErrUnsupported)
		}
		rev, cfgRev, err = sw.SetConfigIf(ctx, service, doc, r.clock.Now(), r.opts.configKeep, want)
	}
	if err := r.written(ctx, "set config", service, rev, wroteConfig(doc, cfgRev), err); err != nil {
		if conflict := (*ConfigConflictError)(nil); errors.As(err, &conflict) {
			r.configConflict(service, conflict.Have)
		}
		return ConfigReport{}, err
	}
	r.log.Info("discovery: config changed", zap.String("service", service), zap.Int64("config_revision", cfgRev),
		zap.Int64("revision", rev), zap.Int("bytes", len(doc)))
	rep := ConfigReport{Service: service, Revision: rev, ConfigRevision: cfgRev}
	rep.Instances, rep.NotifyErr = r.notifyConfig(ctx, service, cfgRev, doc)
	return rep, nil
}

// configConflict follows a refused UpdateConfigIf, which read the
// configuration revision the database holds (have): a snapshot of this
// process with another one is stale, and is made unfit to answer as after
// a write of unknown outcome (unsettle), so that the Config its writer
// reads next, as the conflict tells it to, has the revision the conflict
// named. Left as it was, it answered the stale one until its freshness ran
// out (without Redis, after any write of another process), and each retry
// of the edit was refused in turn.
func (r *Registry) configConflict(service string, have int64) {
	if e := r.l1.get(service); e != nil && (e.raw == nil || e.raw.ConfigRevision != have) {
		r.unsettle(service)
	}
}
