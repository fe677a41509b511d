// Package storetest is the conformance suite every Store runs: the in-memory
// one, SQLite, PostgreSQL, and any a user writes (through
// discoverytest.StoreConformance, since this package is internal).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Factory returns a fresh, empty store for one subtest.
type Factory func(t *testing.T) core.Store

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)

// Instance returns a valid, normalised instance of service with the given id.
func Instance(service, id string, expires time.Time) *core.Instance {
	in := &core.Instance{
		ID: id, Service: service, Host: "10.0.0.7", Port: 8080, Zone: "eu-1a", Version: "v1.2.3",
		Tags: []string{"primary", "ünïcode"}, Metadata: map[string]string{"team": "core", "region/x": "eu ✓"},
		RegisteredAt: t0, ExpiresAt: expires,
	}
	if err := core.Normalize(in); err != nil {
		panic(err)
	}
	return in
}

// Run runs the suite.
func Run(t *testing.T, newStore Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s core.Store)
	}{
		{"RegisterRoundTrip", testRegisterRoundTrip},
		{"ReRegisterUpdatesInPlace", testReRegister},
		{"Deregister", testDeregister},
		{"LoadUnknown", testLoadUnknown},
		{"LeaseRenewAndExpiry", testLease},
		{"RenewInstanceMatchesEveryField", testRenewInstance},
		{"Reap", testReap},
		{"ConcurrentReap", testConcurrentReap},
		{"RevisionMonotonic", testRevisionMonotonic},
		{"ConcurrentRegister50", testConcurrentRegister},
		{"ServicesListing", testServices},
		{"Revisions", testRevisions},
		{"ConfigHistory", testConfig},
		{"Keys", testKeys},
		{"ReapRetiredKeys", testReapKeys},
		{"RevokedKeysStayRevoked", testRevokedKeys},
		{"CanceledContext", testCanceled},
		{"FailedWritesChangeNothing", testFailedWritesChangeNothing},
		{"Limits", testLimits},
		{"ConcurrentConfig", testConcurrentConfig},
		{"ConcurrentConfigSwaps", testConcurrentConfigSwaps},
		{"ReapServices", testReapServices},
		{"ReapServicesKeepsWhatHasAnything", testReapServicesKeeps},
		{"ReapServicesRevokedKeysStay", testReapServicesRevokedKeys},
		{"ReapServicesRacesWrites", testReapServicesRaces},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustLoad(t *testing.T, s core.Store, name string) *core.Service {
	t.Helper()
	svc, err := s.Load(ctx(t), name)
	if err != nil {
		t.Fatalf("Load(%q): %v", name, err)
	}
	return svc
}

func sameInstance(t *testing.T, got, want *core.Instance) {
	t.Helper()
	if got.ID != want.ID || got.Service != want.Service || got.Host != want.Host || got.Port != want.Port ||
		got.Method != want.Method || got.Weight != want.Weight || got.Zone != want.Zone || got.Version != want.Version ||
		got.HealthPath != want.HealthPath || got.Check != want.Check || got.Status != want.Status ||
		!slices.Equal(got.Tags, want.Tags) || fmt.Sprint(got.Metadata) != fmt.Sprint(want.Metadata) ||
		!got.RegisteredAt.Equal(want.RegisteredAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("instance round trip:\n got %+v\nwant %+v", *got, *want)
	}
}

func testRegisterRoundTrip(t *testing.T, s core.Store) {
	in := Instance("db_svc", "a", t0.Add(15*time.Second))
	in.Method, in.Check, in.Weight = core.MethodRouter, core.CheckTCP, 7
	rev, err := s.Register(ctx(t), in)
	if err != nil || rev != 1 {
		t.Fatalf("Register = %d, %v; want 1, nil", rev, err)
	}
	svc := mustLoad(t, s, "db_svc")
	if svc.Name != "db_svc" || svc.Revision != 1 || len(svc.Instances) != 1 {
		t.Fatalf("Load = %+v", svc)
	}
	sameInstance(t, &svc.Instances[0], in)

	bare := &core.Instance{Service: "db_svc", Host: "::1", Port: 1, RegisteredAt: t0, ExpiresAt: t0.Add(time.Second)}
	if err := core.Normalize(bare); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx(t), bare); err != nil {
		t.Fatal(err)
	}
	svc = mustLoad(t, s, "db_svc")
	if len(svc.Instances) != 2 || svc.Instances[0].ID != "[::1]:1" || svc.Instances[0].Tags != nil || svc.Instances[0].Metadata != nil {
		t.Fatalf("instances not ordered by ID or empty fields not nil: %+v", svc.Instances)
	}
	// Empty tags and metadata come back nil too, as nil ones do: a SQL
	// store keeps no difference between the two, so no store may show one.
	empty := bare.Clone()
	empty.ID, empty.Tags, empty.Metadata = "empty", []string{}, map[string]string{}
	if _, err := s.Register(ctx(t), &empty); err != nil {
		t.Fatal(err)
	}
	for _, in := range mustLoad(t, s, "db_svc").Instances {
		if in.ID == "empty" && (in.Tags != nil || in.Metadata != nil) {
			t.Fatalf("empty tags and metadata came back %#v, %#v; want nil, as a SQL store gives them", in.Tags, in.Metadata)
		}
	}
}

func testReRegister(t *testing.T, s core.Store) {
	in := Instance("db_svc", "a", t0.Add(time.Minute))
	if _, err := s.Register(ctx(t), in); err != nil {
		t.Fatal(err)
	}
	up := Instance("db_svc", "a", t0.Add(2*time.Minute))
	up.Host, up.Port, up.Weight, up.Tags, up.Metadata = "10.0.0.8", 9090, 3, []string{"canary"}, nil
	up.RegisteredAt = t0.Add(time.Hour) // ignored: the first registration time stays
	up.Status = core.StatusDraining
	rev, err := s.Register(ctx(t), up)
	if err != nil || rev != 2 {
		t.Fatalf("re-Register = %d, %v; want 2", rev, err)
	}
	svc := mustLoad(t, s, "db_svc")
	if len(svc.Instances) != 1 {
		t.Fatalf("re-registration added a row: %+v", svc.Instances)
	}
	want := *up
	want.RegisteredAt = t0
	sameInstance(t, &svc.Instances[0], &want)
}

