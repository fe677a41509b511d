package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
)

// migration is one step of the schema, applied once and recorded in
// <prefix>schema_migrations. Steps are never edited after release; a change
// is a new step.
type migration struct {
	version int
	stmts   []string
}

// migrations use {p} for the table prefix. The SQL is portable between
// PostgreSQL and SQLite.
var migrations = []migration{
	{1, []string{
		`CREATE TABLE {p}services (
			name VARCHAR(63) PRIMARY KEY,
			revision BIGINT NOT NULL,
			config TEXT,
			config_revision BIGINT NOT NULL DEFAULT 0,
			updated_at BIGINT NOT NULL
		)`,
		// Times are Unix nanoseconds. The primary key leads with the service
		// name, which is the index every lookup uses.
		`CREATE TABLE {p}instances (
			service VARCHAR(63) NOT NULL,
			id VARCHAR(255) NOT NULL,
			host VARCHAR(253) NOT NULL,
			port INTEGER NOT NULL,
			method SMALLINT NOT NULL,
			weight INTEGER NOT NULL,
			zone VARCHAR(64) NOT NULL DEFAULT '',
			version VARCHAR(64) NOT NULL DEFAULT '',
			tags TEXT NOT NULL DEFAULT '',
			metadata TEXT NOT NULL DEFAULT '',
			health_path VARCHAR(256) NOT NULL DEFAULT '',
			check_kind SMALLINT NOT NULL DEFAULT 0,
			status SMALLINT NOT NULL DEFAULT 0,
			registered_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			PRIMARY KEY (service, id)
		)`,
		`CREATE INDEX {p}instances_expires_at ON {p}instances (expires_at)`,
		`CREATE TABLE {p}config_history (
			service VARCHAR(63) NOT NULL,
			revision BIGINT NOT NULL,
			config TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			PRIMARY KEY (service, revision)
		)`,
	}},
	{2, []string{
		// Public signing keys (base64 PKIX DER); retires_at 0 means never.
		`CREATE TABLE {p}keys (
			service VARCHAR(63) NOT NULL,
			kid VARCHAR(64) NOT NULL,
			alg VARCHAR(16) NOT NULL,
			public_key TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			retires_at BIGINT NOT NULL DEFAULT 0,
			PRIMARY KEY (service, kid)
		)`,
	}},
	{3, []string{
		// Revoked keys, kept for good (the reaper deletes a key's row, never
		// this record): PutKey refuses a revoked ID, and the same public key
		// (fingerprint: hex SHA-256 of its PKIX DER) under any ID.
		`CREATE TABLE {p}revoked_keys (
			service VARCHAR(63) NOT NULL,
			kid VARCHAR(64) NOT NULL,
			fingerprint VARCHAR(64) NOT NULL,
			revoked_at BIGINT NOT NULL,
			PRIMARY KEY (service, kid)
		)`,
		`CREATE INDEX {p}revoked_keys_fingerprint ON {p}revoked_keys (service, fingerprint)`,
	}},
	{4, []string{
		// ReapServices: when a service was found with nothing (Unix
		// nanoseconds of the reaper's clock; 0: never), at which revision
		// (0: none, as no service is at revision 0).
		`ALTER TABLE {p}services ADD COLUMN empty_since BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE {p}services ADD COLUMN empty_revision BIGINT NOT NULL DEFAULT 0`,
		// One row. floor: the highest revision a deleted service's change
		// had; a service created after it starts above it (Store.created),
		// so that a name deleted and registered again never goes back in
		// revision. swept_at: when a ReapServices round last read the
		// services (the reaper's clock), so that the processes' reapers
		// make one such round between them, not one each.
		`CREATE TABLE {p}service_reap (id INTEGER PRIMARY KEY, floor BIGINT NOT NULL, swept_at BIGINT NOT NULL)`,
		`INSERT INTO {p}service_reap (id, floor, swept_at) VALUES (1, 0, 0)`,
	}},
}

// SchemaVersion is the version Migrate brings the schema to.
var SchemaVersion = migrations[len(migrations)-1].version

// version is the schema version of this Store's release: SchemaVersion.
func (s *Store) version() int { return s.steps[len(s.steps)-1].version }

