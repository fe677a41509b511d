package discovery

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rssbot/discovery/internal/core"
)

// Prometheus metrics (WithMetrics). Almost everything is read at scrape time
// from counters the Registry keeps anyway (stats.go, the per-service state of
// cache.go and balancer.go): a collector, not instruments on the hot path.
// With metrics on, an L1 hit counts in its service's striped counter instead
// of the Registry's (Stats adds them up), and one lookup in lookupSample,
// drawn with the runtime's per-thread random source, reads the clock twice.

// lookupSample: with metrics on, one lookup in lookupSample is timed when L1
// answers it; lookups answered by Redis or the database are all timed.
const lookupSample = 64

// checkResults are the values of the result label of
// discovery_health_checks_total, indexed like counters.checks.
var checkResults = [...]string{"pass", "warn", "fail"}

// gaugeStatuses are the statuses discovery_instances reports per service.
var gaugeStatuses = [...]Status{StatusHealthy, StatusWarning, StatusUnhealthy, StatusUnknown, StatusEjected, StatusDraining, StatusSuspect}

// lookupBuckets span an L1 hit (tens of ns) to a slow database (seconds).
var lookupBuckets = []float64{1e-7, 2.5e-7, 1e-6, 1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 5e-2, 0.25, 1, 5}

// WithMetrics registers the Registry's Prometheus metrics with reg (at New;
// Close unregisters them). Without it nothing is registered anywhere. Two
// Registry values on one Registerer collide: wrap it for each, with labels
// of its own, for example prometheus.WrapRegistererWith(prometheus.Labels{"registry": "a"}, reg)
// and {"registry": "b"}. Wrapping only the second is refused too: Prometheus
// wants every series of a name to have the same label names.
//
// The metrics: discovery_lookups_total{service,layer},
// discovery_lookup_duration_seconds{layer} (L1 sampled: one lookup in 64),
// discovery_cache_hits_total{layer}, discovery_stale_served_total,
// discovery_backend_errors_total{backend}, discovery_health_checks_total{result},
// discovery_instances{service,status}, discovery_picks_total{service,strategy},
// discovery_panic_mode_total{service} and discovery_ejections_total{service}.
// Service labels name only services this Registry has looked up and found.
// A service's counters keep their series, and count on from them, after it
// leaves this process's cache (WithCacheSize): they never go back, which
// Prometheus would read as a reset. A service deleted (WithServiceReap)
// loses its series once this process hears of it or reads it again; a
// name found again starts afresh once a scrape has shown it gone, and
// counts on from where it was before that.
func WithMetrics(reg prometheus.Registerer) Option {
	// A typed nil is an error from New; an untyped one means nowhere.
	return optionFunc(func(o *options) { o.metrics = reg; o.noteNil("WithMetrics", reg != nil && core.IsNil(reg)) })
}

// svcMetrics counts the lookups of one service by the layer that answered,
// with metrics on. L1 hits are striped: a hot service is looked up from
// every core at once.
type svcMetrics struct {
	l1     stripedCounter
	l2, l3 atomic.Uint64
}

func (m *svcMetrics) add(l Layer) {
	switch l {
	case LayerL1:
		m.l1.add(1)
	case LayerL2:
		m.l2.Add(1)
	case LayerL3:
		m.l3.Add(1)
	}
}

// svcCounts are the counts of one service's counter series.
type svcCounts struct {
	lookups           [LayerL3 + 1]uint64
	picks             [StrategyRandom + 1]uint64
	panics, ejections uint64
}

// add adds the counts of st, whose met is m (not nil).
func (c *svcCounts) add(st *svcState, m *svcMetrics) {
	c.lookups[LayerL1] += m.l1.load()
	c.lookups[LayerL2] += m.l2.Load()
	c.lookups[LayerL3] += m.l3.Load()
	for i := range st.picks {
		c.picks[i] += st.picks[i].Load()
	}
	c.panics += st.panics.Load()
	c.ejections += st.ejections.Load()
}

// plus adds o's counts to c.
func (c *svcCounts) plus(o *svcCounts) {
	for i := range c.lookups {
		c.lookups[i] += o.lookups[i]
	}
	for i := range c.picks {
		c.picks[i] += o.picks[i]
	}
	c.panics += o.panics
	c.ejections += o.ejections
}

// retire keeps what a state being forgotten counted for its service's
// series (see retired). The caller holds r.foldMu.
func (m *metrics) retire(st *svcState, sm *svcMetrics) {
	c := m.retired[st.name]
	if c == nil {
		c = new(svcCounts)
		m.retired[st.name] = c
	}
	c.add(st, sm)
}

