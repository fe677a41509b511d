package discovery

import "math"

// SetInstanceHealth sets an instance's health in this process, as the
// health monitor would, for tests of selection.
func SetInstanceHealth(r *Registry, service, id string, s Status, score float64) {
	st := r.state(service)
	is := st.instOrNew(id)
	is.status.Store(uint32(s))
	is.score.Store(math.Float64bits(score))
	r.instancesChanged(st)
}
