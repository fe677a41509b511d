package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// A Signer whose key ID another writer published again with another key
// (a replica started WithKey with a new key under the same ID, an operator,
// a restore) moves to a new key of its own, as it does when its key is
// lost. It read the republished record once a second, found it there and
// not retired, and went on signing with a key no verifier had any more:
// every token it issued was refused ("bad signature") until its own
// rotation, half a key lifetime (12 h by default) later.
func TestSignerMovesOffARepublishedKeyID(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		for _, alg := range []string{auth.EdDSA, auth.ES256} {
			t.Run(alg, func(t *testing.T) { movesOffARepublishedKeyID(t, w, alg) })
		}
	})
}

func movesOffARepublishedKeyID(t *testing.T, w *world, alg string) {
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	a := w.registry(t, discovery.WithClock(clock), discovery.WithoutHealthChecks()) // orders' process
	b := w.registry(t, discovery.WithClock(clock), discovery.WithoutHealthChecks()) // another writer, and inventory
	s, err := auth.NewSigner(ctx, a, "orders", auth.WithClock(clock), auth.WithAlgorithm(alg))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(b, "inventory", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	kid := s.KeyID()
	// Its own record, read back from the store, is its key: no move.
	for i := 0; i < 3; i++ {
		tok, err := s.Token(ctx, "inventory")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(ctx, tok); err != nil || s.KeyID() != kid {
			t.Fatalf("before the key ID is republished: %v; signing with %s, want %s", err, s.KeyID(), kid)
		}
		clock.Advance(2 * time.Second)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := b.PublishKey(ctx, "orders", discovery.PublicKey{ID: kid, Algorithm: auth.EdDSA, Key: mustDER(t, other.Public())}); err != nil {
		t.Fatal(err)
	}
	var verr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		clock.Advance(time.Second)
		tok, err := s.Token(ctx, "inventory")
		if err != nil {
			t.Fatal(err)
		}
		if _, verr = v.Verify(ctx, tok); verr == nil {
			if kidOf(t, tok) == kid {
				t.Fatalf("the Signer signs under %s, whose record is another key, and its token verified", kid)
			}
			// Moving off, it must not retire the ID: that is the other
			// writer's key now.
			keys, err := a.Keys(ctx, "orders")
			if k := findKey(keys, kid); err != nil || k == nil || !k.RetiresAt.IsZero() {
				t.Fatalf("after the Signer moved off it, the other writer's key under %s is %+v (%v); want it kept, never retiring", kid, k, err)
			}
			return
		}
	}
	t.Fatalf("%v after its key ID %s was republished with another key, the Signer signs with %s: verifying: %v",
		clock.Now().Sub(t0), kid, s.KeyID(), verr)
}
