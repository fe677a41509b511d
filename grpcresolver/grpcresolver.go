// Package grpcresolver lets gRPC clients find their servers through a
// discovery.Registry: a target "discovery:///orders" resolves to the
// instances of service "orders" that the Registry would hand out, and
// follows them as they register, deregister, drain, fail their health
// checks or are ejected, through Registry.Watch (no polling, but for the
// health of instances kept as suspects, which Watch does not tell: read
// again every second while there are any).
//
//	conn, err := grpc.NewClient("discovery:///orders",
//		grpc.WithResolvers(grpcresolver.NewBuilder(reg)),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
//		grpc.WithTransportCredentials(creds))
//
// gRPC then balances over the resolved endpoints with its own policy
// (pick_first by default; round_robin above), or with the Registry's Pick
// through the "discovery_pick" policy (RegisterBalancer). The authority, and so the
// name a TLS certificate is checked against, is the service name. Each
// endpoint carries the instance's Info (Endpoint), for a policy of your own
// that reads zones or weights.
//
// The endpoints are the usable instances: live, not draining (a draining
// instance whose lease lapsed, kept as a suspect, included), weight above
// 0, and neither unhealthy nor ejected by the client's own Registry (its
// health checks and outlier detection). If none is, every live instance
// not draining and of weight above 0 is resolved, and gRPC's own
// connection checks decide (where Pick would refuse: the registry's
// verdicts may be wrong about a server gRPC can reach); if none is left at
// all, calls fail with UNAVAILABLE until one registers. Register gRPC
// servers with Check: discovery.CheckTCP (or turn the checks off): the
// default check is an HTTP GET of /health, which a gRPC server does not
// answer.
package grpcresolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/rssbot/discovery"
)

// Scheme is the default scheme of the targets the Builder resolves.
const Scheme = "discovery"

// Info is what an endpoint tells a load-balancing policy about its
// instance.
type Info struct {
	ID      string
	Zone    string
	Version string
	Weight  int
	Status  discovery.Status
}

type infoKey struct{}

// Endpoint returns the Info of an endpoint this package resolved, and false
// for any other.
func Endpoint(ep resolver.Endpoint) (Info, bool) {
	in, ok := ep.Attributes.Value(infoKey{}).(Info)
	return in, ok
}

// Option configures NewBuilder.
type Option func(*builder)

// WithScheme makes the Builder resolve targets of scheme instead of
// "discovery" (gRPC compares schemes in lower case; "" keeps the default).
// A scheme is a letter, then letters, digits, "+", "-" or "." (RFC 3986):
// another ("ht tp", "HTTP://") is refused, the scheme left as it was, and
// every Build of the Builder fails with a discovery.ValidationError (it
// matches discovery.ErrInvalid) that names it, as NewBuilder has no error
// to return. Taken as it was, it made a Builder no target could name: gRPC
// parsed "http:///orders" as scheme "http", found no resolver of it, and
// sent the target to DNS.
func WithScheme(scheme string) Option {
	return func(b *builder) {
		switch {
		case scheme == "":
		case !validScheme(scheme):
			if b.err == nil {
				b.err = &discovery.ValidationError{Field: "option WithScheme", Value: scheme,
					Reason: "not a URL scheme (a letter, then letters, digits, \"+\", \"-\" or \".\"): no target can name it"}
			}
		default:
			b.scheme = strings.ToLower(scheme)
		}
	}
}

// validScheme reports whether s is a URL scheme (RFC 3986, 3.1).
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// WithFilter keeps only the instances keep returns true for (a zone, a
// version, a tag), on top of the usable ones; the "discovery_pick" policy
// then picks among these only. keep must be fast and must not modify the
// instance (its tags and metadata are the Registry's).
func WithFilter(keep func(discovery.Instance) bool) Option {
	return func(b *builder) { b.keep = keep }
}

// NewBuilder returns a resolver.Builder of targets "discovery:///<service>"
// over reg. Pass it to grpc.WithResolvers (or resolver.Register it, once,
// before any client dials). A resolver it builds stops when gRPC closes it;
// closing reg ends every resolver's updates: a ClientConn keeps the last
// endpoints until it goes idle (grpc.WithIdleTimeout, 30 minutes by
// default), and from then on its calls fail with UNAVAILABLE
// ("discovery: closed"). Close the ClientConns before reg.
func NewBuilder(reg *discovery.Registry, opts ...Option) resolver.Builder {
	b := &builder{reg: reg, scheme: Scheme}
	for _, o := range opts {
		if o != nil {
			o(b)
		}
	}
	return b
}

type builder struct {
	reg    *discovery.Registry
	scheme string
	keep   func(discovery.Instance) bool
	// err is an option's refusal, which every Build returns: NewBuilder
	// has no error to return.
	err error
}

