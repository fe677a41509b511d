package discovery_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// advanceReaping moves clock by d in steps of 10 s, each step's reaper round
// done before the next.
func advanceReaping(clock *discoverytest.Clock, d time.Duration) {
	for ; d > 0; d -= 10 * time.Second {
		clock.BlockUntil(1)
		clock.Advance(10 * time.Second)
		clock.BlockUntilHandled()
	}
}

func serviceNames(t *testing.T, r *discovery.Registry) string {
	t.Helper()
	infos, err := r.Services(context.Background())
	if err != nil {
		t.Fatalf("Services: %v", err)
	}
	var names []string
	for _, in := range infos {
		names = append(names, in.Name)
	}
	return strings.Join(names, ",")
}

// A service left with nothing (its last instance deregistered, or its last
// lease ended and its row reaped; no key, never a configuration) is deleted
// by the reaper once its delay has passed: Services and the Overview stop
// listing it, and its name, registered again, is a new service at a
// revision above any the old one had, which every process sees. Before,
// such rows stayed for good: every one-off name (a CI job, a canary with a
// unique name) was listed, with no instance, for as long as the database
// lived, and the table grew with each one.
func TestReaperDeletesServicesLeftWithNothing(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute))
		other := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(0, 0)) // another process
		st := r.Store()
		put := func(service, id string, expires time.Time) int64 {
			t.Helper()
			in := discovery.Instance{ID: id, Service: service, Host: "10.0.0.7", Port: 8080, Weight: 1, RegisteredAt: t0, ExpiresAt: expires}
			rev, err := st.Register(ctx, &in)
			if err != nil {
				t.Fatal(err)
			}
			return rev
		}
		// A one-off CI job, registered and deregistered; another process
		// looked it up meanwhile, and holds its snapshot.
		put("ci_job_1", "a", t0.Add(time.Hour))
		put("ci_job_1", "b", t0.Add(time.Hour))
		if got := ids(other.Get(ctx, "ci_job_1")); got != "a,b" {
			t.Fatalf("other.Get(ci_job_1) = %s", got)
		}
		for _, id := range []string{"a", "b"} {
			if err := r.Deregister(ctx, "ci_job_1", id); err != nil {
				t.Fatal(err)
			}
		}
		old, err := st.Load(ctx, "ci_job_1")
		if err != nil {
			t.Fatal(err)
		}
		last := old.Revision
		// A canary whose process died: its lease ends, the reaper deletes
		// its row.
		put("canary_7f3a", "a", t0.Add(time.Second))
		// Kept: a configuration, a published key, a live instance.
		if _, _, err := st.(discovery.ConfigStore).SetConfig(ctx, "configured", []byte(`{"x":1}`), t0, 20); err != nil {
			t.Fatal(err)
		}
		if err := r.PublishKey(ctx, "keyed", edKey(t, "k1")); err != nil {
			t.Fatal(err)
		}
		put("live", "a", t0.Add(24*time.Hour))

		advanceReaping(clock, 4*time.Minute)

		if got, want := serviceNames(t, r), "configured,keyed,live"; got != want {
			t.Fatalf("Services after 4 min of reaping = %s; want %s (the services left with nothing deleted)", got, want)
		}
		ov, err := other.Overview(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ov.TotalServices != 3 {
			t.Fatalf("Overview lists %d services; want 3", ov.TotalServices)
		}
		for _, name := range []string{"ci_job_1", "canary_7f3a"} {
			if _, err := st.Load(ctx, name); !errors.Is(err, discovery.ErrNotFound) {
				t.Fatalf("Load(%s) after its deletion = %v; want ErrNotFound", name, err)
			}
		}
		// The name again: a new service, at a revision above the old one's,
		// seen by the process that held the old one.
		mustRegister(t, r, inst("ci_job_1", "10.0.0.9", 8080))
		now, err := st.Load(ctx, "ci_job_1")
		if err != nil || now.Revision <= last {
			t.Fatalf("ci_job_1 registered again: %+v, %v; want a revision above %d, its revision before the deletion", now, err, last)
		}
		rev := now.Revision
		svc, err := other.Get(ctx, "ci_job_1")
		if err != nil || ids(svc, nil) != "10.0.0.9:8080" || svc.Revision != rev {
			t.Fatalf("other.Get(ci_job_1) registered again = %+v, %v; want 10.0.0.9:8080 at revision %d", svc, err, rev)
		}
	})
}

// A service whose instances all stopped renewing together (a partition) is
// kept, with them as suspects, for the whole self-preservation grace, under
// the shortest service reap delay: its rows stay until the reaper's delay
// after the grace, and a service with rows is never deleted. Only once
// they are reaped, and the service has been left with nothing for its
// delay, does it go.
func TestServiceReapNeverDeletesASelfPreservedService(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		ttl := discovery.DefaultLeaseTTL
		r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, 40*time.Second),
			discovery.WithServiceReap(time.Nanosecond))
		for _, id := range []string{"a", "b", "c"} {
			in := discovery.Instance{ID: id, Service: "web", Host: "10.0.0.7", Port: 8080, Weight: 1, RegisteredAt: t0, ExpiresAt: t0.Add(ttl)}
			if _, err := r.Store().Register(ctx, &in); err != nil {
				t.Fatal(err)
			}
		}
		grace := 2 * ttl
		for clock.Now().Before(t0.Add(ttl + grace)) {
			svc, err := r.Get(ctx, "web")
			if err != nil || len(svc.Instances) != 3 {
				t.Fatalf("Get(web) at %v = %+v, %v; want its 3 instances (suspects after %v)", clock.Now().Sub(t0), svc, err, ttl)
			}
			if got := serviceNames(t, r); got != "web" {
				t.Fatalf("Services at %v = %q; want web", clock.Now().Sub(t0), got)
			}
			advanceReaping(clock, 5*time.Second)
		}
		advanceReaping(clock, 2*time.Minute)
		if got := serviceNames(t, r); got != "" {
			t.Fatalf("Services 2 min after the grace = %q; want none (rows reaped, then the service)", got)
		}
	})
}

// A Watch of a service that the reaper deletes, left with nothing, hears
// the name's next registration, and nothing in between: the deletion is a
// change with no instance to report.
func TestWatchSeesAServiceDeletedAndRegisteredAgain(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute))
			other := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(0, 0))
			ch := watch(t, other, "ci_job")
			for _, host := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
				g := mustRegister(t, r, inst("ci_job", host, 8080))
				if ev := next(t, ch, 5*time.Second); ev.Kind != discovery.EventInstanceAdded || ev.Instance.Host != host {
					t.Fatalf("got %s; want %s added", describe(ev), host)
				}
				if err := g.Close(); err != nil {
					t.Fatal(err)
				}
				if ev := next(t, ch, 5*time.Second); ev.Kind != discovery.EventInstanceRemoved {
					t.Fatalf("got %s; want %s removed", describe(ev), host)
				}
			}
			advanceReaping(clock, 4*time.Minute)
			if got := serviceNames(t, r); got != "" {
				t.Fatalf("Services = %q; want ci_job deleted", got)
			}
			mustRegister(t, r, inst("ci_job", "10.0.0.9", 8080))
			if ev := next(t, ch, 5*time.Second); ev.Kind != discovery.EventInstanceAdded || ev.Instance.Host != "10.0.0.9" {
				t.Fatalf("got %s; want 10.0.0.9 added", describe(ev))
			}
		})
	}
}
