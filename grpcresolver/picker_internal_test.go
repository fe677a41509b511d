package grpcresolver

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

type fakeSubConn struct{ balancer.SubConn }

// ejected reports whether the Registry has the service's only instance
// ejected.
func ejected(t *testing.T, r *discovery.Registry, service string) bool {
	t.Helper()
	hs, err := r.Health(context.Background(), service)
	if err != nil || len(hs) != 1 {
		t.Fatalf("Health = %v, %v", hs, err)
	}
	return hs[0].Ejected
}

// A call gRPC never sent says nothing about the server: gRPC ends a pick
// whose connection stopped being ready with an empty DoneInfo (and picks
// again), and a call whose stream could not be opened with an error but no
// bytes sent. Neither is a success that clears the server's failures, nor a
// failure that ejects it.
func TestPickerIgnoresCallsNeverSent(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(2, time.Minute, 5*time.Minute, 100))
	in, err := r.Register(context.Background(), discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: 50051})
	if err != nil {
		t.Fatal(err)
	}
	warm(t, r, "greeter")
	sc := fakeSubConn{}
	p := (&pickerBuilder{src: source{reg: r, service: "greeter"}}).Build(buildInfo(sc, addrOf(in.Instance())))
	call := func(di balancer.DoneInfo) {
		t.Helper()
		res, err := p.Pick(balancer.PickInfo{Ctx: context.Background()})
		if err != nil || res.SubConn != sc || res.Done == nil {
			t.Fatalf("Pick = %+v, %v; want the instance, through the Registry", res, err)
		}
		res.Done(di)
	}
	failed := balancer.DoneInfo{Err: status.Error(codes.Unavailable, "down"), BytesSent: true}
	notSent := balancer.DoneInfo{Err: status.Error(codes.Unavailable, "transport is closing")}

	call(notSent)
	call(notSent)
	if ejected(t, r, "greeter") {
		t.Fatal("ejected after two calls that were never sent")
	}
	call(failed)
	call(balancer.DoneInfo{}) // the connection was not ready: picked again
	call(failed)
	if !ejected(t, r, "greeter") {
		t.Fatal("not ejected after two failures in a row, with only a call never sent between them")
	}
}

func buildInfo(sc balancer.SubConn, addr string) base.PickerBuildInfo {
	return base.PickerBuildInfo{ReadySCs: map[balancer.SubConn]base.SubConnInfo{sc: {Address: resolver.Address{Addr: addr}}}}
}

func addrOf(in discovery.Instance) string { return in.Addr() }

// warm reads service into r's memory, as the resolver does before gRPC
// builds a picker: the picker's Pick waits for no load (NoWait), and goes
// round-robin until the Registry holds the service.
func warm(t *testing.T, r *discovery.Registry, service string) {
	t.Helper()
	if _, err := r.Get(context.Background(), service); err != nil {
		t.Fatal(err)
	}
}