// grave is what the series of a deleted service had counted (see graves).
type grave struct {
	svcCounts
	// after is the number of scrapes that had read the counts when the
	// service was buried: a scrape with a higher number showed it gone.
	after uint64
}

// maxGraves bounds the graves kept for a scrape to come (a Registry whose
// metrics nobody scrapes buries services all the same): past it, a
// deleted service's counts are forgotten at once.
const maxGraves = 4096

// buryService takes the series of a service this process learnt was
// deleted out of the metrics: what its state counted (the state stays
// while something uses it, a Watch say, and counts afresh if the name is
// found again) and what forgotten states had (retired) go to its grave,
// which no scrape shows. What the state counted stays in Stats. A lookup
// that read the state's counters before the burial and counts after it is
// lost (to Stats too; it never went back).
func (r *Registry) buryService(name string) {
	m := r.met
	if m == nil {
		return
	}
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	var c svcCounts
	if st := r.stateIfAny(name); st != nil {
		if sm := st.met.Swap(nil); sm != nil {
			c.lookups[LayerL1] = sm.l1.load()
			c.lookups[LayerL2] = sm.l2.Load()
			c.lookups[LayerL3] = sm.l3.Load()
			for i := range st.picks {
				c.picks[i] = st.picks[i].Swap(0)
			}
			c.panics, c.ejections = st.panics.Swap(0), st.ejections.Swap(0)
			// Stats: into the Registry's totals, as dropState moves them
			r.ctr.l1Hits.add(c.lookups[LayerL1])
			r.ctr.l2.Add(c.lookups[LayerL2])
			r.ctr.l3.Add(c.lookups[LayerL3])
			for i := range c.picks {
				r.picks[0][i].Add(c.picks[i])
			}
			r.ctr.panics.Add(c.panics)
			r.ctr.ejections.Add(c.ejections)
		}
	}
	old := m.retired[name]
	g := m.graves[name]
	if old == nil && g == nil && c == (svcCounts{}) {
		return // never counted: no series to take out
	}
	delete(m.retired, name)
	if g == nil {
		if len(m.graves) >= maxGraves {
			return
		}
		g = new(grave)
		m.graves[name] = g
	}
	g.plus(&c)
	if old != nil {
		g.plus(old)
	}
	g.after = m.scrapes.Load()
}

// metrics is a Registry's Prometheus collector.
type metrics struct {
	r          *Registry
	reg        prometheus.Registerer
	registered bool // written by New, read by Close
	durVec     *prometheus.HistogramVec
	dur        [LayerL3 + 1]prometheus.Observer // by Layer, resolved once
	// retired holds, by service, what the states this Registry forgot
	// (dropState: evicted from L1 and unused) had counted, under r.foldMu.
	// A service's series add it to its current state's counts: started
	// again at 0 by the state its next lookup made, they went back, which
	// Prometheus reads as a reset (rate() lost what was counted since the
	// previous scrape, or, once the new count passed the old one,
	// everything before). Kept for as long as the Registry, as a
	// CounterVec keeps its series: one small entry per service counted,
	// until the service is deleted (buryService).
	retired map[string]*svcCounts
	// graves holds, by service, what the series of services deleted since
	// the last scrape had counted (buryService), under r.foldMu. No scrape
	// shows them; one that reads them after the burial forgets them,
	// having shown the series gone: a name found again after it starts
	// its series at 0, which Prometheus, having seen none at that scrape,
	// reads as a new series. A name found again before it (deleted and
	// registered again within one scrape interval) goes on counting from
	// its grave: started at 0 with no scrape between, its counters went
	// back, which Prometheus reads as a reset. scrapes counts the scrapes
	// that began reading (Collect).
	graves  map[string]*grave
	scrapes atomic.Uint64

	lookups, cacheHits, stale, backendErrs, checks, instances, picks, panics, ejections *prometheus.Desc
}

