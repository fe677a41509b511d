package grpcresolver_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/grpcresolver"
	"github.com/rssbot/discovery/internal/testutil"
)

// A ClientConn created while its Registry's cache is cold (a process
// starting: another one registered the servers) on the database and Redis
// that production runs (PostgreSQL and Redis with DISCOVERY_TEST_POSTGRES
// and DISCOVERY_TEST_REDIS set; SQLite and miniredis otherwise): its first
// call goes through, and every call is picked by the Registry (counted in
// Stats().Picks), not sent round-robin while the picker waits for nothing
// (its picks never load: the resolver's first lookup warmed the cache).
func TestPickBalancerStartsWithAColdCache(t *testing.T) {
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	var db *gorm.DB
	if os.Getenv(testutil.EnvPostgres) != "" || testutil.Required() {
		db = testutil.Postgres(t, ns+"_")
	} else {
		db = testutil.SQLite(t)
	}
	rdb, mr := testutil.Redis(t, ns)
	t.Logf("database %s, Redis %s", db.Dialector.Name(), map[bool]string{true: "miniredis", false: "real"}[mr != nil])
	open := func() *discovery.Registry {
		t.Helper()
		r, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
			discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	servers := []*server{startServer(t), startServer(t)}
	registerAll(t, open(), "greeter", servers...)

	reader := open() // nothing in its cache
	c := dialPolicy(t, reader, "discovery:///greeter", grpcresolver.BalancerName)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	picks := func() (n uint64) {
		for _, p := range reader.Stats().Picks {
			n += p
		}
		return n
	}
	const calls = 50
	before := picks()
	got := served(t, c, calls, servers...)
	if d := picks() - before; d < calls {
		t.Fatalf("%d calls (%v a server), %d picked by the Registry; want every one", calls, got, d)
	}
}
