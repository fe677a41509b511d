package discovery

import (
	"context"
	"strconv"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// Health defaults, with where each comes from.
const (
	// DefaultHealthInterval is how often an instance is checked (Consul,
	// Envoy). Every wait is lengthened by a random 10-20%.
	DefaultHealthInterval = 10 * time.Second
	// DefaultHealthTimeout bounds one check; it must be below the interval.
	DefaultHealthTimeout = 2 * time.Second
	// DefaultHealthyThreshold is how many passing checks in a row bring an
	// unhealthy instance back (Envoy); one is enough at start-up.
	DefaultHealthyThreshold = 2
	// DefaultUnhealthyThreshold is how many failing checks in a row make an
	// instance unhealthy (Envoy).
	DefaultUnhealthyThreshold = 3
	// DefaultEjectionFailures is how many failed calls in a row eject an
	// instance (Envoy's consecutive_5xx, gRPC A50).
	DefaultEjectionFailures = 5
	// DefaultEjectionTime is how long a first ejection lasts; the n-th lasts
	// n times as long.
	DefaultEjectionTime = 30 * time.Second
	// DefaultMaxEjectionTime caps an ejection.
	DefaultMaxEjectionTime = 300 * time.Second
	// DefaultMaxEjectionPercent is the largest share of a service's
	// instances ejected at once (at least one may always be).
	DefaultMaxEjectionPercent = 10
)

// healthOptions configure the health monitor (health_monitor.go) and
// outlier ejection (health.go).
type healthOptions struct {
	active             bool // run active checks and share results
	interval, timeout  time.Duration
	intervalBy         string // the option that set interval ("" for the default), for errors
	timeoutBy          string // the option that set timeout
	perService         map[string]svcHealthTiming
	healthy, unhealthy int

	ejectFailures int // 0 disables ejection
	ejectBase     time.Duration
	ejectMax      time.Duration
	ejectPercent  int
}

type svcHealthTiming struct{ interval, timeout time.Duration }

func defaultHealthOptions() healthOptions {
	return healthOptions{
		active: true, interval: DefaultHealthInterval, timeout: DefaultHealthTimeout,
		healthy: DefaultHealthyThreshold, unhealthy: DefaultUnhealthyThreshold,
		ejectFailures: DefaultEjectionFailures, ejectBase: DefaultEjectionTime,
		ejectMax: DefaultMaxEjectionTime, ejectPercent: DefaultMaxEjectionPercent,
	}
}

// timing returns the interval and timeout of a service's checks.
func (o *healthOptions) timing(service string) (interval, timeout time.Duration) {
	if t, ok := o.perService[service]; ok {
		return t.interval, t.timeout
	}
	return o.interval, o.timeout
}

func (o *healthOptions) validate() error {
	if err := o.validTiming(); err != nil {
		return err
	}
	for name, t := range o.perService {
		if err := core.ValidateServiceName(name); err != nil {
			return optErr("WithServiceHealth", name, "not a valid service name")
		}
		if err := validTiming("WithServiceHealth "+name, t.interval, t.timeout); err != nil {
			return err
		}
	}
	switch {
	case o.healthy < 1 || o.unhealthy < 1 || o.healthy > health.MaxThreshold || o.unhealthy > health.MaxThreshold:
		// above the maximum, the capped counters never reach it: the status never changed
		return optErr("WithHealthThresholds", strconv.Itoa(o.healthy)+"/"+strconv.Itoa(o.unhealthy), "must be 1.."+strconv.Itoa(health.MaxThreshold))
	case o.ejectFailures < 0 || o.ejectFailures > maxEjectFailures:
		// above the maximum, the failure count (an int32 kept below it, see recordOutcome) never reaches it
		return optErr("WithOutlierEjection", strconv.Itoa(o.ejectFailures), "failures must be 0.."+strconv.Itoa(maxEjectFailures)+" (0 disables ejection)")
	case o.ejectFailures > 0 && o.ejectBase <= 0:
		return optErr("WithOutlierEjection", o.ejectBase.String()+"/"+o.ejectMax.String(), "base ejection time must be positive")
	case o.ejectFailures > 0 && o.ejectMax < o.ejectBase:
		return optErr("WithOutlierEjection", o.ejectBase.String()+"/"+o.ejectMax.String(), "max ejection time must be at least the base time")
	case o.ejectFailures > 0 && o.ejectMax > MaxDuration:
		// said apart: "at most the maximum" read as the base time's bound
		// by a caller whose max was above it
		return optErr("WithOutlierEjection", o.ejectBase.String()+"/"+o.ejectMax.String(), "max ejection time must be at most "+MaxDuration.String())
	case o.ejectFailures > 0 && (o.ejectPercent < 1 || o.ejectPercent > 100):
		return optErr("WithOutlierEjection", strconv.Itoa(o.ejectPercent), "max ejection percent must be 1..100")
	}
	return nil
}

// validTiming checks the Registry's interval and timeout, naming the
// options that set them: WithHealthInterval(time.Second) alone is refused
// for the default 2 s timeout, and its error says so rather than blame a
// WithHealthCheck the caller never wrote.
func (o *healthOptions) validTiming() error {
	iName, tName := o.intervalBy, o.timeoutBy
	if iName == "" {
		iName = "WithHealthCheck"
	}
	if tName == "" {
		tName = "WithHealthCheck"
	}
	if err := timingBounds(iName, tName, o.interval, o.timeout); err != nil || o.timeout < o.interval {
		return err
	}
	v := o.timeout.String() + " >= " + o.interval.String()
	switch {
	case o.timeoutBy == "":
		return optErr(iName, v, "interval must be above the check timeout ("+DefaultHealthTimeout.String()+
			" by default; set a shorter one with WithHealthTimeout)")
	case o.intervalBy == "":
		return optErr(tName, v, "timeout must be below the check interval ("+DefaultHealthInterval.String()+" by default)")
	case o.intervalBy != o.timeoutBy:
		return optErr(iName+" and "+tName, v, "timeout must be below the interval")
	}
	return optErr(iName, v, "timeout must be below the interval")
}

func validTiming(name string, interval, timeout time.Duration) error {
	if err := timingBounds(name, name, interval, timeout); err != nil {
		return err
	}
	if timeout >= interval {
		return optErr(name, timeout.String()+" >= "+interval.String(), "timeout must be below the interval")
	}
	return nil
}

// timingBounds checks an interval and a timeout each on its own, naming the
// options that set them.
func timingBounds(intervalBy, timeoutBy string, interval, timeout time.Duration) error {
	switch {
	case interval < 100*time.Millisecond || interval > MaxDuration:
		return optErr(intervalBy, interval.String(), "interval must be 100ms.."+MaxDuration.String())
	case timeout <= 0:
		return optErr(timeoutBy, timeout.String(), "timeout must be positive")
	}
	return nil
}

// WithHealthCheck sets how often instances are checked and how long one
// check may take (10 s and 2 s by default; the timeout must be below the
// interval). It turns active checks on if WithoutHealthChecks came before.
func WithHealthCheck(interval, timeout time.Duration) Option {
	return optionFunc(func(o *options) {
		o.health.interval, o.health.timeout, o.health.active = interval, timeout, true
		o.health.intervalBy, o.health.timeoutBy = "WithHealthCheck", "WithHealthCheck"
	})
}

// WithHealthInterval sets how often instances are checked (10 s). Each
// wait is lengthened by a random 10-20%, and the first checks of a service
// are spread over one interval, so that many instances are never probed in
// one burst. It must be above the check timeout (2 s unless WithHealthTimeout
// sets it). Like WithHealthCheck, it turns active checks on.
func WithHealthInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		o.health.interval, o.health.intervalBy, o.health.active = d, "WithHealthInterval", true
	})
}

