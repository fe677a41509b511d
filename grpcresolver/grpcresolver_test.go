package grpcresolver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

func TestMain(m *testing.M) {
	grpcresolver.RegisterBalancer()
	goleak.VerifyTestMain(m)
}

// server is a real gRPC server on a loopback port that counts the calls it
// serves.
type server struct {
	port  int
	calls atomic.Int64
}

func startServer(t *testing.T) *server { return startServerWith(t, nil) }

// startFailableServer starts a server that answers err once the returned
// flag is set, and succeeds until then.
func startFailableServer(t *testing.T, err error) (*server, *atomic.Bool) {
	t.Helper()
	failing := new(atomic.Bool)
	srv := startServerWith(t, func() error {
		if failing.Load() {
			return err
		}
		return nil
	})
	return srv, failing
}

// startServerWith runs before each call's handler; its error is the call's.
func startServerWith(t *testing.T, before func() error) *server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{port: lis.Addr().(*net.TCPAddr).Port}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		if before != nil {
			if err := before(); err != nil {
				return nil, err
			}
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return s
}

func dial(t *testing.T, reg *discovery.Registry, target string, opts ...grpcresolver.Option) healthpb.HealthClient {
	return dialPolicy(t, reg, target, "round_robin", opts...)
}

func dialPolicy(t *testing.T, reg *discovery.Registry, target, policy string, opts ...grpcresolver.Option) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(target,
		grpc.WithResolvers(grpcresolver.NewBuilder(reg, opts...)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"`+policy+`": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// served makes n calls and returns how many each server got.
func served(t *testing.T, c healthpb.HealthClient, n int, servers ...*server) []int64 {
	t.Helper()
	before := make([]int64, len(servers))
	for i, s := range servers {
		before[i] = s.calls.Load()
	}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	out := make([]int64, len(servers))
	for i, s := range servers {
		out[i] = s.calls.Load() - before[i]
	}
	return out
}

// until waits (up to 10 s) for cond over batches of 30 calls.
func until(t *testing.T, what string, c healthpb.HealthClient, cond func(got []int64) bool, servers ...*server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []int64
	for time.Now().Before(deadline) {
		if got = served(t, c, 30, servers...); cond(got) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: the last 30 calls went %v", what, got)
}

// The client follows the registry: every registered instance gets calls; a
// deregistered one and a draining one get none; one registered later gets
// its share; with none left, calls fail with UNAVAILABLE and say why.
func TestClientFollowsTheRegistry(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	opts := []discovery.Option{discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	servers := discoverytest.NewRegistry(t, backend, opts...) // the servers' process
	client := discoverytest.NewRegistry(t, backend, opts...)
	a, b, c := startServer(t), startServer(t), startServer(t)
	reg := func(s *server) *discovery.Registration {
		g, err := servers.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: s.port})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	ga, gb := reg(a), reg(b)
	hc := dial(t, client, "discovery:///greeter")
	until(t, "both registered servers serve", hc, func(got []int64) bool { return got[0] > 0 && got[1] > 0 && got[2] == 0 }, a, b, c)

	gc := reg(c)
	until(t, "a server registered later serves", hc, func(got []int64) bool { return got[0] > 0 && got[1] > 0 && got[2] > 0 }, a, b, c)

	if err := ga.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	until(t, "a deregistered server serves nothing", hc, func(got []int64) bool { return got[0] == 0 && got[1] > 0 && got[2] > 0 }, a, b, c)

	if err := gb.Update(ctx, func(in *discovery.Instance) { in.Status = discovery.StatusDraining }); err != nil {
		t.Fatal(err)
	}
	until(t, "a draining server serves nothing", hc, func(got []int64) bool { return got[0] == 0 && got[1] == 0 && got[2] == 30 }, a, b, c)

	if err := gc.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitUnavailable(t, hc, "a call with only a draining instance left")
}

// WithFilter keeps the instances it accepts; Endpoint gives a policy the
// instance's Info.
func TestFilterAndEndpointInfo(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	eu, us := startServer(t), startServer(t)
	for _, x := range []struct {
		s    *server
		zone string
	}{{eu, "eu-1"}, {us, "us-1"}} {
		if _, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: x.s.port, Zone: x.zone, Weight: 7}); err != nil {
			t.Fatal(err)
		}
	}
	hc := dial(t, r, "discovery:///greeter", grpcresolver.WithFilter(func(in discovery.Instance) bool { return in.Zone == "eu-1" }))
	until(t, "only the eu-1 server serves", hc, func(got []int64) bool { return got[0] == 30 && got[1] == 0 }, eu, us)

	cc := &recordingConn{updates: make(chan resolver.State, 16)}
	res, err := grpcresolver.NewBuilder(r).Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/greeter"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-cc.updates:
			if len(st.Endpoints) < 2 {
				continue // the watch's first events may come one at a time
			}
			info, ok := grpcresolver.Endpoint(st.Endpoints[0])
			if !ok || info.Zone == "" || info.Weight != 7 || info.ID != st.Endpoints[0].Addresses[0].Addr {
				t.Fatalf("Endpoint(%+v) = %+v, %v", st.Endpoints[0], info, ok)
			}
			if _, ok := grpcresolver.Endpoint(resolver.Endpoint{}); ok {
				t.Fatal("Endpoint of a foreign endpoint reported an Info")
			}
			return
		case <-deadline:
			t.Fatal("no update with both endpoints")
		}
	}
}

