package discovery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// Draining answers from what Watch delivered when L1 has let the service
// go (an eviction while it is watched): a watcher that asks about the
// suspects it was told of (a gRPC resolver) still learns that the lapsed
// ones drain, where L1 alone knew nothing and they were taken as usable.
func TestDrainingAfterAnEvictionOfAWatchedService(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem), WithReaper(0, 0))
	t0, ttl := clock.Now(), DefaultLeaseTTL
	for i := range 10 {
		in := core.Instance{ID: fmt.Sprintf("i%02d", i), Service: "db_svc", Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if i < 3 { // drained, then lapsed together
			in.Status, in.ExpiresAt = core.StatusDraining, t0.Add(ttl+time.Duration(i)*time.Second)
		}
		if _, err := mem.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(t0.Add(ttl + 3*time.Second))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	for added := 0; added < 10; {
		ev := <-ch
		if ev.Kind != EventInstanceAdded {
			t.Fatalf("event %v; want the 10 additions first", ev.Kind)
		}
		if ev.Instance.ID == "i00" && ev.Instance.Status != core.StatusSuspect {
			t.Fatalf("i00 added as %s; want suspect", ev.Instance.Status)
		}
		added++
	}
	if !r.Draining("db_svc", "i00") {
		t.Fatal("Draining(i00) = false with L1 holding the service")
	}
	r.l1.remove(r.l1.get("db_svc"))
	if r.l1.get("db_svc") != nil {
		t.Fatal("the service is still in L1")
	}
	if !r.Draining("db_svc", "i00") || r.Draining("db_svc", "i03") {
		t.Fatalf("after an eviction: Draining(i00) = %v, Draining(i03) = %v; want true, false",
			r.Draining("db_svc", "i00"), r.Draining("db_svc", "i03"))
	}
}
