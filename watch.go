package discovery

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// Watching.
//
// A hub follows one service for this Registry while anything needs it (a
// Watch, a registration with a configuration callback). One goroutine per
// hub keeps the service's snapshot moving forward: it is woken by every
// change message for the service, by every L1 insertion of it (whoever made
// it: a Get, a write of this process, a background refresh), and by a timer
// when the snapshot stops being fresh (the L1 freshness window, or the first
// lease in it ending), so a watched service is refreshed even if nobody Gets
// it and a lost change message delays it by one freshness window at most.
// Each time the hub diffs the new snapshot against the last one it saw and
// hands the differences to its watchers. It never goes back to an older
// revision, and it remembers the newest revision announced: when the caches
// cannot give it that revision (a lost message, a reconnection) it reads the
// store directly.
//
// The lookup path is untouched: L1 hits never consult hubs.

// hub follows one service; see above.
type hub struct {
	r      *Registry
	name   string
	kickc  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	want      int64 // newest revision announced
	force     bool  // the next refresh reads the store (after a reconnection)
	watchers  map[*watcher]struct{}
	listeners map[*Registration]struct{}
	loaded    bool
	last      snapshot
	lastEntry *entry
}

// snapshot is what a hub last saw of its service.
type snapshot struct {
	rev    int64
	cfgRev int64
	config json.RawMessage
	insts  map[string]core.Instance // instances Get shows, by ID
	// suspect holds the instances Get shows as suspects: their lease ended
	// and they are kept (self-preservation, a database outage). Their
	// status in insts is the one they show once they renew.
	suspect map[string]bool
	// health holds the health state (nil: none) each instance's status was
	// taken from, by ID (process).
	health map[string]*instState
}

// sameConfig reports whether s and o hold the same configuration: the same
// revision and content (a configuration written after a restore can take
// the number of one the restore lost).
func (s *snapshot) sameConfig(o *snapshot) bool {
	return s.cfgRev == o.cfgRev && bytes.Equal(s.config, o.config)
}

// shown returns the status watchers are told of an instance of s.
func (s *snapshot) shown(id string) core.Status {
	if s.suspect[id] {
		return core.StatusSuspect
	}
	return s.insts[id].Status
}

// newHub returns a hub of a service with no context yet, not started.
func newHub(r *Registry, name string) *hub {
	return &hub{r: r, name: name, kickc: make(chan struct{}, 1),
		watchers: map[*watcher]struct{}{}, listeners: map[*Registration]struct{}{}}
}

// newWatcher returns a watcher with nothing queued, not started.
func newWatcher() *watcher {
	return &watcher{out: make(chan Event), sig: make(chan struct{}, 1), q: list.New(), byKey: map[watchKey]*list.Element{},
		told: map[string]Status{}}
}

// hubFor returns the hub of a service, creating and starting it.
func (r *Registry) hubFor(name string) (*hub, error) {
	r.hubMu.Lock()
	defer r.hubMu.Unlock()
	if r.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if v, ok := r.hubs.Load(name); ok {
		return v.(*hub), nil
	}
	h := newHub(r, name)
	h.ctx, h.cancel = context.WithCancel(r.ctx)
	h.kickc <- struct{}{} // the first load
	if !r.spawn(h.run) {
		h.cancel()
		return nil, ErrClosed
	}
	r.hubs.Store(name, h)
	r.hooked.Add(1)
	return h, nil
}

func (r *Registry) hubIfAny(name string) *hub {
	if r.hooked.Load() == 0 {
		return nil
	}
	if v, ok := r.hubs.Load(name); ok {
		return v.(*hub)
	}
	return nil
}

// release stops the hub if nothing uses it any more.
func (h *hub) release() {
	r := h.r
	r.hubMu.Lock()
	defer r.hubMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.watchers) > 0 || len(h.listeners) > 0 || h.ctx.Err() != nil {
		return
	}
	h.cancel()
	r.hubs.CompareAndDelete(h.name, h)
	r.hooked.Add(-1)
	if st := r.stateIfAny(h.name); st != nil {
		r.forgetUnused(st) // evicted from L1 while watched
	}
}

