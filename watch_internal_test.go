package discovery

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
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
		{"configurations coalesce to the latest",
			[]Event{cfg(1, `{"n":1}`), ev(EventInstanceAdded, "a", 2, 1), cfg(3, `{"n":3}`)},
			`instance_added:a@2(w1) config_changed:{"n":3}@3`},
		{"revisions never go back",
			[]Event{ev(EventInstanceAdded, "a", 5, 1), healthEv("b", 3, StatusUnknown, StatusHealthy)},
			"instance_added:a@5(w1) health_changed:b@5(unknown->healthy)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &watcher{out: make(chan Event), sig: make(chan struct{}, 1), q: list.New(), byKey: map[watchKey]*list.Element{}}
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

// Health changes reported by the health monitor reach watchers, after the
// instance's addition and with the snapshot's revision.
func TestHealthEventsReachWatchers(t *testing.T) {
	ctx := context.Background()
	r, err := New(WithStore(memory.New()), WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.Watch(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	first := <-ch
	if first.Kind != EventInstanceAdded {
		t.Fatalf("first event %v", first.Kind)
	}
	r.healthChanged(r.state("db_svc"), g.Instance(), StatusUnknown, StatusUnhealthy)
	select {
	case e := <-ch:
		if e.Kind != EventHealthChanged || e.Previous != StatusUnknown || e.Instance.Status != StatusUnhealthy ||
			e.Instance.ID != "10.0.0.1:1" || e.Revision != first.Revision {
			t.Fatalf("health event %+v", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no health event")
	}
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
