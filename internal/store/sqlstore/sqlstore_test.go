package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"go.uber.org/goleak"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/storetest"
	"github.com/rssbot/discovery/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func open(t testing.TB, db *gorm.DB, prefix string) *sqlstore.Store {
	t.Helper()
	return openBounded(t, db, prefix, 5*time.Second)
}

// conformanceBound bounds each call of the conformance suite's stores: its
// 50 concurrent registrations queue for SQLite's one writer, and the last
// of them outlasted 5 s on a loaded machine under -race. No conformance
// test is about the bound; timeout_test.go is.
const conformanceBound = time.Minute

// openBounded is open with each call bounded by timeout.
func openBounded(t testing.TB, db *gorm.DB, prefix string, timeout time.Duration) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.New(db, prefix, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) core.Store {
		return openBounded(t, testutil.SQLite(t), "discovery_", conformanceBound)
	})
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) core.Store {
		p := testutil.Prefix(t)
		return openBounded(t, testutil.Postgres(t, p), p, conformanceBound)
	})
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	p := testutil.Prefix(t)
	for name, db := range bothDatabases(p) {
		t.Run(name, func(t *testing.T) {
			db := db(t)
			errs := make(chan error, 4)
			for range 4 {
				go func() {
					s, err := sqlstore.New(db, p, 0)
					if err == nil {
						err = s.Migrate(context.Background())
					}
					errs <- err
				}()
			}
			for range 4 {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent Migrate: %v", err)
				}
			}
			var versions []int
			db.Raw("SELECT version FROM " + p + "schema_migrations").Scan(&versions)
			if len(versions) != sqlstore.SchemaVersion || versions[len(versions)-1] != sqlstore.SchemaVersion {
				t.Fatalf("schema_migrations = %v; want 1..%d, each once", versions, sqlstore.SchemaVersion)
			}
		})
	}
}

func TestBadPrefix(t *testing.T) {
	db := testutil.SQLite(t)
	for _, p := range []string{"Bad", "a-b", "x;drop table y;", "1abc"} {
		if _, err := sqlstore.New(db, p, 0); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("New(prefix %q) = %v; want ErrInvalid", p, err)
		}
	}
}

// A closed pool stands for a database that went away: errors match
// ErrUnavailable and wrap the driver's error.
func TestUnavailableMapping(t *testing.T) {
	db := testutil.SQLite(t)
	s := open(t, db, "discovery_")
	sqlDB, _ := db.DB()
	_ = sqlDB.Close()
	_, err := s.Load(t.Context(), "x")
	var be *core.BackendError
	if !errors.Is(err, core.ErrUnavailable) || !errors.As(err, &be) || be.Backend != "database" || be.Unwrap() == nil {
		t.Fatalf("Load on a closed database = %v; want BackendError matching ErrUnavailable", err)
	}
	_, err = s.Register(t.Context(), storetest.Instance("x", "a", time.Now()))
	if !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Register on a closed database = %v; want ErrUnavailable", err)
	}
}

// A pool limited to fewer connections than Warm opens (one, as SQLite is
// often run) is warmed up to its limit: Warm waited for a connection that
// only it could give back, and so held New for its whole load timeout.
func TestWarmStopsAtThePoolLimit(t *testing.T) {
	db := testutil.SQLite(t)
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1)
	s := open(t, db, "discovery_")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s.Warm(ctx, 2)
	if ctx.Err() != nil || sqlDB.Stats().WaitCount != 0 {
		t.Fatalf("Warm(2) on a pool of 1 waited for a connection (%d waits, context %v)", sqlDB.Stats().WaitCount, ctx.Err())
	}
	if sqlDB.Stats().OpenConnections != 1 {
		t.Fatalf("Warm left %d connections open; want the pool's 1", sqlDB.Stats().OpenConnections)
	}
}

// A schema newer than this library's (migrated by a newer release, before a
// rollback) is refused as unsupported: it matched ErrUnavailable, so that
// callers that retry while the database is down retried it forever.
func TestNewerSchemaIsUnsupportedNotUnavailable(t *testing.T) {
	db := testutil.SQLite(t)
	s := open(t, db, "discovery_")
	if err := db.Exec(`INSERT INTO discovery_schema_migrations (version, applied_at) VALUES (?, 0)`, sqlstore.SchemaVersion+1).Error; err != nil {
		t.Fatal(err)
	}
	err := s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Migrate on a newer schema = %v; want ErrUnsupported, not ErrUnavailable", err)
	}
}

