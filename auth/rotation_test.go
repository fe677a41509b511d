package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

func reason(err error) string {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return ae.Reason
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// Rotation across two processes in every world: the new key signs at once,
// the old one still verifies until its retirement (token lifetime plus
// MaxLeeway after the rotation), then fails because it is retired; a
// revocation (retirement now) reaches the verifying process within one
// cache refresh.
func TestRotationAcrossProcesses(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		clock := discoverytest.NewClock(t0)
		a := w.registry(t, discovery.WithClock(clock)) // orders' process
		b := w.registry(t, discovery.WithClock(clock)) // inventory's process
		_, oldPriv, _ := ed25519.GenerateKey(rand.Reader)
		signer, err := auth.NewSigner(ctx, a, "orders", auth.WithClock(clock), auth.WithKey("k-old", oldPriv))
		if err != nil {
			t.Fatal(err)
		}
		verifier, err := auth.NewVerifier(b, "inventory", auth.WithClock(clock))
		if err != nil {
			t.Fatal(err)
		}
		tok1, _ := signer.Token(ctx, "inventory")
		if _, err := verifier.Verify(ctx, tok1); err != nil {
			t.Fatalf("the first token: %v", err)
		}
		clock.Advance(10 * time.Second)
		if err := signer.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		rotatedAt := clock.Now()
		newKid := signer.KeyID()
		tok2, _ := signer.Token(ctx, "inventory")
		if newKid == "k-old" || tok2 == tok1 || kidOf(t, tok2) != newKid {
			t.Fatalf("after Rotate the signer still signs with the old key (kid %s)", kidOf(t, tok2))
		}
		// Where b was not told (SQL without Redis), the unknown kid makes it
		// read the database once.
		if id, err := verifier.Verify(ctx, tok2); err != nil || id.KeyID != newKid {
			t.Fatalf("a token of the new key in the other process: %v, %v", id, err)
		}
		if _, err := verifier.Verify(ctx, tok1); err != nil {
			t.Fatalf("a token of the old key before its retirement: %v", err)
		}
		keys, _ := a.Keys(ctx, "orders")
		retire := rotatedAt.Add(auth.DefaultTokenLifetime + auth.MaxLeeway)
		if old := findKey(keys, "k-old"); old == nil || !old.RetiresAt.Equal(retire) {
			t.Fatalf("the old key retires at %v; want %v", old, retire)
		}
		// A token the old key signs just before its retirement (no Signer
		// would; an attacker holding it might) verifies; at the retirement it
		// is refused because the key is retired, not because it expired.
		clock.Set(retire.Add(-2 * time.Second))
		late := forge(t, jwt.SigningMethodEdDSA, oldPriv, "k-old", withClaims(func(c jwt.MapClaims) {
			now := clock.Now()
			c["sub"], c["iat"], c["nbf"], c["exp"] = "orders", now.Unix(), now.Unix(), now.Add(time.Minute).Unix()
		}), nil)
		if _, err := verifier.Verify(ctx, late); err != nil {
			t.Fatalf("the old key 2s before its retirement: %v", err)
		}
		clock.Set(retire)
		if _, err := verifier.Verify(ctx, late); reason(err) != "key retired" {
			t.Fatalf("the old key at its retirement: %v; want refused as retired", err)
		}
		// Revocation: retiring the current key now.
		tok3, _ := signer.Token(ctx, "inventory")
		if _, err := verifier.Verify(ctx, tok3); err != nil {
			t.Fatal(err)
		}
		if err := a.RetireKey(ctx, "orders", newKid, clock.Now()); err != nil {
			t.Fatal(err)
		}
		w.eventually(t, clock, "the revocation in the other process", func() bool {
			_, err := verifier.Verify(ctx, tok3)
			return reason(err) == "key retired"
		})
	})
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	p, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := p.Header["kid"].(string)
	return kid
}

func findKey(keys []discovery.PublicKey, kid string) *discovery.PublicKey {
	for i := range keys {
		if keys[i].ID == kid {
			return &keys[i]
		}
	}
	return nil
}

// quietStore hides the backend's change notifications: the verifying
// process misses every key change, as after a lost Redis message.
type quietStore struct {
	discovery.Store
	discovery.KeyStore
}