func (h *hub) signal() {
	select {
	case h.kickc <- struct{}{}:
	default:
	}
}

// entryPut is called by L1 after it stored an entry (cache.go).
func (r *Registry) entryPut(e *entry) {
	if h := r.hubIfAny(e.name); h != nil {
		h.signal()
	}
}

// changeAnnounced is called for every change message (cache.go).
func (r *Registry) changeAnnounced(ch core.Change, force bool) {
	h := r.hubIfAny(ch.Service)
	if h == nil {
		return
	}
	h.mu.Lock()
	h.want = max(h.want, ch.Revision)
	h.force = h.force || force
	h.mu.Unlock()
	h.signal()
}

// resyncHubs makes every hub read its service from the store, but those of
// the services in revalidated, whose revisions the resync compared (it
// tells their hubs of a change: onChange): messages may have been lost
// (cache.go calls it on every (re)subscription).
func (r *Registry) resyncHubs(revalidated map[string]*entry) {
	if r.hooked.Load() == 0 {
		return
	}
	r.hubs.Range(func(_, v any) bool {
		h := v.(*hub)
		if revalidated[h.name] != nil {
			return true
		}
		h.mu.Lock()
		h.force = true
		h.mu.Unlock()
		h.signal()
		return true
	})
}

// run is the hub's goroutine.
func (h *hub) run() {
	var t core.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		var tc <-chan time.Time
		if t != nil {
			tc = t.C()
		}
		select {
		case <-h.ctx.Done():
			return
		case <-h.kickc:
		case <-tc:
		}
		next := h.refresh()
		if h.ctx.Err() != nil {
			return
		}
		if t == nil {
			t = h.r.clock.NewTimer(next)
		} else {
			t.Reset(next)
		}
	}
}

// refresh brings the hub to the newest snapshot it can get and returns when
// to look again.
func (h *hub) refresh() time.Duration {
	r := h.r
	h.mu.Lock()
	want, force := h.want, h.force
	h.force = false
	h.mu.Unlock()
	now := r.clock.Now().UnixNano()
	e := r.l1.get(h.name)
	// "Not found" stays fresh for the negative TTL, which may be longer
	// than the freshness window within which Watch promises a change whose
	// message was lost: past the window, the store is read (a load that
	// is not forced returns the fresh entry), as for any other snapshot.
	unknownAged := e != nil && e.raw == nil && now >= e.loadedAt+int64(r.opts.fresh) && now < e.freshUntil.Load()
	if force || unknownAged || e == nil || e.rev < want || now >= e.freshUntil.Load() {
		r.state(h.name).raiseWant(want, r.now.nanos())
		ne, err := h.load(force || unknownAged)
		if err == nil && ne.rev < want && !force {
			// The caches could not give the announced revision (a lost
			// message, a lost write-through): read the store.
			ne, err = h.load(true)
		}
		if err == nil && ne.rev < want && (ne.st != nil || ne.raw == nil) {
			// The database holds less than announced: restored from a
			// backup, and the load took its revision as the one to wait
			// for (load). Kept, want had every wake of the hub read the
			// database twice, and raised the revision lookups wait for
			// again. A backup without the service at all holds none (a
			// "not found" entry has no state: its revision, 0).
			w := ne.rev
			if ne.st != nil {
				w = ne.st.wantRev.Load()
			}
			if w < want {
				h.mu.Lock()
				if h.want == want {
					h.want = w
				}
				h.mu.Unlock()
			}
		}
		// The load's own insertion into L1 kicked the hub; drop that kick.
		// Anything else that arrived meanwhile is looked for below.
		select {
		case <-h.kickc:
		default:
		}
		if err != nil {
			if h.ctx.Err() == nil {
				r.log.Debug("discovery: watched service not refreshed", zap.String("service", h.name), zap.Error(err))
				if force {
					h.mu.Lock()
					h.force = true
					h.mu.Unlock()
				}
				// Watchers get what Get serves meanwhile (stale-if-error):
				// a Watch opened in an outage was handed nothing, not even
				// the current state, until the database answered again.
				// process keeps a newer snapshot the hub already has.
				if cur, now := r.l1.get(h.name), r.now.nanos(); cur != nil && cur.kept == nil && now < cur.errorUntil {
					cur.markUsed(now)
					h.process(cur)
				}
			}
			return retryAfterFailure
		}
		e = ne
		now = r.clock.Now().UnixNano()
	}
	// A watch uses the service for as long as it is open: the hub looks at
	// it at least once per freshness window (the timer), and at each change.
	e.markUsed(r.now.nanos())
	h.process(e)
	cur := r.l1.get(h.name)
	h.mu.Lock()
	again := h.want > want || h.force ||
		cur != nil && (cur.rev > h.last.rev || cur.rev == h.last.rev && cur != h.lastEntry)
	h.mu.Unlock()
	if again { // announced, resynchronised or inserted while this refresh ran
		h.signal()
	}
	if e.raw == nil {
		return r.opts.fresh // unknown service: its first registration is announced
	}
	return max(time.Duration(e.freshUntil.Load()-now), time.Millisecond)
}

