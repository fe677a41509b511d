package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

func TestRegisterGetDeregister(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.registry(t)
		for i := 3; i >= 1; i-- {
			mustRegister(t, a, inst("db_svc", "10.0.0."+fmt.Sprint(i), 8080))
		}
		if got := ids(a.Get(ctx, "db_svc")); got != "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080" {
			t.Fatalf("Get = %s", got)
		}
		b := w.registry(t) // another process
		svc, err := b.Get(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 3 || svc.Instances[0].Weight != discovery.DefaultWeight ||
			svc.Instances[0].HealthPath != "/health" || svc.Instances[0].Service != "db_svc" {
			t.Fatalf("Get from another Registry = %+v, %v", svc, err)
		}
		if err := a.Deregister(ctx, "db_svc", "10.0.0.2:8080"); err != nil {
			t.Fatal(err)
		}
		if got := ids(a.Get(ctx, "db_svc")); got != "10.0.0.1:8080,10.0.0.3:8080" {
			t.Fatalf("Get after Deregister on the same Registry = %s", got)
		}
		if err := a.Deregister(ctx, "db_svc", "10.0.0.2:8080"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Deregister twice = %v; want ErrNotFound", err)
		}
		if _, err := a.Get(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get(unknown) = %v; want ErrNotFound", err)
		}
		infos, err := a.Services(ctx)
		if err != nil || len(infos) != 1 || infos[0].Name != "db_svc" || infos[0].Live != 2 {
			t.Fatalf("Services = %+v, %v", infos, err)
		}
	})
}

func TestValidationWritesNothing(t *testing.T) {
	long := strings.Repeat("a", 64)
	bigMeta := map[string]string{}
	for i := range 65 {
		bigMeta[fmt.Sprint("k", i)] = "v"
	}
	tests := []struct {
		name  string
		in    discovery.Instance
		field string
	}{
		{"empty service", inst("", "10.0.0.1", 80), "service name"},
		{"long service", inst(long, "10.0.0.1", 80), "service name"},
		{"slash", inst("a/b", "10.0.0.1", 80), "service name"},
		{"colon", inst("a:b", "10.0.0.1", 80), "service name"},
		{"glob", inst("a*", "10.0.0.1", 80), "service name"},
		{"brackets", inst("a[1]", "10.0.0.1", 80), "service name"},
		{"backslash", inst(`a\b`, "10.0.0.1", 80), "service name"},
		{"dotdot", inst("a..b", "10.0.0.1", 80), "service name"},
		{"control", inst("a\x00b", "10.0.0.1", 80), "service name"},
		{"empty host", inst("db_svc", "", 80), "host"},
		{"bad host", inst("db_svc", "exa mple.com", 80), "host"},
		{"url host", inst("db_svc", "http://x", 80), "host"},
		// Not IPv4 addresses, and not DNS names either (a top-level label is
		// never all digits, RFC 3696): each was taken as a name that resolved
		// nowhere, or, by a resolver that reads inet_aton's forms, as another
		// address (010.0.0.1 is 8.0.0.1 in octal, 1.2.3 is 1.2.0.3).
		{"IPv4 part over 255", inst("db_svc", "10.0.0.300", 80), "host"},
		{"IPv6 zone", inst("db_svc", "fe80::1%eth0", 80), "host"},
		// A listen address, not one an instance is reached at: a process
		// that dials it reaches its own host, and checked and picked
		// whatever listened there on that port (itself, say).
		{"IPv4 unspecified", inst("db_svc", "0.0.0.0", 80), "host"},
		{"IPv6 unspecified", inst("db_svc", "::", 80), "host"},
		{"IPv4-mapped unspecified", inst("db_svc", "::ffff:0.0.0.0", 80), "host"},
		{"IPv4 leading zero", inst("db_svc", "010.0.0.1", 80), "host"},
		{"IPv4 of three parts", inst("db_svc", "1.2.3", 80), "host"},
		{"IPv4 in hex", inst("db_svc", "0x7f.0.0.1", 80), "host"},
		{"IPv4 with a trailing dot", inst("db_svc", "10.0.0.1.", 80), "host"},
		{"all-digit top-level label", inst("db_svc", "api.internal.42", 80), "host"},
		{"port 0", inst("db_svc", "10.0.0.1", 0), "port"},
		{"port 65536", inst("db_svc", "10.0.0.1", 65536), "port"},
		{"weight", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Weight: 10001}, "weight"},
		{"negative weight", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Weight: -2}, "weight"},
		{"too much metadata", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Metadata: bigMeta}, "metadata"},
		{"metadata bytes", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Metadata: map[string]string{"k": strings.Repeat("x", 9000)}}, "metadata"},
		{"metadata key", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Metadata: map[string]string{"a b": "x"}}, "metadata key"},
		{"duplicate tag", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Tags: []string{"a", "a"}}, "tag"},
		{"empty tag", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Tags: []string{""}}, "tag"},
		{"health path host", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, HealthPath: "//evil.example/x"}, "health path"},
		{"health path url", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, HealthPath: "http://evil/"}, "health path"},
		// No URL can be built from it: every check failed, and the instance
		// was unhealthy for good.
		{"health path escape", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, HealthPath: "/health%zz"}, "health path"},
		{"health path cut escape", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, HealthPath: "/status/50%"}, "health path"},
		{"id with space", discovery.Instance{ID: "a b", Service: "db_svc", Host: "h", Port: 1}, "instance id"},
		// A path segment the admin API cannot name: its mux cleans it away.
		{"id dot", discovery.Instance{ID: ".", Service: "db_svc", Host: "h", Port: 1}, "instance id"},
		{"id dot dot", discovery.Instance{ID: "..", Service: "db_svc", Host: "h", Port: 1}, "instance id"},
		{"method", discovery.Instance{Service: "db_svc", Host: "h", Port: 1, Method: 9}, "method"},
	}
	forEachWorld(t, func(t *testing.T, w *world) {
		r := w.registry(t)
		for _, tt := range tests {
			_, err := r.Register(context.Background(), tt.in)
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field ||
				!strings.HasPrefix(err.Error(), "discovery: invalid "+tt.field) {
				t.Errorf("%s: Register = %v; want ValidationError on %q", tt.name, err, tt.field)
			}
		}
		infos, err := r.Services(context.Background())
		if err != nil || len(infos) != 0 {
			t.Fatalf("invalid registrations wrote: %+v, %v", infos, err)
		}
		if _, err := r.Get(context.Background(), "a/b"); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Get(invalid name) = %v; want ErrInvalid", err)
		}
	})
}