type recordingConn struct {
	resolver.ClientConn
	updates chan resolver.State
}

func (c *recordingConn) UpdateState(s resolver.State) error { c.updates <- s; return nil }
func (c *recordingConn) ReportError(error)                  {}

// A target whose path is not a service name is refused by Build, and so is
// one on a nil or closed Registry.
func TestBuildRefusesBadTargets(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	b := grpcresolver.NewBuilder(r, grpcresolver.WithScheme("Disco"))
	if b.Scheme() != "disco" {
		t.Fatalf("Scheme = %q; want disco", b.Scheme())
	}
	for _, path := range []string{"/", "/bad..name", "/a/b", "/-x"} {
		if _, err := b.Build(resolver.Target{URL: url.URL{Scheme: "disco", Path: path}}, &recordingConn{}, resolver.BuildOptions{}); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Build(%q) = %v; want ErrInvalid", path, err)
		}
	}
	if got := grpcresolver.NewBuilder(r, grpcresolver.WithScheme("")).Scheme(); got != grpcresolver.Scheme {
		t.Fatalf("WithScheme(\"\") made the scheme %q; want the default", got)
	}
	if _, err := grpcresolver.NewBuilder(nil).Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/greeter"}}, &recordingConn{}, resolver.BuildOptions{}); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("Build with a nil Registry = %v; want ErrInvalid", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(resolver.Target{URL: url.URL{Scheme: "disco", Path: "/greeter"}}, &recordingConn{}, resolver.BuildOptions{}); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Build on a closed Registry = %v; want ErrClosed", err)
	}
}

// An instance the client's Registry finds unhealthy leaves the endpoints,
// before gRPC would notice anything itself; it comes back when it passes
// again. When none passes, every one is resolved. Servers register with a
// TCP check: a gRPC server answers no HTTP GET /health.
func TestUnhealthyInstanceLeavesTheEndpoints(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	servers := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	client := discoverytest.NewRegistry(t, backend, discovery.WithHealthCheck(100*time.Millisecond, 50*time.Millisecond),
		discovery.WithHealthThresholds(1, 1), discovery.WithCloseDrain(0))
	up, down := listen(t), listen(t)
	for _, l := range []net.Listener{up, down} {
		in := discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, Check: discovery.CheckTCP}
		if _, err := servers.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	cc := &recordingConn{updates: make(chan resolver.State, 64)}
	res, err := grpcresolver.NewBuilder(client).Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/greeter"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	waitUpdate := func(what string, want ...string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case st := <-cc.updates:
				if got := addrs(st); slices.Equal(got, want) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no update with endpoints %v", what, want)
			}
		}
	}
	both := []string{up.Addr().String(), down.Addr().String()}
	slices.Sort(both)
	waitUpdate("both listening", both...)
	downAddr := down.Addr().String()
	_ = down.Close()
	waitUpdate("one stopped listening", up.Addr().String())
	again, err := net.Listen("tcp", downAddr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	t.Cleanup(func() { _ = again.Close() })
	go acceptAll(again)
	waitUpdate("it listens again", both...)

	// Neither listens: none is usable, so both are resolved, unhealthy,
	// for gRPC's own connection checks to decide.
	_ = up.Close()
	_ = again.Close()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-cc.updates:
			unhealthy := 0
			for _, ep := range st.Endpoints {
				if info, _ := grpcresolver.Endpoint(ep); info.Status == discovery.StatusUnhealthy {
					unhealthy++
				}
			}
			if unhealthy == 2 && slices.Equal(addrs(st), both) {
				return
			}
		case <-deadline:
			t.Fatal("no update with both endpoints, unhealthy, once neither listens")
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go acceptAll(l)
	return l
}

