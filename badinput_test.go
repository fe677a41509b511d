package discovery_test

// Bad input found by an audit of the exported API: each test failed on
// 3da7daf (a panic, a hang, an untyped error, or input silently accepted
// with a surprising effect).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// noPanic runs fn and turns a panic into a test error.
func noPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", what, p)
		}
	}()
	fn()
}

func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	var ve *discovery.ValidationError
	if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) {
		t.Errorf("%s = %v (%T); want a *ValidationError matching ErrInvalid", what, err, err)
	}
}

// A typed-nil Store, Clock or Registerer panicked in New; now each is an
// option error.
func TestTypedNilOptionsAreInvalid(t *testing.T) {
	for name, opt := range map[string]discovery.Option{
		"WithStore":   discovery.WithStore((*discoverytest.Backend)(nil)),
		"WithClock":   discovery.WithClock((*discoverytest.Clock)(nil)),
		"WithMetrics": discovery.WithMetrics((*prometheus.Registry)(nil)),
	} {
		noPanic(t, "New("+name+"(typed nil))", func() {
			r, err := discovery.New(opt, discovery.WithoutHealthChecks())
			if r != nil {
				r.Close()
			}
			wantInvalid(t, "New("+name+"(typed nil))", err)
		})
	}
}

// WithCacheSize had no upper bound: MaxInt gave ristretto's untyped error,
// and a billion ran New out of memory (fatal; not run here). Now both are
// A zero gorm.DB or go-redis client (made with & instead of its package's
// constructor) panicked deep in New, and left New's goroutines (ristretto's,
// the coarse clock's) running. Each is an option error now.
func TestZeroDatabaseAndRedisClientsAreInvalid(t *testing.T) {
	store := discovery.WithStore(discoverytest.NewBackend())
	for name, opts := range map[string][]discovery.Option{
		"WithDB(&gorm.DB{})":                {discovery.WithDB(&gorm.DB{})},
		"WithRedis(&redis.Client{})":        {store, discovery.WithRedis(&redis.Client{})},
		"WithRedis(&redis.ClusterClient{})": {store, discovery.WithRedis(&redis.ClusterClient{})},
		"WithRedis(&redis.Ring{})":          {store, discovery.WithRedis(&redis.Ring{})},
	} {
		noPanic(t, "New("+name+")", func() {
			r, err := discovery.New(append(opts, discovery.WithoutHealthChecks())...)
			if r != nil {
				r.Close()
			}
			wantInvalid(t, "New("+name+")", err)
		})
	}
}

// refused by the bound.
func TestCacheSizeIsBounded(t *testing.T) {
	r, err := discovery.New(discovery.WithCacheSize(math.MaxInt), discovery.WithoutHealthChecks())
	if r != nil {
		r.Close()
	}
	wantInvalid(t, "New(WithCacheSize(MaxInt))", err)
}

// A lease TTL whose double overflowed was blamed on WithReaper "2m0s".
func TestHugeLeaseTTLNamesItsOption(t *testing.T) {
	_, err := discovery.New(discovery.WithLeaseTTL(200*365*24*time.Hour), discovery.WithoutHealthChecks())
	var ve *discovery.ValidationError
	if !errors.As(err, &ve) || ve.Field != "option WithLeaseTTL" {
		t.Errorf("New(WithLeaseTTL(200y)) = %v; want a ValidationError on WithLeaseTTL", err)
	}
}

// A health interval that overflowed now+interval was accepted and probed
// in a tight loop, and Close then hung. Now it is refused.
func TestHugeHealthIntervalIsRefused(t *testing.T) {
	r, err := discovery.New(discovery.WithHealthCheck(math.MaxInt64, time.Second), discovery.WithCloseDrain(0))
	if err == nil {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		var accepts atomic.Int64
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepts.Add(1)
				c.Close()
			}
		}()
		ctx := context.Background()
		_, _ = r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Check: discovery.CheckTCP})
		_, _ = r.Get(ctx, "db_svc")
		time.Sleep(500 * time.Millisecond)
		t.Errorf("New(WithHealthCheck(MaxInt64, 1s)) accepted; %d TCP checks in 0.5 s", accepts.Load())
		done := make(chan struct{})
		go func() { r.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("Close did not return within 3 s")
		}
		return
	}
	wantInvalid(t, "New(WithHealthCheck(MaxInt64, 1s))", err)
}

