package auth_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
