// Package sqlstore is the Store on a SQL database through GORM: PostgreSQL in
// production, pure-Go SQLite for the embedded default.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
)

// DefaultPrefix is the table-name prefix when none is given.
const DefaultPrefix = "discovery_"

// Store keeps services in SQL tables named with a prefix.
type Store struct {
	db       *gorm.DB
	prefix   string
	postgres bool
	timeout  time.Duration // bound of each call whose context allows longer; 0: none
	// loadTimeout bounds Load and Revisions instead, when set (SetLoadTimeout).
	loadTimeout time.Duration
	// migrateTimeout bounds a migration Migrate runs instead, when set
	// (SetMigrationTimeout).
	migrateTimeout time.Duration
	q              queries
	// steps are the migrations of this release: all of them, but for a
	// test that stands for an older release (export_test.go).
	steps []migration
	// reapedHook, if set (by tests), runs in ReapServices's transaction
	// after its deletions, before the floor is raised.
	reapedHook func()
}

// queries are the statements with the prefix substituted once.
type queries struct {
	bumpService, upsertInstance, renew, renewInstance, deleteInstance, load, services,
	expiredServices, bumpServices, bumpServicesEnd, reapServices, writeLock, schemaVersion, revisions, setConfig, addHistory, trimHistory, history, version,
	setConfigIfNone, setConfigIf, configRevision, putKey, retireKey, reapKeys string
	revokedKey, keyOf, recordRevoked                                                      string
	created, createdMany, emptyServices, markEmpty, reapEmpty, raiseFloor, sweep, sweptAt string
}

var (
	_ core.Store               = (*Store)(nil)
	_ core.RevisionReader      = (*Store)(nil)
	_ core.ConfigStore         = (*Store)(nil)
	_ core.ConfigSwapper       = (*Store)(nil)
	_ core.ConfigVersionReader = (*Store)(nil)
	_ core.KeyStore            = (*Store)(nil)
	_ core.InstanceRenewer     = (*Store)(nil)
	_ core.ServiceReaper       = (*Store)(nil)
)