func (h *hub) load(force bool) (*entry, error) {
	key := h.name
	if force {
		key = "!" + key
	}
	v, err, _ := h.r.sf.Do(key, func() (any, error) { return h.r.load(h.name, force) })
	if err != nil {
		return nil, plainLoadErr(err)
	}
	return v.(*entry), nil
}

// snapshotOf returns what watchers see of an entry: the instances its view
// shows (live when it was built, or kept as suspects), with their stored
// status (process gives them the status Get shows), and the configuration.
// Taken from the leases alone, the suspects that Get still showed were
// reported removed.
func snapshotOf(e *entry) snapshot {
	s := snapshot{rev: e.rev, insts: map[string]core.Instance{}}
	if e.raw == nil {
		return s
	}
	s.cfgRev, s.config = e.raw.ConfigRevision, e.raw.Config
	var kept map[string]bool
	if view := e.view.Load(); view != nil {
		for i := range view.Instances {
			if in := &view.Instances[i]; in.Status == core.StatusSuspect && in.ExpiresAt.UnixNano() <= e.insertedAt {
				if kept == nil {
					kept = map[string]bool{}
				}
				kept[in.ID] = true
			}
		}
	}
	for i := range e.raw.Instances {
		in := e.raw.Instances[i]
		if in.ExpiresAt.UnixNano() <= e.insertedAt && !kept[in.ID] {
			continue
		}
		s.insts[in.ID] = in
	}
	s.suspect = kept
	return s
}

// sameRegistration reports whether two states of an instance differ in
// nothing its registration says (lease times and health do not count).
func sameRegistration(a, b *core.Instance) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Method == b.Method && a.Weight == b.Weight &&
		a.Zone == b.Zone && a.Version == b.Version && a.HealthPath == b.HealthPath && a.Check == b.Check &&
		(a.Status == core.StatusDraining) == (b.Status == core.StatusDraining) &&
		slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Metadata, b.Metadata)
}

