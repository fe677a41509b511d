package discovery

import (
	"time"

	"github.com/rssbot/discovery/internal/health"
)

// Hooks for the observability tests (package discovery_test).

// InjectCheck applies one active-check result to an instance in this
// process, as if the health monitor had run it at the clock's time, for
// deterministic tests of what health shows.
func InjectCheck(r *Registry, service, id string, s Status, rtt time.Duration, errText string) {
	st := r.state(service)
	is := st.instOrNew(id)
	r.applyLocal(st, is, health.Check{At: r.clock.Now().UnixNano(), RTT: rtt, Status: s, Err: errText})
}
