package discovery_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// migrationUnderWay returns a database (of kind "sqlite" or "postgres") and
// a namespace whose migration lock another connection holds, as another
// process's migration under way would, and release, which ends that
// migration (rolled back: nothing migrated) and is safe to call twice (the
// test's end calls it too). On PostgreSQL the lock is the migration's
// advisory lock; on SQLite, the database's write lock, which serialises
// migrations there.
func migrationUnderWay(t *testing.T, kind string) (db *gorm.DB, ns string, release func()) {
	t.Helper()
	ns = strings.TrimSuffix(testutil.Prefix(t), "_")
	var tx *gorm.DB
	switch kind {
	case "sqlite":
		path := filepath.Join(t.TempDir(), "discovery.db")
		var err error
		if db, err = testutil.OpenSQLite(path); err != nil {
			t.Fatal(err)
		}
		holder, err := testutil.OpenSQLite(path) // another process's pool
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, d := range []*gorm.DB{db, holder} {
				if sqlDB, err := d.DB(); err == nil {
					_ = sqlDB.Close()
				}
			}
		})
		tx = holder.Begin() // BEGIN IMMEDIATE (_txlock=immediate)
		if err := tx.Exec(`CREATE TABLE other_process (a INTEGER)`).Error; err != nil {
			t.Fatal(err)
		}
	default:
		db = testutil.Postgres(t, ns+"_")
		tx = db.Begin()
		if err := tx.Exec(discovery.MigrationLockSQL(db, ns)).Error; err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback() }) }
	t.Cleanup(release)
	return db, ns, release
}

// A short WithDatabaseTimeout (300 ms, chosen for request-path writes)
// bounded New's whole migration, the wait for another process's migration
// included, so a first start behind one (or on a busy database, whose
// DDL outlasted it) failed with ErrUnavailable; tests had to migrate
// first, under the default timeout. The migration has a bound of its own,
// WithMigrationTimeout (1 min): New and Migrate wait for the other
// process's migration (1.5 s here) and succeed.
func TestMigrationOutlastsAShortDatabaseTimeout(t *testing.T) {
	const dbTO, hold = 300 * time.Millisecond, 1500 * time.Millisecond
	calls := map[string]func(db *gorm.DB, ns string) error{
		"New": func(db *gorm.DB, ns string) error {
			r, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithDatabaseTimeout(dbTO),
				discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = r.Register(context.Background(), inst("mig_svc", "10.0.0.1", 1))
			return err
		},
		"Migrate": func(db *gorm.DB, ns string) error {
			return discovery.Migrate(context.Background(), db, discovery.WithNamespace(ns), discovery.WithDatabaseTimeout(dbTO))
		},
	}
	for _, kind := range []string{"sqlite", "postgres"} {
		for name, call := range calls {
			t.Run(kind+"/"+name, func(t *testing.T) {
				db, ns, release := migrationUnderWay(t, kind)
				start := time.Now()
				timer := time.AfterFunc(hold, release)
				defer timer.Stop()
				err := call(db, ns)
				took := time.Since(start)
				if err != nil {
					t.Fatalf("%s with WithDatabaseTimeout(%v) behind another process's migration of %v = %v after %v; "+
						"want it to wait for that migration, within WithMigrationTimeout", name, dbTO, hold, err, took)
				}
				if took < hold-100*time.Millisecond {
					t.Fatalf("%s returned after %v, before the other process's migration ended (%v): it did not wait for its lock", name, took, hold)
				}
			})
		}
	}
}