func testDeregister(t *testing.T, s core.Store) {
	for _, id := range []string{"a", "b"} {
		if _, err := s.Register(ctx(t), Instance("db_svc", id, t0.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := s.Deregister(ctx(t), "db_svc", "a")
	if err != nil || rev != 3 {
		t.Fatalf("Deregister = %d, %v; want 3", rev, err)
	}
	svc := mustLoad(t, s, "db_svc")
	if len(svc.Instances) != 1 || svc.Instances[0].ID != "b" || svc.Revision != 3 {
		t.Fatalf("after Deregister: %+v", svc)
	}
	if _, err := s.Deregister(ctx(t), "db_svc", "a"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("second Deregister = %v; want ErrNotFound", err)
	}
	if _, err := s.Deregister(ctx(t), "nope", "a"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Deregister of unknown service = %v; want ErrNotFound", err)
	}
	if svc := mustLoad(t, s, "db_svc"); svc.Revision != 3 {
		t.Fatalf("failed Deregister changed the revision to %d", svc.Revision)
	}
	if _, err := s.Deregister(ctx(t), "db_svc", "b"); err != nil {
		t.Fatal(err)
	}
	svc = mustLoad(t, s, "db_svc")
	if len(svc.Instances) != 0 || svc.Revision != 4 {
		t.Fatalf("service with no instances: %+v; want it kept, empty, at revision 4", svc)
	}
}

func testLoadUnknown(t *testing.T, s core.Store) {
	_, err := s.Load(ctx(t), "nope")
	var nf *core.NotFoundError
	if !errors.Is(err, core.ErrNotFound) || !errors.As(err, &nf) || nf.Service != "nope" {
		t.Fatalf("Load(unknown) = %v; want NotFoundError naming it", err)
	}
}

func testLease(t *testing.T, s core.Store) {
	if _, err := s.Register(ctx(t), Instance("db_svc", "a", t0.Add(15*time.Second))); err != nil {
		t.Fatal(err)
	}
	live := func(at time.Time) int {
		infos, err := s.Services(ctx(t), at)
		if err != nil || len(infos) != 1 {
			t.Fatalf("Services = %+v, %v", infos, err)
		}
		return infos[0].Live
	}
	if n := live(t0.Add(15*time.Second - 1)); n != 1 {
		t.Fatalf("live just before expiry = %d; want 1", n)
	}
	if n := live(t0.Add(15 * time.Second)); n != 0 {
		t.Fatalf("live at expiry = %d; want 0", n)
	}
	if err := s.Renew(ctx(t), "db_svc", "a", t0.Add(14*time.Second), t0.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := live(t0.Add(20 * time.Second)); n != 1 {
		t.Fatalf("live after renewal = %d; want 1", n)
	}
	svc := mustLoad(t, s, "db_svc")
	if svc.Revision != 1 || !svc.Instances[0].ExpiresAt.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("Renew must move the lease without a new revision: %+v", svc)
	}
	if err := s.Renew(ctx(t), "db_svc", "gone", t0, t0.Add(time.Minute)); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Renew of a missing row = %v; want ErrNotFound", err)
	}
	// A lease that already ended is not revived by Renew: the owner must
	// register again, with a new revision, so every cache hears of it.
	if err := s.Renew(ctx(t), "db_svc", "a", t0.Add(30*time.Second), t0.Add(time.Hour)); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Renew of a lapsed lease = %v; want ErrNotFound", err)
	}
	if svc := mustLoad(t, s, "db_svc"); !svc.Instances[0].ExpiresAt.Equal(t0.Add(30 * time.Second)) {
		t.Fatalf("Renew of a lapsed lease moved it to %v", svc.Instances[0].ExpiresAt)
	}
}

// testRenewInstance: an InstanceRenewer renews a row that holds the
// instance as registered (no new revision), and refuses with ErrNotFound,
// changing nothing, a row that differs in any field Register writes (a
// database restored from an older backup), a lapsed lease and a missing
// row. Nil and empty tags and metadata are the same.
func testRenewInstance(t *testing.T, s core.Store) {
	rn, ok := s.(core.InstanceRenewer)
	if !ok {
		t.Skip("not an InstanceRenewer")
	}
	in := Instance("db_svc", "a", t0.Add(15*time.Second))
	if _, err := s.Register(ctx(t), in); err != nil {
		t.Fatal(err)
	}
	renew := func(edit func(*core.Instance), now, until time.Time) error {
		c := in.Clone()
		edit(&c)
		c.ExpiresAt = until
		return rn.RenewInstance(ctx(t), &c, now)
	}
	same := func(*core.Instance) {}
	if err := renew(same, t0.Add(10*time.Second), t0.Add(30*time.Second)); err != nil {
		t.Fatalf("RenewInstance of the row as registered = %v", err)
	}
	svc := mustLoad(t, s, "db_svc")
	if svc.Revision != 1 || !svc.Instances[0].ExpiresAt.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("RenewInstance must move the lease without a new revision: %+v", svc)
	}
	edits := []struct {
		field string
		edit  func(*core.Instance)
	}{
		{"host", func(c *core.Instance) { c.Host = "10.0.0.8" }},
		{"port", func(c *core.Instance) { c.Port = 8081 }},
		{"method", func(c *core.Instance) { c.Method = core.MethodRouter }},
		{"weight", func(c *core.Instance) { c.Weight++ }},
		{"zone", func(c *core.Instance) { c.Zone = "eu-1b" }},
		{"version", func(c *core.Instance) { c.Version = "v1.2.4" }},
		{"tags", func(c *core.Instance) { c.Tags = []string{"primary"} }},
		{"tag order", func(c *core.Instance) { c.Tags = []string{c.Tags[1], c.Tags[0]} }},
		{"no tags", func(c *core.Instance) { c.Tags = nil }},
		{"metadata", func(c *core.Instance) { c.Metadata = map[string]string{"team": "core", "region/x": "eu"} }},
		{"no metadata", func(c *core.Instance) { c.Metadata = nil }},
		{"health path", func(c *core.Instance) { c.HealthPath = "/ready" }},
		{"check", func(c *core.Instance) { c.Check = core.CheckTCP }},
		{"status", func(c *core.Instance) { c.Status = core.StatusDraining }},
	}
	for _, e := range edits {
		if err := renew(e.edit, t0.Add(20*time.Second), t0.Add(time.Hour)); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("RenewInstance with another %s = %v; want ErrNotFound", e.field, err)
		}
	}
	if svc := mustLoad(t, s, "db_svc"); svc.Revision != 1 || !svc.Instances[0].ExpiresAt.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("a refused RenewInstance changed the row: %+v", svc)
	}
	bare := &core.Instance{Service: "db_svc", ID: "b", Host: "10.0.0.9", Port: 1, RegisteredAt: t0, ExpiresAt: t0.Add(15 * time.Second)}
	if err := core.Normalize(bare); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx(t), bare); err != nil {
		t.Fatal(err)
	}
	empty := bare.Clone()
	empty.Tags, empty.Metadata, empty.ExpiresAt = []string{}, map[string]string{}, t0.Add(30*time.Second)
	if err := rn.RenewInstance(ctx(t), &empty, t0.Add(10*time.Second)); err != nil {
		t.Fatalf("RenewInstance with empty tags and metadata of a row registered with none = %v", err)
	}
	if err := renew(same, t0.Add(30*time.Second), t0.Add(time.Hour)); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("RenewInstance of a lapsed lease = %v; want ErrNotFound", err)
	}
	gone := in.Clone()
	gone.ID = "gone"
	if err := rn.RenewInstance(ctx(t), &gone, t0); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("RenewInstance of a missing row = %v; want ErrNotFound", err)
	}
}

