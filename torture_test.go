package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// The torture test: many goroutines call random operations of the whole
// public API of several Registries sharing one backend, with contexts
// cancelled at random points and Close racing with every call. It runs
// one brief round per world by default; DISCOVERY_TORTURE_SEED picks the
// first seed (5 by default), DISCOVERY_TORTURE_ROUNDS the number of rounds
// (seeds) per world, DISCOVERY_TORTURE_WORKERS the goroutines and
// DISCOVERY_TORTURE_MS how long they run in each phase, e.g.
//
//	DISCOVERY_TORTURE_SEED=100 DISCOVERY_TORTURE_ROUNDS=10 DISCOVERY_TORTURE_MS=2000 go test -race -run TestTorture .
//
// Invariants: no panic or race (-race), every call returns within a bound
// after Close (else the goroutines are dumped), calls begun after Close
// returned get ErrClosed (and return at once), Watch channels end, every
// goroutine ends (goleak after each round, and no connection of a
// Registry's Transport is left open), in-flight counts are 0 once every
// Selection is Done, Stats never go back and count every Pick and every
// read exactly, every live Registration's instance is in the store, and
// nothing is left in it after the Closes but writes whose outcome was
// unknown.
func TestTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("a torture test")
	}
	// Seed 5: active checks, a close drain and a small L1 (see below).
	seed := uint64(5)
	if s := os.Getenv("DISCOVERY_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	rounds := envInt(t, "DISCOVERY_TORTURE_ROUNDS", 1)
	workers := envInt(t, "DISCOVERY_TORTURE_WORKERS", 8)
	ms := envInt(t, "DISCOVERY_TORTURE_MS", 200)
	t.Logf("seed %d, %d rounds, %d ms", seed, rounds, ms)
	for _, k := range []worldKind{allWorlds[0], allWorlds[1], allWorlds[2], allWorlds[4], allWorlds[5]} {
		for i := range rounds {
			s := seed + uint64(i)
			t.Run(fmt.Sprintf("%s/seed=%d", k.name, s), func(t *testing.T) {
				// Run last: every goroutine of the round has ended once its
				// Registries, servers and clients are closed.
				t.Cleanup(func() { goleak.VerifyNone(t, testutil.LeakOptions()...) })
				opts := []discovery.Option{discovery.WithLeaseTTL(3 * time.Second), discovery.WithCloseTimeout(3 * time.Second)}
				if s%2 == 1 { // active checks (of loopback addresses only) and a close drain
					opts = append(opts, discovery.WithHealthCheck(100*time.Millisecond, 50*time.Millisecond),
						discovery.WithHealthThresholds(1, 1), discovery.WithCloseDrain(150*time.Millisecond))
				}
				if s%3 == 2 { // an L1 of two services for four: evictions fold counts into the Registry's (Stats)
					opts = append(opts, discovery.WithCacheSize(2))
				}
				w := newWorld(t, k, opts...)
				torture(t, w, s, workers, time.Duration(ms)*time.Millisecond)
			})
		}
	}
}

// persistConns counts the HTTP client connections open in the process.
func persistConns() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "net/http.(*persistConn).readLoop(")
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var tortureServices = []string{"svc_a", "svc_b", "http_svc", "rt_svc"}

type tortureReg struct {
	r         *discovery.Registry
	closing   atomic.Bool // Close called
	closed    atomic.Bool // Close returned
	picks     atomic.Uint64
	answered  [5]atomic.Uint64 // lookups answered (nil, ErrNotFound, ErrNoHealthyInstances): Get, Lookup, Pick, Health, Snapshot
	transport bool
}

type tortureLease struct {
	owner int
	g     *discovery.Registration
	gone  atomic.Bool // Deregister, Drain or Close called (or under way)
}

type tortureState struct {
	t        *testing.T
	regs     []*tortureReg
	servers  []*httptest.Server
	mu       sync.Mutex
	leases   []*tortureLease
	unknown  map[string]bool // service/id whose Register or Update ended with its outcome unknown
	deregs   map[string]bool // registry/service/id that Registry.Deregister (or the admin handler) was called for
	watchers sync.WaitGroup
	clients  []*http.Client
	errsMu   sync.Mutex
	errs     []string
}

