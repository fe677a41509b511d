package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// Strategy chooses one instance among the eligible ones.
type Strategy uint8

// The strategies. The zero Strategy means "the default": the per-call
// choice, else the service's (WithServiceStrategy, then its configuration),
// else the Registry's (WithStrategy), else StrategyP2CEWMA.
const (
	// StrategyP2CEWMA: power of two choices over peak-EWMA latency x
	// (in-flight + 1), as Finagle and Linkerd do. The default. Weights are
	// shares, as Finagle's traffic distributor makes them: when they
	// differ, a pick first draws a weight in proportion to the weight x
	// the instances that have it, then takes the cheaper of two of those,
	// so each instance gets its weight's share of picks whether or not
	// callers call Done (a canary of weight 1 among nine instances of
	// weight 10 gets 1/91 of them), and latency and load move picks among
	// instances of equal weight only (an instance alone at its weight gets
	// its share whatever its latency).
	StrategyP2CEWMA Strategy = iota + 1
	// StrategyRoundRobin: each eligible instance in turn, ignoring weights,
	// from a random place in each process.
	StrategyRoundRobin
	// StrategyWeightedRoundRobin: smooth, deterministic interleaving by
	// weight, as nginx does (weights 5:1:1 give a a b a c a a), from a
	// random place of the sequence in each process.
	StrategyWeightedRoundRobin
	// StrategyLeastConnections: the instance with the fewest requests in
	// flight from this process; ties go to a random one of them.
	StrategyLeastConnections
	// StrategyHealthBased: the seed's weighted random choice, weight =
	// health score x (1 - load) x 1000 / max(response time in ms, 1) x
	// instance weight; in panic mode, instance weight x (1 - load), so that
	// the unhealthy instances (score 0) get their share.
	StrategyHealthBased
	// StrategyConsistentHash: the key given with HashKey maps to the same
	// instance while the eligible set stays the same; removing one of N
	// instances moves about 1/N of the keys (Maglev), almost all of them
	// keys of the removed one (Maglev's table also moves a few others).
	// The table has 65,521 slots up to 655 instances and 262,139 past
	// that: a service crossing 655 instances remaps almost every key once.
	StrategyConsistentHash
	// StrategyRandom: random, in proportion to instance weights.
	StrategyRandom
)

var strategyNames = [...]string{"", "p2c_ewma", "round_robin", "weighted_round_robin", "least_connections", "health_based", "consistent_hash", "random"}

// String returns the strategy's name, such as "p2c_ewma".
func (s Strategy) String() string {
	if int(s) < len(strategyNames) && s != 0 {
		return strategyNames[s]
	}
	if s == 0 {
		return "default"
	}
	return "Strategy(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (s Strategy) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: a name ParseStrategy
// accepts, or "default" (the zero Strategy), as MarshalText writes them.
func (s *Strategy) UnmarshalText(text []byte) error {
	if string(text) == "default" {
		*s = 0
		return nil
	}
	p, err := ParseStrategy(string(text))
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// ParseStrategy parses a strategy name.
func ParseStrategy(name string) (Strategy, error) {
	for i, n := range strategyNames {
		if n == name && i > 0 {
			return Strategy(i), nil
		}
	}
	return 0, &ValidationError{Field: "strategy", Value: name, Reason: "unknown (p2c_ewma, round_robin, weighted_round_robin, least_connections, health_based, consistent_hash, random)"}
}

// Defaults of selection.
const (
	// DefaultPanicThreshold: below this fraction of eligible instances,
	// Pick spreads over all live ones (Envoy's panic mode).
	DefaultPanicThreshold = 0.5
	// DefaultMinScore: instances whose health score is not above it are not
	// eligible (the seed's rule).
	DefaultMinScore = 0.5
	// ewmaDecay is the time constant of peak-EWMA latency (Finagle's 10 s).
	ewmaDecay = 10 * time.Second
	// unknownPenalty is the cost of an instance with no latency data and a
	// request in flight.
	unknownPenalty = float64(1 << 60)
	// maxFailurePenalty bounds what failures alone can make an average (a
	// slower latency still counts as it is): doubled at each failure, it
	// reached +Inf after about 1,000 in a row (a second of an outage at
	// 1,000 requests a second), and never came back down.
	maxFailurePenalty = float64(ewmaDecay)
)

// PickOption narrows or steers one Pick. Options are small values: passing
// them allocates nothing.
type PickOption struct {
	kind     pickKind
	a, b     string
	strategy Strategy
}

type pickKind uint8

const (
	pickStrategy pickKind = iota + 1
	pickKey
	pickTag
	pickMeta
	pickVersion
	pickZone
	pickExclude
	pickNoWait
)

// UseStrategy selects the strategy for this call.
func UseStrategy(s Strategy) PickOption { return PickOption{kind: pickStrategy, strategy: s} }

// HashKey gives the key that StrategyConsistentHash maps to an instance (and
// selects that strategy when none is chosen for the call). A
// consistent_hash pick without a key, or with "", picks as p2c_ewma does:
// hashing nothing sent every pick to one instance.
func HashKey(key string) PickOption { return PickOption{kind: pickKey, a: key} }

// WithTag keeps instances that carry tag (repeat for several: all must match).
func WithTag(tag string) PickOption { return PickOption{kind: pickTag, a: tag} }

// WithMeta keeps instances whose metadata has key = value.
func WithMeta(key, value string) PickOption { return PickOption{kind: pickMeta, a: key, b: value} }

// WithVersion keeps instances of one version.
func WithVersion(v string) PickOption { return PickOption{kind: pickVersion, a: v} }

// PreferZone prefers instances in zone while the zone has enough healthy
// instances (at least one, and at least the panic threshold of its own),
// and uses every zone otherwise.
func PreferZone(zone string) PickOption { return PickOption{kind: pickZone, a: zone} }

// Exclude leaves one instance out (a retry goes elsewhere).
func Exclude(instanceID string) PickOption { return PickOption{kind: pickExclude, a: instanceID} }

// NoWait makes Pick answer from what this process holds in memory, and
// never wait for Redis or the database: for a caller that must not block,
// such as a gRPC picker (grpcresolver's "discovery_pick" policy). Past its
// freshness window the service's entry is still used, as lookups use it
// while the database is down (for the stale-if-error window, 5 min by
// default, leases included), and a refresh starts in the background, so
// later picks see what it reads. A write of this process (Register,
// Update, Drain, Deregister, a configuration, a key) leaves the snapshot it
// superseded to such picks until the new one is in memory, with what the
// write did to its instance applied: they never choose an instance this
// process has just drained or deregistered, and never find nothing held
// because of its own write (a pick that waits reads the write instead).
// For a service it holds nothing of (never looked up, evicted, or older
// than that window) Pick starts a load in the background and returns at
// once an error matching ErrUnavailable. The context is not used.
//
// On its own, on a fresh entry, it costs a pick nothing.
func NoWait() PickOption { return PickOption{kind: pickNoWait} }

// pickReq is the resolved options of one Pick. It is small (Pick zeroes it
// on every call) and refers to the caller's options for the filters.
type pickReq struct {
	strategy Strategy
	hasKey   bool
	filtered bool
	noWait   bool // NoWait
	key      string
	zone     string
	opts     []PickOption
}

// set resolves a call's options. Options that contradict each other are
// refused, not settled by whichever came last: two strategies, keys or
// zones, two versions or two values of one metadata key (which no instance
// can match). A hash key with a strategy that does not hash is not a
// conflict: generic callers pass a key always, for the strategies that use
// one (HashKey).
func (q *pickReq) set(opts []PickOption) error {
	q.opts = opts
	for i := range opts {
		o := &opts[i]
		switch o.kind {
		case pickStrategy:
			if o.strategy > StrategyRandom {
				return &ValidationError{Field: "strategy", Value: o.strategy.String(), Reason: "unknown"}
			}
			if o.strategy == 0 { // the default: no choice made by this option
				continue
			}
			if q.strategy != 0 && q.strategy != o.strategy {
				return conflict("strategy", q.strategy.String(), o.strategy.String())
			}
			q.strategy = o.strategy
		case pickKey:
			if q.hasKey && q.key != o.a {
				return conflict("hash key", q.key, o.a)
			}
			q.key, q.hasKey = o.a, true
		case pickZone:
			if err := core.ValidateLabel("zone", o.a); err != nil { // no instance is in it: the preference did nothing
				return err
			}
			if q.zone != "" && o.a != "" && q.zone != o.a {
				return conflict("zone", q.zone, o.a)
			}
			q.zone = cmp.Or(q.zone, o.a)
		case pickTag, pickMeta, pickVersion, pickExclude:
			// A filter that no registered instance can match (registration
			// refuses such tags and keys) is bad input, not a service with
			// nothing healthy, which is what it was reported as.
			// Checked as registration checks them: a tag with a control
			// character, a key with a space or a version of 65 bytes passed
			// the length checks here and matched nothing.
			var err error
			switch o.kind {
			case pickTag:
				err = core.ValidateTag(o.a)
			case pickMeta:
				err = core.ValidateMetadataEntry(o.a, o.b)
			case pickVersion:
				err = core.ValidateLabel("version", o.a)
			}
			if err != nil {
				return err
			}
			for j := range opts[:i] {
				p := &opts[j]
				switch {
				case p.kind != o.kind:
				case o.kind == pickVersion && p.a != o.a:
					return conflict("version", p.a, o.a)
				case o.kind == pickMeta && p.a == o.a && p.b != o.b:
					return conflict("metadata "+o.a, p.b, o.b)
				}
			}
			q.filtered = true
		case pickNoWait:
			q.noWait = true
		default:
			return &ValidationError{Field: "pick option", Reason: "zero PickOption"}
		}
	}
	return nil
}

// perNarrowing keeps one T for each narrowHash: round robin's rotations
// (pickerState) and weighted round robin's current weights (wrrState) of
// picks that filters, a zone or panic narrow. Sharing the direct picks'
// state, each caller's picks advanced every other caller's, and two callers
// taking turns saw one instance in two (or always the same one). A T is
// made the first time its hash is seen (copy on write) and kept, up to
// maxNarrowRotations; past that, new sets share one.
type perNarrowing[T any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[uint64]*T]
}

// maxNarrowRotations bounds the narrowed sets one service (or picker) keeps.
const maxNarrowRotations = 256

// reset forgets every T kept: the next pick of each set makes a new one.
// A service's rotations are reset when instances leave it (retain): a set
// that excludes an instance gone is never asked for again, and kept, such
// sets filled the service's maxNarrowRotations within hours of pods
// rescheduled under new IDs (the Transport's retries and the gRPC
// balancer exclude by ID), after which every new set shared one rotation.
func (n *perNarrowing[T]) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m.Store(nil)
}

