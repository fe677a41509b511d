package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/health"
	"github.com/rssbot/discovery/internal/store/memory"
)

func ev(kind EventKind, id string, rev int64, weight int) Event {
	return Event{Kind: kind, Service: "s", Revision: rev, Instance: Instance{ID: id, Weight: weight}}
}

func healthEv(id string, rev int64, from, to Status) Event {
	return Event{Kind: EventHealthChanged, Service: "s", Revision: rev, Instance: Instance{ID: id, Status: to}, Previous: from}
}

func pending(w *watcher) string {
	var out []string
	for el := w.q.Front(); el != nil; el = el.Next() {
		e := el.Value.(Event)
		s := fmt.Sprintf("%s:%s@%d", e.Kind, e.Instance.ID, e.Revision)
		switch e.Kind {
		case EventHealthChanged:
			s += fmt.Sprintf("(%s->%s)", e.Previous, e.Instance.Status)
		case EventConfigChanged:
			s = fmt.Sprintf("%s:%s@%d", e.Kind, e.Config, e.Revision)
		default:
			s += fmt.Sprintf("(w%d)", e.Instance.Weight)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// The coalescing rule of Watch, event by event.
func TestCoalescing(t *testing.T) {
	cfg := func(rev int64, doc string) Event {
		return Event{Kind: EventConfigChanged, Service: "s", Revision: rev, Config: json.RawMessage(doc)}
	}
	tests := []struct {
		name string
		in   []Event
		want string
	}{
		{"distinct instances queue in order",
			[]Event{ev(EventInstanceAdded, "a", 1, 1), ev(EventInstanceAdded, "b", 2, 1)},
			"instance_added:a@1(w1) instance_added:b@2(w1)"},
		{"an update of a pending addition stays an addition with the new state, at the end",
			[]Event{ev(EventInstanceAdded, "a", 1, 1), ev(EventInstanceAdded, "b", 2, 1), ev(EventInstanceUpdated, "a", 3, 7)},
			"instance_added:b@2(w1) instance_added:a@3(w7)"},
		{"a removal cancels a pending addition",
			[]Event{ev(EventInstanceAdded, "a", 1, 1), ev(EventInstanceRemoved, "a", 2, 1)},
			""},
		{"updates coalesce to the latest",
			[]Event{ev(EventInstanceUpdated, "a", 1, 2), ev(EventInstanceUpdated, "a", 2, 3), ev(EventInstanceUpdated, "a", 3, 4)},
			"instance_updated:a@3(w4)"},
		{"a removal replaces a pending update",
			[]Event{ev(EventInstanceUpdated, "a", 1, 2), ev(EventInstanceRemoved, "a", 2, 2)},
			"instance_removed:a@2(w2)"},
		{"a return after a pending removal is an update",
			[]Event{ev(EventInstanceRemoved, "a", 1, 2), ev(EventInstanceAdded, "a", 2, 5)},
			"instance_updated:a@2(w5)"},
		{"health changes keep the status the reader saw",
			[]Event{healthEv("a", 1, StatusUnknown, StatusHealthy), healthEv("a", 2, StatusHealthy, StatusUnhealthy)},
			"health_changed:a@2(unknown->unhealthy)"},
		{"a health change undone disappears",
			[]Event{healthEv("a", 1, StatusHealthy, StatusUnhealthy), healthEv("a", 1, StatusUnhealthy, StatusHealthy)},
			""},
		{"health and registration of one instance are separate",
			[]Event{ev(EventInstanceUpdated, "a", 1, 2), healthEv("a", 1, StatusUnknown, StatusHealthy)},
			"instance_updated:a@1(w2) health_changed:a@1(unknown->healthy)"},
		{"a removal drops the instance's pending health",
			[]Event{healthEv("a", 1, StatusUnknown, StatusHealthy), ev(EventInstanceUpdated, "b", 2, 1), ev(EventInstanceRemoved, "a", 3, 1)},
			"instance_updated:b@2(w1) instance_removed:a@3(w1)"},
		{"a removal that cancels a pending addition drops its pending health too",
			[]Event{ev(EventInstanceAdded, "a", 1, 1), healthEv("a", 2, StatusUnknown, StatusHealthy), ev(EventInstanceRemoved, "a", 3, 1)},
			""},
		{"configurations coalesce to the latest",
			[]Event{cfg(1, `{"n":1}`), ev(EventInstanceAdded, "a", 2, 1), cfg(3, `{"n":3}`)},
			`instance_added:a@2(w1) config_changed:{"n":3}@3`},
		{"revisions never go back",
			[]Event{ev(EventInstanceAdded, "a", 5, 1), healthEv("b", 3, StatusUnknown, StatusHealthy)},
			"instance_added:a@5(w1) health_changed:b@5(unknown->healthy)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWatcher()
			for _, e := range tt.in {
				w.push(e)
			}
			if got := pending(w); got != tt.want {
				t.Fatalf("pending:\n got %s\nwant %s", got, tt.want)
			}
			if len(w.byKey) != w.q.Len() {
				t.Fatalf("index has %d keys for %d events", len(w.byKey), w.q.Len())
			}
		})
	}
}

// watchReader applies a Watch's events to the statuses it knows, as a
// reader would.
type watchReader struct {
	t      *testing.T
	ch     <-chan Event
	status map[string]Status
	seen   []string
}

func newWatchReader(t *testing.T, r *Registry, ctx context.Context, service string) *watchReader {
	t.Helper()
	ch, err := r.Watch(ctx, service)
	if err != nil {
		t.Fatal(err)
	}
	return &watchReader{t: t, ch: ch, status: map[string]Status{}}
}

// next applies and returns the next event, failing after 5 s without one.
func (w *watchReader) next() Event {
	w.t.Helper()
	select {
	case e := <-w.ch:
		w.seen = append(w.seen, fmt.Sprintf("%s %s %s", e.Kind, e.Instance.ID, e.Instance.Status))
		switch e.Kind {
		case EventInstanceRemoved:
			delete(w.status, e.Instance.ID)
		case EventInstanceAdded, EventInstanceUpdated, EventHealthChanged:
			w.status[e.Instance.ID] = e.Instance.Status
		}
		return e
	case <-time.After(5 * time.Second):
		w.t.Fatalf("no event within 5 s (after %q)", w.seen)
		panic("unreachable")
	}
}

// endsWithGet registers a marker instance and reads events up to its
// addition, which comes after every event pending before it; the reader's
// status of id must then be the one Get shows.
func (w *watchReader) endsWithGet(r *Registry, service, id string) {
	w.t.Helper()
	ctx := context.Background()
	m, err := r.Register(ctx, Instance{Service: service, Host: "10.9.9.9", Port: 9})
	if err != nil {
		w.t.Fatal(err)
	}
	for e := w.next(); e.Kind != EventInstanceAdded || e.Instance.ID != m.id; e = w.next() {
	}
	svc, err := r.Get(ctx, service)
	if err != nil {
		w.t.Fatal(err)
	}
	if want := svc.Instance(id).Status; w.status[id] != want {
		w.t.Fatalf("the reader ends with %s %v after %q; Get shows %v", id, w.status[id], w.seen, want)
	}
}

// check applies one check result to an instance in this process, as the
// health monitor would.
func check(r *Registry, clock *fakeclock.Clock, service, id string, s core.Status) {
	clock.Advance(time.Second)
	st := r.state(service)
	r.applyLocal(st, st.instOrNew(id), health.Check{At: clock.Now().UnixNano(), RTT: time.Millisecond, Status: s})
}

// held returns the entry L1 holds for name, looked up again if L1 let it
// go: a nil entry from r.l1.get crashed a test under a loaded CI run.
func held(t *testing.T, r *Registry, name string) *entry {
	t.Helper()
	for range 100 {
		if e := r.l1.get(name); e != nil {
			return e
		}
		if _, err := r.Get(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("L1 does not keep %s", name)
	return nil
}

func fakeRegistry(t testing.TB, opts ...Option) (*Registry, *fakeclock.Clock) {
	t.Helper()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	r, err := New(append([]Option{WithStore(memory.New()), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, clock
}

// Health changes reach watchers, after the instance's addition and with
// the snapshot's revision.
func TestHealthEventsReachWatchers(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	g, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	first := w.next()
	if first.Kind != EventInstanceAdded {
		t.Fatalf("first event %v", first.Kind)
	}
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	if e := w.next(); e.Kind != EventHealthChanged || e.Previous != StatusUnknown || e.Instance.Status != StatusHealthy ||
		e.Instance.ID != "10.0.0.1:1" || e.Revision != first.Revision {
		t.Fatalf("health event %+v", e)
	}
}

// A Watch opened after a health change starts from the status Get shows,
// not from the one of the entry the hub last diffed.
func TestLateWatcherStartsFromTheStatusGetShows(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	g, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	early := newWatchReader(t, r, ctx, "db_svc")
	early.next()
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	if e := early.next(); e.Kind != EventHealthChanged || e.Instance.Status != StatusHealthy {
		t.Fatalf("health event %+v", e)
	}
	late := newWatchReader(t, r, ctx, "db_svc")
	if e := late.next(); e.Kind != EventInstanceAdded || e.Instance.Status != StatusHealthy {
		t.Fatalf("late watcher's first event: %v status %v; want instance_added status healthy", e.Kind, e.Instance.Status)
	}
}

// A pending registration event takes the status of a later health change,
// even when that change coalesces away: the reader ends with the latest.
func TestPendingUpdateTakesTheLatestHealth(t *testing.T) {
	w := newWatcher()
	w.push(healthEv("a", 2, StatusUnhealthy, StatusHealthy))
	upd := ev(EventInstanceUpdated, "a", 3, 7)
	upd.Instance.Status = StatusHealthy // the status when the update was diffed
	w.push(upd)
	w.push(healthEv("a", 3, StatusHealthy, StatusUnhealthy)) // back to what the reader saw: coalesces away
	status := StatusUnhealthy                                // what the reader saw
	for el := w.q.Front(); el != nil; el = el.Next() {
		status = el.Value.(Event).Instance.Status
	}
	if status != StatusUnhealthy {
		t.Fatalf("the reader ends with %v after %q; the instance is unhealthy", status, pending(w))
	}
}

// A health change of an instance whose addition the reader has not taken
// goes into that addition: the reader got the addition with the new status
// and then the change to it from a status it was never told (unknown ->
// healthy after an addition showing healthy), one change told twice.
func TestPendingAdditionTakesAHealthChange(t *testing.T) {
	w := newWatcher()
	w.push(ev(EventInstanceAdded, "a", 1, 1)) // status unknown
	w.push(healthEv("a", 1, StatusUnknown, StatusHealthy))
	if got := pending(w); got != "instance_added:a@1(w1)" {
		t.Fatalf("pending: %s; want only the addition", got)
	}
	if st := w.q.Front().Value.(Event).Instance.Status; st != StatusHealthy {
		t.Fatalf("the addition shows %v; want healthy", st)
	}
	w.push(ev(EventInstanceAdded, "b", 2, 1))
	w.push(healthEv("a", 2, StatusHealthy, StatusUnhealthy))
	if got := pending(w); got != "instance_added:a@1(w1) instance_added:b@2(w1)" {
		t.Fatalf("pending: %s; want the two additions", got)
	}
	if st := w.q.Front().Value.(Event).Instance.Status; st != StatusUnhealthy {
		t.Fatalf("the addition shows %v; want unhealthy", st)
	}
	if len(w.byKey) != w.q.Len() {
		t.Fatalf("index has %d keys for %d events", len(w.byKey), w.q.Len())
	}
}

// End to end: an update diffed while the instance was unhealthy, pending
// behind an event the reader has not taken, and the health back to what
// the reader saw; the reader ends with the status Get shows.
func TestWatchReaderEndsWithTheStatusGetShows(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	ga, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	gb, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	w.next()
	w.next()
	check(r, clock, "db_svc", ga.id, core.StatusHealthy)
	if e := w.next(); e.Kind != EventHealthChanged {
		t.Fatalf("want a health event, got %+v", e)
	}
	check(r, clock, "db_svc", gb.id, core.StatusHealthy) // held out to the reader, which is not reading
	time.Sleep(50 * time.Millisecond)
	for range 3 {
		check(r, clock, "db_svc", ga.id, core.StatusUnhealthy)
	}
	if err := ga.SetWeight(ctx, 7); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the hub diffs the update while a is unhealthy
	for range 2 {
		check(r, clock, "db_svc", ga.id, core.StatusHealthy)
	}
	w.endsWithGet(r, "db_svc", ga.id)
}

// An ejection is announced when it begins and when it ends: the reader
// ends with the status Get shows, not "ejected".
func TestWatchAnnouncesAnEjectionAndItsEnd(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t, WithLeaseTTL(1000*time.Hour))
	g, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	w.next()
	for range 5 {
		if err := r.ReportOutcome("db_svc", g.id, errors.New("reset"), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if e := w.next(); e.Kind != EventHealthChanged || e.Instance.Status != StatusEjected || e.Previous != StatusUnknown {
		t.Fatalf("after 5 failures: %+v; want health_changed unknown->ejected", e)
	}
	if err := g.SetWeight(ctx, 7); err != nil { // an update diffed during the ejection
		t.Fatal(err)
	}
	if e := w.next(); e.Kind != EventInstanceUpdated || e.Instance.Status != StatusEjected {
		t.Fatalf("update during the ejection: %+v", e)
	}
	clock.Advance(31 * time.Second)
	r.hm.settle()
	if e := w.next(); e.Kind != EventHealthChanged || e.Instance.Status != StatusUnknown || e.Previous != StatusEjected {
		t.Fatalf("after the ejection: %+v; want health_changed ejected->unknown", e)
	}
	w.endsWithGet(r, "db_svc", g.id)
}

// FuzzCheckConfig: the configuration checks never panic, and whatever they
// accept is a JSON object within the size and depth limits.
func FuzzCheckConfig(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":[1,{"b":"c"}]}`, `[`, `{"a":"\"}"}`, `{"a":"\\"}`, " {\"a\":null} ",
		`{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "}", "{\"\xff\":1}", `{"a":"}}}}"}`, `}{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		reason, _ := checkConfig(doc)
		if reason != "" {
			return
		}
		if len(doc) > MaxConfigBytes || !json.Valid(doc) {
			t.Fatalf("accepted %q", doc)
		}
		var v any
		if err := json.Unmarshal(doc, &v); err != nil {
			t.Fatalf("accepted %q: %v", doc, err)
		}
		if _, ok := v.(map[string]any); !ok {
			t.Fatalf("accepted a non-object %q", doc)
		}
		if d := depth(v); d > MaxConfigDepth {
			t.Fatalf("accepted depth %d", d)
		}
	})
}

func depth(v any) int {
	switch x := v.(type) {
	case map[string]any:
		d := 0
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	case []any:
		d := 0
		for _, e := range x {
			d = max(d, depth(e))
		}
		return d + 1
	}
	return 0
}

// silentStore is a Store with configurations that tells nobody about
// changes (as a database without Redis).
type silentStore struct {
	core.Store
	core.ConfigStore
}

// A resubscription makes every watched service be read from the store,
// even one this process's L1 no longer holds (so revalidating L1 cannot
// find it).
func TestResyncReloadsWatchedServices(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	clock := fakeclock.New(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) // never advanced: no freshness reload
	r, err := New(WithStore(silentStore{mem, mem}), WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	ch, err := r.Watch(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if e := <-ch; string(e.Config) != `{"n":1}` {
		t.Fatalf("first event %+v", e)
	}
	if _, _, err := mem.SetConfig(ctx, "db_svc", []byte(`{"n":2}`), clock.Now(), 20); err != nil {
		t.Fatal(err)
	}
	if e := r.l1.get("db_svc"); e != nil {
		r.l1.remove(e) // evicted, say
	}
	select {
	case e := <-ch:
		t.Fatalf("event before the resync: %+v", e)
	case <-time.After(50 * time.Millisecond):
	}
	r.resync()
	select {
	case e := <-ch:
		if e.Kind != EventConfigChanged || string(e.Config) != `{"n":2}` {
			t.Fatalf("after the resync: %+v", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the resync did not reach the watcher")
	}
}

// An instance the hub adds from an entry L1 has already replaced takes the
// status Get shows, not the one that entry's view was built with (which it
// then kept for good: its registration did not change after).
func TestHubTakesCurrentStatusesFromAReplacedEntry(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	ga, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	e1 := r.l1.get("db_svc")
	h := idleHub(t, r, "db_svc")
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	e2 := r.l1.get("db_svc")
	if e2 == e1 || e2.rev <= e1.rev {
		t.Fatalf("no newer entry: %d %d", e1.rev, e2.rev)
	}
	check(r, clock, "db_svc", ga.id, core.StatusHealthy) // rebuilds e2's view only
	h.process(e1)                                        // a refresh that read e1 before e2 was installed
	h.process(e2)
	svc, err := r.Get(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.last.insts[ga.id].Status, svc.Instance(ga.id).Status; got != want {
		t.Fatalf("the hub holds %v for %s after processing the current entry; Get shows %v", got, ga.id, want)
	}
}

// A Watch starts with the current state: a health change that happens
// before its hub's first load is not handed over ahead of the instance's
// addition (which carries the status Get shows). It was, and a reader's
// first event was a health change of an instance it had not been told of.
func TestWatchStartsWithTheCurrentStateDespiteAnEarlierHealthChange(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	g, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	// A hub whose first load has not run yet, with a watcher.
	h := idleHub(t, r, "db_svc")
	w := newWatcher()
	if !h.addWatcher(w) {
		t.Fatal("addWatcher refused")
	}
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	h.process(held(t, r, "db_svc")) // the first load
	if got, want := pending(w), "instance_added:"+g.id; !strings.HasPrefix(got, want) || strings.Contains(got, " ") {
		t.Fatalf("the watcher's events: %q; want only the addition of %s", got, g.id)
	}
	if ev := w.q.Front().Value.(Event); ev.Instance.Status != StatusHealthy {
		t.Fatalf("the addition shows %v; want %v, what Get shows", ev.Instance.Status, StatusHealthy)
	}
}

// An instance's first event is its addition: a health change of an
// instance the hub has not added yet (L1 already holds it, the hub has not
// processed that snapshot) is not handed over ahead of the addition, which
// carries the status Get shows.
func TestWatchHealthChangeOfAnInstanceNotYetAddedComesWithItsAddition(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	h := idleHub(t, r, "db_svc")
	h.process(held(t, r, "db_svc"))
	w := newWatcher()
	if !h.addWatcher(w) {
		t.Fatal("addWatcher refused")
	}
	w.q.Init() // the reader has the current state
	clear(w.byKey)
	gb, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	check(r, clock, "db_svc", gb.id, core.StatusHealthy) // before the hub processed the new snapshot
	h.process(held(t, r, "db_svc"))
	if got, want := pending(w), "instance_added:"+gb.id; !strings.HasPrefix(got, want) || strings.Contains(got, " ") {
		t.Fatalf("the watcher's events: %q; want only the addition of %s", got, gb.id)
	}
	if ev := w.q.Front().Value.(Event); ev.Instance.Status != StatusHealthy {
		t.Fatalf("the addition shows %v; want %v, what Get shows", ev.Instance.Status, StatusHealthy)
	}
}

// idleHub installs a hub of a service whose goroutine does not run: the
// test calls its methods in the order it wants.
func idleHub(t testing.TB, r *Registry, name string) *hub {
	h := newHub(r, name)
	h.ctx, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(h.cancel)
	r.hubs.Store(name, h)
	r.hooked.Add(1)
	return h
}

// queued waits until the pending events of the only watcher of service
// (pending's rendering) are want.
func queued(t *testing.T, r *Registry, service, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := "no watcher"
		if h := r.hubIfAny(service); h != nil {
			h.mu.Lock()
			for w := range h.watchers {
				w.mu.Lock()
				got = pending(w)
				w.mu.Unlock()
			}
			h.mu.Unlock()
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %q; want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// A health change that undoes one still pending, after the reader took an
// update that carried the status of the one it undoes: the reader ends
// with the status Get shows. The two coalesced as a change back to the
// status the reader had when the first was queued, and went; the reader
// kept the update's status for good.
func TestWatchHealthBackAfterAnUpdateCarriedItIsTold(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	ga, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	w.next()
	check(r, clock, "db_svc", ga.id, core.StatusHealthy)
	if e := w.next(); e.Kind != EventHealthChanged || e.Instance.Status != StatusHealthy {
		t.Fatalf("want a health event to healthy, got %+v", e)
	}
	// b's addition is handed over (the reader is not reading); a's update,
	// c's addition and a's change to unhealthy queue behind it.
	gb, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		h := r.hubIfAny("db_svc")
		h.mu.Lock()
		_, ok := h.last.insts[gb.id]
		h.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hub did not take b's registration within 5 s")
		}
	}
	queued(t, r, "db_svc", "")
	if err := ga.SetWeight(ctx, 7); err != nil {
		t.Fatal(err)
	}
	queued(t, r, "db_svc", "instance_updated:10.0.0.1:1@3(w7)")
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.3", Port: 1}); err != nil {
		t.Fatal(err)
	}
	queued(t, r, "db_svc", "instance_updated:10.0.0.1:1@3(w7) instance_added:10.0.0.3:1@4(w100)")
	for range 3 {
		check(r, clock, "db_svc", ga.id, core.StatusUnhealthy) // into the pending update too
	}
	queued(t, r, "db_svc", "instance_updated:10.0.0.1:1@3(w7) instance_added:10.0.0.3:1@4(w100) health_changed:10.0.0.1:1@4(healthy->unhealthy)")
	if e := w.next(); e.Instance.ID != gb.id {
		t.Fatalf("want b's addition, got %+v", e)
	}
	if e := w.next(); e.Kind != EventInstanceUpdated || e.Instance.Status != StatusUnhealthy {
		t.Fatalf("want a's update showing unhealthy, got %+v", e)
	}
	// c's addition is being handed over; a's change to unhealthy is still
	// queued, and this undoes it.
	queued(t, r, "db_svc", "health_changed:10.0.0.1:1@4(healthy->unhealthy)")
	for range 2 {
		check(r, clock, "db_svc", ga.id, core.StatusHealthy)
	}
	w.endsWithGet(r, "db_svc", ga.id)
}

// Random changes pushed to a watcher whose reader takes events at random
// times: the reader never hears of an instance it has as added, nor of one
// it lacks as updated, removed or changing health; a health change starts
// from the status the reader has; and the reader ends with the current
// state of every instance.
func TestWatchCoalescingKeepsTheReaderCurrent(t *testing.T) {
	type state struct {
		weight int
		status Status
	}
	for seed := uint64(0); seed < 5000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		truth, reader := map[string]state{}, map[string]state{}
		w := newWatcher()
		var rev int64
		var trace []string
		take := func() { // as run does
			el := w.q.Front()
			if el == nil {
				return
			}
			e := w.q.Remove(el).(Event)
			delete(w.byKey, keyOf(&e))
			if !w.tell(&e) {
				return
			}
			id := e.Instance.ID
			trace = append(trace, "take "+e.Kind.String()+" "+id)
			cur, has := reader[id]
			switch {
			case e.Kind == EventInstanceAdded && has, e.Kind != EventInstanceAdded && !has:
				t.Fatalf("seed %d: %s of %s, which the reader has: %v; after %q", seed, e.Kind, id, has, trace)
			case e.Kind == EventHealthChanged && e.Previous != cur.status:
				t.Fatalf("seed %d: health change of %s from %v; the reader has %v; after %q", seed, id, e.Previous, cur.status, trace)
			}
			switch e.Kind {
			case EventInstanceRemoved:
				delete(reader, id)
			case EventHealthChanged:
				cur.status = e.Instance.Status
				reader[id] = cur
			default:
				reader[id] = state{e.Instance.Weight, e.Instance.Status}
			}
		}
		for range 30 {
			if rng.IntN(3) == 0 {
				take()
				continue
			}
			id := string(rune('a' + rng.IntN(3)))
			cur, has := truth[id]
			next := state{1 + rng.IntN(3), Status(rng.IntN(3))}
			rev++
			e := Event{Revision: rev, Instance: Instance{ID: id}}
			switch {
			case !has:
				e.Kind, truth[id] = EventInstanceAdded, next
			case rng.IntN(3) == 0:
				e.Kind, next = EventInstanceRemoved, cur
				delete(truth, id)
			case rng.IntN(2) == 0 && next.weight != cur.weight:
				next.status = cur.status
				e.Kind, truth[id] = EventInstanceUpdated, next
			case next.status != cur.status:
				next.weight = cur.weight
				e.Kind, e.Previous, truth[id] = EventHealthChanged, cur.status, next
			default:
				continue
			}
			e.Instance.Weight, e.Instance.Status = next.weight, next.status
			trace = append(trace, "push "+e.Kind.String()+" "+id)
			w.push(e)
		}
		for w.q.Len() > 0 {
			take()
		}
		if !maps.Equal(truth, reader) {
			t.Fatalf("seed %d: the reader ends with %v; the instances are %v; after %q", seed, reader, truth, trace)
		}
	}
}

// withOtherProcess returns a Registry on a memory store and its clock, and
// another Registry (another process) on the same store and clock.
func withOtherProcess(t *testing.T) (*Registry, *fakeclock.Clock, *Registry) {
	t.Helper()
	store := memory.New()
	r, clock := fakeRegistry(t, WithStore(store))
	other, err := New(WithStore(store), WithClock(clock), WithCloseDrain(0), WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	return r, clock, other
}

// A health event carries the instance watchers were told of, though L1 let
// its service go meanwhile (evicted by others; the hub keeps it): it
// carried an instance with nothing but its service, ID and status (no
// host, port or weight), which a reader that takes an event's instance as
// the instance's new state kept until its next update.
func TestWatchHealthEventOfAServiceL1LetGoCarriesTheInstance(t *testing.T) {
	ctx := context.Background()
	r, clock, other := withOtherProcess(t)
	g, err := other.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: 5})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	if e := w.next(); e.Kind != EventInstanceAdded || e.Instance.Host != "10.0.0.1" {
		t.Fatalf("first event %+v", e)
	}
	r.l1.remove(held(t, r, "db_svc")) // as an eviction does
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	e := w.next()
	if e.Kind != EventHealthChanged || e.Instance.Status != StatusHealthy {
		t.Fatalf("after a passing check: %+v; want health_changed to healthy", e)
	}
	if in := e.Instance; in.ID != g.id || in.Host != "10.0.0.1" || in.Port != 1 || in.Weight != 5 {
		t.Fatalf("the health event carries %+v; want the instance as registered", in)
	}
}

// A passing check of a draining instance whose service L1 let go (the hub
// keeps it) tells watchers nothing: Get shows it draining whatever its
// health. Without L1's entry, the change's own view of the instance knew
// nothing of its draining: watchers were told "healthy", then, at the
// hub's next snapshot, an update back to draining that updated nothing.
func TestWatchHealthOfADrainingInstanceL1LetGoTellsNothing(t *testing.T) {
	ctx := context.Background()
	r, clock, other := withOtherProcess(t)
	g, err := other.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Status: StatusDraining})
	if err != nil {
		t.Fatal(err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	if e := w.next(); e.Kind != EventInstanceAdded || e.Instance.Status != StatusDraining {
		t.Fatalf("first event %+v; want the addition of a draining instance", e)
	}
	r.l1.remove(held(t, r, "db_svc")) // as an eviction does
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	w.endsWithGet(r, "db_svc", g.id)
	if got, want := fmt.Sprintf("%q", w.seen), `["instance_added 10.0.0.1:1 draining" "instance_added 10.9.9.9:9 unknown"]`; got != want {
		t.Fatalf("events %s; want %s", got, want)
	}
}

// An instance deregistered and registered again with the same registration,
// both between two snapshots the hub takes (a quick restart), lost its
// health here (L1 took the snapshot without it, which dropped its state)
// and shows its stored status again. The hub kept the status its watchers
// were told for an unchanged registration, waiting for a health event that
// no change of status sends: the reader kept "healthy" while Get showed
// "unknown", until a check moved it.
func TestWatchReRegistrationThatResetHealthIsTold(t *testing.T) {
	ctx := context.Background()
	r, clock := fakeRegistry(t)
	h := idleHub(t, r, "db_svc")
	w := newWatcher()
	h.addWatcher(w)
	reader := map[string]Status{}
	take := func() { // as run does
		for el := w.q.Front(); el != nil; el = w.q.Front() {
			e := w.q.Remove(el).(Event)
			delete(w.byKey, keyOf(&e))
			if !w.tell(&e) {
				continue
			}
			if e.Kind == EventInstanceRemoved {
				delete(reader, e.Instance.ID)
			} else {
				reader[e.Instance.ID] = e.Instance.Status
			}
		}
	}
	in := Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}
	g, err := r.Register(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	h.process(held(t, r, "db_svc"))
	check(r, clock, "db_svc", g.id, core.StatusHealthy)
	take()
	if reader[g.id] != StatusHealthy {
		t.Fatalf("the reader has %v; want healthy", reader)
	}
	// The restart, which the hub does not see: L1 takes the snapshot
	// without the instance (its state goes), then the one with it again.
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err == nil {
		t.Fatal("Get finds the deregistered instance")
	}
	if _, err := r.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	h.process(held(t, r, "db_svc"))
	take()
	svc, err := r.Get(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if want := svc.Instance(g.id).Status; reader[g.id] != want {
		t.Fatalf("the reader ends with %v; Get shows %v", reader[g.id], want)
	}
}

// A Watch opened while the database is out starts from the state Get
// shows (the snapshot L1 serves stale, stale-if-error), as Watch promises:
// its hub's first load failed, and it handed its watchers nothing at all
// until the database answered again, while Get answered all along.
func TestWatchOpenedInAnOutageStartsFromWhatGetShows(t *testing.T) {
	ctx := context.Background()
	store := &downStore{Store: memory.New()}
	r, clock := fakeRegistry(t, WithStore(store))
	if _, err := store.Register(ctx, &core.Instance{Service: "db_svc", ID: "10.0.0.1:1", Host: "10.0.0.1", Port: 1, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute) // past the freshness window, within stale-if-error
	store.down.Store(true)
	res, err := r.Lookup(ctx, "db_svc")
	if err != nil || !res.Stale || res.Service.Instance("10.0.0.1:1") == nil {
		t.Fatalf("Lookup in the outage = %+v, %v; want the stale snapshot", res, err)
	}
	w := newWatchReader(t, r, ctx, "db_svc")
	if e := w.next(); e.Kind != EventInstanceAdded || e.Instance.ID != "10.0.0.1:1" {
		t.Fatalf("first event %v %s; want the addition of what Get shows", e.Kind, e.Instance.ID)
	}
	// Once the database answers again, the watch goes on from there.
	store.down.Store(false)
	if _, err := store.Register(ctx, &core.Instance{Service: "db_svc", ID: "10.0.0.2:2", Host: "10.0.0.2", Port: 2, Weight: 100,
		RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r.resync() // as a (re)subscription does; the hub's retry timer would too
	if e := w.next(); e.Kind != EventInstanceAdded || e.Instance.ID != "10.0.0.2:2" {
		t.Fatalf("after the outage: %v %s; want the addition made meanwhile", e.Kind, e.Instance.ID)
	}
}
