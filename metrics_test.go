package discovery_test

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/codec"
)

// scrape gathers reg and returns every sample as "name{k=v,...}" -> value
// (a histogram as its _count).
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// A scripted sequence (an L2 hit, an L1 hit, an L3 load, a pick, a failing
// health check, a lookup of a service that does not exist) gives exact
// counter values, per service only for services that exist.
func TestMetricsAfterAScriptedSequence(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[2], discovery.WithClock(clock), discovery.WithLeaseTTL(time.Hour)) // sqlite+redis
	a := w.registry(t)
	reg := prometheus.NewRegistry()
	b := w.registry(t, discovery.WithMetrics(reg), discovery.WithHealthCheck(hInterval, hTimeout),
		discovery.WithCacheFreshness(time.Hour, 0, time.Hour))

	p := newProbeServer(t, "")
	p.set(mode500)
	web := p.instance("web")
	web.ExpiresAt, web.RegisteredAt = time.Time{}, time.Time{}
	mustRegister(t, a, web) // written through to Redis
	addInstance(t, a, discovery.Instance{Service: "db", Host: "10.0.0.9", Port: 5432, Check: discovery.CheckNone,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}) // straight into the database: not in Redis

	steps := []struct {
		service string
		want    discovery.Layer
	}{{"web", discovery.LayerL2}, {"web", discovery.LayerL1}, {"db", discovery.LayerL3}}
	for _, s := range steps {
		res, err := b.Lookup(ctx, s.service)
		if err != nil || res.Layer != s.want {
			t.Fatalf("Lookup(%s) = %v, %v; want %v", s.service, res.Layer, err, s.want)
		}
	}
	if _, err := b.Get(ctx, "nosuch"); err == nil {
		t.Fatal("Get(nosuch) found something")
	}
	sel, err := b.Pick(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	sel.Done(nil)
	for p.hits.Load() == 0 {
		if clock.Now().Sub(t0) > 2*hInterval {
			t.Fatal("no health check within two intervals")
		}
		step(clock, hStep, b)
	}

	// a service b registered but never looked up gets no labels
	mustRegister(t, b, discovery.Instance{Service: "quiet", Host: "10.0.0.5", Port: 80, Check: discovery.CheckNone})

	got := scrape(t, reg)
	want := map[string]float64{
		"discovery_lookups_total{layer=L1,service=web}":          1,
		"discovery_lookups_total{layer=L2,service=web}":          1,
		"discovery_lookups_total{layer=L3,service=web}":          0,
		"discovery_lookups_total{layer=L1,service=db}":           0,
		"discovery_lookups_total{layer=L2,service=db}":           0,
		"discovery_lookups_total{layer=L3,service=db}":           1,
		"discovery_lookup_duration_seconds_count{layer=L2}":      1,
		"discovery_lookup_duration_seconds_count{layer=L3}":      2, // db, and nosuch's "not found"
		"discovery_cache_hits_total{layer=L1}":                   1,
		"discovery_cache_hits_total{layer=L2}":                   1,
		"discovery_stale_served_total{}":                         0,
		"discovery_backend_errors_total{backend=database}":       0,
		"discovery_backend_errors_total{backend=redis}":          0,
		"discovery_health_checks_total{result=fail}":             1,
		"discovery_health_checks_total{result=pass}":             0,
		"discovery_health_checks_total{result=warn}":             0,
		"discovery_picks_total{service=web,strategy=p2c_ewma}":   1,
		"discovery_panic_mode_total{service=web}":                0,
		"discovery_panic_mode_total{service=db}":                 0,
		"discovery_ejections_total{service=web}":                 0,
		"discovery_instances{service=web,status=unknown}":        1, // one failure: not unhealthy yet (3 needed)
		"discovery_instances{service=web,status=unhealthy}":      0,
		"discovery_instances{service=db,status=unknown}":         1,
		"discovery_instances{service=web,status=healthy}":        0,
		"discovery_lookup_duration_seconds_count{layer=unknown}": -1, // must be absent
	}
	for k, v := range want {
		g, ok := got[k]
		switch {
		case v < 0 && ok:
			t.Errorf("%s present (%v); want absent", k, g)
		case v >= 0 && !ok:
			t.Errorf("%s absent; want %v", k, v)
		case v >= 0 && g != v:
			t.Errorf("%s = %v; want %v", k, g, v)
		}
	}
	if n := got["discovery_lookup_duration_seconds_count{layer=L1}"]; n > 1 {
		t.Errorf("L1 timings %v; want at most the one L1 hit (sampled)", n)
	}
	for k := range got {
		if strings.Contains(k, "nosuch") || strings.Contains(k, "quiet") {
			t.Errorf("a label for a service that does not exist or was never looked up: %s", k)
		}
	}
	// Stats agrees, although per-service counters replace the Registry's.
	st := b.Stats()
	if st.ChecksFailed != 1 || st.ChecksPassed != 0 {
		t.Errorf("Stats: %d failed checks, %d passed; want 1, 0", st.ChecksFailed, st.ChecksPassed)
	}
	if st.Lookups[discovery.LayerL1] != 1 || st.Lookups[discovery.LayerL2] != 1 || st.Lookups[discovery.LayerL3] != 2 || st.NotFound != 1 {
		t.Errorf("Stats().Lookups = %v (not found %d); want [_ 1 1 2], 1", st.Lookups, st.NotFound)
	}
}

