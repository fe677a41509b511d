package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// Bad options are refused at construction, naming the option, and nothing
// is published.
func TestConstructorsValidate(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	reg := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks())
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	signers := []struct {
		name    string
		reg     *discovery.Registry
		service string
		opts    []auth.Option
		field   string
	}{
		{"nil registry", nil, "orders", nil, "option registry"},
		{"bad service", reg, "a/b", nil, "service name"},
		{"lifetime over 5 minutes", reg, "orders", []auth.Option{auth.WithTokenLifetime(5*time.Minute + time.Second)}, "option WithTokenLifetime"},
		{"zero lifetime", reg, "orders", []auth.Option{auth.WithTokenLifetime(0)}, "option WithTokenLifetime"},
		{"short key lifetime", reg, "orders", []auth.Option{auth.WithKeyLifetime(time.Minute)}, "option WithKeyLifetime"},
		{"HS256", reg, "orders", []auth.Option{auth.WithAlgorithm("HS256")}, "option WithAlgorithm"},
		{"none", reg, "orders", []auth.Option{auth.WithAlgorithm("none")}, "option WithAlgorithm"},
		{"RSA key", reg, "orders", []auth.Option{auth.WithKey("k1", rsaKey)}, "option WithKey"},
		{"P-384 key", reg, "orders", []auth.Option{auth.WithKey("k1", p384)}, "option WithKey"},
		{"kid with SQL", reg, "orders", []auth.Option{auth.WithKey("1' OR '1'='1", ed)}, "key id"},
		{"bad instance", reg, "orders", []auth.Option{auth.WithInstance("a b")}, "instance id"},
		{"empty scope", reg, "orders", []auth.Option{auth.WithScopes("")}, "option WithScopes"},
		{"scope with a space", reg, "orders", []auth.Option{auth.WithScopes("a b")}, "option WithScopes"},
		{"empty issuer", reg, "orders", []auth.Option{auth.WithIssuer("")}, "option WithIssuer"},
		{"nil logger", reg, "orders", []auth.Option{auth.WithLogger(nil)}, "option WithLogger"},
	}
	for _, tt := range signers {
		_, err := auth.NewSigner(ctx, tt.reg, tt.service, tt.opts...)
		var ve *discovery.ValidationError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("NewSigner, %s: %v; want a ValidationError on %q", tt.name, err, tt.field)
		}
	}
	if infos, _ := reg.Services(ctx); len(infos) != 0 {
		t.Fatalf("refused signers published keys: %+v", infos)
	}
	verifiers := []struct {
		name    string
		reg     *discovery.Registry
		service string
		opts    []auth.Option
		field   string
	}{
		{"nil registry", nil, "inventory", nil, "option registry"},
		{"bad service", reg, "a:b", nil, "service name"},
		{"leeway over 30s", reg, "inventory", []auth.Option{auth.WithLeeway(31 * time.Second)}, "option WithLeeway"},
		{"negative leeway", reg, "inventory", []auth.Option{auth.WithLeeway(-time.Second)}, "option WithLeeway"},
		{"bad issuer", reg, "inventory", []auth.Option{auth.WithIssuer("a b")}, "option WithIssuer"},
	}
	for _, tt := range verifiers {
		_, err := auth.NewVerifier(tt.reg, tt.service, tt.opts...)
		var ve *discovery.ValidationError
		if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
			t.Errorf("NewVerifier, %s: %v; want a ValidationError on %q", tt.name, err, tt.field)
		}
	}
	// The limits themselves are accepted.
	if _, err := auth.NewSigner(ctx, reg, "orders", auth.WithTokenLifetime(auth.MaxTokenLifetime), auth.WithKeyLifetime(0)); err != nil {
		t.Fatalf("a 5-minute lifetime: %v", err)
	}
	if _, err := auth.NewVerifier(reg, "inventory", auth.WithLeeway(auth.MaxLeeway)); err != nil {
		t.Fatalf("a 30s leeway: %v", err)
	}
}

