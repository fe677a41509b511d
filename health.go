package discovery

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// Health in this process combines two signals per instance:
//
//   - active checks (health_monitor.go): HTTP GET of the instance's health
//     path, a TCP connect, or a router instance's in-process function, every
//     interval, for the services this process uses. Results move a state
//     machine with hysteresis (internal/health) whose status and score
//     selection reads. With Redis the state is shared (health_shared.go):
//     each instance is probed by at most two processes and every process
//     applies the results.
//   - passive outcomes of calls (recordOutcome, ReportOutcome): consecutive
//     failures eject an instance for a while (outlier detection). Ejection
//     is this process's own view; it is not shared.

// historySize bounds the results kept per instance.
const historySize = 64

// maxEjectFailures bounds WithOutlierEjection's failures: the count of
// failed calls is an int32 brought back below it (recordOutcome).
const maxEjectFailures = 1 << 30

// ErrOverloaded is what a caller reports (wrapped or as is) to ReportOutcome
// when an instance answered that it is overloaded (HTTP 429, 503 with
// Retry-After, RESOURCE_EXHAUSTED): load, not ill health. It weighs on
// p2c_ewma's latency average as a failure does (at least twice the
// average) and never counts toward ejection.
var ErrOverloaded = errors.New("discovery: instance overloaded")

// healthDetail is the part of an instance's health state that only the
// health code reads and writes. fails is an atomic read without hmu; the
// rest is under instState.hmu.
type healthDetail struct {
	// fails counts consecutive failed calls (passive outcomes).
	fails atomic.Int32

	// st is the instance's active-check state, as last written here or
	// received from another process; raw is its shared encoding as last seen
	// in Redis ("" when unknown), the expected value of the next write.
	st  health.State
	raw string
	// hist is a ring of the latest results (oldest at hpos when full);
	// histAt is the time of the newest.
	hist   []health.Check
	hpos   int
	histAt int64

	// timesEjected is the ejection multiplier; ejectedAt is when the current
	// (or last) ejection began and ejectEnd when it ends (or ended).
	timesEjected int
	ejectedAt    int64
	ejectEnd     int64
}

// outcome is the result of one call to an instance, as the balancer's
// Pick(...).Done reports it.
type outcome uint8

const (
	// outcomeSuccess: the call succeeded; it resets the consecutive failures.
	outcomeSuccess outcome = iota
	// outcomeFailure: the call failed because of the instance.
	outcomeFailure
	// outcomeOverload: the instance said it is overloaded (429): a matter of
	// load, which selection's latency average answers, not of health; it
	// neither counts toward ejection nor resets the failures.
	outcomeOverload
	// outcomeCanceled: the caller gave up; says nothing about the instance.
	outcomeCanceled
)

// classify maps an error from a call to its outcome.
func classify(err error) outcome {
	switch {
	case err == nil:
		return outcomeSuccess
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, ErrOverloaded):
		return outcomeOverload
	}
	return outcomeFailure
}

// recordOutcome records the outcome of one call to an instance. A success
// costs an atomic load (and a store only after failures) and allocates
// nothing; a cancellation or an overload is ignored; failures count, and
// enough in a row eject the instance (see WithOutlierEjection). latency is
// not used by health (selection keeps its own latency average).
func (r *Registry) recordOutcome(st *svcState, is *instState, o outcome, latency time.Duration) {
	_ = latency
	switch o {
	case outcomeSuccess:
		if is.health.fails.Load() != 0 {
			is.health.fails.Store(0)
		}
		return
	case outcomeCanceled, outcomeOverload:
		return
	}
	n := int(is.health.fails.Add(1))
	f := r.opts.health.ejectFailures
	if n > maxEjectFailures { // an instance failing for ever, kept in by the cap
		is.health.fails.Store(int32(f))
	}
	// Retry at every threshold multiple, so that an instance kept in by the
	// ejection cap is not re-examined on every failure.
	if f > 0 && n >= f && n%f == 0 {
		r.eject(st, is)
	}
}

