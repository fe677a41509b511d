package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// oneInstance is a Registry on a fake clock with active checks, using a
// service of one instance served by p. It returns the instance ID.
func oneInstance(t *testing.T, p *probeServer, opts ...discovery.Option) (*discovery.Registry, *discoverytest.Clock, string) {
	t.Helper()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, append([]discovery.Option{discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout)}, opts...)...)
	in := p.instance("web")
	addInstance(t, r, in)
	if _, err := r.Get(context.Background(), "web"); err != nil { // this process uses the service
		t.Fatal(err)
	}
	return r, clock, in.ID
}

// nextCheck advances the fake clock until p has answered one more check
// and returns the time it took. It fails after two intervals.
func nextCheck(t *testing.T, r *discovery.Registry, clock *discoverytest.Clock, p *probeServer) time.Duration {
	t.Helper()
	start, before := clock.Now(), p.hits.Load()
	for p.hits.Load() == before {
		if clock.Now().Sub(start) > 2*hInterval {
			t.Fatalf("no check within %v", 2*hInterval)
		}
		step(clock, hStep, r)
		_, _ = r.Get(context.Background(), "web") // keep using the service
	}
	if n := p.hits.Load(); n != before+1 {
		t.Fatalf("%d checks in one step; want 1", n-before)
	}
	return clock.Now().Sub(start)
}

// Each way an instance can answer its health check ends in the right status
// after the right number of checks, each check within its timeout, and the
// status shows in Get.
func TestActiveCheckStates(t *testing.T) {
	const U, H, W, N = discovery.StatusUnhealthy, discovery.StatusHealthy, discovery.StatusWarning, discovery.StatusUnknown
	sent := testutil.NewSentinel(t)
	tests := []struct {
		name  string
		mode  mode
		want  []discovery.Status // after checks 1, 2, 3, 4
		score float64            // after the last
	}{
		{"healthy", modeOK, []discovery.Status{H, H, H, H}, 1},
		{"slow", modeSlow, []discovery.Status{H, H, H, H}, 0.4},
		{"500", mode500, []discovery.Status{N, N, U, U}, 0},
		{"429", mode429, []discovery.Status{W, W, W, W}, 0.6},
		{"redirecting", modeRedirect, []discovery.Status{N, N, U, U}, 0},
		{"endless body", modeEndless, []discovery.Status{H, H, H, H}, 1},
		{"hanging", modeHang, []discovery.Status{N, N, U, U}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProbeServer(t, "http://"+sent.Addr()+"/health")
			p.set(tt.mode)
			r, clock, id := oneInstance(t, p)
			var waited time.Duration
			for i, want := range tt.want {
				waited += nextCheck(t, r, clock, p)
				h := healthOf(t, r, "web", id)
				if h.Status != want {
					t.Fatalf("after check %d: status %v (%q); want %v", i+1, h.Status, h.LastError, want)
				}
				if got := viewStatus(t, r, "web", id); got != want {
					t.Fatalf("after check %d: Get shows %v; want %v", i+1, got, want)
				}
				// first check within one interval of use (+ the 1 s scan), then
				// one every 1.1-1.2 intervals
				if limit := time.Second + hInterval + time.Duration(i)*hInterval*12/10 + hStep; waited > limit {
					t.Fatalf("check %d came %v after start; want within %v", i+1, waited, limit)
				}
			}
			h := healthOf(t, r, "web", id)
			if len(h.History) != len(tt.want) {
				t.Fatalf("history has %d results; want %d", len(h.History), len(tt.want))
			}
			// The score is a weighted mean of the checks' samples since the
			// instance came up, each min(1, 100ms/response time), times 0.6
			// for a warning: between the least and the greatest of them, as
			// fast as the machine answered, and at most tt.score (modeSlow
			// answers in 250 ms at the earliest).
			lo, hi := 1.0, 0.0
			for _, c := range h.History {
				// A hanging check answers after hangFor at the earliest.
				if c.ResponseTime >= hangFor/2 {
					t.Fatalf("a check took %v; the timeout is %v", c.ResponseTime, hTimeout)
				}
				s := 0.0
				if c.Status == discovery.StatusHealthy || c.Status == discovery.StatusWarning {
					s = min(1, float64(100*time.Millisecond)/float64(c.ResponseTime))
				}
				if c.Status == discovery.StatusWarning {
					s *= 0.6
				}
				lo, hi = min(lo, s), max(hi, s)
			}
			if eps := 1e-9; h.Score < lo-eps || h.Score > hi+eps || h.Score > tt.score+eps {
				t.Fatalf("score %v; want between %v and %v (the checks' samples) and at most %v", h.Score, lo, hi, tt.score)
			}
			if (tt.want[3] != H) != (h.LastError != "") || h.LastCheck.IsZero() || h.CheckedBy != r.ProcessID() {
				t.Fatalf("health = %+v", h)
			}
			if tt.mode == modeSlow {
				// healthy, yet never picked: the error says why
				var nh *discovery.NoHealthyError
				if _, err := r.Pick(context.Background(), "web"); !errors.As(err, &nh) || nh.Slow != 1 {
					t.Fatalf("Pick of the slow instance = %v; want a NoHealthyError counting it Slow", err)
				}
			}
			t.Logf("%s: %v score %.2f after %v; last error %q", tt.name, h.Status, h.Score, waited, h.LastError)
		})
	}
	if n := sent.Accepted(); n != 0 {
		t.Fatalf("the redirect target accepted %d connections; want 0", n)
	}
}

