package discovery_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

func pkix(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func edKey(t testing.TB, kid string) discovery.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return discovery.PublicKey{ID: kid, Algorithm: "EdDSA", Key: pkix(t, pub)}
}

func ecKey(t testing.TB, curve elliptic.Curve) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pkix(t, &k.PublicKey)
}

// eventually waits (in real time) for a change to reach another process. In
// worlds where nothing announces changes (SQL without Redis) only the end of
// the freshness window brings it, so fake time moves there.
func eventually(t *testing.T, w *world, clock *discoverytest.Clock, what string, cond func() bool) {
	t.Helper()
	noFanOut := w.db != nil && w.rdb == nil
	waitFor(t, 5*time.Second, what, func() bool {
		if cond() {
			return true
		}
		if noFanOut {
			clock.Advance(time.Second)
		}
		return false
	})
}

func TestPublishKeyValidatesBeforeWriting(t *testing.T) {
	ed := edKey(t, "k1")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		service string
		key     discovery.PublicKey
		field   string
	}{
		{"bad service", "a/b", ed, "service name"},
		{"sql kid", "db_svc", discovery.PublicKey{ID: "1' OR '1'='1", Algorithm: "EdDSA", Key: ed.Key}, "key id"},
		{"path kid", "db_svc", discovery.PublicKey{ID: "../../etc/passwd", Algorithm: "EdDSA", Key: ed.Key}, "key id"},
		{"empty kid", "db_svc", discovery.PublicKey{Algorithm: "EdDSA", Key: ed.Key}, "key id"},
		{"HS256", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "HS256", Key: ed.Key}, "key algorithm"},
		{"none", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "none", Key: ed.Key}, "key algorithm"},
		{"RS256", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "RS256", Key: pkix(t, &rsaKey.PublicKey)}, "key algorithm"},
		{"empty key", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "EdDSA"}, "key"},
		{"garbage key", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "EdDSA", Key: []byte("not DER")}, "key"},
		{"Ed25519 key as ES256", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "ES256", Key: ed.Key}, "key"},
		{"P-256 key as EdDSA", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "EdDSA", Key: ecKey(t, elliptic.P256())}, "key"},
		{"P-384 key as ES256", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "ES256", Key: ecKey(t, elliptic.P384())}, "key"},
		{"RSA key as ES256", "db_svc", discovery.PublicKey{ID: "k", Algorithm: "ES256", Key: pkix(t, &rsaKey.PublicKey)}, "key"},
	}
	forEachWorld(t, func(t *testing.T, w *world) {
		r := w.registry(t)
		ctx := context.Background()
		for _, tt := range tests {
			err := r.PublishKey(ctx, tt.service, tt.key)
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
				t.Errorf("%s: PublishKey = %v; want a ValidationError on %q", tt.name, err, tt.field)
			}
		}
		if infos, err := r.Services(ctx); err != nil || len(infos) != 0 {
			t.Fatalf("invalid keys wrote: %+v, %v", infos, err)
		}
		if err := r.RetireKey(ctx, "db_svc", "1' OR '1'='1", t0); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("RetireKey(sql kid) = %v; want ErrInvalid", err)
		}
		if err := r.RetireKey(ctx, "db_svc", "k", time.Time{}); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("RetireKey(zero time) = %v; want ErrInvalid", err)
		}
		if err := r.RetireKey(ctx, "db_svc", "k", t0); !errors.Is(err, discovery.ErrNotFound) {
			t.Errorf("RetireKey(unknown) = %v; want ErrNotFound", err)
		}
		// A service with keys, but not this one: the error names the key
		// as a key, not as an instance.
		if err := r.PublishKey(ctx, "db_svc", ed); err != nil {
			t.Fatal(err)
		}
		err := r.RetireKey(ctx, "db_svc", "k2", t0)
		var nf *discovery.NotFoundError
		if !errors.As(err, &nf) || nf.Service != "db_svc" || nf.Key != "k2" || nf.Instance != "" {
			t.Errorf("RetireKey(unknown key) = %#v; want a NotFoundError with Key k2", err)
		} else if want := `discovery: key "k2" of service "db_svc" not found`; err.Error() != want {
			t.Errorf("RetireKey(unknown key) says %q; want %q", err, want)
		}
	})
}

