package discovery

// Hooks for the external tests (package discovery_test).

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