func (s *Store) sql(q string) string { return strings.ReplaceAll(q, "{p}", s.prefix) }

// lockKey is the seed of the advisory-lock key of one prefix and purpose;
// lockKeySQL makes the key of the tables' schema from it.
func (s *Store) lockKey(purpose string) int64 {
	h := fnv.New64a()
	h.Write([]byte("discovery:" + s.prefix + ":" + purpose))
	return int64(h.Sum64())
}

// lockKeySQL is the advisory-lock key of the deployment whose lockKey is
// its parameter: that hash, of the schema its tables are in (the first of
// the search_path, as Migrate makes them). Advisory locks are the
// database's, not a schema's: keyed by the prefix alone, deployments in
// two schemas of one database with the same prefix took each other's
// locks, and one's reaper skipped its round whenever the other's ran.
const lockKeySQL = `hashtextextended(coalesce(current_schema(), ''), ?)`

// LockSQL is the expression and parameter of the PostgreSQL advisory-lock
// key of purpose ("reap", "migrate") of this store's deployment, for a
// test that holds it as another of its processes would
// (`SELECT pg_advisory_xact_lock(expr)` with the parameter): the root
// package's tests hold the migration lock with it.
func (s *Store) LockSQL(purpose string) (string, int64) { return lockKeySQL, s.lockKey(purpose) }

