package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// Every hostile token is refused with 401 (403 for a caller the policy does
// not name), for the reason meant, at the stage meant: most before any
// lookup, none by fetching anything a header points at.
func TestHostileTokensAreRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	// A counting server stands for an attacker's key URL: nothing may reach it.
	var hits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	defer attacker.Close()

	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// A retired key of orders.
	_, retiredPriv, _ := ed25519.GenerateKey(rand.Reader)
	retiredDER := mustDER(t, retiredPriv.Public())
	if err := f.caller.PublishKey(ctx, "orders", discovery.PublicKey{ID: "orders-old", Algorithm: auth.EdDSA, Key: retiredDER,
		CreatedAt: t0.Add(-time.Hour), RetiresAt: t0.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	good := forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, goodClaims(), nil)
	parts := strings.Split(good, ".")
	edited := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"discovery","sub":"orders","aud":["inventory"],"iat":` +
		itoa(t0.Unix()) + `,"exp":` + itoa(t0.Add(time.Minute).Unix()) + `,"scope":["admin"]}`))
	ed := func(c jwt.MapClaims, edit func(h map[string]any)) string {
		return forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, c, edit)
	}
	setHeader := func(k string, v any) func(h map[string]any) { return func(h map[string]any) { h[k] = v } }
	jwk := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(otherEd.Public().(ed25519.PublicKey))}

	tests := []struct {
		name   string
		token  string // the Authorization header is "Bearer " + token unless authz is set
		authz  string
		status int
		reason string
		// stage is how far the token got: "" refused before any lookup,
		// "policy" after reading the policy, "key" after looking up the
		// caller's keys, "refetch" after reading them again.
		stage string
	}{
		{name: "alg none", token: forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, f.kid, goodClaims(), nil), reason: "malformed token"},
		{name: "alg none with a signature", token: unsigned(`{"alg":"none","typ":"svc+jwt","kid":"orders-k1"}`, `{"sub":"orders"}`, []byte("x")), reason: "algorithm not allowed"},
		{name: "HS256 with the public key as secret", token: forge(t, jwt.SigningMethodHS256, f.pubDER, f.kid, goodClaims(), nil), reason: "algorithm not allowed"},
		{name: "HS256 with the raw public key as secret", token: forge(t, jwt.SigningMethodHS256, []byte(f.priv.Public().(ed25519.PublicKey)), f.kid, goodClaims(), nil), reason: "algorithm not allowed"},
		{name: "RS256", token: forge(t, jwt.SigningMethodRS256, rsaKey, f.kid, goodClaims(), nil), reason: "algorithm not allowed"},
		{name: "ES384", token: forge(t, jwt.SigningMethodES384, p384, f.kid, goodClaims(), nil), reason: "algorithm not allowed"},
		{name: "ES256 under an EdDSA key", token: forge(t, jwt.SigningMethodES256, p256, f.kid, goodClaims(), nil), reason: "algorithm does not match the key", stage: "key"},
		{name: "token of orders for billing", token: ed(withClaims(func(c jwt.MapClaims) { c["aud"] = []string{"billing"} }), nil), reason: "wrong audience"},
		{name: "audience as a string for billing", token: ed(withClaims(func(c jwt.MapClaims) { c["aud"] = "billing" }), nil), reason: "wrong audience"},
		{name: "several audiences", token: ed(withClaims(func(c jwt.MapClaims) { c["aud"] = []string{"inventory", "billing"} }), nil), reason: "wrong audience"},
		{name: "no audience", token: ed(withClaims(func(c jwt.MapClaims) { delete(c, "aud") }), nil), reason: "wrong audience"},
		{name: "expired", token: ed(withClaims(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = t0.Add(-2*time.Minute).Unix(), t0.Add(-2*time.Minute).Unix(), t0.Add(-time.Minute).Unix()
		}), nil), reason: "token expired", stage: "key"},
		{name: "expired just past the leeway", token: ed(withClaims(func(c jwt.MapClaims) {
			c["iat"], c["nbf"], c["exp"] = t0.Add(-time.Minute).Unix(), t0.Add(-time.Minute).Unix(), t0.Add(-auth.DefaultLeeway).Unix()
		}), nil), reason: "token expired", stage: "key"},
		{name: "nbf in the future", token: ed(withClaims(func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Minute).Unix() }), nil), reason: "token not valid yet", stage: "key"},
		{name: "iat in the future", token: ed(withClaims(func(c jwt.MapClaims) {
			c["iat"], c["exp"] = t0.Add(time.Minute).Unix(), t0.Add(2*time.Minute).Unix()
		}), nil), reason: "token issued in the future", stage: "key"},
		{name: "missing exp", token: ed(withClaims(func(c jwt.MapClaims) { delete(c, "exp") }), nil), reason: "missing exp", stage: "key"},
		{name: "missing iat", token: ed(withClaims(func(c jwt.MapClaims) { delete(c, "iat") }), nil), reason: "missing iat", stage: "key"},
		{name: "lifetime over 5 minutes", token: ed(withClaims(func(c jwt.MapClaims) { c["exp"] = t0.Add(10 * time.Minute).Unix() }), nil), reason: "lifetime too long", stage: "key"},
		{name: "wrong iss", token: ed(withClaims(func(c jwt.MapClaims) { c["iss"] = "other-deployment" }), nil), reason: "wrong issuer"},
		{name: "no iss", token: ed(withClaims(func(c jwt.MapClaims) { delete(c, "iss") }), nil), reason: "wrong issuer"},
		{name: "unknown kid", token: forge(t, jwt.SigningMethodEdDSA, otherEd, "orders-k9", goodClaims(), nil), reason: "unknown key", stage: "refetch"},
		{name: "kid with SQL", token: forge(t, jwt.SigningMethodEdDSA, f.priv, "1' OR '1'='1", goodClaims(), nil), reason: "malformed kid"},
		{name: "kid with a path", token: forge(t, jwt.SigningMethodEdDSA, f.priv, "../../etc/passwd", goodClaims(), nil), reason: "malformed kid"},
		{name: "kid with a NUL", token: forge(t, jwt.SigningMethodEdDSA, f.priv, "k\x00", goodClaims(), nil), reason: "malformed kid"},
		{name: "no kid", token: ed(goodClaims(), func(h map[string]any) { delete(h, "kid") }), reason: "malformed kid"},
		{name: "kid not a string", token: ed(goodClaims(), setHeader("kid", 7)), reason: "malformed header"},
		{name: "payload edited after signing", token: parts[0] + "." + edited + "." + parts[2], reason: "bad signature", stage: "key"},
		{name: "signed by another key under our kid", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), nil), reason: "bad signature", stage: "key"},
		{name: "signature cut", token: parts[0] + "." + parts[1] + "." + parts[2][:20], reason: "bad signature", stage: "key"},
		{name: "jku header", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), setHeader("jku", attacker.URL+"/jwks.json")), reason: "key-reference header refused (jku)"},
		{name: "JKU header in capitals", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), setHeader("JKU", attacker.URL)), reason: "key-reference header refused (jku)"},
		{name: "jku header null", token: ed(goodClaims(), setHeader("jku", nil)), reason: "key-reference header refused (jku)"},
		{name: "x5u header", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), setHeader("x5u", attacker.URL+"/cert.pem")), reason: "key-reference header refused (x5u)"},
		{name: "jwk header", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), setHeader("jwk", jwk)), reason: "key-reference header refused (jwk)"},
		{name: "x5c header", token: forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), setHeader("x5c", []string{"MIIB"})), reason: "key-reference header refused (x5c)"},
		{name: "crit header", token: ed(goodClaims(), setHeader("crit", []string{"exp"})), reason: "key-reference header refused (crit)"},
		{name: "retired key", token: forge(t, jwt.SigningMethodEdDSA, retiredPriv, "orders-old", goodClaims(), nil), reason: "key retired", stage: "key"},
		{name: "missing typ", token: ed(goodClaims(), func(h map[string]any) { delete(h, "typ") }), reason: "wrong or missing typ"},
		{name: "typ JWT", token: ed(goodClaims(), setHeader("typ", "JWT")), reason: "wrong or missing typ"},
		{name: "typ at+jwt", token: ed(goodClaims(), setHeader("typ", "at+jwt")), reason: "wrong or missing typ"},
		{name: "malformed sub", token: ed(withClaims(func(c jwt.MapClaims) { c["sub"] = "orders'--" }), nil), reason: "malformed sub"},
		{name: "no sub", token: ed(withClaims(func(c jwt.MapClaims) { delete(c, "sub") }), nil), reason: "malformed sub"},
		{name: "scope not a list", token: ed(withClaims(func(c jwt.MapClaims) { c["scope"] = "admin" }), nil), reason: "malformed claims"},
		{name: "two parts", token: parts[0] + "." + parts[1], reason: "malformed token"},
		{name: "four parts", token: good + ".x", reason: "malformed token"},
		{name: "padded base64", token: parts[0] + "==." + parts[1] + "." + parts[2], reason: "malformed header"},
		{name: "header not JSON", token: "bm90IGpzb24." + parts[1] + "." + parts[2], reason: "malformed header"},
		{name: "too large", token: parts[0] + "." + strings.Repeat("A", auth.MaxTokenSize) + "." + parts[2], reason: "token too large"},
		{name: "no Authorization header", authz: "-", reason: "no bearer token"},
		{name: "Basic scheme", authz: "Basic b3JkZXJzOnNlY3JldA==", reason: "no bearer token"},
		{name: "empty bearer", authz: "Bearer ", reason: "no bearer token"},
		{name: "caller the policy does not name", status: http.StatusUnauthorized, stage: "policy",
			token:  forge(t, jwt.SigningMethodEdDSA, otherEd, "shipping-k1", withClaims(func(c jwt.MapClaims) { c["sub"] = "shipping" }), nil),
			reason: "caller not in the policy"},
	}
	// Each case runs in a fresh verifying process, so that the store's reads
	// show how far its token got: nothing is cached, every lookup reads.
	reads := map[string]map[string]int64{
		"":        nil,
		"policy":  {"inventory": 1},
		"key":     {"inventory": 1, "orders": 1},
		"refetch": {"inventory": 1, "orders": 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &countingStore{Backend: f.backend}
			reg := discoverytest.NewRegistry(t, f.backend, discovery.WithStore(store), discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
			v, err := auth.NewVerifier(reg, "inventory", auth.WithClock(f.clock), auth.WithLogger(f.logs.log))
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/items/1", nil)
			switch tt.authz {
			case "":
				req.Header.Set("Authorization", "Bearer "+tt.token)
			case "-":
			default:
				req.Header.Set("Authorization", tt.authz)
			}
			_, err = v.Authorize(req)
			var ae *auth.Error
			if !errors.As(err, &ae) || ae.Reason != tt.reason {
				t.Fatalf("Authorize = %v; want the reason %q", err, tt.reason)
			}
			if got := store.reads(); !maps.Equal(got, reads[tt.stage]) {
				t.Fatalf("the store was read %v; want %v (stage %q)", got, reads[tt.stage], tt.stage)
			}
			want := tt.status
			if want == 0 {
				want = http.StatusUnauthorized
			}
			rec := httptest.NewRecorder()
			v.Wrap(http.NotFoundHandler()).ServeHTTP(rec, req)
			body := map[int]string{http.StatusUnauthorized: "unauthorized\n", http.StatusForbidden: "forbidden\n"}[want]
			if rec.Code != want || rec.Body.String() != body {
				t.Fatalf("middleware answered %d %q; want %d %q", rec.Code, rec.Body, want, body)
			}
			if want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") != "Bearer" {
				t.Fatalf("401 without WWW-Authenticate: Bearer")
			}
		})
	}
	// The good token passes, so each case above fails for its own flaw.
	if rec := f.serve("GET", "/items/1", "Bearer "+good); rec.Code != http.StatusOK {
		t.Fatalf("the good token: %d %s", rec.Code, rec.Body)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the attacker's key server was hit %d times; want 0", n)
	}
	refusals := f.logs.obs.FilterMessage("discovery: auth: request refused")
	if n := refusals.Len(); n != len(tests) {
		t.Fatalf("logged %d refusals; want %d (one per middleware call)", n, len(tests))
	}
	// A 401 names the caller the token claims as claimed; a 403 as the caller.
	if n := refusals.FilterField(zap.String("claimed_caller", "orders")).FilterField(zap.Int("status", 401)).Len(); n == 0 {
		t.Fatal("no 401 logged the claimed caller")
	}
	// A caller the policy does not name is refused like a bad token (401),
	// before any key lookup, so probing cannot map the policy.
	if n := refusals.FilterField(zap.String("claimed_caller", "shipping")).FilterField(zap.String("reason", "caller not in the policy")).Len(); n != 1 {
		t.Fatalf("the refusal of an unnamed caller was logged %d times with its claimed caller; want 1", n)
	}
}

func mustDER(t testing.TB, pub any) []byte {
	t.Helper()
	b, err := x509MarshalPKIX(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A permitted request passes with the caller's identity in its context; the
// same caller is refused (403) where its rules do not reach.
func TestPolicyDecides(t *testing.T) {
	f := newFixture(t)
	tok := "Bearer " + f.token(t, "inventory")
	admin := newFixture(t, auth.WithScopes("admin", "read"))
	adminTok := "Bearer " + admin.token(t, "inventory")
	tests := []struct {
		name   string
		f      *fixture
		method string
		target string
		authz  string
		status int
	}{
		{"GET an item", f, "GET", "/items/42", tok, http.StatusOK},
		{"POST an item", f, "POST", "/items/42", tok, http.StatusForbidden},
		{"the items prefix itself without its slash", f, "GET", "/items", tok, http.StatusForbidden},
		{"stock, any method", f, "DELETE", "/stock", tok, http.StatusOK},
		{"under stock", f, "PUT", "/stock/7", tok, http.StatusOK},
		{"a sibling of stock", f, "GET", "/stockpile", tok, http.StatusForbidden},
		{"admin without the scope", f, "GET", "/admin/users", tok, http.StatusForbidden},
		{"admin with the scope", admin, "GET", "/admin/users", adminTok, http.StatusOK},
		{"billing's path", f, "POST", "/invoices/1", tok, http.StatusForbidden},
		{"dot-dot out of items", f, "GET", "/items/../admin", tok, http.StatusForbidden},
		{"encoded dot-dot out of items", f, "GET", "/items/%2e%2e/admin", tok, http.StatusForbidden},
		{"encoded slash", f, "GET", "/items%2Fx", tok, http.StatusForbidden},
		{"double slash", f, "GET", "/items//x", tok, http.StatusForbidden},
		{"root", f, "GET", "/", tok, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.f.serve(tt.method, tt.target, tt.authz)
			if rec.Code != tt.status {
				t.Fatalf("%s %s: %d %q; want %d", tt.method, tt.target, rec.Code, rec.Body, tt.status)
			}
			if tt.status == http.StatusOK && rec.Body.String() != "hello orders/10.0.0.7:8080" {
				t.Fatalf("the handler saw %q; want the caller's identity", rec.Body)
			}
		})
	}
	// The identity in full.
	req := httptest.NewRequest("GET", "/admin/x", nil)
	req.Header.Set("Authorization", adminTok)
	id, err := admin.verifier.Authorize(req)
	if err != nil {
		t.Fatal(err)
	}
	if id.Service != "orders" || id.Instance != "10.0.0.7:8080" || strings.Join(id.Scopes, ",") != "admin,read" ||
		id.KeyID != admin.kid || id.TokenID == "" || !id.IssuedAt.Equal(t0) || !id.ExpiresAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Identity = %+v", id)
	}
}

// A token just expired but within the leeway passes; Verify does not look
// at the policy.
func TestLeewayAndVerify(t *testing.T) {
	f := newFixture(t)
	tok := forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, withClaims(func(c jwt.MapClaims) {
		c["iat"], c["nbf"], c["exp"] = t0.Add(-time.Minute).Unix(), t0.Add(-time.Minute).Unix(), t0.Add(-auth.DefaultLeeway+time.Second).Unix()
	}), nil)
	if id, err := f.verifier.Verify(context.Background(), tok); err != nil || id.Service != "orders" {
		t.Fatalf("a token expired within the leeway: %v, %v", id, err)
	}
	// nbf within the leeway, and a typ with the application/ prefix
	tok = forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, withClaims(func(c jwt.MapClaims) {
		c["nbf"] = t0.Add(auth.DefaultLeeway - time.Second).Unix()
	}), func(h map[string]any) { h["typ"] = "application/svc+jwt" })
	if _, err := f.verifier.Verify(context.Background(), tok); err != nil {
		t.Fatalf("nbf within the leeway: %v", err)
	}
	// Verify checks the token only: a path the policy forbids is no matter.
	if _, err := f.verifier.Verify(context.Background(), f.token(t, "inventory")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier.Verify(context.Background(), "x.y.z"); !errors.Is(err, auth.ErrUnauthenticated) || errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("Verify(junk) = %v; want ErrUnauthenticated", err)
	}
}

// Without a policy, or with one that does not parse, every caller is
// refused; the bad policy is logged once per revision.
func TestPolicyFailsClosed(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	tok := "Bearer " + f.token(t, "inventory")
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(`{"auth":{"allow":{"orders":[{"path_prefx":"/items/"}]}}}`), t0, 10); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(t, "GET", "/items/1", tok, http.StatusUnauthorized)
	for range 3 {
		if rec := f.serve("GET", "/items/1", tok); rec.Code != http.StatusUnauthorized {
			t.Fatalf("with a misspelt policy: %d; want 401 (it names no caller)", rec.Code)
		}
	}
	if n := f.logs.obs.FilterMessage("discovery: auth: the service's policy is invalid; every request is refused").Len(); n != 1 {
		t.Fatalf("the invalid policy was logged %d times; want once", n)
	}
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(`{"max_items": 3}`), t0, 10); err != nil {
		t.Fatal(err)
	}
	if rec := f.serve("GET", "/items/1", tok); rec.Code != http.StatusUnauthorized {
		t.Fatalf("without an auth section: %d; want 401 (no caller is named)", rec.Code)
	}
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(inventoryPolicy), t0, 10); err != nil {
		t.Fatal(err)
	}
	// The change notification makes the cached snapshot stale; it is served
	// once more while a background refresh runs, then the new policy holds.
	f.waitStatus(t, "GET", "/items/1", tok, http.StatusOK)
	// A service the registry has never heard of has no policy.
	v, err := auth.NewVerifier(f.target, "unheard-of", auth.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/items/1", nil)
	req.Header.Set("Authorization", "Bearer "+f.token(t, "unheard-of"))
	if _, err := v.Authorize(req); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("Authorize for a service without a policy = %v; want ErrUnauthenticated (it names no caller)", err)
	}
}

// When neither the keys nor the policy can be read, the answer is 503: the
// caller did nothing wrong.
func TestUnavailableIs503(t *testing.T) {
	f := newFixture(t)
	tok := "Bearer " + f.token(t, "inventory")
	f.backend.SetFailure(errors.New("database down"))
	defer f.backend.SetFailure(nil)
	rec := f.serve("GET", "/items/1", tok)
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "service unavailable\n" {
		t.Fatalf("with the database down and nothing cached: %d %q; want 503", rec.Code, rec.Body)
	}
	if n := f.logs.obs.FilterLevelExact(zapWarn).FilterMessage("discovery: auth: request refused").Len(); n != 1 {
		t.Fatalf("logged %d warnings; want 1", n)
	}
}

// Tokens, their signatures and their claims never reach the logs, whatever
// the outcome.
func TestTokensNeverLogged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	good := f.token(t, "inventory")
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	tokens := []string{
		good,
		forge(t, jwt.SigningMethodEdDSA, otherEd, f.kid, goodClaims(), nil), // bad signature
		forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, withClaims(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Hour).Unix() }), nil),
		forge(t, jwt.SigningMethodEdDSA, otherEd, "nope", goodClaims(), nil), // unknown kid
		forge(t, jwt.SigningMethodEdDSA, f.priv, f.kid, goodClaims(), func(h map[string]any) { h["jku"] = "http://127.0.0.1:1/" }),
	}
	for _, tok := range tokens {
		for _, target := range []string{"/items/1", "/admin/x"} { // permitted, then forbidden
			f.serve("GET", target, "Bearer "+tok)
		}
	}
	f.backend.SetFailure(errors.New("down"))
	f.clock.Advance(10 * time.Minute) // past every cache window: the next request needs the database
	f.serve("GET", "/items/1", "Bearer "+good)
	f.backend.SetFailure(nil)
	_ = ctx
	if f.logs.obs.Len() < len(tokens) {
		t.Fatalf("only %d log entries; the test needs refusals to look at", f.logs.obs.Len())
	}
	for i, tok := range tokens {
		parts := strings.Split(tok, ".")
		for j, secret := range []string{tok, parts[1], parts[2], parts[2][:16]} {
			if f.logs.contains(secret) {
				t.Errorf("token %d, part %d is in the logs:\n%s", i, j, f.logs.text.String())
			}
		}
	}
}
