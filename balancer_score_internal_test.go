package discovery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/health"
	"github.com/rssbot/discovery/internal/store/memory"
)

// Pick skips an instance whose health score is not above the minimum (0.5)
// whatever its status. A healthy instance whose checks turn slow stays
// healthy while its score falls (each check passes, at 0.1 for 1 s): the
// score crossed the minimum without a change of status, and selection,
// rebuilt on a change of status or ejection, kept picking it until the
// service's view was next reloaded (the freshness window, 5 s by default,
// made long here so that the reload does not hide it); likewise one whose
// score came back up was left out.
func TestPickFollowsAScoreThatFallsWithoutAStatusChange(t *testing.T) {
	r, clock, ids := roundRobinOf(t, 4)
	count := func() map[string]int { return pickTally(t, r, 40) }
	count()
	st := r.stateIfAny("db_svc")
	is := st.inst(ids[0])
	check := func(rtt time.Duration) {
		clock.Advance(time.Second)
		r.applyLocal(st, is, health.Check{At: clock.Now().UnixNano(), RTT: rtt, Status: core.StatusHealthy})
	}
	check(time.Millisecond) // healthy, score 1
	if got := count(); got[ids[0]] != 10 {
		t.Fatalf("the healthy instance got %d of 40 round robin picks; want 10 (%v)", got[ids[0]], got)
	}
	for is.Score() > DefaultMinScore {
		check(time.Second) // passes, slowly: 0.1 a check
	}
	if is.Status() != core.StatusHealthy {
		t.Fatalf("status %v; want healthy still", is.Status())
	}
	if got := count(); got[ids[0]] != 0 {
		t.Fatalf("the instance scoring %.2f (not above %v) got %d of 40 picks; want none (%v)", is.Score(), DefaultMinScore, got[ids[0]], got)
	}
	// and back: fast checks raise it above the minimum, again without a change of status
	for is.Score() <= DefaultMinScore {
		check(time.Millisecond)
	}
	if got := count(); got[ids[0]] != 10 {
		t.Fatalf("the instance scoring %.2f again got %d of 40 picks; want 10 (%v)", is.Score(), got[ids[0]], got)
	}
}

// The same holds when checks are turned off (Check: CheckNone): the score
// goes back to 1, and an instance that two failed checks had left at 0.56,
// unknown still (below the unhealthy threshold) and so out of selection
// with WithMinScore(0.6), stayed out with no check left to bring it back
// until the view was next reloaded.
func TestPickFollowsTheScoreOfChecksTurnedOff(t *testing.T) {
	r, clock, ids := roundRobinOf(t, 2, WithMinScore(0.6))
	picked := func() int { return pickTally(t, r, 20)[ids[0]] }
	picked()
	st := r.stateIfAny("db_svc")
	is := st.inst(ids[0])
	for range 2 {
		clock.Advance(time.Second)
		r.applyLocal(st, is, health.Check{At: clock.Now().UnixNano(), RTT: time.Millisecond, Status: core.StatusUnhealthy, Err: "refused"})
	}
	if is.Status() != core.StatusUnknown || is.Score() > 0.6 {
		t.Fatalf("after two failures: %v, score %.2f; want unknown at 0.6 or less", is.Status(), is.Score())
	}
	if n := picked(); n != 0 {
		t.Fatalf("the instance scoring %.2f got %d of 20 picks; want none", is.Score(), n)
	}
	r.forgetVerdict(st, is)
	if n := picked(); n != 10 {
		t.Fatalf("with its checks off (score %.2f) the instance got %d of 20 round robin picks; want 10", is.Score(), n)
	}
}

// roundRobinOf returns a Registry on a fake clock that picks round robin,
// its L1 fresh for an hour (no reload hides what selection does), and the
// IDs of the n instances of db_svc it finds in its store.
func roundRobinOf(t *testing.T, n int, opts ...Option) (*Registry, *fakeclock.Clock, []string) {
	t.Helper()
	mem := memory.New()
	r, clock := fakeRegistry(t, append([]Option{WithStore(mem), WithStrategy(StrategyRoundRobin), WithCacheFreshness(time.Hour, time.Hour, time.Hour)}, opts...)...)
	var ids []string
	for i := range n {
		host := fmt.Sprintf("10.0.0.%d", i+1)
		in := &core.Instance{Service: "db_svc", ID: host + ":5432", Host: host, Port: 5432, Weight: 1,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
		if _, err := mem.Register(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	return r, clock, ids
}

// pickTally picks an instance of db_svc n times and counts each one's.
func pickTally(t *testing.T, r *Registry, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		sel, err := r.Pick(context.Background(), "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		got[sel.Instance.ID]++
		sel.Done(nil)
	}
	return got
}
