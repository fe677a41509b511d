package discovery

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

// answersLate holds the loads of "cold-" services until released, then
// answers them whatever their context says: database reads that returned
// just as Close ended them.
type answersLate struct {
	core.Store
	held    atomic.Int32
	release chan struct{}
}

func (s *answersLate) Load(ctx context.Context, name string) (*core.Service, error) {
	if strings.HasPrefix(name, "cold-") {
		s.held.Add(1)
		<-s.release
		ctx = context.WithoutCancel(ctx)
	}
	return s.Store.Load(ctx, name)
}

// Loads that finish while Close shuts L1 down do not crash the process.
// Their puts called ristretto's Set while its Close closed the channel
// Set sends on: "send on closed channel", a panic no caller can recover.
func TestLoadsFinishingDuringCloseDoNotPanic(t *testing.T) {
	for round := range 10 {
		s := &answersLate{Store: memory.New(), release: make(chan struct{})}
		r, _ := fakeRegistry(t, WithStore(s))
		if _, err := r.Get(context.Background(), "warm"); err == nil {
			t.Fatal("Get(warm) found a service")
		}
		r.l1.rc.Wait() // held by ristretto: its Close drops it, and the loads go on then
		var first atomic.Bool
		r.l1.onEvict = func(e *entry) {
			if first.CompareAndSwap(false, true) {
				close(s.release)
			}
			r.entryEvicted(e)
		}
		const loads = 32
		var wg sync.WaitGroup
		for i := range loads {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = r.Get(context.Background(), fmt.Sprintf("cold-%d-%d", round, i))
			}()
		}
		for s.held.Load() < loads {
			runtime.Gosched()
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
}

// A Registration that is gone (its Registry closed, or deregistered) says
// so whatever the caller's context: Update returns ErrClosed, Deregister
// and Drain nil, as documented. While another call on the registration
// held its write slot for a moment, a caller whose context had ended got
// its context's error instead, as if the registration were still there and
// the write had not been tried in time.
func TestGoneRegistrationIgnoresAnEndedContext(t *testing.T) {
	r, _ := fakeRegistry(t)
	g, err := r.Register(context.Background(), Instance{Service: "web", Host: "10.0.0.1", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.writing.Lock(context.Background()); err != nil { // another call on g, under way
		t.Fatal(err)
	}
	defer g.writing.Unlock()
	if err := g.Update(ctx, func(in *Instance) { in.Weight = 5 }); !errors.Is(err, ErrClosed) {
		t.Errorf("Update of a registration of a closed Registry = %v; want ErrClosed", err)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Errorf("Deregister of a deregistered registration = %v; want nil", err)
	}
	if err := g.Drain(ctx); err != nil {
		t.Errorf("Drain of a deregistered registration = %v; want nil", err)
	}
}
