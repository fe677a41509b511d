package discovery_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// blackholedDB returns a Registry on PostgreSQL through a fault proxy, with
// the shortest lease (3 s: a renewal every second, bounded by a second).
func blackholedDB(t *testing.T, opts ...discovery.Option) (*discovery.Registry, *testutil.Proxy) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db, proxy := testutil.PostgresVia(t, ns+"_")
	r, err := discovery.New(append([]discovery.Option{discovery.WithDB(db), discovery.WithNamespace(ns),
		discovery.WithoutHealthChecks(), discovery.WithLeaseTTL(3 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Blackhole(false); _ = r.Close() })
	return r, proxy
}

// A renewal stuck on a black-holed database held the registration's one
// mutex for its whole timeout: Instance and Revision waited for it, and
// SetWeight waited past its own deadline. Now the reads do not wait, and a
// write waits only as long as its context allows.
func TestStuckRenewalHoldsNoReader(t *testing.T) {
	r, proxy := blackholedDB(t)
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	proxy.Blackhole(true)
	time.Sleep(1200 * time.Millisecond) // the renewal at 1 s is stuck until 2 s
	start := time.Now()
	_ = g.Instance()
	_ = g.Revision()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Instance and Revision took %v behind a stuck renewal; want no wait", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	err := g.SetWeight(ctx, 5)
	if d := time.Since(start); d > 500*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SetWeight with a 100ms deadline = %v after %v; want its deadline's error within it", err, d)
	}
}

// Close with the database black-holed and renewals stuck: it ended after
// one close timeout per registration (11.6 s of a 5 s timeout with three),
// with bare context errors. Now it stops the renewals first, marks
// draining within the close-drain timeout, and ends within the close
// timeout with ErrUnavailable.
func TestCloseKeepsItsTimeoutOnABlackholedDatabase(t *testing.T) {
	const closeTO = 2 * time.Second
	r, proxy := blackholedDB(t, discovery.WithCloseTimeout(closeTO), discovery.WithCloseDrain(500*time.Millisecond))
	for i := range 3 {
		mustRegister(t, r, inst("db_svc", "10.0.0.1", 1+i))
	}
	proxy.Blackhole(true)
	time.Sleep(1200 * time.Millisecond) // every renewal stuck
	start := time.Now()
	err := r.Close()
	if d := time.Since(start); d > closeTO+time.Second || !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Close = %v after %v; want ErrUnavailable within the close timeout (%v)", err, d, closeTO)
	}
}

// A renewal that the Registry's own deadline (a third of the lease) ends is
// the database not answering: the outage is noted (logged once, and the
// leases that end meanwhile are not taken as deaths). It came back as a
// bare context error, which nothing took for an outage.
func TestRenewalTimeoutIsAnOutage(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r, proxy := blackholedDB(t, discovery.WithLogger(zap.New(core)))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	proxy.Blackhole(true)
	deadline := time.Now().Add(4 * time.Second) // the renewal at 1 s fails at 2 s
	for logs.FilterMessage("discovery: database lost; serving cached data").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("renewals failed on a black-holed database but no outage was noted; logs: %v", logs.All())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = r
}