// WithHealthTimeout bounds one check (2 s); it must be below the interval.
// A check that times out fails. Like WithHealthCheck, it turns active checks
// on.
func WithHealthTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.health.timeout, o.health.timeoutBy, o.health.active = d, "WithHealthTimeout", true })
}

// WithServiceHealth sets the check interval and timeout of one service,
// overriding WithHealthCheck for it.
func WithServiceHealth(service string, interval, timeout time.Duration) Option {
	return optionFunc(func(o *options) {
		m := make(map[string]svcHealthTiming, len(o.health.perService)+1)
		for k, v := range o.health.perService {
			m[k] = v
		}
		m[service] = svcHealthTiming{interval, timeout}
		o.health.perService = m
	})
}

// WithHealthThresholds sets how many passing checks in a row bring an
// unhealthy instance back (2) and how many failing ones make it unhealthy
// (3). An instance that has never passed needs one pass. The thresholds
// set the status; selection also needs a score above WithMinScore (0.5),
// which failures (each a sample of 0) and slow passes lower before the
// status moves: with a higher unhealthy threshold an instance can show
// healthy in Get while Pick skips it. Lower WithMinScore to tolerate more.
func WithHealthThresholds(healthy, unhealthy int) Option {
	return optionFunc(func(o *options) { o.health.healthy, o.health.unhealthy = healthy, unhealthy })
}

// WithOutlierEjection sets passive outlier ejection: after failures calls
// in a row fail (5; 0 disables ejection) an instance is taken out of
// selection for baseTime times the number of times it was ejected (30 s),
// at most maxTime (300 s; from baseTime to MaxDuration); each baseTime spent
// back in selection since its last ejection forgives one of them. At most
// maxPercent of a service's instances (10%, but always at least one) are
// ejected at once. A passing active check ends an ejection early.
func WithOutlierEjection(failures int, baseTime, maxTime time.Duration, maxPercent int) Option {
	return optionFunc(func(o *options) {
		o.health.ejectFailures, o.health.ejectBase, o.health.ejectMax, o.health.ejectPercent = failures, baseTime, maxTime, maxPercent
	})
}

// WithoutHealthChecks turns the health monitor off in this Registry: it
// runs no active checks and neither publishes nor reads shared health
// results. Passive outcomes (ReportOutcome) still eject instances. Use it in
// tests that register made-up addresses, which must not be probed.
func WithoutHealthChecks() Option {
	return optionFunc(func(o *options) { o.health.active = false })
}

// WithCheckFunc gives a router instance its active health check: fn runs
// in the registering process, every health interval while the instance is
// registered, with a context that ends at the check timeout or when the
// registration ends (Deregister, Close); a nil error passes. Only this process can run
// it; with Redis, other processes see its results. fn must return soon after
// its context is done (Close waits for it within the close timeout, then
// returns a CallbackError); while a call overruns its
// timeout, the checks that fall due fail without calling fn again. A panic
// in it is a failure. A
// router instance registered without one has no active check (its lease
// and passive outcomes still count), unless its Check is CheckHTTP or
// CheckTCP. Register refuses fn for an HTTP instance, and for a router
// instance whose Check is not CheckDefault: either would ignore it; and a
// second WithCheckFunc, which would replace the first (combine the checks
// in one function).
func WithCheckFunc(fn func(ctx context.Context) error) RegisterOption {
	return regOptionFunc(func(o *regOptions) {
		o.noteTwice("check func", o.check != nil)
		o.check = fn
		o.noteNil("check func", fn == nil)
	})
}
