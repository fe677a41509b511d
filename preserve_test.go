package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// writeInstances writes instances straight to the store, as processes that
// registered and then stopped renewing would have left them.
func writeInstances(t *testing.T, s discovery.Store, service string, n int, expires func(i int) time.Time) {
	t.Helper()
	for i := 0; i < n; i++ {
		in := discovery.Instance{ID: fmt.Sprintf("i%02d", i), Service: service, Host: "10.0.0.1", Port: 1000 + i, Weight: 100,
			RegisteredAt: t0, ExpiresAt: expires(i)}
		if _, err := s.Register(context.Background(), &in); err != nil {
			t.Fatal(err)
		}
	}
}

func statuses(svc *discovery.Service, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	n := map[discovery.Status]int{}
	for _, in := range svc.Instances {
		n[in.Status]++
	}
	return fmt.Sprintf("%d instances, %d suspect", len(svc.Instances), n[discovery.StatusSuspect])
}

// More than 15% of a service's instances stopping to renew at the same
// moment (a partition, not a deploy) are kept visible as suspect for the
// grace period, logged once and counted; a single expiry is not affected.
func TestSelfPreservation(t *testing.T) {
	ttl := discovery.DefaultLeaseTTL
	grace := 2 * ttl
	tests := []struct {
		name        string
		expires     func(i int) time.Time // of 10 instances
		opts        []discovery.Option
		atExpiry    string
		afterGrace  string
		preserved   bool
		firstExpiry time.Duration
	}{
		{"3 of 10 together", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl + time.Duration(i)*time.Second) // within one renewal window
			}
			return t0.Add(time.Hour)
		}, nil, "10 instances, 3 suspect", "7 instances, 0 suspect", true, ttl + 2*time.Second},
		{"1 of 10 alone", func(i int) time.Time {
			if i == 0 {
				return t0.Add(ttl)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "9 instances, 0 suspect", false, ttl},
		{"1 of 10 then 1 more a minute later", func(i int) time.Time {
			switch i {
			case 0:
				return t0.Add(ttl)
			case 1:
				return t0.Add(ttl + time.Minute)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "8 instances, 0 suspect", false, ttl},
		{"3 of 10 spread over a minute", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl + time.Duration(i)*20*time.Second)
			}
			return t0.Add(time.Hour)
		}, nil, "9 instances, 0 suspect", "7 instances, 0 suspect", false, ttl},
		{"3 of 10 together, turned off", func(i int) time.Time {
			if i < 3 {
				return t0.Add(ttl)
			}
			return t0.Add(time.Hour)
		}, []discovery.Option{discovery.WithSelfPreservation(0, 0)}, "7 instances, 0 suspect", "7 instances, 0 suspect", false, ttl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := discoverytest.NewClock(t0)
			core, logs := observer.New(zap.InfoLevel)
			backend := discoverytest.NewBackend()
			r := discoverytest.NewRegistry(t, backend, append([]discovery.Option{discovery.WithClock(clock),
				discovery.WithLogger(zap.New(core)), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks()}, tt.opts...)...)
			writeInstances(t, backend, "db_svc", 10, tt.expires)
			if got := statuses(r.Get(ctx, "db_svc")); got != "10 instances, 0 suspect" {
				t.Fatalf("before: %s", got)
			}
			clock.Set(t0.Add(tt.firstExpiry))
			if got := statuses(r.Get(ctx, "db_svc")); got != tt.atExpiry {
				t.Fatalf("just after the lapse: %s; want %s", got, tt.atExpiry)
			}
			st := r.Stats()
			if tt.preserved != (st.SelfPreservations == 1 && st.Suspects == 3) {
				t.Fatalf("stats %d episodes, %d suspects; preserved = %v", st.SelfPreservations, st.Suspects, tt.preserved)
			}
			clock.Set(t0.Add(2*time.Minute + grace))
			if got := statuses(r.Get(ctx, "db_svc")); got != tt.afterGrace {
				t.Fatalf("after the grace period: %s; want %s", got, tt.afterGrace)
			}
			warned := logs.FilterMessage("discovery: self-preservation: instances stopped renewing together; keeping them as suspect").Len()
			if tt.preserved && warned != 1 || !tt.preserved && warned != 0 {
				t.Fatalf("logged self-preservation %d times; preserved = %v", warned, tt.preserved)
			}
			if tt.preserved && logs.FilterMessage("discovery: self-preservation ended").Len() != 1 {
				t.Fatal("the end of self-preservation was not logged")
			}
		})
	}
}

// A database outage longer than the lease expires no instance: lookups
// answer from memory during it, and when it ends the lapsed leases are
// kept as suspects until their registrations renew (register again).
func TestNoInstanceExpiresBecauseOfADatabaseOutage(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	owner := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	for i := range 4 {
		mustRegister(t, owner, inst("db_svc", "10.0.0."+fmt.Sprint(i+1), 80))
	}
	reader := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithReaper(0, 0), discovery.WithoutHealthChecks())
	if got := ids(reader.Get(ctx, "db_svc")); strings.Count(got, ",") != 3 {
		t.Fatalf("before: %s", got)
	}
	backend.SetFailure(errors.New("connection refused"))
	for range 60 { // 30 s: twice the lease
		clock.BlockUntil(4) // the owner's keepalives
		clock.Advance(500 * time.Millisecond)
		if svc, err := reader.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 4 {
			t.Fatalf("at +%v during the outage: %s", clock.Now().Sub(t0), ids(svc, err))
		}
	}
	backend.SetFailure(nil)
	_ = reader.Invalidate(ctx, "db_svc")
	// The database is back; no renewal has landed yet: every lease has lapsed.
	if got := statuses(reader.Get(ctx, "db_svc")); got != "4 instances, 4 suspect" {
		t.Fatalf("right after the outage: %s; want all kept as suspect", got)
	}
	for range 20 { // the registrations retry and register again
		clock.BlockUntil(4)
		clock.Advance(500 * time.Millisecond)
		if svc, err := reader.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 4 {
			t.Fatalf("at +%v after the outage: %s", clock.Now().Sub(t0), ids(svc, err))
		}
	}
	waitFor(t, 2*time.Second, "every instance renewed", func() bool {
		return statuses(reader.Get(ctx, "db_svc")) == "4 instances, 0 suspect"
	})
}