// Update(nil) panicked; now it is a ValidationError.
func TestUpdateWithNilFuncIsInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	noPanic(t, "Update(ctx, nil)", func() { wantInvalid(t, "Update(ctx, nil)", g.Update(context.Background(), nil)) })
}

// An Update callback that read its Registration deadlocked it (and Close).
func TestUpdateCallbackMayReadItsRegistration(t *testing.T) {
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	done := make(chan error, 1)
	go func() {
		done <- g.Update(context.Background(), func(in *discovery.Instance) { _ = g.Instance() })
	}()
	select {
	case <-done:
		r.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("Update whose callback calls g.Instance() did not return (self-deadlock on g.mu); Registry.Close would hang too")
	}
}

// Update turned a router instance with a WithConfigFunc into an HTTP one,
// which Register refuses; now Update refuses it too.
func TestUpdateKeepsRegisterOptionRules(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	g, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(func(context.Context, json.RawMessage) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	err = g.Update(ctx, func(in *discovery.Instance) { in.Method = discovery.MethodHTTP })
	wantInvalid(t, "Update(router -> http) with a WithConfigFunc", err)
	if m := g.Instance().Method; m != discovery.MethodRouter {
		t.Errorf("method after refused Update = %v; want router (nothing changed)", m)
	}
}

// A Registration replaced by a re-registration of the same instance still
// wrote: it overwrote and deregistered the new one's instance. Now it is
// closed.
func TestReplacedRegistrationIsClosed(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	g1 := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Zone: "new"})
	if err := g1.SetWeight(ctx, 7); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("replaced g1.SetWeight = %v; want ErrClosed", err)
	}
	_ = g1.Deregister(ctx)
	svc, err := r.Store().Load(ctx, "db_svc")
	if err != nil || len(svc.Instances) != 1 || svc.Instances[0].Zone != "new" || svc.Instances[0].Weight != discovery.DefaultWeight {
		t.Errorf("after the replaced handle wrote: %+v, %v; want the new registration untouched", svc, err)
	}
}

// Selection.Done twice drove the in-flight count negative, and that
// instance then won every least_connections pick for good.
func TestDoneTwiceDoesNotSkew(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithStrategy(discovery.StrategyLeastConnections))
	ctx := context.Background()
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	mustRegister(t, r, inst("db_svc", "10.0.0.2", 1))
	s, _ := r.Pick(ctx, "db_svc")
	s.Done(nil)
	s.Done(nil)
	m := map[string]int{}
	for range 200 {
		s, err := r.Pick(ctx, "db_svc")
		if err != nil {
			t.Fatal(err)
		}
		m[s.Instance.ID]++
		s.Done(nil)
	}
	if len(m) != 2 {
		t.Errorf("after one Selection.Done twice, 200 picks went %v; want both instances", m)
	}
}

// consistent_hash without a HashKey sent every pick to one instance; now
// it picks as p2c_ewma.
func TestConsistentHashWithoutKeySpreads(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	for i := range 5 {
		mustRegister(t, r, inst("db_svc", "10.0.0.1", 1+i))
	}
	m := map[string]int{}
	for range 200 {
		s, err := r.Pick(ctx, "db_svc", discovery.UseStrategy(discovery.StrategyConsistentHash))
		if err != nil {
			t.Fatalf("Pick(UseStrategy(consistent_hash)) without HashKey = %v; want a p2c pick", err)
		}
		m[s.Instance.ID]++
		s.Done(nil)
	}
	if len(m) < 5 {
		t.Errorf("consistent_hash without HashKey: %v; want the picks spread over all 5 instances", m)
	}
}

// RetryBudget(NaN, NaN) switched the retry budget off; now NaN keeps the
// default.
func TestRetryBudgetIgnoresNaN(t *testing.T) {
	var hits atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); w.WriteHeader(500) })
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithOutlierEjection(0, 0, 0, 0))
	for range 2 {
		s := httptest.NewServer(h)
		defer s.Close()
		mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "127.0.0.1", Port: s.Listener.Addr().(*net.TCPAddr).Port})
	}
	c := r.HTTPClient(discovery.RetryBudget(math.NaN(), math.NaN()))
	for range 200 {
		if resp, err := c.Get("http://db_svc/x"); err == nil {
			resp.Body.Close()
		}
	}
	if retries := hits.Load() - 200; retries > 60 {
		t.Errorf("RetryBudget(NaN, NaN): %d retries for 200 failing requests; the budget (20%% + 10/s) allows ~50", retries)
	}
}