func newMetrics(r *Registry, reg prometheus.Registerer) *metrics {
	m := &metrics{r: r, reg: reg, retired: map[string]*svcCounts{}, graves: map[string]*grave{}}
	m.durVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "discovery_lookup_duration_seconds",
		Help:    "How long lookups took, by the layer that answered (L1: one lookup in 64 is timed).",
		Buckets: lookupBuckets,
	}, []string{"layer"})
	for _, l := range []Layer{LayerL1, LayerL2, LayerL3} {
		m.dur[l] = m.durVec.WithLabelValues(l.String())
	}
	d := prometheus.NewDesc
	m.lookups = d("discovery_lookups_total", "Lookups answered, by service and by the layer that answered.", []string{"service", "layer"}, nil)
	m.cacheHits = d("discovery_cache_hits_total", "Cache hits: lookups L1 answered, Redis reads that found a usable snapshot.", []string{"layer"}, nil)
	m.stale = d("discovery_stale_served_total", "Lookups and picks answered with a stale snapshot.", nil, nil)
	m.backendErrs = d("discovery_backend_errors_total", "Failed calls to the database and to Redis.", []string{"backend"}, nil)
	m.checks = d("discovery_health_checks_total", "Active health checks this process ran, by result (pass, warn, fail).", []string{"result"}, nil)
	m.instances = d("discovery_instances", "Instances of each service in the snapshot this process holds (no series while it holds none), by status as this process sees it: those live when it was read, and suspects it keeps.", []string{"service", "status"}, nil)
	m.picks = d("discovery_picks_total", "Selections (Pick), by service and strategy.", []string{"service", "strategy"}, nil)
	m.panics = d("discovery_panic_mode_total", "Selections made in panic mode (too few healthy instances).", []string{"service"}, nil)
	m.ejections = d("discovery_ejections_total", "Passive ejections of instances (outlier detection).", []string{"service"}, nil)
	return m
}

