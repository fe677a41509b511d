package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

func TestParsePolicyRefuses(t *testing.T) {
	many := func(n int, f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return strings.Join(parts, ",")
	}
	tests := []struct {
		name string
		doc  string
	}{
		{"not an object", `[1]`},
		{"a string", `"auth"`},
		{"not JSON", `{"auth":`},
		{"auth not an object", `{"auth": []}`},
		{"unknown field in auth", `{"auth": {"alow": {}}}`},
		{"unknown field in a rule", `{"auth": {"allow": {"orders": [{"path_prefx": "/"}]}}}`},
		{"rules not a list", `{"auth": {"allow": {"orders": {"path_prefix": "/"}}}}`},
		{"bad caller", `{"auth": {"allow": {"a/b": [{"path_prefix": "/"}]}}}`},
		{"empty caller", `{"auth": {"allow": {"": [{"path_prefix": "/"}]}}}`},
		{"no path_prefix", `{"auth": {"allow": {"orders": [{"methods": ["GET"]}]}}}`},
		{"relative prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "api/"}]}}}`},
		{"percent in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/a%2Fb"}]}}}`},
		{"query in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/a?b"}]}}}`},
		{"dot-dot in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/a/../b"}]}}}`},
		{"dot in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/a/./b"}]}}}`},
		{"double slash in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "//a"}]}}}`},
		{"space in prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/a b"}]}}}`},
		{"long prefix", `{"auth": {"allow": {"orders": [{"path_prefix": "/` + strings.Repeat("a", 256) + `"}]}}}`},
		{"lower-case method", `{"auth": {"allow": {"orders": [{"path_prefix": "/", "methods": ["get"]}]}}}`},
		{"empty method", `{"auth": {"allow": {"orders": [{"path_prefix": "/", "methods": [""]}]}}}`},
		{"scope with a space", `{"auth": {"allow": {"orders": [{"path_prefix": "/", "scope": "a b"}]}}}`},
		{"too many callers", `{"auth": {"allow": {` + many(1025, func(i int) string { return fmt.Sprintf(`"s%d": []`, i) }) + `}}}`},
		{"too many rules", `{"auth": {"allow": {"orders": [` + many(65, func(int) string { return `{"path_prefix": "/"}` }) + `]}}}`},
		{"larger than 1 MiB", `{"pad": "` + strings.Repeat("x", 1<<20) + `"}`},
	}
	for _, tt := range tests {
		p, err := auth.ParsePolicy([]byte(tt.doc))
		var ve *discovery.ValidationError
		if p != nil || !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "auth policy" ||
			!strings.HasPrefix(err.Error(), "discovery: invalid auth policy") {
			t.Errorf("%s: ParsePolicy = %v, %v; want a ValidationError on the auth policy", tt.name, p, err)
		}
	}
}

// Documents without a policy parse to one that permits nothing.
func TestEmptyPolicyPermitsNothing(t *testing.T) {
	id := &discovery.Identity{Service: "orders"}
	req := httptest.NewRequest("GET", "/", nil)
	for _, doc := range []string{``, `  `, `{}`, `null`, `{"auth": null}`, `{"auth": {}}`, `{"auth": {"allow": {}}}`, `{"other": 1}`} {
		p, err := auth.ParsePolicy([]byte(doc))
		if err != nil || p.Allows(id, req) {
			t.Errorf("%q: %v, allows=%v; want an empty policy", doc, err, err == nil && p.Allows(id, req))
		}
	}
	var nilPolicy *auth.Policy
	if nilPolicy.Allows(id, req) {
		t.Error("a nil policy allows")
	}
}

func TestPolicyAllows(t *testing.T) {
	p, err := auth.ParsePolicy([]byte(`{"auth": {"allow": {
		"orders": [{"path_prefix": "/api", "methods": ["GET", "HEAD"]}, {"path_prefix": "/w/", "scope": "write"}],
		"*": [{"path_prefix": "/status", "methods": ["GET"]}]
	}}}`))
	if err != nil {
		t.Fatal(err)
	}
	orders := &discovery.Identity{Service: "orders"}
	writer := &discovery.Identity{Service: "orders", Scopes: []string{"write"}}
	other := &discovery.Identity{Service: "shipping"}
	tests := []struct {
		id     *discovery.Identity
		method string
		target string
		want   bool
	}{
		{orders, "GET", "/api", true},
		{orders, "HEAD", "/api/x/y", true},
		{orders, "GET", "/api/", true},
		{orders, "POST", "/api/x", false},
		{orders, "GET", "/apix", false},
		{orders, "GET", "/API", false},
		{orders, "GET", "/api/../w/x", false},
		{orders, "GET", "/api/./x", false},
		{orders, "GET", "/api%2Fx", false},
		{orders, "GET", "/w/x", false},
		{writer, "DELETE", "/w/x", true},
		{writer, "GET", "/w", false}, // "/w/" needs the slash
		{other, "GET", "/status", true},
		{orders, "GET", "/status/deep", true},
		{other, "POST", "/status", false},
		{other, "GET", "/api", false},
		{nil, "GET", "/status", false},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.target, nil)
		if got := p.Allows(tt.id, req); got != tt.want {
			t.Errorf("%v %s %s: %v; want %v", tt.id, tt.method, tt.target, got, tt.want)
		}
	}
}

// With "*", a caller the policy does not name is verified (its keys looked
// up) and let through where the wildcard's rules say.
func TestAnyCallerEndToEnd(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(`{"auth":{"allow":{"*":[{"path_prefix":"/status","methods":["GET"]}]}}}`), t0, 10); err != nil {
		t.Fatal(err)
	}
	tok := "Bearer " + f.token(t, "inventory")
	f.waitStatus(t, "GET", "/status", tok, http.StatusOK)
	if rec := f.serve("GET", "/items/1", tok); rec.Code != http.StatusForbidden {
		t.Fatalf("outside the wildcard's rules: %d; want 403", rec.Code)
	}
	forged := forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, withClaims(func(c jwt.MapClaims) { c["sub"] = "shipping" }), nil)
	if rec := f.serve("GET", "/status", "Bearer "+forged); rec.Code != http.StatusUnauthorized {
		t.Fatalf("orders' key claiming to be shipping: %d; want 401", rec.Code)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(inventoryPolicy), "GET", "/items/1")
	f.Add([]byte(`{"auth":{"allow":{"*":[{"path_prefix":"/"}]}}}`), "POST", "/a/../b")
	f.Add([]byte(`{"auth":{"allow":{"orders":[{"path_prefix":"/api","methods":["GET"],"scope":"s"}]}}}`), "GET", "/api%2F..%2Fx")
	f.Add([]byte(`{"auth":{"allow":{"orders":null}}}`), "GET", "//x")
	f.Add([]byte(`{"auth":{"allow":{"orders":[null]}}}`), "", "")
	f.Add([]byte(`{"auth":1}`), "GET", "/")
	f.Fuzz(func(t *testing.T, doc []byte, method, target string) {
		p, err := auth.ParsePolicy(doc)
		if err != nil {
			if p != nil || !errors.Is(err, discovery.ErrInvalid) {
				t.Fatalf("ParsePolicy = %v, %v", p, err)
			}
			return
		}
		u, err := url.Parse(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: method, URL: u}
		for _, id := range []*discovery.Identity{{Service: "orders", Scopes: []string{"s"}}, {Service: "x"}} {
			if !p.Allows(id, req) {
				continue
			}
			clean := path.Clean(u.Path)
			if u.Path != clean && u.Path != clean+"/" {
				t.Fatalf("allowed a path that is not clean: %q", u.Path)
			}
		}
	})
}

// Whatever the token, Verify never panics and accepts only a token the
// signer made.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	good := fx.token(f, "inventory")
	parts := strings.Split(good, ".")
	f.Add(good)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[0] + ".e30." + parts[2])
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := fx.verifier.Verify(context.Background(), tok)
		if err == nil && tok != good {
			t.Fatalf("accepted a token the signer did not make: %q as %+v", tok, id)
		}
		if err != nil && id != nil {
			t.Fatal("an identity with an error")
		}
	})
}

// With "*", a token naming a service that does not exist costs one
// database read per name and second, the registry's negative cache, as
// AnyCaller says: the Verifier read the name's keys again past that cache
// at once (a second read for each made-up name), though the database had
// just said it has none.
func TestAnyCallerUnknownServiceReadsOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(`{"auth":{"allow":{"*":[{"path_prefix":"/status"}]}}}`), t0, 10); err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Backend: f.backend}
	reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(store), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"ghost-1", "ghost-2", "ghost-1"} {
		tok := forge(t, jwt.SigningMethodEdDSA, f.priv, "ghost-k1", withClaims(func(c jwt.MapClaims) { c["sub"] = name }), nil)
		req := httptest.NewRequest("GET", "/status", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if _, err := v.Authorize(req); reason(err) != "unknown key" {
			t.Fatalf("request %d from %s: %v; want unknown key", i, name, err)
		}
	}
	if got := store.reads(); got["ghost-1"] != 1 || got["ghost-2"] != 1 {
		t.Fatalf("the store was read %v; want each made-up caller once", got)
	}
}

// rewrittenStore stands for a database restored from a backup and then
// changed: the service's configuration revision that the restore lost is
// written again with other content. While doc is set, the service's
// snapshot carries it under the configuration revision it had.
type rewrittenStore struct {
	*discoverytest.Backend
	service string
	doc     atomic.Pointer[string]
}

func (s *rewrittenStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	svc, err := s.Backend.Load(ctx, name)
	if doc := s.doc.Load(); err == nil && doc != nil && name == s.service {
		svc = svc.Clone()
		svc.Config = []byte(*doc)
	}
	return svc, err
}

// A policy written again under a configuration revision the Verifier has
// seen with other content (a database restored from a backup, then
// changed) is the policy that holds. The Verifier kept what it had parsed
// for that revision number: a permission taken away stayed granted until
// the next change.
func TestPolicyRewrittenUnderTheSameRevision(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	store := &rewrittenStore{Backend: f.backend, service: "inventory"}
	reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(store), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	authorize := func() error {
		req := httptest.NewRequest("GET", "/items/1", nil)
		req.Header.Set("Authorization", "Bearer "+f.token(t, "inventory"))
		_, err := v.Authorize(req)
		return err
	}
	if err := authorize(); err != nil {
		t.Fatalf("orders under inventoryPolicy: %v", err)
	}
	svc, err := f.backend.Load(ctx, "inventory")
	if err != nil {
		t.Fatal(err)
	}
	// Restored and changed: billing only, under the same configuration
	// revision; the service's revision moves on (an instance registers).
	withoutOrders := `{"auth":{"allow":{"billing":[{"path_prefix":"/invoices/","methods":["POST"]}]}}}`
	store.doc.Store(&withoutOrders)
	if _, err := f.backend.Register(ctx, &discovery.Instance{ID: "i-1", Service: "inventory", Host: "10.0.1.1", Port: 80, Weight: 1,
		RegisteredAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s, err := reg.Snapshot(ctx, "inventory")
		if err == nil && string(s.Config) == withoutOrders {
			if s.ConfigRevision != svc.ConfigRevision {
				t.Fatalf("config revision %d; the test needs %d", s.ConfigRevision, svc.ConfigRevision)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rewritten configuration never reached the Verifier's registry")
		}
		f.clock.Advance(time.Second)
	}
	if err := authorize(); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("orders under a policy that no longer names it: %v; want ErrUnauthenticated (caller not in the policy)", err)
	}
}
