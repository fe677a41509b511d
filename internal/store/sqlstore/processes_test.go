package sqlstore_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// Stores on pools of their own, as processes are, migrating an empty
// database at once and then writing one service every way at once
// (registrations and deregistrations of its instances, renewals,
// configurations stored and swapped, keys published, retired and revoked,
// reaps): no write fails but as its own outcome (not found, a conflict, a
// revoked key), none deadlocks or meets a serialization failure, no two
// writes are given one revision, and the service ends at the revision of
// the number of writes.
func TestWritersInSeveralProcessesOfOneService(t *testing.T) {
	p := testutil.Prefix(t)
	pools := map[string]func(t *testing.T) []*gorm.DB{
		"sqlite": func(t *testing.T) []*gorm.DB {
			path := filepath.Join(t.TempDir(), "discovery.db")
			var out []*gorm.DB
			for range 3 {
				out = append(out, opened(t)(testutil.OpenSQLite(path)))
			}
			return out
		},
		"postgres": func(t *testing.T) []*gorm.DB {
			out := []*gorm.DB{testutil.Postgres(t, p)} // drops the tables at the end
			for range 2 {
				out = append(out, opened(t)(testutil.OpenPostgres(testutil.PostgresDSN(t))))
			}
			return out
		},
	}
	for name, open := range pools {
		t.Run(name, func(t *testing.T) {
			var (
				stores []*sqlstore.Store
				wg     sync.WaitGroup
			)
			dbs := open(t)
			errs := make([]error, len(dbs))
			for i, db := range dbs {
				s, err := sqlstore.New(db, p, conformanceBound)
				if err != nil {
					t.Fatal(err)
				}
				stores = append(stores, s)
				wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("concurrent Migrate of an empty database: %v", err)
			}
			var (
				mu   sync.Mutex
				revs = map[int64]string{}
			)
			note := func(op string, rev int64, err error) {
				switch {
				case errors.Is(err, core.ErrNotFound), errors.Is(err, core.ErrConflict), errors.Is(err, core.ErrRevoked):
				case err != nil:
					t.Errorf("%s: %v", op, err)
				default:
					mu.Lock()
					defer mu.Unlock()
					if other, ok := revs[rev]; ok {
						t.Errorf("revision %d given to a %s and a %s", rev, other, op)
					}
					revs[rev] = op
				}
			}
			until := time.Now().Add(2 * time.Second)
			for w := range 6 {
				s := stores[w%len(stores)]
				wg.Go(func() {
					for time.Now().Before(until) && !t.Failed() {
						now, id, kid := time.Now(), fmt.Sprintf("i%d", rand.IntN(4)), fmt.Sprintf("k%d", rand.IntN(3))
						switch rand.IntN(9) {
						case 0, 1:
							expires := now.Add(time.Hour)
							if rand.IntN(3) == 0 {
								expires = now.Add(-time.Hour) // for the reaps
							}
							rev, err := s.Register(t.Context(), &core.Instance{Service: "svc", ID: id, Host: "10.0.0.1", Port: 80,
								Weight: 1 + rand.IntN(9), RegisteredAt: now, ExpiresAt: expires})
							note("register", rev, err)
						case 2:
							rev, err := s.Deregister(t.Context(), "svc", id)
							note("deregister", rev, err)
						case 3:
							if err := s.Renew(t.Context(), "svc", id, now, now.Add(time.Hour)); err != nil && !errors.Is(err, core.ErrNotFound) {
								t.Errorf("renew: %v", err)
							}
						case 4:
							rev, _, err := s.SetConfig(t.Context(), "svc", []byte(`{"a":1}`), now, 3)
							note("set config", rev, err)
						case 5:
							rev, _, err := s.SetConfigIf(t.Context(), "svc", []byte(`{"a":2}`), now, 3, int64(rand.IntN(4)))
							note("swap config", rev, err)
						case 6:
							changes, err := s.Reap(t.Context(), now)
							if err != nil {
								t.Errorf("reap: %v", err)
							}
							for _, c := range changes {
								note("reap", c.Revision, nil)
							}
						case 7:
							rev, err := s.PutKey(t.Context(), "svc", core.PublicKey{ID: kid, Algorithm: "EdDSA",
								Key: fmt.Appendf(nil, "%s%d", kid, rand.IntN(2)), CreatedAt: now})
							note("put key", rev, err)
						case 8:
							if rand.IntN(3) == 0 {
								rev, err := s.RevokeKey(t.Context(), "svc", kid, now)
								note("revoke key", rev, err)
							} else {
								rev, err := s.RetireKey(t.Context(), "svc", kid, now.Add(-time.Second))
								note("retire key", rev, err)
							}
						}
					}
				})
			}
			wg.Wait()
			svc, err := stores[0].Load(t.Context(), "svc")
			if err != nil {
				t.Fatal(err)
			}
			if svc.Revision != int64(len(revs)) {
				t.Fatalf("service at revision %d after %d writes", svc.Revision, len(revs))
			}
		})
	}
}

// opened returns a function that takes what an Open returned, fails t on
// its error, and closes the pool at the end of t.
func opened(t *testing.T) func(*gorm.DB, error) *gorm.DB {
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