func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}

// calls makes n calls, their errors ignored, and returns how many each
// server got.
func calls(c healthpb.HealthClient, n int, servers ...*server) []int64 {
	before := make([]int64, len(servers))
	for i, s := range servers {
		before[i] = s.calls.Load()
	}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = c.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
	}
	out := make([]int64, len(servers))
	for i, s := range servers {
		out[i] = s.calls.Load() - before[i]
	}
	return out
}

func registerAll(t *testing.T, r *discovery.Registry, service string, servers ...*server) {
	t.Helper()
	for _, s := range servers {
		if _, err := r.Register(context.Background(), discovery.Instance{Service: service, Host: "127.0.0.1", Port: s.port, Check: discovery.CheckTCP}); err != nil {
			t.Fatal(err)
		}
	}
}

// With the discovery_pick policy, gRPC calls feed the Registry's outlier
// detection: a server that answers UNAVAILABLE is ejected after its
// failures in a row and gets no more calls, where round_robin keeps sending
// it a third of them. Ejection after 2 failures in a row, not 5: each
// failure also makes p2c_ewma avoid the server, so the fifth could take
// longer than the test's 10 s on a loaded host (seen once in CI).
func TestPickBalancerEjectsAServerThatFails(t *testing.T) {
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(2, time.Minute, 5*time.Minute, 50))
	a, b := startServer(t), startServerWith(t, func() error { return status.Error(codes.NotFound, "no such thing") })
	bad := startServerWith(t, func() error { return status.Error(codes.Unavailable, "overwhelmed") })
	registerAll(t, r, "greeter", a, b, bad)

	rr := dial(t, r, "discovery:///greeter")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if got := calls(rr, 30, a, b, bad); got[0] > 0 && got[1] > 0 && got[2] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("round_robin did not reach every server")
		}
	}
	if got := calls(rr, 90, a, b, bad); got[2] < 20 {
		t.Fatalf("round_robin sent the failing server %d of 90 calls; want about a third", got[2])
	}

	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	badAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(bad.port))
	ejected := func() bool {
		svc, err := r.Get(context.Background(), "greeter")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range svc.Instances {
			if in.Addr() == badAddr {
				return in.Status == discovery.StatusEjected
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !ejected(); {
		if time.Now().After(deadline) {
			t.Fatal("the failing server was not ejected")
		}
		_ = calls(hc, 10, a, b, bad) // the failures add up
	}
	got := calls(hc, 90, a, b, bad)
	if got[2] != 0 || got[0]+got[1] != 90 {
		t.Fatalf("discovery_pick sent %v calls to (ok, not found, unavailable); want none to the failing server", got)
	}
}

// With the discovery_pick policy, calls go by the Registry's p2c_ewma: a
// server 20 ms slower than the other gets few of them.
//
// The latencies are the Registry's clock's, a fake one that the slow
// server moves on by 20 ms a call: on the real clock, the fast server's
// own latency was the host's (CI's load stalled one of its calls past
// 20 ms once in six runs), and peak EWMA rightly took that one sample as
// its average, so the slow server was the cheaper for seconds and took
// up to 163 of the 200 calls.
func TestPickBalancerPrefersTheFasterServer(t *testing.T) {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	fast, slow := startServer(t), startServerWith(t, func() error { clock.Advance(20 * time.Millisecond); return nil })
	registerAll(t, r, "greeter", fast, slow)
	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	until(t, "both servers connected and answering", hc, func(got []int64) bool { return got[0] > 0 }, fast, slow)
	got := calls(hc, 200, fast, slow)
	if got[1] > 40 {
		t.Fatalf("the slow server got %d of 200 calls (the fast one %d); want at most 40", got[1], got[0])
	}
}

// Given addresses by another resolver, discovery_pick round-robins.
func TestPickBalancerWithAnotherResolver(t *testing.T) {
	a, b := startServer(t), startServer(t)
	mr := manual.NewBuilderWithScheme("static")
	mr.InitialState(resolver.State{Addresses: []resolver.Address{
		{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port))}, {Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))},
	}})
	conn, err := grpc.NewClient("static:///x", grpc.WithResolvers(mr),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"`+grpcresolver.BalancerName+`": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	until(t, "both servers serve", healthpb.NewHealthClient(conn), func(got []int64) bool { return got[0] > 0 && got[1] > 0 }, a, b)
}