// diff returns the events that lead from one snapshot to the next: instance
// events by ID (a health change where an instance became a suspect, or
// stopped being one), then the configuration.
func diff(service string, from, to *snapshot) []Event {
	var evs []Event
	ids := make([]string, 0, len(from.insts)+len(to.insts))
	for id := range from.insts {
		ids = append(ids, id)
	}
	for id := range to.insts {
		if _, ok := from.insts[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		old, had := from.insts[id]
		cur, has := to.insts[id]
		same := had && has && sameRegistration(&old, &cur)
		old.Status, cur.Status = from.shown(id), to.shown(id)
		switch {
		case had && !has:
			evs = append(evs, Event{Kind: EventInstanceRemoved, Service: service, Revision: to.rev, Instance: old.Clone()})
		case !had && has:
			evs = append(evs, Event{Kind: EventInstanceAdded, Service: service, Revision: to.rev, Instance: cur.Clone()})
		case !same:
			evs = append(evs, Event{Kind: EventInstanceUpdated, Service: service, Revision: to.rev, Instance: cur.Clone()})
		case old.Status != cur.Status: // became a suspect, or renewed
			evs = append(evs, Event{Kind: EventHealthChanged, Service: service, Revision: to.rev, Instance: cur.Clone(), Previous: old.Status})
		}
	}
	// No configuration after one: a database restored from before the
	// first (the event has none). The same number with other content: one
	// written after a restore took the number of one the restore lost.
	if !to.sameConfig(from) {
		evs = append(evs, Event{Kind: EventConfigChanged, Service: service, Revision: to.rev, Config: to.config})
	}
	return evs
}

// process moves the hub to entry e (unless it saw a newer one) and hands
// the differences to watchers and the configuration to callbacks.
func (h *hub) process(e *entry) {
	// Under the service's viewMu (taken before h.mu, as statusShown does):
	// no status changes, and none is announced, while the hub reads them.
	st := e.st
	if st != nil {
		st.viewMu.Lock()
		defer st.viewMu.Unlock()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// A lower revision is taken only as L1 takes it (put): the database
	// went back (restored from a backup), and watchers follow Get.
	if h.loaded && (e == h.lastEntry || e.rev < h.last.rev && !h.r.l1.wentBack(h.lastEntry, e)) {
		return
	}
	snap := snapshotOf(e)
	// Statuses reach watchers in events: an instance whose registration
	// is unchanged keeps the status they were told, and the health event
	// of its change (statusShown) brings the new one; taken from the view
	// here, a status changed just before its event made the hub drop that
	// event as one watchers already had. Any other takes the status Get
	// shows now, not the one of the entry's view: an entry already replaced
	// in L1 keeps the statuses it was built with, and an instance added
	// from it kept one that had changed since, for good.
	//
	// Kept only while the instance keeps its health state: a state that
	// went (L1 took a snapshot without the instance, deregistered and
	// registered again between two snapshots of the hub: a quick restart)
	// took its status with it, with no health event, and the hub kept the
	// status watchers were told while Get showed the stored one.
	now := h.r.clock.Now().UnixNano()
	snap.health = make(map[string]*instState, len(snap.insts))
	for id, in := range snap.insts {
		is := st.inst(id) // an entry with instances has a state
		if old, ok := h.last.insts[id]; ok && sameRegistration(&old, &in) && is == h.last.health[id] {
			in.Status = old.Status
		} else {
			in.Status = viewStatus(&in, is, now)
		}
		snap.insts[id], snap.health[id] = in, is
	}
	evs := diff(h.name, &h.last, &snap)
	cfgNew := snap.cfgRev > h.last.cfgRev || !h.loaded
	// Restored from a backup: a lower number, or the same with other
	// content (written after the restore, numbered as one it lost).
	cfgBack := h.loaded && (snap.cfgRev < h.last.cfgRev || snap.cfgRev == h.last.cfgRev && !snap.sameConfig(&h.last))
	back := h.loaded && snap.rev < h.last.rev
	h.last, h.lastEntry, h.loaded = snap, e, true
	for w := range h.watchers {
		if back {
			w.wentBack(snap.rev)
		}
		for _, ev := range evs {
			w.push(ev) // the configuration shared until handed over (run)
		}
	}
	if cfgNew && snap.cfgRev > 0 || cfgBack {
		for g := range h.listeners {
			g.offerConfig(snap.cfgRev, snap.config, cfgBack)
		}
	}
}

// addWatcher subscribes w and gives it the current state; false if the hub
// is stopping (the caller makes a new one).
func (h *hub) addWatcher(w *watcher) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx.Err() != nil {
		return false
	}
	h.watchers[w] = struct{}{}
	if h.loaded {
		for _, ev := range diff(h.name, &snapshot{}, &h.last) {
			w.push(ev)
		}
	}
	return true
}

func (h *hub) removeWatcher(w *watcher) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
	h.release()
}