// ReportOutcome tells the health monitor how a call to an instance went, for
// callers that do not pick through the Registry's balancer: err nil is a
// success; an error matching context.Canceled is the caller's and is
// ignored; one matching ErrOverloaded says the instance is busy (it weighs on
// selection through latency, not on health); any other is a failure of the
// instance. latency, the call's duration, feeds p2c_ewma's latency average
// as Done's does (0 if unknown). Consecutive failures eject it (see
// WithOutlierEjection). The
// instance must be one this Registry has looked up and still remembers;
// otherwise the error matches ErrNotFound and the outcome is not counted.
// A service evicted from L1 (WithCacheSize) is forgotten, with the failures
// counted so far, unless something still uses it (a Watch, the health
// monitor, a Selection not yet Done, an ejection in force): look the
// service up again (Get) before reporting, as the balancer's Pick does.
func (r *Registry) ReportOutcome(service, instanceID string, err error, latency time.Duration) error {
	if r.closed.Load() {
		return ErrClosed
	}
	var is *instState
	st := r.stateIfAny(service)
	if st != nil {
		is = st.inst(instanceID)
	}
	if is == nil {
		if r.liveInstance(service, instanceID) == nil {
			if err := core.ValidateServiceName(service); err != nil {
				return err
			}
			if err := core.ValidateInstanceID(instanceID); err != nil {
				return err
			}
			return &NotFoundError{Service: service, Instance: instanceID}
		}
		st = r.state(service)
		is = st.instOrNew(instanceID)
	}
	o := classify(err)
	// The latency feeds selection's average as Done's does (an overload
	// weighs on it as a failure): dropped here, an instance reported busy
	// looked as cheap to p2c_ewma as an idle one. A success of unknown
	// latency (0) adds nothing.
	if o != outcomeCanceled && (latency > 0 || o != outcomeSuccess) {
		st.observe(is, latency, o, r.now.nanos())
	}
	r.recordOutcome(st, is, o, latency)
	return nil
}

// liveInstance returns an instance of a service as this process's L1 holds
// it (see holdsLive), or nil.
func (r *Registry) liveInstance(service, id string) *core.Instance {
	if e := r.l1.get(service); e != nil && e.raw != nil {
		if in := e.raw.Instance(id); in != nil && r.holdsLive(e, in, r.now.nanos()) {
			return in
		}
	}
	return nil
}

// holdsLive reports whether in, of the snapshot e holds, counts as a live
// instance of its service at now: its lease runs, or ran when the snapshot
// was read, or it is kept as a suspect. Renewals change no revision, so
// the snapshot of a service not looked up since keeps the lease ends it
// was read with: judged by those alone, instances renewed all along were
// gone one lease TTL after the last lookup (ReportOutcome found an
// instance Get had returned no more, and the ejection cap counted none).
func (r *Registry) holdsLive(e *entry, in *core.Instance, now int64) bool {
	exp := in.ExpiresAt.UnixNano()
	return e.liveWhenRead(exp, now) || e.st != nil && r.keptAsSuspect(e.st, exp, now)
}

// liveWhenRead reports whether a lease of e's snapshot ending at exp runs
// at now or ran when the snapshot was read: renewals change no revision, so
// the lease ends of a snapshot not read again pass while the instances
// renew (holdsLive, gaugeStatus, and the health monitor's targets).
func (e *entry) liveWhenRead(exp, now int64) bool { return exp > now || exp > e.loadedAt }

// instanceOf returns the instance to report in events and logs.
func (r *Registry) instanceOf(service, id string) Instance {
	if e := r.l1.get(service); e != nil && e.raw != nil {
		if in := e.raw.Instance(id); in != nil {
			return in.Clone()
		}
	}
	r.regMu.Lock()
	defer r.regMu.Unlock()
	for g := range r.regs {
		if g.service == service && g.id == id {
			return g.Instance()
		}
	}
	return Instance{Service: service, ID: id}
}

