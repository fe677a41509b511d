package discovery

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
)

// Option configures a Registry. Options are applied in order over the
// defaults, then validated together by New.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// Defaults, with where each comes from.
const (
	// DefaultLeaseTTL is the lease of a registration; it is renewed every
	// TTL/3 (etcd's client keeps the same ratio).
	DefaultLeaseTTL = 15 * time.Second
	// DefaultCacheSize bounds the L1 cache, in services (the seed's L1 held
	// 1,000; this is ten times that at a few KiB each).
	DefaultCacheSize = 10000
	// DefaultFresh is how long an L1 entry is fresh (RFC 5861 terms).
	DefaultFresh = 5 * time.Second
	// DefaultStaleWhileRevalidate is how long past fresh an entry is served
	// while one background refresh runs.
	DefaultStaleWhileRevalidate = 30 * time.Second
	// DefaultStaleIfError is how long past fresh an entry is served when
	// every lower layer fails.
	DefaultStaleIfError = 5 * time.Minute
	// DefaultCacheJitter spreads each L1 entry's freshness window by up to
	// +-10%, so that processes which took a snapshot at the same moment (a
	// change message reaches them all at once) do not all refresh it at the
	// same moment either.
	DefaultCacheJitter = 0.1
	// MaxCacheJitter bounds WithCacheJitter.
	MaxCacheJitter = 0.5
	// DefaultNegativeTTL is how long "no such service" is remembered.
	DefaultNegativeTTL = time.Second
	// DefaultL2TTL is the Redis expiry of a snapshot, jittered +-10% (the
	// seed's 300 s).
	DefaultL2TTL = 300 * time.Second
	// DefaultRedisTimeout bounds every Redis call of the cache.
	DefaultRedisTimeout = 250 * time.Millisecond
	// MaxDuration bounds every duration option (a year): longer ones
	// overflow once added to a time or doubled.
	MaxDuration = 365 * 24 * time.Hour
	// MaxCacheSize bounds WithCacheSize: ristretto sizes its admission
	// counters at ten per entry, so a billion services ran New out of memory.
	MaxCacheSize = 10_000_000
	// DefaultLoadTimeout bounds a database load of a lookup.
	DefaultLoadTimeout = 5 * time.Second
	// DefaultDatabaseTimeout bounds every other database call.
	DefaultDatabaseTimeout = 5 * time.Second
	// DefaultMigrationTimeout bounds a schema migration that has work to
	// do, the wait for another process's migration included (New, Migrate).
	// A first start's statements (every version) took 0.11-0.39 s on
	// this repository's PostgreSQL (loopback, a shared host), past a
	// 300 ms database timeout; the minute is for waiting: on another
	// process's migration, itself bounded by the same minute (a waiter
	// started later outlasts it, and the server ends a frozen holder's
	// transaction at its bound), and on a busy database's locks. It sits
	// among the migration tools' waits for their lock: golang-migrate's
	// 15 s, Liquibase's 5 min, goose's hour.
	DefaultMigrationTimeout = time.Minute
	// DefaultReapInterval is how often expired rows are looked for.
	DefaultReapInterval = 30 * time.Second
	// MinReapInterval bounds WithReaper's interval from below: readers
	// filter expired rows on their own, so reaping is never urgent, and a
	// shorter interval (WithReaper(30, ...), seconds forgotten) made every
	// process reap in a loop, tens of thousands of times a second.
	MinReapInterval = time.Second
	// DefaultReapAfter is how long after its lease ended a row is deleted.
	DefaultReapAfter = 2 * time.Minute
	// DefaultCloseTimeout bounds the deregistrations Close makes.
	DefaultCloseTimeout = 5 * time.Second
	// DefaultNamespace prefixes tables ("discovery_services") and Redis keys.
	DefaultNamespace = "discovery"
)