// Migrate brings the schema up to SchemaVersion. It is safe to run from many
// processes at once: on PostgreSQL an advisory lock serialises them, on SQLite
// the write lock, taken first, does.
//
// It has two bounds. The read of the schema version, which says whether
// there is anything to do, has the store's timeout (New's), as every
// call: a database that does not answer fails it as soon as any other
// call, and a current schema is answered as fast. The migration that
// follows, if the schema needs one (the server's version, the wait for
// the lock another process's migration holds, the statements, the
// commit), has the migration timeout (SetMigrationTimeout), which may be
// longer: a first start against a busy database, or behind another
// process's migration, outlasted a timeout chosen for request-path
// writes. On PostgreSQL each wait of its statements for a table's lock
// ends at the store's timeout (lock_timeout), and the migration tries
// again within its bound: every later statement on that table queues
// behind such a wait.
func (s *Store) Migrate(ctx context.Context) error {
	have, err := s.versionBefore(ctx)
	switch {
	case err != nil:
		return err
	case have > s.version():
		return s.schemaErr(have)
	case have == s.version():
		return nil
	}
	ctx, cancel := s.boundMigration(ctx)
	defer cancel()
	createTable := s.sql(`CREATE TABLE IF NOT EXISTS {p}schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`)
	// The server's version is read only with a schema to migrate: a
	// current schema was migrated by a release that checked it, and a
	// process's start costs no round trip more.
	if err := s.checkServer(ctx); err != nil {
		return mapErr(ctx, "migrate", err)
	}
	if !s.postgres {
		// SQLite: the table exists before the transaction, so that the
		// transaction's first statement can take the write lock.
		if err := s.db.WithContext(ctx).Exec(createTable).Error; err != nil {
			if ctx.Err() == nil && s.createRefused(err) {
				return s.createErr(err)
			}
			return mapErr(ctx, "migrate", err)
		}
	}
	lockWait := false // the call ended while waiting for the migration lock
	migrate := func(tx *gorm.DB) error {
		if s.postgres { // even CREATE TABLE IF NOT EXISTS races without it
			if err := tx.Exec(`SELECT pg_advisory_xact_lock(`+lockKeySQL+`)`, s.lockKey("migrate")).Error; err != nil {
				lockWait = ctx.Err() != nil
				return err
			}
			// A statement waiting for a table's lock (an upgrade's ALTER
			// TABLE behind another process's long transaction) holds up
			// every later statement on that table, lookups and writes of
			// every process, for as long as it waits: a wait ends at the
			// store's timeout, as their own calls would, and the
			// migration tries again (below) within its own bound.
			if s.timeout > 0 {
				ms := strconv.FormatInt(max(s.timeout.Milliseconds(), 1), 10)
				if err := tx.Exec(`SELECT set_config('lock_timeout', ?, true)`, ms).Error; err != nil {
					return err
				}
			}
		} else if err := tx.Exec(s.q.writeLock).Error; err != nil {
			// The write lock before reading the version, as in Reap: in a
			// deferred transaction a writer that committed between that
			// read and the first CREATE failed it with SQLITE_BUSY_SNAPSHOT.
			return err
		}
		if err := tx.Exec(createTable).Error; err != nil {
			return err
		}
		var current int
		if err := tx.Raw(s.q.schemaVersion).Scan(&current).Error; err != nil {
			return err
		}
		if current > s.version() {
			return s.schemaErr(current) // not the database failing: retrying cannot help
		}
		for _, m := range s.steps {
			if m.version <= current {
				continue
			}
			for _, stmt := range m.stmts {
				if err := tx.Exec(s.sql(stmt)).Error; err != nil {
					if s.alreadyExists(err) {
						return s.clashErr(m.version, err)
					}
					return fmt.Errorf("discovery: migration %d: %w", m.version, err)
				}
			}
			if err := tx.Exec(s.sql(`INSERT INTO {p}schema_migrations (version, applied_at) VALUES (?, ?)`), m.version, time.Now().UnixNano()).Error; err != nil {
				return err
			}
		}
		return nil
	}
	tableWait := false // an attempt ended waiting for a table's lock
	for {
		err = s.tx(ctx, migrate)
		if err == nil || !s.postgres || sqlState(err) != "55P03" || ctx.Err() != nil { // 55P03: lock_not_available
			break
		}
		tableWait = true
		// The statements that queued behind the attempt run first.
		pause := time.NewTimer(lockRetryPause)
		select {
		case <-ctx.Done():
		case <-pause.C:
		}
		pause.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	if err != nil && ctx.Err() == nil && s.createRefused(err) {
		return s.createErr(err)
	}
	if err != nil && lockWait && errors.Is(context.Cause(ctx), core.ErrTimeout) {
		// The database answered; another process's migration did not end
		// in time. Told "database unavailable: no answer within the
		// timeout", an operator looked for a database that was up.
		return &core.BackendError{Backend: "database", Op: "migrate", Err: fmt.Errorf(
			"another process holds the migration lock of prefix %q (pg_advisory_xact_lock) and did not release it within the timeout "+
				"(it is migrating, or stuck in its migration's transaction; a retry succeeds once it ends): %w: %w",
			s.prefix, core.ErrTimeout, err)}
	}
	if err != nil && tableWait && errors.Is(context.Cause(ctx), core.ErrTimeout) {
		return &core.BackendError{Backend: "database", Op: "migrate", Err: fmt.Errorf(
			"the migration of prefix %q waited for the lock of a table other transactions hold, and did not get it within the timeout "+
				"(a long transaction on its tables; each wait ended at the database timeout, not to hold up the others' statements; "+
				"a retry succeeds once it ends): %w: %w", s.prefix, core.ErrTimeout, err)}
	}
	return mapErr(ctx, "migrate", err)
}

// lockRetryPause is how long a migration that did not get a table's lock
// within the store's timeout waits before it tries again: time for the
// statements that queued behind it to run.
const lockRetryPause = 100 * time.Millisecond

// versionBefore reads the schema version for Migrate, before any write and
// within the store's timeout (not the migration's: a database that does
// not answer is not waited for longer at the start than at any other
// call). A schema already current is answered without writing: the write
// lock Migrate takes (SQLite) and CREATE TABLE IF NOT EXISTS (PostgreSQL,
// which checks the right to create before it looks for the table) are
// refused on a read-only database, and to a user who may not create
// tables. It reads through schemaVersion, which looks for the table
// first: read from a table not created yet, the version failed, and
// GORM's default logger printed that as an ERROR on every database's
// first start. A schema newer than this release's is refused from it too,
// before any write: a user who may not create tables got "may not create
// the tables: run Migrate as a user who may", which fails the same way.
//
// A read that fails ends Migrate: the migration, which reads the version
// again under its lock, went on after it under the same deadline, and
// failed at once; under a longer one of its own, a black-holed database
// held New for both timeouts.
func (s *Store) versionBefore(ctx context.Context) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	have, err := s.schemaVersion(ctx, true)
	return have, mapErr(ctx, "migrate", err) // ErrUnsupported as it is: no version can be read, so no migration runs
}