// On a SQLite database opened without _txlock=immediate (the driver's
// default: deferred transactions), a reaper whose snapshot another writer
// overtook between its read of the expired rows and its first write failed
// with "database is locked" (SQLITE_BUSY_SNAPSHOT, which no busy_timeout
// waits out), and the Registry took the database for lost. The hook commits
// such a write (from a connection that does not wait for locks) just before
// the reaper's first write.
func TestSQLiteReapOvertakenByAWriterInDeferredMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	db, other := openDeferredSQLite(t, path, 10000), openDeferredSQLite(t, path, 0)
	s := open(t, db, "discovery_")
	t0 := time.Now()
	for _, name := range []string{"a", "b"} {
		if _, err := s.Register(t.Context(), storetest.Instance(name, "1", t0)); err != nil {
			t.Fatal(err)
		}
	}
	overtaken := false
	err := db.Callback().Row().Before("gorm:row").Register("test:overtake", func(tx *gorm.DB) {
		if !overtaken && strings.HasPrefix(strings.TrimSpace(tx.Statement.SQL.String()), "INSERT INTO discovery_services") {
			overtaken = true
			_ = other.Exec(`UPDATE discovery_services SET updated_at = updated_at + 1 WHERE name = 'b'`).Error
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	changes, err := s.Reap(t.Context(), t0.Add(time.Minute))
	if !overtaken {
		t.Fatal("the hook never ran")
	}
	if err != nil || fmt.Sprint(changes) != "[{a 2 false} {b 2 false}]" {
		t.Fatalf("Reap overtaken by another writer = %v, %v; want [{a 2 false} {b 2 false}]", changes, err)
	}
}

// A reaper that finds nothing to reap writes nothing: on a read-only SQLite
// database it answers, as it did before it took the write lock first.
func TestSQLiteReapWithNothingToReapOnAReadOnlyDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	rw, err := testutil.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	open(t, rw, "discovery_")
	ro, err := gorm.Open(sqlite.Open("file:"+path+"?mode=ro"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, db := range []*gorm.DB{rw, ro} {
			if sqlDB, err := db.DB(); err == nil {
				_ = sqlDB.Close()
			}
		}
	})
	s, err := sqlstore.New(ro, "discovery_", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if changes, err := s.Reap(t.Context(), time.Now()); err != nil || len(changes) != 0 {
		t.Fatalf("Reap with nothing to reap on a read-only database = %v, %v; want nothing, nil", changes, err)
	}
}

// A caller that gives up during a write gets its context's error, not
// ErrUnavailable: database/sql rolls the transaction back when the context
// ends, and the commit that followed failed with sql.ErrTxDone, which was
// taken for the database failing (and the Registry then logged the
// database as lost and held expired instances as in an outage).
func TestCallerCanceledDuringAWriteIsNotUnavailable(t *testing.T) {
	p := testutil.Prefix(t)
	for name, db := range bothDatabases(p) {
		t.Run(name, func(t *testing.T) {
			db := db(t)
			s := open(t, db, p)
			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err = db.Callback().Raw().After("gorm:raw").Register("test:cancel", func(tx *gorm.DB) {
				if ctx.Err() == nil && strings.Contains(tx.Statement.SQL.String(), "INSERT INTO "+p+"instances") {
					cancel()
					for sqlDB.Stats().InUse > 0 { // until database/sql has rolled the transaction back
						time.Sleep(time.Millisecond)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Register(ctx, storetest.Instance("db_svc", "a", time.Now().Add(time.Minute)))
			if !errors.Is(err, context.Canceled) || errors.Is(err, core.ErrUnavailable) {
				t.Fatalf("Register canceled by its caller = %v; want context.Canceled, not ErrUnavailable", err)
			}
			if _, err := s.Load(t.Context(), "db_svc"); !errors.Is(err, core.ErrNotFound) {
				t.Fatalf("Load after the canceled Register = %v; want ErrNotFound (rolled back)", err)
			}
		})
	}
}

// The same for Migrate, upgrading a schema that processes of the older
// release keep writing to: one write between its read of the version and
// its first CREATE made New fail with "database is locked".
func TestSQLiteMigrateOvertakenByAWriterInDeferredMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	db, other := openDeferredSQLite(t, path, 10000), openDeferredSQLite(t, path, 0)
	s := open(t, db, "discovery_")
	for _, stmt := range append(undoVersion4("discovery_"), `DELETE FROM discovery_schema_migrations WHERE version >= 2`, `DROP TABLE discovery_keys`, `DROP TABLE discovery_revoked_keys`) {
		if err := db.Exec(stmt).Error; err != nil { // back to version 1
			t.Fatal(err)
		}
	}
	overtaken := false
	err := db.Callback().Raw().Before("gorm:raw").Register("test:overtake", func(tx *gorm.DB) {
		if !overtaken && strings.Contains(tx.Statement.SQL.String(), "CREATE TABLE discovery_keys") {
			overtaken = true
			_ = other.Exec(`INSERT INTO discovery_services (name, revision, updated_at) VALUES ('b', 1, 1)`).Error
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil || !overtaken {
		t.Fatalf("Migrate overtaken by another writer = %v (hook ran: %v)", err, overtaken)
	}
	var versions []int
	db.Raw("SELECT version FROM discovery_schema_migrations ORDER BY version").Scan(&versions)
	if fmt.Sprint(versions) != allVersions() {
		t.Fatalf("schema_migrations = %v; want %s", versions, allVersions())
	}
}

// openDeferredSQLite opens path as glebarez/sqlite does by default: deferred
// transactions (no _txlock=immediate), with a busy timeout in milliseconds.
func openDeferredSQLite(t *testing.T, path string, busy int) *gorm.DB {
	t.Helper()
	return opened(t)(gorm.Open(sqlite.Open(fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)", path, busy)),
		&gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true}))
}

// openReadOnlySQLite returns a store of prefix discovery_ on the SQLite
// database at path, opened read-only, closed when the test ends.
func openReadOnlySQLite(t *testing.T, path string) *sqlstore.Store {
	t.Helper()
	ro := opened(t)(gorm.Open(sqlite.Open("file:"+path+"?mode=ro"), &gorm.Config{Logger: logger.Discard}))
	s, err := sqlstore.New(ro, "discovery_", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Migrate on a current schema writes nothing: on a read-only SQLite
// database it answers, as it did before it took the write lock first.
func TestSQLiteMigrateOfACurrentSchemaOnAReadOnlyDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	open(t, openDeferredSQLite(t, path, 1000), "discovery_")
	s := openReadOnlySQLite(t, path)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate of a current schema on a read-only database = %v", err)
	}
}

// bothDatabases opens SQLite, or PostgreSQL with tables of prefix p.
func bothDatabases(p string) map[string]func(*testing.T) *gorm.DB {
	return map[string]func(*testing.T) *gorm.DB{
		"sqlite":   func(t *testing.T) *gorm.DB { return testutil.SQLite(t) },
		"postgres": func(t *testing.T) *gorm.DB { return testutil.Postgres(t, p) },
	}
}

// Migrate on a current PostgreSQL schema writes nothing, as on SQLite: a
// database user who may read and write the rows but not create tables (on
// PostgreSQL 15 a user without CREATE on the schema; here a read-only
// session) got "permission denied" from the CREATE TABLE IF NOT EXISTS it
// ran every time, matching ErrUnavailable, and New failed on a schema that
// needed nothing.
func TestPostgresMigrateOfACurrentSchemaWritesNothing(t *testing.T) {
	p := testutil.Prefix(t)
	open(t, testutil.Postgres(t, p), p)
	dsn := testutil.PostgresDSN(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	ro, err := testutil.OpenPostgres(dsn + sep + "default_transaction_read_only=on")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := ro.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	if err := ro.Exec(`CREATE TABLE ` + p + `probe (x INTEGER)`).Error; err == nil {
		t.Fatal("the read-only session created a table: the test does not show the case")
	}
	s, err := sqlstore.New(ro, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate of a current schema by a session that may not create tables = %v; want nil", err)
	}
	if err := s.CheckSchema(t.Context()); err != nil {
		t.Fatalf("CheckSchema = %v", err)
	}
}

// repeatableReadStore returns a store on a fresh schema whose connections
// default to REPEATABLE READ (as a database or role can be set), the
// connection pool beside it, and the table prefix.
func repeatableReadStore(t *testing.T) (*sqlstore.Store, *gorm.DB, string) {
	t.Helper()
	p := testutil.Prefix(t)
	open(t, testutil.Postgres(t, p), p)
	db, err := testutil.OpenPostgres(testutil.PostgresDSN(t) + "&default_transaction_isolation=repeatable%20read")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	s, err := sqlstore.New(db, p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s, db, p
}

// commitOnceWaitedFor commits other once a statement on table waits for a
// row lock (the one other holds).
func commitOnceWaitedFor(t *testing.T, db, other *gorm.DB, table string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		var n int
		db.Raw(`SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?`,
			"%"+strings.ReplaceAll(table, "_", `\_`)+"%").Scan(&n)
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			other.Rollback()
			t.Fatalf("no statement on %s waited for the row lock within 5 s", table)
		}
		time.Sleep(time.Millisecond)
	}
	if err := other.Commit().Error; err != nil {
		t.Fatal(err)
	}
}

// The store's transactions are written for READ COMMITTED (a write waits
// for the row lock, then works on the row as committed). On a PostgreSQL
// whose default isolation is REPEATABLE READ or SERIALIZABLE (set for the
// database, a role or in the DSN), a Register that waited for another
// writer of its service failed with "could not serialize access" (SQLSTATE
// 40001), matching ErrUnavailable: concurrent registrations of one service
// took the database for down. Here another transaction holds the service's
// row while Register waits for it.
func TestPostgresWriteAfterAConcurrentWriteUnderRepeatableRead(t *testing.T) {
	s, db, p := repeatableReadStore(t)
	if _, err := s.Register(t.Context(), storetest.Instance("svc", "a", time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	other := db.Begin()
	if err := other.Exec(`UPDATE `+p+`services SET revision = revision + 1 WHERE name = ?`, "svc").Error; err != nil {
		other.Rollback()
		t.Fatal(err)
	}
	type result struct {
		rev int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		rev, err := s.Register(context.Background(), storetest.Instance("svc", "b", time.Now().Add(time.Hour)))
		done <- result{rev, err}
	}()
	commitOnceWaitedFor(t, db, other, p+"services") // once Register waits for the row lock
	res := <-done
	if res.err != nil || res.rev != 3 {
		t.Fatalf("Register after a concurrent write of its service = %d, %v; want revision 3, no error", res.rev, res.err)
	}
}

// Renew is one statement, but on a PostgreSQL defaulting to REPEATABLE READ
// a statement that waited for another writer of its row failed as a
// transaction would (SQLSTATE 40001, ErrUnavailable): a renewal that met
// another process's write of the instance took the database for down.
// RenewInstance is the same statement with more conditions.
func TestPostgresRenewAfterAConcurrentWriteUnderRepeatableRead(t *testing.T) {
	s, db, p := repeatableReadStore(t)
	now := time.Now()
	in := storetest.Instance("svc", "a", now.Add(time.Hour))
	if _, err := s.Register(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	renewals := map[string]func(until time.Time) error{
		"Renew": func(until time.Time) error { return s.Renew(context.Background(), "svc", "a", now, until) },
		"RenewInstance": func(until time.Time) error {
			c := in.Clone()
			c.ExpiresAt = until
			return s.RenewInstance(context.Background(), &c, now)
		},
	}
	for name, renew := range renewals {
		other := db.Begin()
		if err := other.Exec(`UPDATE `+p+`instances SET weight = weight WHERE service = ? AND id = ?`, "svc", "a").Error; err != nil {
			other.Rollback()
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- renew(now.Add(2 * time.Hour)) }()
		commitOnceWaitedFor(t, db, other, p+"instances") // once the renewal waits for the row lock
		if err := <-done; err != nil {
			t.Fatalf("%s after a concurrent write of its row = %v; want nil", name, err)
		}
	}
}

// A schema of the release before revocations were kept (version 2), with a
// published key: Migrate adds the revocation table and keeps the key, which
// can then be revoked for good.
func TestMigrateFromVersion2KeepsKeysAndRevokes(t *testing.T) {
	p := testutil.Prefix(t)
	for name, db := range bothDatabases(p) {
		t.Run(name, func(t *testing.T) {
			db := db(t)
			s := open(t, db, p)
			if _, err := s.PutKey(t.Context(), "svc", core.PublicKey{ID: "k", Algorithm: "EdDSA", Key: []byte("K"), CreatedAt: time.Unix(1, 0)}); err != nil {
				t.Fatal(err)
			}
			for _, stmt := range append(undoVersion4(p), `DELETE FROM `+p+`schema_migrations WHERE version >= 3`, `DROP TABLE `+p+`revoked_keys`) {
				if err := db.Exec(stmt).Error; err != nil { // back to version 2
					t.Fatal(err)
				}
			}
			s = open(t, db, p)
			if svc, err := s.Load(t.Context(), "svc"); err != nil || svc.Key("k") == nil {
				t.Fatalf("after the upgrade: %+v, %v; want key k kept", svc, err)
			}
			if _, err := s.RevokeKey(t.Context(), "svc", "k", time.Unix(2, 0)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutKey(t.Context(), "svc", core.PublicKey{ID: "k2", Algorithm: "EdDSA", Key: []byte("K"), CreatedAt: time.Unix(3, 0)}); !errors.Is(err, core.ErrRevoked) {
				t.Fatalf("PutKey of the revoked key after the upgrade = %v; want ErrRevoked", err)
			}
		})
	}
}

// failedStatements is a GORM logger that keeps the statements that failed,
// as GORM's default logger prints them: in red, as ERROR.
type failedStatements struct {
	logger.Interface
	mu     sync.Mutex
	failed []string
}

func (l *failedStatements) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if err != nil {
		sql, _ := fc()
		l.mu.Lock()
		l.failed = append(l.failed, sql+": "+err.Error())
		l.mu.Unlock()
	}
}

// Migrate of a database that has no schema yet, the first thing a new user
// runs (README's example, New with WithDB), runs no statement that fails:
// it read the schema version from a table that did not exist yet, and
// GORM's default logger printed that failure as an ERROR on every first
// start, where nothing was wrong.
func TestMigrateOfAFreshDatabaseRunsNoFailingStatement(t *testing.T) {
	p := testutil.Prefix(t)
	for name, db := range bothDatabases(p) {
		t.Run(name, func(t *testing.T) {
			rec := &failedStatements{Interface: logger.Discard}
			s, err := sqlstore.New(db(t).Session(&gorm.Session{Logger: rec}), p, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := s.CheckSchema(t.Context()); err != nil {
				t.Fatalf("CheckSchema after Migrate = %v", err)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, f := range rec.failed {
				t.Errorf("Migrate of a fresh database ran a failing statement (logged as an ERROR): %s", f)
			}
		})
	}
}

// A schema newer than this library's (a rollback after a newer release
// migrated it) is named as that to a database user who may not create
// tables too, the usual user of a Registry under WithoutMigration's
// deployments: Migrate reported that the user may not create the tables and
// told the operator to run Migrate as one who may, which fails the same
// way, newer schema and all.
func TestMigrateOfANewerSchemaWithoutTheRightToCreateSaysNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "discovery.db")
	rw := openDeferredSQLite(t, path, 1000)
	open(t, rw, "discovery_")
	if err := rw.Exec(`INSERT INTO discovery_schema_migrations (version, applied_at) VALUES (?, 0)`, sqlstore.SchemaVersion+1).Error; err != nil {
		t.Fatal(err)
	}
	s := openReadOnlySQLite(t, path)
	err := s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "newer than this library's") {
		t.Fatalf("Migrate of a newer schema on a read-only database = %v; want ErrUnsupported saying the schema is newer", err)
	}
}

// TestMigrateOfANewerSchemaWithoutTheRightToCreateSaysNewer on PostgreSQL,
// by a read-only session: it got ErrUnavailable ("cannot execute CREATE
// TABLE in a read-only transaction"), for a refusal no retry ends.
func TestPostgresMigrateOfANewerSchemaReadOnlySaysNewer(t *testing.T) {
	p := testutil.Prefix(t)
	admin := testutil.Postgres(t, p)
	open(t, admin, p)
	if err := admin.Exec(`INSERT INTO `+p+`schema_migrations (version, applied_at) VALUES (?, 0)`, sqlstore.SchemaVersion+1).Error; err != nil {
		t.Fatal(err)
	}
	dsn := testutil.PostgresDSN(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	ro := opened(t)(testutil.OpenPostgres(dsn + sep + "default_transaction_read_only=on"))
	s, err := sqlstore.New(ro, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) || !strings.Contains(err.Error(), "newer than this library's") {
		t.Fatalf("Migrate of a newer schema by a read-only session = %v; want ErrUnsupported saying the schema is newer", err)
	}
}
