package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// strangerRig is the fixture's "inventory" verified by a Verifier of a
// process of its own, whose store reads are counted, under policy.
type strangerRig struct {
	f     *fixture
	store *countingStore
	v     *auth.Verifier
}

func newStrangerRig(t *testing.T, policy string, opts ...auth.Option) *strangerRig {
	t.Helper()
	return newStrangerRigOf(t, policy, nil, opts...)
}

// newStrangerRigOf is newStrangerRig with the Verifier's Registry given
// regOpts too.
func newStrangerRigOf(t *testing.T, policy string, regOpts []discovery.Option, opts ...auth.Option) *strangerRig {
	t.Helper()
	f := newFixture(t)
	if _, _, err := f.backend.SetConfig(context.Background(), "inventory", []byte(policy), t0, 10); err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Backend: f.backend}
	reg := discoverytest.NewRegistry(t, f.backend, append([]discovery.Option{discovery.WithStore(store), discovery.WithClock(f.clock),
		discovery.WithoutHealthChecks()}, regOpts...)...)
	v, err := auth.NewVerifier(reg, "inventory", append([]auth.Option{auth.WithClock(f.clock)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &strangerRig{f: f, store: store, v: v}
}

// as is a token signed with the fixture's key that claims to come from
// caller: past every check but the key's, which the caller does not have.
func (g *strangerRig) as(t *testing.T, caller string) string {
	t.Helper()
	return forge(t, jwt.SigningMethodEdDSA, g.f.priv, "ghost-k1", withClaims(func(c jwt.MapClaims) { c["sub"] = caller }), nil)
}

// authorize asks the Verifier about GET /status with tok.
func (g *strangerRig) authorize(tok string) error {
	req := httptest.NewRequest(http.MethodGet, "/status", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	_, err := g.v.Authorize(req)
	return err
}

// flood sends one request from each of n made-up callers named prefix-i and
// returns how many were refused unread, checking that each got the answer
// a made-up caller gets (unknown key) or the bound's (503).
func (g *strangerRig) flood(t *testing.T, prefix string, n int) (refused int) {
	t.Helper()
	for i := range n {
		err := g.authorize(g.as(t, prefix+"-"+strconv.Itoa(i)))
		switch reason(err) {
		case "unknown key":
		case "too many lookups of unknown callers":
			if !errors.Is(err, discovery.ErrUnavailable) {
				t.Fatalf("refused by the bound: %v; want it to match ErrUnavailable (503)", err)
			}
			refused++
		default:
			t.Fatalf("made-up caller %s-%d: %v; want unknown key, or refused by the bound", prefix, i, err)
		}
	}
	return refused
}

// readsOf counts the store reads of services named prefix-*.
func (g *strangerRig) readsOf(prefix string) (n int64) {
	for name, c := range g.store.reads() {
		if len(name) > len(prefix) && name[:len(prefix)+1] == prefix+"-" {
			n += c
		}
	}
	return n
}

const anyCallerStatus = `{"auth":{"allow":{"*":[{"path_prefix":"/status"}]}}}`

// A client making caller names up had each new name read from Redis and the
// database: under "*", 300 requests of 300 names made 300 reads in a
// moment, as many a second as it could send. The lookups of names the
// registry does not know now take a bucket's tokens: 10 a second on
// average, 100 at once (WithUnknownCallerRate(10), the default).
func TestMadeUpCallersAreReadWithinTheBound(t *testing.T) {
	g := newStrangerRig(t, anyCallerStatus)
	orders := g.f.token(t, "inventory")
	if err := g.authorize(orders); err != nil { // a caller the registry knows, seen before the flood
		t.Fatalf("orders before the flood: %v", err)
	}
	refused := g.flood(t, "ghost", 300)
	if reads := g.readsOf("ghost"); reads != 100 || refused != 200 {
		t.Fatalf("300 made-up callers at once: %d store reads, %d refused unread; want 100 and 200 (the burst)", reads, refused)
	}
	if err := g.authorize(orders); err != nil {
		t.Fatalf("orders during the flood: %v; want it let through (the registry knows it)", err)
	}

	g.f.clock.Advance(2 * time.Second) // 20 tokens more
	if refused := g.flood(t, "later", 50); refused != 30 || g.readsOf("later") != 20 {
		t.Fatalf("2 s later, 50 made-up callers: %d store reads, %d refused; want 20 and 30", g.readsOf("later"), refused)
	}
}

// A name found unknown is not counted again within the second the
// registry's negative cache answers it: a caller with a wrong name sending
// 50 requests at once spends one token, not the bucket.
func TestRepeatedUnknownCallerSpendsOneToken(t *testing.T) {
	g := newStrangerRig(t, anyCallerStatus, auth.WithUnknownCallerRate(1)) // a burst of 10
	typo := g.as(t, "ordres")
	for i := range 50 {
		if err := g.authorize(typo); reason(err) != "unknown key" {
			t.Fatalf("request %d of a caller with a wrong name: %v; want unknown key", i, err)
		}
	}
	if refused := g.flood(t, "ghost", 10); refused != 1 {
		t.Fatalf("after 50 requests of one unknown name, 10 more names: %d refused; want 1 (9 tokens left)", refused)
	}
}

// Callers the policy names itself are looked up outside the bound: the
// policy bounds them. So is any caller of a Verifier without a bound.
func TestNamedCallersAndNoBoundAreNotHeldUp(t *testing.T) {
	t.Run("named", func(t *testing.T) {
		g := newStrangerRig(t, `{"auth":{"allow":{"orders":[{"path_prefix":"/status"}],"*":[{"path_prefix":"/status"}]}}}`,
			auth.WithUnknownCallerRate(1))
		if refused := g.flood(t, "ghost", 20); refused != 10 {
			t.Fatalf("20 made-up callers: %d refused; want 10", refused)
		}
		if err := g.authorize(g.f.token(t, "inventory")); err != nil {
			t.Fatalf("orders, named by the policy and never seen, after the flood: %v; want it let through", err)
		}
	})
	t.Run("unbounded", func(t *testing.T) {
		g := newStrangerRig(t, anyCallerStatus, auth.WithUnknownCallerRate(0))
		if refused := g.flood(t, "ghost", 300); refused != 0 || g.readsOf("ghost") != 300 {
			t.Fatalf("300 made-up callers without a bound: %d refused, %d reads; want 0 and 300", refused, g.readsOf("ghost"))
		}
	})
}

// Verify, which has no policy to consult, keeps the same bound; a caller
// it has not been found to know is refused past it, one it knows is not.
func TestVerifyBoundsMadeUpCallers(t *testing.T) {
	g := newStrangerRig(t, anyCallerStatus, auth.WithUnknownCallerRate(1))
	ctx := context.Background()
	orders := g.f.token(t, "inventory")
	if _, err := g.v.Verify(ctx, orders); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := range 30 {
		_, err := g.v.Verify(ctx, g.as(t, "ghost-"+strconv.Itoa(i)))
		if errors.Is(err, discovery.ErrUnavailable) {
			refused++
		}
	}
	if reads := g.readsOf("ghost"); reads != 10 || refused != 20 {
		t.Fatalf("Verify of 30 made-up callers: %d reads, %d refused; want 10 and 20", reads, refused)
	}
	if _, err := g.v.Verify(ctx, orders); err != nil {
		t.Fatalf("orders after the flood: %v", err)
	}
}

func TestUnknownCallerRateIsValidated(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{-1, 10_001} {
		v, err := auth.NewVerifier(f.target, "inventory", auth.WithUnknownCallerRate(n))
		if v != nil || !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "WithUnknownCallerRate") {
			t.Fatalf("WithUnknownCallerRate(%d): %v, %v; want an ErrInvalid naming the option", n, v, err)
		}
	}
}

// gatedStore holds the loads of one service until released, saying when
// the first one began.
type gatedStore struct {
	*discoverytest.Backend
	name    string
	began   chan struct{} // closed as the first load of name begins
	release chan struct{} // closed to let the loads of name through
	once    sync.Once
}

func (s *gatedStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if name == s.name {
		s.once.Do(func() { close(s.began) })
		<-s.release
	}
	return s.Backend.Load(ctx, name)
}

// tellingClock is a clock whose every reading is told on now.
type tellingClock struct {
	*discoverytest.Clock
	now chan struct{}
}

func (c *tellingClock) Now() time.Time {
	c.now <- struct{}{}
	return c.Clock.Now()
}

// A process that has just started meets its callers' first requests all at
// once: each of a busy caller's requests took a token while the first
// lookup of it was under way (the registry loads it once for all of them),
// and past the burst a real caller, with no made-up name anywhere, was
// refused with 503. Requests of a caller whose lookup is under way wait for
// that lookup instead, and share its token.
func TestABusyCallerAtStartIsNotHeldUp(t *testing.T) {
	f := newFixture(t)
	orders := f.token(t, "inventory")
	store := &gatedStore{Backend: f.backend, name: "orders", began: make(chan struct{}), release: make(chan struct{})}
	reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(store), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	clock := &tellingClock{Clock: f.clock, now: make(chan struct{}, 1000)}
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(clock), auth.WithUnknownCallerRate(1)) // a burst of 10
	if err != nil {
		t.Fatal(err)
	}
	const requests = 30
	errs := make(chan error, requests)
	verify := func() {
		_, err := v.Verify(context.Background(), orders)
		errs <- err
	}
	for range len(clock.now) { // read while the Verifier was made
		<-clock.now
	}
	go verify()
	<-store.began
	<-clock.now // the first request's admission
	for range requests - 1 {
		go verify()
		<-clock.now // its admission: no other reading until the lookup ends
	}
	close(store.release)
	refused := 0
	for range requests {
		if err := <-errs; err != nil {
			if !errors.Is(err, discovery.ErrUnavailable) {
				t.Fatalf("orders at start: %v", err)
			}
			refused++
		}
	}
	if refused != 0 {
		t.Fatalf("%d requests of orders at once at start: %d refused; want none (a caller the registry knows, and no made-up names)", requests, refused)
	}
}

// A name found unknown was looked up again for a second without a token,
// counting on the registry's negative cache to answer it; with a shorter
// WithNegativeTTL the store was read each time it had forgotten, and ten
// names sent every 150 ms made 70 reads in a second against a bound of 10
// and a burst of 10. The memory lasts no longer than the negative cache's.
func TestUnknownCallerMemoryIsNoLongerThanTheNegativeCache(t *testing.T) {
	g := newStrangerRigOf(t, anyCallerStatus, []discovery.Option{discovery.WithNegativeTTL(100 * time.Millisecond)},
		auth.WithUnknownCallerRate(1)) // a burst of 10
	for round := range 7 {
		if round > 0 {
			g.f.clock.Advance(150 * time.Millisecond)
		}
		g.flood(t, "ghost", 10)
	}
	// 0.9 s: the burst and, at 1 a second, no token more.
	if reads := g.readsOf("ghost"); reads > 10 {
		t.Fatalf("10 made-up names sent 7 times in 0.9 s, negative TTL 100 ms: %d store reads; want at most 10 (the burst)", reads)
	}
}

// The Verifier remembers at most 4096 callers found known; past that it
// forgot them all, and a caller that had just called, and called again
// during a flood of made-up names, was refused with 503 as if it had never
// called (a client knowing 4096 real service names could set that up). It
// now forgets only callers not seen while 4096 others were learnt.
func TestACallerSeenLatelyStaysKnownPastTheLimit(t *testing.T) {
	g := newStrangerRig(t, anyCallerStatus, auth.WithUnknownCallerRate(1)) // a burst of 10
	ctx := context.Background()
	const others = 4096
	for i := range others {
		if _, _, err := g.f.backend.SetConfig(ctx, "svc-"+strconv.Itoa(i), []byte(`{}`), t0, 1); err != nil {
			t.Fatal(err)
		}
	}
	orders := g.f.token(t, "inventory")
	if err := g.authorize(orders); err != nil {
		t.Fatalf("orders: %v", err)
	}
	for i := range others { // real services, each known, each given its token back
		if err := g.authorize(g.as(t, "svc-"+strconv.Itoa(i))); reason(err) != "unknown key" {
			t.Fatalf("svc-%d with a key it does not have: %v; want unknown key", i, err)
		}
	}
	if refused := g.flood(t, "ghost", 20); refused != 10 {
		t.Fatalf("20 made-up callers: %d refused; want 10 (the burst spent)", refused)
	}
	if err := g.authorize(orders); err != nil {
		t.Fatalf("orders, seen before %d other callers, during a flood: %v; want it let through", others, err)
	}
}

// wallClock is a clock that can be set back, as a wall clock without a
// monotonic reading is when NTP steps it.
type wallClock struct {
	*discoverytest.Clock
	mu   sync.Mutex
	back time.Duration
}

func (c *wallClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Clock.Now().Add(-c.back)
}

func (c *wallClock) setBack(d time.Duration) {
	c.mu.Lock()
	c.back = d
	c.mu.Unlock()
}

// A clock set back left the bucket's last refill in the future, and no
// token came back until the clock had made up the step: set back an hour,
// callers the registry had not been found to know were refused with 503
// for an hour. Time from the step on refills it again.
func TestAClockSetBackDoesNotStopTheBound(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.backend.SetConfig(context.Background(), "inventory", []byte(anyCallerStatus), t0, 10); err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Backend: f.backend}
	reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(store), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	clock := &wallClock{Clock: f.clock}
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(clock), auth.WithUnknownCallerRate(1)) // a burst of 10
	if err != nil {
		t.Fatal(err)
	}
	g := &strangerRig{f: f, store: store, v: v}
	if refused := g.flood(t, "ghost", 20); refused != 10 {
		t.Fatalf("20 made-up callers: %d refused; want 10", refused)
	}
	clock.setBack(time.Hour)
	if refused := g.flood(t, "stepped", 1); refused != 1 {
		t.Fatalf("a made-up caller as the clock is set back: %d refused; want 1 (no token yet)", refused)
	}
	f.clock.Advance(5 * time.Second) // 5 tokens more, the clock an hour behind
	if refused := g.flood(t, "later", 10); refused != 5 {
		t.Fatalf("5 s after the clock was set back an hour, 10 made-up callers: %d refused; want 5", refused)
	}
}

