package grpcresolver_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

// errorConn is a recordingConn that also keeps the errors reported.
type errorConn struct {
	recordingConn
	errs chan error
}

func (c *errorConn) ReportError(err error) { c.errs <- err }

// When WithFilter leaves out every live instance, the error says so: it
// said "no healthy instances of service "greeter" (2 live)", sending the
// reader to the health of instances that are sound, and left out.
func TestErrorSaysTheFilterLeftEveryInstanceOut(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	for _, port := range []int{1001, 1002} {
		if _, err := r.Register(context.Background(), discovery.Instance{Service: "greeter", Host: "10.0.0.1", Port: port, Zone: "us"}); err != nil {
			t.Fatal(err)
		}
	}
	cc := &errorConn{recordingConn: recordingConn{updates: make(chan resolver.State, 64)}, errs: make(chan error, 64)}
	b := grpcresolver.NewBuilder(r, grpcresolver.WithFilter(func(in discovery.Instance) bool { return in.Zone == "eu" }))
	res, err := b.Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/greeter"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	select {
	case err := <-cc.errs:
		if !errors.Is(err, discovery.ErrNoHealthyInstances) || !strings.Contains(err.Error(), "WithFilter") {
			t.Fatalf("error %q; want ErrNoHealthyInstances, saying WithFilter left every instance out", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no error reported")
	}
}