type options struct {
	db        *gorm.DB
	rdb       redis.UniversalClient
	redisCmd  redis.UniversalClient // rdb as used: bounded by redisTO (redisbound.go); set by validate
	nilOpt    firstNil              // the first of WithDB, WithRedis, WithStore, ... given nil
	store     core.Store
	log       *zap.Logger
	clock     core.Clock
	namespace string
	migrate   bool

	leaseTTL    time.Duration
	cacheSize   int
	fresh       time.Duration
	jitter      float64
	swr         time.Duration
	sie         time.Duration
	negativeTTL time.Duration
	l2TTL       time.Duration
	redisTO     time.Duration
	loadTO      time.Duration
	dbTO        time.Duration
	migrateTO   time.Duration
	reapEvery   time.Duration
	reapAfter   time.Duration
	reapSet     bool
	// serviceReap is how long a service left with nothing stays before
	// the reaper deletes it (0: for good); the reap delay unless set.
	serviceReap    time.Duration
	serviceReapSet bool
	closeTO        time.Duration
	health         healthOptions // health_options.go

	strategy        Strategy
	serviceStrategy map[string]Strategy
	minScore        float64
	panicThreshold  float64
	failClosed      bool

	preserveFraction float64
	suspectGrace     time.Duration
	graceSet         bool

	// seams holds the TokenSource and Authorizer (auth.go); a pointer, so
	// that they can be set after New too.
	seams *authSeams

	// metrics is where WithMetrics registers (metrics.go); nil: nowhere.
	metrics prometheus.Registerer

	// configuration, watching and draining (config*.go, drain.go)
	validators    map[string]func(json.RawMessage) error
	configKeep    int
	notifyTO      time.Duration
	notifyTries   int
	notifyBackoff time.Duration
	propagation   time.Duration
	closeDrain    time.Duration
}

func defaultOptions() options {
	return options{
		log: zap.NewNop(), clock: core.RealClock{}, namespace: DefaultNamespace, migrate: true,
		leaseTTL: DefaultLeaseTTL, cacheSize: DefaultCacheSize,
		fresh: DefaultFresh, swr: DefaultStaleWhileRevalidate, sie: DefaultStaleIfError, negativeTTL: DefaultNegativeTTL,
		jitter: DefaultCacheJitter,
		l2TTL:  DefaultL2TTL, redisTO: DefaultRedisTimeout, loadTO: DefaultLoadTimeout, dbTO: DefaultDatabaseTimeout,
		migrateTO: DefaultMigrationTimeout,
		reapEvery: DefaultReapInterval, reapAfter: DefaultReapAfter, closeTO: DefaultCloseTimeout,
		strategy: StrategyP2CEWMA, minScore: DefaultMinScore, panicThreshold: DefaultPanicThreshold,
		preserveFraction: DefaultSelfPreservation,
		seams:            new(authSeams),
		health:           defaultHealthOptions(),
		configKeep:       DefaultConfigHistory, notifyTO: DefaultConfigNotifyTimeout, notifyTries: DefaultConfigNotifyAttempts,
		notifyBackoff: DefaultConfigNotifyBackoff, propagation: DefaultPropagationDelay, closeDrain: DefaultCloseDrain,
	}
}

func optErr(name, value, reason string) error {
	return &core.ValidationError{Field: "option " + name, Value: value, Reason: reason}
}

// noteNil remembers the first backend option given nil, for validate.
func (o *options) noteNil(name string, isNil bool) { o.nilOpt.note(name, isNil) }

// firstNil is the name of the first option given nil, of the Registry's or a
// registration's: a nil is refused, not taken for the option left out.
type firstNil string

func (f *firstNil) note(name string, isNil bool) {
	if isNil && *f == "" {
		*f = firstNil(name)
	}
}

