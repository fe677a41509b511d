package discovery_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// A go-redis client at its defaults lets no context deadline reach the
// socket (ContextTimeoutEnabled is off) and reads for up to 5 s. Under such
// a client a black-holed Redis held New, and a Get that went to L2, for those
// 5 s, whatever WithRedisTimeout said. Now New, Register (whose write-through
// is the first call to find Redis gone) and Get each end within the Redis
// timeout, and serve.
func TestRedisTimeoutBoundsAClientAtItsDefaults(t *testing.T) {
	const redisTO = 100 * time.Millisecond
	const bound = 2500 * time.Millisecond // half the client's 5 s, room for a noisy machine
	for _, when := range []string{"before New", "after a Get"} {
		t.Run(when, func(t *testing.T) {
			ctx := context.Background()
			ns, proxy, db := redisBehindProxy(t)
			rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db}) // go-redis's defaults
			t.Cleanup(func() {
				testutil.DeleteKeys(rdb, ns)
				_ = rdb.Close()
			})
			if got := rdb.Options(); got.ContextTimeoutEnabled || got.ReadTimeout <= bound {
				t.Fatalf("client options %v/%v: the test needs go-redis's unbounded defaults", got.ContextTimeoutEnabled, got.ReadTimeout)
			}
			timed := func(what string, fn func()) {
				t.Helper()
				start := time.Now()
				fn()
				if d := time.Since(start); d > bound {
					t.Fatalf("%s took %v with Redis black-holed; want within %v (WithRedisTimeout %v)", what, d, bound, redisTO)
				}
			}
			if when == "before New" {
				proxy.Blackhole(true)
			}
			var r *discovery.Registry
			timed("New", func() {
				r = discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
					discovery.WithRedisTimeout(redisTO), discovery.WithoutHealthChecks(),
					// every Get past 1 ms goes to L2
					discovery.WithCacheFreshness(time.Millisecond, 0, time.Minute))
			})
			timed("Register", func() { mustRegister(t, r, inst("db_svc", "10.0.0.1", 1)) })
			// L1's freshness is judged by a coarse clock that a loaded
			// machine may leave behind for longer than a sleep of a few ms:
			// Gets are repeated until one is past it.
			if when == "after a Get" {
				waitFor(t, 2*time.Second, "a Get past L1's freshness, from L2", func() bool {
					res, err := r.Lookup(ctx, "db_svc")
					return err == nil && res.Layer == discovery.LayerL2
				})
				if st := r.Stats(); st.L2Errors != 0 || st.L2Hits == 0 {
					t.Fatalf("stats %+v before Redis was black-holed; want L2 hits and no errors", st)
				}
				proxy.Blackhole(true)
			}
			waitFor(t, 10*time.Second, "a Get that went to Redis", func() bool {
				timed("Get", func() {
					svc, err := r.Get(ctx, "db_svc")
					if err != nil || len(svc.Instances) != 1 {
						t.Fatalf("Get = %v, %v; want the instance", svc, err)
					}
				})
				return r.Stats().L2Errors > 0
			})
			proxy.Blackhole(false)
		})
	}
}