// An instance that flips between behaviours moves with hysteresis: 3
// failures to go down, 2 passes to come back, 2 results of a kind to move
// between healthy and warning; one log line per change, none per check.
func TestStatusFollowsFlipsWithHysteresis(t *testing.T) {
	const U, H, W = discovery.StatusUnhealthy, discovery.StatusHealthy, discovery.StatusWarning
	p := newProbeServer(t, "")
	core, logs := observer.New(zap.InfoLevel)
	r, clock, id := oneInstance(t, p, discovery.WithLogger(zap.New(core)))
	steps := []struct {
		mode mode
		want discovery.Status
	}{
		{modeOK, H}, {modeOK, H}, {mode500, H}, {modeHang, H}, {mode500, U}, {modeOK, U}, {modeOK, H},
		{mode429, H}, {mode429, W}, {modeOK, W}, {modeOK, H}, {modeSlow, H},
	}
	for i, s := range steps {
		p.set(s.mode)
		nextCheck(t, r, clock, p)
		if h := healthOf(t, r, "web", id); h.Status != s.want {
			t.Fatalf("check %d (mode %d): %v; want %v", i+1, s.mode, h.Status, s.want)
		}
	}
	changes := logs.FilterMessage("discovery: instance health changed").All()
	var got []string
	for _, e := range changes {
		f := e.ContextMap()
		got = append(got, fmt.Sprintf("%v>%v", f["from"], f["to"]))
		if f["service"] != "web" || f["instance"] != id || f["score"] == nil || f["error"] == nil {
			t.Fatalf("log fields %v", f)
		}
	}
	want := "[unknown>healthy healthy>unhealthy unhealthy>healthy healthy>warning warning>healthy]"
	if fmt.Sprint(got) != want {
		t.Fatalf("logged changes %v; want %v", got, want)
	}
	if f := changes[1].ContextMap(); f["error"] == "" {
		t.Fatalf("the change to unhealthy logged no error: %v", f)
	}
}

// A flapping instance (pass, fail, pass, ...) changes status once (to
// healthy) and then never: no failure streak reaches the threshold.
func TestFlappingInstanceChangesAtMostOncePerWindow(t *testing.T) {
	p := newProbeServer(t, "")
	core, logs := observer.New(zap.InfoLevel)
	r, clock, id := oneInstance(t, p, discovery.WithLogger(zap.New(core)))
	for i := range 20 {
		p.set([]mode{modeOK, mode500}[i%2])
		nextCheck(t, r, clock, p)
	}
	if n := logs.FilterMessage("discovery: instance health changed").Len(); n != 1 {
		t.Fatalf("%d status changes in 20 flapping checks; want 1", n)
	}
	if h := healthOf(t, r, "web", id); h.Status != discovery.StatusHealthy || len(h.History) != 20 {
		t.Fatalf("health = %+v", h)
	}
}

