package grpcresolver_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

// A target with parts the resolver has no use for is refused, with an
// error that says which part, rather than resolved as if they were not
// there: "discovery://greeter" (two slashes, the service taken for an
// authority) failed with "invalid service name: must not be empty", and
// "discovery://other/greeter", "discovery:///greeter?zone=eu" or
// "discovery:///greeter#eu" resolved every instance of greeter, the
// authority and the zone silently dropped.
func TestTargetWithPartsTheResolverDoesNotUseIsRefused(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	s := startServer(t)
	registerAll(t, r, "greeter", s)
	tests := []struct {
		target string
		want   string // in the call's error; "" for a call that succeeds
	}{
		{"discovery:///greeter", ""},
		{"discovery:greeter", ""},
		{"DISCOVERY:///greeter", ""},
		{"discovery://greeter", `"discovery:///greeter"`},
		{"discovery://other/greeter", "authority"},
		{"discovery:///greeter?zone=eu", "query"},
		{"discovery:///greeter#eu", "fragment"},
	}
	for _, tt := range tests {
		err := checkOnce(t, r, tt.target)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v; want a call that succeeds", tt.target, err)
		case tt.want != "" && (status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v; want UNAVAILABLE, saying %s", tt.target, err, tt.want)
		}
	}
}

// Build's error for such a target matches ErrInvalid.
func TestBuildRefusesAnAuthorityOrAQuery(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	for _, target := range []string{"discovery://greeter", "discovery://other/greeter", "discovery:///greeter?zone=eu", "discovery:///greeter#eu"} {
		if _, err := buildTarget(r, target); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("Build(%s) = %v; want ErrInvalid", target, err)
		}
	}
}

// buildTarget builds a resolver of target on r, closed at once if built.
func buildTarget(r *discovery.Registry, target string) (resolver.Resolver, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	res, err := grpcresolver.NewBuilder(r).Build(resolver.Target{URL: *u}, &recordingConn{updates: make(chan resolver.State, 64)}, resolver.BuildOptions{})
	if err == nil {
		res.Close()
	}
	return res, err
}

// checkOnce makes one health call to target through a ClientConn of its
// own, on r's resolver and gRPC's default balancer, and closes it.
func checkOnce(t *testing.T, r *discovery.Registry, target string) error {
	t.Helper()
	conn, err := grpc.NewClient(target,
		grpc.WithResolvers(grpcresolver.NewBuilder(r)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}
