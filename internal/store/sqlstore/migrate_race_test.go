package sqlstore_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
	if fmt.Sprint(versions) != fmt.Sprint([]int{1, 2, 3}) {
		t.Fatalf("schema_migrations = %v; want [1 2 3]", versions)
	}
}
