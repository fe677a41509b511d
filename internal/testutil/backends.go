// Package testutil has the helpers the project's own tests share: real or
// embedded backends chosen by environment variables, unique namespaces, and
// fault injection.
//
//	DISCOVERY_TEST_POSTGRES  a PostgreSQL DSN; tests that want Postgres skip without it
//	DISCOVERY_TEST_REDIS     a redis:// URL; without it tests use miniredis in-process
//	DISCOVERY_TEST_REQUIRE=1 a backend that is unset or unreachable fails the test instead
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Environment variables.
const (
	EnvPostgres = "DISCOVERY_TEST_POSTGRES"
	EnvRedis    = "DISCOVERY_TEST_REDIS"
	EnvRequire  = "DISCOVERY_TEST_REQUIRE"
	// EnvRedisCluster lists the nodes of a Redis Cluster
	// ("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"); tests that run
	// against a cluster skip without it.
	EnvRedisCluster = "DISCOVERY_TEST_REDIS_CLUSTER"
)

// Required reports whether DISCOVERY_TEST_REQUIRE=1.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// unavailable skips the test, or fails it when backends are required.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("backend required ("+EnvRequire+"=1) but "+format, args...)
	}
	t.Skipf(format, args...)
}

// Prefix returns a fresh lower-case prefix ("t1a2b3c4d5_") for tables, Redis
// keys and channels, so tests sharing real servers never see each other.
func Prefix(t testing.TB) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + "_"
}

func gormConfig() *gorm.Config {
	return &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true}
}

// SQLite opens a fresh pure-Go SQLite database in a temporary file, in WAL
// mode with immediate transactions and a busy timeout, so concurrent writers
// queue instead of failing.
func SQLite(t testing.TB) *gorm.DB {
	t.Helper()
	db, err := OpenSQLite(filepath.Join(t.TempDir(), "discovery.db"))
	if err != nil {
		t.Fatalf("sqlite: %v", err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db
}

// OpenSQLite opens the SQLite database at path as SQLite tests and the
// examples use it.
func OpenSQLite(path string) (*gorm.DB, error) {
	dsn := "file:" + path + "?_txlock=immediate&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	return gorm.Open(sqlite.Open(dsn), gormConfig())
}

// PostgresDSN returns DISCOVERY_TEST_POSTGRES, skipping (or failing) without it.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvPostgres)
	if dsn == "" {
		unavailable(t, "%s is not set", EnvPostgres)
	}
	return dsn
}

// Postgres opens DISCOVERY_TEST_POSTGRES and drops every table with prefix
// when the test ends. It skips without the variable, or fails when backends
// are required or the server cannot be reached under DISCOVERY_TEST_REQUIRE.
func Postgres(t testing.TB, prefix string) *gorm.DB {
	t.Helper()
	db, err := OpenPostgres(PostgresDSN(t))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = db.WithContext(ctx).Exec("SELECT 1").Error
		cancel()
	}
	if err != nil {
		unavailable(t, "postgres unreachable: %v", err)
	}
	t.Cleanup(func() {
		DropTables(db, prefix)
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db
}

// OpenPostgres opens a DSN with the pool settings the tests use.
func OpenPostgres(dsn string) (*gorm.DB, error) {
	db, err := gorm.Open(postgres.Open(dsn), gormConfig())
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	sqlDB.SetMaxOpenConns(8)
	sqlDB.SetMaxIdleConns(8)
	return db, nil
}

// DropTables drops every PostgreSQL table whose name starts with prefix.
func DropTables(db *gorm.DB, prefix string) {
	if prefix == "" || db.Dialector.Name() != "postgres" {
		return
	}
	var names []string
	db.Raw(`SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE ?`,
		strings.ReplaceAll(prefix, "_", `\_`)+"%").Scan(&names)
	for _, n := range names {
		db.Exec(`DROP TABLE IF EXISTS "` + n + `" CASCADE`)
	}
}

// Redis returns a client for DISCOVERY_TEST_REDIS when it is set (deleting
// the test's keys under prefix at the end), or one for a fresh miniredis
// otherwise (returned too, for tests that stop or corrupt it).
func Redis(t testing.TB, prefix string) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	if url := os.Getenv(EnvRedis); url != "" {
		return RealRedis(t, prefix), nil
	}
	if Required() {
		t.Fatalf("backend required (%s=1) but %s is not set", EnvRequire, EnvRedis)
	}
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, mr
}

// RealRedis returns a client for DISCOVERY_TEST_REDIS, skipping (or failing)
// without it.
func RealRedis(t testing.TB, prefix string) redis.UniversalClient {
	t.Helper()
	url := os.Getenv(EnvRedis)
	if url == "" {
		unavailable(t, "%s is not set", EnvRedis)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("%s: %v", EnvRedis, err)
	}
	opt.MaxRetries = -1
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		unavailable(t, "redis unreachable: %v", err)
	}
	t.Cleanup(func() {
		DeleteKeys(rdb, prefix)
		_ = rdb.Close()
	})
	return rdb
}

