package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// Instances kept as suspects (their leases lapsed together: a partition)
// are still checked: dead ones turn unhealthy within the usual three failed
// checks and leave selection, as the README's failure modes promise
// ("health checks still take dead ones out"). The monitor checked only
// instances whose lease ran when the snapshot was read, so a suspect lost
// its checks at the first reload after its lapse and kept its last verdict,
// healthy, for the whole grace: picked while dead.
func TestSuspectsAreStillChecked(t *testing.T) {
	for _, k := range []worldKind{allWorlds[0], allWorlds[2]} {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			grace := 3 * time.Minute // long enough for the checks to speak before it ends
			r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout),
				discovery.WithReaper(0, 0), discovery.WithSelfPreservation(0.15, grace), discovery.WithStrategy(discovery.StrategyRoundRobin))
			ttl := discovery.DefaultLeaseTTL
			var servers []*probeServer
			var ids []string
			for i := range 10 {
				p := newProbeServer(t, "")
				in := p.instance("web")
				if i < 3 {
					in.ExpiresAt = t0.Add(ttl) // these three stop renewing together
				}
				addInstance(t, r, in)
				servers = append(servers, p)
				ids = append(ids, in.ID)
			}
			use := func() {
				if _, err := r.Get(ctx, "web"); err != nil {
					t.Fatal(err)
				}
			}
			use()
			for clock.Now().Before(t0.Add(ttl)) {
				step(clock, hStep, r)
				use()
			}
			for i := range 3 {
				if h := healthOf(t, r, "web", ids[i]); h.Status != discovery.StatusHealthy {
					t.Fatalf("%s is %v before its lapse; want healthy", ids[i], h.Status)
				}
				servers[i].kill() // gone with the partition
			}
			// Three failed checks, each 1.1-1.2 intervals apart after the
			// first, which comes within 1.2 intervals.
			for end := clock.Now().Add(4 * hInterval); clock.Now().Before(end); {
				step(clock, hStep, r)
				use()
			}
			for i := range 3 {
				h := healthOf(t, r, "web", ids[i])
				if h.Shown != discovery.StatusSuspect {
					t.Fatalf("%s shows %v; want suspect (kept for %v)", ids[i], h.Shown, grace)
				}
				if h.Status != discovery.StatusUnhealthy {
					t.Fatalf("%s, dead for %v and kept as a suspect, is %v (last checked %v after t0, %d checks answered); want unhealthy",
						ids[i], 4*hInterval, h.Status, h.LastCheck.Sub(t0), servers[i].hits.Load())
				}
			}
			for range 50 {
				sel, err := r.Pick(ctx, "web")
				if err != nil {
					t.Fatal(err)
				}
				sel.Done(nil)
				for _, id := range ids[:3] {
					if sel.Instance.ID == id {
						t.Fatalf("picked %s, a dead suspect its checks found unhealthy", id)
					}
				}
			}
		})
	}
}