// A signer's tokens carry exactly the claims documented, and a deployment's
// issuer keeps another deployment's tokens out.
func TestTokenClaims(t *testing.T) {
	f := newFixture(t, auth.WithScopes("read"), auth.WithTokenLifetime(2*time.Minute), auth.WithIssuer("rssbot-prod"))
	tok := f.token(t, "inventory")
	p, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Claims.(jwt.MapClaims)
	if p.Header["typ"] != "svc+jwt" || p.Header["alg"] != "EdDSA" || p.Header["kid"] != f.kid || len(p.Header) != 3 {
		t.Fatalf("header = %v", p.Header)
	}
	aud, _ := c.GetAudience()
	if c["iss"] != "rssbot-prod" || c["sub"] != "orders/10.0.0.7:8080" || len(aud) != 1 || aud[0] != "inventory" ||
		c["iat"] != float64(t0.Unix()) || c["nbf"] != float64(t0.Unix()) || c["exp"] != float64(t0.Add(2*time.Minute).Unix()) ||
		c["jti"] == "" || len(c["scope"].([]any)) != 1 || c["scope"].([]any)[0] != "read" || len(c) != 8 {
		t.Fatalf("claims = %v", c)
	}
	// The fixture's verifier expects the default issuer.
	if _, err := f.verifier.Verify(context.Background(), tok); reason(err) != "wrong issuer" {
		t.Fatalf("a token of another deployment: %v; want wrong issuer", err)
	}
	v, _ := auth.NewVerifier(f.target, "inventory", auth.WithClock(f.clock), auth.WithIssuer("rssbot-prod"))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("with the deployment's issuer: %v", err)
	}
	if _, err := f.signer.Token(context.Background(), "a/b"); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("Token for an invalid audience: %v; want ErrInvalid", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// recorder is a base RoundTripper that records the Authorization header of
// each request it sends.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Header.Get("Authorization"))
	r.mu.Unlock()
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[len(r.seen)-1]
}

// The Transport adds one token per target service, cached until three
// quarters of its lifetime, then a fresh one; it never changes the caller's
// request.
func TestTransport(t *testing.T) {
	f := newFixture(t)
	base := &recorder{}
	client := &http.Client{Transport: &auth.Transport{Source: f.signer, Base: base}}
	get := func(url string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("Authorization") != "" {
			t.Fatal("the Transport changed the caller's request")
		}
		return strings.TrimPrefix(base.last(), "Bearer ")
	}
	inv := get("http://inventory/items/1")
	if id, err := f.verifier.Verify(context.Background(), inv); err != nil || id.Service != "orders" {
		t.Fatalf("the token sent to inventory does not verify there: %v", err)
	}
	if again := get("http://inventory:8080/items/2"); again != inv {
		t.Fatal("a second request to the same service got a new token; want the cached one")
	}
	bil := get("http://billing/invoices/")
	if bil == inv {
		t.Fatal("billing got inventory's token")
	}
	if _, err := f.verifier.Verify(context.Background(), bil); reason(err) != "wrong audience" {
		t.Fatalf("billing's token at inventory: %v; want wrong audience", err)
	}
	f.clock.Advance(auth.DefaultTokenLifetime*3/4 - time.Second)
	if get("http://inventory/") != inv {
		t.Fatal("refreshed before three quarters of the lifetime")
	}
	f.clock.Advance(time.Second)
	fresh := get("http://inventory/")
	if fresh == inv {
		t.Fatal("not refreshed at three quarters of the lifetime")
	}
	if _, err := f.verifier.Verify(context.Background(), fresh); err != nil {
		t.Fatalf("the refreshed token: %v", err)
	}

	// An Authorization header of the caller's own is left alone.
	req, _ := http.NewRequest("GET", "http://inventory/", nil)
	req.Header.Set("Authorization", "Bearer mine")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if base.last() != "Bearer mine" {
		t.Fatalf("sent %q; want the caller's own header", base.last())
	}

	// The audience can come from elsewhere than the host.
	byHeader := &http.Client{Transport: &auth.Transport{Source: f.signer, Base: base,
		Audience: func(r *http.Request) (string, error) { return r.Header.Get("X-Service"), nil }}}
	req, _ = http.NewRequest("GET", "http://10.0.0.9:8080/", nil)
	req.Header.Set("X-Service", "inventory")
	resp, err = byHeader.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := f.verifier.Verify(context.Background(), strings.TrimPrefix(base.last(), "Bearer ")); err != nil {
		t.Fatalf("a token for the audience named by the Audience func: %v", err)
	}
}

// A redirect to another service gets no token: the redirecting service,
// not the caller, chose that target, and a token would let it make the
// caller call any service with the caller's identity (http.Client drops the
// Authorization of such redirects for this reason; the Transport signed a
// new one). A redirect within the service still carries its token, also
// when the request that got it was sent to an instance's address with the
// service's name as Host, as the Registry's transport sends it.
func TestTransportSignsNoTokenForARedirectToAnotherHost(t *testing.T) {
	f := newFixture(t)
	var (
		mu   sync.Mutex
		seen = map[string]string{} // path -> Authorization
	)
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization")
		mu.Unlock()
		// as the Registry's transport: to an instance, named by Host
		sent := r.Clone(r.Context())
		sent.Host, sent.URL.Host = r.URL.Host, "10.0.0.7:8080"
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: sent}
		if to := r.URL.Query().Get("to"); to != "" {
			resp.StatusCode = http.StatusTemporaryRedirect
			resp.Header.Set("Location", to)
		}
		return resp, nil
	})
	client := &http.Client{Transport: &auth.Transport{Source: f.signer, Base: base}}
	for _, url := range []string{
		"http://inventory/a?to=http://billing/stolen",
		"http://inventory/b?to=http://inventory:8080/same",
		// Service names are case-sensitive: Inventory is another service
		// than inventory, which the redirect's token would be for.
		"http://Inventory/c?to=http://inventory/cased",
	} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["/a"] == "" || seen["/b"] == "" {
		t.Fatalf("the first requests went without a token: %v", seen)
	}
	if got := seen["/stolen"]; got != "" {
		t.Errorf("the redirect to billing carried %q; want no token", got)
	}
	if got := seen["/cased"]; got != "" {
		t.Errorf("the redirect from Inventory to inventory carried %q; want no token", got)
	}
	if got := seen["/same"]; got != seen["/b"] {
		t.Errorf("the redirect within inventory carried %q; want inventory's token %q", got, seen["/b"])
	}
}

