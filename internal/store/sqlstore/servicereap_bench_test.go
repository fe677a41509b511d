package sqlstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/storetest"
	"github.com/rssbot/discovery/internal/testutil"
)

// BenchmarkPostgresRegisterNewService registers the first instance of a
// new service: the one write that creates its row, and so the one that
// pays for moving it above the revision floor.
func BenchmarkPostgresRegisterNewService(b *testing.B) {
	p := testutil.Prefix(b)
	s := open(b, testutil.Postgres(b, p), p)
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Register(b.Context(), storetest.Instance(fmt.Sprintf("s%09d", i), "a", exp)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPostgresReapServices10k is a reaper round over 10,000 services,
// each with a live instance: the pass ReapServices makes every round to
// find those left with nothing, finding none.
func BenchmarkPostgresReapServices10k(b *testing.B) {
	p := testutil.Prefix(b)
	db := testutil.Postgres(b, p)
	s := open(b, db, p)
	const n = 10000
	exp := time.Now().Add(time.Hour).UnixNano()
	svcs, insts := make([]string, n), make([]string, n)
	for i := range n {
		svcs[i] = fmt.Sprintf("('s%05d', 1, 0, 0)", i)
		insts[i] = fmt.Sprintf("('s%05d', 'a', 'h', 1, 0, 1, 0, %d)", i, exp)
	}
	for _, q := range []string{
		`INSERT INTO ` + p + `services (name, revision, config_revision, updated_at) VALUES ` + strings.Join(svcs, ", "),
		`INSERT INTO ` + p + `instances (service, id, host, port, method, weight, registered_at, expires_at) VALUES ` + strings.Join(insts, ", "),
		`ANALYZE`,
	} {
		if err := db.Exec(q).Error; err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	b.ResetTimer()
	for range b.N {
		now = now.Add(time.Minute) // past the throttle: every call a round
		if _, err := s.ReapServices(b.Context(), now, now.Add(-time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPostgresRegisterExistingService registers an instance of a
// service that exists: the common write, which the revision floor leaves
// as it was (one bump statement, no more).
func BenchmarkPostgresRegisterExistingService(b *testing.B) {
	p := testutil.Prefix(b)
	s := open(b, testutil.Postgres(b, p), p)
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Register(b.Context(), storetest.Instance("db_svc", fmt.Sprintf("i%d", i%50), exp)); err != nil {
			b.Fatal(err)
		}
	}
}