// UpdateConfig stored a balancer strategy that selection then ignored
// (every pick stayed on the default, without a word); now it is refused.
func TestConfigBalancerStrategyIsValidated(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	// A "balancer" that names no strategy (a misspelt key, say) is one
	// selection ignores: stored, every pick stayed on the default without
	// a word.
	for _, doc := range []string{`{"balancer":{"strategy":"bogus"}}`, `{"balancer":{"strategy":7}}`, `{"balancer":"p2c_ewma"}`,
		`{"balancer":{}}`, `{"balancer":{"stratgy":"round_robin"}}`, `{"balancer":{"strategy":""}}`, `{"balancer":{"strategy":null}}`} {
		_, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(doc))
		var ce *discovery.ConfigError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ce) {
			t.Errorf("UpdateConfig(%s) = %v; want a ConfigError matching ErrInvalid", doc, err)
		}
	}
	if _, err := r.ConfigHistory(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("ConfigHistory after refused documents = %v; want nothing stored", err)
	}
	if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"balancer":{"strategy":"round_robin"},"x":1}`)); err != nil {
		t.Errorf("UpdateConfig with a valid strategy = %v", err)
	}
	if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"balancer":null,"x":1}`)); err != nil {
		t.Errorf("UpdateConfig with a null balancer = %v", err)
	}
}

// A registration with WithConfigFunc joins its service's hub in a goroutine
// of its own. If the hub's last watcher left just then, the hub refused it
// and the registration went without deliveries for good: an UpdateConfig
// without a deadline then waited forever (found in the code by an audit).
// Here watchers come and go while instances register; every callback must
// get the configuration.
func TestConfigFuncJoinsWhileWatchersLeave(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	const n = 40
	var got atomic.Int64
	for i := range n {
		wctx, cancel := context.WithCancel(ctx)
		if _, err := r.Watch(wctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); cancel() }()
		_, err := r.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1 + i, Method: discovery.MethodRouter},
			discovery.WithConfigFunc(func(context.Context, json.RawMessage) error { got.Add(1); return nil }))
		if err != nil {
			t.Fatal(err)
		}
		<-done
	}
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.UpdateConfig(uctx, "db_svc", json.RawMessage(`{"a":1}`)); err != nil {
		t.Fatalf("UpdateConfig = %v; want every instance notified", err)
	}
	if got.Load() != n {
		t.Fatalf("%d of %d callbacks got the configuration", got.Load(), n)
	}
}

// Filters that no registered instance can match (an empty tag or metadata
// key, a tag longer than registration allows) reported a service with
// nothing healthy; they are bad input.
func TestImpossibleFiltersAreInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	for name, o := range map[string]discovery.PickOption{
		`WithTag("")`: discovery.WithTag(""), `WithMeta("", "")`: discovery.WithMeta("", ""),
		"WithTag(129 bytes)": discovery.WithTag(strings.Repeat("t", 129)),
	} {
		_, err := r.Pick(context.Background(), "db_svc", o)
		wantInvalid(t, "Pick("+name+")", err)
	}
	if _, err := r.Pick(context.Background(), "db_svc", discovery.WithTag("t0")); !errors.Is(err, discovery.ErrNoHealthyInstances) {
		t.Errorf("Pick(WithTag(t0)) with no instance tagged = %v; want ErrNoHealthyInstances", err)
	}
}