// An unknown kid makes the Verifier read the caller's keys from the
// database, at most once a minute per service.
func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	b := discoverytest.NewRegistry(t, backend, discovery.WithStore(quietStore{backend, backend}),
		discovery.WithClock(clock), discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithoutHealthChecks())
	orders, err := auth.NewSigner(ctx, a, "orders", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	billing, err := auth.NewSigner(ctx, a, "billing", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(b, "inventory", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	verify := func(s *auth.Signer) error {
		tok, err := s.Token(ctx, "inventory")
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(ctx, tok)
		return err
	}
	for _, s := range []*auth.Signer{orders, billing} { // cache both services' keys in b
		if err := verify(s); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		name    string
		advance time.Duration
		rotate  *auth.Signer
		signer  *auth.Signer
		reason  string
		loads   int64
	}{
		{"a new orders key: one refetch finds it", 0, orders, orders, "ok", 1},
		{"another new orders key within the minute: no refetch", 0, orders, orders, "unknown key", 0},
		{"and again: no refetch", 30 * time.Second, nil, orders, "unknown key", 0},
		{"billing has its own minute", 0, billing, billing, "ok", 1},
		{"a minute after the last orders refetch: one more", 30 * time.Second, nil, orders, "ok", 1},
		{"then known: no read at all", 0, nil, orders, "ok", 0},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		if st.rotate != nil {
			if err := st.rotate.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// b's own reads: the Signer reads its key's retirement in a
		loads := b.Stats().StoreReads
		if got := reason(verify(st.signer)); got != st.reason {
			t.Fatalf("%s: %s; want %s", st.name, got, st.reason)
		}
		if got := int64(b.Stats().StoreReads - loads); got != st.loads {
			t.Fatalf("%s: %d database reads; want %d", st.name, got, st.loads)
		}
	}
}

// A Signer rotates by itself after half its key lifetime; while the
// database is down it goes on with the current key as long as that key
// outlives a token, and then refuses to sign.
func TestSignerRotatesByItself(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	core, logs := observer.New(zap.WarnLevel)
	reg := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	s, err := auth.NewSigner(ctx, reg, "orders", auth.WithClock(clock), auth.WithKeyLifetime(time.Hour), auth.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	k1 := s.KeyID()
	keys, _ := reg.Keys(ctx, "orders")
	if len(keys) != 1 || !keys[0].RetiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("published %+v; want one key retiring after the key lifetime", keys)
	}
	clock.Advance(29 * time.Minute)
	if _, _ = s.Token(ctx, "inventory"); s.KeyID() != k1 {
		t.Fatal("rotated before half the key lifetime")
	}
	clock.Advance(time.Minute)
	if _, _ = s.Token(ctx, "inventory"); s.KeyID() == k1 {
		t.Fatal("did not rotate at half the key lifetime")
	}
	k2 := s.KeyID()
	keys, _ = reg.Keys(ctx, "orders")
	if old := findKey(keys, k1); !old.RetiresAt.Equal(clock.Now().Add(auth.DefaultTokenLifetime + auth.MaxLeeway)) {
		t.Fatalf("the rotated key retires at %v", old.RetiresAt)
	}

	// Half a lifetime later the database is down: the rotation fails, the
	// current key signs on (it outlives a token), and the failure is logged.
	backend.SetFailure(errors.New("database down"))
	clock.Advance(30 * time.Minute)
	if tok, err := s.Token(ctx, "inventory"); err != nil || kidOf(t, tok) != k2 {
		t.Fatalf("with a rotation due and the database down: %v; want a token of the current key", err)
	}
	if logs.FilterMessage("discovery: auth: key rotation failed; signing with the current key").Len() != 1 {
		t.Fatal("the failed rotation was not logged")
	}
	// Close to the key's end no token of it could live its lifetime.
	clock.Advance(30*time.Minute - auth.DefaultTokenLifetime - auth.MaxLeeway + time.Second)
	if _, err := s.Token(ctx, "billing"); err == nil {
		t.Fatal("signed with a key that retires before the token expires")
	}
	backend.SetFailure(nil)
	tok, err := s.Token(ctx, "billing")
	if err != nil || s.KeyID() == k2 || kidOf(t, tok) != s.KeyID() {
		t.Fatalf("with the database back: %v; want a token of a new key", err)
	}
}

// An ES256 signer's tokens verify, and its keys are published as ES256.
func TestES256(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	reg := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	s, err := auth.NewSigner(ctx, reg, "orders", auth.WithAlgorithm(auth.ES256))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(reg, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.Token(ctx, "inventory")
	if id, err := v.Verify(ctx, tok); err != nil || id.Service != "orders" {
		t.Fatalf("an ES256 token: %v, %v", id, err)
	}
	if err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := reg.Keys(ctx, "orders")
	if len(keys) != 2 || keys[0].Algorithm != auth.ES256 || keys[1].Algorithm != auth.ES256 {
		t.Fatalf("keys = %+v; want two ES256 keys", keys)
	}
}

// A key ID whose key is replaced verifies with the new key only: the
// verifier's parsed-key cache follows the published bytes, not the ID.
func TestReplacedKeyIsNotCached(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tokA := f.token(t, "inventory")
	if _, err := f.verifier.Verify(ctx, tokA); err != nil {
		t.Fatal(err)
	}
	_, privB, _ := ed25519.GenerateKey(rand.Reader)
	if err := f.caller.PublishKey(ctx, "orders", discovery.PublicKey{ID: f.kid, Algorithm: auth.EdDSA, Key: mustDER(t, privB.Public())}); err != nil {
		t.Fatal(err)
	}
	tokB := forge(t, jwt.SigningMethodEdDSA, privB, f.kid, goodClaims(), nil)
	waitFor(t, "the replaced key in the verifying process", func() bool {
		_, err := f.verifier.Verify(ctx, tokB)
		return err == nil
	})
	if _, err := f.verifier.Verify(ctx, tokA); reason(err) != "bad signature" {
		t.Fatalf("a token of the replaced key: %v; want bad signature", err)
	}
}

// A stored key that does not parse (written past PublishKey's validation)
// verifies nothing.
func TestUnusableStoredKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.backend.PutKey(ctx, "orders", discovery.PublicKey{ID: "broken", Algorithm: auth.EdDSA, Key: []byte("not DER")}); err != nil {
		t.Fatal(err)
	}
	tok := forge(t, jwt.SigningMethodEdDSA, f.priv, "broken", goodClaims(), nil)
	if _, err := f.verifier.Verify(ctx, tok); reason(err) != "unusable key" {
		t.Fatalf("a token under a key that does not parse: %v; want unusable key", err)
	}
	if _, err := f.backend.PutKey(ctx, "orders", discovery.PublicKey{ID: "mislabelled", Algorithm: auth.ES256, Key: f.pubDER}); err != nil {
		t.Fatal(err)
	}
	tok = forge(t, jwt.SigningMethodES256, mustECKey(t), "mislabelled", goodClaims(), nil)
	if _, err := f.verifier.Verify(ctx, tok); reason(err) != "unusable key" {
		t.Fatalf("a token under an Ed25519 key stored as ES256: %v; want unusable key", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Rotating after a revocation (the natural answer to a leaked key) must
// not bring the revoked key back: the rotation's retirement of the old key
// (token lifetime plus MaxLeeway from now) moved the revocation later, and
// the leaked key verified again until then.
func TestRotateKeepsARevocation(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	reg := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	_, leaked, _ := ed25519.GenerateKey(rand.Reader)
	s, err := auth.NewSigner(ctx, reg, "orders", auth.WithClock(clock), auth.WithKey("k-leaked", leaked))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RetireKey(ctx, "orders", "k-leaked", clock.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := s.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ := reg.Keys(ctx, "orders")
	if k := findKey(keys, "k-leaked"); k == nil || !k.RetiresAt.Equal(t0) {
		t.Fatalf("after Rotate the revoked key retires at %+v; want %v", k, t0)
	}
	forged := forge(t, jwt.SigningMethodEdDSA, leaked, "k-leaked", withClaims(func(c jwt.MapClaims) {
		now := clock.Now()
		c["sub"], c["iat"], c["nbf"], c["exp"] = "orders", now.Unix(), now.Unix(), now.Add(time.Minute).Unix()
	}), nil)
	if _, err := v.Verify(ctx, forged); reason(err) != "key retired" {
		t.Fatalf("a token of the revoked key after Rotate: %v; want refused as retired", err)
	}
	if tok, err := s.Token(ctx, "inventory"); err != nil || kidOf(t, tok) == "k-leaked" {
		t.Fatalf("after Rotate: %v; want a token of the new key", err)
	}
}

// failingRetire is a store whose key retirements fail while fail is set.
type failingRetire struct {
	*discoverytest.Backend
	fail atomic.Bool
}

func (s *failingRetire) RetireKey(ctx context.Context, service, kid string, at time.Time) (int64, error) {
	if s.fail.Load() {
		return 0, &discovery.BackendError{Backend: "test", Op: "retire key", Err: errors.New("down")}
	}
	return s.Backend.RetireKey(ctx, service, kid, at)
}

// A closed Signer signs no more, and the key it generated retires once the
// tokens it issued have expired, instead of staying trusted for the rest of
// its key lifetime (24 h) after the process that alone held it has gone.
// The tokens issued before Close still verify. A retirement that cannot be
// written is an error, and the next Close writes it.
func TestSignerCloseRetiresItsKey(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	store := &failingRetire{Backend: discoverytest.NewBackend()}
	reg, err := discovery.New(discovery.WithStore(store), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s, v, tok := ordersToInventory(t, reg, clock)
	kid := s.KeyID()
	clock.Advance(10 * time.Second)
	store.fail.Store(true)
	if err := s.Close(ctx); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Close with the retirement failing: %v; want ErrUnavailable", err)
	}
	if _, err := s.Token(ctx, "inventory"); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Token after Close: %v; want ErrClosed", err)
	}
	store.fail.Store(false)
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	want := clock.Now().Add(auth.DefaultTokenLifetime + auth.MaxLeeway)
	keys, _ := reg.Keys(ctx, "orders")
	if k := findKey(keys, kid); k == nil || !k.RetiresAt.Equal(want) {
		t.Fatalf("after Close the key retires at %+v; want %v", k, want)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("a token issued before Close: %v; want it verified until it expires", err)
	}
	clock.Advance(time.Minute)
	if err := s.Close(ctx); err != nil {
		t.Fatalf("a third Close: %v", err)
	}
	keys, _ = reg.Keys(ctx, "orders")
	if k := findKey(keys, kid); k == nil || !k.RetiresAt.Equal(want) {
		t.Fatalf("after a later Close the key retires at %+v; want %v still", k, want)
	}
	if _, err := s.Token(ctx, "inventory"); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Token after Close: %v; want ErrClosed", err)
	}
}

// A key given with WithKey may be every replica's: closing one Signer must
// not retire it for the others.
func TestSignerCloseKeepsAGivenKey(t *testing.T) {
	ctx := context.Background()
	reg := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	_, shared, _ := ed25519.GenerateKey(rand.Reader)
	a, err := auth.NewSigner(ctx, reg, "orders", auth.WithKey("k-shared", shared))
	if err != nil {
		t.Fatal(err)
	}
	b, err := auth.NewSigner(ctx, reg, "orders", auth.WithKey("k-shared", shared))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := reg.Keys(ctx, "orders")
	before := findKey(keys, "k-shared").RetiresAt // the end of its key lifetime
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _ = reg.Keys(ctx, "orders")
	if k := findKey(keys, "k-shared"); k == nil || !k.RetiresAt.Equal(before) {
		t.Fatalf("after one Signer's Close the shared key is %+v; want it kept, retiring at %v", k, before)
	}
	v, err := auth.NewVerifier(reg, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := b.Token(ctx, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("the other Signer's token: %v", err)
	}
}

// restoredStore stands for a database restored from a backup taken before
// a key was published: the key lost is in no snapshot any more.
type restoredStore struct {
	*discoverytest.Backend
	lost atomic.Pointer[string]
}

func (s *restoredStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	svc, err := s.Backend.Load(ctx, name)
	if kid := s.lost.Load(); err == nil && kid != nil && svc.Key(*kid) != nil {
		svc = svc.Clone()
		svc.Keys = slices.DeleteFunc(svc.Keys, func(k discovery.PublicKey) bool { return k.ID == *kid })
	}
	return svc, err
}

func (s *restoredStore) RetireKey(ctx context.Context, service, kid string, at time.Time) (int64, error) {
	if lost := s.lost.Load(); lost != nil && *lost == kid {
		return 0, &discovery.NotFoundError{Service: service, Key: kid}
	}
	return s.Backend.RetireKey(ctx, service, kid, at)
}

// A Signer whose key is no longer in the registry (a database restored from
// an older backup) moves to a new key, which it publishes, as a
// Registration re-registers an instance whose row is gone. It read its key
// once a second for a retirement, found none, and went on signing with the
// lost key: every verifier refused every token of the service ("unknown
// key") until the rotation half a key lifetime later, 12 h by default.
func TestSignerRepublishesALostKey(t *testing.T) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	store := &restoredStore{Backend: discoverytest.NewBackend()}
	reg := discoverytest.NewRegistry(t, store.Backend, discovery.WithStore(store), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	s, v, tok := ordersToInventory(t, reg, clock)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("before the restore: %v", err)
	}
	lost := s.KeyID()
	store.lost.Store(&lost)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		clock.Advance(time.Second)
		tok, err := s.Token(ctx, "inventory")
		if err == nil && kidOf(t, tok) != lost {
			if _, err = v.Verify(ctx, tok); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			_, verr := v.Verify(ctx, tok)
			t.Fatalf("%v after the restore, the Signer signs with %s (lost: %s): %v; verifying: %v",
				clock.Now().Sub(t0), kidOf(t, tok), lost, err, verr)
		}
	}
}

// ordersToInventory returns a Signer of "orders" and a Verifier of
// "inventory" on reg, both on clock, and a first token from one to the
// other.
func ordersToInventory(t *testing.T, reg *discovery.Registry, clock *discoverytest.Clock) (*auth.Signer, *auth.Verifier, string) {
	t.Helper()
	ctx := context.Background()
	s, err := auth.NewSigner(ctx, reg, "orders", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Token(ctx, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	return s, v, tok
}

// loadFailingQuiet is a quietStore whose reads of services fail while down
// is set: the database out for the process that reads through it.
type loadFailingQuiet struct {
	quietStore
	down atomic.Bool
}

func (s *loadFailingQuiet) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.down.Load() {
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("connection refused")}
	}
	return s.quietStore.Load(ctx, name)
}

// A refetch of a caller's keys that failed (the database out) does not use
// up the minute: once the database answers, the next request with that key
// reads the keys again a second later. It was refused as "unknown key" for
// the rest of the minute, every call of a service that had just rotated.
func TestFailedKeyRefetchIsTriedAgainSoon(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	store := &loadFailingQuiet{quietStore: quietStore{backend, backend}}
	orders, v := ordersAndInventory(t, backend, store, clock)
	verify := func() string {
		tok, err := orders.Token(ctx, "inventory")
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(ctx, tok)
		return reason(err)
	}
	if got := verify(); got != "ok" { // orders' key cached in b
		t.Fatalf("first token: %s", got)
	}
	if err := orders.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	if got := verify(); got != "keys unavailable" {
		t.Fatalf("a new key with the database out: %s; want keys unavailable", got)
	}
	store.down.Store(false)
	clock.Advance(2 * time.Second)
	if got := verify(); got != "ok" {
		t.Fatalf("the new key 2 s after the database answers again: %s; want ok", got)
	}
}

// ordersAndInventory returns the Signer of "orders" on a Registry of
// backend, and the Verifier of "inventory" on another Registry that reads
// through store, fresh for an hour: it learns of orders' new keys only by
// reading them again. Both on clock.
func ordersAndInventory(t *testing.T, backend *discoverytest.Backend, store discovery.Store, clock *discoverytest.Clock) (*auth.Signer, *auth.Verifier) {
	t.Helper()
	a := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	b := discoverytest.NewRegistry(t, backend, discovery.WithStore(store),
		discovery.WithClock(clock), discovery.WithCacheFreshness(time.Hour, time.Hour, time.Hour), discovery.WithoutHealthChecks())
	orders, err := auth.NewSigner(context.Background(), a, "orders", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(b, "inventory", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	return orders, v
}
