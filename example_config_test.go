package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// A router instance receives its service's configuration through its
// callback; the report says which instances got it.
func ExampleRegistry_UpdateConfig() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithStore(discoverytest.NewBackend()),
		discovery.WithConfigValidator("feeds", func(doc json.RawMessage) error {
			var c struct{ Workers int }
			if err := json.Unmarshal(doc, &c); err != nil || c.Workers < 1 {
				return fmt.Errorf("workers must be at least 1")
			}
			return nil
		}))
	defer reg.Close()

	_, _ = reg.Register(ctx, discovery.Instance{Service: "feeds", Host: "127.0.0.1", Port: 9001, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(func(_ context.Context, cfg json.RawMessage) error {
			fmt.Println("feeds reloads", string(cfg))
			return nil
		}))

	rep, err := reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":4}`))
	fmt.Println(rep.ConfigRevision, rep.Count(discovery.NotifyDelivered), err)

	_, err = reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":0}`))
	fmt.Println(err)
	cfg, rev, _ := reg.Config(ctx, "feeds")
	fmt.Println(string(cfg), rev)
	// Output:
	// feeds reloads {"workers":4}
	// 1 1 <nil>
	// discovery: invalid config of service "feeds": refused by its validator: workers must be at least 1
	// {"workers":4} 1
}

// Two editors read the same configuration and store their edits with a
// compare-and-set: the second is refused, reads again and applies its
// edit to what the first stored.
func ExampleRegistry_UpdateConfigIf() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithStore(discoverytest.NewBackend()))
	defer reg.Close()
	_, _ = reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":4}`))

	_, rev, _ := reg.Config(ctx, "feeds") // both editors read revision 1
	_, err := reg.UpdateConfigIf(ctx, "feeds", rev, json.RawMessage(`{"workers":8}`))
	fmt.Println(err)
	_, err = reg.UpdateConfigIf(ctx, "feeds", rev, json.RawMessage(`{"workers":4,"batch":100}`))
	fmt.Println(errors.Is(err, discovery.ErrConflict), err)

	cfg, rev, _ := reg.Config(ctx, "feeds") // read again, edit, store
	var c map[string]any
	_ = json.Unmarshal(cfg, &c)
	c["batch"] = 100
	edited, _ := json.Marshal(c)
	rep, err := reg.UpdateConfigIf(ctx, "feeds", rev, edited)
	fmt.Println(rep.ConfigRevision, err)
	cfg, _, _ = reg.Config(ctx, "feeds")
	fmt.Println(string(cfg))
	// Output:
	// <nil>
	// true discovery: config of service "feeds" is at revision 2, not 1: not stored
	// 3 <nil>
	// {"batch":100,"workers":8}
}

// An operator rolls back the revision they saw; a fix another writer stored
// meanwhile is not erased: the rollback is refused, and they look again.
func ExampleRegistry_RollbackConfigIf() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithStore(discoverytest.NewBackend()))
	defer reg.Close()
	_, _ = reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":4}`))
	_, _ = reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":0}`))

	_, bad, _ := reg.Config(ctx, "feeds")                                   // revision 2 is bad: roll it back to 1
	_, _ = reg.UpdateConfig(ctx, "feeds", json.RawMessage(`{"workers":6}`)) // meanwhile, someone fixes it
	_, err := reg.RollbackConfigIf(ctx, "feeds", bad, bad-1)
	fmt.Println(errors.Is(err, discovery.ErrConflict), err)

	cfg, rev, _ := reg.Config(ctx, "feeds")
	fmt.Println(string(cfg), rev)
	// Output:
	// true discovery: config of service "feeds" is at revision 3, not 2: not stored
	// {"workers":6} 3
}

// A watcher sees the current state, then every change.
func ExampleRegistry_Watch() {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	a, _ := discovery.New(discovery.WithStore(backend), discovery.WithCloseDrain(0))
	defer a.Close()
	b, _ := discovery.New(discovery.WithStore(backend)) // another process
	defer b.Close()

	g, _ := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 5432})
	events, _ := b.Watch(ctx, "db_svc")
	ev := <-events
	fmt.Println(ev.Kind, ev.Instance.ID)

	_ = g.SetWeight(ctx, 50)
	ev = <-events
	fmt.Println(ev.Kind, ev.Instance.ID, ev.Instance.Weight)

	_ = g.Deregister(ctx)
	ev = <-events
	fmt.Println(ev.Kind, ev.Instance.ID)
	// Output:
	// instance_added 10.0.0.1:5432
	// instance_updated 10.0.0.1:5432 50
	// instance_removed 10.0.0.1:5432
}

// Drain takes an instance out of selection everywhere before deregistering
// it.
func ExampleRegistration_Drain() {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	a, _ := discovery.New(discovery.WithStore(backend))
	defer a.Close()
	b, _ := discovery.New(discovery.WithStore(backend)) // another process
	defer b.Close()

	g, _ := a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 5432})
	events, _ := b.Watch(ctx, "db_svc")
	<-events // the current state

	_ = g.Drain(ctx) // marks it draining, waits for the others to see it, deregisters
	for range 2 {
		ev := <-events
		fmt.Println(ev.Kind, ev.Instance.ID, ev.Instance.Status)
	}
	// Output:
	// instance_updated 10.0.0.1:5432 draining
	// instance_removed 10.0.0.1:5432 draining
}