// createRefused reports whether err is the database refusing to create the
// tables for good: on PostgreSQL insufficient_privilege, or no schema of
// the search_path to create in (invalid_schema_name); on SQLite a
// read-only database (SQLITE_READONLY and its extended codes).
func (s *Store) createRefused(err error) bool {
	if s.postgres {
		code := sqlState(err)
		return code == "42501" || code == "3F000"
	}
	var e interface{ Code() int }
	return errors.As(err, &e) && e.Code()&0xff == 8
}

// createErr is the error of a migration the database refused to create
// the tables for: the user's rights, search_path or a read-only database,
// which retrying cannot change. As ErrUnavailable (the database's
// failure) New's callers retried it for good.
func (s *Store) createErr(err error) error {
	where := "in the first schema of its search_path (or none of its schemas exists)"
	if !s.postgres {
		where = "in a read-only database"
	}
	return fmt.Errorf("%w: migrating prefix %q: %w: this database user may not create the tables %s: "+
		"run discovery.Migrate as a user who may (a job of its own), and New with WithoutMigration",
		core.ErrUnsupported, s.prefix, err, where)
}

// alreadyExists reports whether err is a CREATE's for a table or index
// that exists (PostgreSQL's duplicate_table, SQLite's message).
func (s *Store) alreadyExists(err error) bool {
	if s.postgres {
		return sqlState(err) == "42P07"
	}
	return strings.Contains(err.Error(), "already exists")
}

// clashErr is the error of a migration that met a table or index it
// creates already there. The migrations table says this prefix never
// created it, so it is another's: namespace "x_revoked"'s keys table is
// namespace "x"'s revoked keys table. Retrying cannot help, and as
// ErrUnavailable (the database's failure) callers retried it for good.
func (s *Store) clashErr(version int, err error) error {
	return fmt.Errorf("%w: migration %d of prefix %q: %w: a table of this prefix's schema exists but was not made by its migrations; "+
		"another deployment's tables clash with these (a namespace followed by \"_revoked\" is another namespace's revoked keys table): choose another namespace",
		core.ErrUnsupported, version, s.prefix, err)
}

// CheckSchema returns nil if the schema is at SchemaVersion, else an error
// matching core.ErrUnsupported that says which it is: for a Registry that
// leaves migrating to a job of its own (WithoutMigration), a database never
// migrated is that, not "database unavailable" at the first write.
func (s *Store) CheckSchema(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	current, err := s.schemaVersion(ctx, false)
	if err != nil {
		return mapErr(ctx, "check schema", err)
	}
	if current != s.version() {
		return s.schemaErr(current)
	}
	return nil
}

