package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// benchSetup returns a signer of "orders" and a verifier of "inventory" on
// one in-memory Registry with the system clock, the policy in place, and
// the verifier's caches warm.
func benchSetup(b *testing.B, opts ...auth.Option) (*auth.Signer, *auth.Verifier, *discovery.Registry) {
	b.Helper()
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	if _, _, err := backend.SetConfig(ctx, "inventory", []byte(inventoryPolicy), time.Now(), 10); err != nil {
		b.Fatal(err)
	}
	reg := discoverytest.NewRegistry(b, backend, discovery.WithoutHealthChecks())
	s, err := auth.NewSigner(ctx, reg, "orders", opts...)
	if err != nil {
		b.Fatal(err)
	}
	v, err := auth.NewVerifier(reg, "inventory")
	if err != nil {
		b.Fatal(err)
	}
	return s, v, reg
}

// BenchmarkVerify verifies a token whose key is cached (the common case).
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{auth.EdDSA, auth.ES256} {
		b.Run(alg, func(b *testing.B) {
			s, v, _ := benchSetup(b, auth.WithAlgorithm(alg))
			ctx := context.Background()
			tok, _ := s.Token(ctx, "inventory")
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMiddleware is a request through Wrap: bearer token, policy,
// verification, identity in the context.
func BenchmarkMiddleware(b *testing.B) {
	s, v, _ := benchSetup(b)
	tok, _ := s.Token(context.Background(), "inventory")
	h := v.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req := httptest.NewRequest("GET", "/items/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		b.Fatalf("status %d", w.Code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

// BenchmarkSign signs a new token each time: a fake clock, moved past the
// cache's refresh point before each call, keeps the cache from answering.
func BenchmarkSign(b *testing.B) {
	for _, alg := range []string{auth.EdDSA, auth.ES256} {
		b.Run(alg, func(b *testing.B) {
			clock := discoverytest.NewClock(time.Now())
			s, _, _ := benchSetup(b, auth.WithAlgorithm(alg), auth.WithClock(clock), auth.WithKeyLifetime(0))
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clock.Advance(time.Minute)
				if _, err := s.Token(ctx, "inventory"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkToken is Token answered from the signer's cache (what a
// Transport pays per request).
func BenchmarkToken(b *testing.B) {
	s, _, _ := benchSetup(b)
	ctx := context.Background()
	if _, err := s.Token(ctx, "inventory"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Token(ctx, "inventory"); err != nil {
			b.Fatal(err)
		}
	}
}