func (b *builder) Scheme() string { return b.scheme }

// Build starts watching the target's service. A target whose path is not
// a valid service name ("discovery:///orders": the service is "orders"),
// or that has an authority, a query or a fragment, which it has no use for
// (rather than resolve the service as if they were not there), is an
// error matching discovery.ErrInvalid.
func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if b.err != nil {
		return nil, b.err
	}
	if b.reg == nil {
		return nil, &discovery.ValidationError{Field: "registry", Reason: "NewBuilder was given a nil *discovery.Registry"}
	}
	service := target.Endpoint()
	switch u := target.URL; {
	case u.Host != "" && service == "":
		// "discovery://orders": two slashes, the service taken for an
		// authority.
		return nil, &discovery.ValidationError{Field: "target", Value: u.String(),
			Reason: "names no service (it goes in the path, after three slashes): write " + strconv.Quote(b.scheme+":///"+u.Host)}
	case u.Host != "":
		return nil, &discovery.ValidationError{Field: "target", Value: u.String(),
			Reason: "has an authority (" + strconv.Quote(u.Host) + "), which this resolver does not use: write " + strconv.Quote(b.scheme+":///"+service)}
	case u.RawQuery != "" || u.ForceQuery:
		return nil, &discovery.ValidationError{Field: "target", Value: u.String(),
			Reason: "has a query, which this resolver does not use (choose instances with WithFilter)"}
	case u.Fragment != "":
		return nil, &discovery.ValidationError{Field: "target", Value: u.String(),
			Reason: "has a fragment (" + strconv.Quote(u.Fragment) + "), which this resolver does not use (choose instances with WithFilter)"}
	}
	if err := discovery.ValidateServiceName(service); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, err := b.reg.Watch(ctx, service)
	if err != nil {
		cancel()
		return nil, err
	}
	r := &watchResolver{b: b, service: service, cc: cc, cancel: cancel, instances: map[string]discovery.Instance{},
		resolve: make(chan struct{}, 1), seed: maphash.MakeSeed()}
	r.wg.Add(1)
	go r.run(ctx, events)
	return r, nil
}

type watchResolver struct {
	b         *builder
	service   string
	cc        resolver.ClientConn
	cancel    context.CancelFunc
	resolve   chan struct{} // ResolveNow's
	wg        sync.WaitGroup
	instances map[string]discovery.Instance // run's own
	// unheard holds the instances taken from Get that the watch has not
	// told of yet (run's own): see reconcile.
	unheard map[string]bool
	last    []resolver.Endpoint
	left    []string // the IDs of the instances not resolved, sorted
	sent    bool
	// seed orders the endpoints (see push), differently in each resolver.
	seed maphash.Seed
}

// ResolveNow asks the Registry about the instances taken from its Get
// that the watch has not told of (see reconcile), and about the health of
// the instances kept as suspects (see suspectsOut); gRPC calls it when a
// connection fails or is lost. Changes arrive through the watch as they
// happen, but a watch whose first snapshot has no instance tells nothing,
// an instance Get showed from an older snapshot would stay an endpoint
// until the service's next change, and a suspect found dead or ejected
// changes no status the watch tells of.
func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.resolve <- struct{}{}:
	default:
	}
}

// Close stops the watch and waits for the last update to finish.
func (r *watchResolver) Close() {
	r.cancel()
	r.wg.Wait()
}

func (r *watchResolver) run(ctx context.Context, events <-chan discovery.Event) {
	defer r.wg.Done()
	// The first update has every instance: the watch's first events, one
	// per instance, may come apart, and an update with only some of them
	// would move calls for nothing. A service with no instance sends no
	// event: an empty update says so at once, so calls fail fast. What Get
	// showed stays until the watch tells of it, or Get no longer shows it
	// (reconcile).
	//
	// A first Get that failed is tried again, after 1 s, then twice as
	// long each time up to 30 s, until it answers or the watch has told
	// of an instance (gRPC leaves retrying to resolvers, and calls no
	// ResolveNow while its calls fail for a resolver's error).
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := time.Second
	if !r.first(ctx) {
		retry.Reset(backoff)
	}
	// While an instance shows as a suspect, its health and ejection are
	// read again every suspectRecheck: the watch tells no change of them,
	// and gRPC calls ResolveNow only when a connection fails. A suspect
	// ejected stayed an endpoint until then, and one whose ejection ended
	// (its connection shut down, nothing left to fail) stayed out for the
	// rest of the outage that made it a suspect.
	recheck := time.NewTimer(time.Hour)
	recheck.Stop()
	defer recheck.Stop()
	armed := false
	for {
		if !armed && r.anySuspect() {
			recheck.Reset(suspectRecheck)
			armed = true
		}
		select {
		case <-recheck.C:
			armed = false
			r.push(ctx) // sends only what changed
		case <-retry.C:
			if !r.sent && len(r.instances) == 0 && !r.first(ctx) {
				backoff = min(2*backoff, 30*time.Second)
				retry.Reset(backoff)
			}
		case ev, ok := <-events:
			if !ok {
				return // ctx ended or the Registry closed
			}
			r.apply(ev)
			// Apply what else is pending, then update once.
			for more := true; more; {
				select {
				case ev, ok := <-events:
					if !ok {
						r.push(ctx)
						return
					}
					r.apply(ev)
				default:
					more = false
				}
			}
			r.reconcile(ctx)
			r.push(ctx)
		case <-r.resolve:
			// Else nothing to ask about: the watch tells every other change.
			if len(r.unheard) > 0 || r.anySuspect() {
				r.reconcile(ctx)
				r.push(ctx)
			}
		case <-ctx.Done():
			return
		}
	}
}