// With WithFilter, discovery_pick picks among the instances the filter
// keeps: each call goes through Pick and feeds the outlier detection, so a
// kept server that fails is ejected after exactly its failures in a row,
// however many instances the filter leaves out (Pick choosing those, never
// connected, sent calls round-robin, unseen by the Registry).
func TestPickBalancerWithFilterPicksAmongTheKept(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(10, time.Minute, 5*time.Minute, 100))
	eu, failing := startFailableServer(t, status.Error(codes.Unavailable, "overwhelmed"))
	if _, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: eu.port, Zone: "eu-1"}); err != nil {
		t.Fatal(err)
	}
	for i := range 9 { // never dialled: the filter leaves them out
		if _, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: 1 + i, Zone: "us-1"}); err != nil {
			t.Fatal(err)
		}
	}
	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName,
		grpcresolver.WithFilter(func(in discovery.Instance) bool { return in.Zone == "eu-1" }))
	until(t, "the eu-1 server serves", hc, func(got []int64) bool { return got[0] == 30 }, eu)

	failing.Store(true)
	for i := range 10 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d = %v; want the server's UNAVAILABLE", i, err)
		}
	}
	hs, err := r.Health(ctx, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.Zone == "eu-1" && !h.Ejected {
			t.Fatal("the eu-1 server is not ejected after 10 failures in a row")
		}
	}
}

// healthServer serves grpc.health.v1.Health by hand: Check answers after
// check (counted), Watch sends one status and ends the stream (OK) after
// stream.
type healthServer struct {
	port          int
	calls         atomic.Int64
	check, stream time.Duration
}

func startHealthServer(t *testing.T, check, stream time.Duration) *healthServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &healthServer{port: lis.Addr().(*net.TCPAddr).Port, check: check, stream: stream}
	gs := grpc.NewServer()
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "grpc.health.v1.Health", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Check", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			s.calls.Add(1)
			if err := dec(&healthpb.HealthCheckRequest{}); err != nil {
				return nil, err
			}
			time.Sleep(s.check)
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
		}}},
		Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			if err := st.RecvMsg(&healthpb.HealthCheckRequest{}); err != nil {
				return err
			}
			if err := st.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
				return err
			}
			time.Sleep(s.stream)
			return nil
		}}},
	}, nil)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return s
}

// A stream's life is no latency: after a stream of a second on the fast
// server, discovery_pick still sends it the calls (through p2c_ewma) that
// a server 200 ms slower would otherwise get, where the stream's second,
// taken as that server's latency, sent every call to the slow one.
func TestPickBalancerStreamIsNoLatency(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	fast, slow := startHealthServer(t, 0, time.Second), startHealthServer(t, 200*time.Millisecond, time.Second)
	for _, p := range []int{fast.port, slow.port} {
		if _, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: p}); err != nil {
			t.Fatal(err)
		}
	}
	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	count := func(n int) (f, s int64) {
		t.Helper()
		f0, s0 := fast.calls.Load(), slow.calls.Load()
		for range n {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		return fast.calls.Load() - f0, slow.calls.Load() - s0
	}
	// Each server answers a call, so p2c_ewma knows both latencies.
	for deadline := time.Now().Add(10 * time.Second); slow.calls.Load() == 0 || fast.calls.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("a server got no call")
		}
		count(1)
	}
	// The stream goes to the cheaper server, the fast one, and ends OK.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = w.Recv()
	}
	if err != io.EOF {
		t.Fatalf("the stream ended with %v; want its end", err)
	}
	if f, s := count(10); f == 0 {
		t.Fatalf("after a stream, the fast server got %d of 10 calls (the slow one %d); want most", f, s)
	}
}

