package grpcresolver_test

import (
	"context"
	"errors"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/grpcresolver"
)

// failingStore fails every Load while fail is set.
type failingStore struct {
	discovery.Store
	fail atomic.Bool
}

func (s *failingStore) Load(ctx context.Context, service string) (*discovery.Service, error) {
	if s.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return s.Store.Load(ctx, service)
}

// A resolver whose first lookup failed (the database down) asks again, on
// its own (gRPC calls no ResolveNow while calls fail for a resolver's
// error): for a service with no instance, the watch never tells anything,
// and calls kept failing with the database's error ("connection refused",
// as if a server had refused them) long after it was back, until an
// instance registered.
func TestAFailedFirstLookupIsTriedAgain(t *testing.T) {
	fs := &failingStore{Store: discoverytest.NewBackend()}
	fs.fail.Store(true)
	r, err := discovery.New(discovery.WithStore(fs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	cc := &errorConn{recordingConn: recordingConn{updates: make(chan resolver.State, 64)}, errs: make(chan error, 64)}
	res, err := grpcresolver.NewBuilder(r).Build(resolver.Target{URL: url.URL{Scheme: "discovery", Path: "/greeter"}}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	select {
	case err := <-cc.errs:
		if errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("first error %v; want the store's", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no error reported while the store fails")
	}
	fs.fail.Store(false)
	for deadline := time.After(10 * time.Second); ; {
		select {
		case err := <-cc.errs:
			if errors.Is(err, discovery.ErrNotFound) {
				return
			}
		case <-cc.updates:
		case <-deadline:
			t.Fatal("the store is back, but the error is still the store's, not that the service has no instance")
		}
	}
}