func testReap(t *testing.T, s core.Store) {
	for _, x := range []struct {
		svc, id string
		exp     time.Duration
	}{{"a", "1", time.Second}, {"a", "2", time.Hour}, {"b", "1", time.Second}, {"c", "1", time.Hour}} {
		if _, err := s.Register(ctx(t), Instance(x.svc, x.id, t0.Add(x.exp))); err != nil {
			t.Fatal(err)
		}
	}
	changes, err := s.Reap(ctx(t), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(changes) != "[{a 3 false} {b 2 false}]" {
		t.Fatalf("Reap changes = %v; want [{a 3 false} {b 2 false}] (not gone: the services stay)", changes)
	}
	if svc := mustLoad(t, s, "a"); len(svc.Instances) != 1 || svc.Instances[0].ID != "2" {
		t.Fatalf("after Reap a = %+v", svc.Instances)
	}
	if svc := mustLoad(t, s, "c"); svc.Revision != 1 {
		t.Fatalf("Reap touched c: revision %d", svc.Revision)
	}
	if changes, err := s.Reap(ctx(t), t0.Add(time.Minute)); err != nil || len(changes) != 0 {
		t.Fatalf("second Reap = %v, %v; want nothing", changes, err)
	}
}

func testConcurrentReap(t *testing.T, s core.Store) {
	for i := range 20 {
		if _, err := s.Register(ctx(t), Instance(fmt.Sprintf("s%02d", i), "1", t0)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range 4 {
		wg.Go(func() {
			changes, err := s.Reap(ctx(t), t0.Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += len(changes)
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != 20 {
		t.Fatalf("concurrent reapers reported %d changes; want each of 20 services reaped exactly once", total)
	}
	for i := range 20 {
		if svc := mustLoad(t, s, fmt.Sprintf("s%02d", i)); svc.Revision != 2 || len(svc.Instances) != 0 {
			t.Fatalf("service %d after reaping: %+v", i, svc)
		}
	}
}

func testRevisionMonotonic(t *testing.T, s core.Store) {
	var last int64
	check := func(rev int64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if rev <= last {
			t.Fatalf("revision %d after %d", rev, last)
		}
		last = rev
	}
	check(s.Register(ctx(t), Instance("db_svc", "a", t0.Add(time.Hour))))
	check(s.Register(ctx(t), Instance("db_svc", "b", t0.Add(time.Hour))))
	check(s.Register(ctx(t), Instance("db_svc", "a", t0.Add(2*time.Hour))))
	check(s.Deregister(ctx(t), "db_svc", "b"))
	if cs, ok := s.(core.ConfigStore); ok {
		rev, _, err := cs.SetConfig(ctx(t), "db_svc", []byte(`{"x":1}`), t0, 20)
		check(rev, err)
	}
	check(s.Register(ctx(t), Instance("db_svc", "b", t0)))
	changes, err := s.Reap(ctx(t), t0.Add(time.Second))
	if err != nil || len(changes) != 1 {
		t.Fatalf("Reap = %v, %v", changes, err)
	}
	check(changes[0].Revision, nil)
	if svc := mustLoad(t, s, "db_svc"); svc.Revision != last {
		t.Fatalf("Load revision %d; want the last one returned, %d", svc.Revision, last)
	}
	// Other services have their own counters.
	if rev, err := s.Register(ctx(t), Instance("other", "a", t0)); err != nil || rev != 1 {
		t.Fatalf("first revision of another service = %d, %v; want 1", rev, err)
	}
}

func testConcurrentRegister(t *testing.T, s core.Store) {
	const n = 50
	var wg sync.WaitGroup
	revs := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			var err error
			revs[i], err = s.Register(ctx(t), Instance("db_svc", fmt.Sprintf("i%02d", i), t0.Add(time.Hour)))
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	svc := mustLoad(t, s, "db_svc")
	if len(svc.Instances) != n || svc.Revision != n {
		t.Fatalf("after %d concurrent registrations: %d rows at revision %d", n, len(svc.Instances), svc.Revision)
	}
	slices.Sort(revs)
	for i, r := range revs {
		if r != int64(i+1) {
			t.Fatalf("revisions returned %v; want 1..%d, each once", revs, n)
		}
	}
}

func testServices(t *testing.T, s core.Store) {
	if infos, err := s.Services(ctx(t), t0); err != nil || len(infos) != 0 {
		t.Fatalf("Services of an empty store = %v, %v", infos, err)
	}
	for _, x := range []struct {
		svc, id string
		exp     time.Duration
	}{{"b", "1", time.Hour}, {"a", "1", time.Hour}, {"a", "2", -time.Second}} {
		if _, err := s.Register(ctx(t), Instance(x.svc, x.id, t0.Add(x.exp))); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := s.Services(ctx(t), t0)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(infos) != "[{a 2 1 1} {b 1 1 0}]" {
		t.Fatalf("Services = %v; want [{a 2 1 1} {b 1 1 0}]", infos)
	}
}

func testRevisions(t *testing.T, s core.Store) {
	rr, ok := s.(core.RevisionReader)
	if !ok {
		t.Skip("store has no RevisionReader")
	}
	for _, n := range []string{"a", "b", "b"} {
		if _, err := s.Register(ctx(t), Instance(n, "x"+fmt.Sprint(time.Now().UnixNano()), t0)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := rr.Revisions(ctx(t), []string{"a", "b", "zzz"})
	if err != nil || fmt.Sprint(got) != "map[a:1 b:2]" {
		t.Fatalf("Revisions = %v, %v; want map[a:1 b:2]", got, err)
	}
}

func testConfig(t *testing.T, s core.Store) {
	cs, ok := s.(core.ConfigStore)
	if !ok {
		t.Skip("store has no ConfigStore")
	}
	if _, err := cs.ConfigHistory(ctx(t), "db_svc"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("ConfigHistory before any config = %v; want ErrNotFound", err)
	}
	if _, err := s.Register(ctx(t), Instance("db_svc", "a", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		rev, cfgRev, err := cs.SetConfig(ctx(t), "db_svc", fmt.Appendf(nil, `{"v":%d}`, i), t0.Add(time.Duration(i)*time.Second), 3)
		if err != nil || cfgRev != int64(i) || rev != int64(i+1) {
			t.Fatalf("SetConfig #%d = %d, %d, %v", i, rev, cfgRev, err)
		}
	}
	svc := mustLoad(t, s, "db_svc")
	if string(svc.Config) != `{"v":5}` || svc.ConfigRevision != 5 || svc.Revision != 6 || len(svc.Instances) != 1 {
		t.Fatalf("Load after SetConfig = %+v", svc)
	}
	hist, err := cs.ConfigHistory(ctx(t), "db_svc")
	if err != nil || len(hist) != 3 || hist[0].Revision != 5 || hist[2].Revision != 3 || string(hist[1].Config) != `{"v":4}` ||
		!hist[0].CreatedAt.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("ConfigHistory = %+v, %v; want revisions 5,4,3", hist, err)
	}
	if vr, ok := s.(core.ConfigVersionReader); ok {
		// One kept version, as the history holds it; a trimmed one, one
		// never written and an unknown service's are not found.
		if v, err := vr.ConfigVersion(ctx(t), "db_svc", 4); err != nil || v.Revision != 4 || string(v.Config) != `{"v":4}` ||
			!v.CreatedAt.Equal(t0.Add(4*time.Second)) {
			t.Fatalf("ConfigVersion(4) = %+v, %v; want the history's version 4", v, err)
		}
		for _, c := range []struct {
			service string
			rev     int64
		}{{"db_svc", 2}, {"db_svc", 6}, {"unknown", 1}} {
			if v, err := vr.ConfigVersion(ctx(t), c.service, c.rev); !errors.Is(err, core.ErrNotFound) {
				t.Fatalf("ConfigVersion(%s, %d) = %+v, %v; want ErrNotFound", c.service, c.rev, v, err)
			}
		}
	}
	// A config alone creates the service.
	if _, _, err := cs.SetConfig(ctx(t), "fresh", []byte(`{}`), t0, 3); err != nil {
		t.Fatal(err)
	}
	if svc := mustLoad(t, s, "fresh"); svc.Revision != 1 || len(svc.Instances) != 0 || string(svc.Config) != "{}" {
		t.Fatalf("config-only service = %+v", svc)
	}
}

func testCanceled(t *testing.T, s core.Store) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.Register(c, Instance("db_svc", "a", t0)); err == nil {
		t.Fatal("Register with a canceled context succeeded")
	}
	if _, err := s.Load(ctx(t), "db_svc"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("a canceled Register wrote: Load = %v", err)
	}
}

func testKeys(t *testing.T, s core.Store) {
	ks, ok := s.(core.KeyStore)
	if !ok {
		t.Skip("store has no KeyStore")
	}
	if _, err := s.Register(ctx(t), Instance("db_svc", "a", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	k2 := core.PublicKey{ID: "k2", Algorithm: "EdDSA", Key: []byte{0, 1, 2, 255}, CreatedAt: t0}
	k1 := core.PublicKey{ID: "k1", Algorithm: "ES256", Key: []byte{9}, CreatedAt: t0.Add(-time.Hour), RetiresAt: t0.Add(time.Hour)}
	for i, k := range []core.PublicKey{k2, k1} {
		rev, err := ks.PutKey(ctx(t), "db_svc", k)
		if err != nil || rev != int64(i+2) {
			t.Fatalf("PutKey(%s) = %d, %v", k.ID, rev, err)
		}
	}
	svc := mustLoad(t, s, "db_svc")
	if len(svc.Keys) != 2 || svc.Keys[0].ID != "k1" || svc.Keys[1].ID != "k2" || len(svc.Instances) != 1 ||
		string(svc.Keys[1].Key) != string(k2.Key) || svc.Keys[1].Algorithm != "EdDSA" || !svc.Keys[1].RetiresAt.IsZero() ||
		!svc.Keys[0].RetiresAt.Equal(k1.RetiresAt) || !svc.Keys[0].CreatedAt.Equal(k1.CreatedAt) {
		t.Fatalf("Load keys = %+v", svc.Keys)
	}
	rev, err := ks.RetireKey(ctx(t), "db_svc", "k2", t0.Add(time.Minute))
	if err != nil || rev != 4 {
		t.Fatalf("RetireKey = %d, %v", rev, err)
	}
	if svc := mustLoad(t, s, "db_svc"); !svc.Key("k2").RetiresAt.Equal(t0.Add(time.Minute)) || svc.Revision != 4 {
		t.Fatalf("after RetireKey: %+v", svc.Keys)
	}
	// A retirement only moves earlier: a revocation is not undone by a
	// later retirement (a rotation's).
	if _, err := ks.RetireKey(ctx(t), "db_svc", "k2", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RetireKey(ctx(t), "db_svc", "k1", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if svc := mustLoad(t, s, "db_svc"); !svc.Key("k2").RetiresAt.Equal(t0.Add(time.Minute)) || !svc.Key("k1").RetiresAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after retiring k2 later and k1 earlier: %+v", svc.Keys)
	}
	if _, err := ks.RetireKey(ctx(t), "db_svc", "nope", t0); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("RetireKey(unknown) = %v; want ErrNotFound", err)
	}
	if svc := mustLoad(t, s, "db_svc"); svc.Revision != 6 {
		t.Fatalf("a failed RetireKey changed the revision to %d", svc.Revision)
	}
}

// testReapKeys: Reap deletes keys that retired before the cutoff, as it
// deletes long-expired instances, with one revision per service changed;
// keys that never retire or retire later stay.
func testReapKeys(t *testing.T, s core.Store) {
	ks, ok := s.(core.KeyStore)
	if !ok {
		t.Skip("store has no KeyStore")
	}
	key := func(id string, retires time.Time) core.PublicKey {
		return core.PublicKey{ID: id, Algorithm: "EdDSA", Key: []byte(id), CreatedAt: t0.Add(-time.Hour), RetiresAt: retires}
	}
	for _, x := range []struct {
		svc string
		k   core.PublicKey
	}{
		{"a", key("old", t0)}, {"a", key("later", t0.Add(time.Hour))}, {"a", key("never", time.Time{})},
		{"b", key("old", t0.Add(time.Second))},
		{"c", key("later", t0.Add(time.Hour))},
	} {
		if _, err := ks.PutKey(ctx(t), x.svc, x.k); err != nil {
			t.Fatal(err)
		}
	}
	// b also has an expired instance: still one change for b.
	if _, err := s.Register(ctx(t), Instance("b", "1", t0)); err != nil {
		t.Fatal(err)
	}
	changes, err := s.Reap(ctx(t), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(changes) != "[{a 4 false} {b 3 false}]" {
		t.Fatalf("Reap changes = %v; want [{a 4 false} {b 3 false}]", changes)
	}
	ids := func(svc *core.Service) []string {
		var out []string
		for _, k := range svc.Keys {
			out = append(out, k.ID)
		}
		return out
	}
	if svc := mustLoad(t, s, "a"); fmt.Sprint(ids(svc)) != "[later never]" || svc.Revision != 4 {
		t.Fatalf("after Reap a: keys %v, revision %d; want [later never], 4", ids(svc), svc.Revision)
	}
	if svc := mustLoad(t, s, "b"); len(svc.Keys) != 0 || len(svc.Instances) != 0 || svc.Revision != 3 {
		t.Fatalf("after Reap b: %+v", svc)
	}
	if svc := mustLoad(t, s, "c"); len(svc.Keys) != 1 || svc.Revision != 1 {
		t.Fatalf("Reap touched c: %+v", svc)
	}
	if changes, err := s.Reap(ctx(t), t0.Add(time.Minute)); err != nil || len(changes) != 0 {
		t.Fatalf("second Reap = %v, %v; want nothing", changes, err)
	}
}

// testRevokedKeys: a revoked key is refused by PutKey for good, by its ID
// and by its public key under another ID, also after Reap deleted its row;
// a refusal writes nothing. A plain retirement is no revocation, a failed
// revocation records nothing, and revocations are per service.
func testRevokedKeys(t *testing.T, s core.Store) {
	ks, ok := s.(core.KeyStore)
	if !ok {
		t.Skip("store has no KeyStore")
	}
	key := func(id, pub string) core.PublicKey {
		return core.PublicKey{ID: id, Algorithm: "EdDSA", Key: []byte(pub), CreatedAt: t0.Add(-time.Hour)}
	}
	for _, k := range []core.PublicKey{key("leaked", "L"), key("rotated", "R")} {
		if _, err := ks.PutKey(ctx(t), "svc", k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ks.PutKey(ctx(t), "other", key("leaked", "L")); err != nil {
		t.Fatal(err)
	}
	rev, err := ks.RevokeKey(ctx(t), "svc", "leaked", t0)
	if err != nil || rev != 3 {
		t.Fatalf("RevokeKey = %d, %v; want 3", rev, err)
	}
	if svc := mustLoad(t, s, "svc"); !svc.Key("leaked").RetiresAt.Equal(t0) {
		t.Fatalf("RevokeKey did not retire the key: %+v", svc.Keys)
	}
	if _, err := ks.RetireKey(ctx(t), "svc", "rotated", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RevokeKey(ctx(t), "svc", "nope", t0); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("RevokeKey(unknown) = %v; want ErrNotFound", err)
	}
	refused := func(when string, k core.PublicKey, revokedID string) {
		t.Helper()
		before := mustLoad(t, s, "svc").Revision
		_, err := ks.PutKey(ctx(t), "svc", k)
		var re *core.RevokedKeyError
		if !errors.Is(err, core.ErrRevoked) || !errors.As(err, &re) || re.Service != "svc" || re.Key != k.ID || re.RevokedID != revokedID {
			t.Fatalf("%s: PutKey(%s) = %v; want a RevokedKeyError naming %s", when, k.ID, err, revokedID)
		}
		if after := mustLoad(t, s, "svc"); after.Revision != before || (after.Key(k.ID) != nil && after.Key(k.ID).RetiresAt.IsZero()) {
			t.Fatalf("%s: a refused PutKey(%s) wrote: revision %d to %d, keys %+v", when, k.ID, before, after.Revision, after.Keys)
		}
	}
	for _, when := range []string{"before Reap", "after Reap"} {
		refused(when, key("leaked", "L"), "leaked")       // the same key again
		refused(when, key("leaked", "new key"), "leaked") // a new key under the revoked ID
		refused(when, key("renamed", "L"), "leaked")      // the revoked key under a new ID
		if _, err := s.Reap(ctx(t), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if svc := mustLoad(t, s, "svc"); len(svc.Keys) != 0 {
		t.Fatalf("Reap left keys %+v", svc.Keys)
	}
	// Retired, not revoked: published again (as a Signer restarted with
	// its key does). Unknown IDs were never recorded; other services keep
	// their own keys.
	for _, k := range []struct {
		svc string
		k   core.PublicKey
	}{{"svc", key("rotated", "R")}, {"svc", key("nope", "N")}, {"other", key("leaked", "L")}, {"other", key("again", "L")}} {
		if _, err := ks.PutKey(ctx(t), k.svc, k.k); err != nil {
			t.Fatalf("PutKey(%s, %s) = %v; want it published", k.svc, k.k.ID, err)
		}
	}
	// A public key revoked under several IDs comes back named by the least
	// of them, every time.
	for _, id := range []string{"twin-b", "twin-a"} {
		if _, err := ks.PutKey(ctx(t), "twins", key(id, "T")); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"twin-b", "twin-a"} {
		if _, err := ks.RevokeKey(ctx(t), "twins", id, t0); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		_, err := ks.PutKey(ctx(t), "twins", key("twin-c", "T"))
		if re := (*core.RevokedKeyError)(nil); !errors.As(err, &re) || re.RevokedID != "twin-a" {
			t.Fatalf("PutKey of a key revoked as twin-a and twin-b = %v; want a RevokedKeyError naming twin-a", err)
		}
	}
}

// testFailedWritesChangeNothing: a write that fails (its target missing, or
// its context ended) creates no service and changes no revision.
func testFailedWritesChangeNothing(t *testing.T, s core.Store) {
	if _, err := s.Register(ctx(t), Instance("db_svc", "a", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deregister(ctx(t), "nope", "a"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Deregister(unknown service) = %v", err)
	}
	if err := s.Renew(ctx(t), "nope2", "a", t0, t0.Add(time.Hour)); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Renew(unknown service) = %v", err)
	}
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.Deregister(c, "db_svc", "a"); err == nil {
		t.Fatal("Deregister with a canceled context succeeded")
	}
	if err := s.Renew(c, "db_svc", "a", t0, t0.Add(2*time.Hour)); err == nil {
		t.Fatal("Renew with a canceled context succeeded")
	}
	if _, err := s.Reap(c, t0.Add(3*time.Hour)); err == nil {
		t.Fatal("Reap with a canceled context succeeded")
	}
	if cs, ok := s.(core.ConfigStore); ok {
		if _, _, err := cs.SetConfig(c, "db_svc", []byte(`{}`), t0, 3); err == nil {
			t.Fatal("SetConfig with a canceled context succeeded")
		}
		if _, _, err := cs.SetConfig(c, "nope3", []byte(`{}`), t0, 3); err == nil {
			t.Fatal("SetConfig with a canceled context succeeded")
		}
	}
	infos, err := s.Services(ctx(t), t0)
	if err != nil || fmt.Sprint(infos) != "[{db_svc 1 1 0}]" {
		t.Fatalf("Services after failed writes = %v, %v; want [{db_svc 1 1 0}]", infos, err)
	}
	svc := mustLoad(t, s, "db_svc")
	if svc.Revision != 1 || len(svc.Instances) != 1 || !svc.Instances[0].ExpiresAt.Equal(t0.Add(time.Hour)) || svc.Config != nil {
		t.Fatalf("after failed writes: %+v", svc)
	}
}

// testLimits: an instance at every limit validation allows round-trips.
func testLimits(t *testing.T, s core.Store) {
	name := strings.Repeat("s", core.MaxNameLen)
	in := &core.Instance{
		Service: name, ID: strings.Repeat("i", core.MaxIDLen), Host: strings.Repeat("h", 63) + "." + strings.Repeat("h", 63) + "." + strings.Repeat("h", 63) + "." + strings.Repeat("h", 61),
		Port: 65535, Weight: core.MaxWeight, Zone: strings.Repeat("é", core.MaxLabelLen/2), Version: strings.Repeat("✓", core.MaxLabelLen/3),
		HealthPath: "/" + strings.Repeat("p", core.MaxHealthPathLen-1), RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour),
	}
	for i := range core.MaxTags {
		in.Tags = append(in.Tags, fmt.Sprintf("%03d", i)+strings.Repeat("ü", (core.MaxTagLen-3)/2))
	}
	in.Metadata = map[string]string{}
	for i := range 8 {
		in.Metadata[fmt.Sprintf("k%d", i)] = strings.Repeat("\"\\😀", (core.MaxMetadataBytes/8-2)/6)
	}
	if err := core.Normalize(in); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx(t), in); err != nil {
		t.Fatalf("Register at the limits: %v", err)
	}
	svc := mustLoad(t, s, name)
	if len(svc.Instances) != 1 {
		t.Fatalf("Load = %+v", svc)
	}
	sameInstance(t, &svc.Instances[0], in)
}

// testConcurrentConfig: concurrent SetConfig calls get distinct config
// revisions, and the history keeps the newest.
func testConcurrentConfig(t *testing.T, s core.Store) {
	cs, ok := s.(core.ConfigStore)
	if !ok {
		t.Skip("store has no ConfigStore")
	}
	const n = 20
	var wg sync.WaitGroup
	revs := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			_, cr, err := cs.SetConfig(ctx(t), "db_svc", fmt.Appendf(nil, `{"v":%d}`, i), t0, 5)
			if err != nil {
				t.Error(err)
			}
			revs[i] = cr
		})
	}
	wg.Wait()
	slices.Sort(revs)
	for i, r := range revs {
		if r != int64(i+1) {
			t.Fatalf("config revisions %v; want 1..%d", revs, n)
		}
	}
	hist, err := cs.ConfigHistory(ctx(t), "db_svc")
	if err != nil || len(hist) != 5 || hist[0].Revision != n {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	svc := mustLoad(t, s, "db_svc")
	if svc.ConfigRevision != n || svc.Revision != n || string(svc.Config) != string(hist[0].Config) {
		t.Fatalf("Load = %+v; newest history %s", svc, hist[0].Config)
	}
}

// testConcurrentConfigSwaps: of concurrent SetConfigIf calls that expect
// the same configuration revision exactly one is stored; the others get a
// ConfigConflictError naming the revision it stored, and write nothing.
// Expecting 0 creates a service, and is refused once it has a configuration
// (and a service without one takes it).
func testConcurrentConfigSwaps(t *testing.T, s core.Store) {
	sw, ok := s.(core.ConfigSwapper)
	if !ok {
		t.Skip("store has no ConfigSwapper")
	}
	cs := s.(core.ConfigStore)
	if _, _, err := sw.SetConfigIf(ctx(t), "db_svc", []byte(`{"v":0}`), t0, 5, 1); !errors.Is(err, core.ErrConflict) {
		t.Fatalf("SetConfigIf(1) of an unknown service = %v; want ErrConflict", err)
	}
	if _, err := s.Load(ctx(t), "db_svc"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Load after a refused SetConfigIf = %v; want ErrNotFound", err)
	}
	if _, cr, err := sw.SetConfigIf(ctx(t), "db_svc", []byte(`{"v":0}`), t0, 5, 0); err != nil || cr != 1 {
		t.Fatalf("SetConfigIf(0) of an unknown service = %d, %v; want config revision 1", cr, err)
	}
	const n = 10
	var (
		wg   sync.WaitGroup
		won  atomic.Int32
		errs = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			_, cr, err := sw.SetConfigIf(ctx(t), "db_svc", fmt.Appendf(nil, `{"v":%d}`, i+1), t0, 5, 1)
			if err == nil && cr == 2 {
				won.Add(1)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d of %d SetConfigIf(1) stored (errors %v); want 1", won.Load(), n, errs)
	}
	for _, err := range errs {
		var ce *core.ConfigConflictError
		if err != nil && (!errors.As(err, &ce) || ce.Want != 1 || ce.Have != 2) {
			t.Fatalf("a losing SetConfigIf = %v; want a ConfigConflictError (want 1, have 2)", err)
		}
	}
	if hist, err := cs.ConfigHistory(ctx(t), "db_svc"); err != nil || len(hist) != 2 || hist[0].Revision != 2 {
		t.Fatalf("history = %+v, %v; want revisions 2, 1", hist, err)
	}
	if svc := mustLoad(t, s, "db_svc"); svc.ConfigRevision != 2 || svc.Revision != 2 {
		t.Fatalf("Load = %+v; want config revision 2, revision 2", svc)
	}
	if _, _, err := sw.SetConfigIf(ctx(t), "db_svc", []byte(`{}`), t0, 5, 0); !errors.Is(err, core.ErrConflict) {
		t.Fatalf("SetConfigIf(0) of a configured service = %v; want ErrConflict", err)
	}
	in := core.Instance{Service: "bare", ID: "a", Host: "10.0.0.1", Port: 80, Method: core.MethodHTTP, Weight: 100,
		RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if _, err := s.Register(ctx(t), &in); err != nil {
		t.Fatal(err)
	}
	if rev, cr, err := sw.SetConfigIf(ctx(t), "bare", []byte(`{}`), t0, 5, 0); err != nil || cr != 1 || rev != 2 {
		t.Fatalf("SetConfigIf(0) of a service without a configuration = %d, %d, %v; want 2, 1", rev, cr, err)
	}
}

// emptyService registers an instance of name and deregisters it, leaving
// the service with nothing, and returns its revision.
func emptyService(t *testing.T, s core.Store, name string) int64 {
	t.Helper()
	if _, err := s.Register(ctx(t), Instance(name, "a", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Deregister(ctx(t), name, "a")
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func serviceReaper(t *testing.T, s core.Store) core.ServiceReaper {
	t.Helper()
	sr, ok := s.(core.ServiceReaper)
	if !ok {
		t.Skip("store has no ServiceReaper")
	}
	return sr
}

// testReapServices: ReapServices deletes a service left with nothing once
// it was found so before the cutoff, at the revision it still has; a
// deleted service is gone from Load, Services and Revisions, and its name,
// created again by any write, starts above the revision of its deletion.
func testReapServices(t *testing.T, s core.Store) {
	sr := serviceReaper(t, s)
	reap := func(now, cutoff time.Time) string {
		t.Helper()
		changes, err := sr.ReapServices(ctx(t), now, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(changes)
	}
	revA := emptyService(t, s, "a")
	if revA != 2 {
		t.Fatalf("revision of a left with nothing = %d; want 2", revA)
	}
	emptyService(t, s, "b")
	emptyService(t, s, "b") // b at 4
	if _, err := s.Register(ctx(t), Instance("live", "a", t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	// Found with nothing at t0: deleted by no reap with a cutoff at or before t0.
	if got := reap(t0, t0.Add(-time.Minute)); got != "[]" {
		t.Fatalf("first ReapServices = %s; want nothing deleted (just found with nothing)", got)
	}
	if got := reap(t0.Add(time.Minute), t0); got != "[]" {
		t.Fatalf("ReapServices with the cutoff at the finding = %s; want nothing deleted", got)
	}
	// a changes (a write and its undoing): found again, later.
	emptyService(t, s, "a") // a at 4
	if got := reap(t0.Add(2*time.Minute), t0.Add(time.Second)); got != "[{b 5 true}]" {
		t.Fatalf("ReapServices = %s; want [{b 5 true}] (a changed since it was found with nothing)", got)
	}
	if _, err := s.Load(ctx(t), "b"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Load(b) after its deletion = %v; want ErrNotFound", err)
	}
	if infos, err := s.Services(ctx(t), t0); err != nil || fmt.Sprint(infos) != "[{a 4 0 0} {live 1 1 0}]" {
		t.Fatalf("Services after b's deletion = %v, %v; want [{a 4 0 0} {live 1 1 0}]", infos, err)
	}
	if rr, ok := s.(core.RevisionReader); ok {
		if revs, err := rr.Revisions(ctx(t), []string{"a", "b"}); err != nil || fmt.Sprint(revs) != "map[a:4]" {
			t.Fatalf("Revisions after b's deletion = %v, %v; want map[a:4]", revs, err)
		}
	}
	if got := reap(t0.Add(3*time.Minute), t0.Add(2*time.Minute)); got != "[]" {
		t.Fatalf("ReapServices = %s; want nothing (a found with nothing at 2 min, not before)", got)
	}
	if got := reap(t0.Add(4*time.Minute), t0.Add(2*time.Minute+time.Second)); got != "[{a 5 true}]" {
		t.Fatalf("ReapServices = %s; want [{a 5 true}] (gone)", got)
	}
	if infos, err := s.Services(ctx(t), t0); err != nil || fmt.Sprint(infos) != "[{live 1 1 0}]" {
		t.Fatalf("Services after a's deletion = %v, %v; want [{live 1 1 0}]", infos, err)
	}
	// Created again, by any write: above the revision of every deletion.
	rev, err := s.Register(ctx(t), Instance("b", "x", t0.Add(time.Hour)))
	if err != nil || rev <= 5 {
		t.Fatalf("Register of b after its deletion at 5 = %d, %v; want above 5", rev, err)
	}
	if svc := mustLoad(t, s, "b"); svc.Revision != rev || len(svc.Instances) != 1 {
		t.Fatalf("Load(b) = %+v; want its instance at revision %d", svc, rev)
	}
	if cs, ok := s.(core.ConfigStore); ok {
		rev, cfgRev, err := cs.SetConfig(ctx(t), "a", []byte(`{"x":1}`), t0, 20)
		if err != nil || rev <= 5 || cfgRev != 1 {
			t.Fatalf("SetConfig of a after its deletion at 5 = %d, %d, %v; want above 5, configuration revision 1", rev, cfgRev, err)
		}
	}
	// A name never deleted starts above too: the floor is the store's.
	if rev, err := s.Register(ctx(t), Instance("new", "x", t0.Add(time.Hour))); err != nil || rev <= 5 {
		t.Fatalf("Register of a new service after deletions at 5 = %d, %v; want above 5", rev, err)
	}
	if ks, ok := s.(core.KeyStore); ok {
		emptyService(t, s, "k")
		reap(t0.Add(5*time.Minute), t0.Add(4*time.Minute+30*time.Second))
		changes, err := sr.ReapServices(ctx(t), t0.Add(6*time.Minute), t0.Add(5*time.Minute+time.Second))
		if err != nil || len(changes) != 1 || changes[0].Service != "k" {
			t.Fatalf("ReapServices = %v, %v; want k deleted", changes, err)
		}
		rev, err := ks.PutKey(ctx(t), "k", core.PublicKey{ID: "k1", Algorithm: "EdDSA", Key: []byte{1}, CreatedAt: t0})
		if err != nil || rev <= changes[0].Revision {
			t.Fatalf("PutKey of k after its deletion at %d = %d, %v; want above it", changes[0].Revision, rev, err)
		}
	}
}

// testReapServicesKeeps: a service with an instance row (live or not yet
// reaped), a key (retired or not), a configuration (or a configuration
// history) is never deleted, however long ago it was found so.
func testReapServicesKeeps(t *testing.T, s core.Store) {
	sr := serviceReaper(t, s)
	if _, err := s.Register(ctx(t), Instance("expired", "a", t0.Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	want := "[expired]"
	if ks, ok := s.(core.KeyStore); ok {
		if _, err := ks.PutKey(ctx(t), "keyed", core.PublicKey{ID: "k", Algorithm: "EdDSA", Key: []byte{1}, CreatedAt: t0, RetiresAt: t0}); err != nil {
			t.Fatal(err)
		}
		want = "[expired keyed]"
	}
	if cs, ok := s.(core.ConfigStore); ok {
		emptyService(t, s, "configured")
		if _, _, err := cs.SetConfig(ctx(t), "configured", []byte(`{"x":1}`), t0, 1); err != nil {
			t.Fatal(err)
		}
		want = strings.Replace(want, "[", "[configured ", 1)
	}
	for i := range 3 {
		at := t0.Add(time.Duration(i) * time.Hour)
		if changes, err := sr.ReapServices(ctx(t), at, at.Add(-time.Minute)); err != nil || len(changes) != 0 {
			t.Fatalf("ReapServices = %v, %v; want nothing deleted", changes, err)
		}
	}
	infos, err := s.Services(ctx(t), t0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range infos {
		names = append(names, in.Name)
	}
	if fmt.Sprint(names) != want {
		t.Fatalf("Services = %v; want %s, none deleted", names, want)
	}
}

// testReapServicesRevokedKeys: a revocation outlives the deletion of its
// service: its key is refused when the name comes back.
func testReapServicesRevokedKeys(t *testing.T, s core.Store) {
	sr := serviceReaper(t, s)
	ks, ok := s.(core.KeyStore)
	if !ok {
		t.Skip("store has no KeyStore")
	}
	leaked := core.PublicKey{ID: "leaked", Algorithm: "EdDSA", Key: []byte{7, 7}, CreatedAt: t0}
	if _, err := ks.PutKey(ctx(t), "svc", leaked); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.RevokeKey(ctx(t), "svc", "leaked", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reap(ctx(t), t0.Add(time.Minute)); err != nil { // the key's row goes
		t.Fatal(err)
	}
	if _, err := sr.ReapServices(ctx(t), t0, t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if changes, err := sr.ReapServices(ctx(t), t0.Add(time.Hour), t0.Add(time.Minute)); err != nil || len(changes) != 1 {
		t.Fatalf("ReapServices = %v, %v; want svc deleted", changes, err)
	}
	again := leaked
	again.ID = "again"
	if _, err := ks.PutKey(ctx(t), "svc", again); !errors.Is(err, core.ErrRevoked) {
		t.Fatalf("PutKey of the revoked key after its service's deletion = %v; want ErrRevoked", err)
	}
}

// testReapServicesRaces races a deletion with the writes that create a
// service again, many times: a write is never lost, never fails, and the
// service's revision never goes back. Either the write comes first (the
// service is kept) or the deletion does (the write creates the service
// again, above the deletion's revision).
func testReapServicesRaces(t *testing.T, s core.Store) {
	sr := serviceReaper(t, s)
	cs, _ := s.(core.ConfigStore)
	ks, _ := s.(core.KeyStore)
	const rounds = 150
	at := t0
	deleted, kept := 0, 0
	for i := range rounds {
		// Names come back for registrations; a configuration or a key
		// keeps its service for good, so those take a name of their own.
		kind := i % 3
		if cs == nil && kind == 1 || ks == nil && kind == 2 {
			kind = 0
		}
		name := fmt.Sprintf("r%03d", i%10)
		if kind != 0 {
			name = fmt.Sprintf("w%03d", i)
		}
		last := emptyService(t, s, name)
		// Found with nothing now; the next reap deletes it. (Rounds 10 s
		// apart, past the quarter of their delays within which a store may
		// skip one.)
		if _, err := sr.ReapServices(ctx(t), at, at.Add(-4*time.Second)); err != nil {
			t.Fatal(err)
		}
		at = at.Add(10 * time.Second)
		var (
			wg      sync.WaitGroup
			changes []core.Change
			reapErr error
			rev     int64
			werr    error
		)
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			changes, reapErr = sr.ReapServices(ctx(t), at, at.Add(-time.Second))
		})
		wg.Go(func() {
			<-start
			switch kind {
			case 1:
				rev, _, werr = cs.SetConfig(ctx(t), name, []byte(`{"round":1}`), t0, 5)
			case 2:
				rev, werr = ks.PutKey(ctx(t), name, core.PublicKey{ID: "k", Algorithm: "EdDSA", Key: []byte{byte(i)}, CreatedAt: t0})
			default:
				rev, werr = s.Register(ctx(t), Instance(name, "w", t0.Add(time.Hour)))
			}
		})
		close(start)
		wg.Wait()
		at = at.Add(10 * time.Second)
		if reapErr != nil || werr != nil {
			t.Fatalf("round %d: ReapServices = %v; the write = %v; want neither to fail", i, reapErr, werr)
		}
		var del int64
		for _, ch := range changes {
			if ch.Service == name {
				del = ch.Revision
			}
		}
		svc := mustLoad(t, s, name) // the write is never lost
		switch {
		case svc.Revision != rev:
			t.Fatalf("round %d: %s at revision %d after the write returned %d", i, name, svc.Revision, rev)
		case rev <= last || del != 0 && rev <= del:
			t.Fatalf("round %d: the write's revision %d; want above %d (before) and %d (the deletion's)", i, rev, last, del)
		case del != 0 && del <= last:
			t.Fatalf("round %d: deletion at revision %d; want above %d", i, del, last)
		}
		if del != 0 {
			deleted++
		} else {
			kept++
		}
		if kind == 0 { // left with nothing again, for the next round of its name
			if _, err := s.Deregister(ctx(t), name, "w"); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d rounds: the deletion came first %d times, the write %d times", rounds, deleted, kept)
}
