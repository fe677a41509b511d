package discovery

import (
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Self-preservation, after Eureka's: when many instances of a service stop
// renewing at the same moment, the likelier cause is a partition between
// them and the database (or the database itself) than that they all died;
// dropping them all would send every request to the few left. So a lapsed
// lease normally drops its instance at once, but when more than a fraction
// (15% by default) of a service's instances lapsed within one renewal
// window of each other, and at least two, they stay visible as
// StatusSuspect for a grace period (two lease TTLs by default), during which
// they renew or re-register if they are alive. Active health checks still
// take dead ones out of selection.

// DefaultSelfPreservation is the fraction of a service's instances that
// must lapse together to be kept as suspects.
const DefaultSelfPreservation = 0.15

// preserved returns the episode of self-preservation in force at now (the
// expiry windows of the instances kept as suspects), if self-preservation
// applies to raw; nil if none. An episode, once begun, holds until the
// grace of its last lapse ends, however many of its instances have renewed
// meanwhile: they come back one by one, and the last must not be dropped
// for being alone.
func (r *Registry) preserved(raw *core.Service, st *svcState, now int64) *episode {
	if r.opts.preserveFraction <= 0 {
		return nil
	}
	grace := int64(r.opts.suspectGrace)
	window := r.groupWindow()
	var ep *episode
	if st != nil {
		ep = r.episodeOf(st, now)
	}
	if ep == nil && len(raw.Instances) < 2 {
		return nil
	}
	var recent []int64
	live := 0
	for i := range raw.Instances {
		exp := raw.Instances[i].ExpiresAt.UnixNano()
		switch {
		case exp > now:
			live++
		case exp > now-grace:
			recent = append(recent, exp)
		}
	}
	slices.Sort(recent)
	if ep != nil {
		// The episode takes in the later lapses of its group: those within
		// one renewal window of its first. Each within a window of the one
		// before, as a chain, lapses one by one after the group (a rolling
		// restart that kills its pods, a crash loop) joined it, each moved
		// its grace forward, and the group's dead instances, and every
		// single expiry, were kept for as long as the lapses kept coming.
		// Later lapses are judged as a group of their own, below.
		hi := ep.hi
		for _, exp := range recent {
			if exp > hi && exp <= ep.lo+window {
				hi = exp
			}
		}
		next := ep
		if hi != ep.hi {
			next = &episode{lo: ep.lo, hi: hi, earlier: ep.earlier, since: ep.since}
		}
		// A later group of its own (a second partition while the first is
		// held) joins the episode as a window of its own. Left out, it was
		// dropped while the first group's grace lasted, and came back as
		// suspects once it had ended.
		from, _ := slices.BinarySearch(recent, hi+1)
		if lo, hi, ok := r.latestGroup(recent, from, live); ok {
			next = &episode{lo: lo, hi: hi, earlier: next.inForce(now, grace), since: ep.since}
		}
		if next != ep {
			st.episode.Store(next)
		}
		return next
	}
	lo, hi, ok := r.latestGroup(recent, 0, live)
	if !ok {
		return nil
	}
	ep = &episode{lo: lo, hi: hi, since: lo}
	if st != nil {
		st.episode.Store(ep)
	}
	return ep
}

// groupWindow is how far apart the lapses of one group can be: they spread
// over one renewal window (TTL/3, with room for jitter: TTL/2).
func (r *Registry) groupWindow() int64 { return int64(r.opts.leaseTTL / 2) }

// latestGroup returns the expiry window of the latest group among the
// sorted lapses recent[from:] that lapsed within one renewal window of each
// other, at least two, and more than the fraction of the instances live
// when it began (live ones now, and those that lapsed since). Measured
// against the live ones alone, and the largest group taken, an earlier
// group that had not qualified when it lapsed (and was dropped then)
// qualified once a later one had lapsed too, and came back as suspects
// while the later one, which did qualify, was dropped.
func (r *Registry) latestGroup(recent []int64, from, live int) (lo, hi int64, ok bool) {
	window := r.groupWindow()
	best, bestLo := 0, 0
	for i, j := from, from; j < len(recent); j++ {
		for recent[j]-recent[i] > window {
			i++
		}
		n := j - i + 1
		if n >= 2 && float64(n) > r.opts.preserveFraction*float64(live+len(recent)-i) {
			best, bestLo = n, i
		}
	}
	if best == 0 {
		return 0, 0, false
	}
	return recent[bestLo], recent[bestLo+best-1], true
}

// episode is the expiry windows of instances kept as suspects: [lo, hi] of
// its latest group, and those of earlier groups whose grace has not ended.
// Never changed once stored; a change stores a new one.
type episode struct {
	lo, hi  int64
	earlier *episode
	// since is the lo of the episode's first group, kept by every episode
	// that continues it: what tells one episode from the next
	// (notePreservation).
	since int64
}

// inForce returns e without its earlier windows whose grace has ended at
// now (e itself if none has).
func (e *episode) inForce(now, grace int64) *episode {
	if e == nil {
		return nil
	}
	earlier := e.earlier.inForce(now, grace)
	switch {
	case now >= e.hi+grace:
		return earlier
	case earlier == e.earlier:
		return e
	}
	return &episode{lo: e.lo, hi: e.hi, earlier: earlier, since: e.since}
}

// holds reports whether an instance whose lease ended at exp is kept at
// now by the episode: within its latest window (the episode is in force),
// or within an earlier one whose grace has not ended.
func (e *episode) holds(exp, now, grace int64) bool {
	if exp >= e.lo && exp <= e.hi {
		return true
	}
	for w := e.earlier; w != nil; w = w.earlier {
		if exp >= w.lo && exp <= w.hi && now < w.hi+grace {
			return true
		}
	}
	return false
}

// episodeOf returns the service's episode if it is in force at now: until
// the grace of its last lapse ends.
func (r *Registry) episodeOf(st *svcState, now int64) *episode {
	if e := st.episode.Load(); e != nil && now < e.hi+int64(r.opts.suspectGrace) {
		return e
	}
	return nil
}

// keptAsSuspect reports whether an instance whose lease ended at exp is
// still kept as a suspect at now, as buildView keeps it: in the service's
// self-preservation episode, or held by a database outage.
func (r *Registry) keptAsSuspect(st *svcState, exp, now int64) bool {
	if exp > now {
		return false
	}
	return r.kept(exp, now, r.episodeOf(st, now))
}

// kept reports whether an instance whose lease ended at exp is kept at now:
// within a window of a self-preservation episode in force (ep, nil if
// none), or held by a database outage.
func (r *Registry) kept(exp, now int64, ep *episode) bool {
	return ep != nil && ep.holds(exp, now, int64(r.opts.suspectGrace)) || r.heldByOutage(exp, now)
}

// suspectsNow counts the suspects of a service's view that are still kept
// at now. The view (and the count notePreservation keeps) is rebuilt only
// by a lookup or a change: read as it was, a service no longer looked up
// showed its suspects long after their grace ended.
func (r *Registry) suspectsNow(st *svcState, now int64) int64 {
	if st.suspects.Load() == 0 {
		return 0
	}
	e := r.l1.get(st.name)
	if e == nil || e.raw == nil || e.st != st {
		return 0
	}
	n := int64(0)
	view := e.view.Load()
	for i := range view.Instances {
		in := &view.Instances[i]
		if in.Status == core.StatusSuspect && r.keptAsSuspect(st, in.ExpiresAt.UnixNano(), now) {
			n++
		}
	}
	return n
}

// notePreservation logs a service entering and leaving self-preservation,
// once each per episode (ep, in force at the view's build), and counts
// episodes and suspects: preserved of the suspects are kept by the episode,
// the others by a database outage alone (heldByOutage). Those are not
// self-preservation: counted as such, a single lease that ended during an
// outage, with self-preservation turned off, was logged as instances that
// stopped renewing together and counted as an episode.
//
// An episode's end is noted by the first view built after it; when that
// view already holds the next episode (no lookup in between), both are
// noted then. Told apart by the preserving flag alone, the next episode
// went unlogged and uncounted.
func (r *Registry) notePreservation(st *svcState, ep *episode, preserved, suspects, total int) {
	if st == nil {
		return
	}
	st.suspects.Store(int64(suspects))
	st.preserveMu.Lock()
	defer st.preserveMu.Unlock()
	if st.preserving && (preserved == 0 || ep.since != st.preservedSince) {
		st.preserving = false
		r.log.Info("discovery: self-preservation ended", zap.String("service", st.name))
	}
	if preserved > 0 && !st.preserving {
		st.preserving, st.preservedSince = true, ep.since
		r.ctr.preservations.Add(1)
		r.log.Warn("discovery: self-preservation: instances stopped renewing together; keeping them as suspect",
			zap.String("service", st.name), zap.Int("suspect", preserved), zap.Int("instances", total),
			zap.Duration("grace", r.opts.suspectGrace))
	}
}

// outage is a database outage this process saw: from the last call that
// answered before it to the first that answered after it (to is 0 while it
// lasts), and the earlier ones whose leases are still held or spared by the
// reaper. Never changed once stored.
type outage struct {
	from, to int64
	earlier  *outage
}

// inForce returns o without the outages that ended keep or more before now.
func (o *outage) inForce(now, keep int64) *outage {
	if o == nil {
		return nil
	}
	earlier := o.earlier.inForce(now, keep)
	switch {
	case o.to != 0 && now >= o.to+keep:
		return earlier
	case earlier == o.earlier:
		return o
	}
	return &outage{from: o.from, to: o.to, earlier: earlier}
}

// heldByOutage reports whether an instance whose lease ended at exp is kept
// as a suspect because its lease ended while this process could not reach
// the database: its registration could not renew it either. It is kept
// until the outage grace after the database answers again, time enough
// for the registration to renew or register again.
//
// A lease that ended a renewal window (groupWindow) or more after the
// database answered again is not the outage's: a live registration renews
// it before then (it tries at least once in each half of what is left).
// Held whenever it ended, an instance renewed after the outage and then
// dead (its process crashed) stayed listed as a suspect, and picked, until
// two lease TTLs after the database came back.
func (r *Registry) heldByOutage(exp, now int64) bool {
	for o := r.outage.Load(); o != nil; o = o.earlier {
		if exp >= o.from && (o.to == 0 || exp < o.to+r.groupWindow() && now < o.to+r.outageGrace()) {
			return true
		}
	}
	return false
}

// outageGrace is how long after a database outage the leases that ended
// during it are held: two lease TTLs, or self-preservation's grace if
// longer. It is not self-preservation's alone: WithSelfPreservation(0, 0),
// which turns self-preservation off, made every such instance vanish the
// moment the database answered, before its registration could renew.
func (r *Registry) outageGrace() int64 {
	return max(int64(r.opts.suspectGrace), 2*int64(r.opts.leaseTTL))
}

// outageKeep is how long after an outage ends it still counts: its leases
// are held (outageGrace) and its rows spared by the reaper (reapAfter).
func (r *Registry) outageKeep() int64 {
	return max(r.outageGrace(), int64(r.opts.reapAfter))
}

// reapBefore is the reaper's cutoff at now: rows whose lease ended
// reapAfter ago, but none that ended during a database outage this process
// saw until reapAfter (or the outage grace, if longer: the rows it holds as
// suspects) has passed since it ended.
func (r *Registry) reapBefore(now int64) time.Time {
	cut := now - int64(r.opts.reapAfter)
	for o := r.outage.Load(); o != nil; o = o.earlier {
		if o.to == 0 || now < o.to+r.outageKeep() {
			cut = min(cut, o.from)
		}
	}
	return time.Unix(0, cut)
}