// An instance of weight 0 stays registered but gets no calls, even when it
// is the last one left: it is no unhealthy instance that gRPC's own checks
// could find sound, but one its operator took out of traffic.
func TestWeightZeroGetsNoCalls(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	a, zero := startServer(t), startServer(t)
	ga, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: a.port})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: zero.port, Weight: discovery.ZeroWeight}); err != nil {
		t.Fatal(err)
	}
	hc := dial(t, r, "discovery:///greeter")
	until(t, "the server of weight above 0 serves", hc, func(got []int64) bool { return got[0] == 30 && got[1] == 0 }, a, zero)

	if err := ga.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitUnavailable(t, hc, "with only an instance of weight 0 left, a call")
	if n := zero.calls.Load(); n != 0 {
		t.Fatalf("the instance of weight 0 got %d calls", n)
	}
}

// An error gRPC raised on the client, the server never answering (a
// request that does not marshal: INTERNAL), is not held against the
// server; the same code from the server is.
func TestPickBalancerIgnoresClientSideErrors(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(2, time.Minute, 5*time.Minute, 100))
	a, failing := startFailableServer(t, status.Error(codes.Internal, "broken"))
	registerAll(t, r, "greeter", a)
	hc := dialPolicy(t, r, "discovery:///greeter", grpcresolver.BalancerName)
	until(t, "the server serves", hc, func(got []int64) bool { return got[0] == 30 }, a)
	ejected := func() bool {
		t.Helper()
		hs, err := r.Health(ctx, "greeter")
		if err != nil || len(hs) != 1 {
			t.Fatalf("Health = %v, %v", hs, err)
		}
		return hs[0].Ejected
	}
	call := func(req *healthpb.HealthCheckRequest) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := hc.Check(cctx, req); status.Code(err) != codes.Internal {
			t.Fatalf("call = %v; want INTERNAL", err)
		}
	}
	for range 3 {
		call(&healthpb.HealthCheckRequest{Service: "\xff"}) // not valid UTF-8: does not marshal
	}
	if ejected() {
		t.Fatal("ejected after calls that failed on the client")
	}
	failing.Store(true)
	call(&healthpb.HealthCheckRequest{})
	call(&healthpb.HealthCheckRequest{})
	if !ejected() {
		t.Fatal("not ejected after two INTERNAL answers in a row")
	}
}

