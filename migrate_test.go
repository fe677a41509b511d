package discovery_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	gsqlite "github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// WithoutMigration leaves the schema to a migration job, which runs
// discovery.Migrate with the same namespace. New then checks the schema:
// a database never migrated is a clear ErrUnsupported that says what to run,
// not an ErrUnavailable at the first Register ("database unavailable") that
// retrying cannot end.
func TestWithoutMigrationNeedsMigrate(t *testing.T) {
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			db := open(t, ns+"_")
			opts := []discovery.Option{discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}

			r, err := discovery.New(append(opts, discovery.WithoutMigration())...)
			if err == nil {
				r.Close()
				t.Fatal("New(WithoutMigration) on a database never migrated = nil; want ErrUnsupported")
			}
			if !errors.Is(err, discovery.ErrUnsupported) || errors.Is(err, discovery.ErrUnavailable) || !strings.Contains(err.Error(), "Migrate") {
				t.Fatalf("New(WithoutMigration) on a database never migrated = %v; want ErrUnsupported naming Migrate", err)
			}

			if err := discovery.Migrate(ctx, db, discovery.WithNamespace("Bad")); !errors.Is(err, discovery.ErrInvalid) {
				t.Fatalf("Migrate(namespace Bad) = %v; want ErrInvalid", err)
			}
			if err := discovery.Migrate(ctx, nil); !errors.Is(err, discovery.ErrInvalid) {
				t.Fatalf("Migrate(nil db) = %v; want ErrInvalid", err)
			}
			if err := discovery.Migrate(ctx, db, discovery.WithNamespace(ns)); err != nil {
				t.Fatalf("Migrate = %v", err)
			}
			r, err = discovery.New(append(opts, discovery.WithoutMigration())...)
			if err != nil {
				t.Fatalf("New(WithoutMigration) after Migrate = %v", err)
			}
			defer r.Close()
			if _, err := r.Register(ctx, discovery.Instance{Service: "mig", Host: "10.0.0.1", Port: 1}); err != nil {
				t.Fatalf("Register after Migrate = %v", err)
			}
			if got := ids(r.Get(ctx, "mig")); got != "10.0.0.1:1" {
				t.Fatalf("Get = %s", got)
			}
		})
	}
}

// New's migration is bounded by WithDatabaseTimeout (its read of the schema
// version) and WithMigrationTimeout (a migration with work to do), not by
// WithLoadTimeout: a short WithLoadTimeout, chosen for snappy lookups, made
// New fail on the migration (or on another process holding the migration
// lock).
func TestNewMigratesWithinTheDatabaseTimeout(t *testing.T) {
	r, err := discovery.New(discovery.WithDB(testutil.SQLite(t)), discovery.WithLoadTimeout(time.Nanosecond),
		discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatalf("New(WithLoadTimeout(1ns)) = %v; want the migration bounded by WithDatabaseTimeout instead", err)
	}
	r.Close()
}

// Namespace "x_revoked"'s keys table is namespace "x"'s revoked keys table.
// The deployment that migrated second failed to start with ErrUnavailable
// ("database unavailable during migrate: ... already exists"), which callers
// retry for good; it is ErrUnsupported, saying what clashed, and the first
// deployment goes on working.
func TestNamespacesWhoseTablesClashAreRefusedClearly(t *testing.T) {
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			db := open(t, ns+"_") // drops ns_revoked_* too
			for _, order := range [][2]string{{ns, ns + "_revoked"}, {ns + "2_revoked", ns + "2"}} {
				first, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(order[0]), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
				if err != nil {
					t.Fatalf("New(namespace %s) = %v", order[0], err)
				}
				defer first.Close()
				second, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(order[1]), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
				if err == nil {
					second.Close()
					t.Fatalf("New(namespace %s) after %s = nil; want their tables' clash", order[1], order[0])
				}
				if !errors.Is(err, discovery.ErrUnsupported) || errors.Is(err, discovery.ErrUnavailable) || !strings.Contains(err.Error(), "clash") {
					t.Fatalf("New(namespace %s) after %s = %v; want ErrUnsupported naming the clash, not ErrUnavailable", order[1], order[0], err)
				}
				if _, err := first.Register(ctx, discovery.Instance{Service: "clash", Host: "10.0.0.1", Port: 1}); err != nil {
					t.Fatalf("namespace %s: Register after the clash = %v", order[0], err)
				}
			}
		})
	}
}

// WithDB's doc: an in-memory SQLite database works when its connections
// share it (":memory:" gives each its own, empty: which connection a write
// gets is up to database/sql, so that half is not asserted).
func TestInMemorySQLiteMustBeShared(t *testing.T) {
	ctx := context.Background()
	open := func(dsn string) *discovery.Registry {
		db, err := gorm.Open(gsqlite.Open(dsn), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		t.Cleanup(func() { _ = sqlDB.Close() })
		sqlDB.SetMaxOpenConns(4)
		r, err := discovery.New(discovery.WithDB(db), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatalf("New(%s) = %v", dsn, err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	r := open("file::memory:?cache=shared")
	for i := range 8 { // writes from several connections
		if _, err := r.Register(ctx, discovery.Instance{Service: "mem", Host: "10.0.0.1", Port: 1 + i}); err != nil {
			t.Fatalf("shared in-memory SQLite: Register = %v", err)
		}
	}
	if svc, err := r.Get(ctx, "mem"); err != nil || len(svc.Instances) != 8 {
		t.Fatalf("shared in-memory SQLite: Get = %v, %v; want 8 instances", svc, err)
	}

}

// Migrate refuses a nil context with a ValidationError, as every other call
// that may do I/O does: it panicked with a nil dereference in the caller's
// goroutine.
func TestMigrateGivenANilContextIsInvalid(t *testing.T) {
	var nilCtx context.Context // nil, as a caller that forgot to set it passes
	db := testutil.SQLite(t)
	noPanic(t, "Migrate(nil)", func() { wantInvalid(t, "Migrate(nil)", discovery.Migrate(nilCtx, db)) })
}

// WithNamespace takes what its doc says, and its error says the same: it
// said "starting with a letter" while "_tenant" was taken, and the doc
// gave neither the 32-byte bound nor the first character's rule.
func TestNamespaceRulesAreTheDocumentedOnes(t *testing.T) {
	db := testutil.SQLite(t)
	for _, ns := range []string{"_tenant", "a1", "a_", strings.Repeat("a", 32)} {
		if err := discovery.Migrate(t.Context(), db, discovery.WithNamespace(ns)); err != nil {
			t.Errorf("Migrate(WithNamespace(%q)) = %v; want nil", ns, err)
		}
	}
	for _, ns := range []string{"", "1a", "A", "a-b", strings.Repeat("a", 33)} {
		err := discovery.Migrate(t.Context(), db, discovery.WithNamespace(ns))
		if !errors.Is(err, discovery.ErrInvalid) || strings.Contains(err.Error(), "starting with a letter") {
			t.Errorf("Migrate(WithNamespace(%q)) = %v; want ErrInvalid that does not say it must start with a letter", ns, err)
		}
	}
}
