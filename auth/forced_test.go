package auth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// stuckPut is a store whose key writes, once armed, wait until their
// caller gives up: a database that is slow for one request.
type stuckPut struct {
	*discoverytest.Backend
	armed   atomic.Bool
	entered chan struct{}
	once    sync.Once
}

func (s *stuckPut) PutKey(ctx context.Context, service string, key discovery.PublicKey) (int64, error) {
	if s.armed.CompareAndSwap(true, false) {
		s.once.Do(func() { close(s.entered) })
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return s.Backend.PutKey(ctx, service, key)
}

// Callers waiting for a rotation that the key needs (it cannot sign a
// whole token's life any more) are not failed by the caller that rotated
// giving up: that caller's context ended, not the database, so the next
// one rotates. They all got the first caller's context.Canceled, from
// Token and so from their own requests, though theirs went on.
func TestWaitingCallersDoNotShareAnotherCallersCancellation(t *testing.T) {
	clock := discoverytest.NewClock(t0)
	store := &stuckPut{Backend: discoverytest.NewBackend(), entered: make(chan struct{})}
	reg, err := discovery.New(discovery.WithStore(store), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s, err := auth.NewSigner(context.Background(), reg, "orders", auth.WithClock(clock), auth.WithKeyLifetime(auth.MinKeyLifetime))
	if err != nil {
		t.Fatal(err)
	}
	first := s.KeyID()
	clock.Advance(auth.MinKeyLifetime) // the key cannot sign a token's life any more
	store.armed.Store(true)
	ctx1, cancel := context.WithCancel(context.Background())
	defer cancel()
	res1 := make(chan error, 1)
	go func() {
		_, err := s.Token(ctx1, "inventory")
		res1 <- err
	}()
	<-store.entered // the first caller rotates, and its write hangs
	const others = 4
	errs := make(chan error, others)
	for range others {
		go func() {
			_, err := s.Token(context.Background(), "billing")
			errs <- err
		}()
	}
	// Give the others the time to queue behind the rotation.
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-res1; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up: %v; want context.Canceled", err)
	}
	for range others {
		if err := <-errs; err != nil {
			t.Errorf("a caller that waited, with its own context alive: %v; want a token of a new key", err)
		}
	}
	if s.KeyID() == first {
		t.Fatal("no rotation")
	}
}
