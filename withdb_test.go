package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// A *gorm.DB inside a transaction (db.Begin(), or the tx of a
// db.Transaction callback) is refused by New, clearly: the Registry ran
// every statement in the caller's transaction, invisible to every other
// process until it committed and lost if it rolled back, and once it ended
// every Register, renewal and lookup failed with "database unavailable"
// (sql.ErrTxDone) for the rest of the Registry's life.
func TestWithDBInATransactionIsRefused(t *testing.T) {
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		t.Run(name, func(t *testing.T) {
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			db := open(t, ns+"_")
			tx := db.Begin()
			if tx.Error != nil {
				t.Fatal(tx.Error)
			}
			defer tx.Rollback()
			r, err := discovery.New(discovery.WithDB(tx), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err == nil {
				defer r.Close()
				tx.Commit()
				_, rerr := r.Register(context.Background(), discovery.Instance{Service: "txsvc", Host: "10.0.0.1", Port: 1})
				t.Fatalf("New(WithDB(db.Begin())) = nil; want ErrInvalid (after the transaction committed, Register = %v)", rerr)
			}
			if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithDB") || !strings.Contains(err.Error(), "transaction") {
				t.Fatalf("New(WithDB(db.Begin())) = %v; want ErrInvalid naming WithDB and the transaction", err)
			}
		})
	}
}

// A *gorm.DB that can run nothing is refused as input (ErrInvalid), by New
// and Migrate alike: one in DryRun mode (it runs no statement) and one that
// carries the error of an earlier statement (GORM returns that error from
// every statement made from it). Both were "database unavailable"
// (ErrUnavailable), which tells a caller to wait and retry, and the
// carried error read as the migration's own.
func TestWithDBThatCannotRunIsInvalid(t *testing.T) {
	tests := []struct {
		name string
		db   func(db *gorm.DB) *gorm.DB
		want string
	}{
		{"dry run", func(db *gorm.DB) *gorm.DB { return db.Session(&gorm.Session{DryRun: true}) }, "DryRun"},
		{"carried error", func(db *gorm.DB) *gorm.DB { return db.Exec("SELECT no_such_column") }, "earlier statement"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := tt.db(testutil.SQLite(t))
			r, err := discovery.New(discovery.WithDB(db), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, discovery.ErrInvalid) || errors.Is(err, discovery.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(WithDB(%s)) = %v; want ErrInvalid saying %q", tt.name, err, tt.want)
			}
			err = discovery.Migrate(context.Background(), db)
			if !errors.Is(err, discovery.ErrInvalid) || errors.Is(err, discovery.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Migrate(%s) = %v; want ErrInvalid saying %q", tt.name, err, tt.want)
			}
		})
	}
}

// A *gorm.DB on one connection of the pool (the handle db.Connection passes
// its callback) is refused too: once the callback returned, the connection
// went back to the pool closed to this handle, and every call of the
// Registry failed with "database unavailable" (sql: connection is already
// closed) for good.
func TestWithDBOnOneConnectionIsRefused(t *testing.T) {
	var conn *gorm.DB
	if err := testutil.SQLite(t).Connection(func(c *gorm.DB) error { conn = c; return nil }); err != nil {
		t.Fatal(err)
	}
	r, err := discovery.New(discovery.WithDB(conn), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err == nil {
		defer r.Close()
		_, rerr := r.Register(context.Background(), discovery.Instance{Service: "connsvc", Host: "10.0.0.1", Port: 1})
		err = fmt.Errorf("New = nil, then Register = %v", rerr)
	}
	if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithDB") || !strings.Contains(err.Error(), "connection") {
		t.Fatalf("New(WithDB(the handle of db.Connection)): %v; want ErrInvalid naming WithDB and the connection", err)
	}
}

// Migrate refuses a *gorm.DB that was never opened, as New does
// (ErrInvalid): it panicked (a nil pointer in the store's constructor), and
// so did New given one with a Config and a Statement but no dialector.
func TestMigrateOfAZeroDBIsInvalid(t *testing.T) {
	for name, db := range map[string]*gorm.DB{
		"&gorm.DB{}":          {},
		"without a dialector": {Config: &gorm.Config{}, Statement: &gorm.Statement{}},
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("Migrate(%s) panicked: %v", name, p)
				}
			}()
			if err := discovery.Migrate(context.Background(), db); !errors.Is(err, discovery.ErrInvalid) {
				t.Errorf("Migrate(%s) = %v; want ErrInvalid", name, err)
			}
			r, err := discovery.New(discovery.WithDB(db), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, discovery.ErrInvalid) {
				t.Errorf("New(WithDB(%s)) = %v; want ErrInvalid", name, err)
			}
		}()
	}
}

// A Registry works on the handles users hand in, configured in many ways,
// and takes none of a handle's statement state: a Where or Table chained
// on it, a context already canceled, prepared statements, a session of
// its own.
func TestWithDBOfManyShapes(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	shapes := []struct {
		name  string
		shape func(db *gorm.DB) *gorm.DB
	}{
		{"as opened", func(db *gorm.DB) *gorm.DB { return db }},
		{"Where", func(db *gorm.DB) *gorm.DB { return db.Where("1 = 0") }},
		{"Table and Limit", func(db *gorm.DB) *gorm.DB { return db.Table("no_such_table").Limit(1) }},
		{"canceled context", func(db *gorm.DB) *gorm.DB { return db.WithContext(canceled) }},
		{"prepared statements", func(db *gorm.DB) *gorm.DB {
			return db.Session(&gorm.Session{PrepareStmt: true, QueryFields: true, SkipHooks: true})
		}},
	}
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		for _, tt := range shapes {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				ctx := context.Background()
				ns := strings.TrimSuffix(testutil.Prefix(t), "_")
				r, err := discovery.New(discovery.WithDB(tt.shape(open(t, ns+"_"))), discovery.WithNamespace(ns),
					discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				defer r.Close()
				l, err := r.Register(ctx, discovery.Instance{Service: "shaped", Host: "10.0.0.1", Port: 1})
				if err != nil {
					t.Fatalf("Register = %v", err)
				}
				if got := ids(r.Get(ctx, "shaped")); got != "10.0.0.1:1" {
					t.Fatalf("Get = %s", got)
				}
				if err := l.Close(); err != nil {
					t.Fatalf("Deregister = %v", err)
				}
			})
		}
	}
}