// WithMigrationTimeout bounds the wait for another process's migration:
// ended, it is ErrUnavailable, saying (on PostgreSQL) that another
// process holds the migration lock, and changes nothing: once that
// migration ends, a retry succeeds.
func TestShortMigrationTimeoutEndsTheWaitForAnotherMigration(t *testing.T) {
	const migTO = 300 * time.Millisecond
	calls := map[string]func(db *gorm.DB, ns string, migTO time.Duration) error{
		"New": func(db *gorm.DB, ns string, migTO time.Duration) error {
			r, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithMigrationTimeout(migTO),
				discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err == nil {
				r.Close()
			}
			return err
		},
		"Migrate": func(db *gorm.DB, ns string, migTO time.Duration) error {
			return discovery.Migrate(context.Background(), db, discovery.WithNamespace(ns), discovery.WithMigrationTimeout(migTO))
		},
	}
	for _, kind := range []string{"sqlite", "postgres"} {
		for name, call := range calls {
			t.Run(kind+"/"+name, func(t *testing.T) {
				db, ns, release := migrationUnderWay(t, kind)
				if kind == "sqlite" {
					// SQLite's wait for its write lock ignores contexts
					// (busy_timeout alone bounds it): the other process ends.
					timer := time.AfterFunc(time.Second, release)
					defer timer.Stop()
				}
				start := time.Now()
				err := call(db, ns, migTO)
				took := time.Since(start)
				if !errors.Is(err, discovery.ErrUnavailable) {
					t.Fatalf("%s with WithMigrationTimeout(%v) behind another process's migration = %v after %v; want ErrUnavailable", name, migTO, err, took)
				}
				if kind == "postgres" {
					if !strings.Contains(err.Error(), "another process holds the migration lock") {
						t.Fatalf("%s = %q; want it to say another process holds the migration lock", name, err)
					}
					if took > 10*migTO {
						t.Fatalf("%s took %v; want it ended within about WithMigrationTimeout (%v)", name, took, migTO)
					}
				}
				release()
				// At the default: the statements alone took longer than
				// 300 ms under -race.
				if err := call(db, ns, discovery.DefaultMigrationTimeout); err != nil {
					t.Fatalf("%s once the other migration ended = %v", name, err)
				}
			})
		}
	}
}

// A database that does not answer (black-holed, as by a partition) fails
// New and Migrate within about WithDatabaseTimeout, not the migration's
// minute: the read of the schema version, which says whether there is a
// migration to run, is bounded as any other call.
func TestBlackholedDatabaseFailsNewWithinTheDatabaseTimeout(t *testing.T) {
	const dbTO, bound = 300 * time.Millisecond, 3 * time.Second
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db, proxy := testutil.PostgresVia(t, ns+"_")
	// A connection open before the partition, which it leaves hanging: a
	// new one would end on the driver's connect_timeout (2 s) instead.
	if err := db.Exec(`SELECT 1`).Error; err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	defer proxy.Blackhole(false)
	calls := []struct {
		name string
		call func() error
	}{
		{"New", func() error {
			r, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithDatabaseTimeout(dbTO),
				discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err == nil {
				r.Close()
			}
			return err
		}},
		{"Migrate", func() error {
			return discovery.Migrate(context.Background(), db, discovery.WithNamespace(ns), discovery.WithDatabaseTimeout(dbTO))
		}},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call()
		if took := time.Since(start); !errors.Is(err, discovery.ErrUnavailable) || took > bound {
			t.Fatalf("%s on a black-holed database = %v after %v; want ErrUnavailable within about WithDatabaseTimeout (%v), well within %v, "+
				"not WithMigrationTimeout (%v)", c.name, err, took, dbTO, bound, discovery.DefaultMigrationTimeout)
		}
	}
}

// WithMigrationTimeout is validated as the other timeouts are, by New and
// by Migrate: not positive, or past MaxDuration, is ErrInvalid naming it,
// before any statement.
func TestMigrationTimeoutIsValidated(t *testing.T) {
	db := testutil.SQLite(t)
	for _, d := range []time.Duration{0, -time.Second, discovery.MaxDuration + 1} {
		r, err := discovery.New(discovery.WithDB(db), discovery.WithMigrationTimeout(d))
		if r != nil {
			r.Close()
		}
		if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithMigrationTimeout") {
			t.Errorf("New(WithMigrationTimeout(%v)) = %v; want ErrInvalid naming WithMigrationTimeout", d, err)
		}
		err = discovery.Migrate(context.Background(), db, discovery.WithMigrationTimeout(d))
		if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithMigrationTimeout") {
			t.Errorf("Migrate(WithMigrationTimeout(%v)) = %v; want ErrInvalid naming WithMigrationTimeout", d, err)
		}
	}
	var n int
	if err := db.Raw(`SELECT COUNT(*) FROM sqlite_master`).Scan(&n).Error; err != nil || n != 0 {
		t.Fatalf("tables after the refusals: %d, %v; want none", n, err)
	}
}
