package discovery_test

import (
	"context"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// Only processes that use a service share the probing of its instances. A
// process that registers a router instance of the service with a check
// function, and does not look the service up, checks its own instance and
// nothing else: counted among the probers, it was handed the service's other
// instances by rendezvous hashing and never checked them, and an instance
// handed to two such processes was checked by nobody.
func TestOwnRouterInstancesDoNotMakeAProber(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
			user := w.registry(t)
			regs := []*discovery.Registry{user}
			var servers []*probeServer
			for range 12 {
				p := newProbeServer(t, "")
				addInstance(t, user, p.instance("web"))
				servers = append(servers, p)
			}
			for i := range 4 { // processes serving the service in-process, not calling it
				r := w.registry(t)
				regs = append(regs, r)
				if _, err := r.Register(ctx, discovery.Instance{Service: "web", Host: "10.7.0.1", Port: 9 + i, Method: discovery.MethodRouter},
					discovery.WithCheckFunc(func(context.Context) error { return nil })); err != nil {
					t.Fatal(err)
				}
			}
			if svc, err := user.Get(ctx, "web"); err != nil || len(svc.Instances) != 16 {
				t.Fatalf("Get: %v, %d instances; want 16", err, len(svc.Instances))
			}
			// Registering wrote the service into each registrant's cache,
			// which counts as using it for 35 s; then they check their own
			// instances only.
			for end := clock.Now().Add(6 * hInterval); clock.Now().Before(end); {
				step(clock, hStep, regs...)
				if _, err := user.Get(ctx, "web"); err != nil {
					t.Fatal(err)
				}
			}
			before := make([]int64, len(servers))
			for i, p := range servers {
				before[i] = p.hits.Load()
			}
			for end := clock.Now().Add(3 * hInterval); clock.Now().Before(end); {
				step(clock, hStep, regs...)
				if _, err := user.Get(ctx, "web"); err != nil {
					t.Fatal(err)
				}
			}
			for i, p := range servers {
				if n := p.hits.Load() - before[i]; n < 2 {
					t.Fatalf("instance %d of 12 checked %d times in 3 intervals by the only process using the service; want at least 2", i, n)
				}
			}
		})
	}
}
