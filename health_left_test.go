package discovery_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/health"
)

// A check that was running when its instance left applies to nothing: its
// result went to the state the instance had before it left, and when the
// instance came back with the same ID, watchers got that result as the
// returned instance's status (healthy) while Get and Health, which read
// its new state, showed it unknown. With Redis the result went the same
// way, through the shared state: written under the returned instance's ID
// and adopted into the state it had before it left, whose change watchers
// got.
func TestCheckOfAnInstanceThatLeftAppliesToNothing(t *testing.T) {
	for _, k := range []worldKind{allWorlds[0], allWorlds[2]} { // without and with Redis
		t.Run(k.name, func(t *testing.T) { checkOfAnInstanceThatLeft(t, k) })
	}
}

func checkOfAnInstanceThatLeft(t *testing.T, k worldKind) {
	ctx := context.Background()
	host, portN, hits, release := firstCheckHangs(t)
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, k)
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, 5*time.Second))
	in := discovery.Instance{ID: "web-1", Service: "web", Host: host, Port: portN, Weight: 1, HealthPath: "/health",
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
	addInstance(t, r, in)
	addInstance(t, r, discovery.Instance{ID: "keep", Service: "web", Host: "10.0.9.3", Port: 80, Weight: 1, Check: discovery.CheckNone,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(wctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	until := func(id string) []discovery.Event {
		mustRegister(t, r, discovery.Instance{ID: id, Service: "web", Host: "10.0.9.1", Port: 80, Check: discovery.CheckNone})
		return eventsBefore(t, ch, id)
	}
	untilFirstCheck(t, r, clock, hits, hInterval) // it hangs
	if err := r.Deregister(ctx, "web", in.ID); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "web"); err != nil || svc.Instance(in.ID) != nil {
		t.Fatalf("Get = %v, %v; want %s gone", svc, err, in.ID)
	}
	addInstance(t, r, in)
	if err := r.Invalidate(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "web"); err != nil || svc.Instance(in.ID) == nil {
		t.Fatalf("Get = %v, %v; want %s back", svc, err, in.ID)
	}
	until("mid")
	release() // the old check passes
	discovery.SettleHealth(r)
	for _, ev := range until("last") {
		if ev.Kind == discovery.EventHealthChanged && ev.Instance.ID == in.ID {
			t.Errorf("Watch delivered %v of %s (%v, was %v) from a check begun before it left", ev.Kind, in.ID, ev.Instance.Status, ev.Previous)
		}
	}
	if got := viewStatus(t, r, "web", in.ID); got != discovery.StatusUnknown {
		t.Errorf("Get shows %v; want unknown (not checked since it came back)", got)
	}
}

// A check in flight when its instance leaves ends then, not at its timeout:
// the monitor dropped the instance's target but left its check running, so
// an instance that left while its health path hung was still held open
// (a connection, a goroutine) for up to the whole check timeout, 50 s here.
func TestCheckOfAnInstanceThatLeftEndsAtOnce(t *testing.T) {
	ctx := context.Background()
	var hits atomic.Int64
	ended := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) != 1 {
			return
		}
		select {
		case <-r.Context().Done(): // the check went away
			close(ended)
		case <-time.After(hangFor):
		}
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	portN, _ := strconv.Atoi(port)
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(time.Minute, 50*time.Second))
	in := discovery.Instance{ID: "web-1", Service: "web", Host: host, Port: portN, Weight: 1, HealthPath: "/health",
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
	addInstance(t, r, in)
	addInstance(t, r, discovery.Instance{ID: "keep", Service: "web", Host: "10.0.9.3", Port: 80, Weight: 1, Check: discovery.CheckNone,
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	untilFirstCheck(t, r, clock, &hits, time.Minute) // it hangs
	if err := r.Deregister(ctx, "web", in.ID); err != nil {
		t.Fatal(err)
	}
	if svc, err := r.Get(ctx, "web"); err != nil || svc.Instance(in.ID) != nil {
		t.Fatalf("Get = %v, %v; want %s gone", svc, err, in.ID)
	}
	clock.Advance(time.Second) // the next scan finds it gone
	discovery.StepHealth(r)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the check of an instance that left still runs 5 s after the monitor dropped it (check timeout 50 s)")
	}
}

// A check of an instance's old address, in flight when the instance moved
// (registered again under its ID at another address), says nothing of the
// new one: its verdict was forgotten at the move, and the old check's pass,
// landing after, made the instance healthy (one pass is enough for an
// instance never checked) before its new address was ever checked.
func TestCheckOfTheOldAddressDoesNotJudgeTheNew(t *testing.T) {
	ctx := context.Background()
	host, portN, hits, release := firstCheckHangs(t)
	moved := newProbeServer(t, "")
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(time.Minute, 50*time.Second))
	in := discovery.Instance{ID: "web-1", Service: "web", Host: host, Port: portN, Weight: 1, HealthPath: "/health",
		RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
	addInstance(t, r, in)
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	untilFirstCheck(t, r, clock, hits, time.Minute) // of the old address, which hangs
	at := moved.instance("web")
	at.ID = in.ID
	rewritten(t, r, at)
	clock.Advance(time.Second) // the next scan finds it moved
	discovery.StepHealth(r)
	release() // the old address answers: 200
	discovery.SettleHealth(r)
	if h := healthOf(t, r, "web", in.ID); moved.hits.Load() == 0 && h.Status != discovery.StatusUnknown {
		t.Fatalf("moved to %s, never checked there: %v (last check %v); want unknown", at.Addr(), h.Status, h.LastCheck.Sub(t0))
	}
}

// firstCheckHangs starts a server whose first request waits until release
// is called (or the request ends), and which answers 200 to the others:
// a check in flight while the test does something. Its hits count the
// requests; the test's end releases the first.
func firstCheckHangs(t *testing.T) (host string, port int, hits *atomic.Int64, release func()) {
	t.Helper()
	gate := make(chan struct{})
	hits = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			select {
			case <-gate:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	h, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ = strconv.Atoi(p)
	return h, port, hits, release
}

// untilFirstCheck moves the clock in steps, using service web, until the
// first check (due within interval and a scan) has reached its server
// (hits), and fails if none has within 5 s more of real time.
func untilFirstCheck(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock, hits *atomic.Int64, interval time.Duration) {
	t.Helper()
	for start := clock.Now(); hits.Load() == 0 && clock.Now().Sub(start) < interval+2*time.Second; {
		clock.Advance(hStep)
		discovery.StepHealth(r)
		_, _ = r.Get(context.Background(), "web")
		time.Sleep(time.Millisecond) // lets a started check reach the server
	}
	waitFor(t, 5*time.Second, "a check reaching the server", func() bool { return hits.Load() != 0 })
}

// casGate is a go-redis hook that holds the first compare-and-set of a
// shared health state (the one script with a single key, the health hash)
// until released: a check's result on its way to Redis.
type casGate struct {
	once    sync.Once
	held    chan struct{} // closed when the write is held
	release chan struct{}
}

func (g *casGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *casGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *casGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && len(args) > 3 &&
			fmt.Sprint(args[2]) == "1" && strings.Contains(fmt.Sprint(args[3]), ":health:{") {
			g.once.Do(func() {
				close(g.held)
				<-g.release
			})
		}
		return next(ctx, cmd)
	}
}

// With Redis, a check of an instance's old address whose result was on its
// way to Redis when the instance moved says nothing of the new address
// either: the move forgot the verdict, and the old check's pass, written
// after, became the shared state of the instance at its new address, in
// this process (healthy, before its new address was checked at all) and in
// every other.
func TestCheckOfTheOldAddressWrittenAfterTheMoveDoesNotJudgeTheNew(t *testing.T) {
	for _, k := range redisWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			old, moved := newProbeServer(t, ""), newProbeServer(t, "")
			clock := discoverytest.NewClock(t0)
			w := newWorld(t, k)
			gate := &casGate{held: make(chan struct{}), release: make(chan struct{})}
			w.rdb.AddHook(gate)
			released := false
			defer func() {
				if !released {
					close(gate.release)
				}
			}()
			r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(time.Minute, 5*time.Second),
				discovery.WithRedisTimeout(5*time.Second)) // the client as given, with its hooks
			in := old.instance("web")
			in.ID = "web-1"
			addInstance(t, r, in)
			if _, err := r.Get(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			for start := clock.Now(); clock.Now().Sub(start) < time.Minute+2*time.Second; {
				select {
				case <-gate.held:
				default:
					clock.Advance(hStep)
					discovery.StepHealth(r)
					_, _ = r.Get(ctx, "web")
					time.Sleep(time.Millisecond)
					continue
				}
				break
			}
			select {
			case <-gate.held: // the old address passed; its result waits for Redis
			case <-time.After(5 * time.Second):
				t.Fatal("no check result of the old address went to Redis")
			}
			at := moved.instance("web")
			at.ID = in.ID
			rewritten(t, r, at)
			clock.Advance(time.Second) // the next scan finds it moved
			discovery.StepHealth(r)
			released = true
			close(gate.release)
			discovery.SettleHealth(r)
			if h := healthOf(t, r, "web", in.ID); moved.hits.Load() == 0 && h.Status != discovery.StatusUnknown {
				t.Fatalf("moved to %s, never checked there: %v (last check %v, by the old address's check); want unknown",
					at.Addr(), h.Status, h.LastCheck.Sub(t0))
			}
			raw, err := w.rdb.HGet(ctx, w.ns+":health:{web}", in.ID).Result()
			if moved.hits.Load() == 0 && err == nil {
				if hs, derr := health.Decode(raw); derr == nil && hs.Status != discovery.StatusUnknown {
					t.Fatalf("shared state of %s at its new address, never checked there: %v; want none or unknown", in.ID, hs.Status)
				}
			}
		})
	}
}