func (h *hub) addListener(g *Registration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx.Err() != nil {
		return false
	}
	h.listeners[g] = struct{}{}
	if h.loaded && h.last.cfgRev > 0 {
		g.offerConfig(h.last.cfgRev, h.last.config, false)
	}
	return true
}

func (h *hub) removeListener(g *Registration) {
	h.mu.Lock()
	delete(h.listeners, g)
	h.mu.Unlock()
	h.release()
}

// watchEmit hands an event to this Registry's watchers of its service; it
// never blocks. A health change comes with the health state it was read
// from (is).
func (r *Registry) watchEmit(ev Event, is *instState) {
	h := r.hubIfAny(ev.Service)
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.loaded {
		// The first snapshot (process) gives every instance the status
		// Get shows; handed over before it, this event came ahead of the
		// instance's addition.
		return
	}
	ev.Revision = max(ev.Revision, h.last.rev)
	if ev.Kind == EventHealthChanged {
		// The hub's state follows the status, so that a Watch opened later
		// starts from the status Get shows, not the one of the last entry.
		in, ok := h.last.insts[ev.Instance.ID]
		if !ok {
			// Not added yet (its addition, from the snapshot that has it,
			// carries the status Get shows) or removed: handed over, this
			// came ahead of the addition, or after the removal.
			return
		}
		h.last.health[ev.Instance.ID] = is // the state the status now follows (process)
		if in.Status == ev.Instance.Status || in.Status == core.StatusDraining {
			// What watchers have: a draining instance shows draining
			// whatever its health. Its own view of the instance
			// (statusShown's, from L1) knows it drains only while L1
			// holds the service, which it may have let go while the hub
			// keeps it (an eviction): watchers were then told its health,
			// and an update back to draining at the next snapshot.
			return
		}
		ev.Previous, in.Status = in.Status, ev.Instance.Status
		h.last.insts[ev.Instance.ID] = in
		if h.last.suspect[ev.Instance.ID] {
			return // Get shows a suspect whatever its health: the status it shows once renewed
		}
		// The instance as watchers know it (push clones it), with its new
		// status: statusShown's, without L1's entry of the service, had
		// nothing but its service and ID (no host, port or weight), and a
		// reader that takes an event's instance as its new state kept
		// that until the instance's next update.
		ev.Instance = in
	}
	for w := range h.watchers {
		w.push(ev)
	}
}