// Without WithMetrics nothing is registered anywhere; with it, Close
// unregisters, and a second Registry on one Registerer is refused.
func TestMetricsRegistration(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	after, _ := prometheus.DefaultGatherer.Gather()
	if len(after) != len(before) {
		t.Fatalf("the default registry went from %d to %d metric families", len(before), len(after))
	}

	reg := prometheus.NewRegistry()
	a, err := discovery.New(discovery.WithStore(backend), discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := discovery.New(discovery.WithStore(backend), discovery.WithMetrics(reg), discovery.WithoutHealthChecks()); err == nil {
		t.Fatal("a second Registry on one Registerer: no error")
	}
	if _, err := a.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, reg)["discovery_lookups_total{layer=L3,service=web}"]; got != 1 {
		t.Fatalf("the refused second Registry took the first's metrics away: lookups %v; want 1", got)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(scrape(t, reg)); n != 0 {
		t.Fatalf("%d samples after Close; want none", n)
	}
	c := discoverytest.NewRegistry(t, backend, discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	if _, err := c.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, reg)["discovery_lookups_total{layer=L3,service=web}"]; got != 1 {
		t.Fatalf("after re-registering: lookups %v; want 1", got)
	}
}

// With metrics on, an L1 hit (timed or not: 1 in 64 is) and a warm Pick
// allocate nothing.
func TestMetricsHotPathAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	for i := range 3 {
		mustRegister(t, r, inst("web", "10.0.0.1", 80+i))
	}
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(2000, func() {
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("an L1 Get with metrics on allocates %v times", n)
	}
	if n := testing.AllocsPerRun(2000, func() {
		sel, err := r.Pick(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		sel.Done(nil)
	}); n != 0 {
		t.Fatalf("Pick and Done with metrics on allocate %v times", n)
	}
	if got := scrape(t, reg)["discovery_lookups_total{layer=L1,service=web}"]; got < 2000 {
		t.Fatalf("L1 lookups counted %v; want at least 2000", got)
	}
}

// Ejections, panic mode, stale answers and database errors each count, and
// the instances gauge follows the statuses this process shows.
func TestMetricsOfFailures(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithMetrics(reg), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0))
	t.Cleanup(func() { backend.SetFailure(nil) }) // before Close
	var ids []string
	for i := range 10 {
		in := discovery.Instance{ID: "i" + string(rune('0'+i)), Service: "db_svc", Host: "10.0.0.1", Port: 5000 + i, Weight: 1,
			RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
		addInstance(t, r, in)
		ids = append(ids, in.ID)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := r.ReportOutcome("db_svc", ids[0], errCall, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids[1:6] {
		discovery.SetInstanceHealth(r, "db_svc", id, discovery.StatusUnhealthy, 0)
	}
	sel, err := r.Pick(ctx, "db_svc") // 4 of 10 eligible: panic mode
	if err != nil || !sel.Panic {
		t.Fatalf("Pick = %+v, %v; want a pick in panic mode", sel, err)
	}
	sel.Done(nil)
	backend.SetFailure(errors.New("connection refused"))
	clock.Advance(2 * discovery.DefaultFresh)
	res, err := r.Lookup(ctx, "db_svc") // stale while the refresh fails
	if err != nil || !res.Stale {
		t.Fatalf("Lookup = %+v, %v; want a stale answer", res, err)
	}
	waitFor(t, 5*time.Second, "the failed refresh", func() bool { return r.Stats().StoreErrors >= 1 })
	if st := r.Stats(); st.Ejections != 1 || st.PanicPicks != 1 {
		t.Errorf("Stats: %d ejections, %d panic picks; want 1, 1", st.Ejections, st.PanicPicks)
	}

	got := scrape(t, reg)
	want := map[string]float64{
		"discovery_ejections_total{service=db_svc}":               1,
		"discovery_panic_mode_total{service=db_svc}":              1,
		"discovery_picks_total{service=db_svc,strategy=p2c_ewma}": 1,
		"discovery_stale_served_total{}":                          1,
		"discovery_backend_errors_total{backend=database}":        1,
		"discovery_instances{service=db_svc,status=ejected}":      1,
		"discovery_instances{service=db_svc,status=unhealthy}":    5,
		"discovery_instances{service=db_svc,status=unknown}":      4,
		"discovery_lookups_total{layer=L1,service=db_svc}":        1,
		"discovery_lookups_total{layer=L3,service=db_svc}":        1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v; want %v", k, got[k], v)
		}
	}
}

// A snapshot in Redis with an instance status no writer produces (a
// corrupt byte) is a miss: Get answers from the database, and a scrape of
// the metrics works (its collector indexed an array by that status).
func TestCorruptStatusInRedisIsAMiss(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[2], discovery.WithClock(clock), discovery.WithLeaseTTL(time.Hour)) // sqlite+redis
	a := w.registry(t)
	if _, err := a.Register(ctx, inst("db_svc", "10.0.0.7", 8080)); err != nil {
		t.Fatal(err)
	}
	key := w.ns + ":svc:{db_svc}"
	var v string
	for i := 0; i < 200; i++ { // the write-through is asynchronous
		if v, _ = w.rdb.Get(ctx, key).Result(); v != "" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	svc, at, err := codec.Decode(v)
	if err != nil {
		t.Fatalf("decode %q: %v", key, err)
	}
	svc.Instances[0].Status = 200 // one flipped byte
	if err := w.rdb.Set(ctx, key, codec.Encode(svc, at), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b := w.registry(t, discovery.WithMetrics(reg))
	got, err := b.Get(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if st := got.Instances[0].Status; st != discovery.StatusUnknown {
		t.Fatalf("Get shows status %v; want unknown, the database's", st)
	}
	if s := b.Stats(); s.L2DecodeErrors == 0 {
		t.Fatalf("the corrupt snapshot was not counted as one: %+v", s)
	}
	scrape(t, reg)
}

// A snapshot in Redis too old to serve (read over one lease TTL ago) sends
// the lookup on to the database: that read is an L2 miss, not a hit, in
// Stats, in the Overview's L2 hit rate and in discovery_cache_hits_total,
// which count Redis reads that found a usable snapshot.
func TestUnusableL2SnapshotIsAMiss(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[2], discovery.WithClock(clock)) // sqlite+redis
	a := w.registry(t)
	addInstance(t, a, discovery.Instance{Service: "db", Host: "10.0.0.9", Port: 5432, Check: discovery.CheckNone,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
	if res, err := a.Lookup(ctx, "db"); err != nil || res.Layer != discovery.LayerL3 {
		t.Fatalf("a.Lookup = %v, %v; want an answer from L3", res.Layer, err)
	}
	key := w.ns + ":svc:{db}"
	waitFor(t, 5*time.Second, "the snapshot written through to Redis", func() bool {
		n, err := w.rdb.Exists(ctx, key).Result()
		return err == nil && n == 1
	})
	clock.Advance(20 * time.Second) // over one lease TTL (15 s) since it was read

	reg := prometheus.NewRegistry()
	b := w.registry(t, discovery.WithMetrics(reg))
	if res, err := b.Lookup(ctx, "db"); err != nil || res.Layer != discovery.LayerL3 {
		t.Fatalf("b.Lookup = %v, %v; want an answer from L3 (the Redis snapshot is too old)", res.Layer, err)
	}
	if s := b.Stats(); s.L2Hits != 0 || s.L2Misses != 1 {
		t.Errorf("Stats: L2Hits %d, L2Misses %d; want 0, 1", s.L2Hits, s.L2Misses)
	}
	if got := scrape(t, reg)["discovery_cache_hits_total{layer=L2}"]; got != 0 {
		t.Errorf("discovery_cache_hits_total{layer=L2} = %v; want 0", got)
	}
	ov, err := b.Overview(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ov.Cache {
		if l.Layer == discovery.LayerL2 && l.HitRate != 0 {
			t.Errorf("Overview: L2 %+v; want a hit rate of 0", l)
		}
	}
}

// Every database call that fails counts in Stats().StoreErrors and in
// discovery_backend_errors_total{backend="database"}, as their docs say
// ("failed database calls"), not only a lookup's load: a process that only
// registers, deregisters and lists showed 0 through a whole outage.
func TestFailedWritesCountAsStoreErrors(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, backend, discovery.WithMetrics(reg), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	backend.SetFailure(errors.New("connection refused"))
	t.Cleanup(func() { backend.SetFailure(nil) }) // before Close
	calls := []struct {
		name string
		call func() error
	}{
		{"Register", func() error { _, err := r.Register(ctx, inst("web", "10.0.0.2", 80)); return err }},
		{"Deregister", func() error { return r.Deregister(ctx, "web", "10.0.0.9:80") }},
		{"Services", func() error { _, err := r.Services(ctx); return err }},
	}
	for i, c := range calls {
		if err := c.call(); !errors.Is(err, discovery.ErrUnavailable) {
			t.Fatalf("%s with the database down = %v; want ErrUnavailable", c.name, err)
		}
		if got, want := r.Stats().StoreErrors, uint64(i+1); got != want {
			t.Errorf("after a failed %s: Stats().StoreErrors = %d; want %d", c.name, got, want)
		}
	}
	if got, want := scrape(t, reg)["discovery_backend_errors_total{backend=database}"], float64(len(calls)); got != want {
		t.Errorf("discovery_backend_errors_total{backend=database} = %v; want %v", got, want)
	}
}

// gaugeTotal sums discovery_instances of service over every status.
func gaugeTotal(got map[string]float64, service string) float64 {
	var n float64
	for k, v := range got {
		if strings.HasPrefix(k, "discovery_instances{service="+service+",") {
			n += v
		}
	}
	return n
}

// A service this process looked up once and not since keeps its instances
// in discovery_instances while their leases are renewed: renewals change no
// revision, so nothing refreshes the snapshot L1 holds, and reading that
// snapshot's lease ends against the clock showed 0 live instances one lease
// TTL after the lookup, while Get answered with both.
func TestInstancesGaugeOfAnIdleServiceSurvivesRenewals(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock))
	reg := prometheus.NewRegistry()
	b := w.registry(t, discovery.WithMetrics(reg))
	ttl := discovery.DefaultLeaseTTL
	for _, id := range []string{"a", "b"} {
		addInstance(t, b, discovery.Instance{ID: id, Service: "idle", Host: "10.0.0.1", Port: 80, Check: discovery.CheckNone,
			RegisteredAt: t0, ExpiresAt: t0.Add(ttl)})
	}
	if svc, err := b.Get(ctx, "idle"); err != nil || len(svc.Instances) != 2 {
		t.Fatalf("Get(idle) = %v, %v; want 2 instances", ids(svc, err), err)
	}
	if n := gaugeTotal(scrape(t, reg), "idle"); n != 2 {
		t.Fatalf("discovery_instances of idle = %v after the lookup; want 2", n)
	}
	// Three lease TTLs of renewals at TTL/3, as each instance's registration does.
	for i := 1; i <= 9; i++ {
		clock.Advance(ttl / 3)
		now := clock.Now()
		for _, id := range []string{"a", "b"} {
			if err := b.Store().Renew(ctx, "idle", id, now, now.Add(ttl)); err != nil {
				t.Fatalf("Renew(%s): %v", id, err)
			}
		}
		if n := gaugeTotal(scrape(t, reg), "idle"); n != 2 {
			t.Fatalf("discovery_instances of idle = %v at %v, both leases renewed; want 2", n, now.Sub(t0))
		}
	}
	if svc, err := b.Get(ctx, "idle"); err != nil || len(svc.Instances) != 2 {
		t.Fatalf("Get(idle) = %v; want 2 instances", ids(svc, err))
	}
	// b stops renewing: once a lookup has read the service after its
	// lease ended, it leaves the count.
	for range 4 {
		clock.Advance(ttl / 3)
		now := clock.Now()
		if err := b.Store().Renew(ctx, "idle", "a", now, now.Add(ttl)); err != nil {
			t.Fatalf("Renew(a): %v", err)
		}
	}
	if got := ids(b.Get(ctx, "idle")); got != "a" {
		t.Fatalf("Get(idle) = %v after b's lease ended; want a", got)
	}
	if n := gaugeTotal(scrape(t, reg), "idle"); n != 1 {
		t.Fatalf("discovery_instances of idle = %v once a lookup read b's lease ended; want 1", n)
	}
}

// Two Registry values can share one Registerer only if each is wrapped with
// labels of its own (every series of one name must have the same label
// names): wrapping the second alone, as the docs once advised, is refused,
// and the error must say what works.
func TestMetricsOfTwoRegistriesOnOneRegisterer(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	reg := prometheus.NewRegistry()
	discoverytest.NewRegistry(t, backend, discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	for _, other := range []prometheus.Registerer{reg, prometheus.WrapRegistererWith(prometheus.Labels{"registry": "b"}, reg)} {
		_, err := discovery.New(discovery.WithStore(backend), discovery.WithMetrics(other), discovery.WithoutHealthChecks())
		if !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("a second Registry on one Registerer: %v; want ErrInvalid", err)
		}
		if !strings.Contains(err.Error(), "WrapRegistererWith") || !strings.Contains(err.Error(), "each") {
			t.Errorf("the error does not say how to share a Registerer: %v", err)
		}
	}

	// What works: each wrapped, with labels of its own.
	shared := prometheus.NewRegistry()
	rs := map[string]*discovery.Registry{}
	for _, name := range []string{"a", "b"} {
		rs[name] = discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(),
			discovery.WithMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"registry": name}, shared)))
	}
	mustRegister(t, rs["a"], inst("web", "10.0.0.1", 80))
	for range 2 {
		if _, err := rs["b"].Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	got := scrape(t, shared)
	if a, b := got["discovery_lookups_total{layer=L3,registry=b,service=web}"], got["discovery_cache_hits_total{layer=L1,registry=b}"]; a != 1 || b != 1 {
		t.Errorf("registry b: L3 lookups %v, L1 hits %v; want 1, 1", a, b)
	}
	if n := got["discovery_cache_hits_total{layer=L1,registry=a}"]; n != 0 {
		t.Errorf("registry a: L1 hits %v; want 0", n)
	}
}

// L1 answers are timed one in 64, stale ones too: during an outage (or
// while revalidating) every stale L1 answer was timed, 64 times the share
// of fresh ones, which skewed the L1 histogram toward the slow path and its
// count away from a sample.
func TestMetricsTimeOneStaleL1AnswerInASample(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithMetrics(reg),
		discovery.WithoutHealthChecks(), discovery.WithLeaseTTL(time.Hour))
	t.Cleanup(func() { backend.SetFailure(nil) }) // before Close deregisters
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	backend.SetFailure(errors.New("connection refused"))
	clock.Advance(2 * discovery.DefaultFresh)
	const n = 640
	stale := 0
	for range n {
		res, err := r.Lookup(ctx, "web")
		if err != nil {
			t.Fatalf("Lookup with the database down: %v (want stale data)", err)
		}
		if res.Stale && res.Layer == discovery.LayerL1 {
			stale++
		}
	}
	if stale < n/2 {
		t.Fatalf("%d of %d lookups stale from L1; the test needs most", stale, n)
	}
	// 10 expected; 80 or more has a probability below 1e-30 for a 1-in-64 sample.
	if got := scrape(t, reg)["discovery_lookup_duration_seconds_count{layer=L1}"]; got >= n/8 {
		t.Errorf("%v of %d L1 answers (%d stale) timed; want about 1 in 64", got, n, stale)
	}
}

