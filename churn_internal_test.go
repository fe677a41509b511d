package discovery

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// Tests of a process that runs for weeks: what it keeps per service or per
// instance goes once the service or instance is gone and unused.

// churnInterval is the health interval of the churn tests: short, so that
// the fake clock passes a service's use in a few steps.
const churnInterval = time.Second

// sharedChurnRegistry returns a Registry that shares health results
// through Redis, on a fake clock, over a store of its own.
func sharedChurnRegistry(t *testing.T) (*Registry, *fakeclock.Clock, *memory.Store) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(WithStore(mem), WithRedis(rdb), WithNamespace(ns), WithClock(clock), WithCloseDrain(0),
		WithHealthCheck(churnInterval, churnInterval/2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if r.hm.share == nil {
		t.Fatal("health results are not shared through Redis")
	}
	return r, clock, mem
}

// churnName is the name of the i-th short-lived service.
func churnName(i int) string { return "churn_" + strconv.Itoa(i) }

// syncMapLen counts a sync.Map's entries.
func syncMapLen(m interface {
	Range(func(any, any) bool)
}) int {
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}

// A process that shares health results reads a service's shared states at
// most once an interval, and remembers when it last did; once the service
// is no longer used (gone, or no longer looked up), that memory goes with
// the monitor's. Kept, a process that looked up a stream of short-lived
// services (one per deployment, per tenant, per job) held one entry for
// every name it had ever checked, for as long as it ran.
func TestSharedHealthForgetsTheReadsOfServicesNoLongerUsed(t *testing.T) {
	ctx := context.Background()
	r, clock, mem := sharedChurnRegistry(t)
	const services = 200
	for i := range services {
		name := churnName(i)
		if _, err := mem.Register(ctx, &core.Instance{Service: name, ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
			Check: core.CheckNone, RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Health(ctx, name); err != nil { // looked up, and its shared states read
			t.Fatal(err)
		}
		r.hm.settle() // the monitor takes it on, and syncs it
	}
	if n := syncMapLen(&r.hm.share.lastRead); n != services {
		t.Fatalf("%d services checked, %d reads remembered: the test does not read what it means to", services, n)
	}
	// Nothing looks any of them up again: past their use, the monitor
	// drops them.
	for range 3 {
		clock.Advance(time.Duration(r.hm.usedFor(churnInterval)) + scanEvery)
		r.hm.settle()
	}
	if n := len(r.hm.svcs); n != 0 {
		t.Fatalf("the monitor still checks %d services nobody uses", n)
	}
	if n := syncMapLen(&r.hm.share.lastRead); n != 0 {
		t.Fatalf("%d services no longer used, yet this process remembers its reads of the shared health of %d", services, n)
	}
}