// A key published by one process is seen by another, and so is its
// retirement: keys travel with the service's snapshot through every layer.
func TestKeysTravelBetweenProcesses(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		a := w.registry(t, discovery.WithClock(clock))
		b := w.registry(t, discovery.WithClock(clock))
		k1, k2 := edKey(t, "k1"), discovery.PublicKey{ID: "k2", Algorithm: "ES256", Key: ecKey(t, elliptic.P256())}
		if _, err := b.Keys(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Keys before any key = %v; want ErrNotFound", err)
		}
		if err := a.PublishKey(ctx, "db_svc", k1); err != nil {
			t.Fatal(err)
		}
		keys, err := a.Keys(ctx, "db_svc")
		if err != nil || len(keys) != 1 || keys[0].ID != "k1" || !keys[0].CreatedAt.Equal(t0) || string(keys[0].Key) != string(k1.Key) {
			t.Fatalf("Keys after PublishKey on the same Registry = %+v, %v; want k1 created at t0", keys, err)
		}
		eventually(t, w, clock, "k1 in the other process", func() bool {
			keys, err := b.Keys(ctx, "db_svc")
			return err == nil && len(keys) == 1
		})
		if err := a.PublishKey(ctx, "db_svc", k2); err != nil {
			t.Fatal(err)
		}
		if keys, _ := a.Keys(ctx, "db_svc"); len(keys) != 2 || keys[1].ID != "k2" || keys[1].Algorithm != "ES256" {
			t.Fatalf("Keys = %+v; want k1, k2", keys)
		}
		eventually(t, w, clock, "k2 in the other process", func() bool {
			keys, _ := b.Keys(ctx, "db_svc")
			return len(keys) == 2
		})
		retire := clock.Now().Add(time.Minute)
		if err := a.RetireKey(ctx, "db_svc", "k1", retire); err != nil {
			t.Fatal(err)
		}
		if keys, _ := a.Keys(ctx, "db_svc"); !keys[0].RetiresAt.Equal(retire) {
			t.Fatalf("after RetireKey on the same Registry: %+v", keys[0])
		}
		eventually(t, w, clock, "the retirement in the other process", func() bool {
			keys, _ := b.Keys(ctx, "db_svc")
			return len(keys) == 2 && keys[0].RetiresAt.Equal(retire)
		})
		// A service with keys and no instance: Snapshot has it, Get does not.
		if svc, err := b.Snapshot(ctx, "db_svc"); err != nil || svc.Key("k2") == nil || len(svc.Instances) != 0 {
			t.Fatalf("Snapshot = %+v, %v", svc, err)
		}
		if _, err := b.Get(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Get of a service without instances = %v; want ErrNotFound", err)
		}
	})
}

// Keys returns a copy: changing it changes nothing the Registry holds.
func TestKeysReturnsACopy(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ctx := context.Background()
	if err := r.PublishKey(ctx, "db_svc", edKey(t, "k1")); err != nil {
		t.Fatal(err)
	}
	keys, _ := r.Keys(ctx, "db_svc")
	want := string(keys[0].Key)
	keys[0].Key[0] ^= 0xff
	keys[0].ID = "changed"
	again, _ := r.Keys(ctx, "db_svc")
	if again[0].ID != "k1" || string(again[0].Key) != want {
		t.Fatalf("modifying the result of Keys changed the Registry's copy: %+v", again[0])
	}
	refreshed, _ := r.RefreshKeys(ctx, "db_svc")
	refreshed[0].Key[0] ^= 0xff
	if again, _ := r.Keys(ctx, "db_svc"); string(again[0].Key) != want {
		t.Fatal("modifying the result of RefreshKeys changed the Registry's copy")
	}
}

// quietStore hides the backend's change notifications, standing for a
// process that missed a change message.
type quietStore struct {
	discovery.Store
	discovery.KeyStore
}

