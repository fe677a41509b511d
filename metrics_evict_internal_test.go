package discovery

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// serviceCounters gathers reg and returns the counters labelled with
// service, as "name{k=v,...}" -> value.
func serviceCounters(t *testing.T, reg *prometheus.Registry, service string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			var labels []string
			mine := false
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
				mine = mine || l.GetName() == "service" && l.GetValue() == service
			}
			if mine {
				sort.Strings(labels)
				out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// A service evicted from L1 (its state forgotten) and looked up again keeps
// counting from where its per-service counters were: Prometheus counters
// must never go back, or rate() reads a reset and loses what was counted
// since the previous scrape (or, once the new count passes the old one,
// everything before the eviction). The counters started again at 0 with
// the state the lookup after the eviction made.
func TestPerServiceCountersSurviveAnEviction(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	reg := prometheus.NewRegistry()
	r, clock := fakeRegistry(t, WithStore(mem), WithMetrics(reg))
	for _, id := range []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"} {
		if _, err := mem.Register(ctx, &core.Instance{Service: "web", ID: id, Host: id[:8], Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 { // L3, then L1 twice
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	SetInstanceHealth(r, "web", "10.0.0.2:1", StatusUnhealthy, 0) // 1 of 3 eligible: panic mode
	SetInstanceHealth(r, "web", "10.0.0.3:1", StatusUnhealthy, 0)
	sel, err := r.Pick(ctx, "web")
	if err != nil || !sel.Panic {
		t.Fatalf("Pick = %+v, %v; want a pick in panic mode", sel, err)
	}
	sel.Done(nil)
	before := serviceCounters(t, reg, "web")
	want := map[string]float64{
		"discovery_lookups_total{layer=L1,service=web}":        2,
		"discovery_lookups_total{layer=L3,service=web}":        1,
		"discovery_picks_total{service=web,strategy=p2c_ewma}": 1,
		"discovery_panic_mode_total{service=web}":              1,
	}
	for k, v := range want {
		if before[k] != v {
			t.Fatalf("before the eviction: %s = %v; want %v (all: %v)", k, before[k], v, before)
		}
	}
	statsBefore := r.Stats()

	e := r.l1.get("web")
	r.l1.drop(e.slot.Load(), true) // as ristretto's eviction does
	if r.stateIfAny("web") != nil {
		t.Fatal("the evicted service's state was kept: the test evicts nothing")
	}
	notBack := func(when string, got map[string]float64) {
		t.Helper()
		for k, v := range before {
			if g, ok := got[k]; ok && g < v {
				t.Errorf("%s: %s = %v; it was %v (a counter went back)", when, k, g, v)
			}
		}
	}
	notBack("after the eviction", serviceCounters(t, reg, "web"))

	if _, err := r.Get(ctx, "web"); err != nil { // L3 again
		t.Fatal(err)
	}
	after := serviceCounters(t, reg, "web")
	notBack("after a lookup of the evicted service", after)
	if k := "discovery_lookups_total{layer=L3,service=web}"; after[k] != before[k]+1 {
		t.Errorf("after a lookup of the evicted service: %s = %v; want %v", k, after[k], before[k]+1)
	}
	if s := r.Stats(); s.Lookups[LayerL3] != statsBefore.Lookups[LayerL3]+1 || s.Lookups[LayerL1] != statsBefore.Lookups[LayerL1] ||
		s.Picks != statsBefore.Picks || s.PanicPicks != statsBefore.PanicPicks {
		t.Errorf("Stats after the eviction and one L3 lookup: %+v; before %+v", s, statsBefore)
	}
}