// Watch returns a channel of the changes to a service as this Registry sees
// them, in revision order (which goes back only when the database does,
// restored from a backup: the events that follow carry its revisions, the
// ones Get answers with): first the current state (an EventInstanceAdded
// per live instance and an EventConfigChanged if it has a configuration),
// then an event per change: instances added, removed (deregistered, or
// their lease ended), updated (weight, metadata, tags, draining, ...),
// their health changing in this process, and the configuration changing.
// Instances whose lease ended but which Get keeps as suspects
// (self-preservation, a database outage) stay, with a health change to
// StatusSuspect, and are removed when Get drops them.
// Every event carries the revision at which it was seen. The service need
// not exist yet.
//
// Changes made anywhere arrive within a change message's delay (and within
// the L1 freshness window, 5 s +-10%, if the message is lost); after a
// reconnection to Redis the service is read again from the store and what
// changed meanwhile is delivered. No event is delivered twice.
//
// A slow reader never slows the Registry: pending events coalesce to the
// latest state of each instance instead of queueing up. For one instance
// still pending, an update replaces the pending event (an addition stays an
// addition, with the new state), a removal cancels a pending addition and
// replaces anything else, a return after a pending removal becomes an
// update, and a health change goes into a pending addition, or else keeps
// the status the reader last saw as Previous (and disappears if the status
// is back to it); configuration
// changes coalesce to the latest. A coalesced event moves to the end of the
// queue and carries the latest revision, so the order stays the revision
// order. At most one event (the one being handed over) can be older than
// a later one for the same instance; so a reader that applies events in
// order always ends with the current state, and a watcher holds at most
// two pending events per instance (its registration and its health) and
// one for the configuration, counting every instance the reader was told of
// or the service has now: a reader that saw 100 instances, all deregistered
// since, has 100 removals pending.
//
// The channel is closed when ctx ends or the Registry is closed. A nil ctx
// is a ValidationError: the channel's goroutine waits on it.
func (r *Registry) Watch(ctx context.Context, service string) (<-chan Event, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if ctx == nil {
		// Checked here, not found by the goroutine that reads it: its
		// panic was out of every caller's reach, and ended the process.
		return nil, nilContext("Watch")
	}
	if err := core.ValidateServiceName(service); err != nil {
		return nil, err
	}
	w := newWatcher()
	var h *hub
	for {
		var err error
		if h, err = r.hubFor(service); err != nil {
			return nil, err
		}
		if h.addWatcher(w) {
			break
		}
	}
	if !r.spawn(func() {
		defer h.removeWatcher(w)
		w.run(ctx, r.ctx)
	}) {
		h.removeWatcher(w)
		return nil, ErrClosed
	}
	return w.out, nil
}

// watcher is one Watch: a queue of pending events, coalesced by key, and a
// goroutine handing them to the reader.
type watcher struct {
	out chan Event
	sig chan struct{}

	mu    sync.Mutex
	q     *list.List // of Event, in revision order
	byKey map[watchKey]*list.Element
	rev   int64 // newest revision pushed
	// told is the status the reader was last handed of each instance it
	// has (by ID): what a health change starts from.
	told map[string]Status
}

// watchKey is what events coalesce by: one instance's registration, one
// instance's health, or the configuration.
type watchKey struct {
	health bool
	id     string
}

func keyOf(ev *Event) watchKey {
	switch ev.Kind {
	case EventConfigChanged:
		return watchKey{}
	case EventHealthChanged:
		return watchKey{health: true, id: ev.Instance.ID}
	}
	return watchKey{id: ev.Instance.ID}
}

// push queues ev, coalescing it with a pending event of the same key. The
// watcher queues its own copy of the instance (push changes its status in
// the queue). The configuration stays shared, with the other watchers and
// L1's snapshot, which nobody changes: run hands the reader its own copy.
// Copied here, for each watcher under the hub's lock (and the service's
// viewMu, which L1 insertions and health changes wait for), 100 watchers
// of a 500 KiB configuration held them for 50 MB of copying.
func (w *watcher) push(ev Event) {
	ev.Instance = ev.Instance.Clone()
	w.mu.Lock()
	ev.Revision = max(ev.Revision, w.rev)
	w.rev = ev.Revision
	key := keyOf(&ev)
	// A removal drops the instance's pending health even when it cancels
	// a pending addition (and leaves no event of its own).
	removed, id := ev.Kind == EventInstanceRemoved, ev.Instance.ID
	keep := true
	if el, ok := w.byKey[key]; ok {
		ev, keep = coalesce(el.Value.(Event), ev)
		w.q.Remove(el)
		delete(w.byKey, key)
	}
	if ev.Kind == EventHealthChanged {
		// The change starts from the status the reader has: it was handed
		// events since the pending one this coalesced with was queued (an
		// update with the status of a change that this one undoes), and a
		// change back to the status the pending one started from, dropped,
		// left the reader with the status it undid, for good.
		if s, ok := w.told[ev.Instance.ID]; ok {
			ev.Previous, keep = s, s != ev.Instance.Status
		}
		// A pending registration event carries the status of its time:
		// it takes this one, which would otherwise be lost if this event
		// coalesces away (back to the status the reader saw). A pending
		// addition is the first the reader hears of the instance: with the
		// status in it, this event would tell the change again, from a
		// status the reader never saw.
		if el, ok := w.byKey[watchKey{id: ev.Instance.ID}]; ok {
			p := el.Value.(Event)
			if p.Kind != EventInstanceRemoved {
				p.Instance.Status = ev.Instance.Status
				el.Value = p
				keep = keep && p.Kind != EventInstanceAdded
			}
		}
	}
	if removed { // its pending health no longer matters
		hk := watchKey{health: true, id: id}
		if el, ok := w.byKey[hk]; ok {
			w.q.Remove(el)
			delete(w.byKey, hk)
		}
	}
	if keep {
		w.byKey[key] = w.q.PushBack(ev)
	}
	w.mu.Unlock()
	select {
	case w.sig <- struct{}{}:
	default:
	}
}

