package grpcresolver

import (
	"context"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// While some resolved instances are not connected yet (a client starting,
// a server restarting), Pick chose among all of them and, finding three
// not connected, the call went round-robin with its outcome fed nowhere.
// Pick must choose among the connected ones.
func TestPickerPicksAmongTheConnected(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	var resolved []resolvedAddr
	for port := 50051; port < 50055; port++ {
		in, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: port})
		if err != nil {
			t.Fatal(err)
		}
		inst := in.Instance()
		resolved = append(resolved, resolvedAddr{addr: inst.Addr(), id: inst.ID})
	}
	warm(t, r, "greeter")
	pb := &pickerBuilder{src: source{reg: r, service: "greeter", resolved: resolved}}
	sc := fakeSubConn{}
	p := pb.Build(buildInfo(sc, resolved[0].addr)) // the others still connecting
	allPickedByTheRegistry(ctx, t, p, sc)
}

// allPickedByTheRegistry fails t unless each of 200 picks of p goes to sc,
// the one connected instance, picked by the Registry (with a Done that
// feeds its outcome back), not round-robin.
func allPickedByTheRegistry(ctx context.Context, t *testing.T, p balancer.Picker, sc balancer.SubConn) {
	t.Helper()
	roundRobin := 0
	for range 200 {
		res, err := p.Pick(balancer.PickInfo{Ctx: ctx})
		if err != nil || res.SubConn != sc {
			t.Fatalf("Pick = %+v, %v; want the one connected instance", res, err)
		}
		if res.Done == nil {
			roundRobin++
			continue
		}
		res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})
	}
	if roundRobin > 0 {
		t.Fatalf("%d of 200 calls went round-robin, their outcome fed nowhere; want every one picked by the Registry", roundRobin)
	}
}
