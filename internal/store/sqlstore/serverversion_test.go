package sqlstore_test

import (
	"errors"
	"strings"
	"testing"
	"time"

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