// The first checks of many instances are spread evenly over one interval,
// and each later wait is 10-20% longer than the interval.
func TestCheckJitter(t *testing.T) {
	const n = 300
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(1000*time.Hour))
	discovery.SettleHealth(r) // the scan at t0 is over: the next one finds every registration
	var mu sync.Mutex
	checks := map[int][]time.Duration{}
	for i := range n {
		fn := func(context.Context) error {
			mu.Lock()
			checks[i] = append(checks[i], clock.Now().Sub(t0))
			mu.Unlock()
			return nil
		}
		in := discovery.Instance{Service: "router_svc", Host: "10.1.0.1", Port: 1 + i, Method: discovery.MethodRouter}
		if _, err := r.Register(ctx, in, discovery.WithCheckFunc(fn)); err != nil {
			t.Fatal(err)
		}
	}
	const fine = 50 * time.Millisecond
	for clock.Now().Sub(t0) < 5*hInterval {
		step(clock, fine, r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(checks) != n {
		t.Fatalf("%d instances checked; want %d", len(checks), n)
	}
	// The monitor found the registrations at its first scan after t0.
	var first []time.Duration
	var gaps []float64
	for _, ts := range checks {
		first = append(first, ts[0])
		for j := 1; j < len(ts); j++ {
			gaps = append(gaps, float64(ts[j]-ts[j-1])/float64(hInterval))
		}
	}
	sort.Slice(first, func(i, j int) bool { return first[i] < first[j] })
	start := time.Second // the scan that found the registrations
	var buckets [10]int
	for _, f := range first {
		off := f - start
		if off < 0 || off > hInterval+fine {
			t.Fatalf("a first check came %v after the scan; want within one interval", off)
		}
		buckets[min(9, int(off*10/hInterval))]++
	}
	for i, b := range buckets { // 30 expected per tenth of the interval
		if b < 12 || b > 55 {
			t.Fatalf("first checks per tenth of the interval: %v; want about %d each (tenth %d)", buckets, n/10, i)
		}
	}
	sort.Float64s(gaps)
	lo, hi := gaps[0], gaps[len(gaps)-1]
	tol := float64(fine) / float64(hInterval)
	if lo < 1.1-tol || hi > 1.2+tol || lo > 1.12 || hi < 1.18 {
		t.Fatalf("waits between checks span %.3f..%.3f intervals; want 1.1..1.2, spread across it", lo, hi)
	}
	t.Logf("first checks per tenth of the interval: %v; %d waits from %.3f to %.3f intervals", buckets, len(gaps), lo, hi)
}

// The monitor checks a service while this process uses it, stops once it is
// no longer looked up, and starts again when it is.
func TestMonitorFollowsUse(t *testing.T) {
	p := newProbeServer(t, "")
	r, clock, _ := oneInstance(t, p)
	for range 3 {
		nextCheck(t, r, clock, p)
	}
	// no lookups from now on
	for clock.Now().Sub(t0) < 2*time.Minute {
		step(clock, time.Second, r)
	}
	before := p.hits.Load()
	for range 60 { // 6 intervals without use
		step(clock, time.Second, r)
	}
	if n := p.hits.Load() - before; n != 0 {
		t.Fatalf("%d checks of a service nobody looked up for minutes; want 0", n)
	}
	if _, err := r.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	nextCheck(t, r, clock, p) // fails if no check comes within two intervals
}

// A check that hangs ends when the Registry closes, long before its timeout
// (50 s) or the end of the hang (hangFor), and no goroutine outlives Close.
func TestCloseStopsChecks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := newProbeServer(t, "")
	defer p.kill() // before the leak check
	p.set(modeHang)
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	r, err := discovery.New(discovery.WithStore(backend), discovery.WithClock(clock), discovery.WithHealthCheck(time.Minute, 50*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	addInstance(t, r, p.instance("web"))
	if _, err := r.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	for p.hits.Load() == 0 {
		clock.Advance(hStep) // without settling: the hanging check stays in flight
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= hangFor/3 {
		t.Fatalf("Close took %v with a check in flight; want well within %v", took, hangFor/3)
	}
}

func TestHealthOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		opt  discovery.Option
	}{
		{"timeout equal to interval", discovery.WithHealthCheck(time.Second, time.Second)},
		{"timeout above interval", discovery.WithHealthCheck(time.Second, 2*time.Second)},
		{"zero timeout", discovery.WithHealthTimeout(0)},
		{"tiny interval", discovery.WithHealthInterval(time.Millisecond)},
		{"timeout above default interval", discovery.WithHealthTimeout(discovery.DefaultHealthInterval)},
		{"per service timeout", discovery.WithServiceHealth("web", time.Second, time.Second)},
		{"per service name", discovery.WithServiceHealth("a/b", time.Second, 100*time.Millisecond)},
		{"thresholds", discovery.WithHealthThresholds(0, 3)},
		{"healthy threshold never reached", discovery.WithHealthThresholds(1<<20+1, 3)},
		{"unhealthy threshold never reached", discovery.WithHealthThresholds(2, 1<<20+1)},
		{"ejection failures never reached", discovery.WithOutlierEjection(1<<30+1, time.Second, time.Minute, 10)},
		{"ejection failures", discovery.WithOutlierEjection(-1, time.Second, time.Minute, 10)},
		{"ejection times", discovery.WithOutlierEjection(5, time.Minute, time.Second, 10)},
		{"ejection percent", discovery.WithOutlierEjection(5, time.Second, time.Minute, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := discovery.New(tt.opt)
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) {
				if r != nil {
					_ = r.Close()
				}
				t.Fatalf("New = %v; want a ValidationError", err)
			}
		})
	}
	r, err := discovery.New(discovery.WithHealthCheck(time.Second, 999*time.Millisecond), discovery.WithServiceHealth("web", time.Minute, time.Second),
		discovery.WithOutlierEjection(0, 0, 0, 0))
	if err != nil {
		t.Fatalf("valid options: %v", err)
	}
	_ = r.Close()
}

