package grpcresolver_test

import (
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// gRPC's default policy, pick_first, sends every call of a ClientConn to
// the first endpoint it can connect to. The resolver ordered the endpoints
// by instance ID, the same in every process: every client of a fleet
// (each ClientConn) sent all its calls to the one instance with the lowest
// ID, and the others got none. Each resolver now orders them its own way.
func TestPickFirstClientsSpreadOverTheInstances(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	var servers []*server
	for range 5 {
		servers = append(servers, startServer(t))
	}
	registerAll(t, r, "greeter", servers...)
	for range 12 { // a fleet of clients, each with its ClientConn
		if err := checkOnce(t, r, "discovery:///greeter"); err != nil { // pick_first, gRPC's default
			t.Fatal(err)
		}
	}
	var got []int64
	used := 0
	for _, s := range servers {
		got = append(got, s.calls.Load())
		if s.calls.Load() > 0 {
			used++
		}
	}
	if used < 2 {
		t.Fatalf("12 pick_first clients sent their calls %v over 5 servers; want them spread (all on one: a chance of 1 in 4e7)", got)
	}
}