func (o *options) validate() error {
	if o.nilOpt != "" {
		return optErr(string(o.nilOpt), "nil", "must not be nil; leave the option out for none")
	}
	// Bounds first: the derived values below double a lease, and the
	// clocks add durations to now; past MaxDuration the sums overflow (a
	// 200-year lease was blamed on WithReaper, a health interval of
	// MaxInt64 checked in a tight loop).
	for _, p := range []struct {
		name     string
		d        time.Duration
		positive bool
	}{
		{"WithLeaseTTL", o.leaseTTL, false}, {"WithCacheFreshness fresh", o.fresh, true},
		{"WithCacheFreshness", o.swr, false}, {"WithCacheFreshness", o.sie, false},
		{"WithNegativeTTL", o.negativeTTL, true}, {"WithL2TTL", o.l2TTL, true}, {"WithRedisTimeout", o.redisTO, true},
		{"WithLoadTimeout", o.loadTO, true}, {"WithDatabaseTimeout", o.dbTO, true}, {"WithCloseTimeout", o.closeTO, true},
		{"WithMigrationTimeout", o.migrateTO, true},
		{"WithReaper", o.reapEvery, false}, {"WithReaper", o.reapAfter, false}, {"WithServiceReap", o.serviceReap, false},
		{"WithSelfPreservation", o.suspectGrace, false},
		{"WithPropagationDelay", o.propagation, false}, {"WithCloseDrain", o.closeDrain, false},
		{"WithConfigNotifyTimeout", o.notifyTO, false}, {"WithConfigNotifyRetries", o.notifyBackoff, false},
	} {
		switch {
		case p.d > MaxDuration:
			return optErr(p.name, p.d.String(), "must be at most "+MaxDuration.String())
		case p.positive && p.d <= 0:
			return optErr(p.name, p.d.String(), "must be positive")
		}
	}
	if !o.graceSet {
		o.suspectGrace = 2 * o.leaseTTL
	}
	// The default follows a longer lease: it keeps the rows of a
	// self-preservation group until the group's grace ends, which counts
	// from its last lapse, up to a renewal window (groupWindow) after its
	// first. Two lease TTLs, the grace itself, reaped the first lapses of a
	// group (alive, partitioned) up to half a lease TTL before then, with
	// any lease of a minute or more.
	if keep := o.suspectGrace + o.leaseTTL/2; !o.reapSet && o.reapAfter < keep {
		o.reapAfter = keep
	}
	if !o.serviceReapSet {
		o.serviceReap = o.reapAfter
	}
	switch {
	case o.db != nil && o.store != nil:
		return optErr("WithDB", "", "WithDB and WithStore are exclusive")
	case o.db != nil && (o.db.Config == nil || o.db.Statement == nil):
		// a &gorm.DB{} panicked deep in New, leaving New's goroutines behind
		return optErr("WithDB", "a zero gorm.DB", "not an opened database: use gorm.Open")
	case o.db != nil && inTransaction(o.db):
		// Every statement ran in the caller's transaction, unseen by other
		// processes until it committed, and failed (sql.ErrTxDone) for good
		// once it ended.
		return optErr("WithDB", "a transaction", "the Registry outlives the transaction (db.Begin(), or a db.Transaction callback's): pass the *gorm.DB gorm.Open returned")
	case o.db != nil && onOneConn(o.db):
		// As a transaction: every call failed for good once the
		// connection went back to the pool.
		return optErr("WithDB", "one connection", "the Registry outlives the connection db.Connection lends its callback: pass the *gorm.DB gorm.Open returned")
	case o.log == nil:
		return optErr("WithLogger", "nil", "must not be nil (use zap.NewNop)")
	case core.IsNil(o.clock):
		return optErr("WithClock", "nil", "must not be nil")
	case core.IsHollow(o.store):
		// a zero discoverytest.Backend panicked in New
		return optErr("WithStore", fmt.Sprintf("a zero %T", o.store), "holds no store: make it with its constructor (discoverytest.NewBackend)")
	case core.IsHollow(o.clock):
		return optErr("WithClock", fmt.Sprintf("a zero %T", o.clock), "holds no clock: make it with its constructor (discoverytest.NewClock)")
	case o.leaseTTL < 3*time.Second:
		return optErr("WithLeaseTTL", o.leaseTTL.String(), "must be at least 3s (renewals run every TTL/3)")
	case o.cacheSize < 1 || o.cacheSize > MaxCacheSize:
		return optErr("WithCacheSize", strconv.Itoa(o.cacheSize), "must be 1.."+strconv.Itoa(MaxCacheSize))
	case !(o.jitter >= 0 && o.jitter <= MaxCacheJitter): // NaN too
		return optErr("WithCacheJitter", strconv.FormatFloat(o.jitter, 'g', -1, 64), "must be 0..0.5")
	case o.swr < 0 || o.sie < 0:
		return optErr("WithCacheFreshness", o.swr.String()+"/"+o.sie.String(), "stale windows must not be negative")
	case o.reapEvery < 0:
		return optErr("WithReaper", o.reapEvery.String(), "interval must not be negative (0 disables)")
	case o.reapEvery > 0 && o.reapEvery < MinReapInterval:
		return optErr("WithReaper", o.reapEvery.String(), "interval must be at least "+MinReapInterval.String()+" (0 disables)")
	case o.reapAfter < 0:
		return optErr("WithReaper", o.reapAfter.String(), "delay must not be negative")
	case o.reapEvery > 0 && o.reapAfter < o.leaseTTL:
		return optErr("WithReaper", o.reapAfter.String(), "must keep rows at least one lease TTL after expiry")
	case o.serviceReap < 0:
		return optErr("WithServiceReap", o.serviceReap.String(), "must not be negative (0 keeps such services for good)")
	case o.strategy > StrategyRandom:
		return optErr("WithStrategy", o.strategy.String(), "unknown strategy")
	case !(o.minScore >= 0 && o.minScore < 1):
		return optErr("WithMinScore", strconv.FormatFloat(o.minScore, 'g', -1, 64), "must be in [0, 1)")
	// Each argument is judged on its own, with its own value: one error for
	// both gave a negative grace with the valid fraction as its value.
	case !(o.preserveFraction >= 0 && o.preserveFraction < 1):
		return optErr("WithSelfPreservation", strconv.FormatFloat(o.preserveFraction, 'g', -1, 64), "fraction must be in [0, 1) (0 turns it off)")
	case o.suspectGrace < 0:
		return optErr("WithSelfPreservation", o.suspectGrace.String(), "grace must not be negative")
	// A self-preservation group's grace counts from its last lapse, up to
	// a renewal window (groupWindow, half a lease TTL) after its first: the
	// reaper keeps rows that long past the grace. A delay of the grace
	// alone (taken as given) deleted the group's first lapses, alive
	// behind a partition, up to half a lease TTL before their grace ended.
	case o.reapEvery > 0 && o.suspectGrace+o.leaseTTL/2 > o.reapAfter && !o.graceSet:
		return optErr("WithReaper", o.reapAfter.String(), "must keep rows at least the self-preservation grace, two lease TTLs, and half a lease TTL ("+
			(o.suspectGrace+o.leaseTTL/2).String()+"), unless WithSelfPreservation sets a shorter grace")
	case o.reapEvery > 0 && o.suspectGrace+o.leaseTTL/2 > o.reapAfter:
		return optErr("WithSelfPreservation", o.suspectGrace.String(), "grace and half a lease TTL ("+
			(o.suspectGrace+o.leaseTTL/2).String()+") must not outlast the reaper's delay (WithReaper "+o.reapAfter.String()+")")
	case !(o.panicThreshold >= 0 && o.panicThreshold <= 1):
		return optErr("WithPanicThreshold", strconv.FormatFloat(o.panicThreshold, 'g', -1, 64), "must be in [0, 1]")
	}
	for name, s := range o.serviceStrategy {
		if err := core.ValidateServiceName(name); err != nil {
			return optErr("WithServiceStrategy", name, "not a valid service name")
		}
		if s > StrategyRandom {
			return optErr("WithServiceStrategy", s.String(), "unknown strategy")
		}
	}
	if err := o.health.validate(); err != nil {
		return err
	}
	if err := o.validateConfigOptions(); err != nil {
		return err
	}
	if err := validNamespace(o.namespace); err != nil {
		return err
	}
	if o.rdb != nil { // last: the only check that builds something
		cmd, err := redisCommands(o.rdb, o.redisTO)
		if err != nil {
			return err
		}
		o.redisCmd = cmd
	}
	return nil
}