// wentBack lets the revisions of the events pushed next go back to rev:
// the database went back (restored from a backup), and so did Get.
func (w *watcher) wentBack(rev int64) {
	w.mu.Lock()
	w.rev = rev
	w.mu.Unlock()
}

// tell records, under mu, the status ev (about to be handed over) gives the
// reader of its instance, and reports whether ev tells it anything: a
// health change queued behind an update that already handed its new status
// over tells nothing (else the reader heard it twice, the second time from
// a status it no longer had).
func (w *watcher) tell(ev *Event) bool {
	switch id := ev.Instance.ID; ev.Kind {
	case EventHealthChanged:
		if s, ok := w.told[id]; ok {
			if s == ev.Instance.Status {
				return false
			}
			ev.Previous = s
		}
		w.told[id] = ev.Instance.Status
	case EventInstanceAdded, EventInstanceUpdated:
		w.told[id] = ev.Instance.Status
	case EventInstanceRemoved:
		delete(w.told, id)
	}
	return true
}

// coalesce merges a pending event p with a newer one n of the same key; it
// returns false when together they change nothing the reader knows.
func coalesce(p, n Event) (Event, bool) {
	switch n.Kind {
	case EventConfigChanged:
		return n, true
	case EventHealthChanged:
		n.Previous = p.Previous
		return n, n.Previous != n.Instance.Status
	}
	switch {
	case p.Kind == EventInstanceAdded && n.Kind == EventInstanceRemoved:
		return Event{}, false // the reader never saw it
	case p.Kind == EventInstanceAdded:
		n.Kind = EventInstanceAdded
	case p.Kind == EventInstanceRemoved && n.Kind == EventInstanceAdded:
		n.Kind = EventInstanceUpdated // the reader still has it
	}
	return n, true
}

// run hands queued events to the reader until ctx or rctx ends, then closes
// the channel.
func (w *watcher) run(ctx, rctx context.Context) {
	defer close(w.out)
	for {
		w.mu.Lock()
		el := w.q.Front()
		var ev Event
		told := true
		if el != nil {
			ev = w.q.Remove(el).(Event)
			delete(w.byKey, keyOf(&ev))
			told = w.tell(&ev)
		}
		w.mu.Unlock()
		if !told {
			continue
		}
		// The reader's own copy, made outside every lock: a reader may
		// change what it is given, and the queued configuration is shared
		// (push).
		ev.Config = slices.Clone(ev.Config)
		if el == nil {
			select {
			case <-w.sig:
				continue
			case <-ctx.Done():
				return
			case <-rctx.Done():
				return
			}
		}
		select {
		case w.out <- ev:
		case <-ctx.Done():
			return
		case <-rctx.Done():
			return
		}
	}
}