// New returns a Store on db with tables named prefix+"services" and so on. It
// does not migrate; call Migrate. The caller keeps ownership of db.
//
// Every call ends within timeout (0: none) unless its context ends sooner:
// a database that stops answering (black-holed, as by a partition) would
// otherwise hold a caller with no deadline of its own until TCP gives up,
// minutes later. A call the bound ends fails with a BackendError
// (ErrUnavailable).
func New(db *gorm.DB, prefix string, timeout time.Duration) (*Store, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') || (i == 0 && c >= '0' && c <= '9') {
			return nil, &core.ValidationError{Field: "table prefix", Value: prefix, Reason: "must be lower-case letters, digits and '_', not starting with a digit"}
		}
	}
	if len(prefix) > 40 {
		return nil, &core.ValidationError{Field: "table prefix", Value: prefix, Reason: "longer than 40 bytes"}
	}
	// A handle that can run nothing is the caller's input, not the database
	// failing: as ErrUnavailable, callers waited and retried for good.
	switch {
	case db == nil || db.Config == nil || db.Dialector == nil || db.Statement == nil:
		return nil, &core.ValidationError{Field: "db", Value: "a zero gorm.DB", Reason: "not an opened database: use gorm.Open"}
	case db.DryRun:
		return nil, &core.ValidationError{Field: "db", Value: "DryRun", Reason: "a GORM DryRun handle runs no statement: pass one without DryRun"}
	case db.Error != nil:
		// GORM returns it from every statement made from this handle.
		return nil, &core.ValidationError{Field: "db", Value: db.Error.Error(), Reason: "carries the error of an earlier statement: pass the *gorm.DB gorm.Open returned"}
	}
	name := db.Dialector.Name()
	if name != "postgres" && name != "sqlite" {
		return nil, fmt.Errorf("%w: GORM dialect %q (PostgreSQL and SQLite are supported)", core.ErrUnsupported, name)
	}
	s := &Store{
		db:       db.Session(&gorm.Session{SkipDefaultTransaction: true, NewDB: true}),
		prefix:   prefix,
		postgres: name == "postgres",
		timeout:  timeout,
		steps:    migrations,
	}
	forShare := ""
	if s.postgres {
		forShare = " FOR SHARE"
	}
	s.q = queries{
		bumpService: s.sql(`INSERT INTO {p}services (name, revision, config_revision, updated_at) VALUES (?, 1, 0, ?)
			ON CONFLICT (name) DO UPDATE SET revision = {p}services.revision + 1, updated_at = excluded.updated_at
			RETURNING revision`),
		upsertInstance: s.sql(`INSERT INTO {p}instances
			(service, id, host, port, method, weight, zone, version, tags, metadata, health_path, check_kind, status, registered_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (service, id) DO UPDATE SET host = excluded.host, port = excluded.port, method = excluded.method,
			weight = excluded.weight, zone = excluded.zone, version = excluded.version, tags = excluded.tags,
			metadata = excluded.metadata, health_path = excluded.health_path, check_kind = excluded.check_kind,
			status = excluded.status, expires_at = excluded.expires_at`),
		renew: s.sql(`UPDATE {p}instances SET expires_at = ? WHERE service = ? AND id = ? AND expires_at > ?`),
		// Renew, if the row holds every field upsertInstance wrote: a row
		// restored from an older backup is registered again instead.
		renewInstance: s.sql(`UPDATE {p}instances SET expires_at = ? WHERE service = ? AND id = ? AND expires_at > ?
			AND host = ? AND port = ? AND method = ? AND weight = ? AND zone = ? AND version = ? AND tags = ?
			AND metadata = ? AND health_path = ? AND check_kind = ? AND status = ?`),
		deleteInstance: s.sql(`DELETE FROM {p}instances WHERE service = ? AND id = ?`),
		// One statement, so the revision and the rows come from one snapshot:
		// k=0 the service row, k=1 instances, k=2 keys (kid in id, alg in host,
		// the key in metadata, created and retirement times in the time columns).
		load: s.sql(`SELECT 0 AS k, revision, config, config_revision, '' AS id, '' AS host, 0 AS port, 0 AS method,
			0 AS weight, '' AS zone, '' AS version, '' AS tags, '' AS metadata, '' AS health_path, 0 AS check_kind,
			0 AS status, 0 AS registered_at, 0 AS expires_at FROM {p}services WHERE name = ?
			UNION ALL
			SELECT 1, 0, NULL, 0, id, host, port, method, weight, zone, version, tags, metadata, health_path, check_kind,
			status, registered_at, expires_at FROM {p}instances WHERE service = ?
			UNION ALL
			SELECT 2, 0, NULL, 0, kid, alg, 0, 0, 0, '', '', '', public_key, '', 0, 0, created_at, retires_at
			FROM {p}keys WHERE service = ?
			ORDER BY 1, 5`),
		services: s.sql(`SELECT s.name, s.revision, COUNT(i.id) AS total,
			COALESCE(SUM(CASE WHEN i.expires_at > ? THEN 1 ELSE 0 END), 0) AS live
			FROM {p}services s LEFT JOIN {p}instances i ON i.service = s.name
			GROUP BY s.name, s.revision ORDER BY s.name`),
		// Services with instances whose lease ended, or keys that retired,
		// before the cutoff (retires_at 0: never).
		expiredServices: s.sql(`SELECT service FROM {p}instances WHERE expires_at < ?
			UNION SELECT service FROM {p}keys WHERE retires_at <> 0 AND retires_at < ? ORDER BY 1`),
		// bumpService of many rows: bumpServices writes the rows between the two.
		bumpServices: s.sql(`INSERT INTO {p}services (name, revision, config_revision, updated_at) VALUES `),
		bumpServicesEnd: s.sql(` ON CONFLICT (name) DO UPDATE SET revision = {p}services.revision + 1, updated_at = excluded.updated_at
			RETURNING name, revision`),
		reapServices: s.sql(`DELETE FROM {p}instances WHERE service IN ? AND expires_at < ?`),
		// SQLite: a write that changes nothing takes the database's write
		// lock (of a table every migrated schema has, Migrate's first).
		writeLock:     s.sql(`UPDATE {p}schema_migrations SET version = version WHERE 1 = 0`),
		schemaVersion: s.sql(`SELECT COALESCE(MAX(version), 0) FROM {p}schema_migrations`),
		revisions:     s.sql(`SELECT name, revision FROM {p}services WHERE name IN ?`),
		setConfig: s.sql(`INSERT INTO {p}services (name, revision, config, config_revision, updated_at) VALUES (?, 1, ?, 1, ?)
			ON CONFLICT (name) DO UPDATE SET revision = {p}services.revision + 1, config = excluded.config,
			config_revision = {p}services.config_revision + 1, updated_at = excluded.updated_at
			RETURNING revision, config_revision`),
		// The compare-and-set forms of setConfig: the first creates the
		// service or takes one without a configuration, the second moves
		// one from the configuration revision expected. Neither returns a
		// row when the revision is another.
		setConfigIfNone: s.sql(`INSERT INTO {p}services (name, revision, config, config_revision, updated_at) VALUES (?, 1, ?, 1, ?)
			ON CONFLICT (name) DO UPDATE SET revision = {p}services.revision + 1, config = excluded.config,
			config_revision = {p}services.config_revision + 1, updated_at = excluded.updated_at
			WHERE {p}services.config_revision = 0
			RETURNING revision, config_revision`),
		setConfigIf: s.sql(`UPDATE {p}services SET revision = revision + 1, config = ?, config_revision = config_revision + 1,
			updated_at = ? WHERE name = ? AND config_revision = ?
			RETURNING revision, config_revision`),
		configRevision: s.sql(`SELECT config_revision FROM {p}services WHERE name = ?`),
		addHistory:     s.sql(`INSERT INTO {p}config_history (service, revision, config, created_at) VALUES (?, ?, ?, ?)`),
		trimHistory:    s.sql(`DELETE FROM {p}config_history WHERE service = ? AND revision <= ?`),
		history:        s.sql(`SELECT revision, config, created_at FROM {p}config_history WHERE service = ? ORDER BY revision DESC`),
		version:        s.sql(`SELECT config, created_at FROM {p}config_history WHERE service = ? AND revision = ?`),
		putKey: s.sql(`INSERT INTO {p}keys (service, kid, alg, public_key, created_at, retires_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (service, kid) DO UPDATE SET alg = excluded.alg, public_key = excluded.public_key,
			created_at = excluded.created_at, retires_at = excluded.retires_at`),
		// A retirement only moves earlier (retires_at 0: never).
		retireKey: s.sql(`UPDATE {p}keys SET retires_at = CASE WHEN retires_at <> 0 AND retires_at < ? THEN retires_at ELSE ? END
			WHERE service = ? AND kid = ?`),
		reapKeys: s.sql(`DELETE FROM {p}keys WHERE service IN ? AND retires_at <> 0 AND retires_at < ?`),
		// The IDs of the revoked key a key to publish is, if any: PutKey
		// names its own ID first, else the least in byte order (ORDER BY
		// would follow the database's collation).
		revokedKey: s.sql(`SELECT kid FROM {p}revoked_keys WHERE service = ? AND (kid = ? OR fingerprint = ?)`),
		keyOf:      s.sql(`SELECT public_key FROM {p}keys WHERE service = ? AND kid = ?`),
		recordRevoked: s.sql(`INSERT INTO {p}revoked_keys (service, kid, fingerprint, revoked_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (service, kid) DO NOTHING`),
		// A service just created (at revision 1) moves above the floor (to
		// 1 while no service was ever deleted). On PostgreSQL the floor is
		// read FOR SHARE: a ReapServices round holds its row from its first
		// statement to its commit, so the read waits for a deletion under
		// way and reads the floor it raised, rather than rely on when this
		// statement's snapshot is taken. Read plainly (and in the WHERE
		// too, to skip the write at floor 0), an UPDATE made right after
		// the deletion committed read 0 there, and the service stayed at 1
		// (TestPostgresRegisterWaitingOnAServiceDeletionStartsAboveIt, 15
		// runs in 15). SQLite's write lock orders the two.
		created: s.sql(`UPDATE {p}services SET revision = f.floor + 1 FROM (SELECT floor FROM {p}service_reap WHERE id = 1` + forShare + `) f
			WHERE name = ? AND revision = 1 RETURNING {p}services.revision`),
		// created of many services, by name.
		createdMany: s.sql(`UPDATE {p}services SET revision = f.floor + 1 FROM (SELECT floor FROM {p}service_reap WHERE id = 1` + forShare + `) f
			WHERE name IN ? AND revision = 1 RETURNING {p}services.name, {p}services.revision`),
		emptyServices: s.sql(`SELECT COUNT(*) FROM {p}services WHERE (empty_revision <> revision OR empty_since < ?) AND ` + nothing),
		markEmpty:     s.sql(`UPDATE {p}services SET empty_since = ?, empty_revision = revision WHERE empty_revision <> revision AND ` + nothing),
		// The revision recorded is still the service's: no write since
		// (every write bumps it). On PostgreSQL a write that committed
		// while the DELETE waited for the row makes it look at the row
		// again as committed, and skip it.
		reapEmpty:  s.sql(`DELETE FROM {p}services WHERE empty_revision = revision AND empty_since < ? AND ` + nothing + ` RETURNING name, revision`),
		raiseFloor: s.sql(`UPDATE {p}service_reap SET floor = ? WHERE id = 1 AND floor < ?`),
		// A round's claim: none other within its throttle (a swept_at
		// ahead by more, from a clock far ahead, does not count).
		sweep:   s.sql(`UPDATE {p}service_reap SET swept_at = ? WHERE id = 1 AND (swept_at <= ? OR swept_at > ?)`),
		sweptAt: s.sql(`SELECT swept_at FROM {p}service_reap WHERE id = 1`),
	}
	return s, nil
}