func validNamespace(ns string) error {
	if ns == "" || len(ns) > 32 {
		return optErr("WithNamespace", ns, "must be 1 to 32 bytes")
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || c >= '0' && c <= '9' && i > 0) {
			return optErr("WithNamespace", ns, "must be lower-case letters, digits and '_', not starting with a digit")
		}
	}
	return nil
}

// WithDB makes a SQL database, through GORM, the source of truth (L3).
// PostgreSQL in production; SQLite (github.com/glebarez/sqlite, pure Go) for
// an embedded one. New migrates the schema unless WithoutMigration is given.
// The Registry never closes db.
//
// An in-memory SQLite database must be shared by the pool's connections:
// sqlite.Open("file::memory:?cache=shared"). With ":memory:" each
// connection opens a database of its own, empty: New migrates one of them,
// and writes on another fail ("no such table", ErrUnavailable).
//
// A nil db is an error from New (ErrInvalid), not the in-memory store: a
// process that silently kept its registrations to itself would share them
// with nobody.
//
// The Registry uses db's connection pool, dialect, logger and settings, but
// none of its statement state (Where, Table, Scopes, a context). A db
// inside a transaction (db.Begin()) or on one connection (db.Connection),
// in DryRun mode, or carrying the error of an earlier statement is refused
// (ErrInvalid).
func WithDB(db *gorm.DB) Option {
	return optionFunc(func(o *options) { o.db = db; o.noteNil("WithDB", db == nil) })
}