// Options of one Pick that contradict each other were settled by the last
// one, silently (two strategies, keys or zones), or reported as nothing healthy (two versions, two values of
// one metadata key). They are refused; repeating one option is not.
func TestConflictingPickOptionsAreInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	in := inst("db_svc", "10.0.0.1", 1)
	in.Version, in.Zone, in.Metadata = "v1", "z1", map[string]string{"k": "a"}
	mustRegister(t, r, in)
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		opts  []discovery.PickOption
		field string
	}{
		{"two strategies", []discovery.PickOption{discovery.UseStrategy(discovery.StrategyRandom), discovery.UseStrategy(discovery.StrategyRoundRobin)}, "strategy"},
		{"two keys", []discovery.PickOption{discovery.HashKey("a"), discovery.HashKey("b")}, "hash key"},
		{"two zones", []discovery.PickOption{discovery.PreferZone("z1"), discovery.PreferZone("z2")}, "zone"},
		{"two versions", []discovery.PickOption{discovery.WithVersion("v1"), discovery.WithVersion("v2")}, "version"},
		{"two values of a key", []discovery.PickOption{discovery.WithMeta("k", "a"), discovery.WithMeta("k", "b")}, "metadata k"},
	} {
		_, err := r.Pick(ctx, "db_svc", tt.opts...)
		var ve *discovery.ValidationError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("Pick(%s) = %v; want a ValidationError on %s", tt.name, err, tt.field)
		}
	}
	for _, tt := range []struct {
		name string
		opts []discovery.PickOption
	}{
		{"one option twice", []discovery.PickOption{discovery.UseStrategy(discovery.StrategyRandom), discovery.UseStrategy(discovery.StrategyRandom),
			discovery.WithVersion("v1"), discovery.WithVersion("v1"), discovery.PreferZone("z1"), discovery.PreferZone("z1")}},
		{"a key with consistent_hash", []discovery.PickOption{discovery.HashKey("a"), discovery.UseStrategy(discovery.StrategyConsistentHash)}},
		{"a key with random, which ignores it", []discovery.PickOption{discovery.HashKey("a"), discovery.UseStrategy(discovery.StrategyRandom)}},
		{"two metadata keys", []discovery.PickOption{discovery.WithMeta("k", "a"), discovery.WithMeta("j", "b"), discovery.WithMeta("k", "a")}},
	} {
		sel, err := r.Pick(ctx, "db_svc", tt.opts...)
		if tt.name == "two metadata keys" {
			if !errors.Is(err, discovery.ErrNoHealthyInstances) { // no instance has j=b
				t.Errorf("Pick(%s) = %v; want ErrNoHealthyInstances", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Pick(%s) = %v; want the instance", tt.name, err)
			continue
		}
		sel.Done(nil)
	}
}

// A rollback to a configuration revision below 1 (none exists) answered
// ErrNotFound as if the history had lost it; a key that retires before it
// was created was accepted.
func TestImpossibleRevisionsAndKeyTimesAreInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	for _, rev := range []int64{0, -1} {
		_, err := r.RollbackConfig(ctx, "db_svc", rev)
		wantInvalid(t, fmt.Sprintf("RollbackConfig(%d)", rev), err)
	}
	created := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	key := discovery.PublicKey{ID: "k1", Algorithm: "EdDSA", Key: []byte{1, 2, 3}, CreatedAt: created, RetiresAt: created.Add(-time.Hour)}
	err := r.PublishKey(ctx, "db_svc", key)
	var ve *discovery.ValidationError
	if !errors.As(err, &ve) || ve.Field != "key retirement" {
		t.Errorf("PublishKey(retiring before its creation) = %v; want a ValidationError on the retirement", err)
	}
	if _, err := r.Keys(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("Keys after a refused PublishKey = %v; want nothing stored", err)
	}
}

// A typed-nil handler (an *http.ServeMux never made) is an ErrInvalid at
// Register, not a nil-pointer panic in the caller at the first request.
func TestTypedNilHandlerIsInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	var mux *http.ServeMux // forgot http.NewServeMux()
	_, err := r.Register(context.Background(), discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithHandler(mux))
	if err == nil {
		noPanic(t, "GET http://router_svc/ through reg.HTTPClient()", func() {
			if resp, err := r.HTTPClient().Get("http://router_svc/"); err == nil {
				resp.Body.Close()
			}
		})
	}
	wantInvalid(t, "Register(router, WithHandler(typed nil))", err)
}

// Update kept the tags and metadata the callback assigned, not copies: a
// caller that reused its map afterwards changed the registration without
// Update, unvalidated, and the next write (SetWeight, a re-registration
// after a lost lease) stored the change, or failed on it.
func TestUpdateKeepsACopyOfWhatTheCallbackAssigned(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	md, tags := map[string]string{"team": "core"}, []string{"blue"}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Metadata, in.Tags = md, tags }); err != nil {
		t.Fatal(err)
	}
	md["bad key!"], tags[0] = "x", "bad\x00tag"
	if got := g.Instance(); len(got.Metadata) != 1 || got.Tags[0] != "blue" {
		t.Fatalf("the caller's later edits reached the registration: %+v, %q", got.Metadata, got.Tags)
	}
	if err := g.SetWeight(ctx, 5); err != nil {
		t.Fatalf("SetWeight after the caller reused its map = %v", err)
	}
	svc, err := r.Get(ctx, "db_svc")
	if err != nil || len(svc.Instances[0].Metadata) != 1 || svc.Instances[0].Tags[0] != "blue" || svc.Instances[0].Weight != 5 {
		t.Fatalf("after SetWeight: %+v, %v", svc, err)
	}
}