// RefreshKeys reads the database past a stale cache, exactly once per call,
// and leaves the new snapshot in the cache.
func TestRefreshKeysReadsTheDatabase(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(quietStore{backend, backend}),
		discovery.WithClock(clock), discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithoutHealthChecks())
	if err := r.PublishKey(ctx, "db_svc", edKey(t, "k1")); err != nil {
		t.Fatal(err)
	}
	if keys, err := r.Keys(ctx, "db_svc"); err != nil || len(keys) != 1 {
		t.Fatalf("Keys = %+v, %v", keys, err)
	}
	// Another process publishes k2; this one is not told.
	if _, err := backend.PutKey(ctx, "db_svc", edKey(t, "k2")); err != nil {
		t.Fatal(err)
	}
	loads := backend.Loads()
	if keys, _ := r.Keys(ctx, "db_svc"); len(keys) != 1 || backend.Loads() != loads {
		t.Fatalf("Keys = %d keys after %d loads; want the cached single key and no load", len(keys), backend.Loads()-loads)
	}
	keys, err := r.RefreshKeys(ctx, "db_svc")
	if err != nil || len(keys) != 2 || keys[1].ID != "k2" || backend.Loads() != loads+1 {
		t.Fatalf("RefreshKeys = %+v, %v after %d loads; want k1, k2 after one load", keys, err, backend.Loads()-loads)
	}
	if keys, _ := r.Keys(ctx, "db_svc"); len(keys) != 2 || backend.Loads() != loads+1 {
		t.Fatalf("Keys after RefreshKeys = %d keys after %d loads; want 2 from the cache", len(keys), backend.Loads()-loads)
	}
	loads = backend.Loads()
	if _, err := r.RefreshKeys(ctx, "a/b"); !errors.Is(err, discovery.ErrInvalid) || backend.Loads() != loads {
		t.Fatalf("RefreshKeys(invalid) = %v after %d loads; want ErrInvalid before any load", err, backend.Loads()-loads)
	}
	if _, err := r.RefreshKeys(ctx, "nope"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("RefreshKeys(unknown) = %v; want ErrNotFound", err)
	}
	backend.SetFailure(errors.New("down"))
	defer backend.SetFailure(nil)
	if _, err := r.RefreshKeys(ctx, "db_svc"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("RefreshKeys with the database down = %v; want ErrUnavailable", err)
	}
}

type bareStore struct{ discovery.Store }

func TestKeysWithoutKeyStore(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStore(bareStore{discoverytest.NewBackend()}), discovery.WithoutHealthChecks())
	ctx := context.Background()
	if err := r.PublishKey(ctx, "db_svc", edKey(t, "k1")); !errors.Is(err, discovery.ErrUnsupported) {
		t.Fatalf("PublishKey = %v; want ErrUnsupported", err)
	}
	if err := r.RetireKey(ctx, "db_svc", "k1", t0); !errors.Is(err, discovery.ErrUnsupported) {
		t.Fatalf("RetireKey = %v; want ErrUnsupported", err)
	}
}

func TestKeysAfterClose(t *testing.T) {
	r, err := discovery.New()
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	ctx := context.Background()
	for name, err := range map[string]error{
		"PublishKey":  r.PublishKey(ctx, "db_svc", edKey(t, "k1")),
		"RetireKey":   r.RetireKey(ctx, "db_svc", "k1", t0),
		"Keys":        func() error { _, err := r.Keys(ctx, "db_svc"); return err }(),
		"RefreshKeys": func() error { _, err := r.RefreshKeys(ctx, "db_svc"); return err }(),
		"Snapshot":    func() error { _, err := r.Snapshot(ctx, "db_svc"); return err }(),
	} {
		if !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
}

func TestValidators(t *testing.T) {
	tests := []struct {
		name string
		fn   func(string) error
		in   string
		ok   bool
	}{
		{"service", discovery.ValidateServiceName, "db_svc", true},
		{"service", discovery.ValidateServiceName, "a/b", false},
		{"instance", discovery.ValidateInstanceID, "10.0.0.1:80", true},
		{"instance", discovery.ValidateInstanceID, "a'b", false},
		{"kid", discovery.ValidateKeyID, "Ab0_-", true},
		{"kid", discovery.ValidateKeyID, "1' OR '1'='1", false},
		{"kid", discovery.ValidateKeyID, "../../etc/passwd", false},
		{"kid", discovery.ValidateKeyID, strings.Repeat("k", 65), false},
	}
	for _, tt := range tests {
		if err := tt.fn(tt.in); (err == nil) != tt.ok || err != nil && !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("%s %q: %v; want ok=%v", tt.name, tt.in, err, tt.ok)
		}
	}
}

type fakeSource string

func (s fakeSource) Token(context.Context, string) (string, error) { return string(s), nil }

