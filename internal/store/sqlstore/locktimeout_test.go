package sqlstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// A process that waits for the migration lock longer than its database
// timeout, because another process holds it, is told so: it was told
// "database unavailable ... no answer within the timeout", as if the
// database were down. It still matches ErrUnavailable (and ErrTimeout):
// once the holder ends, a retry succeeds.
func TestPostgresMigrateTimedOutWaitingForTheLockSaysAnotherProcessHoldsIt(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	s, err := sqlstore.New(db, p, time.Second) // time for the reads before the lock on a loaded machine
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	holder, err := pgx.Connect(ctx, testutil.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expr, key := s.LockSQL("migrate")
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+strings.Replace(expr, "?", "$1", 1)+`)`, key); err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(context.Background())
	if !errors.Is(err, core.ErrUnavailable) || !errors.Is(err, core.ErrTimeout) {
		t.Fatalf("Migrate while another process holds the migration lock = %v; want ErrUnavailable and ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "another process holds the migration lock") {
		t.Fatalf("Migrate while another process holds the migration lock = %q; want it to say another process holds the migration lock", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate once the holder ended = %v", err)
	}
}
