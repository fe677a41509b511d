package discovery_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// seriesOf returns the samples of reg (scrape) labelled with a service
// whose name begins with prefix, sorted.
func seriesOf(t *testing.T, reg *prometheus.Registry, prefix string) []string {
	t.Helper()
	var out []string
	for k := range scrape(t, reg) {
		if strings.Contains(k, "service="+prefix) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// The series of services the reaper deleted leave the metrics, in the
// process that reaped them and in every other one that had looked them up
// (on hearing the deletion), and the series of the services that live stay
// as they were, counting on. Before, every service a process had ever
// found kept its series (and the Registry its counts) for as long as the
// process ran: a fleet that churns service names (a CI job's, a canary's)
// grew every process's metric cardinality, and its memory, without bound.
func TestDeletedServicesLeaveNoSeries(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			regR, regO := prometheus.NewRegistry(), prometheus.NewRegistry()
			r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute), discovery.WithMetrics(regR))
			other := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithMetrics(regO)) // looks up only
			st := r.Store()
			put := func(service string, expires time.Time) {
				t.Helper()
				in := discovery.Instance{ID: "a", Service: service, Host: "10.0.0.7", Port: 8080, Weight: 1, RegisteredAt: t0, ExpiresAt: expires}
				if _, err := st.Register(ctx, &in); err != nil {
					t.Fatal(err)
				}
			}
			put("live", t0.Add(24*time.Hour))
			const n = 20
			for i := range n {
				name := fmt.Sprintf("ci_job_%d", i)
				put(name, t0.Add(time.Hour))
				for _, p := range []*discovery.Registry{r, other, other} {
					if _, err := p.Get(ctx, name); err != nil {
						t.Fatalf("Get(%s): %v", name, err)
					}
				}
				if err := r.Deregister(ctx, name, "a"); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range []*discovery.Registry{r, other} {
				if _, err := p.Get(ctx, "live"); err != nil {
					t.Fatal(err)
				}
			}
			if got := len(seriesOf(t, regO, "ci_job_")); got == 0 {
				t.Fatal("the other process has no series of the jobs it looked up: the test counts nothing")
			}
			liveR, liveO := seriesOf(t, regR, "live"), seriesOf(t, regO, "live")
			beforeR, beforeO := scrape(t, regR), scrape(t, regO)

			advanceReaping(clock, 4*time.Minute)
			if got := serviceNames(t, r); got != "live" {
				t.Fatalf("Services = %q; want live alone (the jobs deleted)", got)
			}
			for _, p := range []struct {
				name string
				reg  *prometheus.Registry
			}{{"the reaper's process", regR}, {"the other process", regO}} {
				var left []string
				dur := 10 * time.Second
				start := time.Now()
				for {
					if left = seriesOf(t, p.reg, "ci_job_"); len(left) == 0 || time.Since(start) > dur {
						break
					}
					time.Sleep(time.Millisecond)
				}
				if len(left) > 0 {
					t.Errorf("%s: %d series of deleted services left, e.g. %s", p.name, len(left), left[0])
				}
			}
			// The living service's series: all there, none gone back, and
			// counting on.
			for _, c := range []struct {
				name   string
				reg    *prometheus.Registry
				p      *discovery.Registry
				series []string
				before map[string]float64
			}{{"the reaper's process", regR, r, liveR, beforeR}, {"the other process", regO, other, liveO, beforeO}} {
				got := scrape(t, c.reg)
				for _, s := range c.series {
					if v, ok := got[s]; !ok || v < c.before[s] {
						t.Errorf("%s: %s = %v (present %v); it was %v", c.name, s, v, ok, c.before[s])
					}
				}
				lookups := func(m map[string]float64) (n float64) {
					for k, v := range m {
						if strings.HasPrefix(k, "discovery_lookups_total{") && strings.Contains(k, "service=live}") {
							n += v
						}
					}
					return n
				}
				if _, err := c.p.Get(ctx, "live"); err != nil {
					t.Fatal(err)
				}
				if after := lookups(scrape(t, c.reg)); after != lookups(got)+1 {
					t.Errorf("%s: lookups of live = %v after one more; want %v", c.name, after, lookups(got)+1)
				}
			}
		})
	}
}