type fakeAuthorizer struct{ id *discovery.Identity }

func (a fakeAuthorizer) Authorize(*http.Request) (*discovery.Identity, error) { return a.id, nil }

func TestAuthSeams(t *testing.T) {
	backend := discoverytest.NewBackend()
	plain := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	if plain.TokenSource() != nil || plain.Authorizer() != nil {
		t.Fatal("a Registry without seams has some")
	}
	id := &discovery.Identity{Service: "admin"}
	r := discoverytest.NewRegistry(t, backend, discovery.WithTokenSource(fakeSource("a")), discovery.WithAuthorizer(fakeAuthorizer{id}), discovery.WithoutHealthChecks())
	if tok, _ := r.TokenSource().Token(context.Background(), "x"); tok != "a" {
		t.Fatalf("TokenSource gave %q; want the one of WithTokenSource", tok)
	}
	if got, _ := r.Authorizer().Authorize(nil); got != id {
		t.Fatalf("Authorizer gave %v; want the one of WithAuthorizer", got)
	}
	r.SetTokenSource(fakeSource("b"))
	if tok, _ := r.TokenSource().Token(context.Background(), "x"); tok != "b" {
		t.Fatalf("TokenSource after SetTokenSource gave %q", tok)
	}
	if plain.TokenSource() != nil {
		t.Fatal("SetTokenSource on one Registry changed another")
	}
	r.SetTokenSource(nil)
	r.SetAuthorizer(nil)
	if r.TokenSource() != nil || r.Authorizer() != nil {
		t.Fatal("setting nil did not remove the seams")
	}
}

func TestIdentityHasScope(t *testing.T) {
	id := &discovery.Identity{Scopes: []string{"read", "write"}}
	if !id.HasScope("write") || id.HasScope("admin") || id.HasScope("") {
		t.Fatal("HasScope is wrong")
	}
}

// A key time the database cannot hold (Unix nanoseconds, 1677 to 2262) is
// refused before anything is written: the SQL stores kept its overflowed
// value, so a key retired "in 2300" (or 9999-12-31, the usual "never")
// came back retired since the 1700s, revoked at once, where the in-memory
// store kept it verifying.
func TestKeyTimesBeyondTheDatabaseAreInvalid(t *testing.T) {
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	forEachWorld(t, func(t *testing.T, w *world) {
		r := w.registry(t)
		ctx := context.Background()
		k := edKey(t, "k1")
		k.CreatedAt = t0
		for _, tt := range []struct {
			name string
			key  discovery.PublicKey
		}{
			{"retires in 2300", discovery.PublicKey{ID: k.ID, Algorithm: k.Algorithm, Key: k.Key, CreatedAt: t0, RetiresAt: far}},
			{"created in 1600", discovery.PublicKey{ID: k.ID, Algorithm: k.Algorithm, Key: k.Key, CreatedAt: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}},
		} {
			if err := r.PublishKey(ctx, "db_svc", tt.key); !errors.Is(err, discovery.ErrInvalid) {
				t.Errorf("PublishKey(%s) = %v; want ErrInvalid", tt.name, err)
			}
		}
		if err := r.PublishKey(ctx, "db_svc", k); err != nil {
			t.Fatal(err)
		}
		if err := r.RetireKey(ctx, "db_svc", k.ID, far); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("RetireKey(2300) = %v; want ErrInvalid", err)
		}
		keys, err := r.Keys(ctx, "db_svc")
		if err != nil || len(keys) != 1 || !keys[0].RetiresAt.IsZero() || !keys[0].CreatedAt.Equal(t0) {
			t.Fatalf("Keys = %+v, %v; want k1 created at %v, never retiring", keys, err, t0)
		}
	})
}

// The reaper deletes keys that retired its delay ago, as it deletes expired
// instances: every Signer start and rotation publishes a key, and without
// this they piled up in every snapshot of the service forever.
func TestReaperDeletesRetiredKeys(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute))
		old, live := edKey(t, "old"), edKey(t, "live")
		old.RetiresAt = t0.Add(time.Second)
		for _, k := range []discovery.PublicKey{old, live} {
			if err := r.PublishKey(ctx, "db_svc", k); err != nil {
				t.Fatal(err)
			}
		}
		reapFor80s(clock)
		svc, err := r.Store().Load(ctx, "db_svc")
		if err != nil || len(svc.Keys) != 1 || svc.Keys[0].ID != "live" || svc.Revision != 3 {
			t.Fatalf("after reaping: %+v, %v; want the live key alone at revision 3", svc, err)
		}
		if keys, err := r.Keys(ctx, "db_svc"); err != nil || len(keys) != 1 || keys[0].ID != "live" {
			t.Fatalf("Keys after reaping = %+v, %v; want the live key alone", keys, err)
		}
	})
}

