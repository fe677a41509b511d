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

// A Register or Update given a context that had already ended wrote
// nothing (the store refuses to begin), yet was taken as a write of
// unknown outcome: the process's snapshot of the service stopped being
// fresh, and the service was read again and announced, as if it might
// have changed. A caller shutting down (its context done) cost a reload.
// Deregister so too.
func TestWritesWithAnEndedContextLeaveTheCacheFresh(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	other := mustRegister(t, r, inst("db_svc", "10.0.0.3", 1))
	// A row of a process that died, for Registry.Deregister.
	dead := discovery.Instance{ID: "dead", Service: "db_svc", Host: "10.0.0.4", Port: 1, Weight: 1, ExpiresAt: t0.Add(1000 * time.Hour)}
	if _, err := backend.Register(ctx, &dead); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	for name, write := range map[string]func() error{
		"Register (new)":          func() error { _, err := r.Register(ended, inst("db_svc", "10.0.0.2", 1)); return err },
		"Register (replacing)":    func() error { _, err := r.Register(ended, inst("db_svc", "10.0.0.1", 1)); return err },
		"Update":                  func() error { return g.Update(ended, func(in *discovery.Instance) { in.Weight = 7 }) },
		"SetWeight":               func() error { return g.SetWeight(ended, 7) },
		"Registration.Deregister": func() error { return other.Deregister(ended) },
		"Registry.Deregister":     func() error { return r.Deregister(ended, "db_svc", "dead") },
	} {
		if err := write(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with an ended context = %v; want context.Canceled", name, err)
		}
		res, err := r.Lookup(ctx, "db_svc")
		if err != nil || res.Layer != discovery.LayerL1 || res.Stale {
			t.Errorf("Lookup after %s with an ended context = layer %v, stale %v, %v; want a fresh L1 answer: nothing was written",
				name, res.Layer, res.Stale, err)
		}
	}
	if got := g.Instance().Weight; got != discovery.DefaultWeight {
		t.Errorf("weight = %d after writes with an ended context; want %d", got, discovery.DefaultWeight)
	}
}

// SetWeight given a nil context said "Update needs a context": the caller
// called no Update.
func TestSetWeightNilContextNamesSetWeight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	var nilCtx context.Context
	err := g.SetWeight(nilCtx, 3)
	var ve *discovery.ValidationError
	if !errors.As(err, &ve) || !strings.HasPrefix(ve.Reason, "SetWeight ") {
		t.Errorf("SetWeight(nil, 3) = %v; want a ValidationError naming SetWeight", err)
	}
}

// A Register that replaced a registration of the same instance in this
// process kept, in its Instance, its own time as RegisteredAt, while the
// store kept the first registration's (as RegisteredAt's doc says) and
// every lookup showed that one.
func TestReplacingRegisterKeepsTheFirstRegisteredAt(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	clock.Advance(time.Second)
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	svc, err := backend.Load(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	stored := svc.Instance("10.0.0.1:1").RegisteredAt
	if got := g.Instance().RegisteredAt; !got.Equal(stored) {
		t.Errorf("Instance().RegisteredAt = %v after a replacing Register; the store (and every lookup) has %v", got, stored)
	}
}

// Tags, zones and versions are documented as printable, but only control
// characters were refused: a zero-width space, a bidi override, a line
// separator or a BOM passed, so that a tag that printed as "prod" did not
// match WithTag("prod"), and a zone shown in the admin UI could reorder the
// text around it. Each is refused now, and nothing is written.
func TestInvisibleCharactersInTagsZonesAndVersionsAreInvalid(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	for name, in := range map[string]discovery.Instance{
		"tag with a zero-width space":   {Tags: []string{"prod\u200b"}},
		"tag with a BOM":                {Tags: []string{"\ufeffprod"}},
		"zone with a bidi override":     {Zone: "eu-\u202e1a"},
		"version with a line separator": {Version: "1.0\u2028"},
		"version with a no-break space": {Version: "1.0\u00a0rc"},
	} {
		in.Service, in.Host, in.Port = "db_svc", "10.0.0.1", 1
		_, err := r.Register(ctx, in)
		wantInvalid(t, "Register("+name+")", err)
	}
	if svc, err := backend.Load(ctx, "db_svc"); err == nil && len(svc.Instances) > 0 {
		t.Fatalf("refused registrations wrote %d instance(s)", len(svc.Instances))
	}
	// What is printable passes: letters of any script, symbols, spaces.
	mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Zone: "東京-1a", Version: "1.0 rc", Tags: []string{"prod ✓", "équipe"}})
}