func TestValidNamesAndHosts(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	for _, in := range []discovery.Instance{
		inst("db_svc", "10.0.0.7", 8080), inst("a", "::1", 1), inst("user-api.v2", "api.internal.example.com", 65535),
		inst(strings.Repeat("x", 63), "localhost", 443), inst("Svc9", "fe80::1", 80),
		// A single label is a host name, not a domain's: a container's
		// hostname (its ID) may be all digits.
		inst("a", "123456789012", 80), inst("a", "localhost.", 80), inst("a", "10.example.com", 80),
		inst("a", "1.2.3.example", 80),
	} {
		if _, err := r.Register(context.Background(), in); err != nil {
			t.Errorf("Register(%s@%s) = %v", in.Service, in.Host, err)
		}
	}
}

// A dead instance (its process stopped renewing) disappears from Get exactly
// when its lease ends, while a live one in the same service stays.
func TestLeaseExpiresExactly(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock))
		mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
		// A crashed process left this row: registered at t0, never renewed.
		dead := discovery.Instance{ID: "dead", Service: "db_svc", Host: "10.0.0.2", Port: 2, Weight: 1,
			RegisteredAt: t0, ExpiresAt: t0.Add(discovery.DefaultLeaseTTL)}
		if _, err := r.Store().Register(ctx, &dead); err != nil {
			t.Fatal(err)
		}
		_ = r.Invalidate(ctx, "db_svc")
		want := "10.0.0.1:1,dead"
		for step := range 28 { // half-second steps to t0+14s
			if got := ids(r.Get(ctx, "db_svc")); got != want {
				t.Fatalf("at %v Get = %s; want %s", clock.Now().Sub(t0), got, want)
			}
			clock.BlockUntil(2) // the keepalive and the reaper are waiting
			clock.Advance(500 * time.Millisecond)
			_ = step
		}
		clock.BlockUntil(2)
		clock.Advance(time.Second - 1) // t0+15s-1ns
		if got := ids(r.Get(ctx, "db_svc")); got != want {
			t.Fatalf("1ns before expiry Get = %s; want %s", got, want)
		}
		clock.Advance(1)
		if res, err := r.Lookup(ctx, "db_svc"); ids(res.Service, err) != "10.0.0.1:1" {
			var exp []string
			for _, in := range res.Service.Instances {
				exp = append(exp, in.ID+"@"+in.ExpiresAt.Sub(t0).String()+"/"+in.Status.String())
			}
			t.Fatalf("at expiry Lookup = %s (%+v, %v); want the dead instance gone", ids(res.Service, err), res, exp)
		}
		fresh := w.registry(t, discovery.WithClock(clock)) // a process that never cached it
		if got := ids(fresh.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
			t.Fatalf("another Registry at expiry = %s", got)
		}
	})
}