// An error from New must name the option the caller gave: one who wrote
// WithHealthInterval(time.Second) and was told of WithHealthCheck "2s >= 1s"
// looks for a call that is not in the code, and is not told that it is the
// default timeout (2 s) that the short interval clashes with.
func TestHealthTimingErrorNamesTheOptionGiven(t *testing.T) {
	tests := []struct {
		name string
		opts []discovery.Option
		want []string // in the error's text
	}{
		{"interval below the default timeout", []discovery.Option{discovery.WithHealthInterval(time.Second)},
			[]string{"WithHealthInterval", "2s", "WithHealthTimeout"}},
		{"timeout above the default interval", []discovery.Option{discovery.WithHealthTimeout(discovery.DefaultHealthInterval)},
			[]string{"WithHealthTimeout", "10s"}},
		{"tiny interval", []discovery.Option{discovery.WithHealthInterval(time.Millisecond)}, []string{"WithHealthInterval"}},
		{"zero timeout", []discovery.Option{discovery.WithHealthTimeout(0)}, []string{"WithHealthTimeout"}},
		{"both, apart", []discovery.Option{discovery.WithHealthInterval(time.Second), discovery.WithHealthTimeout(time.Second)},
			[]string{"WithHealthInterval", "WithHealthTimeout"}},
		{"both, together", []discovery.Option{discovery.WithHealthCheck(time.Second, time.Second)}, []string{"WithHealthCheck"}},
		// told "ejection time must be positive and at most the maximum", a
		// caller whose max was above its base time could not tell which bound
		{"ejection max too long", []discovery.Option{discovery.WithOutlierEjection(5, 30*time.Second, 2*discovery.MaxDuration, 10)},
			[]string{"WithOutlierEjection", "max ejection time", discovery.MaxDuration.String()}},
		{"ejection max below base", []discovery.Option{discovery.WithOutlierEjection(5, time.Minute, time.Second, 10)},
			[]string{"WithOutlierEjection", "max ejection time", "base"}},
		{"ejection base not positive", []discovery.Option{discovery.WithOutlierEjection(5, 0, time.Second, 10)},
			[]string{"WithOutlierEjection", "base ejection time", "positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := discovery.New(tt.opts...)
			if r != nil {
				_ = r.Close()
			}
			if !errors.Is(err, discovery.ErrInvalid) {
				t.Fatalf("New = %v; want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: %v; want it to say %q", err, w)
				}
			}
		})
	}
}