// A retirement at the Unix epoch is refused, and changes nothing. The SQL
// stores and the cache encoding keep "never" as 0 Unix nanoseconds, which
// is also the epoch's: a revocation with time.Unix(0, 0) ("retired since
// always") came back as never retiring, undoing the key's scheduled
// retirement, where the in-memory store kept it retired.
func TestKeyRetirementAtTheEpochIsInvalid(t *testing.T) {
	epoch := time.Unix(0, 0)
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		r := w.registry(t, discovery.WithReaper(0, 0))
		scheduled, published := edKey(t, "scheduled"), edKey(t, "published")
		scheduled.CreatedAt, scheduled.RetiresAt = t0, t0.Add(time.Hour)
		published.CreatedAt, published.RetiresAt = t0, epoch
		if err := r.PublishKey(ctx, "db_svc", published); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("PublishKey(retiring at the epoch) = %v; want ErrInvalid", err)
		}
		if err := r.PublishKey(ctx, "db_svc", scheduled); err != nil {
			t.Fatal(err)
		}
		if err := r.RetireKey(ctx, "db_svc", scheduled.ID, epoch); !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("RetireKey(the epoch) = %v; want ErrInvalid", err)
		}
		svc, err := r.Store().Load(ctx, "db_svc")
		if err != nil || len(svc.Keys) != 1 || !svc.Keys[0].RetiresAt.Equal(scheduled.RetiresAt) {
			t.Fatalf("Load = %+v, %v; want the scheduled key alone, retiring at %v", svc, err, scheduled.RetiresAt)
		}
	})
}

// A revocation (RetireKey at or before now) is for good: the revoked key is
// refused by PublishKey, under its ID or another, before and after the
// reaper deletes its row, and so is any key under the revoked ID. Before,
// publishing it again made it trusted again. A rotation (a retirement in
// the future) is no revocation: that key may be published again, as a
// Signer restarted WithKey does.
func TestRevokedKeyIsNeverPublishedAgain(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		r := w.registry(t, discovery.WithClock(clock), discovery.WithReaper(10*time.Second, time.Minute))
		leaked, rotated := edKey(t, "leaked"), edKey(t, "rotated")
		for _, k := range []discovery.PublicKey{leaked, rotated} {
			if err := r.PublishKey(ctx, "db_svc", k); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.RetireKey(ctx, "db_svc", "leaked", clock.Now()); err != nil {
			t.Fatal(err)
		}
		if err := r.RetireKey(ctx, "db_svc", "rotated", clock.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		renamed := leaked
		renamed.ID = "renamed"
		check := func(when string) {
			t.Helper()
			for _, k := range []discovery.PublicKey{leaked, renamed, edKey(t, "leaked")} {
				err := r.PublishKey(ctx, "db_svc", k)
				var re *discovery.RevokedKeyError
				if !errors.Is(err, discovery.ErrRevoked) || !errors.As(err, &re) || re.RevokedID != "leaked" {
					t.Fatalf("%s: PublishKey(%s) = %v; want a RevokedKeyError naming leaked", when, k.ID, err)
				}
			}
			keys, err := r.RefreshKeys(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if k.ID != "rotated" && (k.ID != "leaked" || k.RetiresAt.After(clock.Now())) {
					t.Fatalf("%s: a refused PublishKey wrote: keys %+v", when, keys)
				}
			}
		}
		check("before the reaper")
		reapFor80s(clock)
		if keys, err := r.RefreshKeys(ctx, "db_svc"); err != nil || len(keys) != 0 {
			t.Fatalf("after reaping: %+v, %v; want no key", keys, err)
		}
		check("after the reaper")
		if err := r.PublishKey(ctx, "db_svc", rotated); err != nil {
			t.Fatalf("PublishKey of a retired, not revoked, key = %v; want it published", err)
		}
	})
}
