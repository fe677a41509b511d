package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// A caller that does not pick through the balancer reports how its calls
// went; five failures in a row eject the instance from selection for 30 s.
func ExampleRegistry_ReportOutcome() {
	ctx := context.Background()
	reg, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()),
		discovery.WithoutHealthChecks()) // made-up addresses: no active checks
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	for _, host := range []string{"10.0.0.7", "10.0.0.8"} {
		if _, err := reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: host, Port: 5432}); err != nil {
			panic(err)
		}
	}
	if _, err := reg.Get(ctx, "db_svc"); err != nil {
		panic(err)
	}
	for range 5 {
		_ = reg.ReportOutcome("db_svc", "10.0.0.7:5432", errors.New("connection reset"), 3*time.Millisecond)
	}
	_ = reg.ReportOutcome("db_svc", "10.0.0.8:5432", context.Canceled, time.Millisecond) // the caller's, not counted

	hs, _ := reg.Health(ctx, "db_svc")
	for _, h := range hs {
		if h.Ejected {
			fmt.Println(h.ID, "ejected for", time.Until(h.EjectedUntil).Round(10*time.Second))
		} else {
			fmt.Println(h.ID, "in selection,", h.PassiveFailures, "failures")
		}
	}
	svc, _ := reg.Get(ctx, "db_svc")
	for _, in := range svc.Instances {
		fmt.Println(in.ID, in.Status)
	}
	// Output:
	// 10.0.0.7:5432 ejected for 30s
	// 10.0.0.8:5432 in selection, 0 failures
	// 10.0.0.7:5432 ejected
	// 10.0.0.8:5432 unknown
}