// A service's own interval applies to it alone.
func TestServiceHealthInterval(t *testing.T) {
	p := newProbeServer(t, "")
	r, clock, _ := oneInstance(t, p, discovery.WithServiceHealth("web", 2*time.Second, hTimeout))
	nextCheck(t, r, clock, p)
	for range 5 {
		if d := nextCheck(t, r, clock, p); d < 2200*time.Millisecond-hStep || d > 2400*time.Millisecond+hStep {
			t.Fatalf("checks %v apart; want 2.2-2.4 s (2 s + 10-20%%)", d)
		}
	}
}

// A router instance is checked by its own function, in the process that
// registered it, while it is registered.
func TestRouterCheckFunc(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
	var mu sync.Mutex
	fail := false
	calls := 0
	fn := func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("no deadline")
		}
		if fail {
			return errors.New("queue full")
		}
		return nil
	}
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.9.9.9", Port: 1, Method: discovery.MethodRouter}, discovery.WithCheckFunc(fn))
	if err != nil {
		t.Fatal(err)
	}
	id := g.Instance().ID
	until := func(want discovery.Status) {
		t.Helper()
		for start := clock.Now(); healthOf(t, r, "router_svc", id).Status != want; {
			if clock.Now().Sub(start) > 5*hInterval {
				t.Fatalf("not %v within 5 intervals: %+v", want, healthOf(t, r, "router_svc", id))
			}
			step(clock, time.Second, r)
		}
	}
	until(discovery.StatusHealthy)
	mu.Lock()
	fail = true
	mu.Unlock()
	until(discovery.StatusUnhealthy)
	if h := healthOf(t, r, "router_svc", id); h.LastError != "queue full" {
		t.Fatalf("last error %q", h.LastError)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := calls
	mu.Unlock()
	for range 30 {
		step(clock, time.Second, r)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != before {
		t.Fatalf("%d checks after Deregister; want 0", calls-before)
	}
}

// On the system clock (no fake): checks run on their own, and a failing
// instance goes unhealthy and comes back.
func TestActiveChecksOnTheSystemClock(t *testing.T) {
	p := newProbeServer(t, "")
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithHealthCheck(200*time.Millisecond, 100*time.Millisecond))
	in := p.instance("web")
	in.ExpiresAt = time.Now().Add(time.Hour)
	addInstance(t, r, in)
	status := func() discovery.Status {
		_, _ = r.Get(context.Background(), "web")
		return healthOf(t, r, "web", in.ID).Status
	}
	waitFor(t, 5*time.Second, "healthy", func() bool { return status() == discovery.StatusHealthy })
	p.set(mode500)
	d := waitFor(t, 5*time.Second, "unhealthy", func() bool { return status() == discovery.StatusUnhealthy })
	p.set(modeOK)
	waitFor(t, 5*time.Second, "healthy again", func() bool { return status() == discovery.StatusHealthy })
	t.Logf("unhealthy %v after the instance started failing (interval 200ms)", d.Round(time.Millisecond))
}

