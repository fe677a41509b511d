package grpcresolver

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// gatedStore is a database that stops answering loads (a black hole) once
// shut: Load waits until the gate opens or its context ends.
type gatedStore struct {
	discovery.Store
	shut     chan struct{} // closed by shutGate
	gate     chan struct{} // closed by openGate
	openOnce sync.Once
}

func (s *gatedStore) shutGate() { close(s.shut) }
func (s *gatedStore) openGate() { s.openOnce.Do(func() { close(s.gate) }) }

func (s *gatedStore) Load(ctx context.Context, service string) (*discovery.Service, error) {
	select {
	case <-s.shut:
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	default:
	}
	return s.Store.Load(ctx, service)
}

// nowaitT0 is when the instances of the tests below are registered.
var nowaitT0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// gatedRegistry returns a Registry on a gatedStore over backend, on clock,
// whose loads wait a minute before they give up: longer than any pick
// here may take. The gate opens when the test ends, before the Registry
// closes.
func gatedRegistry(t *testing.T, backend *discoverytest.Backend, clock *discoverytest.Clock) (*gatedStore, *discovery.Registry) {
	t.Helper()
	gs := &gatedStore{Store: backend, gate: make(chan struct{}), shut: make(chan struct{})}
	r, err := discovery.New(discovery.WithStore(gs), discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithReaper(0, 0), discovery.WithCloseDrain(0), discovery.WithLoadTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	t.Cleanup(gs.openGate) // first: the loads end, then Close
	return gs, r
}

// registerAt registers an instance of service on port straight into
// backend, its lease good for an hour from nowaitT0.
func registerAt(t *testing.T, backend *discoverytest.Backend, service string, port int) resolvedAddr {
	t.Helper()
	in := discovery.Instance{Service: service, Host: "10.0.0.1", Port: port, Weight: 100, RegisteredAt: nowaitT0, ExpiresAt: nowaitT0.Add(time.Hour)}
	if _, err := backend.Register(context.Background(), &in); err != nil {
		t.Fatal(err)
	}
	return resolvedAddr{addr: in.Addr(), id: in.ID}
}

// pickSoon runs one Pick of p and returns its result, failing t if the
// pick has not returned 10 s later (the store is held for a minute).
func pickSoon(t *testing.T, p balancer.Picker, what string) balancer.PickResult {
	t.Helper()
	type picked struct {
		res balancer.PickResult
		err error
	}
	done := make(chan picked, 1)
	go func() {
		res, err := p.Pick(balancer.PickInfo{FullMethodName: "/greeter.Greeter/Hello", Ctx: context.Background()})
		done <- picked{res, err}
	}()
	select {
	case pk := <-done:
		if pk.err != nil {
			t.Fatalf("%s: Pick = %v; want a connection", what, pk.err)
		}
		return pk.res
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Pick still waiting for the database after 10 s; want it never to wait for I/O", what)
	}
	return balancer.PickResult{}
}

// pickerOver builds the picker of service on r with every one of ras
// connected, and returns it with the connection of each, in ras's order.
func pickerOver(r *discovery.Registry, service string, ras ...resolvedAddr) (balancer.Picker, []balancer.SubConn) {
	info := base.PickerBuildInfo{ReadySCs: map[balancer.SubConn]base.SubConnInfo{}}
	var scs []balancer.SubConn
	for _, ra := range ras {
		sc := &namedSubConn{addr: ra.addr}
		info.ReadySCs[sc] = base.SubConnInfo{Address: resolver.Address{Addr: ra.addr}}
		scs = append(scs, sc)
	}
	return (&pickerBuilder{src: source{reg: r, service: service, resolved: ras}}).Build(info), scs
}

type namedSubConn struct {
	balancer.SubConn
	addr string
}

// pickedByTheRegistry picks with p until the Registry (not the
// round-robin fallback) chooses want, failing t after 10 s.
func pickedByTheRegistry(t *testing.T, p balancer.Picker, want balancer.SubConn, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		res := pickSoon(t, p, what)
		if res.Done != nil {
			res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})
			if res.SubConn == want {
				return
			}
		}
		time.Sleep(time.Millisecond) // the refresh runs in the background
	}
	t.Fatalf("%s: in 10 s, the Registry never picked %s", what, want.(*namedSubConn).addr)
}

// gRPC's Picker.Pick must not block (google.golang.org/grpc/balancer): it
// holds the ClientConn's pick for every call. Past its stale window an
// entry sent Registry.Pick to the database inside the picker, and a
// black-holed database stalled every call of the ClientConn for up to the
// load timeout (its own deadline, for a call that had one). The pick now
// answers from what the Registry holds, stale as it is, while a refresh
// runs in the background, and the picks after it see what that read.
func TestPickerDoesNotWaitForAStaleEntry(t *testing.T) {
	clock := discoverytest.NewClock(nowaitT0)
	backend := discoverytest.NewBackend()
	gs, r := gatedRegistry(t, backend, clock)
	a := registerAt(t, backend, "greeter", 50051)
	if _, err := r.Get(context.Background(), "greeter"); err != nil {
		t.Fatal(err)
	}
	gs.shutGate()
	clock.Advance(time.Minute) // past the stale window (35 s), within stale-if-error (5 min)

	b := registerAt(t, backend, "greeter", 50052) // a change this process has not read
	p, scs := pickerOver(r, "greeter", a, b)
	res := pickSoon(t, p, "stale entry, database black-holed")
	if res.SubConn != scs[0] || res.Done == nil {
		t.Fatalf("stale entry: Pick = %+v; want %s, picked by the Registry from what it holds", res, a.addr)
	}
	res.Done(balancer.DoneInfo{BytesSent: true, BytesReceived: true})

	gs.openGate() // the database answers again
	pickedByTheRegistry(t, p, scs[1], "after the database answered again")
}

// A service the Registry holds nothing of (evicted from L1, or never read)
// sent the picker to the database too. Its pick now goes round-robin over
// the connected instances, as when the Registry has no answer, while the
// service loads in the background; the picks after the load are the
// Registry's.
func TestPickerDoesNotWaitForAServiceNotHeld(t *testing.T) {
	clock := discoverytest.NewClock(nowaitT0)
	backend := discoverytest.NewBackend()
	gs, r := gatedRegistry(t, backend, clock)
	a := registerAt(t, backend, "greeter", 50051)
	gs.shutGate()

	p, scs := pickerOver(r, "greeter", a)
	res := pickSoon(t, p, "nothing held, database black-holed")
	if res.SubConn != scs[0] {
		t.Fatalf("nothing held: Pick = %+v; want the one connected instance", res)
	}
	gs.openGate()
	pickedByTheRegistry(t, p, scs[0], "after the database answered again")
}