// A Cluster or Ring client that lets no context deadline reach the socket,
// and whose own timeouts are longer than WithRedisTimeout, cannot be
// bounded by the Registry: New refuses it, naming what to set, and starts
// nothing (goleak checks). Either setting makes it acceptable.
func TestWithRedisRefusesAClientItCannotBound(t *testing.T) {
	addrs := []string{"127.0.0.1:1"} // never dialled by a refused client; refused at once by an accepted one
	tests := []struct {
		name   string
		client func() redis.UniversalClient
		ok     bool
	}{
		{"cluster at defaults", func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		}, false},
		{"universal with two addresses", func() redis.UniversalClient {
			return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: append(addrs, "127.0.0.1:2")})
		}, false},
		{"ring at defaults", func() redis.UniversalClient {
			return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addrs[0]}})
		}, false},
		{"cluster, no read timeout", func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: -1})
		}, false},
		{"cluster, socket deadlines disabled", func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: -2, ContextTimeoutEnabled: true})
		}, false},
		{"cluster with ContextTimeoutEnabled", func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
		}, true},
		{"cluster with short timeouts", func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
		}, true},
		{"ring with ContextTimeoutEnabled", func() redis.UniversalClient {
			return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addrs[0]}, ContextTimeoutEnabled: true})
		}, true},
		{"single client at defaults", func() redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addrs[0]})
		}, true},
	}
	// A typed nil panicked in New (its Options, or the subscription).
	for _, nilClient := range []redis.UniversalClient{(*redis.Client)(nil), (*redis.ClusterClient)(nil), (*redis.Ring)(nil)} {
		r, err := discovery.New(discovery.WithRedis(nilClient))
		var ve *discovery.ValidationError
		if r != nil || !errors.As(err, &ve) || ve.Field != "option WithRedis" || !strings.Contains(err.Error(), "must not be nil") {
			t.Fatalf("New(WithRedis(%T(nil))) = %v; want a ValidationError on WithRedis", nilClient, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := tt.client()
			defer rdb.Close()
			r, err := discovery.New(discovery.WithRedis(rdb), discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedisTimeout(250*time.Millisecond), discovery.WithoutHealthChecks())
			if tt.ok {
				if err != nil {
					t.Fatalf("New = %v; want the client accepted", err)
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				return
			}
			if r != nil {
				_ = r.Close()
				t.Fatalf("New accepted the client (error %v); want it refused", err)
			}
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "option WithRedis" ||
				!strings.Contains(err.Error(), "ContextTimeoutEnabled: true") && !strings.Contains(err.Error(), "to -1") || !strings.Contains(err.Error(), "250ms") {
				t.Fatalf("New = %v; want a ValidationError on WithRedis saying what to set", err)
			}
		})
	}
}

// New subscribes to the change channel before it returns. That first
// subscription was made without a deadline: on a Redis whose host does not
// answer connections at all (down, or cut off by a partition: no refusal
// comes back), New waited out the client's DialTimeout (5 s by default),
// whatever WithRedisTimeout said. Now it returns within the Redis timeout
// (the subscription is made again in the background), and lookups and
// registrations serve from the database.
func TestNewOnAnUnansweredRedisIsBoundedByTheRedisTimeout(t *testing.T) {
	const redisTO = 100 * time.Millisecond
	const bound = 2500 * time.Millisecond // half the client's 5 s DialTimeout, room for a noisy machine
	// go-redis dials on in goroutines of its own, each for its DialTimeout,
	// after the call that wanted the connection gave up: waited for at the
	// end, after the Registry's Close (goleak). One attempt a dial, so that
	// none begins once they are counted out.
	var (
		mu       sync.Mutex
		idle     = sync.NewCond(&mu)
		dialling int
	)
	rdb := redis.NewClient(&redis.Options{Addr: testutil.UnansweredAddr(t), DialerRetries: 1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialling++
			mu.Unlock()
			defer func() {
				mu.Lock()
				dialling--
				idle.Broadcast()
				mu.Unlock()
			}()
			d := net.Dialer{Timeout: 5 * time.Second} // as go-redis's own dialer, at its default DialTimeout
			return d.DialContext(ctx, network, addr)
		}})
	t.Cleanup(func() {
		mu.Lock()
		for dialling > 0 {
			idle.Wait()
		}
		mu.Unlock()
		_ = rdb.Close()
	})
	if got := rdb.Options().DialTimeout; got <= bound {
		t.Fatalf("DialTimeout %v: the test needs go-redis's default", got)
	}
	timed := func(what string, fn func()) {
		t.Helper()
		start := time.Now()
		fn()
		if d := time.Since(start); d > bound {
			t.Fatalf("%s took %v with Redis unanswered; want within %v (WithRedisTimeout %v)", what, d, bound, redisTO)
		}
	}
	var r *discovery.Registry
	timed("New", func() {
		r = discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithRedis(rdb),
			discovery.WithRedisTimeout(redisTO), discovery.WithoutHealthChecks())
	})
	timed("Register", func() { mustRegister(t, r, inst("db_svc", "10.0.0.1", 1)) })
	timed("Get", func() {
		svc, err := r.Get(context.Background(), "db_svc")
		if err != nil || len(svc.Instances) != 1 {
			t.Fatalf("Get = %v, %v; want the instance", svc, err)
		}
	})
}