func (n *perNarrowing[T]) get(h uint64, fresh func() *T) *T {
	if m := n.m.Load(); m != nil {
		if v := (*m)[h]; v != nil {
			return v
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var prev map[uint64]*T
	if old := n.m.Load(); old != nil {
		prev = *old
	}
	if v := prev[h]; v != nil {
		return v
	}
	if len(prev) >= maxNarrowRotations {
		h = 0 // the shared one
		if v := prev[h]; v != nil {
			return v
		}
	}
	m := make(map[uint64]*T, len(prev)+1)
	for k, v := range prev {
		m[k] = v
	}
	v := fresh()
	m[h] = v
	n.m.Store(&m)
	return v
}

// narrowHash identifies what narrows a pick (its filters and the zone it
// keeps to), whatever the order of its options; round robin keeps one
// rotation per value.
func (q *pickReq) narrowHash(zone string) uint64 {
	h := mix64(xxhash.Sum64String(zone))
	for i := range q.opts {
		switch o := &q.opts[i]; o.kind {
		case pickTag, pickMeta, pickVersion, pickExclude:
			h += mix64(uint64(o.kind)*golden ^ xxhash.Sum64String(o.a) ^ mix64(xxhash.Sum64String(o.b)))
		}
	}
	return h
}

// newCounter returns a rotation that starts at a random place, as
// buildPicker's does.
func newCounter() *atomic.Uint64 {
	c := new(atomic.Uint64)
	c.Store(rand.Uint64())
	return c
}

// conflict is the error of two options that cannot both hold.
func conflict(field, first, second string) error {
	return &ValidationError{Field: field, Value: second, Reason: "conflicts with " + strconv.Quote(first) + " given in the same call"}
}

// match reports whether an instance passes the call's filters.
func (q *pickReq) match(in *core.Instance) bool {
	return q.matchKept(in) && !q.excludes(in.ID)
}

// excludes reports whether the call's Exclude options leave id out.
func (q *pickReq) excludes(id string) bool {
	for i := range q.opts {
		if o := &q.opts[i]; o.kind == pickExclude && o.a == id {
			return true
		}
	}
	return false
}

// matchKept reports whether an instance passes the call's filters other
// than Exclude.
func (q *pickReq) matchKept(in *core.Instance) bool {
	for i := range q.opts {
		o := &q.opts[i]
		switch o.kind {
		case pickVersion:
			if in.Version != o.a {
				return false
			}
		case pickTag:
			if !in.HasTag(o.a) {
				return false
			}
		case pickMeta:
			if v, ok := in.Metadata[o.a]; !ok || v != o.b {
				return false
			}
		}
	}
	return true
}

// Selection is the instance Pick chose. Call Done exactly once when the
// request ends; it feeds in-flight counts, latency averages and passive
// health. A Selection is a small value: picking allocates nothing.
type Selection struct {
	// Instance is the chosen instance (shared: do not modify it).
	Instance *Instance
	// Strategy is the strategy that chose it.
	Strategy Strategy
	// Panic is true when too few instances were healthy and the choice
	// was made among all live ones.
	Panic bool

	r     *Registry
	st    *svcState
	is    *instState
	start int64
}

// Done ends the request with err (nil for success). Latency is measured from
// Pick's choice to Done, a load of the service Pick waited for left out
// (within a millisecond: Pick reads a coarse clock). A
// cancelled context is not held against the instance; ErrOverloaded counts
// against its load, not its health.
func (s Selection) Done(err error) {
	if s.is == nil {
		return
	}
	s.finish(err, time.Duration(s.r.clock.Now().UnixNano()-s.start))
}

// DoneLatency is Done with a latency the caller measured. A negative
// latency is no sample: a success then leaves the instance's latency
// average as it was (a failure still counts as one).
func (s Selection) DoneLatency(err error, latency time.Duration) {
	if s.is == nil {
		return
	}
	s.finish(err, latency)
}

func (s Selection) finish(err error, latency time.Duration) {
	// Never below zero: a Selection is a value, so a second Done (of it or
	// of a copy) cannot be told from the first; a count of -1 made that
	// instance win every least_connections pick for good. A second Done
	// still takes one off another request's count until that one is done.
	last := false
	for {
		n := s.is.inflight.Load()
		if n <= 0 || s.is.inflight.CompareAndSwap(n, n-1) {
			last = n == 1
			break
		}
	}
	o := classify(err)
	if o != outcomeCanceled {
		s.st.observe(s.is, latency, o, s.r.now.nanos())
	}
	s.r.recordOutcome(s.st, s.is, o, latency)
	if last && s.st.putOff.Load() != 0 {
		// The last request in flight of a service that left L1 meanwhile,
		// whose state was kept for it (forgetUnusedAs); after the outcome,
		// which may have ejected the instance.
		s.r.forgetPutOff(s.st)
	}
}

// observe folds one outcome into an instance's latency average. A failure
// of an instance with no average of its own yet counts as twice the
// service's typical average (its other instances' in selection): taken as
// it was, a first failure in 1 ns (a refused connection, a gRPC stream's
// error reported at once) made the instance look the fastest, and p2c_ewma
// sent it nearly every pick until failures had doubled that up to its
// peers'.
func (st *svcState) observe(is *instState, latency time.Duration, o outcome, now int64) {
	if (o == outcomeFailure || o == outcomeOverload) && is.ewma.Load() == 0 {
		if typ := st.typicalLatency(is, now); typ > 0 {
			is.ewmaAt.Store(now)
			is.ewma.CompareAndSwap(0, math.Float64bits(typ))
		}
	}
	is.observe(latency, o, now)
}

// typicalLatency is the mean of the current (decayed) latency averages of
// a service's instances other than except that have one, leaving out those
// out of selection for their health (ejected or unhealthy); 0 if none has.
// Theirs is not a peer's: the failures that took an instance out had
// doubled its average up to maxFailurePenalty (timeouts set it at once),
// selection drops it when the instance comes back (buildPicker), and
// counted here, one ejected instance among a few made a fast first
// failure of another cost seconds. It reads every instance's state, so it
// serves only the rare first failure.
func (st *svcState) typicalLatency(except *instState, now int64) float64 {
	m := st.insts.Load()
	if m == nil {
		return 0
	}
	sum, n := 0.0, 0
	for _, is := range *m {
		if is == except || is.ejected(now) || is.Status() == core.StatusUnhealthy {
			continue
		}
		if bits := is.ewma.Load(); bits != 0 {
			sum += math.Float64frombits(bits) * decay(now-is.ewmaAt.Load())
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// observe folds one latency into the instance's peak EWMA: a slower sample
// replaces the average at once, a faster one decays it with a 10 s time
// constant. A failure counts as at least twice the current average (up to
// maxFailurePenalty), so a fast-failing instance does not attract traffic.
func (is *instState) observe(latency time.Duration, o outcome, now int64) {
	if latency < 0 && o == outcomeSuccess {
		// No sample (a caller's clock that went back, say): taken as 1 ns,
		// it pulled the average to nothing and p2c sent the instance
		// nearly every pick for seconds. A failure still costs its penalty.
		return
	}
	l := max(float64(latency), 1)
	for {
		old := is.ewma.Load()
		prev := math.Float64frombits(old)
		if o == outcomeFailure || o == outcomeOverload { // an overload is load: it must not look cheap
			// twice the average as it stands now: decayed since its last
			// sample, as cost reads it (an old, slower one cost 2x that)
			cur := prev
			if cur != 0 {
				cur *= decay(now - is.ewmaAt.Load())
			}
			l = max(l, min(2*cur, maxFailurePenalty))
		}
		next := l
		if prev != 0 && l < prev {
			w := decay(now - is.ewmaAt.Load())
			next = prev*w + l*(1-w)
		}
		if is.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			// now is the coarse clock's (1 ms): a busy instance's Dones
			// mostly fall in the tick of the one before, and an atomic
			// store is an exchange on amd64, as dear as the CAS.
			if is.ewmaAt.Load() != now {
				is.ewmaAt.Store(now)
			}
			return
		}
	}
}

// candidate is one instance selection may use.
type candidate struct {
	in       *core.Instance
	is       *instState
	weight   float64
	hid      uint64 // hash of the ID, for rendezvous hashing
	eligible bool
	// slow: not eligible only because its checks, though they pass, are
	// too slow for the minimum score (NoHealthyError.Slow says so)
	slow bool
	// throttled: not eligible because its checks answer 429, which no
	// speed brings above the minimum score (NoHealthyError.Throttled)
	throttled bool
}

// picker is what selection needs of one service at one moment: built when
// the view or a health state changes, read without locks.
type picker struct {
	view       *core.Service
	gen        uint64
	validUntil int64 // an ejection ends: rebuild
	strategy   Strategy
	cands      []candidate
	elig       []int32      // indices of eligible candidates
	eligIS     []*instState // their states, in elig's order (least_connections' scan)
	cum        []float64    // running sums of the eligible candidates' weights
	live       int          // live instances, draining and weight 0 included
	rng        *fastRand    // the Registry's, for picks with filters
	seed       uint64       // SplitMix64's start for direct picks (Pick)
	// direct: a pick with no filter and no zone chooses among elig, without
	// panic (some are eligible, and at least the panic threshold's share).
	// Fixed when the picker is built: such a pick counts nothing.
	direct bool
	// uniform: every eligible candidate has the same weight.
	uniform bool
	// byWeight and classes are p2c_ewma's weight classes, built when the
	// weights differ (not uniform): the eligible candidates' indices
	// ordered by weight, and one class for each weight (p2cWeighted).
	byWeight []int32
	classes  []weightClass

	rr     atomic.Uint64
	narrow *perNarrowing[atomic.Uint64] // the service's round robin rotations (pickerState)
	wrr    wrrState
	maglev atomic.Pointer[maglevTable]
	// maglevAll is the table of every candidate, for panic picks.
	maglevAll atomic.Pointer[maglevTable]
}

// pickerFor returns the current picker of an entry's service.
func (r *Registry) pickerFor(e *entry, now int64) *picker {
	if p := e.st.picker.Load(); p != nil && p.current(e, now) {
		return p
	}
	return r.buildPicker(e, now)
}

// current reports whether p was built from the entry's view and the
// service's health generation, and no ejection in it has ended.
func (p *picker) current(e *entry, now int64) bool {
	return p.view == e.view.Load() && p.gen == e.st.gen.Load() && now < p.validUntil
}

func (r *Registry) buildPicker(e *entry, now int64) *picker {
	st := e.st
	st.pmu.Lock()
	defer st.pmu.Unlock()
	old := st.picker.Load()
	if old != nil && old.current(e, now) {
		return old
	}
	view, gen := e.view.Load(), st.gen.Load()
	p := &picker{narrow: &st.narrow, view: view, gen: gen, validUntil: math.MaxInt64, live: len(view.Instances), rng: &r.rng, seed: r.rng.uint64()}
	p.strategy = r.serviceStrategy(st.name, view)
	minScore := r.opts.minScore
	p.cands = make([]candidate, 0, len(view.Instances))
	for i := range view.Instances {
		in := &view.Instances[i]
		if in.Status == core.StatusDraining || in.Weight <= 0 || in.Status == core.StatusSuspect && drainingIn(e.raw, in.ID) {
			continue
		}
		is := st.instOrNew(in.ID)
		c := candidate{in: in, is: is, weight: float64(in.Weight), hid: xxhash.Sum64String(in.ID)}
		if u := is.ejectedUntil.Load(); u != 0 && now < u {
			p.validUntil = min(p.validUntil, u)
		} else {
			c.eligible = is.Status() != core.StatusUnhealthy && is.Score() > minScore
			c.slow = !c.eligible && slowChecks(is, minScore)
			c.throttled = !c.eligible && throttledChecks(is, minScore)
		}
		if c.eligible {
			p.elig = append(p.elig, int32(len(p.cands)))
			p.eligIS = append(p.eligIS, is)
		}
		p.cands = append(p.cands, c)
	}
	// An instance that comes (back) into selection starts with no latency
	// average: what it measured before it left (ejected, weight 0, ...) is
	// stale, and a fresh start gets it one probing request at once. One
	// with requests still in flight (a stream opened before it left) starts
	// at its peers' typical average instead: with none, those requests made
	// it cost what a probe in flight does (unknownPenalty), and it got no
	// pick until the last of them ended.
	if old != nil {
		was := make(map[*instState]bool, len(old.elig))
		for _, i := range old.elig {
			was[old.cands[i].is] = true
		}
		var busy []*instState
		for _, i := range p.elig {
			if is := p.cands[i].is; !was[is] {
				is.ewma.Store(0)
				if is.inflight.Load() > 0 {
					busy = append(busy, is)
				}
			}
		}
		for _, is := range busy { // after the resets: typicalLatency reads no stale average
			if typ := st.typicalLatency(is, now); typ > 0 {
				is.ewmaAt.Store(now)
				is.ewma.CompareAndSwap(0, math.Float64bits(typ))
			}
		}
	}
	p.direct = len(p.elig) > 0 && float64(len(p.elig)) >= r.opts.panicThreshold*float64(len(p.cands))
	total := 0.0
	p.cum = make([]float64, len(p.elig))
	p.uniform = true
	for k, i := range p.elig {
		total += p.cands[i].weight
		p.cum[k] = total
		p.uniform = p.uniform && p.cands[i].weight == p.cands[p.elig[0]].weight
	}
	if !p.uniform {
		p.byWeight, p.classes = weightClasses(p)
	}
	if old != nil {
		p.rr.Store(old.rr.Load()) // keep the rotations going
		p.wrr.n.Store(old.wrr.n.Load())
		p.carryNarrowed(old)
	} else {
		// A random start, as gRPC's round_robin: starting at the first
		// instance, every process of a fleet sent its first picks to it.
		// 31 bits, so that chooseDirect's int conversion stays positive.
		// Weighted round robin's rotation too: a random place in its
		// period (see wrrNext for one too long to hold).
		p.rr.Store(r.rng.uint64() >> 33)
		p.wrr.n.Store(r.rng.uint64() >> 33)
	}
	st.picker.Store(p)
	return p
}

// drainingIn reports whether the snapshot stores the instance as draining.
// A view shows a lapsed instance kept as a suspect as suspect, draining or
// not (suspect wins, as in Get and Watch), so selection reads the mark from
// the snapshot: a drained instance kept as a suspect was picked again.
func drainingIn(raw *core.Service, id string) bool {
	if raw == nil {
		return false
	}
	in := raw.Instance(id)
	return in != nil && in.Status == core.StatusDraining
}

// serviceConfig is the part of a service's configuration selection reads:
// {"balancer": {"strategy": "round_robin"}}.
type serviceConfig struct {
	Balancer struct {
		Strategy string `json:"strategy"`
	} `json:"balancer"`
}

func (r *Registry) serviceStrategy(name string, view *core.Service) Strategy {
	if s := r.opts.serviceStrategy[name]; s != 0 {
		return s
	}
	if len(view.Config) > 0 {
		var c serviceConfig
		if json.Unmarshal(view.Config, &c) == nil && c.Balancer.Strategy != "" {
			if s, err := ParseStrategy(c.Balancer.Strategy); err == nil {
				return s
			}
		}
	}
	return r.opts.strategy
}

// Pick chooses one instance of a service: live, healthy (score above 0.5),
// not ejected, not draining, with a weight above 0, and matching the
// options' filters. If none is eligible it returns an error matching
// ErrNoHealthyInstances that names the service. If fewer than the panic
// threshold (50%) are eligible, it chooses among all live instances
// instead, and says so in Selection.Panic (unless WithFailClosed).
//
// It reads the service as Lookup does, and so may wait for Redis or the
// database (within ctx and WithLoadTimeout) when its entry is past the
// stale window or not in memory; with NoWait it never does.
//
// On a warm cache Pick and Done allocate nothing.
func (r *Registry) Pick(ctx context.Context, service string, opts ...PickOption) (Selection, error) {
	// The usual pick (no options, only a hash key for a service that
	// hashes, or only NoWait, gRPC's picker's; a fresh entry, a current
	// picker with no filter or panic to apply) takes this path, as short
	// as a Get's.
	key, keyed := "", len(opts) == 1 && opts[0].kind == pickKey
	if keyed {
		key = opts[0].a
	}
	if len(opts) == 0 || keyed || len(opts) == 1 && opts[0].kind == pickNoWait {
		if e := r.l1.get(service); e != nil && e.st != nil {
			now := r.now.nanos()
			st := e.st
			if p := st.picker.Load(); p != nil && p.direct && now < e.freshUntil.Load() && p.current(e, now) &&
				(!keyed || p.strategy == StrategyConsistentHash) {
				// The Selection is built here, not in a callee: a struct
				// returned through a call is stored a field at a time and
				// copied on with wide loads, which stall (store forwarding).
				e.markUsed(now)
				c := r.pickDirect(st, p, p.strategy, key, now)
				return Selection{Instance: c.in, Strategy: p.strategy, r: r, st: st, is: c.is, start: now}, nil
			}
		}
	}
	return r.pick(ctx, service, opts)
}

func (r *Registry) pick(ctx context.Context, service string, opts []PickOption) (Selection, error) {
	// Options are validated before any I/O: a bad one is ErrInvalid, not
	// whatever the lookup says, and costs no load.
	var q pickReq
	if len(opts) > 0 {
		if err := q.set(opts); err != nil {
			return Selection{}, err
		}
	}
	now := r.now.nanos()
	e := r.l1.get(service)
	if e == nil || now >= e.freshUntil.Load() || e.raw == nil || e.notFound != nil {
		var err error
		var stale bool
		if q.noWait {
			if e, err = r.heldEntry(service, e, now); err == nil {
				stale = now >= e.freshUntil.Load() // held past its freshness
			}
		} else {
			e, _, stale, err = r.lookupEntry(ctx, service)
		}
		if err != nil {
			return Selection{}, err
		}
		if stale {
			// Counted as a stale Get is: a process that only picks (the
			// HTTP client does) showed no stale answer through a whole
			// database outage. A fresh pick never comes here.
			r.ctr.stale.Add(1)
		}
		if e.notFound != nil {
			return Selection{}, e.notFound
		}
		// The call starts now, not before the load: its time (a cold
		// cache, a slow database) was charged to the chosen instance's
		// latency, which p2c_ewma then shunned for seconds.
		now = r.now.nanos()
	} else {
		e.markUsed(now) // lookupEntry marks those it returns
	}
	p := r.pickerFor(e, now)
	st := e.st
	strategy := q.strategy
	switch {
	case strategy != 0:
	case q.hasKey: // whatever the service's strategy, as HashKey says
		strategy = StrategyConsistentHash
	default:
		strategy = p.strategy
	}
	var c *candidate
	panicked := false
	if p.direct && !q.filtered && q.zone == "" {
		c = r.pickDirect(st, p, strategy, q.key, now)
	} else {
		i, pan, err := p.choose(r, &q, strategy, now)
		if err != nil {
			return Selection{}, err
		}
		r.countPick(st, strategy)
		if pan {
			st.panics.Add(1)
		}
		c, panicked = &p.cands[i], pan
		r.handOut(st, c)
	}
	return Selection{Instance: c.in, Strategy: strategy, Panic: panicked, r: r, st: st, is: c.is, start: now}, nil
}

// pickDirect applies a strategy to a direct picker's eligible list. Such a
// pick cannot fail, so it is counted first, and its number in the count is
// its step of SplitMix64: its random number costs a mix instead of a draw
// (rand.Uint64 was a sixth of a Pick).
func (r *Registry) pickDirect(st *svcState, p *picker, strategy Strategy, key string, now int64) *candidate {
	rnd := mix64(p.seed + r.countPick(st, strategy)*golden)
	var i int
	if strategy == StrategyP2CEWMA { // the default: one call less
		i = p.p2cDirect(rnd, now)
	} else {
		i = p.chooseDirect(strategy, rnd, key, now)
	}
	c := &p.cands[i]
	r.handOut(st, c)
	return c
}

// handOut gives a chosen candidate one more request in flight.
func (r *Registry) handOut(st *svcState, c *candidate) {
	if r.met != nil && st.met.Load() == nil {
		r.countService(st) // a pick is a lookup: the service gets its labels
	}
	c.is.inflight.Add(1)
}

// slowChecks reports whether an instance passes its checks (healthy or
// warning) but its latest response time keeps it at or below minScore,
// where the same answer within 100 ms would score above it: a health
// endpoint too slow for any run of passes to bring it back into selection.
// A warning (HTTP 429, throttling) scores 0.6 however fast it is answered:
// at a minScore of 0.6 or more it is out for what it answers, not for its
// speed, and counted slow it sent the reader to speed up checks answered
// in milliseconds.
func slowChecks(is *instState, minScore float64) bool {
	st, rtt := is.Status(), time.Duration(is.rtt.Load())
	return rtt > 0 && (st == core.StatusHealthy || st == core.StatusWarning) &&
		health.Sample(health.Check{Status: st, RTT: rtt}) <= minScore &&
		health.Sample(health.Check{Status: st, RTT: health.ScoreRef}) > minScore
}

// throttledChecks reports whether an instance answers its checks with 429
// (a warning) and a minScore of 0.6 or more keeps it out however fast it
// answers: out for asking for less traffic, which the error's reader
// relieves by load, not by a faster health endpoint. A slow 429 is
// throttled, not slow (slowChecks is false for it), as speed alone would
// not bring it back.
func throttledChecks(is *instState, minScore float64) bool {
	return is.Status() == core.StatusWarning &&
		health.Sample(health.Check{Status: core.StatusWarning, RTT: health.ScoreRef}) <= minScore
}

// noHealthy is the error of a pick that finds no instance to use, with the
// count of those the pick's filters keep that are out only for slow checks
// or for checks answered with 429, and of the eligible ones, too few, when
// WithFailClosed refused the pick.
// It counts what the pick's own options left out, too: without them, "no
// healthy instances" of a service with a filter that matched none, or a
// retry that excluded the healthy ones, sent the reader to the health of
// sound instances.
func (p *picker) noHealthy(q *pickReq, eligible int) error {
	e := &core.NoHealthyError{Service: p.view.Name, Live: p.live, Eligible: eligible}
	for i := range p.cands {
		c := &p.cands[i]
		kept := !q.filtered || q.matchKept(c.in)
		if c.slow && kept {
			e.Slow++
		}
		if c.throttled && kept {
			e.Throttled++
		}
		if c.eligible && kept && q.filtered && q.excludes(c.in.ID) {
			e.Excluded++
		}
	}
	if q.filtered {
		for i := range p.view.Instances {
			if !q.matchKept(&p.view.Instances[i]) {
				e.Filtered++
			}
		}
	}
	return e
}

// choose runs a strategy and returns the index of a candidate.
func (p *picker) choose(r *Registry, q *pickReq, s Strategy, now int64) (int, bool, error) {
	filtered := q.filtered
	nElig, nCand := len(p.elig), len(p.cands)
	avail := nElig  // eligible and not excluded
	spread := nCand // candidates, eligible or not, not excluded
	if filtered {
		// Panic is judged on the instances the filters keep, Exclude aside:
		// leaving out one healthy instance (a retry) put a service at the
		// threshold into panic, and sent the retry to unhealthy ones.
		nElig, nCand, avail, spread = 0, 0, 0, 0
		for i := range p.cands {
			c := &p.cands[i]
			if q.matchKept(c.in) {
				nCand++
				out := q.excludes(c.in.ID)
				if !out {
					spread++
				}
				if c.eligible {
					nElig++
					if !out {
						avail++
					}
				}
			}
		}
	}
	mode := modeEligible
	if float64(nElig) < r.opts.panicThreshold*float64(nCand) {
		mode = modeAll
	}
	// None eligible is an error. In panic, a pick that excludes every
	// eligible instance still has the others to spread over, as one
	// without Exclude does (it failed: whether a retry in panic was made
	// depended on which instance the first pick had chosen).
	if nElig == 0 || avail == 0 && (mode != modeAll || spread == 0) {
		return 0, false, p.noHealthy(q, 0)
	}
	zone := ""
	if q.zone != "" {
		// The zone is judged as panic is, Exclude aside (a retry that left
		// out one of its healthy instances went to another zone), and
		// needs an eligible instance the pick does not exclude.
		var zElig, zCand, zAvail int
		for i := range p.cands {
			c := &p.cands[i]
			if c.in.Zone == q.zone && (!filtered || q.matchKept(c.in)) {
				zCand++
				if c.eligible {
					zElig++
					if !filtered || !q.excludes(c.in.ID) {
						zAvail++
					}
				}
			}
		}
		if zAvail > 0 && float64(zElig) >= r.opts.panicThreshold*float64(zCand) {
			zone, mode = q.zone, modeEligible
		}
	}
	if mode == modeAll && r.opts.failClosed {
		// refused only if the pick would panic: not when the preferred zone
		// has enough eligible instances of its own
		return 0, false, p.noHealthy(q, nElig)
	}
	if !filtered && zone == "" && mode == modeEligible {
		return p.chooseDirect(s, p.rng.uint64(), q.key, now), false, nil
	}
	if s == StrategyConsistentHash && q.key != "" && !filtered && zone == "" {
		return p.maglevPanicPick(q.key), true, nil // mode is modeAll
	}
	sel := selector{now: now, p: p, mode: mode, zone: zone, filtered: filtered || zone != ""}
	return sel.run(s, q), mode == modeAll, nil
}

const (
	modeEligible = iota
	modeAll
)

// selector applies one strategy to the candidates that pass a pick's
// filters, zone or panic mode; a pick with none of them is pickDirect's.
//
// The pick's options are passed beside it, never stored in it: the selector
// points at the (heap) picker, and anything stored next to that pointer
// would escape to the heap too; the options live on Pick's stack.
type selector struct {
	now      int64
	p        *picker
	mode     int
	zone     string
	filtered bool
}

func (s *selector) ok(i int, q *pickReq) bool {
	c := &s.p.cands[i]
	if s.mode == modeEligible && !c.eligible {
		return false
	}
	if s.zone != "" && c.in.Zone != s.zone {
		return false
	}
	return !s.filtered || q.match(c.in)
}

// count returns how many candidates pass.
func (s *selector) count(q *pickReq) int {
	n := 0
	for i := range s.p.cands {
		if s.ok(i, q) {
			n++
		}
	}
	return n
}

// nth returns the index of the k-th passing candidate.
func (s *selector) nth(k int, q *pickReq) int {
	for i := range s.p.cands {
		if s.ok(i, q) {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1
}

func (s *selector) run(strategy Strategy, q *pickReq) int {
	switch strategy {
	case StrategyRoundRobin:
		n := s.count(q)
		rr := s.p.narrow.get(q.narrowHash(s.zone), newCounter)
		return s.nth(int((rr.Add(1)-1)%uint64(n)), q)
	case StrategyWeightedRoundRobin:
		return s.wrr(q)
	case StrategyRandom:
		return s.weightedRandom(func(c *candidate) float64 { return c.weight }, q)
	case StrategyLeastConnections:
		return s.leastConnections(q)
	case StrategyHealthBased:
		if s.mode == modeAll {
			return s.weightedRandom(panicWeight, q)
		}
		return s.weightedRandom(healthWeight, q)
	case StrategyConsistentHash:
		if q.key == "" { // as chooseDirect
			return s.p2c(q)
		}
		return s.consistentHash(q.key, q)
	default:
		return s.p2c(q)
	}
}

// chooseDirect applies a strategy to the eligible list of a direct picker
// (no filter, zone or panic), O(1) for most strategies; rnd is the pick's
// random number (64 bits).
func (p *picker) chooseDirect(strategy Strategy, rnd uint64, key string, now int64) int {
	switch strategy {
	case StrategyP2CEWMA:
		return p.p2cDirect(rnd, now)
	case StrategyRoundRobin:
		return int(p.elig[int(p.rr.Add(1)-1)%len(p.elig)])
	case StrategyWeightedRoundRobin:
		return p.wrrNext()
	case StrategyLeastConnections:
		return p.leastConnectionsFast(rnd)
	case StrategyHealthBased:
		if len(p.elig) <= maxStackWeights {
			return p.healthBasedFast(rnd)
		}
		return p.healthBasedChunked(rnd)
	case StrategyConsistentHash:
		if key == "" { // no key to be consistent about: p2c, not one instance for every pick
			return p.p2cDirect(rnd, now)
		}
		return p.maglevPick(key)
	default: // StrategyRandom
		return p.weightedRandomFast(rnd)
	}
}

// p2c is p2cDirect over the candidates that pass the pick's filters, zone
// or panic mode, with the same weight classes: a passing candidate drawn
// in proportion to its weight picks the class, the second is drawn from
// the others of its weight.
func (s *selector) p2c(q *pickReq) int {
	n, total, w0, uniform := 0, 0.0, 0.0, true
	for i := range s.p.cands {
		if s.ok(i, q) {
			w := s.p.cands[i].weight
			if n == 0 {
				w0 = w
			}
			uniform = uniform && w == w0
			n++
			total += w
		}
	}
	if n == 1 {
		return s.nth(0, q)
	}
	var ia, ib int
	if uniform {
		a, b := p2cPair(s.p.rng.uint64(), n)
		ia, ib = s.nth(a, q), s.nth(b, q)
	} else {
		x := s.p.rng.float64() * total
		ia = -1
		for i := range s.p.cands {
			if s.ok(i, q) {
				ia = i
				if x -= s.p.cands[i].weight; x < 0 {
					break
				}
			}
		}
		w, m := s.p.cands[ia].weight, 0
		for i := range s.p.cands {
			if s.ok(i, q) && s.p.cands[i].weight == w {
				m++
			}
		}
		if m == 1 {
			return ia
		}
		k := s.p.rng.intn(m - 1) // the k-th of the others of weight w
		for i := range s.p.cands {
			if i != ia && s.ok(i, q) && s.p.cands[i].weight == w {
				if k == 0 {
					ib = i
					break
				}
				k--
			}
		}
	}
	if cheaper(&s.p.cands[ib], &s.p.cands[ia], s.now) {
		return ib
	}
	return ia
}

// p2cDirect is p2c over the eligible list of a direct picker: the cheaper
// of two random instances, of one weight when weights differ
// (p2cWeighted).
func (p *picker) p2cDirect(rnd uint64, now int64) int {
	n := len(p.elig)
	if n == 1 {
		return int(p.elig[0])
	}
	if !p.uniform {
		return p.p2cWeighted(rnd, now)
	}
	ia, ib := p2cPair(rnd, n)
	if n != len(p.cands) { // else elig is 0, 1, ..., n-1
		ia, ib = int(p.elig[ia]), int(p.elig[ib])
	}
	if cheaper(&p.cands[ib], &p.cands[ia], now) {
		return ib
	}
	return ia
}

// weightClass is the eligible instances of one weight: byWeight[lo:lo+n].
// cum is the running sum of weight x n over the classes up to this one.
type weightClass struct {
	lo, n int32
	cum   float64
}

// weightClasses orders a picker's eligible candidates by weight and
// returns the classes of equal weight.
func weightClasses(p *picker) ([]int32, []weightClass) {
	by := slices.Clone(p.elig)
	slices.SortStableFunc(by, func(a, b int32) int { return cmp.Compare(p.cands[a].weight, p.cands[b].weight) })
	var classes []weightClass
	total := 0.0
	for k, i := range by {
		w := p.cands[i].weight
		if len(classes) == 0 || w != p.cands[by[k-1]].weight {
			classes = append(classes, weightClass{lo: int32(k)})
		}
		c := &classes[len(classes)-1]
		c.n++
		total += w
		c.cum = total
	}
	return by, classes
}

// p2cWeighted is p2c when the eligible instances' weights differ, as
// Finagle's traffic distributor does it: a class of equal weight is drawn
// in proportion to its weight x its size, and p2c chooses between two
// random instances of that class. Each instance's share of picks is its
// weight's share of the total whatever the latencies and loads (a canary
// of weight 1 among nine instances of weight 10 gets 1/91 of them), and
// latency and load move picks among instances of one weight only.
//
// Two instances of different weights are never compared: with the weight
// a divisor of the cost, as before, a weight-10 instance won every pair
// with a weight-1 one until it had ten times its requests in flight, so
// with a few requests in flight the weight-1 instance got nearly nothing
// (a canary 0.005% of picks, not 1.1%); with no latency average yet the
// weights counted for nothing (the canary got a tenth).
func (p *picker) p2cWeighted(rnd uint64, now int64) int {
	cs := p.classes
	x := unitFloat(mix64(rnd+golden)) * cs[len(cs)-1].cum // a second number: the pair takes rnd's 64 bits
	lo, hi := 0, len(cs)-1
	for lo < hi {
		if m := (lo + hi) / 2; cs[m].cum > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	c := cs[lo]
	if c.n == 1 {
		return int(p.byWeight[c.lo])
	}
	ia, ib := p2cPair(rnd, int(c.n))
	ia, ib = int(p.byWeight[int(c.lo)+ia]), int(p.byWeight[int(c.lo)+ib])
	if cheaper(&p.cands[ib], &p.cands[ia], now) {
		return ib
	}
	return ia
}

// cheaper reports whether b costs less than a. When neither has an average
// yet (no Done has reported one), cost is 0 for an idle instance and
// unknownPenalty for a busy one, so b is cheaper only if it is idle and a
// is not: decided without cost's two calls, as every pick of a caller that
// never calls Done decides it.
func cheaper(b, a *candidate, now int64) bool {
	if a.is.ewma.Load()|b.is.ewma.Load() == 0 {
		return b.is.inflight.Load() == 0 && a.is.inflight.Load() != 0
	}
	return cost(b, now) < cost(a, now)
}

// p2cPair turns 64 random bits into two different indices in [0, n), n > 1.
func p2cPair(r uint64, n int) (a, b int) {
	a = boundedInt(uint32(r>>32), n)
	b = boundedInt(uint32(r), n-1)
	// b++ if b >= a, without a branch: it goes one way or the other at
	// random, and mispredicted every other pick.
	b += int(uint64(a-b-1) >> 63)
	return a, b
}

// cost is peak-EWMA latency x (in-flight + 1). p2c compares instances of
// one weight only (p2cWeighted), so the weight is no factor of it. An
// instance with no latency yet costs nothing while idle, so it gets one
// probing request, and a prohibitive amount while that request is in
// flight (Finagle's rule).
//
// The average decays while an instance goes unpicked (by exp(-age/tau)), so
// one that was slow once is tried again later instead of being starved by
// its old reputation.
func cost(c *candidate, now int64) float64 {
	is := c.is
	if bits := is.ewma.Load(); bits != 0 {
		return decayedCost(c, math.Float64frombits(bits), now) // out of line so that cost inlines
	}
	if is.inflight.Load() == 0 {
		return 0
	}
	return unknownPenalty
}

func decayedCost(c *candidate, l float64, now int64) float64 {
	inflight := c.is.inflight.Load()
	if age := now - c.is.ewmaAt.Load(); age > int64(time.Millisecond) {
		l *= decay(age)
	}
	return l * float64(inflight+1)
}

// decay returns exp(-age/ewmaDecay), the weight an average keeps after age
// (ns). An instance in steady use is updated every few milliseconds or
// less, and math.Exp was a fifth of a Pick and Done: below ewmaDecay/1024
// (about 10 ms) the degree-4 Taylor polynomial serves, whose truncation
// error there is below x^5/120 < 8e-18, far under the rounding of a result
// near 1 (1.1e-16). Older averages (a caller that picks an instance less
// often) still pay math.Exp.
func decay(age int64) float64 {
	x := float64(max(age, 0)) / float64(ewmaDecay)
	if x < 1.0/1024 {
		return 1 - x*(1-x*(1.0/2-x*(1.0/6-x*(1.0/24))))
	}
	return math.Exp(-x)
}

// leastConnections is leastConnectionsFast for picks with filters (or in
// panic): ties among the instances that pass are broken uniformly, by
// reservoir sampling.
func (s *selector) leastConnections(q *pickReq) int {
	rnd := s.p.rng.uint64()
	best, bestLoad, ties := -1, int64(math.MaxInt64), uint64(0)
	for i := range s.p.cands {
		if !s.ok(i, q) {
			continue
		}
		l := s.p.cands[i].is.inflight.Load()
		if l < bestLoad {
			bestLoad, ties = l, 0
		}
		if l == bestLoad {
			ties++
			rnd = rnd*lcgMul + lcgAdd
			if (rnd>>32)*ties>>32 == 0 { // 1 in ties
				best = i
			}
		}
	}
	return best
}

// healthWeight is the seed's weight: score x (1 - load) x 1000 /
// max(response time ms, 1), times the instance weight. Load is in-flight /
// (in-flight + 1).
//
// Written as score x weight x 10^9 / ((1 + in-flight) x max(rtt ns, 10^6)):
// one division.
func healthWeight(c *candidate) float64 {
	// score x weight x 1e9 / ((1 + in-flight) x max(rtt, 1 ms))
	return math.Float64frombits(c.is.hbase.Load()) * c.weight / (1 + float64(c.is.inflight.Load()))
}

// panicWeight is health_based's weight in panic mode: the instance weight
// x (1 - load), without the health score and response time. Panic spreads
// over the instances that health checks took out; weighed by their score
// (0 while unhealthy), they got no pick, and the few healthy instances took
// all of them, which is what panic mode is there to prevent.
func panicWeight(c *candidate) float64 {
	return c.weight / (1 + float64(c.is.inflight.Load()))
}

func (s *selector) weightedRandom(weight func(*candidate) float64, q *pickReq) int {
	total := 0.0
	for i := range s.p.cands {
		if s.ok(i, q) {
			total += weight(&s.p.cands[i])
		}
	}
	if total <= 0 {
		return s.nth(s.p.rng.intn(s.count(q)), q)
	}
	x := s.p.rng.float64() * total
	last := -1
	for i := range s.p.cands {
		if !s.ok(i, q) {
			continue
		}
		last = i
		x -= weight(&s.p.cands[i])
		if x < 0 {
			return i
		}
	}
	return last
}

// consistentHash keeps a key on the instance an unnarrowed pick gives it
// (Maglev over the eligible instances, or over all of them in panic) when
// that one passes the pick's filters and zone, and hashes the other keys
// over the passing candidates by rendezvous. Rendezvous for every key
// placed keys without regard to Maglev: an Exclude of an instance not
// eligible anyway (the same set) moved 90% of them, and a filter keeping
// half of the instances 40% of the keys of those it kept.
func (s *selector) consistentHash(key string, q *pickReq) int {
	var i int
	if s.mode == modeAll {
		i = s.p.maglevPanicPick(key)
	} else {
		i = s.p.maglevPick(key) // some candidate passes, so p.elig has one
	}
	if s.ok(i, q) {
		return i
	}
	return s.rendezvous(key, q)
}

// rendezvous is highest-random-weight hashing over the passing candidates,
// for the keys of consistentHash whose Maglev instance does not pass.
func (s *selector) rendezvous(key string, q *pickReq) int {
	hk := xxhash.Sum64String(key)
	best, bestScore := -1, uint64(0)
	for i := range s.p.cands {
		if !s.ok(i, q) {
			continue
		}
		if sc := mix64(hk ^ s.p.cands[i].hid); best < 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}

// mix64 is the splitmix64 finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// pickerState is the selection state a svcState keeps.
type pickerState struct {
	pmu    sync.Mutex
	picker atomic.Pointer[picker]
	picks  pickCounts // with metrics on; else the Registry's (countPick)
	panics atomic.Uint64
	narrow perNarrowing[atomic.Uint64]
}

// pickCounts is a count of picks per strategy: 8 words, 64 bytes.
type pickCounts [StrategyRandom + 1]atomic.Uint64

// countPick counts a pick and returns a number unique to it, for its
// random draw. With metrics off, picks are counted in the Registry's
// striped counts, by the caller's stripe, not in the service's: one count
// that every core adds to made Pick and Done from two cores slower than
// from one (PickParallel 160 ns a pair against 75 on one core; 110 with no
// count at all). Stats adds them up. With metrics on, each service's
// counts are its metric's, as before. A strategy's counts in two stripes
// are 64 bytes apart, so never on one cache line; each stripe numbers its
// picks from its own sixteenth of 2^64 (k<<60), so that stripes never draw
// alike.
func (r *Registry) countPick(st *svcState, s Strategy) uint64 {
	if r.met != nil {
		return st.picks[s].Add(1)
	}
	k := stripe()
	return r.picks[k][s].Add(1) + uint64(k)<<60
}

// maxStackWeights bounds the instances whose dynamic weights health_based
// computes into a stack buffer.
const maxStackWeights = 128

// weightedRandomFast picks by static weight: a binary search of the
// precomputed running sums.
//
// Most services weigh their instances alike; then the choice is one
// multiply-shift. The search otherwise mispredicted about one branch in two
// (random at 10 instances was 53 ns, round_robin 33).
func (p *picker) weightedRandomFast(rnd uint64) int {
	if p.uniform {
		return int(p.elig[boundedInt(uint32(rnd>>32), len(p.elig))])
	}
	x := unitFloat(rnd) * p.cum[len(p.cum)-1]
	lo, hi := 0, len(p.cum)-1
	for lo < hi {
		m := (lo + hi) / 2
		if p.cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return int(p.elig[lo])
}

// leastConnectionsFast picks an instance with the fewest requests in
// flight, ties broken uniformly. It looks at a random instance first: one
// with none in flight is as good as any, and taken at once, so a service
// with idle instances (the usual case) reads one count. Otherwise it scans
// them all. Taking the first least after a random start, as it did before,
// gave an idle instance that follows a busy one twice the share of the
// others.
func (p *picker) leastConnectionsFast(rnd uint64) int {
	states := p.eligIS
	n := len(states)
	start := boundedInt(uint32(rnd>>32), n)
	best, bestLoad := start, states[start].inflight.Load()
	if bestLoad <= 0 {
		return int(p.elig[start])
	}
	ties := uint64(0)
	if n <= 64 {
		// One pass, a tie kept with probability 1/ties (reservoir
		// sampling), without a branch: when every instance is busy, ties
		// are as likely as not, and a branch on them mispredicted half
		// the time (twice the pick at 10 instances).
		for j, is := range states {
			l := is.inflight.Load()
			if l < bestLoad { // a new least: the ties start again, with it
				bestLoad, ties = l, 0
			}
			eq := b2u(l == bestLoad)
			ties += eq
			rnd = rnd*lcgMul + lcgAdd
			best += (j - best) & -int(eq&b2u((rnd>>32)*ties>>32 == 0))
		}
		return int(p.elig[best])
	}
	// Past 64, the draws' chain of multiplications costs more than a
	// second pass: one finds the least count and how many have it, the
	// next takes the k-th of them.
	for _, is := range states {
		l := is.inflight.Load()
		if l < bestLoad {
			bestLoad, ties = l, 0
		}
		ties += b2u(l == bestLoad)
	}
	k := (rnd & 0xffffffff) * ties >> 32
	for j, is := range states {
		if is.inflight.Load() == bestLoad {
			if k == 0 {
				return int(p.elig[j])
			}
			k--
		}
	}
	return int(p.elig[best]) // the counts moved under the scan
}

// Knuth's MMIX LCG: a draw for each tie, from the pick's random number.
const (
	lcgMul = 6364136223846793005
	lcgAdd = 1442695040888963407
)

// b2u is 1 for true, 0 for false, without a branch.
func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// healthBasedFast computes each eligible instance's weight once, on the
// stack, then draws.
func (p *picker) healthBasedFast(rnd uint64) int {
	// Zeroing the weights costs as much as computing them: size the array
	// to the service (most have a few instances).
	if len(p.elig) <= 16 {
		var w [16]float64
		return p.healthBasedInto(w[:len(p.elig)], rnd)
	}
	var w [maxStackWeights]float64
	return p.healthBasedInto(w[:len(p.elig)], rnd)
}

// healthChunk is how many weights healthBasedChunked holds in each of its
// two stack buffers (2 x 64 x 8 bytes, as much as healthBasedFast's one).
const healthChunk = 64

// healthBasedChunked is healthBasedFast for more instances than its stack
// buffer holds: one pass, reading each instance's weight once, in chunks.
// The chunk kept is replaced by the current one with probability (its
// total) / (the total so far), so each chunk ends up kept with probability
// (its total) / (the grand total); the draw inside the kept chunk, from the
// weights it was kept with, is proportional to them. Together: each
// instance with probability weight / total, as healthBasedFast draws.
//
// It replaced two passes of the filtered path's selector, which called the
// weight function through a pointer and read every weight twice (5.7 µs a
// pick at 1,000 instances; see the README's strategy rows).
func (p *picker) healthBasedChunked(rnd uint64) int {
	var buf [2][healthChunk]float64
	cur, kept := 0, -1 // buffers: the chunk being read, the chunk kept
	keptStart, keptN, keptTotal, total := 0, 0, 0.0, 0.0
	n := len(p.elig)
	for start := 0; start < n; start += healthChunk {
		end := min(start+healthChunk, n)
		w := &buf[cur]
		t := 0.0
		for k := start; k < end; k++ {
			w[k-start] = healthWeight(&p.cands[p.elig[k]])
			t += w[k-start]
		}
		if t <= 0 {
			continue
		}
		total += t
		rnd = mix64(rnd + golden) // a fresh draw per chunk (SplitMix64's step)
		if unitFloat(rnd)*total < t {
			kept, keptStart, keptN, keptTotal = cur, start, end-start, t
			cur = 1 - cur // keep this buffer; read the next chunk into the other
		}
	}
	if kept < 0 { // every weight 0: uniform
		return int(p.elig[boundedInt(uint32(rnd>>32), n)])
	}
	x := unitFloat(mix64(rnd+golden)) * keptTotal
	w := &buf[kept]
	for k := 0; k < keptN; k++ {
		x -= w[k]
		if x < 0 {
			return int(p.elig[keptStart+k])
		}
	}
	return int(p.elig[keptStart+keptN-1])
}

// healthBasedInto keeps the running sums of the weights in w and draws by
// counting the sums at or below the draw: the first sum above it is the
// instance's. Counting has no branch to mispredict; returning from a loop
// at the first sum above the draw mispredicted once a pick (a sixth of it).
func (p *picker) healthBasedInto(w []float64, rnd uint64) int {
	total := 0.0
	for k, i := range p.elig {
		total += healthWeight(&p.cands[i])
		w[k] = total
	}
	if total <= 0 {
		return int(p.elig[boundedInt(uint32(rnd>>32), len(p.elig))])
	}
	x := unitFloat(rnd) * total
	k := 0
	for _, sum := range w {
		k += int(b2u(sum <= x))
	}
	return int(p.elig[min(k, len(w)-1)]) // x < total, but rounding
}