// schemaVersion returns the version the schema is at: 0 when it has no
// migrations table yet, which it looks for first rather than read a table
// that is not there (a failed statement, which GORM's logger prints).
//
// On PostgreSQL, for Migrate (creating), the table is looked for where
// CREATE TABLE puts it, the current schema (the first of the search_path
// that exists), and not along the whole search_path as the statements
// resolve names: another deployment's tables of the same prefix in a later
// schema (public, behind "tenant, public") are not this one's, and taken
// for them, Migrate created nothing and this deployment shared the other's.
func (s *Store) schemaVersion(ctx context.Context, creating bool) (int, error) {
	exists := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`
	switch {
	case s.postgres && creating:
		exists = `SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = ?`
	case s.postgres:
		exists = `SELECT COUNT(*) FROM (SELECT to_regclass(?) AS t) x WHERE t IS NOT NULL`
	}
	var n, current int
	err := s.db.WithContext(ctx).Raw(exists, s.prefix+"schema_migrations").Scan(&n).Error
	if err == nil && n > 0 {
		err = s.db.WithContext(ctx).Raw(s.q.schemaVersion).Scan(&current).Error
		if err != nil && s.postgres && ctx.Err() == nil && sqlState(err) == "42501" {
			// Tables made by a job as their owner and granted one by one,
			// all but this one: a refusal no retry ends, which as
			// ErrUnavailable (the database's failure) New's callers
			// retried for good.
			err = fmt.Errorf("%w: reading the schema version of prefix %q: %w: grant this database user SELECT on %sschema_migrations, "+
				"as on the other tables", core.ErrUnsupported, s.prefix, err, s.prefix)
		}
	}
	return current, err
}

// schemaErr is the error of a schema at a version other than SchemaVersion.
func (s *Store) schemaErr(current int) error {
	if current > s.version() {
		return fmt.Errorf("%w: schema version %d of prefix %q is newer than this library's %d", core.ErrUnsupported, current, s.prefix, s.version())
	}
	return fmt.Errorf("%w: schema version %d of prefix %q is older than this library's %d: run discovery.Migrate with the same namespace (or New without WithoutMigration)",
		core.ErrUnsupported, current, s.prefix, s.version())
}

// Warm opens up to n connections at once and returns them to the pool, so
// that the first lookups do not pay for a cold connection (about 5 ms to
// PostgreSQL on loopback, TLS and authentication included). It opens no
// more than the pool has free: one more would wait for a connection that
// only Warm itself could give back, until ctx ended.
func (s *Store) Warm(ctx context.Context, n int) {
	sqlDB, err := s.db.DB()
	if err != nil {
		return
	}
	if st := sqlDB.Stats(); st.MaxOpenConnections > 0 {
		n = max(min(n, st.MaxOpenConnections-st.InUse), 0)
	}
	conns := make([]interface{ Close() error }, 0, n)
	for range n {
		c, err := sqlDB.Conn(ctx)
		if err != nil {
			break
		}
		if c.PingContext(ctx) != nil {
			_ = c.Close()
			break
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		_ = c.Close() // back to the pool
	}
}

// minPostgres is the oldest PostgreSQL the store runs on
// (server_version_num): 11, for hashtextextended, which the advisory-lock
// keys are made with (lockKeySQL).
const minPostgres = 110000

// checkPostgresVersion returns nil for a server of server_version_num num
// (server_version: version) the store runs on, else an error matching
// core.ErrUnsupported that names both versions. On PostgreSQL 10 Migrate
// failed taking its lock ("function hashtextextended does not exist") as
// ErrUnavailable, and callers retried, for good, a server that never works.
func checkPostgresVersion(num int, version string) error {
	if num >= minPostgres {
		return nil
	}
	return fmt.Errorf("%w: PostgreSQL %s (server_version_num %d): this library needs PostgreSQL %d or newer",
		core.ErrUnsupported, version, num, minPostgres/10000)
}

// minSQLiteMajor and minSQLiteMinor are the oldest SQLite the store runs
// on: 3.35, for RETURNING, which its writes read their revisions with.
const minSQLiteMajor, minSQLiteMinor = 3, 35

// checkSQLiteVersion returns nil for an SQLite whose sqlite_version() is
// version ("3.45.1") if the store runs on it, else an error matching
// core.ErrUnsupported that names both versions. Below 3.35 the migration
// went through and the first write failed on RETURNING with a syntax
// error, which names no version. A version it cannot read passes: the
// statements then fail, or not, as they did before the check.
func checkSQLiteVersion(version string) error {
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	maj, err1 := strconv.Atoi(major)
	mnr, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil || maj > minSQLiteMajor || (maj == minSQLiteMajor && mnr >= minSQLiteMinor) {
		return nil
	}
	return fmt.Errorf("%w: SQLite %s: this library needs SQLite %d.%d or newer (RETURNING); the embedded driver, github.com/glebarez/sqlite, has one",
		core.ErrUnsupported, version, minSQLiteMajor, minSQLiteMinor)
}

// checkServer reads the server's version and refuses one the store does not
// run on (checkPostgresVersion, checkSQLiteVersion): one query, made only
// by a migration that runs.
func (s *Store) checkServer(ctx context.Context) error {
	if !s.postgres {
		var version string
		if err := s.db.WithContext(ctx).Raw(`SELECT sqlite_version()`).Scan(&version).Error; err != nil {
			return err
		}
		return checkSQLiteVersion(version)
	}
	var v struct {
		Num     int
		Version string
	}
	err := s.db.WithContext(ctx).Raw(`SELECT current_setting('server_version_num')::int AS num, current_setting('server_version') AS version`).Scan(&v).Error
	if err != nil {
		return err
	}
	return checkPostgresVersion(v.Num, v.Version)
}
