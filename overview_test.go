package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/core"
)

// Overview counts services by health, averages response times over the
// checked services, gives per-instance detail and the cache hit rates.
func TestOverview(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ov.TotalServices != 3 || ov.HealthyServices != 2 || ov.DegradedServices != 1 || ov.UnhealthyServices != 0 {
		t.Fatalf("counts %d total, %d healthy, %d degraded, %d unhealthy; want 3, 2, 1, 0",
			ov.TotalServices, ov.HealthyServices, ov.DegradedServices, ov.UnhealthyServices)
	}
	byName := map[string]discovery.ServiceOverview{}
	for _, s := range ov.Services {
		byName[s.Name] = s
	}
	orders, payments := byName["orders"], byName["payments"]
	// orders: latest checks 9 ms and 2 ms; payments: 60 ms; inventory never checked
	if orders.ResponseTime != 5500*time.Microsecond || payments.ResponseTime != 60*time.Millisecond {
		t.Fatalf("response times orders %v, payments %v; want 5.5ms, 60ms", orders.ResponseTime, payments.ResponseTime)
	}
	if want := (5500*time.Microsecond + 60*time.Millisecond) / 2; ov.AvgResponseTime != want {
		t.Fatalf("average %v; want %v (over the checked services only)", ov.AvgResponseTime, want)
	}
	if orders.Status != discovery.StatusWarning || orders.Usable != 1 || orders.Live != 2 || len(orders.Instances) != 2 {
		t.Fatalf("orders: %+v", orders)
	}
	bad := orders.Instances[1]
	if bad.Status != discovery.StatusUnhealthy || bad.LastError != "HTTP 500" || len(bad.History) != 3 || bad.Zone != "eu-1b" {
		t.Fatalf("the unhealthy instance: %+v", bad)
	}
	if !orders.LastCheck.Equal(t0.Add(8 * time.Second)) {
		t.Fatalf("orders last checked %v; want t0+8s", orders.LastCheck)
	}
	if len(ov.Cache) != 1 || ov.Cache[0].Layer != discovery.LayerL1 || ov.Cache[0].Hits == 0 || ov.Cache[0].HitRate <= 0 || ov.Cache[0].HitRate >= 1 {
		t.Fatalf("cache layers %+v; want L1 with hits and misses", ov.Cache)
	}
}

// While the database cannot list services, Overview shows those this
// process holds, and says so.
func TestOverviewDuringDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	b := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, b, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	t.Cleanup(func() { b.SetFailure(nil) })
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	b.SetFailure(errors.New("connection refused"))
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !ov.FromCache || ov.TotalServices != 1 || ov.Services[0].Name != "web" || ov.Services[0].Live != 1 {
		t.Fatalf("overview during an outage: %+v", ov)
	}
}

