package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// holdDeregisters makes every Deregister wait for its context once
// holding is set: a database that stopped answering.
type holdDeregisters struct {
	*discoverytest.Backend // every optional interface too: configuration, notifications
	holding                atomic.Bool
}

func (s *holdDeregisters) Deregister(ctx context.Context, service, id string) (int64, error) {
	if s.holding.Load() {
		<-ctx.Done()
		return 0, &discovery.BackendError{Backend: "database", Op: "deregister", Err: ctx.Err()}
	}
	return s.Backend.Deregister(ctx, service, id)
}

// Close ends within the close timeout, and its documented slack, counted
// from its call, whatever its backends and callbacks do: a process under
// an orchestrator's grace period (Kubernetes' SIGTERM) sets the one bound.
// Its stages each had a timeout of their own, counted from when the one
// before ended: the deregistrations (the close timeout, with their
// write-throughs to Redis), the Registry's goroutines (those
// write-throughs, each Redis call within the Redis timeout), the functions
// given to Register (the close timeout again), the health monitor's leave
// (the Redis timeout). Measured with a 2 s close timeout and a 1 s Redis
// timeout, a config func deaf to its context: 4.0 s with Redis
// black-holed, and with the database black-holed (now 2.0 s and 2.1 s).
func TestCloseEndsWithinItsTimeoutOnBlackholedBackends(t *testing.T) {
	const (
		closeTO = 2 * time.Second
		redisTO = time.Second
		// The slack Close documents (closeGrace, twice) and room for a
		// loaded machine; the stages one after another take about twice
		// the close timeout.
		bound = closeTO + 200*time.Millisecond + 800*time.Millisecond
	)
	for _, hole := range []string{"redis", "database"} {
		t.Run(hole, func(t *testing.T) {
			ctx := context.Background()
			ns, proxy, db := redisBehindProxy(t)
			s := &holdDeregisters{Backend: discoverytest.NewBackend()}
			r, err := discovery.New(discovery.WithStore(s), discovery.WithNamespace(ns),
				discovery.WithRedis(testutil.RedisClient(t, proxy.Addr(), db, ns)), discovery.WithRedisTimeout(redisTO),
				discovery.WithCloseTimeout(closeTO), discovery.WithCloseDrain(0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Blackhole(false); _ = r.Close() })
			release, entered := make(chan struct{}), make(chan struct{}, 1)
			t.Cleanup(func() { close(release) }) // runs first: the call left running ends (goleak)
			in := discovery.Instance{Service: "router_svc", ID: "r-1", Host: "10.9.9.9", Port: 1, Method: discovery.MethodRouter}
			deaf := discovery.WithConfigFunc(func(context.Context, json.RawMessage) error {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
				return nil
			})
			if _, err := r.Register(ctx, in, deaf); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Get(ctx, "router_svc"); err != nil { // health sharing follows the service
				t.Fatal(err)
			}
			updated := make(chan error, 1)
			go func() {
				uctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_, err := r.UpdateConfig(uctx, "router_svc", json.RawMessage(`{"v":1}`))
				updated <- err
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatalf("the config func was not called within 10s (UpdateConfig: %v)", <-updated)
			}
			if hole == "redis" {
				proxy.Blackhole(true)
			} else {
				s.holding.Store(true)
			}
			start := time.Now()
			err = r.Close()
			d := time.Since(start)
			var ce *discovery.CallbackError
			if !errors.As(err, &ce) || len(ce.Running) != 1 {
				t.Errorf("Close = %v; want a CallbackError naming the config func still running", err)
			}
			t.Logf("Close took %v with the %s black-holed (close timeout %v)", d, hole, closeTO)
			if d > bound {
				t.Fatalf("Close took %v with the %s black-holed and a callback deaf to its context; want within the close timeout (%v) and its slack, well within %v", d, hole, closeTO, bound)
			}
		})
	}
}

// registryGoroutines counts the goroutines running a method of a Registry.
func registryGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "discovery.(*Registry).") {
			n++
		}
	}
	return n
}

// Close keeps its bound when a goroutine of the Registry waits on a call
// started before it: here the write-through of a Register whose caller
// gave up, on a Redis black-holed, bounded by a 3 s Redis timeout. Close
// returns without it, answers every call after it with ErrClosed, and
// leaves the health monitor's leave to run once that call has ended
// (goleak: nothing is left running).
func TestCloseLeavesAGoroutineOnAStalledRedisToItsOwnTimeout(t *testing.T) {
	const closeTO, redisTO = 200 * time.Millisecond, 3 * time.Second
	ns, proxy, db := redisBehindProxy(t)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db, MaxRetries: -1,
		ReadTimeout: 2 * redisTO, WriteTimeout: 2 * redisTO}) // the Redis timeout bounds each call
	t.Cleanup(func() { proxy.Blackhole(false); testutil.DeleteKeys(rdb, ns); _ = rdb.Close() })
	backend := discoverytest.NewBackend()
	web := inst("web", "10.0.0.2", 2) // a service r looks up and does not write
	web.ID, web.Status, web.Check, web.ExpiresAt = "10.0.0.2:2", discovery.StatusHealthy, discovery.CheckNone, time.Now().Add(time.Minute)
	if _, err := backend.Register(context.Background(), &web); err != nil {
		t.Fatal(err)
	}
	r, err := discovery.New(discovery.WithStore(backend), discovery.WithNamespace(ns),
		discovery.WithRedis(rdb), discovery.WithRedisTimeout(redisTO), discovery.WithoutHealthChecks(),
		discovery.WithCloseTimeout(closeTO), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	waitFor(t, 5*time.Second, "a service held in L1", func() bool {
		res, err := r.Lookup(context.Background(), "web")
		return err == nil && res.Layer == discovery.LayerL1 && !res.Stale
	})
	proxy.Blackhole(true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _ = r.Register(ctx, inst("db_svc", "10.0.0.1", 1)) // its write-through waits on Redis
	start := time.Now()
	_ = r.Close()
	if d := time.Since(start); d > closeTO+discovery.CloseSlack+800*time.Millisecond {
		t.Fatalf("Close took %v behind a write-through on a black-holed Redis; want within the close timeout (%v) and its slack (%v)", d, closeTO, discovery.CloseSlack)
	}
	// What Close leaves running does not keep the Registry answering:
	// a lookup from what L1 held is ErrClosed as any other call.
	if _, err := r.Get(context.Background(), "web"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Get after Close = %v; want ErrClosed", err)
	}
	if _, err := r.Pick(context.Background(), "web"); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Pick after Close = %v; want ErrClosed", err)
	}
	if registryGoroutines() == 0 {
		t.Fatal("no goroutine of the Registry left after Close; want the write-through, waiting on Redis for its timeout")
	}
	waitFor(t, redisTO+10*time.Second, "the goroutines left by Close to end", func() bool { return registryGoroutines() == 0 })
}
