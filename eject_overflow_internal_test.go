package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
)

// An instance ejected many times over, each ejection ended early by a
// passing check, multiplies the base ejection time by the times it was
// ejected. With a long base (WithOutlierEjection allows up to MaxDuration)
// the product overflowed: the 293rd ejection of a one-year base came out
// negative, ended before it began, and the failing instance stayed in
// selection. The ejection lasts the maximum instead.
func TestEjectionTimeDoesNotOverflowAfterManyEjections(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := fakeclock.New(start)
	r, id := cachedOn(t, memory.New(), clock, "db_svc", WithOutlierEjection(1, MaxDuration, MaxDuration, 100))
	if err := r.ReportOutcome("db_svc", id, errors.New("connection refused"), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// As after 300 ejections, each ended at once by a passing check.
	is := r.state("db_svc").inst(id)
	is.hmu.Lock()
	is.health.timesEjected = 300
	is.health.ejectEnd = clock.Now().UnixNano()
	is.hmu.Unlock()
	is.ejectedUntil.Store(clock.Now().UnixNano())
	if err := r.ReportOutcome("db_svc", id, errors.New("connection refused"), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	hs, err := r.Health(ctx, "db_svc")
	if err != nil || len(hs) != 1 {
		t.Fatalf("Health = %+v, %v", hs, err)
	}
	if !hs[0].Ejected || hs[0].EjectedUntil.Sub(clock.Now()) != MaxDuration {
		t.Errorf("ejection %d: ejected %v until %v (%v from now); want ejected for %v",
			hs[0].TimesEjected, hs[0].Ejected, hs[0].EjectedUntil, hs[0].EjectedUntil.Sub(clock.Now()), MaxDuration)
	}
}
