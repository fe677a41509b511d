package discovery

import (
	"context"
	"errors"
	"time"
)

// ErrOverloaded marks an outcome where the instance asked for less traffic
// (HTTP 429): it counts against the instance's load, not its health.
var ErrOverloaded = errors.New("discovery: instance overloaded")

// outcome is how one call to an instance ended, for passive health.
type outcome uint8

const (
	outcomeSuccess outcome = iota
	outcomeFailure
	outcomeOverload
	outcomeCanceled // the caller gave up: not the instance's failure
)

// classify maps a call's error to an outcome.
func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeSuccess
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, ErrOverloaded):
		return outcomeOverload
	}
	return outcomeFailure
}

// Passive outlier detection defaults (Envoy's, gRPC A50's).
const (
	ejectAfter       = 5
	ejectBase        = 30 * time.Second
	ejectMax         = 300 * time.Second
	ejectMaxFraction = 0.10
)

// healthDetail is the part of an instance's health state that only health
// code reads and writes, under instState.hmu.
type healthDetail struct {
	failures     int // consecutive passive failures
	timesEjected int
}

// recordOutcome feeds passive health: consecutive failures eject an
// instance for 30 s x times ejected (at most 300 s), with at most 10% of a
// service's instances (at least one) ejected at once. A success costs one
// uncontended lock.
func (r *Registry) recordOutcome(st *svcState, is *instState, o outcome, _ time.Duration) {
	switch o {
	case outcomeSuccess:
		is.hmu.Lock()
		is.health.failures = 0
		is.hmu.Unlock()
	case outcomeFailure:
		is.hmu.Lock()
		is.health.failures++
		eject := is.health.failures >= ejectAfter
		is.hmu.Unlock()
		if eject {
			r.tryEject(st, is)
		}
	}
}

// tryEject ejects is unless the cap of ejected instances is reached.
func (r *Registry) tryEject(st *svcState, is *instState) {
	now := r.clock.Now().UnixNano()
	st.mu.Lock()
	insts := st.insts.Load()
	ejected, total := 0, 0
	if insts != nil {
		for _, o := range *insts {
			total++
			if o.ejected(now) {
				ejected++
			}
		}
	}
	limit := max(1, int(float64(total)*ejectMaxFraction))
	if is.ejected(now) || ejected >= limit {
		st.mu.Unlock()
		return
	}
	is.hmu.Lock()
	is.health.timesEjected++
	d := min(ejectBase*time.Duration(is.health.timesEjected), ejectMax)
	is.health.failures = 0
	is.hmu.Unlock()
	is.ejectedUntil.Store(now + int64(d))
	st.mu.Unlock()
	r.instancesChanged(st)
}