// A Redis that refuses the Registry's client what it needs, a wrong
// password or an ACL user without SUBSCRIBE, PUBLISH, scripts (EVALSHA,
// EVAL) or the namespace's keys or channels, was taken at New without a
// word: the Registry never heard another process's change (the
// subscription was refused, and nothing retried or logged it), or never
// announced its own, or wrote nothing through, and every process served
// its snapshots of what changed until their freshness windows ended. Now
// New refuses such a client with an ErrInvalid error that names the
// refused command and Redis's answer; a user granted the namespace's keys
// and channels and every command is taken.
func TestNewRefusesARedisUserDeniedWhatTheRegistryNeeds(t *testing.T) {
	srv := testutil.NewRedisServer(t)
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	user := func(name string, rules ...any) {
		srv.Do(append([]any{"ACL", "SETUSER", name, "on", ">pw"}, rules...)...)
	}
	user("granted", "~"+ns+":*", "&"+ns+":*", "+@all")
	user("nosubscribe", "~*", "&*", "+@all", "-subscribe")
	user("nopublish", "~*", "&*", "+@all", "-publish")
	user("noscripts", "~*", "&*", "+@all", "-eval", "-evalsha")
	user("otherkeys", "~other:*", "&*", "+@all")
	user("otherchannels", "~*", "&other:*", "+@all")
	tests := []struct {
		user, password string
		refused        string // in New's error; "" when New takes the client
	}{
		{"granted", "pw", ""},
		{"granted", "wrong", "WRONGPASS"},
		{"nosubscribe", "pw", "'subscribe'"},
		{"nopublish", "pw", "'publish'"},
		{"noscripts", "pw", "'evalsha'"},
		{"otherkeys", "pw", "keys"},
		{"otherchannels", "pw", "channels"},
	}
	for _, tt := range tests {
		t.Run(tt.user+"/"+tt.password, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: tt.user, Password: tt.password, MaxRetries: -1})
			t.Cleanup(func() { _ = rdb.Close() })
			r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb),
				discovery.WithNamespace(ns), discovery.WithoutHealthChecks())
			if tt.refused == "" {
				if err != nil {
					t.Fatalf("New: %v; want the client taken", err)
				}
				_ = r.Close()
				return
			}
			if err == nil {
				_ = r.Close()
				t.Fatalf("New took a client that Redis refuses (%s); want an ErrInvalid error", tt.refused)
			}
			if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithRedis") || !strings.Contains(err.Error(), tt.refused) {
				t.Fatalf("New: %v; want ErrInvalid naming WithRedis and %s", err, tt.refused)
			}
		})
	}
}

