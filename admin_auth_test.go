package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
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

// A nil *auth.Verifier or *auth.Signer is no Authorizer or TokenSource, but
// the Registry took one for a working seam: the first admin request with a
// bearer token, or the first config notification, panicked in it. New
// refuses one given as an option (ErrInvalid, like a nil WithStore); the
// setters and AdminAuthorizer take it for none, so the mutating endpoints
// stay read-only.
func TestTypedNilAuthSeams(t *testing.T) {
	ctx := context.Background()
	var (
		verifier *auth.Verifier
		signer   *auth.Signer
	)
	for name, opt := range map[string]discovery.Option{"WithTokenSource": discovery.WithTokenSource(signer), "WithAuthorizer": discovery.WithAuthorizer(verifier)} {
		r, err := discovery.New(opt)
		if err == nil {
			_ = r.Close()
		}
		if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("New(%s(nil pointer)) = %v; want an error naming the option that matches ErrInvalid", name, err)
		}
	}
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	r.SetAuthorizer(verifier)
	r.SetTokenSource(signer)
	if r.Authorizer() != nil || r.TokenSource() != nil {
		t.Fatalf("after setting nil pointers: Authorizer %v, TokenSource %v; want none", r.Authorizer(), r.TokenSource())
	}
	ops, err := auth.NewSigner(ctx, r, "ops")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ops.Token(ctx, "registry-admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []http.Handler{r.AdminHandler(), r.AdminHandler(discovery.AdminAuthorizer(verifier))} {
		code, body := do(t, h, "DELETE", "/services/web/instances/10.0.0.1:80", "", "Authorization", "Bearer "+tok)
		if code != http.StatusForbidden {
			t.Fatalf("DELETE with a nil *auth.Verifier = %d %s; want 403 (read-only)", code, body)
		}
	}
	if got := ids(r.Get(ctx, "web")); got != "10.0.0.1:80" {
		t.Fatalf("instances %s; want 10.0.0.1:80", got)
	}
	rc := httpInstance(t, r, "a", func(int, http.ResponseWriter, *http.Request) {})
	rep, err := r.UpdateConfig(ctx, "api", cfgDoc(1))
	if err != nil || len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyDelivered || rc.count() != 1 {
		t.Fatalf("UpdateConfig = %+v, %v; want one notification delivered", rep, err)
	}
}

