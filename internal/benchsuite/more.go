package benchsuite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// Strategies are the strategies the pick benchmarks cover.
var Strategies = []discovery.Strategy{
	discovery.StrategyP2CEWMA, discovery.StrategyRoundRobin, discovery.StrategyWeightedRoundRobin,
	discovery.StrategyLeastConnections, discovery.StrategyHealthBased, discovery.StrategyConsistentHash,
	discovery.StrategyRandom,
}

func pickRegistry(b *testing.B, n int, opts ...discovery.Option) *discovery.Registry {
	b.Helper()
	r := Registry(b, n, append([]discovery.Option{discovery.WithStore(discoverytest.NewBackend())}, opts...)...)
	if _, err := r.Get(context.Background(), Service); err != nil {
		b.Fatal(err)
	}
	return r
}

// Pick times Pick alone with the Registry's strategy set to s (WithStrategy,
// as a service is configured; consistent_hash also passes its HashKey):
// Done is never called, so in-flight counts only grow and no instance has a
// latency average: p2c_ewma compares the costs of instances without one (0
// or a penalty), the other strategies do their usual arithmetic. PickDone
// times the pair, with averages.
func Pick(s discovery.Strategy, n int) func(*testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		r := pickRegistry(b, n, discovery.WithStrategy(s))
		var opts []discovery.PickOption
		if s == discovery.StrategyConsistentHash {
			opts = append(opts, discovery.HashKey("user-42"))
		}
		if sel, err := r.Pick(ctx, Service, opts...); err != nil || sel.Strategy != s {
			b.Fatalf("Pick = %v, %v; want strategy %v", sel.Strategy, err, s)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := r.Pick(ctx, Service, opts...); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// GetThenPick times a Get followed by a Pick (p2c_ewma, 10 instances), as a
// caller that looks a service up and then chooses an instance does.
func GetThenPick(b *testing.B) { getPick(b, true, true) }

// GetAlone times Get as GetThenPick calls it, without the Pick.
func GetAlone(b *testing.B) { getPick(b, true, false) }

// PickAlone times Pick as GetThenPick calls it (no options), without the Get.
func PickAlone(b *testing.B) { getPick(b, false, true) }

// getPick is the loop of the three above, so that they differ only in the
// calls they make.
func getPick(b *testing.B, get, pick bool) {
	ctx := context.Background()
	r := pickRegistry(b, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if get {
			if _, err := r.Get(ctx, Service); err != nil {
				b.Fatal(err)
			}
		}
		if pick {
			if _, err := r.Pick(ctx, Service); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// PickDone times Pick then Done with p2c_ewma, with latencies that vary
// from request to request (1 to 4 ms in turn) as real ones do: an average
// then differs from instance to instance, and a faster sample decays it
// (math.Exp). With every latency equal, as here before, every Done skipped
// that and every pick compared equal costs, which made the pair a third
// cheaper than steady use.
func PickDone(b *testing.B) { PickDoneWith(discovery.StrategyP2CEWMA)(b) }

// PickDoneWith is PickDone with the Registry's strategy set to s: steady
// use, where in-flight counts go back down (Pick alone only raises them).
func PickDoneWith(s discovery.Strategy) func(*testing.B) {
	return func(b *testing.B) { pickDone(b, s) }
}

func pickDone(b *testing.B, s discovery.Strategy) {
	pickDoneOn(b, pickRegistry(b, 10, discovery.WithStrategy(s)))
}

// pickDoneOn times Pick and Done of r's Service, the latencies reported
// varying from request to request (1 to 4 ms in turn).
func pickDoneOn(b *testing.B, r *discovery.Registry) {
	ctx := context.Background()
	lat := [...]time.Duration{time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		sel, err := r.Pick(ctx, Service)
		if err != nil {
			b.Fatal(err)
		}
		sel.DoneLatency(nil, lat[i%len(lat)])
		i++
	}
}

// PickParallel times Pick and Done from every core at once.
func PickParallel(b *testing.B) {
	ctx := context.Background()
	r := pickRegistry(b, 10)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sel, err := r.Pick(ctx, Service)
			if err != nil {
				b.Fatal(err)
			}
			sel.DoneLatency(nil, time.Millisecond)
		}
	})
}

// PickCanary times Pick alone (p2c_ewma, as Pick does) over n instances
// of which one, a canary, has weight 1 and the others the default weight,
// 100: weights that differ make p2c_ewma draw a weight class first.
func PickCanary(n int) func(*testing.B) {
	return func(b *testing.B) {
		ctx := context.Background()
		r := canaryRegistry(b, n)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := r.Pick(ctx, Service); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// PickDoneCanary is PickDone over 10 instances, one of them a canary of
// weight 1 (PickCanary).
func PickDoneCanary(b *testing.B) { pickDoneOn(b, canaryRegistry(b, 10)) }

// canaryRegistry is pickRegistry's service of n instances, the last of
// them registered with weight 1.
func canaryRegistry(b *testing.B, n int) *discovery.Registry {
	b.Helper()
	r := Registry(b, n-1, discovery.WithStore(discoverytest.NewBackend()))
	if _, err := r.Register(context.Background(), discovery.Instance{Service: Service, Host: "10.1.0.1", Port: 8080, Weight: 1,
		Zone: "eu-1a", Tags: []string{"primary"}, Metadata: map[string]string{"team": "core"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := r.Get(context.Background(), Service); err != nil {
		b.Fatal(err)
	}
	return r
}

// ColdStampede times 1000 goroutines looking up one cold service at once,
// and reports how many store reads that took (per 1000 Gets).
func ColdStampede(b *testing.B) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	seed := Registry(b, 10, discovery.WithStore(backend))
	_ = seed
	var reads int64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r, err := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks())
		if err != nil {
			b.Fatal(err)
		}
		before := backend.Loads()
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := r.Get(ctx, Service); err != nil {
					b.Error(err)
				}
			}()
		}
		b.StartTimer()
		close(start)
		wg.Wait()
		b.StopTimer()
		reads += backend.Loads() - before
		_ = r.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(reads)/float64(b.N), "store-reads/op")
}

// Scale loads 10,000 services of 10 instances each and looks them up with a
// Zipf-distributed mix through an L1 sized for 1,000 services (the seed's L1
// capacity). It reports the L1 hit rate and the memory an L1 entry of a
// 10-instance service takes.
func Scale(b *testing.B) {
	const services, instances = 10000, 10
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	exp := time.Now().Add(1000 * time.Hour)
	for s := range services {
		for i := range instances {
			in := discovery.Instance{ID: fmt.Sprint("i", i), Service: fmt.Sprintf("svc-%05d", s), Host: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1),
				Port: 8080, Weight: 100, Zone: "eu-1a", Version: "v1", Tags: []string{"primary"}, Metadata: map[string]string{"team": "core"},
				HealthPath: "/health", RegisteredAt: time.Now(), ExpiresAt: exp}
			if _, err := backend.Register(ctx, &in); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Memory: an L1 big enough for everything, filled with 1,000 services.
	big, err := discovery.New(discovery.WithStore(backend), discovery.WithCacheSize(services), discovery.WithoutHealthChecks())
	if err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for s := range 1000 {
		if _, err := big.Get(ctx, fmt.Sprintf("svc-%05d", s)); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perService := float64(after.HeapAlloc-before.HeapAlloc) / 1000
	_ = big.Close()

	r, err := discovery.New(discovery.WithStore(backend), discovery.WithCacheSize(1000), discovery.WithoutHealthChecks())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, services-1)
	names := make([]string, services)
	for s := range names {
		names[s] = fmt.Sprintf("svc-%05d", s)
	}
	for range 200000 { // warm up: let the admission policy learn the mix
		_, _ = r.Get(ctx, names[zipf.Uint64()])
	}
	hits := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := r.Lookup(ctx, names[zipf.Uint64()])
		if err != nil {
			b.Fatal(err)
		}
		if res.Layer == discovery.LayerL1 {
			hits++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(hits)/float64(b.N), "l1-hit-rate")
	b.ReportMetric(perService, "l1-bytes/service")
}

// Invalidation times a change made on one Registry until another sees it,
// over Redis pub/sub: from the moment the writer's PUBLISH leaves for Redis
// (p50-ns, p99-ns), as FloorPubSub times its bare PUBLISH, and from the
// write's start (total-p50-ns, total-p99-ns), its database transaction
// included.
func Invalidation(b *testing.B) {
	ctx := context.Background()
	n := ns(b)
	db, _ := DB(b, n)
	addr, dbn, _ := testutil.RedisAddr(b)
	opts := func(rdb redis.UniversalClient) []discovery.Option {
		return []discovery.Option{discovery.WithDB(db), discovery.WithNamespace(n), discovery.WithRedis(rdb)}
	}
	// The writer's Redis timeout is its client's own (1 s), so the Registry
	// uses the client as given, hook included (a shorter one would have it
	// use a clone without hooks).
	sent := &publishClock{}
	wrdb := testutil.RedisClient(b, addr, dbn, n)
	wrdb.AddHook(sent)
	a := Registry(b, 0, append(opts(wrdb), discovery.WithRedisTimeout(time.Second))...)
	other := Registry(b, 0, opts(testutil.RedisClient(b, addr, dbn, n))...)
	g, err := a.Register(ctx, discovery.Instance{Service: Service, Host: "10.0.0.1", Port: 1})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := other.Get(ctx, Service); err != nil {
		b.Fatal(err)
	}
	// The other Registry is waited on as the floor's subscriber is: blocked
	// on a channel (Watch), not polling. A poller that never blocks keeps
	// the scheduler from polling the network (on 2 cores the change message
	// then waits for sysmon, up to 10 ms), and one that sleeps wakes on the
	// netpoller's millisecond; either measures the benchmark, not the
	// library. Watchers hear of a change after L1 holds it, so each event is
	// checked against a Lookup.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := other.Watch(wctx, Service)
	if err != nil {
		b.Fatal(err)
	}
	drain := func() {
		for {
			select {
			case <-events:
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	drain() // the current state
	after, total := make(durations, b.N), make(durations, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := g.SetWeight(ctx, 1+i%100); err != nil {
			b.Fatal(err)
		}
		published := sent.at.Load()
		if published < start.UnixNano() {
			b.Fatalf("SetWeight returned without publishing the change")
		}
		want := g.Revision()
		for ev := range events {
			if ev.Revision >= want {
				break
			}
		}
		now := time.Now()
		if res, err := other.Lookup(ctx, Service); err != nil || res.Revision < want {
			b.Fatalf("watch event for revision %d before a Lookup saw it (%d, %v)", want, res.Revision, err)
		}
		after[i], total[i] = now.Sub(time.Unix(0, published)), now.Sub(start)
	}
	b.StopTimer()
	after.report(b)
	slicesSortDur(total)
	b.ReportMetric(float64(total[len(total)/2]), "total-p50-ns")
	b.ReportMetric(float64(total[len(total)*99/100]), "total-p99-ns")
}

// publishClock notes when its client sends a PUBLISH.
type publishClock struct{ at atomic.Int64 }

func (h *publishClock) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *publishClock) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *publishClock) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "publish" {
			h.at.Store(time.Now().UnixNano())
		}
		return next(ctx, cmd)
	}
}

func slicesSortDur(d durations) {
	for i := 1; i < len(d); i++ { // insertion sort is plenty for benchmark sizes
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

// FloorPubSub times a bare go-redis PUBLISH until another client's
// subscription receives it.
func FloorPubSub(b *testing.B) {
	ctx := context.Background()
	n := ns(b)
	addr, dbn, _ := testutil.RedisAddr(b)
	pub, sub := testutil.RedisClient(b, addr, dbn, n), testutil.RedisClient(b, addr, dbn, n)
	ps := sub.Subscribe(ctx, n+":floor")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription confirmation
		b.Fatal(err)
	}
	ch := ps.Channel()
	d := make(durations, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := pub.Publish(ctx, n+":floor", "1 db_svc").Err(); err != nil {
			b.Fatal(err)
		}
		<-ch
		d[i] = time.Since(start)
	}
	b.StopTimer()
	d.report(b)
}