// eject takes an instance out of selection for a while, unless the cap on
// ejected instances of its service is reached.
func (r *Registry) eject(st *svcState, is *instState) {
	ho := &r.opts.health
	hm := r.hm
	hm.ejectMu.Lock()
	now := r.clock.Now().UnixNano()
	// A Selection's Done can come after its instance left the service (its
	// state forgotten): ejecting that state showed an instance no longer
	// there as ejected, in events, logs and counts. The same goes for a
	// service state forgotten since (evicted from L1): its ejection rebuilt
	// the current view from it, showing in Get an ejection that Health and
	// Pick did not know.
	if is.ejected(now) || !r.held(st, is) {
		hm.ejectMu.Unlock()
		return
	}
	// The instances of the snapshot L1 holds that count as live (not the
	// view: rebuilt at now by an ejection, the view of a service not looked
	// up for a lease TTL had none, and the cap let every instance go), and
	// the ejected among them: the states also hold instances whose lease
	// ended (until reaped), and an ejected one that died kept every other
	// instance in selection until its ejection ended.
	live, ejected := 1, 0
	if e := r.l1.get(st.name); e != nil && e.raw != nil {
		live = 0
		for i := range e.raw.Instances {
			in := &e.raw.Instances[i]
			if !r.holdsLive(e, in, now) {
				continue
			}
			live++
			if o := st.inst(in.ID); o != nil && o != is && o.ejected(now) {
				ejected++
			}
		}
	} else if m := st.insts.Load(); m != nil {
		live = len(*m)
		for _, o := range *m {
			if o != is && o.ejected(now) {
				ejected++
			}
		}
	}
	limit := max(1, live*ho.ejectPercent/100)
	if ejected >= limit {
		hm.ejectMu.Unlock()
		return
	}
	is.hmu.Lock()
	d := &is.health
	if d.timesEjected > 0 && d.ejectEnd > 0 && now > d.ejectEnd {
		// each ejection time spent back in selection forgives one ejection
		d.timesEjected = max(0, d.timesEjected-int((now-d.ejectEnd)/int64(ho.ejectBase)))
	}
	d.timesEjected++
	times := d.timesEjected
	// times x base saturates at the maximum: with a long base (up to
	// MaxDuration) the product overflowed, came out negative, and the
	// ejection ended before it began.
	dur := ho.ejectMax
	if int64(times) <= int64(ho.ejectMax/ho.ejectBase) {
		dur = time.Duration(times) * ho.ejectBase
	}
	until := now + int64(dur)
	// It ends at until unless a passing check ends it sooner (adoptLocked
	// then sets the end). Set only when the monitor ended it, the end was
	// missing when the next ejection came before the monitor got to it
	// (unejectAt then finds another ejection in force and leaves): that
	// one was forgiven from the end of the ejection before, its whole time
	// counted as time back in selection, and the multiplier of an instance
	// failing on fell back to 1.
	d.ejectedAt, d.ejectEnd = now, until
	is.hmu.Unlock()
	st.viewMu.Lock() // the ejection and its views appear together (see install)
	prev := viewStatus(&core.Instance{}, is, now)
	is.ejectedUntil.Store(until)
	r.instancesChanged(st)
	r.statusShown(st, is, prev)
	st.viewMu.Unlock()
	hm.ejectMu.Unlock()
	is.health.fails.Store(0)
	st.ejections.Add(1)

	r.log.Info("discovery: instance ejected", zap.String("service", st.name), zap.String("instance", is.id),
		zap.Int("failures", ho.ejectFailures), zap.Duration("for", dur), zap.Int("times", times))
	hm.scheduleUneject(st, is, until)
}

// unejectAt ends an ejection when its time comes, unless it ended or was
// renewed meanwhile.
func (r *Registry) unejectAt(st *svcState, is *instState, until int64) {
	// A service that left L1 during the ejection kept its state for it:
	// once it is over (here, or sooner by a passing check), the state goes
	// unless something else still uses it.
	defer r.forgetPutOff(st)
	st.viewMu.Lock()
	if !is.ejectedUntil.CompareAndSwap(until, 0) {
		st.viewMu.Unlock()
		return
	}
	// back in selection with a clean slate (as Envoy does): the failures
	// of calls in flight when it was ejected no longer count
	is.health.fails.Store(0)
	is.hmu.Lock()
	is.health.ejectEnd = until
	is.hmu.Unlock()
	// The instance left meanwhile (its state, or its service's, was
	// forgotten) and may be back with a state of its own: announcing this
	// end showed the new instance's ejection as over (Watch, the log), and
	// rebuilding the views from a forgotten service state lost the
	// statuses Get shows.
	if !r.held(st, is) {
		st.viewMu.Unlock()
		return
	}
	r.instancesChanged(st)
	r.statusShown(st, is, StatusEjected)
	st.viewMu.Unlock()
	r.log.Info("discovery: instance ejection ended", zap.String("service", st.name), zap.String("instance", is.id),
		zap.String("reason", "time"))
}

// held reports whether is is the state this process keeps of its instance:
// an instance that left (its state, or its service's, forgotten) and came
// back has a new one, which results and ejections of the old must not touch.
func (r *Registry) held(st *svcState, is *instState) bool {
	return r.stateIfAny(st.name) == st && st.inst(is.id) == is
}

// nextSeq orders writes of a shared state: above the previous one, and
// close to the wall clock (milliseconds), so that a state rebuilt after its
// key expired still sorts after what processes hold.
func nextSeq(prev int64, now int64) int64 { return max(prev+1, now/int64(time.Millisecond)) }