// WithRedis adds the shared L2 cache and change fan-out: a single Redis,
// Sentinel or Cluster client. The Registry never closes it. It needs a
// source of truth that the processes share too, WithDB (or WithStore): New
// refuses it without one (ErrInvalid), as each process would then keep its
// registrations in its own memory and the others would see them only while
// a snapshot in Redis lasted.
//
// Every command is bounded by WithRedisTimeout. go-redis lets a context's
// deadline bound a command only with ContextTimeoutEnabled; a *redis.Client
// without it is used through WithTimeout (a clone sharing its connections,
// not its hooks), and New refuses a Cluster or Ring client without it whose
// read or write timeout is longer than WithRedisTimeout (ErrInvalid, saying
// what to set).
//
// New also refuses (ErrInvalid, quoting Redis's answer) a client that Redis
// refuses what the Registry needs: a wrong password, or an ACL user without
// SUBSCRIBE, PUBLISH, EVALSHA and EVAL, or without the keys and channels
// that begin with the namespace and ":", and a read-only replica. A Redis that does not answer is no
// error: the Registry starts without it and uses it once it is back.
func WithRedis(rdb redis.UniversalClient) Option {
	return optionFunc(func(o *options) { o.rdb = rdb; o.noteNil("WithRedis", core.IsNil(rdb)) })
}

// WithStore makes any Store the source of truth, such as the in-memory
// backend of discoverytest. Without WithStore or WithDB a Registry keeps
// everything in its own memory.
func WithStore(s Store) Option {
	return optionFunc(func(o *options) { o.store = s; o.noteNil("WithStore", core.IsNil(s)) })
}

// WithLogger sends state changes (Redis or the database lost and back,
// leases lost, instances changing health) to l. The default logs nothing;
// nothing is logged per lookup.
func WithLogger(l *zap.Logger) Option { return optionFunc(func(o *options) { o.log = l }) }

// WithClock replaces the system clock, for tests (see discoverytest.NewClock).
func WithClock(c Clock) Option { return optionFunc(func(o *options) { o.clock = c }) }

