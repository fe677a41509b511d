package discovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Overview is every service at a glance, as this process sees it: what the
// seed's health dashboard showed, plus per-instance detail and the cache
// layers' hit rates. See Registry.Overview.
type Overview struct {
	// At is when it was taken (the Registry's clock).
	At time.Time
	// ProcessID is this Registry's (see Registry.ProcessID).
	ProcessID string
	// TotalServices counts the services listed; HealthyServices those whose
	// every instance can be picked, DegradedServices those with some, and
	// UnhealthyServices those with none.
	TotalServices, HealthyServices, DegradedServices, UnhealthyServices int
	// AvgResponseTime is the mean of the services' response times, over the
	// services checked at least once (0 if none).
	AvgResponseTime time.Duration
	// Services are ordered by name.
	Services []ServiceOverview
	// Cache has one entry per cache layer: L1, and L2 with Redis.
	Cache []LayerOverview
	// FromCache is true when the database could not list the services and
	// those this process holds are shown instead.
	FromCache bool
}

// ServiceOverview is one service in an Overview.
type ServiceOverview struct {
	// Name of the service; Revision its current revision.
	Name     string
	Revision int64
	// Status is StatusHealthy when every live instance can be picked,
	// StatusWarning when some can, StatusUnhealthy when none can (or none is
	// live).
	Status Status
	// Score is the mean health score of its instances.
	Score float64
	// ResponseTime is the mean of its instances' latest check durations, and
	// LastCheck the latest check of any of them (zero if never checked).
	ResponseTime time.Duration
	LastCheck    time.Time
	// Method is how callers reach its instances ("http", or "router" when
	// every instance is in-process).
	Method Method
	// Live and Usable count its live instances and those that can be picked.
	Live, Usable int
	// Instances are its live instances' health, ordered by ID.
	Instances []InstanceHealth
}

// LayerOverview is one cache layer's use since New.
type LayerOverview struct {
	// Layer is LayerL1 or LayerL2.
	Layer Layer
	// Hits and Misses: for L1, lookups it answered and lookups it could not
	// (they went to Redis or the database); for L2, Redis reads that found a
	// usable snapshot and those that did not.
	Hits, Misses uint64
	// HitRate is Hits / (Hits + Misses), 0 before any lookup.
	HitRate float64
}

// usable reports whether selection may pick the instance: not draining,
// weight above 0, health, score above minScore, not ejected (a call's
// filters aside). raw is the snapshot L1 holds (nil if none): a suspect
// that was draining there is not picked either.
func (h *InstanceHealth) usable(minScore float64, raw *core.Service) bool {
	switch h.Shown {
	case StatusDraining, StatusEjected:
		return false
	case StatusSuspect:
		if drainingIn(raw, h.ID) {
			return false
		}
	}
	return h.Weight > 0 && h.Status != StatusUnhealthy && h.Score > minScore && !h.Ejected
}

// Overview returns every service the database knows (or, while it cannot
// be read, every service this process holds, at once while the database is
// known to be down: see FromCache) with its health, and the
// cache layers' hit rates. It looks each service up like Health, so this
// process checks the health of what it shows from then on; those lookups
// are not counted as lookups (Stats.Lookups, discovery_lookups_total,
// Cache's L1 entry). The Redis reads and database loads they cause are
// counted as reads (Stats.L2Hits, L2Misses and StoreReads, Cache's L2
// entry, discovery_cache_hits_total{layer="L2"}).
func (r *Registry) Overview(ctx context.Context) (Overview, error) {
	if ctx == nil {
		return Overview{}, nilContext("Overview")
	}
	if r.closed.Load() {
		return Overview{}, ErrClosed
	}
	ov := Overview{At: r.clock.Now(), ProcessID: r.ProcessID()}
	var (
		infos []ServiceInfo
		err   error
	)
	if r.storeDown.Load() {
		// Known down: what this process holds, at once, as lookups serve
		// stale data at once then. Waiting for the listing, every
		// dashboard fetch took the database timeout on a black-holed
		// database, and a caller with a shorter deadline got no overview
		// for the whole outage. The listing runs in the background
		// instead, and notes the database's return.
		r.listInBackground()
		infos, ov.FromCache = r.cachedServices(), true
	} else if infos, err = r.Services(ctx); err != nil {
		if ctx.Err() != nil {
			return Overview{}, err
		}
		infos, ov.FromCache = r.cachedServices(), true
	}
	var sumRT time.Duration
	checked := 0
	for _, info := range infos {
		so := ServiceOverview{Name: info.Name, Revision: info.Revision, Status: StatusUnhealthy}
		// Expired rows too: instances whose leases ended may be kept as
		// suspects (self-preservation, a database outage), and Get shows
		// them and Pick picks them.
		if info.Live > 0 || info.Expired > 0 || ov.FromCache {
			hs, err := r.overviewHealth(ctx, info.Name, ov.FromCache)
			switch {
			case err == nil:
				var raw *core.Service
				if e := r.l1.get(info.Name); e != nil {
					raw = e.raw
				}
				so.fill(hs, r.opts.minScore, raw)
			case errors.Is(err, ErrNotFound):
				// An answer (no live instance), not a failure, even when
				// ctx ended meanwhile: returned then, the whole Overview
				// failed with "service not found", not the context's error.
			case ctx.Err() != nil, !errors.Is(err, ErrUnavailable):
				return Overview{}, err
			}
		}
		if e := r.l1.get(info.Name); e != nil && e.rev > so.Revision {
			so.Revision = e.rev
		}
		switch so.Status {
		case StatusHealthy:
			ov.HealthyServices++
		case StatusWarning:
			ov.DegradedServices++
		default:
			ov.UnhealthyServices++
		}
		if !so.LastCheck.IsZero() {
			sumRT += so.ResponseTime
			checked++
		}
		ov.Services = append(ov.Services, so)
	}
	slices.SortFunc(ov.Services, func(a, b ServiceOverview) int { return strings.Compare(a.Name, b.Name) })
	ov.TotalServices = len(ov.Services)
	if checked > 0 {
		ov.AvgResponseTime = sumRT / time.Duration(checked)
	}
	ov.Cache = r.layerOverview()
	return ov, nil
}