// applyLocal applies one check result to an instance in this process only
// (no Redis, or Redis failing).
func (r *Registry) applyLocal(st *svcState, is *instState, c health.Check) {
	r.applyLocalIf(st, is, c, nil)
}

// applyLocalIf is applyLocal for the result of a check the monitor ran:
// stale, if not nil, reports whether what the check probed has changed
// since it began (see target.gen). It is asked under st.viewMu, under which
// the monitor forgets the verdict of the old checks.
func (r *Registry) applyLocalIf(st *svcState, is *instState, c health.Check, stale func() bool) {
	st.viewMu.Lock()
	defer st.viewMu.Unlock()
	// The instance left while it was checked (its state, or its service's,
	// forgotten): the result is of no state lookups read. Applied, it was
	// announced as the status of the instance back with the same ID, which
	// Get and Health did not show. Nor is the result of a check of an
	// address the instance has left (see reconcile).
	if !r.held(st, is) || stale != nil && stale() {
		return
	}
	is.hmu.Lock()
	s := is.health.state().Clone()
	s.Apply(c, r.hm.th)
	s.Seq, s.By = nextSeq(is.health.st.Seq, c.At), r.hm.id
	ch := r.adoptLocked(st, is, s, "")
	is.hmu.Unlock()
	r.announce(st, is, ch)
}

// adoptShared applies a state received from Redis (or written there by this
// process) unless this process holds a newer one. It reports whether it did.
func (r *Registry) adoptShared(st *svcState, is *instState, s health.State, raw string) bool {
	ok, _ := r.adoptSharedIf(st, is, s, raw, nil)
	return ok
}

// adoptSharedIf is adoptShared for the state this process wrote with a
// check's result: unless stale (asked under st.viewMu, as in applyLocal)
// reports that what the check probed has changed since it began, which it
// then reports too.
func (r *Registry) adoptSharedIf(st *svcState, is *instState, s health.State, raw string, stale func() bool) (adopted, wasStale bool) {
	st.viewMu.Lock()
	defer st.viewMu.Unlock()
	if !r.held(st, is) { // forgotten meanwhile, as in applyLocal
		return false, false
	}
	if stale != nil && stale() {
		return false, true
	}
	is.hmu.Lock()
	if s.Seq <= is.health.st.Seq {
		if s.Seq == is.health.st.Seq && raw != "" {
			is.health.raw = raw
		}
		is.hmu.Unlock()
		return false, false
	}
	ch := r.adoptLocked(st, is, s, raw)
	is.hmu.Unlock()
	r.announce(st, is, ch)
	return true, false
}

// change is what adopting a state changed, to announce after unlocking.
type change struct {
	from, to  core.Status
	score     float64
	err       string
	unejected bool
}

// adoptLocked makes s the instance's state: the atomics selection reads,
// the history, and the end of an ejection that a passing check ends; and
// rebuilds the views if what they show changed. The caller holds st.viewMu
// and is.hmu, so Health (which reads under is.hmu) never reports a status
// that Get does not show yet.
func (r *Registry) adoptLocked(st *svcState, is *instState, s health.State, raw string) change {
	d := &is.health
	ch := change{from: d.st.Status, to: s.Status, score: s.Score}
	d.pushNew(s.Recent)
	d.st, d.raw = s, raw
	crossed := r.crossesMinScore(is, s.Score)
	is.status.Store(uint32(s.Status))
	is.score.Store(math.Float64bits(s.Score))
	defer is.updateHBase()
	if l, ok := s.Latest(); ok {
		ch.err = l.Err
		is.rtt.Store(int64(l.RTT))
		// A passing check ends an ejection in force (one already over is
		// left to its timer, which rebuilds the views).
		if l.Status == core.StatusHealthy && l.At >= d.ejectedAt {
			if u := is.ejectedUntil.Load(); u > l.At && is.ejectedUntil.CompareAndSwap(u, 0) {
				d.ejectEnd, ch.unejected = l.At, true
				d.fails.Store(0) // as at the end of its time (unejectAt)
			}
		}
	}
	if ch.from != ch.to || ch.unejected || crossed {
		r.instancesChanged(st)
	}
	return ch
}

// crossesMinScore reports whether is going to score crosses WithMinScore:
// that changes what selection may pick as a status does (a healthy
// instance whose checks turned slow fell below it, healthy still, and was
// picked until the service's view was next reloaded).
func (r *Registry) crossesMinScore(is *instState, score float64) bool {
	return (is.Score() > r.opts.minScore) != (score > r.opts.minScore)
}

