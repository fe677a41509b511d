package discoverytest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// fidelityStores are the stores a user's test sees the same results from:
// the in-memory Backend it uses and the SQL stores production uses
// (PostgreSQL with DISCOVERY_TEST_POSTGRES).
var fidelityStores = []struct {
	name string
	open func(t *testing.T) discovery.Store
}{
	{"memory", func(*testing.T) discovery.Store { return discoverytest.NewBackend() }},
	{"sqlite", func(t *testing.T) discovery.Store { return openSQL(t, testutil.SQLite(t), "discovery_") }},
	{"postgres", func(t *testing.T) discovery.Store {
		p := testutil.Prefix(t)
		return openSQL(t, testutil.Postgres(t, p), p)
	}},
}

func openSQL(t *testing.T, db *gorm.DB, prefix string) discovery.Store {
	t.Helper()
	s, err := sqlstore.New(db, prefix, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// sameAcrossStores runs scenario against a Registry on every store (each
// fresh, under a Clock of its own) and fails if what it returns on the
// in-memory Backend differs from what it returns on a SQL store: a user's
// test would see the Backend answer otherwise than production does.
func sameAcrossStores(t *testing.T, scenario func(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock) string) {
	t.Helper()
	got := map[string]string{}
	for _, st := range fidelityStores {
		t.Run(st.name, func(t *testing.T) {
			clock := discoverytest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			r, err := discovery.New(discovery.WithStore(st.open(t)), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
				discovery.WithCloseDrain(0), discovery.WithPropagationDelay(0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			got[st.name] = scenario(t, r, clock)
		})
	}
	for _, name := range []string{"sqlite", "postgres"} {
		if want, ok := got[name]; ok && got["memory"] != want {
			t.Errorf("memory:\n%s\n%s:\n%s", got["memory"], name, want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Empty lists come back from the Backend as they do from the SQL stores,
// nil: JSON-encoded (a user's own handler, say) they are null in
// production, and were [] in tests.
func TestBackendEmptyListsAsSQL(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		scenario func(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock) string
	}{
		{"Services of an empty store", func(t *testing.T, r *discovery.Registry, _ *discoverytest.Clock) string {
			svcs, err := r.Services(ctx)
			return fmt.Sprintf("%s %v", mustJSON(t, svcs), err)
		}},
		{"Snapshot of a service with no instance left", func(t *testing.T, r *discovery.Registry, _ *discoverytest.Clock) string {
			g, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Deregister(ctx); err != nil {
				t.Fatal(err)
			}
			svc, err := r.Snapshot(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("revision %d instances %s", svc.Revision, mustJSON(t, svc.Instances))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { sameAcrossStores(t, tt.scenario) })
	}
}

// Times come back from the Backend as from the SQL stores (and from Redis):
// as time.Unix gives them, in time.Local, with no monotonic reading. They
// came back as they were given (here in UTC, from the Clock), so that a
// test comparing them with == or reflect.DeepEqual, or printing them,
// passed on the Backend and failed on the database, and the reverse.
func TestBackendTimesAsSQL(t *testing.T) {
	ctx := context.Background()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	where := func(ts ...time.Time) string {
		var b strings.Builder
		for _, at := range ts {
			fmt.Fprintf(&b, "%s %s; ", at.Location(), at.Format(time.RFC3339Nano))
		}
		return b.String()
	}
	sameAcrossStores(t, func(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock) string {
		if _, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080}); err != nil {
			t.Fatal(err)
		}
		if err := r.PublishKey(ctx, "db_svc", discovery.PublicKey{ID: "k1", Algorithm: "EdDSA", Key: der}); err != nil {
			t.Fatal(err)
		}
		if err := r.RetireKey(ctx, "db_svc", "k1", clock.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"v":1}`)); err != nil {
			t.Fatal(err)
		}
		svc, err := r.Snapshot(ctx, "db_svc")
		if err != nil || len(svc.Instances) != 1 || len(svc.Keys) != 1 {
			t.Fatalf("Snapshot = %+v, %v; want one instance and one key", svc, err)
		}
		h, err := r.ConfigHistory(ctx, "db_svc")
		if err != nil || len(h) != 1 {
			t.Fatalf("ConfigHistory = %v, %v; want one version", h, err)
		}
		in, k := svc.Instances[0], svc.Keys[0]
		return where(in.RegisteredAt, in.ExpiresAt, k.CreatedAt, k.RetiresAt, h[0].CreatedAt)
	})
}