// Two processes that register one ID with different fields each write
// their own back at their renewals, as Register's doc says: every round of
// renewals rewrites the row, with a new revision. (Pinned so that the doc
// changes with it.)
func TestOneIDRegisteredByTwoProcessesIsRewrittenAtEachRenewal(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	b := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, a, discovery.Instance{ID: "w", Service: "s", Host: "10.0.0.1", Port: 1})
	mustRegister(t, b, discovery.Instance{ID: "w", Service: "s", Host: "10.0.0.2", Port: 1})
	svc, err := backend.Load(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	before := svc.Revision
	const rounds = 3
	for range rounds {
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntilHandled()
	}
	if svc, err = backend.Load(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	// At least one of the two rewrites the row in each round (both do
	// unless their renewals interleave).
	if got := svc.Revision - before; got < rounds {
		t.Errorf("%d rounds of renewals moved the revision by %d; Register's doc says each rewrites the row", rounds, got)
	}
}

// One host spelt two ways gave two default IDs: a process that came back
// with "2001:0db8:0:0::1" where it had "2001:db8::1" (another config file,
// another library's formatting) registered a second instance beside the
// first, which stayed listed, and was picked, until its lease ended. The
// default ID, and the Host stored, are the address's canonical form (RFC
// 5952, an IPv4-mapped address as the IPv4 one) and a host name's
// lower-case one.
func TestDefaultIDIsOnePerHostHoweverSpelt(t *testing.T) {
	tests := []struct {
		name     string
		spelling []string
		host, id string
	}{
		{"IPv6", []string{"2001:db8::1", "2001:0db8:0:0::1", "2001:DB8:0000:0000:0000:0000:0000:0001"}, "2001:db8::1", "[2001:db8::1]:8080"},
		{"IPv4-mapped", []string{"10.0.0.7", "::ffff:10.0.0.7", "::FFFF:a00:7"}, "10.0.0.7", "10.0.0.7:8080"},
		{"host name", []string{"web-1.example.com", "Web-1.Example.COM"}, "web-1.example.com", "web-1.example.com:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			for _, h := range tt.spelling {
				g, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: h, Port: 8080})
				if err != nil {
					t.Fatalf("Register(%q): %v", h, err)
				}
				if in := g.Instance(); in.ID != tt.id || in.Host != tt.host {
					t.Errorf("Register(%q): ID %q, Host %q; want %q, %q", h, in.ID, in.Host, tt.id, tt.host)
				}
			}
			if got := ids(r.Get(ctx, "db_svc")); got != tt.id {
				t.Errorf("Get after registering %q = %s; want the one instance %s", tt.spelling, got, tt.id)
			}
		})
	}
}

// A HealthPath given to an instance whose active check is not HTTP (a TCP
// check, checks turned off, a router instance checked by its function) was
// stored and never used: the caller believed /ready was what decided the
// instance's health. Register refuses it, and Update a path it sets so;
// an Update that changes only the kind of check keeps the path it had.
// The default path, which Register fills in for every HTTP instance, is no
// choice and is taken anywhere; so is any path on a Registry whose own
// checks are off (WithoutHealthChecks): the others check the instance.
func TestHealthPathNoCheckUsesIsRefused(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	tests := []struct {
		name    string
		in      discovery.Instance
		refused bool
	}{
		{"tcp check", discovery.Instance{Check: discovery.CheckTCP, HealthPath: "/ready"}, true},
		{"checks off", discovery.Instance{Check: discovery.CheckNone, HealthPath: "/ready"}, true},
		{"router, its check func", discovery.Instance{Method: discovery.MethodRouter, HealthPath: "/ready"}, true},
		{"router, tcp check", discovery.Instance{Method: discovery.MethodRouter, Check: discovery.CheckTCP, HealthPath: "/ready"}, true},
		{"http", discovery.Instance{HealthPath: "/ready"}, false},
		{"http check", discovery.Instance{Check: discovery.CheckHTTP, HealthPath: "/ready"}, false},
		{"router, http check", discovery.Instance{Method: discovery.MethodRouter, Check: discovery.CheckHTTP, HealthPath: "/ready"}, false},
		{"tcp check, the default path", discovery.Instance{Check: discovery.CheckTCP, HealthPath: discovery.DefaultHealthPath}, false},
		{"tcp check, no path", discovery.Instance{Check: discovery.CheckTCP}, false},
	}
	for i, tt := range tests {
		in := tt.in
		in.Service, in.Host, in.Port = "db_svc", "10.0.0.1", 1+i
		_, err := r.Register(ctx, in)
		var ve *discovery.ValidationError
		switch {
		case tt.refused && (!errors.As(err, &ve) || ve.Field != "health path"):
			t.Errorf("%s: Register with HealthPath %q = %v; want a ValidationError on the health path, which no check uses", tt.name, in.HealthPath, err)
		case !tt.refused && err != nil:
			t.Errorf("%s: Register with HealthPath %q = %v; want it accepted", tt.name, in.HealthPath, err)
		}
	}

	g := mustRegister(t, r, discovery.Instance{Service: "web", Host: "10.0.0.2", Port: 80, HealthPath: "/ready"})
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Check = discovery.CheckTCP }); err != nil {
		t.Fatalf("Update to a TCP check, the path left as it was = %v; want it accepted", err)
	}
	var ve *discovery.ValidationError
	if err := g.Update(ctx, func(in *discovery.Instance) { in.HealthPath = "/live" }); !errors.As(err, &ve) || ve.Field != "health path" {
		t.Errorf("Update setting HealthPath /live on a TCP-checked instance = %v; want a ValidationError on the health path", err)
	}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Check, in.HealthPath = discovery.CheckHTTP, "/live" }); err != nil {
		t.Errorf("Update back to an HTTP check with a new path = %v; want it accepted", err)
	}
}