// A registration whose row vanished (a restored database) registers itself
// again, with the same ID, at its next renewal.
func TestRegistrationRestoresVanishedRow(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		core, logs := observer.New(zap.InfoLevel)
		r := w.registry(t, discovery.WithClock(clock), discovery.WithLogger(zap.New(core)))
		g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
		if _, err := r.Store().Deregister(ctx, "db_svc", "10.0.0.1:1"); err != nil {
			t.Fatal(err)
		}
		clock.BlockUntil(2)
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntil(2) // the renewal has finished
		svc, err := r.Store().Load(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 1 || svc.Instances[0].ID != "10.0.0.1:1" || svc.Revision != 3 {
			t.Fatalf("after renewal: %+v, %v; want the row back at revision 3", svc, err)
		}
		if g.Revision() != 3 {
			t.Fatalf("Registration.Revision = %d; want 3", g.Revision())
		}
		if got := ids(r.Get(ctx, "db_svc")); got != "10.0.0.1:1" {
			t.Fatalf("Get = %s", got)
		}
		if n := logs.FilterMessage("discovery: lease lost; registered again").Len(); n != 1 {
			t.Fatalf("logged the re-registration %d times; want once", n)
		}
	})
}

// A registration whose row a restored database holds at an older version
// (a backup taken before its Update: another address, weight and metadata,
// its lease still running) writes it again, with its current fields and a
// new revision, at its next renewal; a renewal that finds the row as it
// wrote it changes no revision. Renewed as it was, the row kept the older
// fields for as long as the instance lived.
func TestRegistrationRewritesRowRestoredAtAnOlderVersion(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock))
		in := inst("db_svc", "10.0.0.1", 1)
		in.ID, in.Weight, in.Metadata = "i1", 10, map[string]string{"v": "1"}
		g := mustRegister(t, r, in)
		backup, err := r.Store().Load(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Update(ctx, func(in *discovery.Instance) {
			in.Host, in.Weight, in.Metadata = "10.0.0.2", 20, map[string]string{"v": "2"}
		}); err != nil {
			t.Fatal(err)
		}
		restored := backup.Instances[0]
		restored.ExpiresAt = g.Instance().ExpiresAt
		if _, err := r.Store().Register(ctx, &restored); err != nil { // revision 3
			t.Fatal(err)
		}
		row := func() string {
			svc, err := r.Store().Load(ctx, "db_svc")
			if err != nil || len(svc.Instances) != 1 {
				return fmt.Sprintf("%+v, %v", svc, err)
			}
			in := svc.Instances[0]
			return fmt.Sprintf("revision %d: %s weight %d metadata %v", svc.Revision, in.Addr(), in.Weight, in.Metadata)
		}
		clock.BlockUntil(2)
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntil(2) // the renewal has finished
		if got, want := row(), "revision 4: 10.0.0.2:1 weight 20 metadata map[v:2]"; got != want {
			t.Fatalf("after the renewal the row holds %s; want %s", got, want)
		}
		if g.Revision() != 4 {
			t.Fatalf("Registration.Revision = %d; want 4", g.Revision())
		}
		svc, err := r.Get(ctx, "db_svc")
		if err != nil || svc.Revision != 4 || svc.Instances[0].Weight != 20 {
			t.Fatalf("Get = %+v, %v; want revision 4, weight 20", svc, err)
		}
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntil(2)
		if got, want := row(), "revision 4: 10.0.0.2:1 weight 20 metadata map[v:2]"; got != want {
			t.Fatalf("after a renewal with nothing changed the row holds %s; want %s", got, want)
		}
	})
}