// Every duration option is at most MaxDuration, as the README's Options
// table says. The drain and notification ones were not bounded: a
// propagation delay of MaxInt64 overflowed once added to the freshness
// window, and Drain, which should have waited the longest, did not wait
// at all.
func TestDrainAndNotifyDurationsAreBounded(t *testing.T) {
	const huge = time.Duration(math.MaxInt64)
	tests := []struct {
		opt  discovery.Option
		name string
	}{
		{discovery.WithPropagationDelay(huge), "WithPropagationDelay"},
		{discovery.WithCloseDrain(huge), "WithCloseDrain"},
		{discovery.WithConfigNotifyTimeout(huge), "WithConfigNotifyTimeout"},
		{discovery.WithConfigNotifyRetries(3, huge), "WithConfigNotifyRetries"},
	}
	for _, tt := range tests {
		r, err := discovery.New(tt.opt, discovery.WithoutHealthChecks())
		if r != nil {
			r.Close()
		}
		wantInvalid(t, "New("+tt.name+"(MaxInt64))", err)
		if err != nil && !strings.Contains(err.Error(), tt.name) {
			t.Errorf("New(%s(MaxInt64)) = %v; want the option named", tt.name, err)
		}
	}
}

// A reaper delay shorter than the default self-preservation grace (two
// lease TTLs) was refused as a bad WithSelfPreservation, an option the
// caller never gave; the error now names the options that were given.
func TestReaperShorterThanDefaultGraceNamesWithReaper(t *testing.T) {
	_, err := discovery.New(discovery.WithLeaseTTL(90*time.Second), discovery.WithReaper(30*time.Second, 2*time.Minute),
		discovery.WithoutHealthChecks())
	var ve *discovery.ValidationError
	if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "option WithReaper" {
		t.Fatalf("New(WithLeaseTTL(90s), WithReaper(30s, 2m)) = %v; want a ValidationError on WithReaper", err)
	}
}

// Filters are checked as registration checks what they match: a tag with a
// control character, a metadata key with a character keys may not have, a
// value with a NUL, a version longer than 64 bytes can match no registered
// instance, and were reported as a service with nothing healthy
// (ErrNoHealthyInstances), sending the caller after sick instances instead
// of its own typo; a zone no instance can be in made PreferZone do nothing,
// silently. Filters that registration would take still pick.
func TestPickFiltersAreCheckedAsRegistrationChecksThem(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 80, Version: "v1", Tags: []string{"blue green"},
		Metadata: map[string]string{"team/shard-1.a_b": "é"}})
	ctx := context.Background()
	tests := []struct {
		name  string
		opt   discovery.PickOption
		field string
	}{
		{"tag with a newline", discovery.WithTag("a\nb"), "tag"},
		{"tag with invalid UTF-8", discovery.WithTag("a\xffb"), "tag"},
		{"metadata key with a space", discovery.WithMeta("a b", "x"), "metadata key"},
		{"metadata key with a colon", discovery.WithMeta("a:b", "x"), "metadata key"},
		{"metadata value with a NUL", discovery.WithMeta("k", "a\x00"), "metadata value"},
		{"metadata value over 8 KiB", discovery.WithMeta("k", strings.Repeat("v", 8<<10)), "metadata"},
		{"version of 65 bytes", discovery.WithVersion(strings.Repeat("v", 65)), "version"},
		{"version with a tab", discovery.WithVersion("v\t1"), "version"},
		{"zone of 65 bytes", discovery.PreferZone(strings.Repeat("z", 65)), "zone"},
		{"zone with a newline", discovery.PreferZone("eu\n1"), "zone"},
	}
	for _, tt := range tests {
		_, err := r.Pick(ctx, "db_svc", tt.opt)
		var ve *discovery.ValidationError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("Pick(%s) = %v; want a ValidationError on %s", tt.name, err, tt.field)
		}
	}
	for _, o := range []discovery.PickOption{discovery.WithTag("blue green"), discovery.WithMeta("team/shard-1.a_b", "é"), discovery.WithVersion("v1"),
		discovery.PreferZone("eu-west-1a"), discovery.PreferZone("")} {
		sel, err := r.Pick(ctx, "db_svc", o)
		if err != nil {
			t.Errorf("Pick(%v) = %v; want the instance", o, err)
			continue
		}
		sel.Done(nil)
	}
}

