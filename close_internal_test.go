package discovery

import (
	"context"
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
