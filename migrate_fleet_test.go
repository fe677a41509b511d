package discovery_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// A fleet's first deploy: ten processes, each with a pool of its own, call
// New at the same moment with one namespace, on an empty database and then
// (a rolling upgrade) over a schema of an older version. Every one comes up
// and the schema is migrated once: each version recorded once.
func TestFleetStartingTogetherMigratesOnce(t *testing.T) {
	for name, open := range map[string]func(t *testing.T, prefix string) func() *gorm.DB{
		"postgres": func(t *testing.T, prefix string) func() *gorm.DB {
			testutil.Postgres(t, prefix) // drops the tables when the test ends
			dsn := testutil.PostgresDSN(t)
			return func() *gorm.DB { return opened(t)(testutil.OpenPostgres(dsn)) }
		},
		"sqlite": func(t *testing.T, _ string) func() *gorm.DB {
			path := filepath.Join(t.TempDir(), "fleet.db")
			return func() *gorm.DB { return opened(t)(testutil.OpenSQLite(path)) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			process := open(t, ns+"_")
			const fleet = 10
			dbs := make([]*gorm.DB, fleet)
			for i := range dbs {
				dbs[i] = process()
			}
			start := func() {
				t.Helper()
				var wg sync.WaitGroup
				errs := make([]error, fleet)
				gate := make(chan struct{})
				for i := range fleet {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-gate
						r, err := discovery.New(discovery.WithDB(dbs[i]), discovery.WithNamespace(ns),
							discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
						if err == nil {
							r.Close()
						}
						errs[i] = err
					}()
				}
				close(gate)
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Errorf("process %d: New = %v", i, err)
					}
				}
				var versions []int
				dbs[0].Raw("SELECT version FROM " + ns + "_schema_migrations ORDER BY version").Scan(&versions)
				if fmt.Sprint(versions) != "[1 2 3 4]" {
					t.Fatalf("schema_migrations = %v; want [1 2 3 4], each once", versions)
				}
			}
			start() // first deploy
			for _, stmt := range []string{`DELETE FROM {ns}_schema_migrations WHERE version >= 2`, `DROP TABLE {ns}_keys`, `DROP TABLE {ns}_revoked_keys`,
				`ALTER TABLE {ns}_services DROP COLUMN empty_since`, `ALTER TABLE {ns}_services DROP COLUMN empty_revision`, `DROP TABLE {ns}_service_reap`} {
				if err := dbs[0].Exec(strings.ReplaceAll(stmt, "{ns}", ns)).Error; err != nil { // back to version 1
					t.Fatal(err)
				}
			}
			start() // rolling upgrade
		})
	}
}

// opened fails t on err, and closes db's pool when t ends.
func opened(t *testing.T) func(db *gorm.DB, err error) *gorm.DB {
	return func(db *gorm.DB, err error) *gorm.DB {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if sqlDB, err := db.DB(); err == nil {
				_ = sqlDB.Close()
			}
		})
		return db
	}
}