// suspectRecheck is how often the health of the instances shown as
// suspects is read again (see run).
const suspectRecheck = time.Second

// first makes the first update from Get, and reports false if Get failed
// (its error reported). The watch's events will still come, but for a
// service with no instance there is none: the error stayed the store's
// long after it was back, until an instance registered.
func (r *watchResolver) first(ctx context.Context) bool {
	svc, err := r.b.reg.Get(ctx, r.service)
	switch {
	case err == nil:
		r.unheard = make(map[string]bool, len(svc.Instances))
		for _, in := range svc.Instances {
			r.instances[in.ID] = in
			r.unheard[in.ID] = true
		}
		r.push(ctx)
	case errors.Is(err, discovery.ErrNotFound), errors.Is(err, discovery.ErrNoHealthyInstances):
		r.push(ctx)
	case ctx.Err() == nil:
		r.cc.ReportError(err)
		return false
	}
	return true
}

func (r *watchResolver) apply(ev discovery.Event) {
	if ev.Kind != discovery.EventConfigChanged {
		delete(r.unheard, ev.Instance.ID)
	}
	switch ev.Kind {
	case discovery.EventInstanceAdded, discovery.EventInstanceUpdated, discovery.EventHealthChanged:
		r.instances[ev.Instance.ID] = ev.Instance
	case discovery.EventInstanceRemoved:
		delete(r.instances, ev.Instance.ID)
	}
}

// reconcile drops the instances taken from Get that the watch has not told
// of and that Get no longer shows. Get may answer from an older snapshot
// than the watch starts from (a stale entry served while it refreshes):
// an instance gone by the watch's first snapshot is one the watch never
// holds, and so never removes. One Get still shows, the watch tells of:
// the watch delivers what this process's cache holds, after it holds it.
func (r *watchResolver) reconcile(ctx context.Context) {
	if len(r.unheard) == 0 {
		return
	}
	svc, err := r.b.reg.Get(ctx, r.service)
	if err != nil && !errors.Is(err, discovery.ErrNotFound) {
		return // cannot tell: the next batch asks again
	}
	for id := range r.unheard {
		if err != nil || svc.Instance(id) == nil {
			delete(r.instances, id)
			delete(r.unheard, id)
		}
	}
}

// draining reports whether the instance is leaving: Get and Watch show one
// whose lease lapsed, kept as a suspect, as StatusSuspect even while it
// drains (Pick never chooses it); the Registry tells.
func (r *watchResolver) draining(in *discovery.Instance) bool {
	return in.Status == discovery.StatusDraining || in.Status == discovery.StatusSuspect && r.b.reg.Draining(r.service, in.ID)
}

// anySuspect reports whether an instance shows as a suspect, whose health
// the watch does not tell (see suspectsOut).
func (r *watchResolver) anySuspect() bool {
	for _, in := range r.instances {
		if in.Status == discovery.StatusSuspect {
			return true
		}
	}
	return false
}

// suspectsOut returns the IDs of the instances shown as suspects that this
// process's checks find unhealthy or that it ejected: Get and Watch show a
// suspect as suspect whatever its health (and tell no change of it), so
// the Registry tells, as Pick, which never chooses them, reads it. Nil
// when there is no suspect, or the Registry cannot tell.
func (r *watchResolver) suspectsOut(ctx context.Context) map[string]bool {
	if !r.anySuspect() {
		return nil
	}
	hs, err := r.b.reg.Health(ctx, r.service)
	if err != nil {
		return nil
	}
	var out map[string]bool
	for _, h := range hs {
		if h.Shown == discovery.StatusSuspect && (h.Ejected || h.Status == discovery.StatusUnhealthy) {
			if out == nil {
				out = make(map[string]bool)
			}
			out[h.ID] = true
		}
	}
	return out
}