// forgetVerdict drops the verdict of an instance's active checks once they
// are turned off (Check: CheckNone) or check something else (another
// address, path or kind): its status goes back to unknown and its score to
// 1, as for an instance never checked. Kept, the last verdict (unhealthy,
// score 0) stayed for good with no check left to change it, or until two
// checks of the new address passed. Seq is kept, so that the shared state
// written before is not adopted again. It returns the shared encoding of
// the state it forgot, "" if none (see monitor.forget).
func (r *Registry) forgetVerdict(st *svcState, is *instState) (raw string) {
	st.viewMu.Lock()
	defer st.viewMu.Unlock()
	is.hmu.Lock()
	d := &is.health
	if d.st.Seq == 0 || d.st.Status == core.StatusUnknown && len(d.st.Recent) == 0 {
		is.hmu.Unlock()
		return "" // never checked, or already forgotten
	}
	fresh := health.New()
	fresh.Seq = d.st.Seq
	ch := change{from: d.st.Status, to: fresh.Status, score: fresh.Score}
	raw = d.raw
	d.st, d.raw = fresh, ""
	crossed := r.crossesMinScore(is, fresh.Score)
	is.status.Store(uint32(fresh.Status))
	is.score.Store(math.Float64bits(fresh.Score))
	is.rtt.Store(0)
	is.updateHBase()
	if ch.from != ch.to || crossed {
		r.instancesChanged(st)
	}
	is.hmu.Unlock()
	r.announce(st, is, ch)
	return raw
}

// state returns the instance's state; one never checked has a score of 1.
func (d *healthDetail) state() health.State {
	if d.st.Seq == 0 {
		return health.New()
	}
	return d.st
}

// pushNew adds to the history the results of recent (a state's, in the
// order its writers folded them in) that it does not hold: those after the
// newest it holds, found in recent. Only when that one is not there (this
// process missed more results than a state carries, or applied its own
// while Redis failed) are they told by their times: later than the newest.
// Told by times alone, the results of two probers whose clocks differ were
// lost: those of the one behind, for as long as it was behind, after each
// of the other's, although they moved the status.
func (d *healthDetail) pushNew(recent []health.Check) {
	from, found := 0, false
	if n := len(d.hist); n > 0 {
		newest := d.hist[(d.hpos+n-1)%n]
		for i := len(recent) - 1; i >= 0; i-- {
			if recent[i] == newest {
				from, found = i+1, true
				break
			}
		}
	}
	for i, c := range recent {
		if found && i >= from || !found && c.At > d.histAt {
			d.push(c)
		}
	}
}

// push adds a result to the history ring.
func (d *healthDetail) push(c health.Check) {
	if len(d.hist) < historySize {
		d.hist = append(d.hist, c)
	} else {
		d.hist[d.hpos] = c
		d.hpos = (d.hpos + 1) % historySize
	}
	d.histAt = c.At
}

// announce logs a change of status, once, and tells watchers (adoptLocked
// already rebuilt the views). The caller holds st.viewMu, so watchers get
// changes in the order they were made.
func (r *Registry) announce(st *svcState, is *instState, ch change) {
	if ch.unejected {
		r.log.Info("discovery: instance ejection ended", zap.String("service", st.name), zap.String("instance", is.id),
			zap.String("reason", "passing check"))
	}
	if ch.from != ch.to {
		r.log.Info("discovery: instance health changed", zap.String("service", st.name), zap.String("instance", is.id),
			zap.Stringer("from", ch.from), zap.Stringer("to", ch.to), zap.Float64("score", ch.score), zap.String("error", ch.err))
	}
	if ch.from != ch.to || ch.unejected {
		prev := ch.from
		if ch.unejected {
			prev = StatusEjected
		}
		r.statusShown(st, is, prev)
	}
}

