package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// EnvLoad sets how long TestLoad runs (a Go duration); .ci/run runs it for
// a minute on its own, without the race detector.
const EnvLoad = "DISCOVERY_TEST_LOAD"

// 20,000 Get+Pick pairs a second across 4 Registries (50 services of 10
// instances, looked up in a Zipf mix) while 1% of the instances change
// every second: p99 Get under 1 ms, no errors, and the goroutines back to
// their number before the Registries once they are closed.
func TestLoad20kGetPickPerSecondP99GetUnder1msNoErrorsGoroutinesBack(t *testing.T) {
	duration := 5 * time.Second
	if v := os.Getenv(EnvLoad); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvLoad, v, err)
		}
		duration = d
	}
	const (
		registries = 4
		workers    = 2 // per Registry
		rate       = 20000
		services   = 50
		perService = 10
	)
	ctx := context.Background()
	k := worldKind{name: "sqlite", sql: sqlite}
	if os.Getenv(testutil.EnvPostgres) != "" || testutil.Required() {
		k = worldKind{name: "postgres", sql: testutil.Postgres}
	}
	w := newWorld(t, k)
	addr, db, _ := testutil.RedisAddr(t)
	var (
		opts    [registries][]discovery.Option
		clients []redis.UniversalClient
	)
	for i := range opts {
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db, MaxRetries: -1})
		clients = append(clients, rdb)
		opts[i] = append(append([]discovery.Option{}, w.options...), discovery.WithRedis(rdb))
	}
	_ = testutil.RedisClient(t, addr, db, w.ns) // deletes the test's keys at the end
	baseline := runtime.NumGoroutine()

	var regs []*discovery.Registry
	for i := range registries {
		r, err := discovery.New(opts[i]...)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	closed := false
	closeAll := func() {
		if !closed {
			closed = true
			for _, r := range regs {
				_ = r.Close()
			}
			// The Redis clients are the caller's: it closes them after the
			// Registries (their pooled connections hold goroutines of the
			// in-process Redis).
			for _, c := range clients {
				_ = c.Close()
			}
		}
	}
	defer closeAll()
	var leases []*discovery.Registration
	for s := range services {
		for i := range perService {
			in := inst(fmt.Sprintf("svc-%02d", s), fmt.Sprintf("10.1.%d.%d", s, i+1), 8080)
			leases = append(leases, mustRegister(t, regs[(s*perService+i)%registries], in))
		}
	}

	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errs    atomic.Int64
		firstMu sync.Mutex
		first   error
		lat     = make([][]time.Duration, registries*workers)
	)
	fail := func(err error) {
		if errs.Add(1) == 1 {
			firstMu.Lock()
			first = err
			firstMu.Unlock()
		}
	}
	start := time.Now()
	for wi := range registries * workers {
		r := regs[wi%registries]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(wi), 7))
			zipf := rand.NewZipf(rng, 1.1, 1, services-1)
			names := make([]string, services)
			for i := range names {
				names[i] = fmt.Sprintf("svc-%02d", i)
			}
			perWorker := float64(rate) / float64(registries*workers)
			samples := make([]time.Duration, 0, int(perWorker*duration.Seconds())+1024)
			done := 0
			for {
				select {
				case <-stop:
					lat[wi] = samples
					return
				default:
				}
				due := int(perWorker*time.Since(start).Seconds()) - done
				for range due {
					name := names[zipf.Uint64()]
					t0 := time.Now()
					svc, err := r.Get(ctx, name)
					samples = append(samples, time.Since(t0))
					if err != nil || len(svc.Instances) == 0 {
						fail(fmt.Errorf("Get %s: %v", name, err))
					}
					sel, err := r.Pick(ctx, name)
					if err != nil {
						fail(fmt.Errorf("Pick %s: %v", name, err))
						continue
					}
					sel.Done(nil)
				}
				done += due
				time.Sleep(time.Millisecond)
			}
		}()
	}
	// 1% of the instances change every second: 5 weight changes a second.
	changes := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Second / time.Duration(len(leases)/100))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := leases[rng.IntN(len(leases))].SetWeight(ctx, 1+rng.IntN(100)); err != nil {
				fail(fmt.Errorf("SetWeight: %v", err))
			}
			changes++
		}
	}()
	time.Sleep(duration)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	for _, s := range lat {
		all = append(all, s...)
	}
	slices.Sort(all)
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	var st discovery.Stats
	for _, r := range regs {
		s := r.Stats()
		for i := range s.Lookups {
			st.Lookups[i] += s.Lookups[i]
		}
		st.StoreReads += s.StoreReads
		st.Invalidations += s.Invalidations
	}
	closeAll()
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= baseline {
			break
		}
	}
	got := float64(len(all)) / elapsed.Seconds()
	t.Logf("%v on %s: %.0f Get+Pick pairs/s (target %d), %d weight changes; Get p50 %v p99 %v p99.9 %v max %v; lookups L1 %d L2 %d L3 %d, %d invalidations; %d errors; goroutines %d before, %d after Close (race detector: %v)",
		duration, k.name, got, rate, changes, q(0.5), q(0.99), q(0.999), all[len(all)-1], st.Lookups[discovery.LayerL1], st.Lookups[discovery.LayerL2], st.Lookups[discovery.LayerL3],
		st.Invalidations, errs.Load(), baseline, after, raceEnabled)
	if n := errs.Load(); n != 0 {
		t.Fatalf("%d errors; first: %v", n, first)
	}
	// The rate and the latency are judged without the race detector (CI's
	// one-minute run): with it, and the other packages' tests sharing two
	// cores, the machine can fall short (17,225 pairs/s once, 19,900 alone)
	// while the run still shows what it is for there: no race, no error,
	// no goroutine left.
	if got < 0.95*rate {
		if !raceEnabled {
			t.Fatalf("reached %.0f pairs/s; want %d (the machine could not keep up: the test proves nothing)", got, rate)
		}
		t.Logf("reached %.0f pairs/s under the race detector; the rate is judged in a run without it", got)
	}
	if !raceEnabled && q(0.99) >= time.Millisecond {
		t.Fatalf("Get p99 = %v; want under 1ms", q(0.99))
	}
	if after > baseline {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close; %d before the Registries:\n%s", after, baseline, buf[:runtime.Stack(buf, true)])
	}
}