// SetLoadTimeout makes d, not the timeout given to New, the bound of Load
// and Revisions (the reads of lookups and of revalidation) whose context
// allows longer; 0 goes back to New's. Call it before the store is used.
// A Registry's WithLoadTimeout is this bound: bounded by the database
// timeout too, a load it allowed longer (20 s, for a large service on a
// slow database) failed with ErrUnavailable at the database timeout (5 s).
func (s *Store) SetLoadTimeout(d time.Duration) { s.loadTimeout = d }

// SetMigrationTimeout makes d, not the timeout given to New, the bound of
// the migration Migrate runs once it has read that the schema needs one:
// the wait for another process's migration (its lock) and the statements
// that create or upgrade the tables. The read of the schema version
// before it keeps New's timeout, so that a database that does not answer
// fails Migrate as soon as any other call. 0 goes back to New's. Call it
// before the store is used. A Registry's WithMigrationTimeout is this
// bound: bounded by the database timeout, a first start against a busy
// database (300 ms, a timeout chosen for request-path writes) failed on
// the DDL, or on another process's migration under way.
func (s *Store) SetMigrationTimeout(d time.Duration) { s.migrateTimeout = d }

// Prefix returns the table-name prefix.
func (s *Store) Prefix() string { return s.prefix }

// DB returns the GORM handle the store uses (a session of the caller's).
func (s *Store) DB() *gorm.DB { return s.db }

