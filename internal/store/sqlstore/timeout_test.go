package sqlstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// A database that stops answering holds a call without a deadline of its
// own only for the store's timeout: the call fails with ErrUnavailable. A
// caller whose own deadline is sooner gets its own context's error back,
// not ErrUnavailable (it gave up; the database is not to blame).
//
// PostgreSQL stops answering here when the fault proxy black-holes it (TCP
// would hold a call for minutes). SQLite cannot be tested so: a wait for its
// write lock is bounded by its busy_timeout alone, which ignores contexts.
func TestCallsEndWithinTheTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const bound = 10 * time.Second // far under what the database would hold them, far over the timeout
	db, proxy := testutil.PostgresVia(t, testutil.Prefix(t))
	p := testutil.Prefix(t)
	open(t, db, p) // migrated without the short timeout, which a loaded machine's DDL can outlast
	s, err := sqlstore.New(db, p, timeout)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := func(id string) *core.Instance {
		return &core.Instance{ID: id, Service: "db_svc", Host: "10.0.0.1", Port: 80, Weight: 100,
			RegisteredAt: now, ExpiresAt: now.Add(time.Minute)}
	}
	if _, err := s.Register(context.Background(), in("a")); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	defer proxy.Blackhole(false)
	calls := map[string]func(ctx context.Context) error{
		"register": func(ctx context.Context) error { _, err := s.Register(ctx, in("b")); return err },
		"deregister": func(ctx context.Context) error {
			_, err := s.Deregister(ctx, "db_svc", "a")
			return err
		},
		"set config": func(ctx context.Context) error {
			_, _, err := s.SetConfig(ctx, "db_svc", []byte(`{}`), now, 5)
			return err
		},
	}
	for op, call := range calls {
		start := time.Now()
		err := call(context.Background())
		if d := time.Since(start); d > bound || !errors.Is(err, core.ErrUnavailable) {
			t.Fatalf("%s with the database stalled: %v after %v; want ErrUnavailable within %v", op, err, d, bound)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout/3)
		err = call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, core.ErrUnavailable) {
			t.Fatalf("%s with its own deadline passed: %v; want the context's error, not ErrUnavailable", op, err)
		}
	}
}

// pgx's own connect_timeout wraps context.DeadlineExceeded too. That is the
// database failing, not the caller giving up: ErrUnavailable. (Before, a
// Register that needed a new connection to a black-holed database returned
// pgx's error bare.)
func TestDriverTimeoutIsTheDatabases(t *testing.T) {
	db, proxy := testutil.PostgresVia(t, testutil.Prefix(t)) // connect_timeout=2
	s, err := sqlstore.New(db, testutil.Prefix(t), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxIdleConns(0) // every call dials
	proxy.Blackhole(true)
	defer proxy.Blackhole(false)
	now := time.Now()
	_, err = s.Register(context.Background(), &core.Instance{ID: "a", Service: "db_svc", Host: "10.0.0.1", Port: 80,
		Weight: 100, RegisteredAt: now, ExpiresAt: now.Add(time.Minute)})
	if !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Register dialling a black-holed database = %v; want ErrUnavailable", err)
	}
}