func (s *tortureState) fail(format string, args ...any) {
	s.errsMu.Lock()
	defer s.errsMu.Unlock()
	if len(s.errs) < 50 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

func torture(t *testing.T, w *world, seed uint64, nWorkers int, runFor time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 0))
	s := &tortureState{t: t, unknown: map[string]bool{}, deregs: map[string]bool{}}
	for range 2 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/fail" {
				w.WriteHeader(http.StatusInternalServerError)
			}
			_, _ = io.WriteString(w, "ok")
		}))
		t.Cleanup(srv.Close)
		s.servers = append(s.servers, srv)
	}
	conns := persistConns()
	const nRegs = 3
	for i := range nRegs {
		r, err := discovery.New(w.options...)
		if err != nil {
			t.Fatal(err)
		}
		tr := &tortureReg{r: r, transport: i == 0}
		s.regs = append(s.regs, tr)
		s.clients = append(s.clients, &http.Client{Transport: r.Transport()})
	}
	t.Cleanup(func() {
		for _, tr := range s.regs {
			_ = tr.r.Close()
		}
	})

	// Stats never go back.
	statsStop := make(chan struct{})
	var statsWG sync.WaitGroup
	for i, tr := range s.regs {
		statsWG.Add(1)
		go func() {
			defer statsWG.Done()
			prev := tr.r.Stats()
			for {
				select {
				case <-statsStop:
					return
				default:
				}
				cur := tr.r.Stats()
				if d := statsWentBack(prev, cur); d != "" {
					s.fail("registry %d: Stats went back: %s", i, d)
				}
				prev = cur
				time.Sleep(time.Millisecond)
			}
		}()
	}

	// Phase 1: workers on every registry; registry 2 closes at a random
	// point while they run.
	var workers sync.WaitGroup
	var inCall sync.Map // worker -> string (op) for the watchdog
	// work starts the workers, each on a stream of its own (seed, wk +
	// stream), until the channel it returns is closed.
	work := func(stream uint64) chan struct{} {
		stop := make(chan struct{})
		for wk := range nWorkers {
			workers.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(wk)+stream))
			go func() {
				defer workers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					s.randomOp(wrng, wk, &inCall)
				}
			}()
		}
		return stop
	}
	stop := work(1)
	closeAt := time.Duration(rng.Int64N(int64(runFor)))
	time.Sleep(closeAt)
	closeReg(s, 2)
	time.Sleep(runFor - closeAt)
	close(stop)
	watchdog(t, "workers after stop", 30*time.Second, workers.Wait, &inCall)

	// Phase 2, quiet: in-flight counts, picks counted, live registrations' rows.
	ctx := context.Background()
	for i, tr := range s.regs[:2] {
		for _, svc := range tortureServices {
			for _, id := range s.knownIDs(svc) {
				if n := discovery.InFlight(tr.r, svc, id); n != 0 {
					s.fail("registry %d: InFlight(%s, %s) = %d after every Done; want 0", i, svc, id, n)
				}
			}
		}
		if !tr.transport {
			st := tr.r.Stats()
			var lookups uint64
			for _, n := range st.Lookups {
				lookups += n
			}
			var ans [5]uint64
			for k := range ans {
				ans[k] = tr.answered[k].Load()
			}
			// Reads are counted exactly: Get, Lookup and Health answered
			// (Picks count in Picks, Snapshots nowhere).
			if want := ans[0] + ans[1] + ans[3]; lookups != want {
				s.fail("registry %d: Stats.Lookups %v (sum %d); want %d (Get %d, Lookup %d, Health %d answered)",
					i, st.Lookups, lookups, want, ans[0], ans[1], ans[3])
			}
			var picks uint64
			for _, n := range st.Picks {
				picks += n
			}
			if want := tr.picks.Load(); picks != want {
				s.fail("registry %d: Stats.Picks sum %d; want %d (the Picks that succeeded)", i, picks, want)
			}
		}
	}
	live := s.liveLeases()
	deadline := time.Now().Add(10 * time.Second) // a row another process deleted comes back at the next renewal (TTL/3)
	for _, l := range live {
		in := l.g.Instance()
		for {
			ok, err := s.inStore(ctx, in.Service, in.ID)
			if err != nil {
				t.Fatalf("store: %v", err)
			}
			if ok {
				break
			}
			if ended(l.g) {
				s.fail("live registration %s/%s (registry %d) ended on its own", in.Service, in.ID, l.owner)
				break
			}
			if time.Now().After(deadline) {
				s.fail("live registration %s/%s (registry %d): not in the store", in.Service, in.ID, l.owner)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Phase 3: workers again, and Close of the remaining registries races with them.
	stop = work(100)
	time.Sleep(time.Duration(rng.Int64N(int64(runFor))))
	var closers sync.WaitGroup
	for i := range 2 {
		closers.Add(1)
		go func() { defer closers.Done(); closeReg(s, i) }()
	}
	watchdog(t, "Close racing", 30*time.Second, closers.Wait, &inCall)
	// Ops after every Close: each returns ErrClosed (checked in randomOp).
	time.Sleep(20 * time.Millisecond)
	close(stop)
	watchdog(t, "workers after Close", 30*time.Second, workers.Wait, &inCall)
	watchdog(t, "Watch channels after Close", 10*time.Second, s.watchers.Wait, &inCall)
	close(statsStop)
	statsWG.Wait()
	// Close closed the Transports' idle connections, and those that were
	// in use then close as their requests end (checked before the
	// servers, which would close them, are).
	for wait := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) { // readLoops that are ending
		n := persistConns()
		if n <= conns {
			break
		}
		if time.Now().After(wait) {
			s.fail("%d connections of the Registries' Transports open after Close", n-conns)
			break
		}
	}

	// Phase 4: nothing left in the store but writes whose outcome was unknown,
	// and those only until their lease ends.
	for _, svc := range tortureServices {
		ids, err := s.liveInStore(ctx, svc)
		if err != nil {
			t.Fatalf("store: %v", err)
		}
		for _, id := range ids {
			s.mu.Lock()
			unk := s.unknown[svc+"/"+id]
			s.mu.Unlock()
			if !unk {
				s.fail("%s/%s still live in the store after every Close", svc, id)
			}
		}
	}
	s.errsMu.Lock()
	defer s.errsMu.Unlock()
	for _, e := range s.errs {
		t.Error(e)
	}
	if t.Failed() {
		t.Logf("rerun with DISCOVERY_TORTURE_SEED=%d", seed)
	}
}

func (tr *tortureReg) answer(k int, err error) {
	if err == nil || errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrNoHealthyInstances) {
		tr.answered[k].Add(1)
	}
}

