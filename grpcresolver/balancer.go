package grpcresolver

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/rssbot/discovery"
)

// BalancerName is the name of the gRPC load-balancing policy that picks
// with Registry.Pick (see RegisterBalancer).
const BalancerName = "discovery_pick"

// RegisterBalancer registers the "discovery_pick" load-balancing policy
// with gRPC, whose registry of policies is global: call it once, at
// start-up, before any client dials (gRPC's registration is not safe for
// concurrent use). Then choose it in the client's service config:
//
//	grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"discovery_pick": {}}]}`)
//
// For a target this package resolves, each call goes to the instance
// Registry.Pick chooses among the connected ones, with the service's
// strategy (p2c_ewma by default: the fewer calls in flight and the lower
// latency, the likelier), and its end feeds the instance's latency average,
// in-flight count and outlier detection, as Selection.Done does: UNAVAILABLE,
// DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and DATA_LOSS count as failures,
// RESOURCE_EXHAUSTED as an overload, CANCELLED as nothing, and every other
// code as an answer; a call gRPC never sent (its stream not opened), or
// that failed on the client with nothing received from the server (a
// request that does not marshal), counts as nothing. A streaming call (as
// its method's descriptor in the protobuf registry says) feeds its outcome
// but not its latency: its life is not the instance's speed. While Pick
// has no connected instance to give, calls go round-robin over the
// connected ones. The policy needs this package's resolver; with another,
// it round-robins.
//
// A pick never waits for Redis or the database: gRPC holds every call of
// the ClientConn while its picker runs. It is Registry.Pick with
// discovery.NoWait: data past its freshness window (stale, or the
// database down) is used from memory, for as long as the Registry would
// serve it in an outage (its stale-if-error window, 5 min by default),
// while a refresh runs in the background for the calls after it; after a
// write of the dialing process's own Registry (an instance of its own
// drained or deregistered, say), its snapshot from before the write, with
// the write's change applied, until the new one is read: no call goes to
// an instance that process drained or deregistered. A service the Registry
// holds nothing of (evicted, or older than that window) has its calls go
// round-robin over the connected ones, their outcomes fed nowhere, until
// the background load lands.
func RegisterBalancer() {
	balancer.Register(pickBuilder{})
}

type pickBuilder struct{}

func (pickBuilder) Name() string { return BalancerName }

func (pickBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	pb := &pickerBuilder{}
	return &pickBalancer{Balancer: base.NewBalancerBuilder(BalancerName, pb, base.Config{HealthCheck: true}).Build(cc, opts), pb: pb}
}

// pickBalancer is balancer/base's, which keeps a connection per address,
// told which Registry and service to pick from (the resolver's state
// attributes) before each update. gRPC calls a balancer from one goroutine
// at a time, so pb needs no lock: the pickers it builds copy what they use.
type pickBalancer struct {
	balancer.Balancer
	pb *pickerBuilder
}

func (b *pickBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	b.pb.src, _ = s.ResolverState.Attributes.Value(sourceKey{}).(source)
	return b.Balancer.UpdateClientConnState(s)
}

type sourceKey struct{}

// source is where a resolver's state comes from: the Registry and service
// to pick from, the instances resolved (address and ID), and the
// instances of it not resolved (by ID: WithFilter
// left them out, or they are not usable), which Pick must not choose:
// never resolved, they are never connected.
type source struct {
	reg     *discovery.Registry
	service string
	skip    []string
	// resolved is the instances resolved, the connected among them or not.
	resolved []resolvedAddr
}

// Equal is what gRPC's attributes compare a source with.
func (s source) Equal(o any) bool {
	x, ok := o.(source)
	return ok && x.reg == s.reg && x.service == s.service && slices.Equal(x.skip, s.skip) &&
		slices.Equal(x.resolved, s.resolved)
}

type pickerBuilder struct {
	src source
	// streams caches streaming's answer by method name for the pickers of
	// one ClientConn: the protobuf registry's lookup takes its lock and
	// walks the name on every call otherwise.
	streams sync.Map
}