// A 401 of the admin handler carries "WWW-Authenticate: Bearer", as RFC
// 9110 requires of every 401 and as auth.Verifier's middleware answers; it
// had none.
func TestAdminUnauthorizedChallenges(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	for name, a := range map[string]discovery.Authorizer{
		"unauthenticated": fakeAuthz{err: discovery.ErrUnauthenticated},
		"no identity":     fakeAuthz{},
	} {
		for _, m := range []struct{ method, path string }{
			{"DELETE", "/services/web/instances/10.0.0.1:80"},
			{"PUT", "/services/web/config"},
		} {
			req := httptest.NewRequest(m.method, m.path, strings.NewReader(`{}`))
			rec := httptest.NewRecorder()
			r.AdminHandler(discovery.AdminAuthorizer(a)).ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Errorf("%s: %s %s = %d with WWW-Authenticate %q; want 401 with Bearer", name, m.method, m.path, rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
		}
	}
}

// tokenAuthz accepts "Bearer <token>" for the tokens it knows.
type tokenAuthz map[string]*discovery.Identity

func (a tokenAuthz) Authorize(req *http.Request) (*discovery.Identity, error) {
	id, ok := a[strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")]
	if !ok {
		return nil, discovery.ErrUnauthenticated
	}
	return id, nil
}

// With AdminProtectReads every read (the dashboard, its assets, the JSON
// reads, a configuration included) needs the Authorizer and the read
// scope; without it they stay open. The mutating endpoints keep
// AdminScope's scope, and with no Authorizer every read is refused.
func TestAdminProtectReads(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.UpdateConfig(ctx, "web", json.RawMessage(`{"db_password": "s3cret"}`)); err != nil {
		t.Fatal(err)
	}
	reads := []string{"/", "/assets/app.js", "/overview", "/services", "/services/web", "/services/web/config"}
	open := r.AdminHandler()
	for _, p := range reads {
		if code, body := do(t, open, "GET", p, ""); code != http.StatusOK {
			t.Fatalf("GET %s without AdminProtectReads = %d %s; want 200", p, code, body)
		}
	}
	authz := tokenAuthz{
		"reader": {Service: "ops", Scopes: []string{"discovery:read"}},
		"nobody": {Service: "ops"},
		"admin":  {Service: "ops", Scopes: []string{"discovery:read", "discovery:admin"}},
	}
	h := r.AdminHandler(discovery.AdminAuthorizer(authz), discovery.AdminScope("discovery:admin"), discovery.AdminProtectReads("discovery:read"))
	for _, p := range reads {
		for _, tt := range []struct {
			token  string
			status int
		}{{"", http.StatusUnauthorized}, {"forged", http.StatusUnauthorized}, {"nobody", http.StatusForbidden}, {"reader", http.StatusOK}} {
			code, body := do(t, h, "GET", p, "", "Authorization", "Bearer "+tt.token)
			if code != tt.status {
				t.Fatalf("GET %s with token %q = %d %s; want %d", p, tt.token, code, body, tt.status)
			}
			if code != http.StatusOK && strings.Contains(string(body), "s3cret") {
				t.Fatalf("GET %s with token %q showed the configuration: %s", p, tt.token, body)
			}
		}
	}
	if code, body := do(t, h, "PUT", "/services/web/config", `{}`, "Authorization", "Bearer reader"); code != http.StatusForbidden {
		t.Fatalf("PUT with the read scope alone = %d %s; want 403", code, body)
	}
	if code, body := do(t, h, "PUT", "/services/web/config", `{"v": 2}`, "Authorization", "Bearer admin"); code != http.StatusOK {
		t.Fatalf("PUT with the admin scope = %d %s; want 200", code, body)
	}
	none := r.AdminHandler(discovery.AdminProtectReads(""))
	for _, p := range reads {
		if code, body := do(t, none, "GET", p, ""); code != http.StatusForbidden || strings.Contains(string(body), "s3cret") {
			t.Fatalf("GET %s protected with no Authorizer = %d %s; want 403", p, code, body)
		}
	}
}

// With AdminProtectReads(scope) the mutating endpoints need that scope too,
// as every endpoint does: a caller refused the reads overwrote the
// configuration it could not read, and deregistered instances, when no
// AdminScope was set (or with the admin scope alone).
func TestAdminProtectReadsScopeGuardsMutations(t *testing.T) {
	ctx := context.Background()
	authz := tokenAuthz{
		"nobody":     {Service: "ops"},
		"admin-only": {Service: "ops", Scopes: []string{"discovery:admin"}},
		"reader":     {Service: "ops", Scopes: []string{"discovery:read"}},
		"admin":      {Service: "ops", Scopes: []string{"discovery:read", "discovery:admin"}},
	}
	tests := []struct {
		name   string
		opts   []discovery.AdminOption
		token  string
		status int
	}{
		{"no AdminScope, no scope", nil, "nobody", http.StatusForbidden},
		{"no AdminScope, the read scope", nil, "reader", http.StatusOK},
		{"AdminScope, the admin scope alone", []discovery.AdminOption{discovery.AdminScope("discovery:admin")}, "admin-only", http.StatusForbidden},
		{"AdminScope, the read scope alone", []discovery.AdminOption{discovery.AdminScope("discovery:admin")}, "reader", http.StatusForbidden},
		{"AdminScope, both scopes", []discovery.AdminOption{discovery.AdminScope("discovery:admin")}, "admin", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
			mustRegister(t, r, inst("web", "10.0.0.1", 80))
			if _, err := r.UpdateConfig(ctx, "web", json.RawMessage(`{"v": 1}`)); err != nil {
				t.Fatal(err)
			}
			before, _, err := r.Config(ctx, "web")
			if err != nil {
				t.Fatal(err)
			}
			opts := append([]discovery.AdminOption{discovery.AdminAuthorizer(authz), discovery.AdminProtectReads("discovery:read")}, tt.opts...)
			h := r.AdminHandler(opts...)
			bearer := "Bearer " + tt.token
			if code, body := do(t, h, "PUT", "/services/web/config", `{"v": 2}`, "Authorization", bearer); code != tt.status {
				t.Fatalf("PUT config = %d %s; want %d", code, body, tt.status)
			}
			if code, body := do(t, h, "DELETE", "/services/web/instances/10.0.0.1:80", "", "Authorization", bearer); code != tt.status {
				t.Fatalf("DELETE instance = %d %s; want %d", code, body, tt.status)
			}
			cfg, _, err := r.Config(ctx, "web")
			if err != nil {
				t.Fatal(err)
			}
			_, gerr := r.Get(ctx, "web")
			if tt.status != http.StatusOK && (string(cfg) != string(before) || gerr != nil) {
				t.Fatalf("a refused caller changed something: config %s, Get error %v", cfg, gerr)
			}
		})
	}
}

// An Authorizer that cannot decide (an auth.Verifier whose key store is
// down) gets the caller a 503 without its error's text, which may name the
// backend's address and user; the text goes to the log, as a backend
// outage's does, where the operator looks. It was dropped: the operator saw
// a 503 in the access log and nothing to say why.
func TestAdminAuthorizerOutageIsLogged(t *testing.T) {
	log, logs := observed()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithLogger(log), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0))
	const secret = "failed to connect to `user=svc_keys database=prod`: 10.9.8.7:5432"
	down := fakeAuthz{err: &discovery.BackendError{Backend: "database", Op: "load keys", Err: errors.New(secret)}}
	for _, h := range []http.Handler{
		r.AdminHandler(discovery.AdminAuthorizer(down)),
		r.AdminHandler(discovery.AdminAuthorizer(down), discovery.AdminProtectReads("")),
	} {
		for _, m := range []struct{ method, path string }{
			{"PUT", "/services/web/config"},
			{"DELETE", "/services/web/instances/10.0.0.1:80"},
		} {
			before := logs.FilterMessage("discovery: admin request failed").Len()
			code, body := do(t, h, m.method, m.path, `{"v":1}`)
			if code != http.StatusServiceUnavailable || strings.Contains(string(body), "10.9.8.7") {
				t.Fatalf("%s %s with the Authorizer down = %d %s; want 503 without the backend's text", m.method, m.path, code, body)
			}
			got := logs.FilterMessage("discovery: admin request failed").All()[before:]
			if len(got) != 1 || !strings.Contains(got[0].ContextMap()["error"].(string), "10.9.8.7") {
				t.Fatalf("%s %s with the Authorizer down logged %v; want one warning with the Authorizer's error", m.method, m.path, got)
			}
		}
	}
	code, _ := do(t, r.AdminHandler(discovery.AdminAuthorizer(down), discovery.AdminProtectReads("")), "GET", "/services", "")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("GET /services, protected, with the Authorizer down = %d; want 503", code)
	}
}
