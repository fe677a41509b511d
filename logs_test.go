package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// observed returns a logger that records everything at Debug and above.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// count returns how many entries have message msg and every field in fields
// (as strings).
func count(logs *observer.ObservedLogs, msg string, fields map[string]string) int {
	n := 0
	for _, e := range logs.FilterMessage(msg).All() {
		m := e.ContextMap()
		ok := true
		for k, v := range fields {
			if got, has := m[k]; !has || toString(got) != v {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case interface{ String() string }:
		return x.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// requireOnce fails unless exactly one entry matches.
func requireOnce(t *testing.T, logs *observer.ObservedLogs, msg string, fields map[string]string) {
	t.Helper()
	if n := count(logs, msg, fields); n != 1 {
		var all []string
		for _, e := range logs.All() {
			all = append(all, e.Message)
		}
		t.Fatalf("%q %v logged %d times; want once. Log:\n%s", msg, fields, n, strings.Join(all, "\n"))
	}
}

// Each state change of an instance is logged once, with its fields, however
// many checks and lookups happen around it; lookups log nothing.
func TestLogsInstanceTransitionsOnce(t *testing.T) {
	log, logs := observed()
	p := newProbeServer(t, "")
	p.set(mode500)
	r, clock, id := oneInstance(t, p, discovery.WithLogger(log))
	for range 5 { // 3 failures make it unhealthy; 2 more change nothing
		nextCheck(t, r, clock, p)
	}
	requireOnce(t, logs, "discovery: instance health changed", map[string]string{"service": "web", "instance": id, "from": "unknown", "to": "unhealthy"})
	p.set(modeOK)
	for range 4 {
		nextCheck(t, r, clock, p)
	}
	requireOnce(t, logs, "discovery: instance health changed", map[string]string{"service": "web", "instance": id, "from": "unhealthy", "to": "healthy"})
	if n := logs.FilterMessage("discovery: instance health changed").Len(); n != 2 {
		t.Fatalf("%d health changes logged; want 2", n)
	}
	before := logs.Len()
	for range 100 {
		if _, err := r.Get(context.Background(), "web"); err != nil {
			t.Fatal(err)
		}
	}
	if logs.Len() != before {
		t.Fatalf("lookups logged: %v", logs.All()[before:])
	}
}

func TestLogsEjectionOnce(t *testing.T) {
	log, logs := observed()
	r, _, ids := ejectWorld(t, 10, discovery.WithLogger(log))
	report(t, r, ids[0], errCall, 12) // ejected at the 5th; failures while ejected change nothing
	requireOnce(t, logs, "discovery: instance ejected", map[string]string{"service": "db_svc", "instance": ids[0], "times": "1"})
}

func TestLogsDatabaseLostAndBackOnce(t *testing.T) {
	ctx := context.Background()
	log, logs := observed()
	clock := discoverytest.NewClock(t0)
	b := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, b, discovery.WithClock(clock), discovery.WithLogger(log), discovery.WithoutHealthChecks(),
		discovery.WithLeaseTTL(time.Hour))
	t.Cleanup(func() { b.SetFailure(nil) }) // before Close deregisters
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	b.SetFailure(errors.New("connection refused"))
	for range 5 {
		clock.Advance(2 * discovery.DefaultFresh)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatalf("Get while the database is down: %v (want stale data)", err)
		}
	}
	// The failure is met, and logged, by a refresh in the background.
	waitFor(t, 5*time.Second, "the database's loss logged", func() bool {
		return count(logs, "discovery: database lost; serving cached data", nil) > 0
	})
	requireOnce(t, logs, "discovery: database lost; serving cached data", nil)
	b.SetFailure(nil)
	// While the database is known to be down a lookup serves stale data at
	// once and refreshes in the background: that refresh finds it back.
	deadline := time.Now().Add(5 * time.Second)
	for count(logs, "discovery: database back", nil) == 0 && time.Now().Before(deadline) {
		clock.Advance(2 * discovery.DefaultFresh)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 3 {
		clock.Advance(2 * discovery.DefaultFresh)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	requireOnce(t, logs, "discovery: database back", nil)
}

func TestLogsRedisLostAndBackOnce(t *testing.T) {
	ctx := context.Background()
	log, logs := observed()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	addr, db, _ := testutil.RedisAddr(t)
	proxy := testutil.NewProxy(t, addr)
	rdb := testutil.RedisClient(t, proxy.Addr(), db, ns)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithRedis(rdb), discovery.WithNamespace(ns),
		discovery.WithCacheFreshness(time.Millisecond, 0, time.Minute), discovery.WithoutHealthChecks(), discovery.WithLogger(log))
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	proxy.Down()
	for range 5 {
		time.Sleep(2 * time.Millisecond) // past the freshness window: to L2
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "redis lost logged", func() bool {
		return logs.FilterMessage("discovery: redis lost; serving from memory and the database").Len() > 0
	})
	proxy.Up()
	waitFor(t, 5*time.Second, "redis back logged", func() bool { return logs.FilterMessage("discovery: redis back").Len() > 0 })
	for range 5 {
		time.Sleep(2 * time.Millisecond)
		if _, err := r.Get(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	requireOnce(t, logs, "discovery: redis lost; serving from memory and the database", nil)
	requireOnce(t, logs, "discovery: redis back", nil)
}

func TestLogsConfigChangeOnce(t *testing.T) {
	log, logs := observed()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithLogger(log), discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	rep, err := r.UpdateConfig(context.Background(), "web", json.RawMessage(`{"workers":8}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateConfig(context.Background(), "web", json.RawMessage(`{"workers":`)); err == nil {
		t.Fatal("a malformed config was stored")
	}
	requireOnce(t, logs, "discovery: config changed", map[string]string{"service": "web", "config_revision": toString(rep.ConfigRevision)})
	if n := logs.FilterMessage("discovery: config changed").Len(); n != 1 {
		t.Fatalf("%d config changes logged; want 1", n)
	}
}

// "database back" says how long this outage lasted: from the last call that
// answered before it. An outage soon after another is joined to it for the
// leases it holds, but the log counted the earlier one, and the time the
// database was back in between, as down too.
func TestLogsDatabaseBackSaysHowLongThisOutageLasted(t *testing.T) {
	log, logs := observed()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithLogger(log),
		discovery.WithoutHealthChecks())
	discovery.NoteStore(r, nil)
	for i, lost := range []time.Duration{3 * time.Second, 2 * time.Second} {
		clock.Advance(time.Second) // the database answers, then fails
		discovery.NoteStore(r, discovery.ErrUnavailable)
		clock.Advance(lost - time.Second)
		discovery.NoteStore(r, nil)
		backs := logs.FilterMessage("discovery: database back").All()
		if len(backs) != i+1 {
			t.Fatalf("%d \"database back\" logged after outage %d; want %d", len(backs), i+1, i+1)
		}
		if got := backs[i].ContextMap()["down"]; got != lost {
			t.Errorf("outage %d: database back after down=%v; want %v", i+1, got, lost)
		}
	}
}