// Pick's options are validated before any I/O, as every input is: a bad
// option was reported as the service being unknown (ErrNotFound) and cost a
// database read when L1 did not hold the service.
func TestPickOptionsAreValidatedBeforeTheLookup(t *testing.T) {
	backend := discoverytest.NewBackend()
	w := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, w, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 80})
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ctx := context.Background()
	bad := []discovery.PickOption{discovery.UseStrategy(discovery.StrategyRandom), discovery.UseStrategy(discovery.StrategyRoundRobin)}
	for _, svc := range []string{"db_svc", "no_such_svc"} {
		reads := r.Stats().StoreReads
		_, err := r.Pick(ctx, svc, bad...)
		if !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("Pick(%s, two strategies) = %v; want ErrInvalid", svc, err)
		}
		if n := r.Stats().StoreReads - reads; n != 0 {
			t.Errorf("Pick(%s, two strategies) read the database %d times; want none", svc, n)
		}
	}
}

// UseStrategy(0), the default, leaves the call's strategy to the other
// options whatever their order: after UseStrategy(round_robin) it was a
// conflict, before it accepted.
func TestUseStrategyDefaultIsOrderIndependent(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 80})
	ctx := context.Background()
	rr, def := discovery.UseStrategy(discovery.StrategyRoundRobin), discovery.UseStrategy(0)
	for _, opts := range [][]discovery.PickOption{{def, rr}, {rr, def}} {
		sel, err := r.Pick(ctx, "db_svc", opts...)
		if err != nil || sel.Strategy != discovery.StrategyRoundRobin {
			t.Errorf("Pick(%v) = %v, %v; want a round_robin pick", opts, sel.Strategy, err)
			continue
		}
		sel.Done(nil)
	}
}

// The zero Strategy means "the default" (its godoc) in the Registry's
// options too: WithStrategy(0) is p2c_ewma, and WithServiceStrategy(name, 0)
// leaves the service to WithStrategy, taking an earlier override back. New
// refused both as "unknown strategy".
func TestZeroStrategyOptionsMeanTheDefault(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		opts []discovery.Option
		want discovery.Strategy
	}{
		{"WithStrategy(0)", []discovery.Option{discovery.WithStrategy(0)}, discovery.StrategyP2CEWMA},
		{"WithServiceStrategy(db_svc, 0)", []discovery.Option{discovery.WithStrategy(discovery.StrategyRandom),
			discovery.WithServiceStrategy("db_svc", 0)}, discovery.StrategyRandom},
		{"WithServiceStrategy(db_svc, round_robin) then 0", []discovery.Option{
			discovery.WithServiceStrategy("db_svc", discovery.StrategyRoundRobin),
			discovery.WithServiceStrategy("db_svc", 0)}, discovery.StrategyP2CEWMA},
	} {
		opts := append([]discovery.Option{discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}, tt.opts...)
		r, err := discovery.New(append(opts, discovery.WithStore(discoverytest.NewBackend()))...)
		if err != nil {
			t.Errorf("New(%s) = %v; want a Registry", tt.name, err)
			continue
		}
		mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 80})
		sel, err := r.Pick(ctx, "db_svc")
		if err != nil || sel.Strategy != tt.want {
			t.Errorf("%s: Pick = %v, %v; want a %v pick", tt.name, sel.Strategy, err, tt.want)
		} else {
			sel.Done(nil)
		}
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}
	if _, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithServiceStrategy("db svc", 0)); !errors.Is(err, discovery.ErrInvalid) {
		t.Errorf("New(WithServiceStrategy(\"db svc\", 0)) = %v; want ErrInvalid for the name", err)
	}
}

