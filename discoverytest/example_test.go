package discoverytest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// A Registry on the in-memory backend and a fake clock: an instance whose
// process stopped renewing disappears exactly when the test moves the clock
// past its lease.
func Example() {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	// In a test, discoverytest.NewRegistry(t, backend, ...) also closes it
	// when the test ends.
	b, err := discovery.New(discovery.WithStore(backend), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		panic(err)
	}
	defer b.Close()

	ctx := context.Background()
	// A process that registers and then dies: the row, with no renewals.
	dead := discovery.Instance{ID: "x", Service: "db_svc", Host: "10.0.0.7", Port: 8080, Weight: 1,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(15 * time.Second)}
	backend.Register(ctx, &dead)

	svc, _ := b.Get(ctx, "db_svc")
	fmt.Println(len(svc.Instances))
	clock.Advance(15 * time.Second)
	_, err = b.Get(ctx, "db_svc")
	fmt.Println(err)
	// Output:
	// 1
	// discovery: service "db_svc" not found
}

// A registration stays alive across fake time when the clock moves in
// steps of the renewal interval and each step's renewals finish before
// the next.
func ExampleClock() {
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a, err := discovery.New(discovery.WithStore(backend), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		panic(err)
	}
	defer a.Close()
	b, err := discovery.New(discovery.WithStore(backend), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		panic(err)
	}
	defer b.Close()

	ctx := context.Background()
	if _, err := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080}); err != nil {
		panic(err)
	}
	for range 12 { // a minute, four lease TTLs
		clock.Advance(discovery.DefaultLeaseTTL / 3)
		clock.BlockUntilHandled() // the renewals the step fired are done
	}
	svc, err := b.Get(ctx, "db_svc")
	fmt.Println(len(svc.Instances), err)
	// Output: 1 <nil>
}
