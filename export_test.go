package discovery

import "math"

// Hooks for the external tests (package discovery_test).

// SetInstanceHealth sets an instance's health in this process, as the
// health monitor would, for tests of selection.
func SetInstanceHealth(r *Registry, service, id string, s Status, score float64) {
	st := r.state(service)
	is := st.instOrNew(id)
	is.status.Store(uint32(s))
	is.score.Store(math.Float64bits(score))
	r.instancesChanged(st)
}

// SettleHealth runs the health monitor's due work at the clock's current
// time and waits for the checks and syncs it started.
func SettleHealth(r *Registry) { r.hm.settle() }

// HealthCorrupt counts shared health states and messages that did not decode.
func HealthCorrupt(r *Registry) uint64 {
	if r.hm.share == nil {
		return 0
	}
	return r.hm.share.corrupt.Load()
}

// HealthSharing reports whether r shares health results through Redis and
// its last Redis call for it succeeded.
func HealthSharing(r *Registry) bool { return r.hm.share != nil && !r.hm.share.failing.Load() }
