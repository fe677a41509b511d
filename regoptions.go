package discovery

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// RegisterOption configures one registration. Each of them gives the
// registration's one function of its kind (WithCheckFunc, WithConfigFunc,
// WithHandler): Register refuses one given twice (ErrInvalid), which would
// replace the first, where New's options, each over a default, keep the
// last.
type RegisterOption interface{ applyRegister(*regOptions) }

type regOptionFunc func(*regOptions)

func (f regOptionFunc) applyRegister(o *regOptions) { f(o) }

// regOptions are the in-process parts of a registration: they live in the
// registering process only and are never stored.
type regOptions struct {
	// check is the in-process health check of a router instance (health.go).
	check func(ctx context.Context) error
	// onConfig receives the service's new configuration (config.go).
	onConfig func(ctx context.Context, config json.RawMessage) error
	// handler serves requests to a router instance in-process (balancer.go).
	handler http.Handler
	// nilField is the field of the first option given nil ("check func",
	// "config func", "handler"), for checkRegOptions.
	nilField firstNil
	// twice is the field of the first option given again ("check func",
	// ...), for checkRegOptions: each is the instance's one function, and
	// the later one replaced the earlier, silently (an instance given a
	// check of its database, then one of its cache, was checked for its
	// cache alone).
	twice firstNil
}

// noteNil remembers the first registration option given nil.
func (o *regOptions) noteNil(field string, isNil bool) { o.nilField.note(field, isNil) }

// noteTwice remembers the first registration option given again (set: the
// field was already set by an earlier one).
func (o *regOptions) noteTwice(field string, set bool) { o.twice.note(field, set) }

// checkRegOptions refuses registration options that do not fit the
// instance: each would be ignored, and the caller would believe it applied.
func checkRegOptions(in *core.Instance, ro *regOptions) error {
	router := in.Method == core.MethodRouter
	switch {
	case ro.nilField != "":
		// Taken for the option left out, it would be ignored: a router
		// instance without the check, callback or handler meant for it.
		return &ValidationError{Field: string(ro.nilField), Value: "nil", Reason: "must not be nil; leave the option out for none"}
	case ro.twice != "":
		// Unlike New's options, these have no default for a later one to
		// override: a second is another function the caller meant to run,
		// and the first would be dropped (as grpc's server refuses a
		// second UnaryInterceptor).
		return &ValidationError{Field: string(ro.twice), Value: "given twice",
			Reason: "a registration takes one; the later would replace the earlier: combine them in one function"}
	case ro.handler != nil && core.IsNil(ro.handler):
		return &ValidationError{Field: "handler", Value: "nil", Reason: "WithHandler needs a non-nil http.Handler"}
	case ro.onConfig != nil && !router:
		return &ValidationError{Field: "config func", Value: in.Method.String(),
			Reason: "only router instances take WithConfigFunc; HTTP instances get POST " + ConfigReloadPath}
	case ro.handler != nil && !router:
		return &ValidationError{Field: "handler", Value: in.Method.String(),
			Reason: "only router instances take WithHandler; requests to HTTP instances go over the network"}
	case ro.check != nil && !router:
		return &ValidationError{Field: "check func", Value: in.Method.String(),
			Reason: "only router instances take WithCheckFunc; HTTP instances are checked with GET HealthPath"}
	case ro.check != nil && in.Check != core.CheckDefault:
		return &ValidationError{Field: "check func", Value: in.Check.String(),
			Reason: "WithCheckFunc is the instance's check; leave Check at its default"}
	}
	return nil
}

// checkHealthPath refuses a HealthPath that no check of the instance uses:
// only an HTTP check (Check http, or the default check of an HTTP
// instance) reads it. Stored and never used, it let the caller believe
// that its path (a readiness endpoint, say) decided the instance's health,
// where a TCP connect, the router's function or nothing did. kept is the
// path that does not count as given: the one the instance had, for an
// Update that changes only the kind of check (a path kept while checks are
// off is still the one checked when they are on again). The default path
// is no choice (Register fills it in for every HTTP instance, and
// instances read back carry it), and is taken whatever the check. A
// Registry's WithoutHealthChecks is no reason to refuse: the instance is
// stored, and the other processes check it.
func checkHealthPath(in *core.Instance, kept string) error {
	p := in.HealthPath
	if p == "" || p == core.DefaultHealthPath || p == kept || health.KindOf(in, true) == health.KindHTTP {
		return nil
	}
	check := in.Check.String()
	if in.Check == core.CheckDefault { // a router's: its function
		check = "the router's check function"
	}
	return &ValidationError{Field: "health path", Value: p,
		Reason: "only HTTP checks use it (Check http, or the default check of an http instance); this instance's check is " + check + ": leave HealthPath empty"}
}