// WithNamespace names this deployment's tables (ns+"_services", ...) and
// Redis keys and channels (ns+":..."), so several may share one database
// and one Redis. Pub/sub channels are not per Redis database, so a client of
// a database other than 0 puts its number in them: two deployments under
// one namespace in databases 0 and 1 hear only their own changes.
// 1 to 32 bytes of lower-case letters, digits and '_', not starting with a
// digit (so that every table's name is a plain SQL identifier, within
// PostgreSQL's 63 bytes); "discovery" by default. A namespace
// that is another's followed by "_revoked" cannot share its database: its
// keys table is the other's revoked keys table, and the second to migrate
// fails (ErrUnsupported, naming the clash).
func WithNamespace(ns string) Option { return optionFunc(func(o *options) { o.namespace = ns }) }

// WithoutMigration stops New from creating or upgrading the schema, for a
// deployment whose services' database user may not change it: run Migrate
// (a job with the same namespace) first. New then checks that the schema is
// the one this release needs, and returns an error matching ErrUnsupported
// if it is not, or if the user may not read ns+"_schema_migrations": the
// user needs SELECT on it, and SELECT, INSERT, UPDATE and DELETE on the
// namespace's other tables.
func WithoutMigration() Option { return optionFunc(func(o *options) { o.migrate = false }) }

// WithLeaseTTL sets the lease of registrations (15 s by default, at least
// 3 s). Registrations renew every TTL/3; an instance whose lease ends is
// invisible to every reader at once.
func WithLeaseTTL(d time.Duration) Option { return optionFunc(func(o *options) { o.leaseTTL = d }) }

// WithCacheSize bounds the L1 cache, in services (10,000 by default). A
// burst of new services can take it past the bound for as long as its
// admission policy, which runs in the background, takes to catch up.
func WithCacheSize(services int) Option {
	return optionFunc(func(o *options) { o.cacheSize = services })
}

// WithCacheFreshness sets how long an L1 entry is fresh (5 s, spread +-10%
// for each entry by WithCacheJitter), how long after that it is served
// while one background refresh runs (30 s), and how long after that it is
// served when every lower layer fails (5 min). The
// first two never reach past the earliest lease in the entry: an instance
// whose lease has ended is never served while the database can be asked.
func WithCacheFreshness(fresh, staleWhileRevalidate, staleIfError time.Duration) Option {
	return optionFunc(func(o *options) { o.fresh, o.swr, o.sie = fresh, staleWhileRevalidate, staleIfError })
}

// WithCacheJitter sets how far each L1 entry's freshness window is spread,
// as a fraction of it (0.1 by default: a 5 s window lasts 4.5-5.5 s, drawn
// for each entry). The stale windows follow the end of the drawn one. 0
// makes every window exactly WithCacheFreshness's; at most 0.5.
func WithCacheJitter(fraction float64) Option {
	return optionFunc(func(o *options) { o.jitter = fraction })
}

// longestFresh is the longest an L1 entry stays fresh: the freshness
// window and its jitter (newEntry).
func (o *options) longestFresh() time.Duration {
	return o.fresh + time.Duration(float64(o.fresh)*o.jitter)
}

// WithNegativeTTL sets how long a lookup of an unknown service is remembered
// (1 s). A registration of that name clears it at once in this process, and
// in every other one that hears of changes (through Redis, or a shared
// discoverytest backend); without either, others forget it within the TTL.
// A watched name (Watch) is read again once the freshness window has passed,
// however long the TTL, as Watch promises for a lost message.
func WithNegativeTTL(d time.Duration) Option {
	return optionFunc(func(o *options) { o.negativeTTL = d })
}

// WithL2TTL sets the Redis expiry of snapshots (300 s, jittered +-10%).
func WithL2TTL(d time.Duration) Option { return optionFunc(func(o *options) { o.l2TTL = d }) }

