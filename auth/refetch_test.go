package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// gatedQuiet is a quietStore whose reads of a service, once armed, wait
// for release: a refetch of keys held up in a slow database.
type gatedQuiet struct {
	quietStore
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *gatedQuiet) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.armed.Load() && name == "orders" {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.quietStore.Load(ctx, name)
}

// Requests that meet a caller's new key while the Verifier reads that
// caller's keys from the database wait for the read and share its answer.
// They were refused at once as "unknown key" (401): only the one request
// that began the read was let through, and every call of the caller that
// another reached the service during the read failed after each rotation
// the verifying process had not been told of.
func TestRequestsDuringAKeyRefetchShareIt(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	store := &gatedQuiet{quietStore: quietStore{backend, backend}, entered: make(chan struct{}), release: make(chan struct{})}
	orders, v := ordersAndInventory(t, backend, store, clock)
	tok, err := orders.Token(ctx, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); err != nil { // orders' first key cached in b
		t.Fatal(err)
	}
	if err := orders.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if tok, err = orders.Token(ctx, "inventory"); err != nil {
		t.Fatal(err)
	}
	store.armed.Store(true)
	verify := func() <-chan error {
		ch := make(chan error, 1)
		go func() {
			_, err := v.Verify(ctx, tok)
			ch <- err
		}()
		return ch
	}
	first := verify()
	<-store.entered // the first request reads orders' keys
	const others = 4
	results := make([]<-chan error, others)
	for i := range results {
		results[i] = verify()
	}
	// Give the others the time to reach the read in flight; a request
	// refused meanwhile fails the test below.
	time.Sleep(50 * time.Millisecond)
	close(store.release)
	if err := <-first; err != nil {
		t.Fatalf("the request that read the keys: %v", err)
	}
	for i, ch := range results {
		if err := <-ch; err != nil {
			t.Errorf("request %d during the read: %v (%s); want it to wait for the read", i+1, err, reason(err))
		}
	}
}

// heldQuiet is a quietStore that counts its reads of orders and, while
// hold is set, keeps each one waiting until the test lets it go.
type heldQuiet struct {
	quietStore
	hold    atomic.Bool
	reads   atomic.Int64
	entered chan struct{} // a held read began
	release chan struct{} // let one held read go on
	done    chan struct{} // a held read returned
}

func (s *heldQuiet) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if name != "orders" {
		return s.quietStore.Load(ctx, name)
	}
	s.reads.Add(1)
	if s.hold.Load() {
		s.entered <- struct{}{}
		<-s.release
		defer func() { s.done <- struct{}{} }()
	}
	return s.quietStore.Load(ctx, name)
}

// A request that hangs up while its unknown kid has the caller's keys read
// again does not make that read count as failed: the read goes on without
// it, so the minute is spent. It counted as a read the database had
// failed, which may be made again a second later: an unauthenticated
// client sending made-up kids and dropping each request during the read
// had the caller's keys read once a second instead of once a minute.
func TestAHungUpRequestSpendsTheRefetchMinute(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	store := &heldQuiet{quietStore: quietStore{backend, backend},
		entered: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	orders, v := ordersAndInventory(t, backend, store, clock)
	tok, err := orders.Token(ctx, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); err != nil { // orders' key cached
		t.Fatal(err)
	}
	if err := orders.Rotate(ctx); err != nil { // a key the first dropped request's read finds
		t.Fatal(err)
	}
	if tok, err = orders.Token(ctx, "inventory"); err != nil {
		t.Fatal(err)
	}
	_, attacker, _ := ed25519.GenerateKey(rand.Reader)
	store.hold.Store(true)
	before := store.reads.Load()
	const rounds = 5
	for i := range rounds {
		forged := forge(t, jwt.SigningMethodEdDSA, attacker, "made-up-"+strconv.Itoa(i), goodClaims(), nil)
		rctx, cancel := context.WithCancel(ctx)
		res := make(chan error, 1)
		go func() {
			_, err := v.Verify(rctx, forged)
			res <- err
		}()
		select {
		case <-store.entered: // the keys are read again: the client hangs up
			cancel()
			<-res
			store.release <- struct{}{}
			<-store.done
		case err := <-res:
			cancel()
			if reason(err) != "unknown key" {
				t.Fatalf("round %d: %v; want unknown key", i, err)
			}
		}
		clock.Advance(2 * time.Second)
	}
	if got := store.reads.Load() - before; got != 1 {
		t.Fatalf("%d requests with made-up kids, each dropped during the read, %d s apart: orders' keys read %d times; want 1 (once a minute)",
			rounds, 2, got)
	}
	// The read the first request left went on and cached what it found:
	// orders' new key verifies without another read.
	store.hold.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for _, err := v.Verify(ctx, tok); err != nil; _, err = v.Verify(ctx, tok) {
		if time.Now().After(deadline) {
			t.Fatalf("orders' new key after the read the dropped request left: %v; want it cached", err)
		}
		time.Sleep(time.Millisecond)
	}
	if got := store.reads.Load() - before; got != 1 {
		t.Fatalf("orders' keys read %d times in all; want 1", got)
	}
}
