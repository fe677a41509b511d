package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// A process that dies mid-migration (its connection closed inside the
// migration's transaction, holding the migration lock, a table created)
// leaves neither the lock nor the table behind: the transaction-scoped
// advisory lock ends with the connection, so the process waiting for it
// goes on and migrates the whole schema.
func TestPostgresMigrateAfterAProcessDiedMidMigration(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	s, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dying, err := pgx.Connect(ctx, testutil.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dying.Close(context.Background())
	expr, key := s.LockSQL("migrate")
	for _, stmt := range []string{
		`BEGIN`,
		`SELECT pg_advisory_xact_lock(` + strings.Replace(expr, "?", "$1", 1) + `)`,
		`CREATE TABLE ` + p + `schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		`CREATE TABLE ` + p + `services (name TEXT)`,
	} {
		var args []any
		if stmt != `BEGIN` && stmt[0] == 'S' {
			args = []any{key}
		}
		if _, err := dying.Exec(ctx, stmt, args...); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Migrate(context.Background()) }()
	// Wait until Migrate waits for the lock, then kill the holder's socket.
	for waiting := 0; waiting == 0; {
		select {
		case err := <-done:
			t.Fatalf("Migrate while another process held the migration lock = %v; want it to wait", err)
		case <-time.After(5 * time.Millisecond):
		}
		db.Raw(`SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
			AND ((classid::bigint << 32) | objid::bigint) = `+expr, key).Scan(&waiting)
	}
	_ = dying.PgConn().Conn().Close()
	if err := <-done; err != nil {
		t.Fatalf("Migrate after the lock holder died = %v", err)
	}
	var versions []int
	db.Raw("SELECT version FROM " + p + "schema_migrations ORDER BY version").Scan(&versions)
	if fmt.Sprint(versions) != allVersions() {
		t.Fatalf("schema_migrations = %v; want %s", versions, allVersions())
	}
}

// A process of the older release (schema 2) and one of the newer (schema
// 3), each with a pool of its own, start together on an empty database, and then over a schema of
// version 1 (a rolling upgrade). Whichever migrates first, the newer comes
// up, the schema ends at 3 with each version recorded once, and the older
// either comes up (it migrated first) or is refused as the README says:
// ErrUnsupported naming the newer schema, never ErrUnavailable (which
// callers retry for good) nor a clash of CREATEs.
func TestMixedReleasesRacingAMigration(t *testing.T) {
	for name, process := range map[string]func(t *testing.T, p string) func() *gorm.DB{
		"postgres": func(t *testing.T, p string) func() *gorm.DB {
			testutil.Postgres(t, p) // drops the tables when the test ends
			dsn := testutil.PostgresDSN(t)
			return func() *gorm.DB { return opened(t)(testutil.OpenPostgres(dsn)) }
		},
		"sqlite": func(t *testing.T, _ string) func() *gorm.DB {
			path := filepath.Join(t.TempDir(), "discovery.db")
			return func() *gorm.DB { return opened(t)(testutil.OpenSQLite(path)) }
		},
	} {
		t.Run(name, func(t *testing.T) { mixedReleasesRacingAMigration(t, process) })
	}
}

func mixedReleasesRacingAMigration(t *testing.T, process func(t *testing.T, p string) func() *gorm.DB) {
	for round := range 6 {
		p := testutil.Prefix(t)
		open := process(t, p)
		db := open()
		if round%2 == 1 { // a schema of version 1 to upgrade
			old, err := sqlstore.New(db, p, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			old.AsRelease(1)
			if err := old.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		stores := make([]*sqlstore.Store, 2)
		for i := range stores {
			s, err := sqlstore.New(open(), p, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			stores[i] = s
		}
		stores[0].AsRelease(2)
		errs := make([]chan error, 2)
		gate := make(chan struct{})
		for i, s := range stores {
			errs[i] = make(chan error, 1)
			go func() { <-gate; errs[i] <- s.Migrate(context.Background()) }()
		}
		close(gate)
		older, newer := <-errs[0], <-errs[1]
		if newer != nil {
			t.Errorf("round %d: the newer release's Migrate = %v", round, newer)
		}
		if older != nil && (!errors.Is(older, core.ErrUnsupported) || errors.Is(older, core.ErrUnavailable) || !strings.Contains(older.Error(), "newer")) {
			t.Errorf("round %d: the older release's Migrate = %v; want nil or ErrUnsupported naming the newer schema", round, older)
		}
		t.Logf("round %d: older release: %v", round, older)
		var versions []int
		db.Raw("SELECT version FROM " + p + "schema_migrations ORDER BY version").Scan(&versions)
		if fmt.Sprint(versions) != allVersions() {
			t.Fatalf("round %d: schema_migrations = %v; want %s", round, versions, allVersions())
		}
	}
}

// A read-only PostgreSQL (a hot standby, or default_transaction_read_only,
// as here) with a schema still to create is ErrUnavailable, whose message
// says the transaction is read-only: not ErrUnsupported, because a standby
// is promoted (checked by hand against a real one: the same error, then
// success after pg_ctl promote) and the same call then succeeds, as here
// once the session accepts writes.
func TestPostgresMigrateOnAReadOnlyDatabaseWaitsForWrites(t *testing.T) {
	p := testutil.Prefix(t)
	testutil.Postgres(t, p) // drops the tables when the test ends
	_, u := postgresURL(t)
	q := u.Query()
	q.Set("default_transaction_read_only", "on")
	u.RawQuery = q.Encode()
	db := opened(t)(testutil.OpenPostgres(u.String()))
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // one session, which "promotion" below makes writable
	s, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnavailable) || errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), "read-only transaction") {
		t.Fatalf("Migrate of a new schema on a read-only database = %v; want ErrUnavailable saying the transaction is read-only", err)
	}
	if err := db.Exec(`SET default_transaction_read_only = off`).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate once the database accepts writes = %v", err)
	}
	if err := s.CheckSchema(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A process frozen mid-migration (SIGSTOP, a partition: its connection
// left half-open, its transaction idle, holding the migration lock) holds
// it no longer than its own bound: the transaction's
// idle_in_transaction_session_timeout ends the session on the server, and
// the process waiting for the lock migrates the whole schema. (Without
// that timeout the server holds the lock until TCP keepalive gives up on
// the connection, two hours by default.)
func TestPostgresMigrateAfterAProcessFrozeMidMigration(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	_, u := postgresURL(t)
	proxy := testutil.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	frozenDB := opened(t)(testutil.OpenPostgres(u.String()))
	err := frozenDB.Callback().Raw().Before("gorm:raw").Register("test:freeze", func(tx *gorm.DB) {
		if strings.Contains(tx.Statement.SQL.String(), "CREATE TABLE "+p+"keys") {
			proxy.Stall() // nothing more reaches the server, nor leaves it
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	frozen, err := sqlstore.New(frozenDB, p, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := frozen.Migrate(t.Context()); err == nil {
		t.Fatal("Migrate over a stalled connection = nil")
	}
	s, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate after another process froze in its migration = %v; want the lock freed at that process's bound", err)
	}
	var versions []int
	db.Raw("SELECT version FROM " + p + "schema_migrations ORDER BY version").Scan(&versions)
	if fmt.Sprint(versions) != allVersions() {
		t.Fatalf("schema_migrations = %v; want %s", versions, allVersions())
	}
}