// A Cluster or Ring client that enables context deadlines but disables
// socket deadlines altogether (a read or write timeout of -2) cannot be
// bounded either, and New refuses it; its error said "ContextTimeoutEnabled
// is false" and told the user to set what was set. Now it names the
// timeout that turns the deadlines off. A Ring's read timeout of -1 (no
// timeout of its own: the context's deadline bounds each call) was taken
// for -2 and refused; it is accepted.
func TestWithRedisRefusalNamesDisabledSocketDeadlines(t *testing.T) {
	addrs := []string{"127.0.0.1:1"}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addrs[0]}, ReadTimeout: -1, WriteTimeout: -1, ContextTimeoutEnabled: true})
	r, err := discovery.New(discovery.WithRedis(ring), discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatalf("New(Ring with ContextTimeoutEnabled, timeouts -1) = %v; want it accepted", err)
	}
	_ = r.Close()
	_ = ring.Close()
	for _, rdb := range []redis.UniversalClient{
		redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: -2, ContextTimeoutEnabled: true}),
		redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, WriteTimeout: -2, ContextTimeoutEnabled: true}),
		redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addrs[0]}, ReadTimeout: -2, ContextTimeoutEnabled: true}),
	} {
		r, err := discovery.New(discovery.WithRedis(rdb), discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks())
		_ = rdb.Close()
		if r != nil {
			_ = r.Close()
			t.Fatalf("New(%T) accepted a client without socket deadlines", rdb)
		}
		if !errors.Is(err, discovery.ErrInvalid) || strings.Contains(err.Error(), "ContextTimeoutEnabled is false") || !strings.Contains(err.Error(), "-2") {
			t.Fatalf("New(%T) = %v; want ErrInvalid naming the timeout of -2, not ContextTimeoutEnabled", rdb, err)
		}
	}
}

// A Ring whose every shard it has found down (its heartbeats failed) has
// no shard for the change channel, and go-redis's Ring.Subscribe panics
// then: New on a Ring while Redis was down panicked, where a Redis that is
// down is no error (the Registry serves from L1 and the database, and
// subscribes once Redis is back), and so did the health subscription's
// goroutine, taking the process down. Now New returns a Registry that
// serves, health checks on, and subscribes to both channels once the shard
// is back.
func TestNewOnARingWhoseShardsAreAllDownServes(t *testing.T) {
	ctx := context.Background()
	srv := testutil.NewRedisServer(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": srv.Addr()}, ContextTimeoutEnabled: true,
		HeartbeatFrequency: 10 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = ring.Close() })
	srv.Stop()
	waitFor(t, 5*time.Second, "the ring to find its shard down", func() bool {
		err := ring.Ping(ctx).Err()
		return err != nil && strings.Contains(err.Error(), "all ring shards are down")
	})
	var (
		r   *discovery.Registry
		err error
	)
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("New panicked on a Ring whose shards are down: %v", p)
			}
		}()
		r, err = discovery.New(discovery.WithRedis(ring), discovery.WithStore(discoverytest.NewBackend()), discovery.WithNamespace(ns))
	}()
	if err != nil {
		t.Fatalf("New = %v; want a Registry that serves without Redis", err)
	}
	defer r.Close()
	mustRegister(t, r, inst("db_svc", "127.0.0.1", 1)) // checked on loopback: refused
	if got := ids(r.Get(ctx, "db_svc")); got != "127.0.0.1:1" {
		t.Fatalf("Get = %s", got)
	}
	srv.Start()
	admin := srv.Admin()
	defer admin.Close()
	waitFor(t, 10*time.Second, "both subscriptions once the shard is back", func() bool {
		return subscribers(admin, ns+":changes") == 1 && subscribers(admin, ns+":health") == 1
	})
}

// New refuses a client of a read-only replica, saying so: taken, every
// snapshot write failed (READONLY), each failure tripping the breaker that
// takes Redis out of the read path, and the other processes never read
// what this one wrote.
func TestNewRefusesARedisReadOnlyReplica(t *testing.T) {
	primary := testutil.NewRedisServer(t)
	host, port, _ := strings.Cut(primary.Addr(), ":")
	replica := testutil.NewRedisServer(t, "--replicaof", host, port, "--replica-read-only", "yes")
	rdb := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithRedis(rdb), discovery.WithoutHealthChecks())
	if err == nil {
		_ = r.Close()
		t.Fatal("New took a client of a read-only replica; want an ErrInvalid error")
	}
	if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "read-only replica") || !strings.Contains(err.Error(), "READONLY") {
		t.Fatalf("New: %v; want ErrInvalid saying Redis is a read-only replica", err)
	}
	if strings.Contains(err.Error(), "SUBSCRIBE") {
		t.Fatalf("New: %v; want the replica's fix, not the ACL's", err)
	}
}