// The memory of a name found unknown ran from the answer, the negative
// cache's from the read before it: a read that took half a second left
// the name looked up freely, reading the store, for half a second after
// the registry had forgotten it.
func TestUnknownCallerMemoryRunsFromTheRead(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.backend.SetConfig(context.Background(), "inventory", []byte(anyCallerStatus), t0, 10); err != nil {
		t.Fatal(err)
	}
	gated := &gatedStore{Backend: f.backend, name: "ghost", began: make(chan struct{}), release: make(chan struct{})}
	store := &countingStore{Backend: f.backend}
	reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(&countedGate{store, gated}), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(f.clock), auth.WithUnknownCallerRate(1)) // a burst of 10
	if err != nil {
		t.Fatal(err)
	}
	g := &strangerRig{f: f, store: store, v: v}
	ghost := g.as(t, "ghost")
	done := make(chan error, 1)
	go func() { done <- g.authorize(ghost) }()
	<-gated.began
	f.clock.Advance(500 * time.Millisecond) // a slow read
	close(gated.release)
	if err := <-done; reason(err) != "unknown key" {
		t.Fatalf("ghost: %v; want unknown key", err)
	}
	f.clock.Advance(700 * time.Millisecond) // 1.2 s after the read: the registry has forgotten it
	g.flood(t, "other", 20)                 // the bucket spent
	err = g.authorize(ghost)
	if reads := store.reads()["ghost"]; reads != 1 || reason(err) != "too many lookups of unknown callers" {
		t.Fatalf("ghost 1.2 s after its read, the bucket spent: %v, %d store reads of it; want refused by the bound, 1 read", err, reads)
	}
}

