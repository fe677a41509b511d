package sqlstore_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// pqError stands for the error of a PostgreSQL driver other than pgx, as
// lib/pq's *pq.Error: a SQLSTATE behind SQLState(), no *pgconn.PgError.
type pqError struct{ code, msg string }

func (e *pqError) Error() string    { return "pq: " + e.msg }
func (e *pqError) SQLState() string { return e.code }

// asAnotherDriver makes db's statements fail as through lib/pq
// (gorm's postgres dialector over a *sql.DB the user opened with it).
func asAnotherDriver(t *testing.T, db *gorm.DB) {
	t.Helper()
	err := db.Callback().Raw().After("gorm:raw").Register("test:pq", func(tx *gorm.DB) {
		var pe *pgconn.PgError
		if errors.As(tx.Error, &pe) {
			tx.Error = &pqError{code: pe.Code, msg: pe.Message}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The SQLSTATEs the store branches on are read from any driver's error
// that has one, not only pgx's: on a database reached through lib/pq, a
// migration that met another deployment's table was "database
// unavailable" (ErrUnavailable, retried for good) instead of the clash
// (ErrUnsupported) it is.
func TestPostgresClashThroughAnotherDriverIsUnsupported(t *testing.T) {
	p := testutil.Prefix(t)
	db := testutil.Postgres(t, p)
	if err := db.Exec(`CREATE TABLE ` + p + `services (name TEXT)`).Error; err != nil {
		t.Fatal(err)
	}
	asAnotherDriver(t, db)
	s, err := sqlstore.New(db, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Migrate(t.Context())
	if !errors.Is(err, core.ErrUnsupported) || errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("Migrate over another deployment's %sservices, through lib/pq = %v; want ErrUnsupported (the clash)", p, err)
	}
}