// overviewHealth is Health for Overview: it looks the service up without
// counting the lookup (Stats, metrics, the Cache hit rates). Counted, a
// dashboard fetching the overview every 1.5 s made those mostly a measure
// of itself, and gave metric labels to services the application never
// looked up. The admin handler's per-service read uses it too, for the
// same reasons.
//
// cached says the database did not answer the listing: then a service
// whose snapshot L1 no longer serves without the database (past
// stale-if-error) is not loaded, and counts as unavailable. Each load
// waited for the database, a load timeout for each such service, which
// the lookups of the application wait for once, not once a service.
func (r *Registry) overviewHealth(ctx context.Context, service string, cached bool) ([]InstanceHealth, error) {
	if cached {
		if e := r.l1.get(service); e == nil || r.now.nanos() >= e.errorUntil {
			return nil, &core.BackendError{Backend: "database", Op: "load", Err: errors.New("down")}
		}
	}
	e, layer, stale, err := r.lookupEntry(ctx, service)
	if err != nil {
		return nil, err
	}
	if e.notFound != nil {
		return nil, e.notFound
	}
	return r.healthOf(ctx, service, resultOf(e, layer, r.now.nanos(), stale)), nil
}

func (so *ServiceOverview) fill(hs []InstanceHealth, minScore float64, raw *core.Service) {
	so.Instances = hs
	so.Live = len(hs)
	if len(hs) == 0 {
		return
	}
	var score float64
	var rt time.Duration
	rtN, routers := 0, 0
	for i := range hs {
		h := &hs[i]
		score += h.Score
		if h.usable(minScore, raw) {
			so.Usable++
		}
		if !h.LastCheck.IsZero() {
			rt += h.ResponseTime
			rtN++
			if h.LastCheck.After(so.LastCheck) {
				so.LastCheck = h.LastCheck
			}
		}
		if h.Method == MethodRouter {
			routers++
		}
	}
	so.Score = score / float64(len(hs))
	if rtN > 0 {
		so.ResponseTime = rt / time.Duration(rtN)
	}
	if routers == len(hs) {
		so.Method = MethodRouter
	}
	switch {
	case so.Usable == so.Live:
		so.Status = StatusHealthy
	case so.Usable > 0:
		so.Status = StatusWarning
	}
}

// listInBackground lists the services in the background, one listing at a
// time, for an Overview while the database is known down: a listing that
// answers ends the outage (noteStoreResult), and the next Overview lists
// from the database again.
func (r *Registry) listInBackground() {
	if !r.listing.CompareAndSwap(false, true) {
		return
	}
	if !r.spawn(func() {
		defer r.listing.Store(false)
		ctx, cancel := ownTimeout(r.ctx, r.opts.dbTO)
		defer cancel()
		_, err := r.store.Services(ctx, r.clock.Now())
		r.noteStoreResult("services", err)
	}) {
		r.listing.Store(false) // closing
	}
}

// cachedServices lists the services L1 holds, for an Overview while the
// database cannot be read.
func (r *Registry) cachedServices() []ServiceInfo {
	var out []ServiceInfo
	r.l1.each(func(e *entry) {
		if e.raw != nil {
			out = append(out, ServiceInfo{Name: e.name, Revision: e.rev, Live: len(e.view.Load().Instances)})
		}
	})
	return out
}

// layerOverview returns the cache layers' hits and misses from Stats.
func (r *Registry) layerOverview() []LayerOverview {
	s := r.Stats()
	rate := func(h, m uint64) float64 {
		if h+m == 0 {
			return 0
		}
		return float64(h) / float64(h+m)
	}
	l1Miss := s.Lookups[LayerL2] + s.Lookups[LayerL3]
	out := []LayerOverview{{Layer: LayerL1, Hits: s.Lookups[LayerL1], Misses: l1Miss, HitRate: rate(s.Lookups[LayerL1], l1Miss)}}
	if r.l2 != nil {
		out = append(out, LayerOverview{Layer: LayerL2, Hits: s.L2Hits, Misses: s.L2Misses, HitRate: rate(s.L2Hits, s.L2Misses)})
	}
	return out
}
