package discovery

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/store/sqlstore"
)

// Hooks for the external tests (package discovery_test).

// SetInstanceHealth sets an instance's health in this process, as the
// health monitor would, for tests of selection.
func SetInstanceHealth(r *Registry, service, id string, s Status, score float64) {
	st := r.state(service)
	is := st.instOrNew(id)
	is.status.Store(uint32(s))
	is.score.Store(math.Float64bits(score))
	is.updateHBase()
	r.instancesChanged(st)
}

// SettleHealth runs the health monitor's due work at the clock's current
// time and waits for the checks and syncs it started.
func SettleHealth(r *Registry) { r.hm.settle() }

// StepHealth runs the health monitor's due work at the clock's current time
// and returns without waiting for the checks and syncs it started.
func StepHealth(r *Registry) {
	done := make(chan struct{})
	select {
	case r.hm.settleCh <- done:
		<-done
	case <-r.ctx.Done():
	}
}

// HealthJobs is the number of health checks, syncs and leaves running.
func HealthJobs(r *Registry) int64 { return r.hm.busy.Load() }

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

// ReapBefore is the reaper's cutoff at now.
func ReapBefore(r *Registry, now time.Time) time.Time { return r.reapBefore(now.UnixNano()) }

// NoteStore records the outcome of a database call as the Registry's own
// calls do (nil: it answered).
func NoteStore(r *Registry, err error) {
	if err != nil {
		r.noteStoreErr("test", err)
	} else {
		r.noteStoreOK()
	}
}

// HeldByOutage reports whether an instance whose lease ended at exp is
// kept as a suspect at now because of a database outage.
func HeldByOutage(r *Registry, exp, now time.Time) bool {
	return r.heldByOutage(exp.UnixNano(), now.UnixNano())
}

// SetInstanceRTT sets the last response time of an instance's checks in
// this process, as the health monitor would.
func SetInstanceRTT(r *Registry, service, id string, rtt time.Duration) {
	st := r.state(service)
	is := st.instOrNew(id)
	is.rtt.Store(int64(rtt))
	is.updateHBase()
	r.instancesChanged(st)
}

// InFlight is an instance's count of requests in flight in this process.
func InFlight(r *Registry, service, id string) int64 {
	return r.state(service).instOrNew(id).inflight.Load()
}

// LatencyAverage is an instance's peak-EWMA latency in this process, as its
// last sample left it (0 before any).
func LatencyAverage(r *Registry, service, id string) time.Duration {
	return time.Duration(math.Float64frombits(r.state(service).instOrNew(id).ewma.Load()))
}

// Retried returns the retries a Registry's Transport has made.
func Retried(rt http.RoundTripper) uint64 { return rt.(*transport).retried.Load() }

// FillTLSClones makes n per-host-name clones of base ("filler-0", ...), as
// n https requests to other host names would: past maxTLSClones, those
// used least recently are evicted.
func FillTLSClones(r *Registry, base *http.Transport, n int) {
	for i := range n {
		r.pools.clone(base, "filler-"+strconv.Itoa(i))
	}
}

// MaxTLSClones is maxTLSClones.
const MaxTLSClones = maxTLSClones

// MigrationLockSQL is the statement that takes the PostgreSQL advisory lock
// a migration of namespace ns holds until its transaction ends, and its
// parameter: a test runs it in a transaction of its own to stand for
// another process's migration under way.
func MigrationLockSQL(db *gorm.DB, ns string) (string, int64) {
	s, err := sqlstore.New(db, ns+"_", 0)
	if err != nil {
		panic(err)
	}
	expr, key := s.LockSQL("migrate")
	return "SELECT pg_advisory_xact_lock(" + expr + ")", key
}
