package discovery

import (
	"context"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/sqlstore"
)

// Migrate creates or upgrades the schema of db for the namespace opts give
// (WithNamespace), as New does unless WithoutMigration: for a deployment
// that changes schemas in a job of its own, with a database user allowed
// to. WithDatabaseTimeout bounds its read of the schema version (a schema
// already current costs that alone), and WithMigrationTimeout a migration
// with work to do, the wait for another process's migration included (a
// wait it ends is ErrUnavailable saying another process holds the
// migration lock), unless ctx ends sooner. Migrations are versioned and
// safe to run from many processes at once. A schema newer than this
// release's is an error matching ErrUnsupported, and so is a database
// user who may not create the tables (or a read-only SQLite database), or
// not read the existing ones' version (ns+"_schema_migrations"), and a
// PostgreSQL server older than 11 (the error names its version). A
// read-only PostgreSQL (a hot standby) with a schema to create is
// ErrUnavailable ("cannot execute CREATE TABLE in a read-only
// transaction"), unlike a read-only SQLite file: a standby is promoted, and
// the same call then succeeds. On PostgreSQL, tables are created in, and
// looked for in, the current schema (the first of the search_path that
// exists).
func Migrate(ctx context.Context, db *gorm.DB, opts ...Option) error {
	if ctx == nil {
		return nilContext("Migrate")
	}
	if db == nil {
		return &core.ValidationError{Field: "db", Value: "nil", Reason: "Migrate needs a database"}
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if err := o.validate(); err != nil {
		return err
	}
	s, err := sqlstore.New(db, o.namespace+"_", o.dbTO)
	if err != nil {
		return err
	}
	s.SetMigrationTimeout(o.migrateTO)
	return s.Migrate(ctx)
}