// While the database is down renewals fail and retry with backoff; the
// instance stays in this process's view, and when the database returns
// after the lease lapsed, the registration registers again.
func TestRenewalSurvivesDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	core, logs := observer.New(zap.InfoLevel)
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithLogger(zap.New(core)), discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if _, err := r.Get(ctx, "db_svc"); err != nil { // this process has looked it up
		t.Fatal(err)
	}
	backend.SetFailure(errors.New("connection refused"))
	for range 40 { // 20 s of outage: longer than the lease
		clock.BlockUntil(2)
		clock.Advance(500 * time.Millisecond)
		res, err := r.Lookup(ctx, "db_svc")
		if err != nil || len(res.Service.Instances) != 1 {
			t.Fatalf("at %v during the outage Lookup = %+v, %v", clock.Now().Sub(t0), res, err)
		}
	}
	if _, err := r.Register(ctx, inst("db_svc", "10.0.0.9", 9)); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Register during the outage = %v; want ErrUnavailable", err)
	}
	backend.SetFailure(nil)
	for range 20 {
		clock.BlockUntil(2)
		clock.Advance(500 * time.Millisecond)
	}
	clock.BlockUntil(2)
	svc, err := backend.Load(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 || !svc.Instances[0].Live(clock.Now()) {
		t.Fatalf("after the outage the instance is %+v, %v; want it registered again and live", svc, err)
	}
	if logs.FilterMessage("discovery: lease renewal failed; retrying").Len() != 1 ||
		logs.FilterMessage("discovery: lease lost; registered again").Len() != 1 {
		t.Fatalf("logs: %v", logs.All())
	}
	// A refresh started in the outage may still be finishing; a lookup
	// that joins it loads again, since the database has answered since
	// (it answered with that refresh's error in about 1 run in 150 under
	// load).
	if res, err := r.Lookup(ctx, "db_svc"); err != nil || len(res.Service.Instances) != 1 {
		t.Fatalf("after the outage Lookup = %+v, %v", res, err)
	}
}

func TestCloseDeregistersAndIsIdempotent(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a := w.registry(t)
		b := w.registry(t)
		mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
		mustRegister(t, b, inst("db_svc", "10.0.0.2", 2))
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if _, err := a.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Get after Close = %v; want ErrClosed", err)
		}
		if _, err := a.Register(ctx, inst("x", "h", 1)); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Register after Close = %v; want ErrClosed", err)
		}
		svc, err := b.Store().Load(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 1 || svc.Instances[0].ID != "10.0.0.2:2" {
			t.Fatalf("after Close of a: %+v, %v; want only b's instance", svc, err)
		}
		if w.db != nil { // the caller's database is still open
			if err := w.db.Exec("SELECT 1").Error; err != nil {
				t.Fatalf("Close closed the caller's database: %v", err)
			}
		}
		if w.rdb != nil {
			if err := w.rdb.Ping(ctx).Err(); err != nil {
				t.Fatalf("Close closed the caller's Redis client: %v", err)
			}
		}
	})
}

func TestConcurrentRegistrations(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		// 50 writes queue for SQLite's one writer: on a loaded host (the race
		// detector, a parallel suite) the last ones waited past the default
		// 5 s and failed with ErrTimeout. This test is about what lands, not
		// how fast: each write gets a minute.
		r := w.registry(t, discovery.WithDatabaseTimeout(time.Minute))
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				if _, err := r.Register(context.Background(), inst("db_svc", "10.0.1."+fmt.Sprint(i), 80)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		svc, err := r.Get(context.Background(), "db_svc")
		if err != nil || len(svc.Instances) != 50 || svc.Revision != 50 {
			t.Fatalf("after 50 concurrent registrations Get = %d instances, revision %d, %v", len(svc.Instances), svc.Revision, err)
		}
	})
}

func TestUpdateAndReRegisterInPlace(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		r := w.registry(t)
		g := mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: 5})
		if err := g.SetWeight(ctx, 0); err != nil {
			t.Fatal(err)
		}
		svc, _ := r.Get(ctx, "db_svc")
		if svc.Instances[0].Weight != 0 || svc.Revision != 2 {
			t.Fatalf("after SetWeight(0): %+v", svc)
		}
		if err := g.Update(ctx, func(in *discovery.Instance) { in.Metadata = map[string]string{"v": "2"} }); err != nil {
			t.Fatal(err)
		}
		svc, _ = r.Get(ctx, "db_svc")
		if svc.Instances[0].Metadata["v"] != "2" || svc.Instances[0].Weight != 0 {
			t.Fatalf("after Update: %+v", svc.Instances[0])
		}
		if err := g.Update(ctx, func(in *discovery.Instance) { in.Port = 0 }); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("invalid Update = %v", err)
		}
		if err := g.Update(ctx, func(in *discovery.Instance) { in.ID = "other" }); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Update changing the ID = %v", err)
		}
		mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Zone: "z"})
		svc, _ = r.Get(ctx, "db_svc")
		if len(svc.Instances) != 1 || svc.Instances[0].Zone != "z" || svc.Instances[0].Weight != discovery.DefaultWeight {
			t.Fatalf("re-Register: %+v", svc.Instances)
		}
	})
}