// RedisOptions returns the options of DISCOVERY_TEST_REDIS, or nil.
func RedisOptions() *redis.Options {
	url := os.Getenv(EnvRedis)
	if url == "" {
		return nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil
	}
	return opt
}

// DeleteKeys deletes the keys that contain prefix (on every master of a
// cluster).
func DeleteKeys(rdb redis.UniversalClient, prefix string) {
	if prefix == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	del := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, "*"+prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		return nil
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return del(ctx, c) })
		return
	}
	_ = del(ctx, rdb)
}

// RedisCluster returns a client of the Redis Cluster in
// DISCOVERY_TEST_REDIS_CLUSTER, deleting the test's keys at the end. It
// skips without the variable, and fails if the cluster is unreachable under
// DISCOVERY_TEST_REQUIRE.
func RedisCluster(t testing.TB, prefix string) redis.UniversalClient {
	t.Helper()
	nodes := os.Getenv(EnvRedisCluster)
	if nodes == "" {
		t.Skipf("%s is not set", EnvRedisCluster)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(nodes, ","), MaxRetries: 2,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		ContextTimeoutEnabled: true}) // else WithRedis refuses it: see redisCommands
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := rdb.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	if err == nil {
		err = rdb.ClusterInfo(ctx).Err()
	}
	if err != nil {
		_ = rdb.Close()
		unavailable(t, "redis cluster unreachable: %v", err)
	}
	t.Cleanup(func() {
		DeleteKeys(rdb, prefix)
		_ = rdb.Close()
	})
	return rdb
}

// RedisAddr returns the address of DISCOVERY_TEST_REDIS, or of a fresh
// miniredis (returned too) when it is unset, for tests that put a Proxy in
// front of Redis.
func RedisAddr(t testing.TB) (string, int, *miniredis.Miniredis) {
	t.Helper()
	if opt := RedisOptions(); opt != nil {
		return opt.Addr, opt.DB, nil
	}
	if Required() {
		t.Fatalf("backend required (%s=1) but %s is not set", EnvRequire, EnvRedis)
	}
	mr := miniredis.RunT(t)
	return mr.Addr(), 0, mr
}

// RedisClient returns a client for addr with the fail-fast settings tests
// use, closed when the test ends (keys containing prefix are deleted first).
func RedisClient(t testing.TB, addr string, db int, prefix string) redis.UniversalClient {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second})
	t.Cleanup(func() {
		DeleteKeys(rdb, prefix)
		_ = rdb.Close()
	})
	return rdb
}

// PostgresVia opens DISCOVERY_TEST_POSTGRES through a Proxy (returned), so
// the test can cut the database away from the library.
func PostgresVia(t testing.TB, prefix string) (*gorm.DB, *Proxy) {
	t.Helper()
	direct := Postgres(t, prefix) // skips or fails as Postgres does; drops the tables at the end
	cfg, err := pgconn.ParseConfig(PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	p := NewProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	host, port, _ := net.SplitHostPort(p.Addr())
	dsn := "host=" + host + " port=" + port + " user=" + cfg.User + " dbname=" + cfg.Database + " sslmode=disable connect_timeout=2"
	if cfg.Password != "" {
		dsn += " password=" + cfg.Password
	}
	db, err := OpenPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	_ = direct
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db, p
}

// RedisKind is a kind of Redis a test runs on: Open returns a client of one
// server (Redis) or of a Cluster (RedisCluster, which skips the test when
// none is given).
type RedisKind struct {
	Name string
	Open func(t testing.TB, prefix string) redis.UniversalClient
}

// RedisKinds is one server and a Cluster, for the tests whose scripts and
// keys must hold on both.
func RedisKinds() []RedisKind {
	return []RedisKind{
		{"redis", func(t testing.TB, prefix string) redis.UniversalClient { rdb, _ := Redis(t, prefix); return rdb }},
		{"cluster", RedisCluster},
	}
}