// discovery_instances counts the snapshot this process holds; of a service
// whose state it keeps (watched, health-checked) but whose snapshot left L1
// (evicted, invalidated), it has no count to give. It said 0 of every
// status, as if the service had lost every instance: an alert on "no
// healthy instance" fired for a service merely evicted from the cache.
func TestInstancesGaugeOfAServiceNotInL1SaysNothing(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	mustRegister(t, r, inst("web", "10.0.0.2", 80))
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := r.Watch(wctx, "web"); err != nil { // keeps the service's state
		t.Fatal(err)
	}
	if n := gaugeTotal(scrape(t, reg), "web"); n != 2 {
		t.Fatalf("discovery_instances of web = %v; want 2", n)
	}
	if err := r.Invalidate(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	got := scrape(t, reg)
	_, present := got["discovery_instances{service=web,status=unknown}"]
	if n := gaugeTotal(got, "web"); present && n != 2 {
		t.Errorf("discovery_instances of web = %v with its snapshot out of L1; want 2, or no series", n)
	}
	if got["discovery_lookups_total{layer=L3,service=web}"] != 1 {
		t.Errorf("its lookups went with its snapshot: %v", got)
	}
	// A lookup reads it again.
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if n := gaugeTotal(scrape(t, reg), "web"); n != 2 {
		t.Fatalf("discovery_instances of web = %v after a lookup; want 2", n)
	}
}

// A Pick answered with a stale snapshot (stale-while-revalidate, or
// stale-if-error while the database is down) counts in Stats().Stale and
// discovery_stale_served_total, as a stale Get or Lookup does: those count
// answers served stale, and a process that only picks (through Pick, or
// HTTPClient) showed none through a whole database outage.
func TestStalePicksCountAsStale(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		fail    bool
		opts    []discovery.PickOption
	}{
		{"stale-while-revalidate", 2 * discovery.DefaultFresh, false, nil},
		{"stale-if-error", time.Minute, true, nil}, // past stale-while-revalidate (30 s)
		// gRPC's picker's pick, which serves what the process holds.
		{"NoWait", 2 * discovery.DefaultFresh, false, []discovery.PickOption{discovery.NoWait()}},
		{"NoWait, database down", time.Minute, true, []discovery.PickOption{discovery.NoWait()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			backend := discoverytest.NewBackend()
			reg := prometheus.NewRegistry()
			r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithMetrics(reg),
				discovery.WithoutHealthChecks(), discovery.WithLeaseTTL(time.Hour), discovery.WithCloseDrain(0))
			t.Cleanup(func() { backend.SetFailure(nil) }) // before Close deregisters
			mustRegister(t, r, inst("web", "10.0.0.1", 80))
			sel, err := r.Pick(ctx, "web") // loads: fresh
			if err != nil {
				t.Fatal(err)
			}
			sel.Done(nil)
			if tt.fail {
				backend.SetFailure(errors.New("connection refused"))
			}
			clock.Advance(tt.advance)
			if sel, err = r.Pick(ctx, "web", tt.opts...); err != nil {
				t.Fatalf("Pick past the freshness window: %v; want the stale snapshot", err)
			}
			sel.Done(nil)
			if got := r.Stats().Stale; got != 1 {
				t.Errorf("Stats().Stale = %d after a stale pick; want 1", got)
			}
			if got := scrape(t, reg)["discovery_stale_served_total{}"]; got != 1 {
				t.Errorf("discovery_stale_served_total = %v after a stale pick; want 1", got)
			}
			if st := r.Stats(); st.Lookups != [4]uint64{} {
				t.Errorf("Stats().Lookups = %v; want none: picks count in Picks", st.Lookups)
			}
		})
	}
}
