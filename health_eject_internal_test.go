package discovery

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
)

// lateClock is a fake clock that, once held, shows the health monitor's
// loop the time it was held at, whatever time it is for everyone else: a
// monitor running late, which has not yet done what fell due since.
type lateClock struct {
	*fakeclock.Clock
	mu   sync.Mutex
	held time.Time // zero when not held
}

func (c *lateClock) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = c.Clock.Now()
}

func (c *lateClock) Now() time.Time {
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	if !held.IsZero() {
		pc := make([]uintptr, 32)
		frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
		for more := true; more; {
			var f runtime.Frame
			f, more = frames.Next()
			if strings.HasSuffix(f.Function, ".(*monitor).run") {
				return held
			}
		}
	}
	return c.Clock.Now()
}

// An ejection that follows one whose time is over, but whose end the health
// monitor has not processed yet, counts that one in full: its time was not
// spent back in selection. Forgiveness counted from the end of the ejection
// before it, and a third ejection in a row lasted 30 s instead of 90 s
// (under a busy service's failures, the multiplier kept falling back to 1).
func TestEjectionRightAtTheEndOfTheLastCountsIt(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := &lateClock{Clock: fakeclock.New(start)}
	r, id := cachedOn(t, memory.New(), clock, "db_svc")
	fail := func() {
		t.Helper()
		for range DefaultEjectionFailures {
			if err := r.ReportOutcome("db_svc", id, errors.New("connection refused"), time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	ejectedFor := func() (time.Duration, int) {
		t.Helper()
		hs, err := r.Health(ctx, "db_svc")
		if err != nil || len(hs) != 1 || !hs[0].Ejected {
			t.Fatalf("Health: %v %+v; want one ejected instance", err, hs)
		}
		return hs[0].EjectedUntil.Sub(clock.Now()), hs[0].TimesEjected
	}
	fail()
	if d, n := ejectedFor(); d != DefaultEjectionTime || n != 1 {
		t.Fatalf("first ejection: %v, times %d; want %v, 1", d, n, DefaultEjectionTime)
	}
	clock.Advance(DefaultEjectionTime)
	r.hm.settle() // the monitor ends it on time
	clock.Advance(time.Second)
	fail()
	if d, n := ejectedFor(); d != 2*DefaultEjectionTime || n != 2 {
		t.Fatalf("second ejection, a second after the first ended: %v, times %d; want %v, 2", d, n, 2*DefaultEjectionTime)
	}
	clock.hold()
	clock.Advance(2 * DefaultEjectionTime) // over; the monitor has not got to it yet
	fail()
	if d, n := ejectedFor(); d != 3*DefaultEjectionTime || n != 3 {
		t.Fatalf("third ejection, as the second's time ended: %v, times %d; want %v, 3", d, n, 3*DefaultEjectionTime)
	}
}
