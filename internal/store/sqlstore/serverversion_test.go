package sqlstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// A PostgreSQL server older than 11 has no hashtextextended, which the
// migration lock's key needs: Migrate failed there with ErrUnavailable on
// every retry. It is ErrUnsupported, naming the server's version and the
// minimum; a server of 11 or newer passes.
func TestPostgresVersionBelowTheMinimumIsUnsupported(t *testing.T) {
	tests := []struct {
		num     int
		version string
		ok      bool
	}{
		{90624, "9.6.24", false},
		{100023, "10.23 (Debian 10.23-1.pgdg110+1)", false},
		{110000, "11.0", true},
		{150010, "15.10", true},
		{170002, "17.2", true},
	}
	for _, tt := range tests {
		err := sqlstore.CheckPostgresVersion(tt.num, tt.version)
		if tt.ok {
			if err != nil {
				t.Errorf("PostgreSQL %s (%d): %v; want nil", tt.version, tt.num, err)
			}
			continue
		}
		if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) {
			t.Errorf("PostgreSQL %s (%d): %v; want ErrUnsupported, not ErrUnavailable", tt.version, tt.num, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, tt.version) || !strings.Contains(msg, "PostgreSQL 11") {
			t.Errorf("PostgreSQL %s (%d): %q; want the server's version and the minimum (PostgreSQL 11) named", tt.version, tt.num, msg)
		}
	}
}

// The server the tests run against is new enough: Migrate reads its
// version and migrates.
func TestPostgresMigrateOnASupportedServer(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	var num int
	if err := db.Raw(`SELECT current_setting('server_version_num')::int`).Scan(&num).Error; err != nil {
		t.Fatal(err)
	}
	if num < 110000 {
		t.Skipf("server_version_num %d: this test needs PostgreSQL 11 or newer", num)
	}
	s, err := sqlstore.New(db, p, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate on PostgreSQL (server_version_num %d) = %v", num, err)
	}
	if err := s.CheckSchema(t.Context()); err != nil {
		t.Fatalf("CheckSchema after Migrate = %v", err)
	}
}

// An SQLite older than 3.35 has no RETURNING, which every write of the
// store needs: a migration there went through (or failed on some other
// statement) and the first write failed with a syntax error, an obscure
// "near RETURNING" that said nothing of the version. It is ErrUnsupported,
// naming the library's version and the minimum; 3.35 and newer pass, and
// so does a version string the check cannot read (the statements then say
// what they say, as before).
func TestSQLiteVersionBelowTheMinimumIsUnsupported(t *testing.T) {
	tests := []struct {
		version string
		ok      bool
	}{
		{"2.8.17", false},
		{"3.7.17", false},
		{"3.9.2", false}, // "9" > "35" as text: compared as numbers
		{"3.31.1", false},
		{"3.34.1", false},
		{"3.35.0", true},
		{"3.35", true},
		{"3.41.2", true},
		{"3.100.0", true},
		{"4.0.0", true},
		{"", true},
		{"unknown", true},
	}
	for _, tt := range tests {
		err := sqlstore.CheckSQLiteVersion(tt.version)
		if tt.ok {
			if err != nil {
				t.Errorf("SQLite %q: %v; want nil", tt.version, err)
			}
			continue
		}
		if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) {
			t.Errorf("SQLite %s: %v; want ErrUnsupported, not ErrUnavailable", tt.version, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "SQLite "+tt.version+":") || !strings.Contains(msg, "SQLite 3.35") {
			t.Errorf("SQLite %s: %q; want its version and the minimum (SQLite 3.35) named", tt.version, msg)
		}
	}
}

// onVersionQuery calls fn with each statement of db that reads
// sqlite_version(), before it runs, and returns how many there were.
func onVersionQuery(t *testing.T, db *gorm.DB, fn func(tx *gorm.DB)) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	err := db.Callback().Row().Before("gorm:row").Register("test:sqlite_version", func(tx *gorm.DB) {
		if strings.Contains(strings.ToLower(tx.Statement.SQL.String()), "sqlite_version()") {
			n.Add(1)
			fn(tx)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return &n
}

// Migrate on an SQLite whose sqlite_version() is older than 3.35 refuses
// it with ErrUnsupported naming both versions, and creates nothing: the
// tables it would leave behind are ones no write can use.
func TestSQLiteMigrateOnAnOlderSQLiteIsUnsupported(t *testing.T) {
	db := testutil.SQLite(t)
	onVersionQuery(t, db, func(tx *gorm.DB) { // the SQLite of Debian 11, say
		tx.Statement.SQL.Reset()
		tx.Statement.SQL.WriteString(`SELECT '3.34.1'`)
	})
	s, err := sqlstore.New(db, "discovery_", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || !strings.Contains(fmt.Sprint(err), "3.34.1") || !strings.Contains(fmt.Sprint(err), "3.35") {
		t.Fatalf("Migrate on SQLite 3.34.1 = %v; want ErrUnsupported naming 3.34.1 and 3.35", err)
	}
	var tables int64
	if err := db.Raw(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'discovery%'`).Scan(&tables).Error; err != nil || tables != 0 {
		t.Fatalf("tables after the refused Migrate: %d, %v; want none", tables, err)
	}
}

// The SQLite the tests run (the embedded driver's) is new enough: a
// migration that runs reads its version once and migrates, and one that
// finds the schema current reads nothing more (a process's start costs
// no round trip for the check).
func TestSQLiteVersionIsReadOnceOnAMigrationThatRuns(t *testing.T) {
	db := testutil.SQLite(t)
	var version string
	if err := db.Raw(`SELECT sqlite_version()`).Scan(&version).Error; err != nil {
		t.Fatal(err)
	}
	reads := onVersionQuery(t, db, func(*gorm.DB) {})
	s, err := sqlstore.New(db, "discovery_", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate on SQLite %s = %v", version, err)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("a migration that ran read sqlite_version() %d times; want once", n)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate of a current schema = %v", err)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("a migration of a current schema read sqlite_version() %d times more; want none", n-1)
	}
}

// FuzzCheckSQLiteVersion: the verdict on any sqlite_version() never
// panics, and a refusal is ErrUnsupported naming the version.
func FuzzCheckSQLiteVersion(f *testing.F) {
	for _, s := range []string{"3.34.1", "3.35.0", "3.9.2", "3", "3.", ".35", "3.-1.0", "-3.40", "99999999999999999999.1", "3.35.5.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if err := sqlstore.CheckSQLiteVersion(v); err != nil && (!errors.Is(err, core.ErrUnsupported) || !strings.Contains(err.Error(), v)) {
			t.Fatalf("%q: %v; want ErrUnsupported naming the version", v, err)
		}
	})
}
