package discovery

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

// largeConfig is a configuration of about size bytes.
func largeConfig(size int) json.RawMessage {
	return json.RawMessage(`{"blob":"` + strings.Repeat("x", size-12) + `"}`)
}

// watchedLargeConfig returns a hub of db_svc (idle: the test calls process)
// with n watchers that nobody reads, the entry L1 holds of db_svc with a
// configuration of size bytes, and the configuration.
func watchedLargeConfig(tb testing.TB, n, size int) (*hub, *entry, json.RawMessage) {
	r, _ := fakeRegistry(tb)
	doc := largeConfig(size)
	if _, err := r.UpdateConfig(context.Background(), "db_svc", doc); err != nil {
		tb.Fatal(err)
	}
	h := idleHub(tb, r, "db_svc")
	for range n {
		h.watchers[newWatcher()] = struct{}{}
	}
	if _, _, err := r.Config(context.Background(), "db_svc"); err != nil { // into L1
		tb.Fatal(err)
	}
	e := r.l1.get("db_svc")
	if e == nil {
		tb.Fatal("L1 does not hold db_svc")
	}
	return h, e, doc
}

// A configuration change is handed to a service's watchers without a copy
// of the configuration per watcher made under the hub's lock (and the
// service's viewMu), which change messages, health changes and new Watches
// of the service wait for: 100 watchers of a 500 KiB configuration had
// 50 MB copied under it. Measured in bytes allocated, not in time.
func TestWatchersShareAConfigurationUnderTheLock(t *testing.T) {
	const watchers, size = 100, 500 << 10
	h, e, _ := watchedLargeConfig(t, watchers, size)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h.process(e)
	runtime.ReadMemStats(&after)
	copied := after.TotalAlloc - before.TotalAlloc
	t.Logf("process with %d watchers of a %d-byte configuration allocated %d bytes", watchers, size, copied)
	if copied > 4*size {
		t.Fatalf("process allocated %d bytes for %d watchers of a %d-byte configuration (%.0f copies) under the hub's lock; want at most 4 copies",
			copied, watchers, size, float64(copied)/size)
	}
	for w := range h.watchers {
		if w.q.Len() != 1 || w.q.Front().Value.(Event).Kind != EventConfigChanged {
			t.Fatalf("a watcher has %s pending; want the configuration", pending(w))
		}
	}
}

// Each reader is handed its own copy of the configuration: one that
// changes the bytes it was given changes no other reader's, nor what
// Config and later events give.
func TestWatchReadersGetTheirOwnConfiguration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := fakeRegistry(t)
	doc := largeConfig(1 << 10)
	if _, err := r.UpdateConfig(ctx, "db_svc", doc); err != nil {
		t.Fatal(err)
	}
	var got []json.RawMessage // what each reader was handed
	for range 3 {
		ch, err := r.Watch(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			if ev.Kind != EventConfigChanged {
				t.Fatalf("first event %v; want the configuration", ev.Kind)
			}
			if string(ev.Config) != string(doc) {
				t.Fatalf("reader %d was handed %.40s...; want the stored configuration (another reader changed it)", len(got), ev.Config)
			}
			got = append(got, ev.Config)
			for i := range ev.Config {
				ev.Config[i] = '!' // this reader scribbles on what it was given
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no configuration event")
		}
	}
	if cfg, _, err := r.Config(ctx, "db_svc"); err != nil || string(cfg) != string(doc) {
		t.Fatalf("Config after readers changed their events' bytes = %.40s..., %v; want the stored one", cfg, err)
	}
}

// BenchmarkHubProcessLargeConfig measures what a configuration change
// costs under the hub's lock: process hands it to 100 watchers.
func BenchmarkHubProcessLargeConfig(b *testing.B) {
	h, e, _ := watchedLargeConfig(b, 100, 500<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.loaded, h.last = false, snapshot{} // the first snapshot again: the configuration is new to every watcher
		h.process(e)
	}
}
