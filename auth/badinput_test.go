package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
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