// observe records the duration of a lookup answered by layer.
func (m *metrics) observe(l Layer, d time.Duration) {
	if l >= LayerL1 && l <= LayerL3 {
		m.dur[l].Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.durVec.Describe(ch)
	for _, d := range []*prometheus.Desc{m.lookups, m.cacheHits, m.stale, m.backendErrs, m.checks, m.instances, m.picks, m.panics, m.ejections} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the Registry's counters.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	r := m.r
	m.durVec.Collect(ch)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	// The per-service counts, read in one step with dropState's move of a
	// state's counts into ctr and retired (foldMu): read between the two
	// they were in neither, and the counters went back for one scrape.
	r.foldMu.RLock()
	scrape := m.scrapes.Add(1)
	hits := r.ctr.l1Hits.load() // forgotten states' included
	svcs := make(map[string]*svcCounts, len(m.retired))
	for name, c := range m.retired {
		cp := *c
		svcs[name] = &cp
	}
	r.states.Range(func(_, v any) bool {
		st := v.(*svcState)
		sm := st.met.Load()
		if sm == nil {
			return true // never found: no label for it
		}
		c := svcs[st.name]
		if c == nil {
			c = new(svcCounts)
			svcs[st.name] = c
		}
		was := c.lookups[LayerL1]
		c.add(st, sm)
		hits += c.lookups[LayerL1] - was
		return true
	})
	// A deleted service's name counted again (found again, or a state that
	// was counted so retired) before a scrape showed it gone: its series
	// go on from its grave.
	for name, g := range m.graves {
		if c := svcs[name]; c != nil {
			c.plus(&g.svcCounts)
		}
	}
	buried := len(m.graves) > 0
	r.foldMu.RUnlock()
	if buried {
		m.forgetGraves(scrape)
	}
	for name, c := range svcs {
		for l := LayerL1; l <= LayerL3; l++ {
			counter(m.lookups, c.lookups[l], name, l.String())
		}
		for s := StrategyP2CEWMA; s <= StrategyRandom; s++ {
			if c.picks[s] > 0 {
				counter(m.picks, c.picks[s], name, s.String())
			}
		}
		counter(m.panics, c.panics, name)
		counter(m.ejections, c.ejections, name)
	}

	counter(m.cacheHits, hits, LayerL1.String())
	counter(m.stale, r.ctr.stale.Load())
	counter(m.backendErrs, r.ctr.storeErrs.Load(), "database")
	if r.l2 != nil {
		s := r.l2.Stats()
		counter(m.cacheHits, s.Hits, LayerL2.String())
		counter(m.backendErrs, s.Errors, "redis")
	}
	for i := range checkResults {
		counter(m.checks, r.ctr.checks[i].Load(), checkResults[i])
	}
	now := r.now.nanos()
	r.states.Range(func(_, v any) bool {
		st := v.(*svcState)
		if st.met.Load() == nil {
			return true // never found: no label for it
		}
		// Counted from the snapshot L1 holds; with none (evicted, or
		// invalidated, while the state is kept for a watch or the health
		// monitor) there is no count: 0 of every status said the service
		// had lost every instance. A negative entry (the database has no
		// such service) counts 0.
		e := r.l1.get(st.name)
		if e == nil {
			return true
		}
		var by [StatusSuspect + 1]int
		if e.raw != nil {
			for i := range e.raw.Instances {
				if s, ok := r.gaugeStatus(e, st, &e.raw.Instances[i], now); ok && s <= StatusSuspect {
					by[s]++
				}
			}
		}
		for _, s := range gaugeStatuses {
			ch <- prometheus.MustNewConstMetric(m.instances, prometheus.GaugeValue, float64(by[s]), st.name, s.String())
		}
		return true
	})
}

// forgetGraves ends the graves that the scrape numbered scrape showed
// gone (read after their burial): the series of a name counted again since
// (found again, or retired) keep its grave's counts, as retired counts, and
// the others forget them, their next series starting at 0.
func (m *metrics) forgetGraves(scrape uint64) {
	r := m.r
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	for name, g := range m.graves {
		if g.after >= scrape {
			continue // buried after this scrape read: the next shows it gone
		}
		delete(m.graves, name)
		counted := m.retired[name] != nil
		if st := r.stateIfAny(name); st != nil && st.met.Load() != nil {
			counted = true
		}
		if counted {
			c := m.retired[name]
			if c == nil {
				c = new(svcCounts)
				m.retired[name] = c
			}
			c.plus(&g.svcCounts)
		}
	}
}

// gaugeStatus returns the status discovery_instances counts in of an
// instance of the snapshot e holds, and false if it counts nowhere: an
// instance whose lease had ended when the snapshot was read (unless kept as
// a suspect). One live then counts still after its lease in the snapshot
// ends: renewals change no revision, so the snapshot of a service nobody
// here has looked up since is never read again, and its instances, renewed
// all along, showed as gone one lease TTL after the last lookup. It leaves
// the count when a change (a deregistration, the reaper) or a lookup reads
// the service again.
func (r *Registry) gaugeStatus(e *entry, st *svcState, in *core.Instance, now int64) (Status, bool) {
	exp := in.ExpiresAt.UnixNano()
	switch {
	case e.liveWhenRead(exp, now):
		return viewStatus(in, st.inst(in.ID), now), true
	case r.keptAsSuspect(st, exp, now):
		return StatusSuspect, true
	}
	return 0, false
}

// startMetrics registers the collector New made (r.met, set before any
// goroutine started), if WithMetrics was given.
func (r *Registry) startMetrics() error {
	if r.met == nil {
		return nil
	}
	if err := r.met.reg.Register(r.met); err != nil {
		r.met.registered = false
		return optErr("WithMetrics", "", "cannot register the metrics: "+err.Error()+
			" (is another Registry's there? wrap the Registerer for each, each with labels of its own: "+
			`prometheus.WrapRegistererWith(prometheus.Labels{"registry": "a"}, reg), and "b")`)
	}
	r.met.registered = true
	return nil
}

// stopMetrics unregisters the collector.
func (r *Registry) stopMetrics() {
	if r.met != nil && r.met.registered {
		r.met.reg.Unregister(r.met)
	}
}

// countService makes st's service counted per service from now on (metrics
// on) and returns its counters: called at its first lookup or pick that
// found a snapshot of it, so that only services this Registry looked up, and
// never made-up names, become labels.
func (r *Registry) countService(st *svcState) *svcMetrics {
	st.met.CompareAndSwap(nil, new(svcMetrics))
	return st.met.Load()
}

// countCheck counts one finished active check by its result.
func (r *Registry) countCheck(s Status) {
	switch s {
	case StatusHealthy:
		r.ctr.checks[0].Add(1)
	case StatusWarning:
		r.ctr.checks[1].Add(1)
	default:
		r.ctr.checks[2].Add(1)
	}
}

// lookupTimed is Lookup for the lookups metrics sample: an L1 hit is timed
// too (the slow path times itself, an L1 answer there only in the sample).
func (r *Registry) lookupTimed(ctx context.Context, service string) (Result, error) {
	start := time.Now()
	if e := r.l1.get(service); e != nil {
		now := r.now.nanos()
		if now < e.freshUntil.Load() {
			err := r.countHit(e, now)
			r.met.observe(LayerL1, time.Since(start))
			if err != nil {
				return Result{}, err
			}
			return l1Result(e, now), nil
		}
	}
	return r.lookupSlowAs(ctx, service, true)
}
