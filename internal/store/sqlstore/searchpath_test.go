package sqlstore_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/storetest"
	"github.com/rssbot/discovery/internal/testutil"
)

// A deployment whose search_path puts a schema of its own before public
// ("tenant, public", common for schema-per-tenant databases) migrates into
// its schema, where its CREATE TABLEs go, whichever deployment starts
// first. Migrate's check for a current schema looked along the whole
// search_path: once public held another deployment's tables of the same
// namespace, it found them, migrated nothing, and the tenant read and wrote
// the other deployment's registrations; started first, it had tables of its
// own.
func TestPostgresMigrateIntoTheSchemaOfTheSearchPath(t *testing.T) {
	dsn := testutil.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL for this test: %q", testutil.EnvPostgres, dsn)
	}
	p := testutil.Prefix(t)
	shared := testutil.Postgres(t, p) // public (the default search_path's)
	schema := p + "tenant"
	if err := shared.Exec(`CREATE SCHEMA ` + schema).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) })
	q := u.Query()
	q.Set("search_path", schema+",public")
	u.RawQuery = q.Encode()
	tenantDB, err := testutil.OpenPostgres(u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := tenantDB.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})

	other := open(t, shared, p) // the other deployment, started first
	tenant := open(t, tenantDB, p)
	if _, err := other.Register(t.Context(), storetest.Instance("svc", "others", time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if svc, err := tenant.Load(t.Context(), "svc"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("the tenant (search_path %s,public) loaded %+v, %v: the other deployment's service in public; want ErrNotFound", schema, svc, err)
	}
	var n int
	shared.Raw(`SELECT COUNT(*) FROM pg_tables WHERE schemaname = ? AND tablename = ?`, schema, p+"services").Scan(&n)
	if n != 1 {
		t.Fatalf("no %s.%sservices table after the tenant's Migrate", schema, p)
	}
}