// usable: what Pick would choose from, health and ejections included (out:
// a suspect that is unhealthy or ejected).
func usable(in *discovery.Instance, draining, out bool) bool {
	if draining || out || in.Status == discovery.StatusUnhealthy || in.Status == discovery.StatusEjected {
		return false
	}
	return in.Weight > 0
}

// push sends the endpoints of the usable instances (if none is usable, of
// every live one not draining and of weight above 0), unless they are what
// was sent last. They are in an order of the resolver's own (a hash of
// the instance ID), the same from one update to the next: pick_first
// (gRPC's default) takes the first it connects to, and with one order in
// every process (by ID), every client of a fleet sent all its calls to
// the same instance.
func (r *watchResolver) push(ctx context.Context) {
	var eps, panicked []resolver.Endpoint
	var skip []string
	out := r.suspectsOut(ctx)
	for _, in := range r.instances {
		if r.b.keep != nil && !r.b.keep(in) {
			skip = append(skip, in.ID)
			continue
		}
		info := attributes.New(infoKey{}, Info{ID: in.ID, Zone: in.Zone, Version: in.Version, Weight: in.Weight, Status: in.Status})
		ep := resolver.Endpoint{
			// The Info rides in BalancerAttributes, which do not make a new
			// connection when they change (a health change).
			Addresses:  []resolver.Address{{Addr: in.Addr(), BalancerAttributes: info}}, // as the picker finds it
			Attributes: info,
		}
		draining := r.draining(&in)
		if usable(&in, draining, out[in.ID]) {
			eps = append(eps, ep)
		} else if !draining && in.Weight > 0 {
			// Not weight 0 either: like draining, an operator's word
			// (never picked), not a verdict gRPC's checks could overrule.
			panicked = append(panicked, ep)
		}
	}
	if len(eps) == 0 {
		eps = panicked
	}
	// The instances not resolved, which the "discovery_pick" policy must
	// not choose: with most of them unhealthy or ejected, Pick panics and
	// chooses among every live one, and the picker, finding none connected
	// three times, sent calls round-robin with no outcome fed back.
	var left []string
	if len(eps) < len(r.instances) {
		resolved := make(map[string]bool, len(eps))
		for _, ep := range eps {
			in, _ := Endpoint(ep)
			resolved[in.ID] = true
		}
		for id := range r.instances {
			if !resolved[id] {
				left = append(left, id)
			}
		}
		slices.Sort(left)
	}
	slices.SortFunc(eps, func(a, b resolver.Endpoint) int {
		ia, _ := Endpoint(a)
		ib, _ := Endpoint(b)
		if c := cmp.Compare(maphash.String(r.seed, ia.ID), maphash.String(r.seed, ib.ID)); c != 0 {
			return c
		}
		return strings.Compare(ia.ID, ib.ID)
	})
	if r.sent && slices.EqualFunc(eps, r.last, sameEndpoint) && slices.Equal(left, r.left) {
		return
	}
	r.last, r.left, r.sent = eps, left, true
	// Watch-based: an error from UpdateState needs no retry. An empty
	// update takes the old endpoints away (a policy keeps using them
	// through a mere error), so calls fail (UNAVAILABLE) until instances
	// come back; the error then says why.
	addrs := make([]resolver.Address, len(eps))
	resolved := make([]resolvedAddr, len(eps))
	for i, ep := range eps {
		addrs[i] = ep.Addresses[0]
		in, _ := Endpoint(ep)
		resolved[i] = resolvedAddr{addr: addrs[i].Addr, id: in.ID}
	}
	// Addresses too, for the policies built on balancer/base (the Pick
	// balancer of this package among them), which read only those.
	_ = r.cc.UpdateState(resolver.State{Endpoints: eps, Addresses: addrs,
		Attributes: attributes.New(sourceKey{}, source{reg: r.b.reg, service: r.service, skip: left, resolved: resolved})})
	if len(eps) == 0 {
		var err error = &discovery.NotFoundError{Service: r.service}
		if len(r.instances) > 0 {
			err = &discovery.NoHealthyError{Service: r.service, Live: len(r.instances)}
		}
		if len(skip) > 0 {
			// Else it reads as if the instances were unhealthy.
			err = fmt.Errorf("%w: WithFilter left out %d of them", err, len(skip))
		}
		r.cc.ReportError(err)
	}
}

func sameEndpoint(a, b resolver.Endpoint) bool {
	return a.Addresses[0].Addr == b.Addresses[0].Addr && a.Attributes.Equal(b.Attributes)
}