// InstanceHealth is one instance's health as this process sees it, for
// dashboards and operators (see Registry.Health).
type InstanceHealth struct {
	// ID and Service name the instance; Addr is its Host:Port.
	ID, Service, Addr string
	// Shown is the status lookups show for it in this process (Get,
	// Watch): Status, unless it is draining, ejected or suspect.
	Shown Status
	// Method, Zone, Version and Weight are as registered.
	Method        Method
	Zone, Version string
	Weight        int
	// Status is the active-check status: StatusUnknown until the first
	// status is reached, then Healthy, Warning or Unhealthy.
	Status Status
	// Score is in [0, 1]: 1 before any check, 0 while unhealthy, else a
	// moving average of min(1, 100 ms / response time) per check (0 for a
	// failure, 60% for a warning). Selection skips instances at
	// WithMinScore (0.5) or less.
	Score float64
	// ResponseTime is the latest check's duration; LastCheck when it ended;
	// LastError why it did not pass ("" if it did).
	ResponseTime time.Duration
	LastCheck    time.Time
	LastError    string
	// ConsecutivePasses and ConsecutiveFailures count the latest run of
	// passing (or warning) and failing checks.
	ConsecutivePasses, ConsecutiveFailures int
	// CheckedBy is the ID of the process that ran the latest check (see
	// Registry.ProcessID); with Redis it may be another process.
	CheckedBy string
	// Ejected is true while passive outlier detection keeps the instance out
	// of selection in this process, until EjectedUntil. TimesEjected is the
	// ejection multiplier; PassiveFailures the failed calls in a row.
	Ejected         bool
	EjectedUntil    time.Time
	TimesEjected    int
	PassiveFailures int
	// History holds the latest results this process ran or received, oldest
	// first, at most 64: in the order the instance's state took them, which
	// with Redis is the shared state's. Their times are the probers' clocks,
	// so two probers' results are out of time order by as much as those
	// clocks differ.
	History []CheckResult
}

// CheckResult is one active check.
type CheckResult struct {
	// At is when it ended.
	At time.Time
	// Status is StatusHealthy (passed), StatusWarning or StatusUnhealthy.
	Status Status
	// ResponseTime is how long it took.
	ResponseTime time.Duration
	// Error says why it did not pass ("" if it did).
	Error string
}

// Health returns the health of every live instance of a service, ordered
// by ID, as this process sees it: active-check status, score, latest
// result, history and ejection. It looks the service up like Get (so the
// service counts as used and this process monitors it from then on); with
// Redis it first reads the shared results if it has not lately.
func (r *Registry) Health(ctx context.Context, service string) ([]InstanceHealth, error) {
	res, err := r.Lookup(ctx, service)
	if err != nil {
		return nil, err
	}
	return r.healthOf(ctx, service, res), nil
}

// healthOf is Health once the service was looked up (res).
func (r *Registry) healthOf(ctx context.Context, service string, res Result) []InstanceHealth {
	r.hm.refreshShared(ctx, service)
	// The view as the shared results just read left it: the lookup's, from
	// before them, showed a status (Shown) beside a check status (Status)
	// that Get no longer showed.
	svc := res.Service
	if e := r.l1.get(service); e != nil && e.raw != nil && e.rev >= res.Revision {
		svc = e.view.Load()
	}
	st := r.stateIfAny(service)
	now := r.clock.Now().UnixNano()
	out := make([]InstanceHealth, 0, len(svc.Instances))
	for i := range svc.Instances {
		in := &svc.Instances[i]
		h := InstanceHealth{ID: in.ID, Service: service, Addr: in.Addr(), Status: StatusUnknown, Score: 1,
			Shown: in.Status, Method: in.Method, Zone: in.Zone, Version: in.Version, Weight: in.Weight}
		var is *instState
		if st != nil {
			is = st.inst(in.ID)
		}
		if is != nil {
			h.fill(is, now)
		}
		out = append(out, h)
	}
	return out
}

func (h *InstanceHealth) fill(is *instState, now int64) {
	is.hmu.Lock()
	defer is.hmu.Unlock()
	d := &is.health
	s := d.state()
	h.Status, h.Score = s.Status, s.Score
	h.ConsecutivePasses, h.ConsecutiveFailures, h.CheckedBy = s.Up, s.Down, s.By
	if l, ok := s.Latest(); ok {
		h.ResponseTime, h.LastCheck, h.LastError = l.RTT, time.Unix(0, l.At), l.Err
	}
	if u := is.ejectedUntil.Load(); u != 0 && now < u {
		h.Ejected, h.EjectedUntil = true, time.Unix(0, u)
	}
	h.TimesEjected, h.PassiveFailures = d.timesEjected, int(d.fails.Load())
	if len(d.hist) > 0 {
		h.History = make([]CheckResult, 0, len(d.hist))
		for i := range d.hist {
			c := d.hist[(d.hpos+i)%len(d.hist)]
			h.History = append(h.History, CheckResult{At: time.Unix(0, c.At), Status: c.Status, ResponseTime: c.RTT, Error: c.Err})
		}
	}
}