func closeReg(s *tortureState, i int) {
	tr := s.regs[i]
	tr.closing.Store(true)
	if err := tr.r.Close(); err != nil {
		s.fail("registry %d: Close = %v", i, err)
	}
	tr.closed.Store(true)
}

func watchdog(t *testing.T, what string, d time.Duration, wait func(), inCall *sync.Map) {
	t.Helper()
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		var calls []string
		inCall.Range(func(k, v any) bool { calls = append(calls, fmt.Sprintf("worker %v: %v", k, v)); return true })
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		t.Fatalf("%s: still waiting after %v; calls under way: %s", what, d, strings.Join(calls, "; "))
	}
}

func (s *tortureState) knownIDs(svc string) []string {
	var ids []string
	if svc == "http_svc" {
		for _, srv := range s.servers {
			ids = append(ids, strings.TrimPrefix(srv.URL, "http://"))
		}
		return ids
	}
	for h := 2; h <= 5; h++ {
		ids = append(ids, fmt.Sprintf("127.0.0.%d:1", h))
	}
	return ids
}

func (s *tortureState) liveLeases() []*tortureLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only the latest Registration of an instance is live: a Register of the
	// same instance replaces the earlier one in the same process.
	key := func(l *tortureLease) string {
		in := l.g.Instance()
		return fmt.Sprint(l.owner, "/", in.Service, "/", in.ID)
	}
	regs := map[string]int{}
	for _, l := range s.leases {
		regs[key(l)]++
	}
	var out []*tortureLease
	for _, l := range s.leases {
		if l.gone.Load() || s.regs[l.owner].closing.Load() {
			continue
		}
		if ended(l.g) {
			// Replaced by a Register of the instance in the same
			// process, one that returned before this one did, or stopped
			// by a Registry.Deregister that found it before it was listed
			// here.
			if regs[key(l)] < 2 && !s.deregs[key(l)] {
				s.fail("registration %s ended with nothing that ends it", key(l))
			}
			continue
		}
		out = append(out, l)
	}
	return out
}

// ended reports whether g stopped renewing its lease.
func ended(g *discovery.Registration) bool {
	select {
	case <-g.Done():
		return true
	default:
		return false
	}
}

