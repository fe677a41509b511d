package grpcresolver

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

type stateConn struct {
	resolver.ClientConn
	states chan resolver.State
}

func (c *stateConn) UpdateState(s resolver.State) error { c.states <- s; return nil }
func (c *stateConn) ReportError(error)                  {}

// With most of a service's instances ejected, Registry.Pick panics and
// chooses among every live one, the ejected too, which the resolver never
// resolved and gRPC never connected: the picker gave up on Pick after
// three of them and sent the call round-robin, its outcome fed to no
// outlier detection or latency average (a quarter of the calls with three
// of four instances ejected, most of them with more). Pick must choose
// among the resolved instances only.
func TestPickerPicksAmongTheResolvedWhenMostAreEjected(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(1, time.Minute, 5*time.Minute, 100))
	var ids []string
	for port := 50051; port < 50055; port++ {
		in, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: port})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.Instance().ID)
	}
	if _, err := r.Get(ctx, "greeter"); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[1:] {
		if err := r.ReportOutcome("greeter", id, errors.New("down"), 0); err != nil {
			t.Fatal(err)
		}
	}
	cc := &stateConn{states: make(chan resolver.State, 64)}
	res, err := NewBuilder(r).Build(resolver.Target{URL: url.URL{Scheme: Scheme, Path: "/greeter"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var st resolver.State
	for deadline := time.After(10 * time.Second); len(st.Addresses) != 1; {
		select {
		case st = <-cc.states:
		case <-deadline:
			t.Fatalf("no update with the one instance not ejected; last %v", st.Addresses)
		}
	}
	src, _ := st.Attributes.Value(sourceKey{}).(source)
	sc := fakeSubConn{}
	p := (&pickerBuilder{src: src}).Build(buildInfo(sc, st.Addresses[0].Addr))
	allPickedByTheRegistry(ctx, t, p, sc)
}