// A nil WithCheckFunc, WithConfigFunc or WithHandler was taken for the
// option left out: the router instance was registered without the check,
// callback or handler its caller meant to give (a func field never set),
// and nothing said so. Register now refuses it, as New refuses a nil
// WithConfigValidator, and writes nothing.
func TestNilRegisterOptionsAreInvalid(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	router := discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}
	for name, opt := range map[string]discovery.RegisterOption{
		"WithCheckFunc(nil)":  discovery.WithCheckFunc(nil),
		"WithConfigFunc(nil)": discovery.WithConfigFunc(nil),
		"WithHandler(nil)":    discovery.WithHandler(nil),
	} {
		_, err := r.Register(ctx, router, opt)
		wantInvalid(t, "Register(router, "+name+")", err)
	}
	if svc, err := backend.Load(ctx, "router_svc"); err == nil && len(svc.Instances) > 0 {
		t.Fatalf("refused registrations wrote %d instance(s)", len(svc.Instances))
	}
}

// A second WithCheckFunc, WithConfigFunc or WithHandler for one Register
// replaced the first, silently: an instance given a check of its database
// and then one of its cache was checked for its cache alone, healthy with
// its database gone. Each names the instance's one function, with no
// default for a later one to override (as New's options override theirs),
// so Register refuses the second, as grpc's server refuses a second
// UnaryInterceptor, and writes nothing.
func TestRegisterOptionGivenTwiceIsInvalid(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	router := discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}
	check := func(context.Context) error { return nil }
	onConfig := func(context.Context, json.RawMessage) error { return nil }
	h := http.NotFoundHandler()
	tests := []struct {
		name  string
		opts  []discovery.RegisterOption
		field string
	}{
		{"WithCheckFunc twice", []discovery.RegisterOption{discovery.WithCheckFunc(check), discovery.WithCheckFunc(check)}, "check func"},
		{"WithConfigFunc twice", []discovery.RegisterOption{discovery.WithConfigFunc(onConfig), discovery.WithHandler(h), discovery.WithConfigFunc(onConfig)}, "config func"},
		{"WithHandler twice", []discovery.RegisterOption{discovery.WithHandler(h), discovery.WithHandler(h)}, "handler"},
	}
	for _, tt := range tests {
		_, err := r.Register(ctx, router, tt.opts...)
		var ve *discovery.ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("Register(router, %s) = %v; want a ValidationError on the %s", tt.name, err, tt.field)
		}
	}
	if svc, err := backend.Load(ctx, "router_svc"); err == nil && len(svc.Instances) > 0 {
		t.Fatalf("refused registrations wrote %d instance(s)", len(svc.Instances))
	}
	// One of each is the registration's.
	if _, err := r.Register(ctx, router, discovery.WithCheckFunc(check), discovery.WithConfigFunc(onConfig), discovery.WithHandler(h)); err != nil {
		t.Fatalf("Register(router, one of each) = %v", err)
	}
}

// An Update callback of an instance at weight 0 read its weight as
// ZeroWeight (-1), where Instance and every lookup read 0: a slow start that
// ramped a standby up by steps of 25 reached 24, 49, 74 and 99, and doubling
// a weight of 0 was refused as -2. The callback now reads the weight as
// stored, and a weight of 0 it leaves alone stays 0.
func TestUpdateOfAZeroWeightReadsZero(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	g := mustRegister(t, r, discovery.Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1, Weight: discovery.ZeroWeight})
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Tags = []string{"standby"} }); err != nil {
		t.Fatal(err)
	}
	if w := g.Instance().Weight; w != 0 {
		t.Fatalf("weight after an Update that left it = %d; want 0", w)
	}
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Weight *= 2 }); err != nil {
		t.Fatalf("doubling a weight of 0 = %v", err)
	}
	for step := 1; step <= 4; step++ {
		if err := g.Update(ctx, func(in *discovery.Instance) { in.Weight += 25 }); err != nil {
			t.Fatal(err)
		}
		if w := g.Instance().Weight; w != 25*step {
			t.Fatalf("weight after %d steps of 25 from 0 = %d; want %d", step, w, 25*step)
		}
	}
	if svc, err := r.Get(ctx, "db_svc"); err != nil || svc.Instances[0].Weight != 100 {
		t.Fatalf("Get = %+v, %v; want weight 100", svc, err)
	}
}

// Watch(nil, ...) returned a channel and crashed the process from the
// watcher's goroutine (a nil-pointer panic no caller can recover); now it is
// a ValidationError, returned before anything starts.
func TestWatchNilContextIsInvalid(t *testing.T) {
	r := newWorld(t, allWorlds[0]).registry(t)
	var ctx context.Context // nil, as a caller that forgot to set it passes
	noPanic(t, "Watch(nil)", func() {
		ch, err := r.Watch(ctx, "db_svc")
		wantInvalid(t, "Watch(nil)", err)
		if ch != nil {
			t.Errorf("Watch(nil) returned a channel")
		}
	})
}

