package sqlstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/storetest"
	"github.com/rssbot/discovery/internal/testutil"
)

// A Register that meets the row of its service while a reaper's deletion
// of it holds it waits, and once the deletion commits creates the service
// again: at a revision above the deletion's. PostgreSQL computes an
// INSERT's values before it waits for a row it conflicts with, from a
// snapshot that predates the deletion: read in the INSERT's own VALUES,
// the floor the deletion raises was the old one, and the service started
// again at or below the revision that processes' caches held.
func TestPostgresRegisterWaitingOnAServiceDeletionStartsAboveIt(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	s := open(t, db, p)
	ctx := t.Context()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for range 5 { // the service at revision 10
		if _, err := s.Register(ctx, storetest.Instance("db_svc", "a", t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Deregister(ctx, "db_svc", "a"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ReapServices(ctx, t0, t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		rev int64
		err error
	}
	done := make(chan result, 1)
	s.OnReaped(func() {
		s.OnReaped(nil)
		go func() {
			rev, err := s.Register(ctx, storetest.Instance("db_svc", "b", t0.Add(time.Hour)))
			done <- result{rev, err}
		}()
		// Until the Register waits for the row the deletion holds.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			var n int
			db.Raw(`SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?`,
				"%INSERT INTO "+p+"services%").Scan(&n)
			if n > 0 {
				return
			}
		}
		t.Error("the Register never waited for the deletion")
	})
	changes, err := s.ReapServices(ctx, t0.Add(time.Hour), t0.Add(time.Minute))
	if err != nil || len(changes) != 1 || changes[0].Revision != 11 {
		t.Fatalf("ReapServices = %v, %v; want db_svc deleted at revision 11", changes, err)
	}
	res := <-done
	if res.err != nil || res.rev <= changes[0].Revision {
		t.Fatalf("Register that waited for the deletion = %d, %v; want a revision above %d", res.rev, res.err, changes[0].Revision)
	}
	svc, err := s.Load(ctx, "db_svc")
	if err != nil || svc.Revision != res.rev || len(svc.Instances) != 1 {
		t.Fatalf("Load = %+v, %v; want instance b at revision %d", svc, err, res.rev)
	}
}

// allVersions is the list of every schema version, as schema_migrations
// holds them once migrated: "[1 2 ... SchemaVersion]".
func allVersions() string {
	v := make([]int, sqlstore.SchemaVersion)
	for i := range v {
		v[i] = i + 1
	}
	return fmt.Sprint(v)
}

// undoVersion4 is what takes a schema of prefix p at version 4 back to 3,
// for tests that stand for a schema of an older release.
func undoVersion4(p string) []string {
	return []string{
		`DELETE FROM ` + p + `schema_migrations WHERE version >= 4`,
		`ALTER TABLE ` + p + `services DROP COLUMN empty_since`,
		`ALTER TABLE ` + p + `services DROP COLUMN empty_revision`,
		`DROP TABLE ` + p + `service_reap`,
	}
}

// Reapers of several processes make one round between them within a
// quarter of the delay: a round reads every service row (15 ms for
// 10,000 on PostgreSQL), and each process's reaper ran one every 30 s.
func TestServiceReapRoundsAreSharedBetweenProcesses(t *testing.T) {
	p := testutil.Prefix(t)
	for name, db := range bothDatabases(p) {
		t.Run(name, func(t *testing.T) {
			db := db(t)
			a, b := open(t, db, p), open(t, db, p) // two processes
			ctx := t.Context()
			t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
			if _, err := a.Register(ctx, storetest.Instance("gone", "a", t0)); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Deregister(ctx, "gone", "a"); err != nil {
				t.Fatal(err)
			}
			round := func(s *sqlstore.Store, at time.Duration) int {
				t.Helper()
				now := t0.Add(at)
				changes, err := s.ReapServices(ctx, now, now.Add(-time.Minute)) // a quarter: 15 s
				if err != nil {
					t.Fatal(err)
				}
				return len(changes)
			}
			round(a, 0)                                // finds gone with nothing at 0
			if n := round(b, 61*time.Second); n != 1 { // another process, a delay later
				t.Fatalf("round at 61 s deleted %d; want gone", n)
			}
			emptyService := func() {
				if _, err := a.Register(ctx, storetest.Instance("gone", "a", t0)); err != nil {
					t.Fatal(err)
				}
				if _, err := a.Deregister(ctx, "gone", "a"); err != nil {
					t.Fatal(err)
				}
			}
			emptyService()
			round(a, 70*time.Second) // within 15 s of b's round: skipped, gone not found
			if n := round(b, 140*time.Second); n != 0 {
				t.Fatalf("round at 140 s deleted %d; want none: the round at 70 s, within 15 s of the last, was skipped, so gone was first found at 140 s", n)
			}
			if n := round(a, 201*time.Second); n != 1 {
				t.Fatalf("round at 201 s deleted %d; want gone", n)
			}
		})
	}
}
