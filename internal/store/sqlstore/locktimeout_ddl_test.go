package sqlstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// An upgrade's ALTER TABLE waits for the table's lock behind another
// process's long transaction (2 s here), and every statement on that
// table queued behind the ALTER: other processes' lookups and writes of
// that table stalled for as long as it waited, up to the migration
// timeout (a minute). Now each attempt waits at most the store's timeout
// (lock_timeout) and the migration tries again, within its own bound, so
// another process's read waits at most about that timeout, and the
// upgrade still lands once the long transaction ends.
func TestPostgresUpgradeWaitingForATableLockDoesNotStallOthers(t *testing.T) {
	const dbTO, hold = 300 * time.Millisecond, 2 * time.Second
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	older, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	older.AsRelease(3)
	if err := older.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	long := db.Begin() // another process's long transaction, reading services
	if err := long.Exec(`LOCK TABLE ` + p + `services IN ACCESS SHARE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(hold, func() { long.Rollback() })
	defer timer.Stop()
	s, err := sqlstore.New(db, p, dbTO)
	if err != nil {
		t.Fatal(err)
	}
	s.SetMigrationTimeout(time.Minute)
	done := make(chan error, 1)
	go func() { done <- s.Migrate(context.Background()) }()
	// Once the upgrade waits for its lock, another process reads services.
	for waiting := 0; waiting == 0; {
		select {
		case err := <-done:
			t.Fatalf("upgrade behind a long transaction = %v before it ended; want it to wait", err)
		case <-time.After(5 * time.Millisecond):
		}
		db.Raw(`SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE c.relname = ? AND l.mode = 'AccessExclusiveLock' AND NOT l.granted`, p+"services").Scan(&waiting)
	}
	start := time.Now()
	var n int
	if err := db.Raw(`SELECT COUNT(*) FROM ` + p + `services`).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*dbTO {
		t.Errorf("a read of services behind the upgrade's ALTER TABLE took %v; want at most about the database timeout (%v), "+
			"not until the long transaction ends (%v)", took, dbTO, hold)
	}
	if err := <-done; err != nil {
		t.Fatalf("upgrade once the long transaction ended = %v", err)
	}
	if err := s.CheckSchema(context.Background()); err != nil {
		t.Fatalf("schema after the upgrade: %v", err)
	}
}

// An upgrade that does not get a table's lock within the migration
// timeout fails with ErrUnavailable saying what it waited for, and
// changes nothing: a retry once the long transaction ends succeeds.
func TestPostgresUpgradeBehindALongTransactionSaysSo(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	older, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	older.AsRelease(3)
	if err := older.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	long := db.Begin()
	if err := long.Exec(`LOCK TABLE ` + p + `services IN ACCESS SHARE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	defer long.Rollback()
	s, err := sqlstore.New(db, p, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s.SetMigrationTimeout(time.Second)
	err = s.Migrate(context.Background())
	if !errors.Is(err, core.ErrUnavailable) || !errors.Is(err, core.ErrTimeout) || !strings.Contains(err.Error(), "lock of a table other transactions hold") {
		t.Fatalf("upgrade behind a long transaction past the migration timeout = %v; want ErrUnavailable saying it waited for a table's lock", err)
	}
	long.Rollback()
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("upgrade once the long transaction ended = %v", err)
	}
}