func (pb *pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	// NoWait: gRPC's Picker.Pick must not block, and holds the
	// ClientConn's pick for every call while it runs. A Pick that loaded
	// (an entry past its stale window, or none) waited for the database
	// there, up to the load timeout or the call's deadline, with a
	// black-holed database every call of the ClientConn in turn.
	p := &picker{src: pb.src, streams: &pb.streams, byAddr: make(map[string]balancer.SubConn, len(info.ReadySCs)),
		skip: []discovery.PickOption{discovery.NoWait()}}
	for _, id := range pb.src.skip {
		p.skip = append(p.skip, discovery.Exclude(id))
	}
	for sc, sci := range info.ReadySCs {
		p.byAddr[sci.Address.Addr] = sc
		p.ready = append(p.ready, sc)
	}
	// Nor are the resolved ones not connected (yet, or any more): Pick
	// chose among them all, and a call whose three Picks found none
	// connected went round-robin with its outcome fed nowhere (p2c_ewma
	// prefers the instances it knows nothing of: nearly every call while
	// a client was still connecting to the others).
	for _, ra := range pb.src.resolved {
		if _, ok := p.byAddr[ra.addr]; !ok {
			p.skip = append(p.skip, discovery.Exclude(ra.id))
		}
	}
	return p
}

type resolvedAddr struct{ addr, id string }

type picker struct {
	src     source
	streams *sync.Map                   // pickerBuilder.streams
	byAddr  map[string]balancer.SubConn // the connected ones, by address
	ready   []balancer.SubConn
	skip    []discovery.PickOption // NoWait, and Exclude of each instance not resolved
	next    atomic.Uint32
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if p.src.reg != nil {
		// The instances not resolved are never chosen; one Pick
		// chooses that is not connected here (connecting, or not resolved
		// yet) is left out for another try, twice. Pick answers from what
		// the Registry holds, waiting for no database (NoWait): with
		// nothing held, it fails, a load starts in the background, and
		// the call goes round-robin.
		opts := p.skip
		for range 3 {
			sel, err := p.src.reg.Pick(info.Ctx, p.src.service, opts...)
			if err != nil {
				break
			}
			if sc, ok := p.byAddr[sel.Instance.Addr()]; ok {
				if p.streaming(info.FullMethodName) {
					// Its life, minutes maybe, is no latency: taken as one,
					// p2c_ewma shunned the instance for as long after.
					return balancer.PickResult{SubConn: sc, Done: func(di balancer.DoneInfo) { sel.DoneLatency(ended(di), -1) }}, nil
				}
				return balancer.PickResult{SubConn: sc, Done: func(di balancer.DoneInfo) { sel.Done(ended(di)) }}, nil
			}
			sel.Done(context.Canceled) // never sent: no outcome
			// A copy: p.skip is shared by concurrent picks.
			opts = append(opts[:len(opts):len(opts)], discovery.Exclude(sel.Instance.ID))
		}
	}
	return balancer.PickResult{SubConn: p.ready[(p.next.Add(1)-1)%uint32(len(p.ready))]}, nil
}

// streaming is the package's streaming, cached by method name.
func (p *picker) streaming(method string) bool {
	if v, ok := p.streams.Load(method); ok {
		return v.(bool)
	}
	s := streaming(method)
	p.streams.Store(method, s)
	return s
}

// streaming reports whether method ("/package.Service/Method") streams
// (client, server or both ways), as the protobuf registry describes it; a
// method not there (another codec) is taken as unary.
func streaming(method string) bool {
	method = strings.TrimPrefix(method, "/")
	i := strings.LastIndexByte(method, '/')
	if i < 0 {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(method[:i]))
	if err != nil {
		return false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return false
	}
	md := sd.Methods().ByName(protoreflect.Name(method[i+1:]))
	return md != nil && (md.IsStreamingClient() || md.IsStreamingServer())
}

// ended is what a call's end says about its instance (outcome), and no
// outcome (context.Canceled) for one the instance had no part in:
//   - never sent: a pick whose connection stopped being ready, which gRPC
//     ends with an empty DoneInfo before it picks again (counted as a
//     success, it cleared the instance's failures in a row and pulled its
//     latency average to nothing), or a stream that could not be opened;
//   - failed on the client, nothing received from the server: a request
//     that does not marshal (INTERNAL), one above the send limit
//     (RESOURCE_EXHAUSTED). Counted, they ejected a sound instance. With
//     nothing received, only UNAVAILABLE (the connection failed) and
//     DEADLINE_EXCEEDED (no answer in time) are the instance's.
func ended(di balancer.DoneInfo) error {
	if !di.BytesSent {
		return context.Canceled
	}
	if di.Err != nil && !di.BytesReceived {
		switch status.Code(di.Err) {
		case codes.Unavailable, codes.DeadlineExceeded:
		default:
			return context.Canceled
		}
	}
	return outcome(di.Err)
}

// outcome is what a call's end says about the instance that served it.
func outcome(err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.DataLoss:
		return err
	case codes.ResourceExhausted:
		return discovery.ErrOverloaded
	case codes.Canceled:
		return context.Canceled
	}
	return nil // the server answered
}