// A nil context given to a call of the registration lifecycle is a
// ValidationError, with nothing changed. Register with one, replacing a
// registration of the same instance, panicked with that registration's
// writes held: every later write of it (renewals, Update, Close's
// deregistration) waited on them for good, and its lease ran out.
// Deregister with one stopped the renewals, then panicked.
func TestLifecycleNilContextIsInvalid(t *testing.T) {
	ctx := context.Background()
	r := newWorld(t, allWorlds[0]).registry(t)
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	var nilCtx context.Context // nil, as a caller that forgot to set it passes
	noPanic(t, "Register(nil)", func() {
		_, err := r.Register(nilCtx, inst("db_svc", "10.0.0.1", 1))
		wantInvalid(t, "Register(nil)", err)
	})
	noPanic(t, "Update(nil)", func() { wantInvalid(t, "Update(nil)", g.Update(nilCtx, func(*discovery.Instance) {})) })
	noPanic(t, "SetWeight(nil)", func() { wantInvalid(t, "SetWeight(nil)", g.SetWeight(nilCtx, 3)) })
	noPanic(t, "Drain(nil)", func() { wantInvalid(t, "Drain(nil)", g.Drain(nilCtx)) })
	noPanic(t, "Deregister(nil)", func() { wantInvalid(t, "Deregister(nil)", g.Deregister(nilCtx)) })
	noPanic(t, "Registry.Deregister(nil)", func() {
		wantInvalid(t, "Registry.Deregister(nil)", r.Deregister(nilCtx, "db_svc", "10.0.0.1:1"))
	})
	select {
	case <-g.Done():
		t.Fatal("the registration stopped renewing after calls refused for a nil context")
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := g.SetWeight(wctx, 5); err != nil {
		t.Fatalf("SetWeight after the calls with a nil context = %v; want the registration's writes free", err)
	}
}

// Every other call that may do I/O refuses a nil context with a
// ValidationError too: each panicked with a nil dereference in the caller's
// goroutine. (A lookup answered from L1 needs no context.)
func TestCallsGivenANilContextAreInvalid(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	mustRegister(t, r, discovery.Instance{ID: "a", Service: "web", Host: "10.0.0.1", Port: 80})
	var nilCtx context.Context // nil, as a caller that forgot to set it passes
	for name, call := range map[string]func() error{
		"Get":            func() error { _, err := r.Get(nilCtx, "not_cached"); return err },
		"Lookup":         func() error { _, err := r.Lookup(nilCtx, "not_cached"); return err },
		"Pick":           func() error { _, err := r.Pick(nilCtx, "not_cached"); return err },
		"Health":         func() error { _, err := r.Health(nilCtx, "not_cached"); return err },
		"Invalidate":     func() error { return r.Invalidate(nilCtx, "web") },
		"UpdateConfig":   func() error { _, err := r.UpdateConfig(nilCtx, "web", []byte(`{}`)); return err },
		"UpdateConfigIf": func() error { _, err := r.UpdateConfigIf(nilCtx, "web", 0, []byte(`{}`)); return err },
		"RollbackConfig": func() error { _, err := r.RollbackConfig(nilCtx, "web", 1); return err },
		"ConfigHistory":  func() error { _, err := r.ConfigHistory(nilCtx, "web"); return err },
		"Config":         func() error { _, _, err := r.Config(nilCtx, "web"); return err },
		"Overview":       func() error { _, err := r.Overview(nilCtx); return err },
		"Services":       func() error { _, err := r.Services(nilCtx); return err },
		"Keys":           func() error { _, err := r.Keys(nilCtx, "web"); return err },
		"RefreshKeys":    func() error { _, err := r.RefreshKeys(nilCtx, "web"); return err },
		"Snapshot":       func() error { _, err := r.Snapshot(nilCtx, "web"); return err },
		"PublishKey": func() error {
			return r.PublishKey(nilCtx, "web", discovery.PublicKey{ID: "k1", Algorithm: "EdDSA", Key: make([]byte, 32), CreatedAt: t0})
		},
		"RetireKey": func() error { return r.RetireKey(nilCtx, "web", "k1", t0) },
	} {
		noPanic(t, name+"(nil)", func() { wantInvalid(t, name+"(nil)", call()) })
	}
}