// LoadQuery returns the statement Load runs and its arguments, so that
// benchmarks can time the bare query beside Load.
func (s *Store) LoadQuery(service string) (string, []any) {
	return s.q.load, []any{service, service, service}
}

// tx runs fn in a transaction. On PostgreSQL it is READ COMMITTED whatever
// the database's default: the statements are written for it (a write waits
// for a row's lock, then works on the row as committed), and under
// REPEATABLE READ or SERIALIZABLE a write that waited for another writer of
// its service failed with a serialization error instead.
//
// On PostgreSQL a transaction left idle past its call's deadline also ends
// on the server (idle_in_transaction_session_timeout, for this transaction
// alone): a process cut off in the middle of a write (a partition, a host
// frozen) left it open, and the server, hearing nothing more, held its row
// locks until TCP keepalive gave up, two hours by default, while every
// other process's writes of the services it had locked waited and failed.
// No call of the store's outlives its deadline, so a live caller is never
// ended so. It costs one round trip a write transaction.
func (s *Store) tx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	if !s.postgres {
		return s.db.WithContext(ctx).Transaction(fn)
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return s.db.WithContext(ctx).Transaction(fn, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ms := max(time.Until(dl).Milliseconds()+1, 1) // 0 would turn the timeout off
		if err := tx.Exec(`SELECT set_config('idle_in_transaction_session_timeout', ?, true)`, strconv.FormatInt(ms, 10)).Error; err != nil {
			return err
		}
		return fn(tx)
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
}

// errNoRow aborts a transaction whose target row is missing.
var errNoRow = errors.New("no row")

// bound returns ctx bounded by the store's timeout, unless ctx ends sooner.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return boundBy(ctx, s.timeout)
}

// boundLoad returns ctx bounded as Load and Revisions are: by the load
// timeout if one is set, else as bound does.
func (s *Store) boundLoad(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.loadTimeout > 0 {
		return boundBy(ctx, s.loadTimeout)
	}
	return s.bound(ctx)
}

// boundMigration returns ctx bounded as a migration that runs is: by the
// migration timeout if one is set, else as bound does.
func (s *Store) boundMigration(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.migrateTimeout > 0 {
		return boundBy(ctx, s.migrateTimeout)
	}
	return s.bound(ctx)
}

// boundBy returns ctx bounded by d (0: not bounded), unless ctx ends sooner.
func boundBy(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, d, core.ErrTimeout)
}

// mapErr classifies an error of a call made under ctx (as bound returned
// it): the caller's own cancellation or deadline is returned as it is; every
// other failure is the database's (a BackendError), including a deadline
// whose cause is core.ErrTimeout (the store's bound, or one the Registry
// set for its own calls) and the driver's own timeouts (pgx's
// connect_timeout wraps context.DeadlineExceeded too).
func mapErr(ctx context.Context, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, core.ErrNotFound), errors.Is(err, core.ErrInvalid), errors.Is(err, core.ErrUnsupported),
		errors.Is(err, core.ErrRevoked), errors.Is(err, core.ErrConflict):
		return err
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, core.ErrTimeout):
		err = fmt.Errorf("%w: %w", core.ErrTimeout, err)
	case cause != nil:
		// The caller gave up; the database is not to blame, whatever the
		// driver said: its context's error, or sql.ErrTxDone when
		// database/sql rolled the transaction back before the commit.
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return &core.BackendError{Backend: "database", Op: op, Err: err}
}

func encodeTags(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	b, _ := json.Marshal(tags)
	return string(b)
}

func encodeMetadata(md map[string]string) string {
	if len(md) == 0 {
		return ""
	}
	b, _ := json.Marshal(md)
	return string(b)
}

// Register implements core.Store.
func (s *Store) Register(ctx context.Context, in *core.Instance) (int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var rev int64
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := s.bump(tx, in.Service, &rev); err != nil {
			return err
		}
		return tx.Exec(s.q.upsertInstance, in.Service, in.ID, in.Host, in.Port, int(in.Method), in.Weight, in.Zone,
			in.Version, encodeTags(in.Tags), encodeMetadata(in.Metadata), in.HealthPath, int(in.Check), int(in.Status),
			in.RegisteredAt.UnixNano(), in.ExpiresAt.UnixNano()).Error
	})
	if err != nil {
		return 0, mapErr(ctx, "register", err)
	}
	return rev, nil
}

