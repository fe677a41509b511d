package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

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