func (s *tortureState) inStore(ctx context.Context, svc, id string) (bool, error) {
	ids, err := s.liveInStore(ctx, svc)
	for _, x := range ids {
		if x == id {
			return true, err
		}
	}
	return false, err
}

func (s *tortureState) liveInStore(ctx context.Context, svc string) ([]string, error) {
	// Registry 0's store is the shared one (registries never wrap it).
	snap, err := s.regs[0].r.Store().Load(ctx, svc)
	if errors.Is(err, discovery.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	now := time.Now()
	for _, in := range snap.Instances {
		if in.Live(now) {
			ids = append(ids, in.ID)
		}
	}
	return ids, nil
}

// opCtx returns a context that is one of: background, already cancelled,
// with a short timeout, or cancelled by a timer at a random point.
func opCtx(rng *rand.Rand) (context.Context, context.CancelFunc) {
	switch rng.IntN(6) {
	case 0:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx, cancel
	case 1:
		return context.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(5*time.Millisecond))))
	case 2:
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Duration(rng.Int64N(int64(20*time.Millisecond))), cancel)
		return ctx, cancel
	default:
		return context.WithTimeout(context.Background(), 5*time.Second)
	}
}

// ok reports whether err is an answer the call may give: none, or one a
// caller branches on, or its context's error; after Close began, ErrClosed.
func (s *tortureState) check(i int, op string, closedBefore bool, ctx context.Context, err error, allowed ...error) {
	if closedBefore {
		if !errors.Is(err, discovery.ErrClosed) {
			s.fail("registry %d: %s after Close = %v; want ErrClosed", i, op, err)
		}
		return
	}
	if err == nil || errors.Is(err, discovery.ErrClosed) && s.regs[i].closing.Load() {
		return
	}
	if ctx != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return
	}
	if errors.Is(err, discovery.ErrUnavailable) {
		s.t.Logf("registry %d: %s = %v (a database that did not answer in time: allowed)", i, op, err)
		return
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	s.fail("registry %d: %s = %v (ctx err %v)", i, op, err, ctxErr(ctx))
}

func ctxErr(ctx context.Context) error {
	if ctx == nil {
		return nil
	}
	return ctx.Err()
}

func (s *tortureState) randomInstance(rng *rand.Rand) discovery.Instance {
	svc := tortureServices[rng.IntN(len(tortureServices))]
	if svc == "http_svc" {
		u := strings.TrimPrefix(s.servers[rng.IntN(len(s.servers))].URL, "http://")
		host, port, _ := strings.Cut(u, ":")
		p, _ := strconv.Atoi(port)
		return discovery.Instance{Service: svc, Host: host, Port: p}
	}
	in := discovery.Instance{Service: svc, Host: fmt.Sprintf("127.0.0.%d", rng.IntN(4)+2), Port: 1}
	if svc == "rt_svc" {
		in.Method = discovery.MethodRouter
	}
	return in
}

// markGone marks the registrations of in in registry i ended: a Register
// of it replaces them, and Registry.Deregister (or the admin handler's)
// stops them.
func (s *tortureState) markGone(i int, in discovery.Instance, deregister bool) {
	id := in.Host + ":" + strconv.Itoa(in.Port)
	s.mu.Lock()
	defer s.mu.Unlock()
	if deregister {
		s.deregs[fmt.Sprint(i, "/", in.Service, "/", id)] = true
	}
	for _, l := range s.leases {
		if l.owner == i && l.g.Instance().ID == id && l.g.Instance().Service == in.Service {
			l.gone.Store(true)
		}
	}
}

// wrote checks a write op through lease l, whose Registry was closed before
// it began if ownerClosed: then it must be ErrClosed; otherwise a failed
// one may have landed, and its instance's outcome is unknown.
func (s *tortureState) wrote(l *tortureLease, ownerClosed bool, op string, err error) {
	if err != nil && !errors.Is(err, discovery.ErrClosed) {
		s.mu.Lock()
		s.unknown[l.g.Instance().Service+"/"+l.g.Instance().ID] = true
		s.mu.Unlock()
	}
	if ownerClosed && !errors.Is(err, discovery.ErrClosed) {
		s.fail("%s of a registration of closed registry %d = %v; want ErrClosed", op, l.owner, err)
	}
}