// Renew implements core.Store.
func (s *Store) Renew(ctx context.Context, service, id string, now, expiresAt time.Time) error {
	return s.renewWith(ctx, service, id, s.q.renew, expiresAt.UnixNano(), service, id, now.UnixNano())
}

// RenewInstance implements core.InstanceRenewer: Renew's one statement,
// which also matches every field Register wrote.
func (s *Store) RenewInstance(ctx context.Context, in *core.Instance, now time.Time) error {
	return s.renewWith(ctx, in.Service, in.ID, s.q.renewInstance, in.ExpiresAt.UnixNano(), in.Service, in.ID, now.UnixNano(),
		in.Host, in.Port, int(in.Method), in.Weight, in.Zone, in.Version, encodeTags(in.Tags), encodeMetadata(in.Metadata),
		in.HealthPath, int(in.Check), int(in.Status))
}

// renewWith runs a renewal statement: ErrNotFound if it changed no row.
func (s *Store) renewWith(ctx context.Context, service, id, stmt string, args ...any) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var n int64
	renew := func(db *gorm.DB) error {
		res := db.Exec(stmt, args...)
		n = res.RowsAffected
		return res.Error
	}
	err := renew(s.db.WithContext(ctx))
	// A lone statement runs at the database's default isolation: under
	// REPEATABLE READ or SERIALIZABLE, one that waited for another writer
	// of the row fails to serialize (40001). Run again it takes a new
	// snapshot and renews the row as committed, or finds it gone. Retried
	// rather than wrapped in a READ COMMITTED transaction, which made
	// every renewal three round trips instead of one.
	for try := 0; s.postgres && err != nil && isSerializationFailure(err) && try < 3 && ctx.Err() == nil; try++ {
		err = renew(s.db.WithContext(ctx))
	}
	if err != nil {
		return mapErr(ctx, "renew", err)
	}
	if n == 0 {
		return &core.NotFoundError{Service: service, Instance: id}
	}
	return nil
}

// Deregister implements core.Store.
func (s *Store) Deregister(ctx context.Context, service, id string) (int64, error) {
	return s.bumpAndChange(ctx, "deregister", service, &core.NotFoundError{Service: service, Instance: id},
		s.q.deleteInstance, service, id)
}

// bumpAndChange bumps a service's revision and runs one statement in a
// transaction; if the statement changes no row, it rolls back and returns
// notFound. The service row is locked first, as Register locks it, so the
// two never deadlock.
func (s *Store) bumpAndChange(ctx context.Context, op, service string, notFound error, stmt string, args ...any) (int64, error) {
	return s.bumpChangeThen(ctx, op, service, notFound, nil, stmt, args...)
}

// bumpChangeThen is bumpAndChange, then runs then (if not nil) in the same
// transaction once the statement has changed a row.
func (s *Store) bumpChangeThen(ctx context.Context, op, service string, notFound error, then func(tx *gorm.DB) error,
	stmt string, args ...any) (int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var rev int64
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := s.bump(tx, service, &rev); err != nil {
			return err
		}
		res := tx.Exec(stmt, args...)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return errNoRow
		}
		if then != nil {
			return then(tx)
		}
		return nil
	})
	if errors.Is(err, errNoRow) {
		return 0, notFound
	}
	if err != nil {
		return 0, mapErr(ctx, op, err)
	}
	return rev, nil
}

// Load implements core.Store.
func (s *Store) Load(ctx context.Context, name string) (*core.Service, error) {
	ctx, cancel := s.boundLoad(ctx)
	defer cancel()
	rows, err := s.db.WithContext(ctx).Raw(s.q.load, name, name, name).Rows()
	if err != nil {
		return nil, mapErr(ctx, "load", err)
	}
	defer rows.Close()
	svc, err := scanService(ctx, name, rows)
	if err != nil {
		return nil, err
	}
	return svc, nil
}

