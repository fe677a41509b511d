package grpcresolver_test

import (
	"context"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/grpcresolver"
)

// A gRPC client that reaches service "greeter" through the registry, with
// gRPC's round_robin over the instances the registry hands out.
func Example() {
	ctx := context.Background()
	reg, err := discovery.New() // in a service: WithDB, WithRedis, ...
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()

	// The server side registers with a TCP check (a gRPC server answers no
	// HTTP health check).
	if _, err := reg.Register(ctx, discovery.Instance{Service: "greeter", Host: "127.0.0.1", Port: 50051, Check: discovery.CheckTCP}); err != nil {
		log.Fatal(err)
	}

	conn, err := grpc.NewClient("discovery:///greeter",
		grpc.WithResolvers(grpcresolver.NewBuilder(reg)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	_ = healthpb.NewHealthClient(conn) // calls go to greeter's instances
}
