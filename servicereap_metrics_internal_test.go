package discovery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// deleteService deregisters service's instance id from mem and has mem's
// reaper delete the service, which mem announces (Gone) to its subscribers.
func deleteService(t *testing.T, mem *memory.Store, service, id string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	if _, err := mem.Deregister(ctx, service, id); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.ReapServices(ctx, at, at.Add(-time.Minute)); err != nil { // found with nothing
		t.Fatal(err)
	}
	changes, err := mem.ReapServices(ctx, at.Add(time.Hour), at.Add(time.Minute))
	if err != nil || len(changes) != 1 || changes[0].Service != service || !changes[0].Gone {
		t.Fatalf("ReapServices = %v, %v; want %s deleted", changes, err, service)
	}
}

func putInstance(t *testing.T, mem *memory.Store, service, id string, at time.Time) {
	t.Helper()
	if _, err := mem.Register(context.Background(), &core.Instance{Service: service, ID: id, Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: at, ExpiresAt: at.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// A process that had looked a service up, and forgotten it since (evicted
// from L1: only its counts are kept, for its series), drops its series and
// those counts when it hears of its deletion, though it holds nothing to
// reload. Before, the counts, and the series, stayed for as long as the
// Registry: one entry for every service it had ever found. Stats still
// counts what the service did.
func TestDeletionOfAForgottenServiceDropsItsSeries(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	reg := prometheus.NewRegistry()
	r, clock := fakeRegistry(t, WithStore(mem), WithMetrics(reg))
	putInstance(t, mem, "ci_job", "a", clock.Now())
	putInstance(t, mem, "live", "a", clock.Now())
	for _, name := range []string{"ci_job", "ci_job", "live"} {
		if _, err := r.Get(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	sel, err := r.Pick(ctx, "ci_job")
	if err != nil {
		t.Fatal(err)
	}
	sel.Done(nil)
	e := r.l1.get("ci_job")
	r.l1.drop(e.slot.Load(), true) // as ristretto's eviction does
	if r.stateIfAny("ci_job") != nil || len(serviceCounters(t, reg, "ci_job")) == 0 {
		t.Fatal("the evicted service's state was kept, or its series went: the test evicts nothing")
	}
	live := serviceCounters(t, reg, "live")
	stats := r.Stats()

	deleteService(t, mem, "ci_job", "a", clock.Now())
	if got := serviceCounters(t, reg, "ci_job"); len(got) != 0 {
		t.Errorf("series of the deleted service: %v; want none", got)
	}
	if got := serviceCounters(t, reg, "live"); len(got) != len(live) {
		t.Errorf("series of live: %v; want %v", got, live)
	}
	r.foldMu.RLock()
	left := len(r.met.retired) + len(r.met.graves)
	r.foldMu.RUnlock()
	if left != 0 {
		t.Errorf("%d counts kept after the deletion and a scrape; want none", left)
	}
	if s := r.Stats(); s.Lookups != stats.Lookups || s.Picks != stats.Picks {
		t.Errorf("Stats after the deletion: %+v; before %+v (what the service did still counts)", s, stats)
	}
}

// A service deleted and found again (its name registered again) starts its
// series afresh once a scrape has shown them gone, and goes on from its
// counts when no scrape came in between: its counters never go back
// without a scrape that saw none, which Prometheus would read as a reset.
// A service deleted while something uses its state (a Watch) loses its
// series all the same, and counts afresh.
func TestADeletedServiceFoundAgainCountsAfresh(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	reg := prometheus.NewRegistry()
	r, clock := fakeRegistry(t, WithStore(mem), WithMetrics(reg))
	lookups := func() (n float64) { // of job, every layer
		t.Helper()
		for k, v := range serviceCounters(t, reg, "job") {
			if strings.HasPrefix(k, "discovery_lookups_total{") {
				n += v
			}
		}
		return n
	}
	lookup := func() {
		t.Helper()
		if _, err := r.Lookup(ctx, "job"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, "job"); err != nil { // an L1 hit
			t.Fatal(err)
		}
	}
	putInstance(t, mem, "job", "a", clock.Now())
	lookup()
	if got := lookups(); got != 2 {
		t.Fatalf("lookups of job = %v; want 2", got)
	}
	// Deleted and found again with no scrape in between: it goes on.
	deleteService(t, mem, "job", "a", clock.Now())
	putInstance(t, mem, "job", "b", clock.Now())
	lookup()
	if got := lookups(); got != 4 {
		t.Fatalf("lookups of job found again before a scrape = %v; want 4 (counted on)", got)
	}
	// Deleted, scraped (none), found again: afresh.
	deleteService(t, mem, "job", "b", clock.Now())
	if got := serviceCounters(t, reg, "job"); len(got) != 0 {
		t.Fatalf("series of the deleted service: %v; want none", got)
	}
	putInstance(t, mem, "job", "c", clock.Now())
	lookup()
	if got := lookups(); got != 2 {
		t.Fatalf("lookups of job found again after a scrape = %v; want 2 (a new series)", got)
	}
	// Watched: the state stays, the series go.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := r.Watch(wctx, "job"); err != nil {
		t.Fatal(err)
	}
	deleteService(t, mem, "job", "c", clock.Now())
	if r.stateIfAny("job") == nil {
		t.Fatal("the watched service's state was dropped")
	}
	if got := serviceCounters(t, reg, "job"); len(got) != 0 {
		t.Fatalf("series of the deleted, watched service: %v; want none", got)
	}
	putInstance(t, mem, "job", "d", clock.Now())
	lookup()
	if got := lookups(); got != 2 {
		t.Fatalf("lookups of the watched service found again after a scrape = %v; want 2", got)
	}
}
