package auth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// Callers that must wait for a rotation (the key can no longer sign a whole
// token's life) while the database does not answer: each one rotated in
// turn, so the k-th waited k database timeouts (0.3, 0.6, ... 1.5 s for five
// with a 300 ms timeout; 100 s for the twentieth at the defaults). Now the
// ones queued behind the failed rotation get its error at once: none waits
// more than two timeouts (its own rotation, after one it came too late
// for). Twenty callers in turn would have made the last wait 6 s; the test
// allows each 3 s, room enough for a loaded machine.
func TestWaitingCallersShareAFailedRotation(t *testing.T) {
	const to = 300 * time.Millisecond
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	db, proxy := testutil.PostgresVia(t, ns+"_")
	r, err := discovery.New(discovery.WithDB(db), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(),
		discovery.WithDatabaseTimeout(to), discovery.WithLoadTimeout(to))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Blackhole(false); _ = r.Close() })
	clock := discoverytest.NewClock(time.Now())
	s, err := auth.NewSigner(ctx, r, "orders", auth.WithClock(clock), auth.WithKeyLifetime(auth.MinKeyLifetime))
	if err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(true)
	clock.Advance(auth.MinKeyLifetime) // the key cannot sign a token's life any more
	const callers = 20
	const bound = callers * to / 2
	var wg sync.WaitGroup
	took := make([]time.Duration, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, errs[i] = s.Token(ctx, fmt.Sprintf("aud%d", i))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i := range callers {
		if took[i] >= bound || !errors.Is(errs[i], discovery.ErrUnavailable) {
			t.Fatalf("Token %d with the database black-holed: %v after %v (all: %v); want ErrUnavailable within %v (the database timeout is %v)",
				i, errs[i], took[i], took, bound, to)
		}
	}
}
