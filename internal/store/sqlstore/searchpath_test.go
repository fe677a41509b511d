package sqlstore_test

import (
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
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
	p, shared, schema, tenantDB := tenantSchema(t)
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

// tenantSchema makes a schema of the test's own in its PostgreSQL database
// and returns the test's table prefix, a handle on public (the default
// search_path's), the schema, and a handle whose search_path puts the
// schema before public.
func tenantSchema(t *testing.T) (prefix string, shared *gorm.DB, schema string, tenantDB *gorm.DB) {
	t.Helper()
	_, u := postgresURL(t)
	prefix = testutil.Prefix(t)
	shared = testutil.Postgres(t, prefix)
	schema = prefix + "tenant"
	if err := shared.Exec(`CREATE SCHEMA ` + schema).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) })
	q := u.Query()
	q.Set("search_path", schema+",public")
	u.RawQuery = q.Encode()
	tenantDB = opened(t)(testutil.OpenPostgres(u.String()))
	return prefix, shared, schema, tenantDB
}

// Deployments in two schemas of one database, with one table prefix, reap
// apart. Advisory locks are the database's: keyed by the prefix alone, one
// deployment's reaper holding its lock made the other's skip its round,
// and its expired rows stayed.
func TestPostgresReapLockIsTheSchemas(t *testing.T) {
	p, shared, _, tenantDB := tenantSchema(t)
	other := open(t, shared, p)
	tenant := open(t, tenantDB, p)
	ctx := t.Context()
	if _, err := tenant.Register(ctx, storetest.Instance("svc", "dead", time.Now().Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	tx := shared.Begin() // the other deployment's reaper, at work
	defer tx.Rollback()
	expr, key := other.LockSQL("reap")
	if err := tx.Exec(`SELECT pg_advisory_xact_lock(`+expr+`)`, key).Error; err != nil {
		t.Fatal(err)
	}
	changes, err := tenant.Reap(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Service != "svc" {
		t.Fatalf("the tenant's Reap while the other deployment's reaper held its lock: %+v; want svc reaped", changes)
	}
}

// A database user who may not create the tables (PostgreSQL 15's default on
// public for all but its owner) makes Migrate fail with ErrUnsupported,
// saying what to do, not with ErrUnavailable: "database unavailable", for a
// refusal that no retry ends, kept New's callers retrying for good.
func TestPostgresMigrateWithoutTheRightToCreateIsUnsupported(t *testing.T) {
	_, u := postgresURL(t)
	p := testutil.Prefix(t)
	admin := testutil.Postgres(t, p)
	schema, role := p+"locked", p+"app"
	for _, stmt := range []string{
		`CREATE SCHEMA ` + schema, `CREATE ROLE ` + role + ` NOLOGIN`, `GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
	} {
		if err := admin.Exec(stmt).Error; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
		admin.Exec(`DROP ROLE IF EXISTS ` + role)
	})
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("role", role) // the session runs as role, which may use schema but not create in it
	u.RawQuery = q.Encode()
	db := opened(t)(testutil.OpenPostgres(u.String()))
	s, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) || !strings.Contains(err.Error(), "WithoutMigration") {
		t.Fatalf("Migrate by a user who may not create tables = %v; want ErrUnsupported naming WithoutMigration", err)
	}
}

// On SQLite, a read-only database whose schema is not current makes Migrate
// fail as on PostgreSQL a user who may not create tables does: with
// ErrUnsupported saying what to do, not "database unavailable".
func TestSQLiteMigrateOfANewSchemaOnAReadOnlyDatabaseIsUnsupported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	rw := openDeferredSQLite(t, path, 1000)
	if err := rw.Exec(`CREATE TABLE other (x INTEGER)`).Error; err != nil { // the file exists, without the schema
		t.Fatal(err)
	}
	s := openReadOnlySQLite(t, path)
	err := s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) || !strings.Contains(err.Error(), "WithoutMigration") {
		t.Fatalf("Migrate of a new schema on a read-only database = %v; want ErrUnsupported naming WithoutMigration", err)
	}
}

// A database user given the rows of the data tables but not the migrations
// table (tables made by a job as their owner, and granted one by one) is
// told so, with ErrUnsupported: New's schema check, with or without
// WithoutMigration, failed with "database unavailable" (permission denied),
// which callers retried for good, and Migrate's said the user may not
// create the tables, which it need not.
func TestPostgresSchemaCheckWithoutTheRightToReadMigrationsIsUnsupported(t *testing.T) {
	_, u := postgresURL(t)
	p := testutil.Prefix(t)
	admin := testutil.Postgres(t, p)
	schema, role := p+"granted", p+"app"
	if err := admin.Exec(`CREATE SCHEMA ` + schema).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
		admin.Exec(`DROP OWNED BY ` + role)
		admin.Exec(`DROP ROLE IF EXISTS ` + role)
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	open(t, opened(t)(testutil.OpenPostgres(u.String())), p) // the job, as the tables' owner
	stmts := []string{`CREATE ROLE ` + role + ` NOLOGIN`, `GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role}
	for _, table := range []string{"services", "instances", "config_history", "keys", "revoked_keys"} {
		stmts = append(stmts, `GRANT SELECT, INSERT, UPDATE, DELETE ON `+schema+`.`+p+table+` TO `+role)
	}
	for _, stmt := range stmts {
		if err := admin.Exec(stmt).Error; err != nil {
			t.Fatal(err)
		}
	}
	q.Set("role", role)
	u.RawQuery = q.Encode()
	s, err := sqlstore.New(opened(t)(testutil.OpenPostgres(u.String())), p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func() error{
		"CheckSchema": func() error { return s.CheckSchema(t.Context()) },
		"Migrate":     func() error { return s.Migrate(t.Context()) },
	} {
		err := check()
		if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) || !strings.Contains(err.Error(), p+"schema_migrations") ||
			strings.Contains(err.Error(), "may not create") {
			t.Errorf("%s by a user who may not read %sschema_migrations = %v; want ErrUnsupported naming the table", name, p, err)
		}
	}
}

// postgresURL returns the test database's DSN, parsed: the tests that make
// roles, schemas or databases of their own edit it.
func postgresURL(t *testing.T) (string, *url.URL) {
	t.Helper()
	dsn := testutil.PostgresDSN(t)
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("%s must be a postgres:// URL for this test: %q", testutil.EnvPostgres, dsn)
	}
	return dsn, u
}
