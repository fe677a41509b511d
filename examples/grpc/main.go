// Command grpc shows gRPC clients finding their servers through the
// registry: it starts three gRPC servers on loopback, registers them,
// dials "discovery:///greeter" with the discovery_pick policy, and sends
// calls while one server starts failing (each failure makes Pick avoid it,
// and five in a row eject it) and another is drained. It needs no Redis or
// database:
//
//	go run ./examples/grpc
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/grpcresolver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	grpcresolver.RegisterBalancer()
	if err := interrupted(ctx, run(ctx, os.Stdout)); err != nil {
		log.Fatal(err)
	}
}

// interrupted drops the error that Ctrl-C (ctx ending) made run return:
// an interrupt stops the demo, it does not fail it. It printed "context
// canceled" and exited with status 1.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// server is a gRPC server whose calls fail with UNAVAILABLE once failing is
// set.
type server struct {
	name    string
	calls   atomic.Int64
	failing atomic.Bool
	gs      *grpc.Server
	port    int
}

func start(name string) (*server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{name: name, port: lis.Addr().(*net.TCPAddr).Port}
	s.gs = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		if s.failing.Load() {
			return nil, status.Error(codes.Unavailable, s.name+" is failing")
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s.gs, health.NewServer())
	go func() { _ = s.gs.Serve(lis) }()
	return s, nil
}

func run(ctx context.Context, out io.Writer) error {
	reg, err := discovery.New() // the embedded default: in-memory, no servers needed
	if err != nil {
		return err
	}
	defer reg.Close()

	var servers []*server
	var regs []*discovery.Registration
	defer func() {
		for _, s := range servers {
			s.gs.Stop()
		}
	}()
	for _, name := range []string{"a", "b", "c"} {
		s, err := start(name)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		// A TCP check: a gRPC server answers no HTTP GET /health.
		g, err := reg.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: s.port, Check: discovery.CheckTCP,
			Metadata: map[string]string{"name": name}})
		if err != nil {
			return err
		}
		regs = append(regs, g)
	}

	conn, err := grpc.NewClient("discovery:///greeter",
		grpc.WithResolvers(grpcresolver.NewBuilder(reg)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"discovery_pick": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	round := func(title string) error {
		before := make([]int64, len(servers))
		for i, s := range servers {
			before[i] = s.calls.Load()
		}
		failed := 0
		for range 300 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				failed++
			}
		}
		var parts []string
		for i, s := range servers {
			parts = append(parts, fmt.Sprintf("%s %3d", s.name, s.calls.Load()-before[i]))
		}
		fmt.Fprintf(out, "%-34s 300 calls: %s (%d failed)\n", title, strings.Join(parts, ", "), failed)
		return nil
	}
	if err := round("all three serving:"); err != nil {
		return err
	}
	servers[2].failing.Store(true)
	if err := round("c answers UNAVAILABLE:"); err != nil {
		return err
	}
	if err := round("c still failing:"); err != nil {
		return err
	}
	if err := regs[0].Drain(ctx); err != nil {
		return err
	}
	// The drain's write dropped this process's snapshot of greeter, and the
	// gRPC pick never waits for a load (it would hold every call of the
	// connection): until a background load lands, calls go round-robin
	// over the connected servers, a among them. A lookup loads it now, as
	// any other use of the service in the process would.
	if _, err := reg.Get(ctx, "greeter"); err != nil {
		return err
	}
	return round("a drained:")
}