// An instance whose checks pass too slowly for its score to stay above the
// minimum is not picked, and Overview does not count it as usable: the
// dashboard called such a service healthy while Pick refused every call.
func TestOverviewCountsALowScoreAsNotUsable(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	addInstance(t, r, discovery.Instance{ID: "slow:8080", Service: "slow", Host: "10.0.3.1", Port: 8080,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
	if _, err := r.Get(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	for range 4 { // passing, each in 1 s: samples of 0.1
		clock.Advance(time.Second)
		discovery.InjectCheck(r, "slow", "slow:8080", discovery.StatusHealthy, time.Second, "")
	}
	hs, err := r.Health(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Status != discovery.StatusHealthy || hs[0].Score > discovery.DefaultMinScore {
		t.Fatalf("health %+v; want one healthy instance scoring at most %v", hs, discovery.DefaultMinScore)
	}
	if _, err := r.Pick(ctx, "slow"); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick: %v; want ErrNoHealthyInstances", err)
	}
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.Services) != 1 {
		t.Fatalf("services %+v; want slow alone", ov.Services)
	}
	so := ov.Services[0]
	if so.Usable != 0 || so.Status != discovery.StatusUnhealthy || ov.UnhealthyServices != 1 || ov.HealthyServices != 0 {
		t.Fatalf("slow: usable %d, status %s; overview %d healthy, %d unhealthy; want 0, unhealthy, 0, 1",
			so.Usable, so.Status, ov.HealthyServices, ov.UnhealthyServices)
	}
}

// Instances whose leases ended together and which Get keeps as suspects
// (self-preservation) are what Get and Pick answer with; Overview shows
// them too, instead of a service with no live instance.
func TestOverviewShowsInstancesKeptAsSuspects(t *testing.T) {
	ctx := context.Background()
	r, clock, backend := lapseRegistry(t)
	ttl := discovery.DefaultLeaseTTL
	writeInstances(t, backend, "db_svc", 3, func(int) time.Time { return t0.Add(ttl) })
	if got := statuses(r.Get(ctx, "db_svc")); got != "3 instances, 0 suspect" {
		t.Fatalf("before the lapse: %s", got)
	}
	clock.Set(t0.Add(ttl + time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "3 instances, 3 suspect" {
		t.Fatalf("after the lapse: %s; want 3 instances, 3 suspect", got)
	}
	if _, err := r.Pick(ctx, "db_svc"); err != nil {
		t.Fatalf("Pick: %v", err)
	}
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.Services) != 1 {
		t.Fatalf("services %+v; want db_svc alone", ov.Services)
	}
	so := ov.Services[0]
	if so.Live != 3 || len(so.Instances) != 3 || so.Status == discovery.StatusUnhealthy {
		t.Fatalf("db_svc: live %d, %d instances, status %s; want 3, 3, not unhealthy (Get shows 3 suspects and Pick picks them)",
			so.Live, len(so.Instances), so.Status)
	}
}

// An instance set to weight 0 is out of selection (SetWeight(ctx, 0)), as a
// draining one is: a service whose every instance is at weight 0 was shown
// healthy while Pick refused every call.
func TestOverviewCountsWeightZeroAsNotUsable(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	a := mustRegister(t, r, inst("web", "10.0.0.1", 80))
	b := mustRegister(t, r, inst("web", "10.0.0.2", 80))
	for _, g := range []*discovery.Registration{a, b} {
		if err := g.SetWeight(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Pick(ctx, "web"); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Fatalf("Pick: %v; want ErrNoHealthyInstances", err)
	}
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.Services) != 1 {
		t.Fatalf("services %+v; want web alone", ov.Services)
	}
	if so := ov.Services[0]; so.Live != 2 || so.Usable != 0 || so.Status != discovery.StatusUnhealthy {
		t.Fatalf("web: live %d, usable %d, status %s; want 2, 0, unhealthy", so.Live, so.Usable, so.Status)
	}
}

// An instance that was draining when its lease lapsed with its service's
// others is kept as a suspect, which Pick never picks (it was being taken
// out): Overview counted it usable, and a service whose only kept instances
// were draining showed healthy while Pick refused every call.
func TestOverviewCountsADrainingSuspectAsNotUsable(t *testing.T) {
	ctx := context.Background()
	r, clock, backend := lapseRegistry(t)
	ttl := discovery.DefaultLeaseTTL
	for i := range 3 {
		in := discovery.Instance{ID: fmt.Sprintf("i%02d", i), Service: "db_svc", Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			Status: discovery.StatusDraining, RegisteredAt: t0, ExpiresAt: t0.Add(ttl)}
		if _, err := backend.Register(ctx, &in); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(t0.Add(ttl + time.Second))
	if got := statuses(r.Get(ctx, "db_svc")); got != "3 instances, 3 suspect" {
		t.Fatalf("after the lapse: %s; want 3 instances, 3 suspect", got)
	}
	if _, err := r.Pick(ctx, "db_svc"); err == nil {
		t.Fatal("Pick picked an instance that was draining: the test does not show the case")
	}
	ov, err := r.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.Services) != 1 {
		t.Fatalf("services %+v; want db_svc alone", ov.Services)
	}
	if so := ov.Services[0]; so.Live != 3 || so.Usable != 0 || so.Status != discovery.StatusUnhealthy || ov.HealthyServices != 0 {
		t.Fatalf("db_svc: live %d, usable %d, status %s (%d healthy services); want 3, 0, unhealthy, 0",
			so.Live, so.Usable, so.Status, ov.HealthyServices)
	}
}

// Overview looks every service up so that this process checks its health,
// but those lookups are not the application's: counted, a dashboard that
// fetches the overview every 1.5 s made the L1 hit rate it shows (and
// Stats, and discovery_lookups_total) mostly a measure of itself, and gave
// metric labels to services the application never looked up.
func TestOverviewDoesNotCountItsOwnLookups(t *testing.T) {
	ctx := context.Background()
	r, reg := quietElsewhere(t)
	var ov discovery.Overview
	for range 10 {
		var err error
		if ov, err = r.Overview(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(ov.Services) != 1 || ov.Services[0].Live != 1 {
		t.Fatalf("overview services %+v; want quiet with 1 live instance", ov.Services)
	}
	if c := ov.Cache[0]; c.Hits != 0 || c.Misses != 0 {
		t.Errorf("L1 %d hits, %d misses with no lookup of the application's; want 0, 0", c.Hits, c.Misses)
	}
	countedNoLookup(t, r, reg, "the overview")
	// The application's lookups count as before.
	if _, err := r.Get(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	if l := r.Stats().Lookups; l[discovery.LayerL1] != 1 {
		t.Errorf("Stats().Lookups = %v after a Get; want one L1 hit", l)
	}
}

// cancelAfterList is a store whose listing of services ends the caller's
// context once it has answered: the caller gives up during an Overview.
type cancelAfterList struct {
	discovery.Store
	cancel context.CancelFunc
}

func (s *cancelAfterList) Services(ctx context.Context, now time.Time) ([]discovery.ServiceInfo, error) {
	infos, err := s.Store.Services(ctx, now)
	if s.cancel != nil {
		s.cancel()
	}
	return infos, err
}

// An Overview whose context ends while it looks up a service that has no
// live instance (its rows expired, not reaped yet) returns the context's
// error, or the overview: it returned `service "gone_svc" not found`, a
// failure of the whole Overview because of one service, which matched
// ErrNotFound and not the context's error that a caller who gave up checks
// for.
func TestOverviewEndedByItsContextIsNotNotFound(t *testing.T) {
	b := discoverytest.NewBackend()
	expired := discovery.Instance{Service: "gone_svc", ID: "10.0.0.1:80", Host: "10.0.0.1", Port: 80,
		Weight: discovery.DefaultWeight, ExpiresAt: time.Now().Add(-time.Minute)}
	if _, err := b.Register(context.Background(), &expired); err != nil {
		t.Fatal(err)
	}
	s := &cancelAfterList{Store: b}
	r, err := discovery.New(discovery.WithStore(s), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Get(context.Background(), "gone_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("Get = %v; want ErrNotFound (no live instance)", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.cancel = cancel
	_, err = r.Overview(ctx)
	if err != nil && !errors.Is(err, context.Canceled) || errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("Overview whose context ended = %v; want the overview or context.Canceled", err)
	}
}

// The admin handler's GET /services/{name} looks the service up for its
// health, as the Overview does, and like the Overview's those lookups are
// an operator's, not the application's: counted, a monitoring script
// polling it made Stats, the Overview's L1 hit rate and
// discovery_lookups_total a measure of itself, and anyone who could reach
// the (by default unprotected) reads gave every service in the database a
// set of metric labels in a process that never used it.
func TestAdminServiceDoesNotCountItsLookups(t *testing.T) {
	ctx := context.Background()
	r, reg := quietElsewhere(t)
	h := r.AdminHandler()
	for range 3 {
		if rec := serve(h, "GET", "/services/quiet", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "10.0.0.1") {
			t.Fatalf("GET /services/quiet = %d %s; want 200 with its instance", rec.Code, rec.Body)
		}
	}
	countedNoLookup(t, r, reg, "the admin handler")
	// The application's lookups count as before.
	if _, err := r.Get(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, reg)["discovery_lookups_total{layer=L1,service=quiet}"]; got != 1 {
		t.Errorf("discovery_lookups_total{layer=L1,service=quiet} = %v after a Get; want 1", got)
	}
}

// blackholeStore is a store that, while blackholed, answers no listing and
// no load until the call's context ends or the hole closes: a database
// behind a network that drops its packets. A call its own timeout ends
// (the Registry's) fails with ErrUnavailable, as the SQL store's does.
type blackholeStore struct {
	discovery.Store
	hole atomic.Pointer[chan struct{}] // nil: answering
}

func (s *blackholeStore) blackhole(on bool) {
	if on {
		ch := make(chan struct{})
		s.hole.CompareAndSwap(nil, &ch)
	} else if ch := s.hole.Swap(nil); ch != nil {
		close(*ch)
	}
}

// wait waits for ctx, or for the hole to close; it reports whether the call
// goes on to the store.
func (s *blackholeStore) wait(ctx context.Context, op string) error {
	ch := s.hole.Load()
	if ch == nil {
		return nil
	}
	select {
	case <-*ch:
		return nil
	case <-ctx.Done():
	}
	if errors.Is(context.Cause(ctx), core.ErrTimeout) {
		return &core.BackendError{Backend: "database", Op: op, Err: errors.New("i/o timeout")}
	}
	return ctx.Err()
}

func (s *blackholeStore) Services(ctx context.Context, now time.Time) ([]discovery.ServiceInfo, error) {
	if err := s.wait(ctx, "services"); err != nil {
		return nil, err
	}
	return s.Store.Services(ctx, now)
}

func (s *blackholeStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if err := s.wait(ctx, "load"); err != nil {
		return nil, err
	}
	return s.Store.Load(ctx, name)
}

// While the database is known to be down, Overview shows what this process
// holds at once, as lookups serve stale data at once then: it waited for
// the listing (the database timeout, 5 s, for every dashboard fetch), and
// a caller with a shorter deadline got that deadline's error and no
// overview for the whole outage. So it did, past the stale-if-error window,
// once a service's snapshot there had aged out: its load waited too.
func TestOverviewDoesNotWaitForADatabaseKnownDown(t *testing.T) {
	for _, tt := range []struct {
		name    string
		advance time.Duration // past the freshness window, and past stale-if-error too
		live    int           // what the overview shows of the service
	}{
		{"stale", 2 * discovery.DefaultFresh, 1},
		{"past stale-if-error", 2 * discovery.DefaultStaleIfError, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			b := discoverytest.NewBackend()
			s := &blackholeStore{Store: b}
			r, err := discovery.New(discovery.WithStore(s), discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.blackhole(false); b.SetFailure(nil); _ = r.Close() })
			addInstance(t, r, discovery.Instance{Service: "web", Host: "10.0.0.1", Port: 80, Check: discovery.CheckNone,
				RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
			if _, err := r.Get(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			// The database fails a call: known down from then on.
			b.SetFailure(errors.New("connection refused"))
			if _, err := r.Services(ctx); !errors.Is(err, discovery.ErrUnavailable) {
				t.Fatalf("Services = %v; want ErrUnavailable", err)
			}
			// Black-holed from now on, and failing still behind the hole: a
			// background call (a reaper round) that got past the hole's
			// check before it closed and reached the store after a
			// SetFailure(nil) here could answer, end the outage, and have
			// the Overview wait for the database. The test failed so once
			// in CI; the likeliest cause, not reproduced in 80 runs since.
			s.blackhole(true)
			clock.Advance(tt.advance)

			// Far shorter than the database and load timeouts (5 s): met
			// only by an Overview that waits for the database.
			dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			ov, err := r.Overview(dctx)
			if err != nil {
				t.Fatalf("Overview with the database known down = %v; want the services this process holds", err)
			}
			if !ov.FromCache || len(ov.Services) != 1 || ov.Services[0].Name != "web" || ov.Services[0].Live != tt.live {
				t.Fatalf("Overview = %+v; want web from the cache with %d live", ov, tt.live)
			}
			// Once the database answers, the overview lists from it again.
			b.SetFailure(nil)
			s.blackhole(false)
			waitFor(t, 5*time.Second, "an overview from the database", func() bool {
				ov, err := r.Overview(ctx)
				return err == nil && !ov.FromCache && len(ov.Services) == 1 && ov.Services[0].Live == 1
			})
		})
	}
}

// countedNoLookup fails t if r counted a lookup, or reg holds a label of
// service quiet, which only by (the overview, the admin handler) looked up.
func countedNoLookup(t *testing.T, r *discovery.Registry, reg *prometheus.Registry, by string) {
	t.Helper()
	if l := r.Stats().Lookups; l != [4]uint64{} {
		t.Errorf("Stats().Lookups = %v after reads by %s only; want none", l, by)
	}
	for k := range scrape(t, reg) {
		if strings.Contains(k, "quiet") {
			t.Errorf("a label for a service only %s looked up: %s", by, k)
		}
	}
}

// quietElsewhere is a Registry with metrics and a service "quiet" that
// another process registered (10.0.0.1:80), not looked up here yet.
func quietElsewhere(t *testing.T) (*discovery.Registry, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	b := discoverytest.NewBackend()
	other := discoverytest.NewRegistry(t, b, discovery.WithoutHealthChecks())
	r := discoverytest.NewRegistry(t, b, discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	mustRegister(t, other, inst("quiet", "10.0.0.1", 80))
	return r, reg
}