// waitUnavailable waits (10 s at most) until a call through hc fails with
// UNAVAILABLE; what names the call in the failure.
func waitUnavailable(t *testing.T, hc healthpb.HealthClient, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if status.Code(err) == codes.Unavailable {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v; want UNAVAILABLE", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An instance that was draining when its lease lapsed with its service's
// others (self-preservation keeps the group as suspects) is still leaving:
// Get shows it suspect, Pick never chooses it, and it is no endpoint. The
// resolver read only the status Get shows, where suspect wins, and so
// resolved the drained instances again, for gRPC to send them new calls.
func TestDrainingInstanceKeptAsSuspectIsNoEndpoint(t *testing.T) {
	ctx := context.Background()
	ttl := discovery.DefaultLeaseTTL
	r, backend, ins, _ := lapsedGreeters(t, func(in *discovery.Instance) { in.Status = discovery.StatusDraining }) // drained, then lapsed together
	var want []string
	for _, in := range ins[3:] {
		want = append(want, in.Addr())
	}
	svc, err := r.Get(ctx, "greeter")
	if err != nil {
		t.Fatal(err)
	}
	suspects := 0
	for _, in := range svc.Instances {
		if in.Status == discovery.StatusSuspect {
			suspects++
		}
	}
	if len(svc.Instances) != 10 || suspects != 3 {
		t.Fatalf("Get: %d instances, %d suspect; want the 3 lapsed draining instances kept as suspects", len(svc.Instances), suspects)
	}

	cc, _ := resolve(t, r, "greeter")
	if got := addrs(nextUpdate(t, cc, "")); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v; want %v (no draining instance kept as a suspect)", got, want)
	}

	// With only such instances, none is resolved either (no usable one
	// leaves the others to gRPC's checks, draining ones never).
	for i := range 3 {
		in := discovery.Instance{ID: "d" + strconv.Itoa(i), Service: "solo", Host: "10.0.0.2", Port: 1000 + i, Weight: 100,
			Status: discovery.StatusDraining, RegisteredAt: suspectT0, ExpiresAt: suspectT0.Add(ttl + time.Duration(i)*time.Second)}
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	scc, _ := resolve(t, r, "solo")
	if st := nextUpdate(t, scc, "solo: "); len(st.Endpoints) != 0 {
		t.Fatalf("solo: endpoints %v; want none (every instance drains, kept as a suspect)", st.Endpoints)
	}
}

// quietStore is a backend without its Notifier, so that a change made
// straight to the backend is a change message this Registry lost; while
// gate is set, Load waits for it to close.
type quietStore struct {
	discovery.Store
	gate atomic.Pointer[chan struct{}]
}

func (s *quietStore) Load(ctx context.Context, service string) (*discovery.Service, error) {
	if g := s.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.Load(ctx, service)
}

// The first update comes from Get, the rest from the watch; an instance
// Get showed that the watch never had (Get answered from a stale entry,
// the instance gone by the watch's first snapshot) is dropped once the
// watch has caught up. It stayed an endpoint for good: the watch had no
// removal to tell of an instance it never held.
func TestInstanceGetShowedButTheWatchNeverHadIsDropped(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	qs, r := quietRegistry(t, backend, clock)
	inst := func(port int) discovery.Instance {
		return discovery.Instance{ID: "10.0.0.1:" + strconv.Itoa(port), Service: "greeter", Host: "10.0.0.1", Port: port, Weight: 100,
			RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	}
	for _, p := range []int{1001, 1002} {
		in := inst(p)
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Get(ctx, "greeter"); err != nil { // L1 holds both
		t.Fatal(err)
	}
	clock.Advance(6 * time.Second) // past freshness: Get answers stale while it refreshes
	if _, err := backend.Deregister(ctx, "greeter", "10.0.0.1:1002"); err != nil {
		t.Fatal(err) // its message lost
	}
	gate := make(chan struct{})
	qs.gate.Store(&gate)

	cc, _ := resolve(t, r, "greeter")
	// the first, from Get's stale answer
	if got := addrs(nextUpdate(t, cc, "")); !slices.Equal(got, []string{"10.0.0.1:1001", "10.0.0.1:1002"}) {
		t.Fatalf("first update %v; want Get's stale answer, both instances", got)
	}
	qs.gate.Store(nil)
	close(gate) // the watch's first snapshot: 1001 alone
	if _, err := r.Register(ctx, inst(1003)); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:1001", "10.0.0.1:1003"}
	for deadline := time.After(10 * time.Second); ; {
		select {
		case st := <-cc.updates:
			got := addrs(st)
			if !slices.Contains(got, "10.0.0.1:1003") {
				continue
			}
			if !slices.Equal(got, want) {
				t.Fatalf("endpoints %v; want %v (the deregistered instance gone)", got, want)
			}
			return
		case <-deadline:
			t.Fatal("no update with the instance registered last")
		}
	}
}

// An instance Get showed that the watch never had, with no other instance
// for the watch to tell of (its first snapshot empty: no event at all),
// leaves when gRPC asks to resolve again (a connection failed or was lost).
// ResolveNow did nothing: the instance stayed the only endpoint for good.
func TestResolveNowDropsAnInstanceTheWatchNeverHad(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	qs, r := quietRegistry(t, backend, clock)
	in := discovery.Instance{ID: "10.0.0.1:1001", Service: "greeter", Host: "10.0.0.1", Port: 1001, Weight: 100,
		RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := backend.Register(ctx, &in); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "greeter"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(6 * time.Second) // past freshness: Get answers stale while it refreshes
	if _, err := backend.Deregister(ctx, "greeter", in.ID); err != nil {
		t.Fatal(err) // its message lost
	}
	gate := make(chan struct{})
	qs.gate.Store(&gate)
	cc, res := resolve(t, r, "greeter")
	if st := nextUpdate(t, cc, ""); len(st.Endpoints) != 1 {
		t.Fatalf("first update %v; want Get's stale answer", st.Endpoints)
	}
	qs.gate.Store(nil)
	close(gate) // the watch's first snapshot: no instance
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.After(10 * time.Second); ; {
		select {
		case st := <-cc.updates:
			if len(st.Endpoints) != 0 {
				t.Fatalf("update %v; want none", st.Endpoints)
			}
			return
		case <-tick.C:
			res.ResolveNow(resolver.ResolveNowOptions{}) // as gRPC does when a connection fails
		case <-deadline:
			t.Fatal("the deregistered instance is still the endpoint after ResolveNow")
		}
	}
}

// quietRegistry returns a Registry on backend through a quietStore (closed
// when the test ends).
func quietRegistry(t *testing.T, backend *discoverytest.Backend, clock *discoverytest.Clock) (*quietStore, *discovery.Registry) {
	t.Helper()
	qs := &quietStore{Store: backend}
	r, err := discovery.New(discovery.WithStore(qs), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return qs, r
}

// resolve builds a resolver of service on r, closed when the test ends,
// and returns the conn its updates go to.
func resolve(t *testing.T, r *discovery.Registry, service string) (*recordingConn, resolver.Resolver) {
	t.Helper()
	cc := &recordingConn{updates: make(chan resolver.State, 64)}
	res, err := grpcresolver.NewBuilder(r).Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/" + service}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(res.Close)
	return cc, res
}

// nextUpdate returns cc's next update, failing the test (prefix first)
// after 10 s without one.
func nextUpdate(t *testing.T, cc *recordingConn, prefix string) resolver.State {
	t.Helper()
	select {
	case st := <-cc.updates:
		return st
	case <-time.After(10 * time.Second):
		t.Fatal(prefix + "no update")
	}
	return resolver.State{}
}

// addrs returns the address of each endpoint of st, sorted (the
// resolver's order is its own).
func addrs(st resolver.State) (out []string) {
	for _, ep := range st.Endpoints {
		out = append(out, ep.Addresses[0].Addr)
	}
	slices.Sort(out)
	return out
}

// A scheme that is not one (RFC 3986: a letter, then letters, digits, "+",
// "-" or "."), such as "ht tp" or "HTTP://", made a Builder that no target
// can name: gRPC parsed "http:///orders" as scheme "http", found no
// resolver of that name, and went to DNS, with an error that never named
// WithScheme. Such a scheme is refused, changing nothing (the Builder
// keeps its scheme), and every Build says why, as a nil Registry does.
func TestWithSchemeRefusesAnInvalidScheme(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	for _, bad := range []string{"ht tp", "HTTP://", "disco:", "1disco", "-disco", "dis/co", "dïsco"} {
		b := grpcresolver.NewBuilder(r, grpcresolver.WithScheme(bad))
		if got := b.Scheme(); got != grpcresolver.Scheme {
			t.Errorf("WithScheme(%q) made the scheme %q; want it refused, the scheme left %q", bad, got, grpcresolver.Scheme)
		}
		_, err := b.Build(resolver.Target{URL: url.URL{Scheme: b.Scheme(), Path: "/greeter"}}, &recordingConn{}, resolver.BuildOptions{})
		var ve *discovery.ValidationError
		if !errors.As(err, &ve) || ve.Field != "option WithScheme" || ve.Value != bad {
			t.Errorf("Build after WithScheme(%q) = %v; want a ValidationError of option WithScheme naming it", bad, err)
		}
	}
	for _, good := range []string{"Disco", "ftp", "my-disco+v1.x"} {
		b := grpcresolver.NewBuilder(r, grpcresolver.WithScheme(good))
		if want := strings.ToLower(good); b.Scheme() != want {
			t.Errorf("WithScheme(%q) made the scheme %q; want %q", good, b.Scheme(), want)
		}
	}
}
