package discovery

import (
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// Two processes probe an instance and share one state through Redis; one's
// clock runs a minute ahead of the other's. Every result they fold into the
// shared state reaches each process's history, in the order the shared
// state took them (the order that moved the status). The history took a
// result only if it was stamped later than the newest it held: every
// result of the prober behind was left out for a minute after each of the
// other's, though its failures made the instance unhealthy.
func TestHistoryKeepsResultsOfAProberWithASkewedClock(t *testing.T) {
	r, clock := fakeRegistry(t)
	now := clock.Now().UnixNano()
	ahead, behind := now+int64(time.Minute), now
	results := []health.Check{
		{At: ahead + int64(time.Second), RTT: time.Millisecond, Status: core.StatusHealthy},
		{At: behind + 5*int64(time.Second), RTT: 2 * time.Second, Status: core.StatusUnhealthy, Err: "timeout"},
		{At: behind + 15*int64(time.Second), RTT: 2 * time.Second, Status: core.StatusUnhealthy, Err: "timeout"},
		{At: ahead + 11*int64(time.Second), RTT: time.Millisecond, Status: core.StatusHealthy},
	}
	st := r.state("web")
	is := st.instOrNew("10.0.0.1:80")
	s := health.New()
	th := health.Thresholds{Healthy: 2, Unhealthy: 3}
	for i, c := range results { // as the probers fold them in, one write each
		s = s.Clone()
		s.Apply(c, th)
		s.Seq = int64(i + 1)
		if !r.adoptShared(st, is, s, "") {
			t.Fatalf("state %d not adopted", s.Seq)
		}
	}
	var h InstanceHealth
	h.fill(is, clock.Now().UnixNano())
	if len(h.History) != len(results) {
		t.Fatalf("history holds %d results; want the %d the shared state took: %+v", len(h.History), len(results), h.History)
	}
	for i, c := range results {
		if got := h.History[i]; got.At.UnixNano() != c.At || got.Status != c.Status {
			t.Errorf("history[%d] = %v at %v; want %v at %v", i, got.Status, got.At, c.Status, time.Unix(0, c.At))
		}
	}
	// Adopting a state again, or one with nothing new, adds nothing.
	if r.adoptShared(st, is, s, "") {
		t.Fatal("the same state adopted twice")
	}
	h = InstanceHealth{}
	h.fill(is, clock.Now().UnixNano())
	if len(h.History) != len(results) {
		t.Fatalf("history holds %d results after a repeat; want %d", len(h.History), len(results))
	}
}