func scanService(ctx context.Context, name string, rows *sql.Rows) (*core.Service, error) {
	var (
		svc *core.Service
		k   int
		r   struct {
			revision, cfgRev, registered, expires int64
			config                                sql.NullString
			id, host, zone, version, tags, md, hp string
			port, method, weight, check, status   int
		}
	)
	for rows.Next() {
		if err := rows.Scan(&k, &r.revision, &r.config, &r.cfgRev, &r.id, &r.host, &r.port, &r.method, &r.weight,
			&r.zone, &r.version, &r.tags, &r.md, &r.hp, &r.check, &r.status, &r.registered, &r.expires); err != nil {
			return nil, mapErr(ctx, "load", err)
		}
		if k == 0 {
			svc = &core.Service{Name: name, Revision: r.revision, ConfigRevision: r.cfgRev}
			if r.config.Valid && r.config.String != "" {
				svc.Config = json.RawMessage(r.config.String)
			}
			continue
		}
		if svc == nil { // cannot happen: the service row sorts first
			return nil, mapErr(ctx, "load", errors.New("instance rows without a service row"))
		}
		if k == 2 {
			key, err := base64.StdEncoding.DecodeString(r.md)
			if err != nil {
				return nil, mapErr(ctx, "load", fmt.Errorf("key %q: %w", r.id, err))
			}
			pk := core.PublicKey{ID: r.id, Algorithm: r.host, Key: key, CreatedAt: time.Unix(0, r.registered)}
			if r.expires != 0 {
				pk.RetiresAt = time.Unix(0, r.expires)
			}
			svc.Keys = append(svc.Keys, pk)
			continue
		}
		in := core.Instance{
			ID: r.id, Service: name, Host: r.host, Port: r.port, Method: core.Method(r.method), Weight: r.weight,
			Zone: r.zone, Version: r.version, HealthPath: r.hp, Check: core.CheckKind(r.check), Status: core.Status(r.status),
			RegisteredAt: time.Unix(0, r.registered), ExpiresAt: time.Unix(0, r.expires),
		}
		if r.tags != "" {
			if err := json.Unmarshal([]byte(r.tags), &in.Tags); err != nil {
				return nil, mapErr(ctx, "load", fmt.Errorf("instance %q tags: %w", r.id, err))
			}
		}
		if r.md != "" {
			if err := json.Unmarshal([]byte(r.md), &in.Metadata); err != nil {
				return nil, mapErr(ctx, "load", fmt.Errorf("instance %q metadata: %w", r.id, err))
			}
		}
		svc.Instances = append(svc.Instances, in)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(ctx, "load", err)
	}
	if svc == nil {
		return nil, &core.NotFoundError{Service: name}
	}
	// ORDER BY sorted the IDs by the database's collation (on PostgreSQL
	// often en_US or ICU, not byte order): the contract is byte order.
	slices.SortFunc(svc.Instances, func(a, b core.Instance) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(svc.Keys, func(a, b core.PublicKey) int { return strings.Compare(a.ID, b.ID) })
	return svc, nil
}

// Services implements core.Store.
func (s *Store) Services(ctx context.Context, now time.Time) ([]core.ServiceInfo, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.db.WithContext(ctx).Raw(s.q.services, now.UnixNano()).Rows()
	if err != nil {
		return nil, mapErr(ctx, "services", err)
	}
	defer rows.Close()
	var out []core.ServiceInfo
	for rows.Next() {
		var (
			info        core.ServiceInfo
			total, live int64
		)
		if err := rows.Scan(&info.Name, &info.Revision, &total, &live); err != nil {
			return nil, mapErr(ctx, "services", err)
		}
		info.Live, info.Expired = int(live), int(total-live)
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(ctx, "services", err)
	}
	// byte order, as Load's instances: ORDER BY followed the collation
	slices.SortFunc(out, func(a, b core.ServiceInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Reap implements core.Store. On PostgreSQL a transaction-scoped advisory lock
// lets one reaper work at a time; the others return at once.
func (s *Store) Reap(ctx context.Context, cutoff time.Time) ([]core.Change, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if !s.postgres {
		// SQLite: most reaps find nothing, and answer so without the write
		// lock taken below (which a read-only database refuses, and which
		// would queue every writer behind every reaper).
		var names []string
		if err := s.db.WithContext(ctx).Raw(s.q.expiredServices, cutoff.UnixNano(), cutoff.UnixNano()).Scan(&names).Error; err != nil {
			return nil, mapErr(ctx, "reap", err)
		}
		if len(names) == 0 {
			return nil, nil
		}
	}
	var changes []core.Change
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if s.postgres {
			var got bool
			if err := tx.Raw(`SELECT pg_try_advisory_xact_lock(`+lockKeySQL+`)`, s.lockKey("reap")).Row().Scan(&got); err != nil {
				return err
			}
			if !got {
				return nil
			}
		} else if err := tx.Exec(s.q.writeLock).Error; err != nil {
			// SQLite: take the write lock before reading. In a deferred
			// transaction (the driver's default), a writer that commits
			// between the read below and the first write makes that write
			// fail with SQLITE_BUSY_SNAPSHOT, which no busy_timeout waits out.
			return err
		}
		var names []string
		if err := tx.Raw(s.q.expiredServices, cutoff.UnixNano(), cutoff.UnixNano()).Scan(&names).Error; err != nil {
			return err
		}
		now := time.Now().UnixNano()
		// Three statements a batch of services, not a service: one by one,
		// a reap of many services (every one has its old instances' rows
		// after a rolling restart) on a database a few milliseconds away
		// outlasted the bound, rolled back whole every round and so never
		// reaped, and held the rows it had bumped, and their writers, until
		// it failed.
		for batch := range slices.Chunk(names, reapBatch) {
			revs, err := s.bumpServices(tx, batch, now)
			if err != nil {
				return err
			}
			if err := tx.Exec(s.q.reapServices, batch, cutoff.UnixNano()).Error; err != nil {
				return err
			}
			if err := tx.Exec(s.q.reapKeys, batch, cutoff.UnixNano()).Error; err != nil {
				return err
			}
			for _, name := range batch {
				rev, ok := revs[name]
				if !ok {
					return fmt.Errorf("service %q: no revision returned by its bump", name)
				}
				changes = append(changes, core.Change{Service: name, Revision: rev})
			}
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(ctx, "reap", err)
	}
	return changes, nil
}

// reapBatch is how many services a reap's statements name at most: two
// parameters each in bumpServices, well under SQLite's 32766 and
// PostgreSQL's 65535.
const reapBatch = 500

// bumpServices bumps the revisions of names in one statement, which locks
// their rows in the order given (Reap's, name order: the service rows
// before the instance and key rows, as Register and PutKey lock them),
// and returns the new revisions by name.
func (s *Store) bumpServices(tx *gorm.DB, names []string, now int64) (map[string]int64, error) {
	var b strings.Builder
	b.WriteString(s.q.bumpServices)
	args := make([]any, 0, 2*len(names))
	for i, name := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, 1, 0, ?)")
		args = append(args, name, now)
	}
	b.WriteString(s.q.bumpServicesEnd)
	rows, err := tx.Raw(b.String(), args...).Rows()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	revs := make(map[string]int64, len(names))
	for rows.Next() {
		var (
			name string
			rev  int64
		)
		if err := rows.Scan(&name, &rev); err != nil {
			return nil, err
		}
		revs[name] = rev
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close() // before the next statement, on the same connection
	// Created (instance rows without their service's row): moved above
	// the floor, as created moves one, in one statement.
	var made []string
	for name, rev := range revs {
		if rev == 1 {
			made = append(made, name)
		}
	}
	if len(made) == 0 {
		return revs, nil
	}
	moved, err := tx.Raw(s.q.createdMany, made).Rows()
	if err != nil {
		return nil, err
	}
	defer moved.Close()
	for moved.Next() {
		var (
			name string
			rev  int64
		)
		if err := moved.Scan(&name, &rev); err != nil {
			return nil, err
		}
		revs[name] = rev
	}
	return revs, moved.Err()
}

// Revisions implements core.RevisionReader.
func (s *Store) Revisions(ctx context.Context, names []string) (map[string]int64, error) {
	ctx, cancel := s.boundLoad(ctx)
	defer cancel()
	out := make(map[string]int64, len(names))
	for chunk := range slices.Chunk(names, 500) {
		rows, err := s.db.WithContext(ctx).Raw(s.q.revisions, chunk).Rows()
		if err != nil {
			return nil, mapErr(ctx, "revisions", err)
		}
		for rows.Next() {
			var (
				n   string
				rev int64
			)
			if err := rows.Scan(&n, &rev); err != nil {
				rows.Close()
				return nil, mapErr(ctx, "revisions", err)
			}
			out[n] = rev
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, mapErr(ctx, "revisions", err)
		}
	}
	return out, nil
}

// SetConfig implements core.ConfigStore.
func (s *Store) SetConfig(ctx context.Context, name string, doc []byte, at time.Time, keep int) (int64, int64, error) {
	return s.writeConfig(ctx, name, doc, at, keep, -1, func(tx *gorm.DB) *sql.Row {
		return tx.Raw(s.q.setConfig, name, string(doc), at.UnixNano()).Row()
	})
}

// SetConfigIf implements core.ConfigSwapper.
func (s *Store) SetConfigIf(ctx context.Context, name string, doc []byte, at time.Time, keep int, want int64) (int64, int64, error) {
	if want < 0 {
		return 0, 0, &core.ValidationError{Field: "config revision", Value: strconv.FormatInt(want, 10), Reason: "must not be negative"}
	}
	return s.writeConfig(ctx, name, doc, at, keep, want, func(tx *gorm.DB) *sql.Row {
		if want == 0 {
			return tx.Raw(s.q.setConfigIfNone, name, string(doc), at.UnixNano()).Row()
		}
		return tx.Raw(s.q.setConfigIf, string(doc), at.UnixNano(), name, want).Row()
	})
}

// writeConfig stores a configuration in one transaction: write, the
// statement that moves the service row, returns its revision and
// configuration revision; the version is added to the history, which is
// trimmed to keep. With want 0 or more (a compare-and-set), a write that
// returns no row found another configuration revision: a
// *core.ConfigConflictError, nothing written.
func (s *Store) writeConfig(ctx context.Context, name string, doc []byte, at time.Time, keep int, want int64, write func(*gorm.DB) *sql.Row) (int64, int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var rev, cfgRev int64
	err := s.tx(ctx, func(tx *gorm.DB) error {
		err := write(tx).Scan(&rev, &cfgRev)
		if errors.Is(err, sql.ErrNoRows) && want >= 0 {
			var have int64
			if err := tx.Raw(s.q.configRevision, name).Row().Scan(&have); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			return &core.ConfigConflictError{Service: name, Want: want, Have: have}
		}
		if err != nil {
			return err
		}
		if rev, err = s.created(tx, name, rev); err != nil {
			return err
		}
		if err := tx.Exec(s.q.addHistory, name, cfgRev, string(doc), at.UnixNano()).Error; err != nil {
			return err
		}
		if keep > 0 {
			return tx.Exec(s.q.trimHistory, name, cfgRev-int64(keep)).Error
		}
		return nil
	})
	if err != nil {
		return 0, 0, mapErr(ctx, "set config", err)
	}
	return rev, cfgRev, nil
}

// ConfigHistory implements core.ConfigStore.
func (s *Store) ConfigHistory(ctx context.Context, name string) ([]core.ConfigVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.db.WithContext(ctx).Raw(s.q.history, name).Rows()
	if err != nil {
		return nil, mapErr(ctx, "config history", err)
	}
	defer rows.Close()
	var out []core.ConfigVersion
	for rows.Next() {
		var (
			v  core.ConfigVersion
			c  string
			at int64
		)
		if err := rows.Scan(&v.Revision, &c, &at); err != nil {
			return nil, mapErr(ctx, "config history", err)
		}
		v.Config, v.CreatedAt = []byte(c), time.Unix(0, at)
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(ctx, "config history", err)
	}
	if len(out) == 0 {
		return nil, &core.NotFoundError{Service: name}
	}
	return out, nil
}

// ConfigVersion implements core.ConfigVersionReader.
func (s *Store) ConfigVersion(ctx context.Context, name string, rev int64) (core.ConfigVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var (
		c  string
		at int64
	)
	err := s.db.WithContext(ctx).Raw(s.q.version, name, rev).Row().Scan(&c, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return core.ConfigVersion{}, &core.NotFoundError{Service: name}
	}
	if err != nil {
		return core.ConfigVersion{}, mapErr(ctx, "config version", err)
	}
	return core.ConfigVersion{Revision: rev, Config: []byte(c), CreatedAt: time.Unix(0, at)}, nil
}

// PutKey implements core.KeyStore.
func (s *Store) PutKey(ctx context.Context, name string, key core.PublicKey) (int64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var rev int64
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := s.bump(tx, name, &rev); err != nil {
			return err
		}
		// After the service row's bump, which a revocation takes first too:
		// a revocation committing meanwhile is waited for, and seen.
		var revoked []string
		if err := tx.Raw(s.q.revokedKey, name, key.ID, core.KeyFingerprint(key.Key)).Scan(&revoked).Error; err != nil {
			return err
		}
		if len(revoked) > 0 {
			id := slices.Min(revoked)
			if slices.Contains(revoked, key.ID) {
				id = key.ID
			}
			return &core.RevokedKeyError{Service: name, Key: key.ID, RevokedID: id}
		}
		var retires int64
		if !key.RetiresAt.IsZero() {
			retires = key.RetiresAt.UnixNano()
		}
		return tx.Exec(s.q.putKey, name, key.ID, key.Algorithm, base64.StdEncoding.EncodeToString(key.Key),
			key.CreatedAt.UnixNano(), retires).Error
	})
	if err != nil {
		return 0, mapErr(ctx, "put key", err)
	}
	return rev, nil
}

// RetireKey implements core.KeyStore.
func (s *Store) RetireKey(ctx context.Context, name, kid string, at time.Time) (int64, error) {
	return s.bumpAndChange(ctx, "retire key", name, &core.NotFoundError{Service: name, Key: kid},
		s.q.retireKey, at.UnixNano(), at.UnixNano(), name, kid)
}

// RevokeKey implements core.KeyStore: RetireKey, and the revocation
// recorded in the same transaction.
func (s *Store) RevokeKey(ctx context.Context, name, kid string, at time.Time) (int64, error) {
	record := func(tx *gorm.DB) error {
		var pub string
		if err := tx.Raw(s.q.keyOf, name, kid).Row().Scan(&pub); err != nil {
			return err
		}
		der, err := base64.StdEncoding.DecodeString(pub)
		if err != nil {
			return fmt.Errorf("key %q of %q: stored key is not base64: %w", kid, name, err)
		}
		return tx.Exec(s.q.recordRevoked, name, kid, core.KeyFingerprint(der), time.Now().UnixNano()).Error
	}
	return s.bumpChangeThen(ctx, "revoke key", name, &core.NotFoundError{Service: name, Key: kid}, record,
		s.q.retireKey, at.UnixNano(), at.UnixNano(), name, kid)
}

// isSerializationFailure reports whether err is PostgreSQL's SQLSTATE 40001.
func isSerializationFailure(err error) bool { return sqlState(err) == "40001" }

// sqlState returns the SQLSTATE of err, "" if it has none: read through
// SQLState(), which pgx's *pgconn.PgError and lib/pq's *pq.Error both
// have, so that a database the user reaches through either is classified
// alike.
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}