// countedGate counts loads (the counting store) after the gate lets them
// through.
type countedGate struct {
	*countingStore
	gate *gatedStore
}

func (s *countedGate) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if name == s.gate.name {
		s.gate.once.Do(func() { close(s.gate.began) })
		<-s.gate.release
	}
	return s.countingStore.Load(ctx, name)
}

// A name found unknown was looked up again for its second without a token,
// counting on the registry's negative cache; an L1 too small to keep those
// answers (ristretto evicts them, or drops a Set when its buffer is full)
// had every request of the name read the store meanwhile. Within that
// second the Verifier answers unknown itself.
func TestUnknownNameIsNotReadAgainWhenL1DroppedItsAnswer(t *testing.T) {
	g := newStrangerRigOf(t, anyCallerStatus, []discovery.Option{discovery.WithCacheSize(2)}, auth.WithUnknownCallerRate(1)) // a burst of 10
	if refused := g.flood(t, "ghost", 10); refused != 0 {
		t.Fatalf("10 made-up names, a burst of 10: %d refused", refused)
	}
	for range 20 {
		g.flood(t, "ghost", 10) // the same ten names again, within their second
	}
	if reads := g.readsOf("ghost"); reads != 10 {
		t.Fatalf("10 made-up names sent 21 times within a second, an L1 of 2 services: %d store reads; want 10", reads)
	}
}