// An instance whose active check is turned off (Check: CheckNone) drops the
// verdict of its old checks: kept, an instance found unhealthy before stayed
// unhealthy (score 0, skipped by every pick) for as long as it lived, with
// no check left to bring it back.
func TestTurningChecksOffForgetsTheirVerdict(t *testing.T) {
	ctx := context.Background()
	p := newProbeServer(t, "")
	p.set(mode500)
	r, clock, id := oneInstance(t, p)
	for range 3 {
		nextCheck(t, r, clock, p)
	}
	if h := healthOf(t, r, "web", id); h.Status != discovery.StatusUnhealthy {
		t.Fatalf("after 3 failing checks: %v", h.Status)
	}
	in := p.instance("web")
	in.Check = discovery.CheckNone
	addInstance(t, r, in)
	if err := r.Invalidate(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for range 3 * hInterval / time.Second {
		step(clock, time.Second, r)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	h := healthOf(t, r, "web", id)
	if h.Status != discovery.StatusUnknown || h.Score != 1 {
		t.Errorf("checks off: Health says %v, score %v; want unknown, 1", h.Status, h.Score)
	}
	if got := viewStatus(t, r, "web", id); got != discovery.StatusUnknown {
		t.Errorf("checks off: Get shows %v; want unknown", got)
	}
	if sel, err := r.Pick(ctx, "web"); err != nil || sel.Panic {
		t.Errorf("Pick = %+v, %v; want the instance, not in panic", sel, err)
	}
}

// A router instance's check function is not called once Deregister has
// returned: the monitor learns of the deregistration at its next scan of
// the registrations (each second), and a check falling due before that ran
// the function of an instance its owner had taken away.
func TestNoCheckFuncAfterDeregister(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	const interval = 100 * time.Millisecond // ten checks between two scans
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(interval, interval/2), discovery.WithLeaseTTL(time.Hour))
	var calls atomic.Int64
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.9.9.9", Port: 1, Method: discovery.MethodRouter},
		discovery.WithCheckFunc(func(context.Context) error { calls.Add(1); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	for calls.Load() == 0 || clock.Now().Sub(t0)%time.Second != 10*time.Millisecond { // just past a scan
		step(clock, 10*time.Millisecond, r)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	for range 200 { // 2 s
		step(clock, 10*time.Millisecond, r)
	}
	if n := calls.Load() - before; n != 0 {
		t.Fatalf("the check function ran %d times after Deregister returned; want 0", n)
	}
}

// A check function that does not return at its timeout (it ignores its
// context) fails that check, and the checks that fall due while it still
// runs fail without calling it again: each of them started one more call,
// and the calls piled up, one goroutine an interval, for as long as the
// function stayed stuck.
func TestStuckCheckFuncIsNotCalledAgain(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
	release := make(chan struct{})
	var running, most atomic.Int64
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "10.9.9.9", Port: 1, Method: discovery.MethodRouter},
		discovery.WithCheckFunc(func(context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release // stuck, deaf to its context
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer close(release) // before Close, which waits for the function
	id := g.Instance().ID
	for range 6 * hInterval / time.Second {
		step(clock, time.Second, r)
	}
	if n := most.Load(); n != 1 {
		t.Errorf("%d calls of the stuck check function at once; want 1", n)
	}
	if h := healthOf(t, r, "router_svc", id); h.Status != discovery.StatusUnhealthy {
		t.Errorf("stuck check function: %v (%d failures in a row); want unhealthy", h.Status, h.ConsecutiveFailures)
	}
}

// An instance registered again under its ID at another address (a pod
// rescheduled with a stable name) starts with a clean verdict: what the
// checks found at the old address says nothing of the new one. It kept the
// old address's unhealthy verdict (score 0, skipped by every pick, its
// errors in Health), and needed two passing checks at the new address where
// an instance never checked needs one.
func TestMovedInstanceDropsTheOldAddressVerdict(t *testing.T) {
	ctx := context.Background()
	old, moved := newProbeServer(t, ""), newProbeServer(t, "")
	r, clock, id := oneInstance(t, old)
	nextCheck(t, r, clock, old) // healthy once
	old.set(mode500)
	for range 3 {
		nextCheck(t, r, clock, old)
	}
	if h := healthOf(t, r, "web", id); h.Status != discovery.StatusUnhealthy {
		t.Fatalf("after 3 failing checks: %v", h.Status)
	}
	in := moved.instance("web")
	in.ID = id // the same ID at the new address
	addInstance(t, r, in)
	if err := r.Invalidate(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	nextCheck(t, r, clock, moved)
	if h := healthOf(t, r, "web", id); h.Status != discovery.StatusHealthy || h.Addr != in.Addr() {
		t.Fatalf("after its first passing check at %s: %v at %s (last error %q); want healthy", in.Addr(), h.Status, h.Addr, h.LastError)
	}
	if got := viewStatus(t, r, "web", id); got != discovery.StatusHealthy {
		t.Fatalf("Get shows %v; want healthy", got)
	}
}

// A service this process used stays checked for as long as it counts as
// used (looked up in the last 35 s), however its instances renew: the
// monitor dropped every target when the lease ends of the snapshot it was
// built from passed (renewals change no revision), so a service looked up
// every 20 s went unchecked for a third of the time, and each lookup
// spread its first checks over another interval.
func TestUsedServiceStaysCheckedPastItsSnapshotsLeases(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout))
	r := w.registry(t)
	ttl := discovery.DefaultLeaseTTL
	p := newProbeServer(t, "")
	in := p.instance("web")
	in.ExpiresAt = t0.Add(ttl)
	addInstance(t, r, in)
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	var atLeaseEnd int64
	for clock.Now().Before(t0.Add(32 * time.Second)) { // still used: looked up within 35 s
		step(clock, hStep, r)
		now := clock.Now()
		if now.Sub(t0)%(ttl/3) == 0 {
			if err := r.Store().Renew(ctx, "web", in.ID, now, now.Add(ttl)); err != nil {
				t.Fatal(err)
			}
		}
		if now.Equal(t0.Add(ttl + time.Second)) {
			atLeaseEnd = p.hits.Load()
		}
	}
	if atLeaseEnd == 0 {
		t.Fatal("no check in the first lease TTL")
	}
	if n := p.hits.Load(); n == atLeaseEnd {
		t.Fatalf("%d checks, none after the snapshot's lease end (+%v) while the service was used (until +35 s)", n, ttl)
	}
}

// A service kept checked only for this process's own router instance
// stops checking the other instances once it is no longer used (not looked
// up for 35 s).
func TestOwnInstanceKeepsOnlyItselfCheckedOnceUnused(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0], discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout), discovery.WithLeaseTTL(time.Hour))
	r := w.registry(t)
	var own atomic.Int64
	if _, err := r.Register(ctx, discovery.Instance{Service: "mix", Host: "10.7.0.1", Port: 9, Method: discovery.MethodRouter},
		discovery.WithCheckFunc(func(context.Context) error { own.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	p := newProbeServer(t, "")
	addInstance(t, r, p.instance("mix"))
	if _, err := r.Get(ctx, "mix"); err != nil {
		t.Fatal(err)
	}
	for clock.Now().Before(t0.Add(40 * time.Second)) { // unused from +35.5 s
		step(clock, hStep, r)
	}
	if p.hits.Load() == 0 {
		t.Fatal("the other instance was never checked while the service was used")
	}
	hits, owns := p.hits.Load(), own.Load()
	for clock.Now().Before(t0.Add(70 * time.Second)) {
		step(clock, hStep, r)
	}
	if n := p.hits.Load(); n != hits {
		t.Fatalf("the other instance was checked %d more times once the service was unused", n-hits)
	}
	if own.Load() == owns {
		t.Fatal("the own router instance is no longer checked")
	}
}

// churnWeb has other register an instance of "web" when it holds none and
// deregister it when it does: a change message every call.
func churnWeb(t *testing.T, other *discovery.Registry, g **discovery.Registration) {
	t.Helper()
	if *g == nil {
		*g = mustRegister(t, other, discovery.Instance{Service: "web", Host: "127.0.0.1", Port: 1, Check: discovery.CheckNone})
		return
	}
	if err := (*g).Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	*g = nil
}

// A service this process looked up once stops being checked once it has not
// been looked up for the usage window, however often another process
// changes it: each change rebuilds its L1 entry here, but that is no use.
func TestMonitorDropsAServiceOnlyOthersChange(t *testing.T) {
	p, clock, w, r := monitoredWeb(t)
	other := w.registry(t, discovery.WithClock(clock))
	if _, err := r.Get(context.Background(), "web"); err != nil { // the only lookup
		t.Fatal(err)
	}
	nextCheck(t, r, clock, p)
	var g *discovery.Registration
	for clock.Now().Sub(t0) < 2*time.Minute {
		churnWeb(t, other, &g) // every 10 s
		for range 10 {
			step(clock, time.Second, r, other)
		}
	}
	before := p.hits.Load()
	for range 6 { // 6 intervals, changed every 10 s, never looked up
		churnWeb(t, other, &g)
		for range 10 {
			step(clock, time.Second, r, other)
		}
	}
	if n := p.hits.Load() - before; n != 0 {
		t.Fatalf("%d checks of a service looked up once, minutes ago, that another process changes every 10 s; want 0", n)
	}
}

// A service looked up all the time and changed every 2 s stays checked: its
// change messages rebuild its entry before it goes stale, so its lookups
// are all L1 hits and never load it.
func TestMonitorKeepsABusyServiceThatChangesOften(t *testing.T) {
	p, clock, w, r := monitoredWeb(t)
	other := w.registry(t, discovery.WithClock(clock))
	var g *discovery.Registration
	use := func(d time.Duration) { // a lookup a second, a change every 2 s
		for s := range int(d / time.Second) {
			if s%2 == 0 {
				churnWeb(t, other, &g)
			}
			if _, err := r.Get(context.Background(), "web"); err != nil {
				t.Fatal(err)
			}
			step(clock, time.Second, r, other)
		}
	}
	use(2 * time.Minute)
	before := p.hits.Load()
	use(time.Minute) // 5 checks, 11-12 s apart
	if n := p.hits.Load() - before; n < 4 {
		t.Fatalf("%d checks in a minute of a service looked up every second and changed every 2 s; want 5", n)
	}
}

// A watched service is used for as long as the watch is open, looked up or
// not, changed or not; it stops being checked once the watch ends.
func TestMonitorChecksAWatchedService(t *testing.T) {
	p, clock, _, r := monitoredWeb(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := r.Watch(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	// The watch's hub marks the service used each time it looks at it: at
	// its first load, then whenever its timer fires. The test waits for
	// the first (the instance's event) and, each second, for a timer that
	// fired to be handled: stepped faster than the hub's goroutine was
	// scheduled, the clock ran through the monitor's window of use before
	// the hub first ran at all (at +180 s), and one run in seven failed.
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch told nothing of web within 5 s")
	}
	go func() {
		for range events {
		}
	}()
	watched := func() {
		step(clock, time.Second, r)
		clock.BlockUntilHandled()
	}
	for clock.Now().Sub(t0) < 2*time.Minute {
		watched()
	}
	before := p.hits.Load()
	for range 60 {
		watched()
	}
	if n := p.hits.Load() - before; n < 4 {
		t.Fatalf("%d checks in a minute of a service watched for minutes; want 5", n)
	}
	cancel()
	for range 60 {
		step(clock, time.Second, r)
	}
	before = p.hits.Load()
	for range 60 {
		step(clock, time.Second, r)
	}
	if n := p.hits.Load() - before; n != 0 {
		t.Fatalf("%d checks in a minute of a service whose watch ended two minutes ago; want 0", n)
	}
}

// monitoredWeb is the set-up of the monitor's use tests: a Registry of a
// memory world checking every hInterval on a fake clock, and an instance
// of "web" at a probe server in its store, not looked up yet.
func monitoredWeb(t *testing.T) (*probeServer, *discoverytest.Clock, *world, *discovery.Registry) {
	t.Helper()
	p := newProbeServer(t, "")
	clock := discoverytest.NewClock(t0)
	w := newWorld(t, allWorlds[0])
	r := w.registry(t, discovery.WithClock(clock), discovery.WithHealthCheck(hInterval, hTimeout))
	addInstance(t, r, p.instance("web"))
	return p, clock, w, r
}
