package grpcresolver_test

import (
	"context"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

// A Drain in the process that dials (an instance of its own, say) dropped
// the Registry's snapshot of the service, and every call through the
// "discovery_pick" policy went round-robin over the connected servers
// until a background load landed, the one just drained and deregistered
// among them: a third of the calls here, with loads held. The Registry now
// keeps the snapshot it superseded, with its own change applied, for
// NoWait picks: no call reaches the drained server.
func TestPickCallsSkipAServerDrainedHere(t *testing.T) {
	backend := discoverytest.NewBackend()
	qs := &quietStore{Store: backend} // changes of other processes unheard; loads held while gated
	r, err := discovery.New(discovery.WithStore(qs), discovery.WithoutHealthChecks(), discovery.WithReaper(0, 0),
		discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	servers := []*server{startServer(t), startServer(t), startServer(t)}
	var drained *discovery.Registration
	for i, s := range servers {
		g, err := r.Register(context.Background(), discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: s.port})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			drained = g
		}
	}
	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	until(t, "every server connected and picked", hc, func(got []int64) bool { return got[0] > 0 && got[1] > 0 && got[2] > 0 }, servers...)

	gate := make(chan struct{})
	qs.gate.Store(&gate)
	t.Cleanup(func() { close(gate) }) // before the Registry and the conn close
	// Drain without its wait (5.5 s with neither Redis nor a notifying
	// store): the mark, then the deregistration.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := drained.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if got := served(t, hc, 60, servers...); got[0] != 0 {
		t.Fatalf("calls after the Drain went %v; want none to the drained server (the first)", got)
	}
}