func (s *tortureState) pickLease(rng *rand.Rand) *tortureLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.leases) == 0 {
		return nil
	}
	return s.leases[rng.IntN(len(s.leases))]
}

func (s *tortureState) randomOp(rng *rand.Rand, wk int, inCall *sync.Map) {
	i := rng.IntN(len(s.regs))
	tr := s.regs[i]
	r := tr.r
	closed := tr.closed.Load()
	ctx, cancel := opCtx(rng)
	defer cancel()
	svc := tortureServices[rng.IntN(len(tortureServices))]
	op := rng.IntN(30)
	inCall.Store(wk, fmt.Sprintf("op %d on registry %d (%s)", op, i, svc))
	defer inCall.Delete(wk)
	if closed {
		// A call on a closed Registry has nothing to wait for: a bound
		// far above what it takes, as a hang detector.
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 5*time.Second {
				s.fail("registry %d: op %d after Close took %v", i, op, d)
			}
		}()
	}
	switch op {
	case 0, 1, 2: // Register
		in := s.randomInstance(rng)
		var ropts []discovery.RegisterOption
		if in.Method == discovery.MethodRouter {
			fail := rng.IntN(3) == 0
			ropts = append(ropts, discovery.WithCheckFunc(func(ctx context.Context) error {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Millisecond):
				}
				if fail {
					return errors.New("router down")
				}
				return nil
			}), discovery.WithConfigFunc(func(ctx context.Context, cfg json.RawMessage) error { return nil }))
		}
		g, err := r.Register(ctx, in, ropts...)
		id := in.Host + ":" + strconv.Itoa(in.Port)
		if err != nil {
			if !errors.Is(err, discovery.ErrClosed) {
				s.mu.Lock()
				s.unknown[in.Service+"/"+id] = true
				s.mu.Unlock()
			}
		} else {
			// The new Registration replaces any earlier one of the instance
			// in the same process.
			s.markGone(i, in, false)
			s.mu.Lock()
			s.leases = append(s.leases, &tortureLease{owner: i, g: g})
			s.mu.Unlock()
		}
		s.check(i, "Register", closed, ctx, err)
	case 3: // Registration.Update
		if l := s.pickLease(rng); l != nil {
			ownerClosed := s.regs[l.owner].closed.Load()
			err := l.g.Update(ctx, func(in *discovery.Instance) {
				in.Metadata = map[string]string{"n": strconv.Itoa(rng.IntN(100))}
			})
			s.wrote(l, ownerClosed, "Update", err)
			if !ownerClosed && err != nil && !errors.Is(err, discovery.ErrClosed) && !errors.Is(err, discovery.ErrUnavailable) && ctx.Err() == nil {
				s.fail("Update = %v", err)
			}
		}
	case 4: // Drain
		if l := s.pickLease(rng); l != nil && rng.IntN(3) == 0 {
			l.gone.Store(true)
			dctx, dcancel := context.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(50*time.Millisecond))))
			start := time.Now()
			err := l.g.Drain(dctx)
			dcancel()
			// Its context bounds the wait, never the deregistration.
			if err != nil && !errors.Is(err, discovery.ErrUnavailable) {
				s.fail("Drain = %v after %v", err, time.Since(start))
			}
			if err != nil {
				// The database did not answer: the row stays until
				// Deregister is called again (or Close).
				_ = l.g.Deregister(context.Background())
			}
		}
	case 5: // Registration.Deregister / Close
		if l := s.pickLease(rng); l != nil && rng.IntN(2) == 0 {
			l.gone.Store(true)
			var err error
			if rng.IntN(2) == 0 {
				err = l.g.Deregister(ctx)
			} else {
				err = l.g.Close()
				ctx = nil
			}
			if err != nil && !(ctx != nil && ctx.Err() != nil) && !errors.Is(err, discovery.ErrClosed) && !errors.Is(err, discovery.ErrUnavailable) {
				s.fail("Registration Deregister/Close = %v", err)
			}
			if err != nil {
				// A failed Deregister leaves the row until called again.
				for range 3 {
					if err = l.g.Deregister(context.Background()); err == nil {
						break
					}
				}
				if err != nil {
					s.fail("Registration Deregister again = %v", err)
				}
			}
		}
	case 6: // Registry.Deregister of any instance
		in := s.randomInstance(rng)
		s.markGone(i, in, true)
		err := r.Deregister(ctx, in.Service, in.Host+":"+strconv.Itoa(in.Port))
		s.check(i, "Deregister", closed, ctx, err, discovery.ErrNotFound)
	case 7, 8:
		_, err := r.Get(ctx, svc)
		tr.answer(0, err)
		s.check(i, "Get", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
	case 9:
		_, err := r.Lookup(ctx, svc)
		tr.answer(1, err)
		s.check(i, "Lookup", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
	case 10, 11, 12:
		sel, err := r.Pick(ctx, svc)
		tr.answer(2, err)
		s.check(i, "Pick", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
		if err == nil {
			tr.picks.Add(1)
			var derr error
			if rng.IntN(4) == 0 {
				derr = errors.New("boom")
			}
			if rng.IntN(2) == 0 {
				time.Sleep(time.Duration(rng.Int64N(int64(time.Millisecond))))
			}
			sel.Done(derr)
		}
	case 13:
		in := s.randomInstance(rng)
		var oerr error
		if rng.IntN(2) == 0 {
			oerr = errors.New("boom")
		}
		err := r.ReportOutcome(in.Service, in.Host+":"+strconv.Itoa(in.Port), oerr, time.Millisecond)
		s.check(i, "ReportOutcome", closed, nil, err, discovery.ErrNotFound)
	case 14: // Watch
		wctx, wcancel := context.WithCancel(context.Background())
		ch, err := r.Watch(wctx, svc)
		s.check(i, "Watch", closed, wctx, err)
		if err != nil {
			wcancel()
			break
		}
		keep := rng.IntN(3) == 0 // some run until Close
		d := time.Duration(rng.Int64N(int64(30 * time.Millisecond)))
		s.watchers.Add(1)
		go func() {
			defer s.watchers.Done()
			defer wcancel()
			var timer <-chan time.Time
			if !keep {
				timer = time.After(d)
			}
			for {
				select {
				case _, ok := <-ch:
					if !ok {
						return
					}
				case <-timer:
					wcancel()
					timer = nil
				}
			}
		}()
	case 15:
		err := r.Invalidate(ctx, svc)
		s.check(i, "Invalidate", closed, ctx, err)
	case 16:
		_, err := r.Health(ctx, svc)
		tr.answer(3, err)
		s.check(i, "Health", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
	case 17:
		_, err := r.Overview(ctx)
		s.check(i, "Overview", closed, ctx, err)
	case 18:
		_ = r.Stats()
	case 19:
		_, err := r.UpdateConfig(ctx, svc, json.RawMessage(fmt.Sprintf(`{"n":%d}`, rng.IntN(1000))))
		s.check(i, "UpdateConfig", closed, ctx, err)
	case 20:
		_, rev, err := r.Config(ctx, svc)
		s.check(i, "Config", closed, ctx, err, discovery.ErrNotFound)
		if err == nil {
			_, err = r.UpdateConfigIf(ctx, svc, rev, json.RawMessage(fmt.Sprintf(`{"m":%d}`, rng.IntN(1000))))
			s.check(i, "UpdateConfigIf", closed, ctx, err, discovery.ErrConflict)
		}
	case 21:
		_, err := r.RollbackConfig(ctx, svc, int64(rng.IntN(5)+1))
		s.check(i, "RollbackConfig", closed, ctx, err, discovery.ErrNotFound)
	case 22: // the HTTP Transport (registry 0 only: Stats.Picks is checked on the others)
		c := s.clients[0]
		closed = s.regs[0].closed.Load()
		path := "/"
		if rng.IntN(4) == 0 {
			path = "/fail"
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://http_svc"+path, nil)
		resp, err := c.Do(req)
		if err == nil {
			if rng.IntN(3) > 0 {
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			_ = resp.Body.Close()
		}
		s.check(0, "Transport", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
	case 23:
		_, err := r.Services(ctx)
		s.check(i, "Services", closed, ctx, err)
	case 24:
		_, err := r.Snapshot(ctx, svc)
		tr.answer(4, err)
		s.check(i, "Snapshot", closed, ctx, err, discovery.ErrNotFound)
	case 25: // SetWeight, Config, Revision, Instance of a registration
		if l := s.pickLease(rng); l != nil {
			ownerClosed := s.regs[l.owner].closed.Load()
			_, _ = l.g.Config()
			_ = l.g.Revision()
			err := l.g.SetWeight(ctx, rng.IntN(3)*50)
			s.wrote(l, ownerClosed, "SetWeight", err)
		}
	case 26: // a second Close of a closed Registry waits for the first and returns nil
		if tr.closing.Load() {
			if err := r.Close(); err != nil {
				s.fail("registry %d: second Close = %v", i, err)
			}
		}
	case 28: // the admin handler: its reads and a deregistration (registry 0 only: Stats.Lookups are checked on the others)
		r, i = s.regs[0].r, 0
		closed = s.regs[0].closed.Load()
		h := r.AdminHandler()
		paths := []string{"/overview", "/services", "/services/" + svc, "/services/" + svc + "/config"}
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, paths[rng.IntN(len(paths))], nil)
		if rng.IntN(4) == 0 {
			in := s.randomInstance(rng)
			s.markGone(i, in, true)
			req = httptest.NewRequestWithContext(ctx, http.MethodDelete, "/services/"+in.Service+"/instances/"+in.Host+":"+strconv.Itoa(in.Port), nil)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusGatewayTimeout {
			s.fail("registry %d: admin %s %s = %d %s", i, req.Method, req.URL.Path, rec.Code, rec.Body.String())
		}
		if closed && rec.Code < 400 {
			s.fail("registry %d: admin %s %s after Close = %d; want an error", i, req.Method, req.URL.Path, rec.Code)
		}
	case 29: // HTTPClient, with its retries
		c := s.regs[0].r.HTTPClient()
		closed = s.regs[0].closed.Load()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://http_svc/", nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		s.check(0, "HTTPClient", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
	case 27:
		ss, err := r.Pick(ctx, svc, discovery.UseStrategy(discovery.Strategy(rng.IntN(int(discovery.StrategyRandom))+1)), discovery.HashKey("k"))
		tr.answer(2, err)
		s.check(i, "Pick(opts)", closed, ctx, err, discovery.ErrNotFound, discovery.ErrNoHealthyInstances)
		if err == nil {
			tr.picks.Add(1)
			ss.DoneLatency(nil, time.Millisecond)
		}
	}
}

// statsWentBack names a counter of cur below the same one of prev.
func statsWentBack(prev, cur discovery.Stats) string {
	type c struct {
		name string
		p, c uint64
	}
	cs := []c{
		{"Stale", prev.Stale, cur.Stale}, {"NotFound", prev.NotFound, cur.NotFound},
		{"StoreReads", prev.StoreReads, cur.StoreReads}, {"StoreErrors", prev.StoreErrors, cur.StoreErrors},
		{"L2Hits", prev.L2Hits, cur.L2Hits}, {"L2Misses", prev.L2Misses, cur.L2Misses},
		{"L2Errors", prev.L2Errors, cur.L2Errors}, {"L2DecodeErrors", prev.L2DecodeErrors, cur.L2DecodeErrors},
		{"L2Writes", prev.L2Writes, cur.L2Writes}, {"L2StaleWrites", prev.L2StaleWrites, cur.L2StaleWrites},
		{"Published", prev.Published, cur.Published}, {"Received", prev.Received, cur.Received},
		{"Invalidations", prev.Invalidations, cur.Invalidations}, {"Refreshes", prev.Refreshes, cur.Refreshes},
		{"Pushed", prev.Pushed, cur.Pushed}, {"PanicPicks", prev.PanicPicks, cur.PanicPicks},
		{"SelfPreservations", prev.SelfPreservations, cur.SelfPreservations}, {"Resyncs", prev.Resyncs, cur.Resyncs},
		{"ChecksPassed", prev.ChecksPassed, cur.ChecksPassed}, {"ChecksFailed", prev.ChecksFailed, cur.ChecksFailed},
		{"Ejections", prev.Ejections, cur.Ejections},
	}
	for l := range prev.Lookups {
		cs = append(cs, c{fmt.Sprintf("Lookups[%d]", l), prev.Lookups[l], cur.Lookups[l]})
	}
	for k := range prev.Picks {
		cs = append(cs, c{fmt.Sprintf("Picks[%d]", k), prev.Picks[k], cur.Picks[k]})
	}
	for _, x := range cs {
		if x.c < x.p {
			return fmt.Sprintf("%s %d -> %d", x.name, x.p, x.c)
		}
	}
	return ""
}