// WithRedisTimeout bounds each Redis call (250 ms). A failed call takes Redis
// out of the read path until a background probe succeeds.
func WithRedisTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.redisTO = d }) }

// WithLoadTimeout bounds each database load of a lookup (5 s), and the
// reads of revalidation, whether it is shorter or longer than
// WithDatabaseTimeout.
func WithLoadTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.loadTO = d }) }

// WithDatabaseTimeout bounds every other call to the database that WithDB
// gave (5 s): Register, Update, Deregister, renewals, configuration, keys,
// listings and reaping, whenever the caller's context allows longer, and
// New's read of the schema version (whether there is a migration to run,
// or with WithoutMigration, whether the schema is the one it needs) and
// warm-up; a migration that runs has WithMigrationTimeout. A
// database that stops answering (black-holed, as by a partition) would
// otherwise hold a caller without a deadline of its own until TCP gives up,
// minutes later. A call it ends fails with ErrUnavailable.
func WithDatabaseTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.dbTO = d }) }

// WithMigrationTimeout bounds a schema migration that has work to do (1
// min), in New (unless WithoutMigration) and in Migrate, whenever the
// caller's context allows longer: the wait for the migration lock another
// process's migration holds, and the statements that create or upgrade
// the tables. Its first step, the read of the schema version, is a call
// like any other, bounded by WithDatabaseTimeout: a schema already
// current costs that read alone, and a database that does not answer
// (down, black-holed) fails New within the database timeout, not this
// one. So a short database timeout, chosen for request-path writes
// (300 ms), does not fail a first start, or an upgrade, on a busy
// database or behind another process's migration. A migration it ends
// fails with ErrUnavailable, saying so when it was waiting for another
// process's migration lock (PostgreSQL), and changes nothing: a retry
// starts over. On PostgreSQL, a statement of the migration that waits for
// a table's lock (an upgrade's ALTER TABLE behind another process's long
// transaction) holds up every later statement on that table while it
// waits, so each such wait ends at WithDatabaseTimeout (lock_timeout) and
// the migration tries again, within this bound: the others' lookups and
// writes wait at most about the database timeout, not this one. New
// refuses a value that is not positive (ErrInvalid).
func WithMigrationTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.migrateTO = d })
}

// WithReaper sets how often expired rows are deleted (every 30 s) and how
// long after their lease ended (2 min, or the self-preservation grace and
// half a lease TTL if longer: until a self-preservation group's grace has
// ended, see WithSelfPreservation); a
// published key is deleted as long after it retired. With the reaper on, a
// delay shorter than the grace and half a lease TTL (37.5 s by default) is
// refused by New (ErrInvalid): the grace counts from a group's last lapse,
// up to half a lease TTL after its first, and the reaper would delete the
// first ones, alive behind a partition, before it ended. One reaper works at a
// time across processes. An interval of 0 disables reaping in this
// Registry; any other is at least MinReapInterval (1 s).
func WithReaper(every, after time.Duration) Option {
	return optionFunc(func(o *options) { o.reapEvery, o.reapAfter, o.reapSet = every, after, true })
}

// WithServiceReap sets how long a service left with nothing (no instance
// row: its last one deregistered, or reaped after its lease ended; no key;
// never a configuration) stays before the reaper deletes it: the reaper's
// delay (WithReaper's after, 2 min by default) unless set. It is measured
// from the first reaper round that finds the service so (and not changed
// since), so it lasts up to one reap interval longer. A deleted service is
// gone from Services, the Overview and the admin handler, and Get and Load
// answer ErrNotFound; its name registered again is a new service, whose
// revision starts above any the old one had. A service with a key or a
// configuration (now or in its history) is never deleted. The reaper does
// it, so it needs the reaper on (WithReaper's interval above 0) in some
// process, and a store that can (a discovery.ServiceReaper: the SQL store
// and discoverytest's backend). 0 keeps such services for good, as
// releases before this option did.
func WithServiceReap(after time.Duration) Option {
	return optionFunc(func(o *options) { o.serviceReap, o.serviceReapSet = after, true })
}

