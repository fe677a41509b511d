//lint:file-ignore SA1019 TestKeysThatCannotSignAreOptionErrors builds broken ECDSA keys, which only the raw fields (deprecated since Go 1.26) can do.

package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

func badInputRegistry(t *testing.T) *discovery.Registry {
	return discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
}

// WithKey with a nil, typed-nil or malformed key, and a typed-nil clock:
// each panicked in NewSigner, or (a nil key) was ignored and a generated
// key published under another ID. Now each is an option error.
func TestBadKeysAndClocksAreOptionErrors(t *testing.T) {
	reg := badInputRegistry(t)
	cases := map[string]auth.Option{
		"nil":                 auth.WithKey("mykid", nil),
		"nil ed25519":         auth.WithKey("mykid", ed25519.PrivateKey(nil)),
		"short ed25519":       auth.WithKey("mykid", ed25519.PrivateKey(make([]byte, 10))),
		"nil *ecdsa":          auth.WithKey("mykid", (*ecdsa.PrivateKey)(nil)),
		"typed-nil WithClock": auth.WithClock((*discoverytest.Clock)(nil)),
	}
	for name, opt := range cases {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("NewSigner(%s) panicked: %v", name, p)
				}
			}()
			s, err := auth.NewSigner(context.Background(), reg, "orders", opt)
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) {
				kid := ""
				if s != nil {
					kid = s.KeyID()
				}
				t.Errorf("NewSigner(%s) = kid %q, %v; want a ValidationError naming the option", name, kid, err)
			}
		}()
	}
}

// A Transport with a typed-nil Source panicked instead of returning the
// documented error.
func TestTransportWithTypedNilSourceFails(t *testing.T) {
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("RoundTrip with Source (*auth.Signer)(nil) panicked: %v", p)
		}
	}()
	tr := &auth.Transport{Source: (*auth.Signer)(nil), Base: http.DefaultTransport}
	_, err := tr.RoundTrip(httptest.NewRequest("GET", "http://inventory/x", nil))
	if !errors.Is(err, discovery.ErrInvalid) {
		t.Errorf("RoundTrip = %v; want ErrInvalid (Transport.Source)", err)
	}
}

// UpdateConfig stored an "auth" member that ParsePolicy refuses, and from
// then on every caller was refused. With auth.ValidateConfig as the
// service's validator it is refused and nothing is stored.
func TestValidateConfigRefusesABadPolicy(t *testing.T) {
	reg := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0),
		discovery.WithConfigValidator("inventory", auth.ValidateConfig))
	ctx := context.Background()
	bad := `{"auth":{"allow":{"orders":[{"path_prefix":"items"}]}}}`
	if _, perr := auth.ParsePolicy([]byte(bad)); perr == nil {
		t.Fatal("ParsePolicy accepts the document")
	}
	var ce *discovery.ConfigError
	if _, err := reg.UpdateConfig(ctx, "inventory", json.RawMessage(bad)); !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ce) {
		t.Fatalf("UpdateConfig(a policy ParsePolicy refuses) = %v; want a ConfigError", err)
	}
	good := `{"auth":{"allow":{"orders":[{"path_prefix":"/items"}]}}}`
	if _, err := reg.UpdateConfig(ctx, "inventory", json.RawMessage(good)); err != nil {
		t.Fatalf("UpdateConfig(a valid policy) = %v", err)
	}
}

// WithKey with a key that cannot sign, or whose private and public halves
// do not match: an ECDSA key without its private scalar (or without its
// point) panicked, at the first Token or in NewSigner; one with a zero
// scalar failed every Token; halves that do not match signed tokens that
// no Verifier accepts. NewSigner published each. Now each is an option
// error and nothing is published.
func TestKeysThatCannotSignAreOptionErrors(t *testing.T) {
	ctx := context.Background()
	reg := badInputRegistry(t)
	k, k2 := mustECKey(t), mustECKey(t)
	_, e1, _ := ed25519.GenerateKey(rand.Reader)
	_, e2, _ := ed25519.GenerateKey(rand.Reader)
	cases := map[string]crypto.Signer{
		"ecdsa without D":       &ecdsa.PrivateKey{PublicKey: k.PublicKey},
		"ecdsa with a zero D":   &ecdsa.PrivateKey{PublicKey: k.PublicKey, D: new(big.Int)},
		"ecdsa with another D":  &ecdsa.PrivateKey{PublicKey: k.PublicKey, D: k2.D},
		"ecdsa without a point": &ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: elliptic.P256()}, D: k.D},
		"ed25519 mixed halves":  append(append(ed25519.PrivateKey{}, e1[:ed25519.SeedSize]...), e2[ed25519.SeedSize:]...),
		"ed25519 zero public":   append(append(ed25519.PrivateKey{}, e1[:ed25519.SeedSize]...), make([]byte, ed25519.PublicKeySize)...),
	}
	for name, key := range cases {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: panicked: %v", name, p)
				}
			}()
			s, err := auth.NewSigner(ctx, reg, "orders", auth.WithKey("mykid", key))
			if err == nil {
				_, err = s.Token(ctx, "inventory")
				t.Errorf("%s: NewSigner accepted the key (then Token: %v); want a ValidationError naming WithKey", name, err)
				return
			}
			var ve *discovery.ValidationError
			if !errors.As(err, &ve) || ve.Field != "option WithKey" {
				t.Errorf("%s: NewSigner = %v; want a ValidationError naming WithKey", name, err)
			}
		}()
	}
	if keys, err := reg.Keys(ctx, "orders"); len(keys) != 0 {
		t.Fatalf("published %d keys (%v); want none", len(keys), err)
	}
}

// A Signer started WithKey with a key that was revoked fails with
// ErrRevoked, under the revoked ID or another, and publishes nothing: a
// restart with the leaked key no longer makes it trusted again.
func TestSignerWithARevokedKeyDoesNotStart(t *testing.T) {
	ctx := context.Background()
	reg := badInputRegistry(t)
	_, leaked, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := auth.NewSigner(ctx, reg, "orders", auth.WithKey("leaked", leaked))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RetireKey(ctx, "orders", "leaked", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{"leaked", "fresh-id"} {
		if s, err := auth.NewSigner(ctx, reg, "orders", auth.WithKey(kid, leaked)); !errors.Is(err, discovery.ErrRevoked) {
			if s != nil {
				_ = s.Close(ctx)
			}
			t.Fatalf("NewSigner WithKey(%s, the revoked key) = %v; want ErrRevoked", kid, err)
		}
	}
	keys, err := reg.Keys(ctx, "orders")
	if err != nil || len(keys) != 1 || keys[0].ID != "leaked" || keys[0].RetiresAt.After(time.Now()) {
		t.Fatalf("keys = %+v, %v; want the revoked key alone, retired", keys, err)
	}
}
