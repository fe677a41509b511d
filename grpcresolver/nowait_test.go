package grpcresolver_test

import (
	"context"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

// A call through the "discovery_pick" policy while the database does not
// answer (black-holed: its loads wait a minute) and the service's entry is
// past its stale window: its pick loaded the service inside gRPC's picker,
// which must not block, and the call waited there until its own deadline
// (or the load timeout) instead of going to a server that was up all
// along. It now goes to the server within its deadline.
func TestPickCallDoesNotWaitForTheDatabase(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	qs := &quietStore{Store: backend}
	r, err := discovery.New(discovery.WithStore(qs), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	srv := startServer(t)
	in := discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: srv.port, Weight: 100, RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := backend.Register(context.Background(), &in); err != nil {
		t.Fatal(err)
	}
	c := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	served(t, c, 1, srv)

	gate := make(chan struct{})
	qs.gate.Store(&gate)
	t.Cleanup(func() { close(gate) }) // before the Registry and the conn close
	clock.Advance(time.Minute)        // past the stale window (35 s), within stale-if-error (5 min)

	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			t.Fatalf("call %d with the database black-holed: %v; want the server's answer, the pick made from what the Registry holds", i+1, err)
		}
	}
}
