package discovery_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// The admin handler's mutating endpoints accept the signed service tokens
// of package auth: the Registry's auth.Verifier decides by the policy in the
// configuration of the service it verifies for.
func TestAdminWithAuthVerifier(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	opts := []discovery.Option{discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	ops := discoverytest.NewRegistry(t, backend, opts...)
	r := discoverytest.NewRegistry(t, backend, opts...)
	policy := `{"auth": {"allow": {"ops": [{"path_prefix": "/services/", "methods": ["DELETE"], "scope": "discovery:admin"}]}}}`
	if _, _, err := backend.SetConfig(ctx, "registry-admin", []byte(policy), t0, 10); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	mustRegister(t, r, inst("web", "10.0.0.2", 80))
	verifier, err := auth.NewVerifier(r, "registry-admin", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	r.SetAuthorizer(verifier)
	token := func(scopes ...string) string {
		s, err := auth.NewSigner(ctx, ops, "ops", auth.WithClock(clock), auth.WithScopes(scopes...))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.Token(ctx, "registry-admin")
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + tok
	}
	h := r.AdminHandler()
	tests := []struct {
		name, id, authz string
		status          int
	}{
		{"no token", "10.0.0.1:80", "", http.StatusUnauthorized},
		{"a token without the scope", "10.0.0.1:80", token("read"), http.StatusForbidden},
		{"a token with the scope", "10.0.0.1:80", token("discovery:admin"), http.StatusOK},
	}
	for _, tt := range tests {
		code, body := do(t, h, "DELETE", "/services/web/instances/"+tt.id, "", "Authorization", tt.authz)
		if code != tt.status {
			t.Fatalf("%s: DELETE = %d %s; want %d", tt.name, code, body, tt.status)
		}
		want := "10.0.0.1:80,10.0.0.2:80"
		if tt.status == http.StatusOK {
			want = "10.0.0.2:80"
		}
		if got := ids(r.Get(ctx, "web")); got != want {
			t.Fatalf("%s: instances %s; want %s", tt.name, got, want)
		}
	}
}