// reapFor80s lets the reaper of WithReaper(10*time.Second, time.Minute) run
// for 80 s of clock: it runs every ~10 s and deletes rows 60 s past their end.
func reapFor80s(clock *discoverytest.Clock) {
	for range 8 {
		clock.BlockUntil(1)
		clock.Advance(10 * time.Second)
	}
	clock.BlockUntil(1)
}

func TestReaperDeletesLongExpiredRows(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute))
		dead := discovery.Instance{ID: "dead", Service: "db_svc", Host: "h", Port: 1, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(time.Second)}
		if _, err := r.Store().Register(ctx, &dead); err != nil {
			t.Fatal(err)
		}
		reapFor80s(clock)
		svc, err := r.Store().Load(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 0 || svc.Revision != 2 {
			t.Fatalf("after reaping: %+v, %v; want no rows at revision 2", svc, err)
		}
	})
}

func TestOptionsAreValidated(t *testing.T) {
	tests := []struct {
		opt  discovery.Option
		name string
	}{
		{discovery.WithLeaseTTL(time.Second), "WithLeaseTTL"},
		{discovery.WithCacheSize(0), "WithCacheSize"},
		{discovery.WithNamespace("Bad-NS"), "WithNamespace"},
		{discovery.WithLogger(nil), "WithLogger"},
		{discovery.WithCacheFreshness(0, time.Second, time.Second), "WithCacheFreshness"},
		{discovery.WithCacheJitter(-0.1), "WithCacheJitter"},
		{discovery.WithCacheJitter(0.6), "WithCacheJitter"},
		{discovery.WithCacheJitter(math.NaN()), "WithCacheJitter"},
		{discovery.WithReaper(time.Second, time.Second), "WithReaper"},
		{discovery.WithDatabaseTimeout(0), "WithDatabaseTimeout"},
		{discovery.WithMigrationTimeout(0), "WithMigrationTimeout"},
		{discovery.WithNegativeTTL(math.MaxInt64), "WithNegativeTTL"}, // overflowed: negative caching silently off
		{discovery.WithOutlierEjection(5, time.Second, 2*discovery.MaxDuration, 10), "WithOutlierEjection"},
		{discovery.WithServiceHealth("db_svc", 2*discovery.MaxDuration, time.Second), "WithServiceHealth"},
		{discovery.WithDB(nil), "WithDB"}, // was: the in-memory store, silently
		{discovery.WithRedis(nil), "WithRedis"},
		{discovery.WithStore(nil), "WithStore"},
		{discovery.WithRedisTimeout(-time.Second), "WithRedisTimeout"},
		{discovery.WithServiceStrategy("a/b", discovery.StrategyRandom), "WithServiceStrategy"}, // was: a bare service-name error
		{discovery.WithReaper(0, -time.Second), "WithReaper"},                                   // was: accepted, as reaping was off
		{discovery.WithReaper(30, 2*time.Minute), "WithReaper"},                                 // 30 ns: was a reap after another, without a pause
		{discovery.WithServiceReap(-time.Second), "WithServiceReap"},
	}
	for _, tt := range tests {
		r, err := discovery.New(tt.opt)
		if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("New(%s) = %v; want ErrInvalid naming the option", tt.name, err)
		}
		if r != nil {
			r.Close()
		}
	}
	r, err := discovery.New()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if got := ids(r.Get(context.Background(), "db_svc")); got != "10.0.0.1:1" {
		t.Fatalf("embedded default: Get = %s", got)
	}
}

// WithRedis shares a cache between processes; the source of truth behind it
// must be shared too. Without WithDB or WithStore each process kept its
// registrations in its own memory, and another process saw them through
// Redis only while its snapshot lasted: found, then not found once a lease
// in it ended (its own memory holds nothing), then found again from Redis,
// over and over. New refuses that, naming WithRedis and what to add.
func TestWithRedisNeedsASharedSourceOfTruth(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	r, err := discovery.New(discovery.WithRedis(rdb), discovery.WithoutHealthChecks())
	if r != nil {
		r.Close()
	}
	var ve *discovery.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "WithRedis") || !strings.Contains(err.Error(), "WithDB") {
		t.Fatalf("New(WithRedis) without WithDB or WithStore = %v; want a ValidationError naming WithRedis and WithDB", err)
	}
	for name, opt := range map[string]discovery.Option{
		"WithStore": discovery.WithStore(discoverytest.NewBackend()),
		"WithDB":    discovery.WithDB(testutil.SQLite(t)),
	} {
		r, err := discovery.New(discovery.WithRedis(rdb), opt, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatalf("New(WithRedis, %s) = %v", name, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