// WithCloseTimeout bounds Registry.Close (5 s), counted from its call,
// plus at most CloseSlack: its deregistrations get most of it, its waits for
// its goroutines and for the functions given to Register what is left (see
// Registry.Close).
func WithCloseTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.closeTO = d }) }

// WithStrategy sets the selection strategy of every service (p2c_ewma by
// default; the zero Strategy, as everywhere, means that default). A
// service's own (WithServiceStrategy, or "balancer.strategy" in its
// configuration) and a call's (UseStrategy) take precedence.
func WithStrategy(s Strategy) Option {
	return optionFunc(func(o *options) {
		if s == 0 {
			s = StrategyP2CEWMA
		}
		o.strategy = s
	})
}

// WithServiceStrategy sets the strategy of one service. The zero Strategy
// sets none: the service's configuration, then WithStrategy, decide (and it
// takes back an earlier WithServiceStrategy of the service).
func WithServiceStrategy(service string, s Strategy) Option {
	return optionFunc(func(o *options) {
		if o.serviceStrategy == nil {
			o.serviceStrategy = map[string]Strategy{}
		}
		o.serviceStrategy[service] = s
	})
}

// WithMinScore sets the health score an instance must exceed to be picked
// (0.5, the seed's rule). A passing check scores min(1, 100 ms / response
// time), so an instance whose checks take longer than 100 ms / score is
// never picked, however often they pass: at the default, 200 ms
// (NoHealthyError.Slow counts such instances). A warning (HTTP 429) scores
// 0.6 times that: at 0.6 or more an instance that answers its checks with
// 429 stays out of selection however fast it answers (throttled, not
// slow: NoHealthyError.Throttled counts it, Slow does not).
func WithMinScore(score float64) Option { return optionFunc(func(o *options) { o.minScore = score }) }

// WithPanicThreshold sets the fraction of eligible instances below which
// Pick spreads over all live instances rather than overload the few (0.5,
// Envoy's panic threshold; 0 disables panic mode).
func WithPanicThreshold(f float64) Option {
	return optionFunc(func(o *options) { o.panicThreshold = f })
}

// WithFailClosed makes Pick refuse (ErrNoHealthyInstances, a
// NoHealthyError whose Eligible counts the eligible few) below the panic
// threshold instead of spreading over unhealthy instances. A pick whose
// PreferZone zone is above the threshold on its own is not refused.
func WithFailClosed() Option { return optionFunc(func(o *options) { o.failClosed = true }) }

// WithSelfPreservation sets when instances that stopped renewing are kept:
// when more than fraction (0.15) of a service's instances, and at least two,
// lapsed within half a lease TTL of each other (a renewal window, TTL/3,
// with room to spare), they stay visible as
// StatusSuspect for grace (two lease TTLs, 30 s by default) instead of
// disappearing at once, as after a partition or a database outage. A
// fraction of 0 turns it off. Instances whose leases ended while this
// process could not reach the database are held either way: until two lease
// TTLs after the database answers again, or grace after it if longer.
// With the reaper on, grace and half a lease TTL must not outlast a delay
// given with WithReaper (New refuses it, ErrInvalid); the default delay
// follows the grace.
func WithSelfPreservation(fraction float64, grace time.Duration) Option {
	return optionFunc(func(o *options) { o.preserveFraction, o.suspectGrace, o.graceSet = fraction, grace, true })
}

// inTransaction reports whether db runs its statements in a transaction.
func inTransaction(db *gorm.DB) bool {
	_, ok := db.Statement.ConnPool.(gorm.TxCommitter)
	return ok
}

// onOneConn reports whether db runs its statements on one connection lent
// by its pool (db.Connection), not on the pool.
func onOneConn(db *gorm.DB) bool {
	_, ok := db.Statement.ConnPool.(*sql.Conn)
	return ok
}