type closeBody struct {
	io.Reader
	closed bool
}

func (b *closeBody) Close() error { b.closed = true; return nil }

// When no token can be had, RoundTrip fails without sending and closes the
// body, as the RoundTripper contract says.
func TestTransportErrors(t *testing.T) {
	f := newFixture(t)
	sent := 0
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { sent++; return nil, errors.New("unreachable") })
	tests := []struct {
		name string
		tr   *auth.Transport
		url  string
	}{
		{"a host that is no service name", &auth.Transport{Source: f.signer, Base: base}, "http://[::1]:80/"},
		{"an audience func that fails", &auth.Transport{Source: f.signer, Base: base,
			Audience: func(*http.Request) (string, error) { return "", errors.New("no service") }}, "http://inventory/"},
		{"no source", &auth.Transport{Base: base}, "http://inventory/"},
	}
	for _, tt := range tests {
		body := &closeBody{Reader: strings.NewReader("payload")}
		req, _ := http.NewRequest("POST", tt.url, body)
		if _, err := tt.tr.RoundTrip(req); err == nil {
			t.Errorf("%s: RoundTrip succeeded", tt.name)
		}
		if !body.closed {
			t.Errorf("%s: the request body was not closed", tt.name)
		}
	}
	if sent != 0 {
		t.Fatalf("%d requests were sent without a token", sent)
	}
}

// Many goroutines asking for tokens for a few audiences at once, while the
// key rotates, all get tokens that verify (run with -race). The verifier
// runs in the signer's process, which sees its own key changes at once;
// another process could miss a second rotation within a minute (see Rotate).
func TestSignerConcurrency(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	verifier, err := auth.NewVerifier(f.caller, "inventory", auth.WithClock(f.clock))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64*20)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				aud := []string{"inventory", "billing", "shipping"}[(g+i)%3]
				tok, err := f.signer.Token(ctx, aud)
				if err == nil && aud == "inventory" {
					_, err = verifier.Verify(ctx, tok)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for range 3 {
		if err := f.signer.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

type idleCloser struct {
	recorder
	closed int
}

func (c *idleCloser) CloseIdleConnections() { c.closed++ }

func TestTransportClosesIdleConnections(t *testing.T) {
	base := &idleCloser{}
	client := &http.Client{Transport: &auth.Transport{Base: base}}
	client.CloseIdleConnections()
	if base.closed != 1 {
		t.Fatalf("the base transport's CloseIdleConnections was called %d times; want 1", base.closed)
	}
}

func TestAccessors(t *testing.T) {
	f := newFixture(t)
	if f.signer.Service() != "orders" || f.verifier.Service() != "inventory" || f.signer.KeyID() != f.kid {
		t.Fatalf("Service/KeyID = %s, %s, %s", f.signer.Service(), f.verifier.Service(), f.signer.KeyID())
	}
	// Middleware is Wrap.
	h := auth.Middleware(f.verifier, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := auth.FromContext(r.Context()); !ok || id.Service != "orders" {
			t.Errorf("FromContext = %v, %v", id, ok)
		}
	}))
	req, _ := http.NewRequest("GET", "/items/1", nil)
	req.Header.Set("Authorization", "Bearer "+f.token(t, "inventory"))
	rec := &responseRecorder{header: http.Header{}}
	h.ServeHTTP(rec, req)
	if rec.code != 0 && rec.code != http.StatusOK {
		t.Fatalf("Middleware answered %d", rec.code)
	}
	if _, ok := auth.FromContext(context.Background()); ok {
		t.Fatal("FromContext found an identity in an empty context")
	}
	id := &discovery.Identity{Service: "x"}
	if got, ok := auth.FromContext(auth.NewContext(context.Background(), id)); !ok || got != id {
		t.Fatal("FromContext does not return what NewContext stored")
	}
}

type responseRecorder struct {
	header http.Header
	code   int
}

func (r *responseRecorder) Header() http.Header         { return r.header }
func (r *responseRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *responseRecorder) WriteHeader(code int)        { r.code = code }
