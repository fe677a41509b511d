package sqlstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/testutil"
)

// A reap of many services (after a rolling restart, every service has the
// rows of its old instances) on a database a few milliseconds away ends
// within the store's bound and deletes them. It ran three statements a
// service in one transaction: at a 2 ms round trip, 300 services outlasted
// a 1 s bound (5 s by default, some 800 services), the transaction rolled
// back every round, nothing was ever reaped, each round the Registry took
// the database for lost, and the services' writers waited for its row locks
// until it did.
func TestPostgresReapOfManyServicesOverASlowLinkEndsWithinTheBound(t *testing.T) {
	p := testutil.Prefix(t)
	db, proxy := testutil.PostgresVia(t, p)
	s := openBounded(t, db, p, time.Second)
	const n = 300
	expired := time.Now().Add(-time.Hour).UnixNano()
	rows := make([]string, n)
	for i := range rows {
		rows[i] = fmt.Sprintf("('s%03d', 'a', 'h', 1, 0, 1, 0, %d)", i, expired)
	}
	if err := db.Exec(`INSERT INTO ` + p + `instances (service, id, host, port, method, weight, registered_at, expires_at) VALUES ` +
		strings.Join(rows, ", ")).Error; err != nil {
		t.Fatal(err)
	}
	proxy.Latency(time.Millisecond) // each way: a round trip of 2 ms or more
	start := time.Now()
	changes, err := s.Reap(t.Context(), time.Now())
	took := time.Since(start)
	proxy.Latency(0)
	if err != nil || len(changes) != n {
		t.Fatalf("Reap of %d services at a 2 ms round trip = %d changes, %v after %v; want %d, nil", n, len(changes), err, took.Round(time.Millisecond), n)
	}
	var left int
	db.Raw(`SELECT COUNT(*) FROM ` + p + `instances`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d rows left after the reap", left)
	}
}
