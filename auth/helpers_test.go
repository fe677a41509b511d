package auth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// inventoryPolicy is the configuration of the service under test: "orders"
// may GET items and use /stock, and reach /admin with the admin scope;
// "billing" may POST invoices.
const inventoryPolicy = `{
  "max_items": 10,
  "auth": {"allow": {
    "orders": [
      {"path_prefix": "/items/", "methods": ["GET"]},
      {"path_prefix": "/stock"},
      {"path_prefix": "/admin", "scope": "admin"}
    ],
    "billing": [{"path_prefix": "/invoices/", "methods": ["POST"]}]
  }}
}`

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Sync() error { return nil }

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// capture is a logger that records both structured entries (observer) and
// their JSON encoding (a buffer), so that tests can look for secrets in
// either.
type capture struct {
	log  *zap.Logger
	obs  *observer.ObservedLogs
	text *syncBuffer
}

func newCapture() *capture {
	obsCore, obs := observer.New(zap.DebugLevel)
	buf := &syncBuffer{}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewTee(obsCore, zapcore.NewCore(enc, buf, zap.DebugLevel)))
	return &capture{log: log, obs: obs, text: buf}
}

// contains reports whether s appears in any logged message or field.
func (c *capture) contains(s string) bool {
	if strings.Contains(c.text.String(), s) {
		return true
	}
	for _, e := range c.obs.All() {
		if strings.Contains(e.Message, s) {
			return true
		}
		b, _ := json.Marshal(e.ContextMap())
		if strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// fixture is two processes sharing an in-memory backend: "orders" (the
// caller, with a Signer whose first key the test knows) and "inventory"
// (the called service, with a Verifier and inventoryPolicy).
type fixture struct {
	backend  *discoverytest.Backend
	clock    *discoverytest.Clock
	caller   *discovery.Registry
	target   *discovery.Registry
	priv     ed25519.PrivateKey
	kid      string
	pubDER   []byte
	signer   *auth.Signer
	verifier *auth.Verifier
	logs     *capture
	handler  http.Handler
}

func newFixture(t testing.TB, signerOpts ...auth.Option) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{backend: discoverytest.NewBackend(), clock: discoverytest.NewClock(t0), logs: newCapture(), kid: "orders-k1"}
	f.caller = discoverytest.NewRegistry(t, f.backend, discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	f.target = discoverytest.NewRegistry(t, f.backend, discovery.WithClock(f.clock), discovery.WithoutHealthChecks())
	if _, _, err := f.backend.SetConfig(ctx, "inventory", []byte(inventoryPolicy), t0, 10); err != nil {
		t.Fatal(err)
	}
	var err error
	_, f.priv, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.pubDER, _ = x509.MarshalPKIXPublicKey(f.priv.Public())
	opts := append([]auth.Option{auth.WithClock(f.clock), auth.WithKey(f.kid, f.priv), auth.WithInstance("10.0.0.7:8080")}, signerOpts...)
	f.signer, err = auth.NewSigner(ctx, f.caller, "orders", opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.verifier, err = auth.NewVerifier(f.target, "inventory", auth.WithClock(f.clock), auth.WithLogger(f.logs.log))
	if err != nil {
		t.Fatal(err)
	}
	f.handler = f.verifier.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.FromContext(r.Context())
		if !ok {
			http.Error(w, "no identity", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("hello " + id.Service + "/" + id.Instance))
	}))
	return f
}

// token returns a fresh token of the fixture's Signer for aud.
func (f *fixture) token(t testing.TB, aud string) string {
	t.Helper()
	tok, err := f.signer.Token(context.Background(), aud)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// serve sends a request with the given Authorization header value (none
// if empty) through the middleware.
func (f *fixture) serve(method, target, authz string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// goodClaims are the claims a legitimate token of orders for inventory has
// at t0.
func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": auth.DefaultIssuer, "sub": "orders/10.0.0.7:8080", "aud": []string{"inventory"},
		"iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(time.Minute).Unix(), "jti": "test-jti",
	}
}

// forge signs claims with method and key under a header that has typ and
// kid, after edit changes the header as a case wants.
func forge(t testing.TB, method jwt.SigningMethod, key any, kid string, c jwt.MapClaims, edit func(h map[string]any)) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	tok.Header["typ"] = auth.TokenType
	tok.Header["kid"] = kid
	if edit != nil {
		edit(tok.Header)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("forge: %v", err)
	}
	return s
}

// withClaims returns goodClaims changed by edit.
func withClaims(edit func(c jwt.MapClaims)) jwt.MapClaims {
	c := goodClaims()
	edit(c)
	return c
}

// unsigned builds "header.payload.signature" from JSON parts and a raw
// signature.
func unsigned(header, payload string, sig []byte) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(sig)
}

// world is a deployment for the tests that run against every backend.
type world struct {
	name    string
	db      bool
	redis   bool
	options []discovery.Option
}

var worldKinds = []struct {
	name      string
	sql       string // "", "sqlite" or "postgres"
	withRedis bool
}{
	{"memory", "", false},
	{"sqlite", "sqlite", false},
	{"sqlite+redis", "sqlite", true},
	{"postgres", "postgres", false},
	{"postgres+redis", "postgres", true},
}

func forEachWorld(t *testing.T, fn func(t *testing.T, w *world)) {
	for _, k := range worldKinds {
		t.Run(k.name, func(t *testing.T) {
			prefix := testutil.Prefix(t)
			ns := strings.TrimSuffix(prefix, "_")
			w := &world{name: k.name, db: k.sql != "", redis: k.withRedis, options: []discovery.Option{discovery.WithNamespace(ns)}}
			switch k.sql {
			case "sqlite":
				w.options = append(w.options, discovery.WithDB(testutil.SQLite(t)))
			case "postgres":
				w.options = append(w.options, discovery.WithDB(testutil.Postgres(t, prefix)))
			default:
				w.options = append(w.options, discovery.WithStore(discoverytest.NewBackend()))
			}
			if k.withRedis {
				rdb, _ := testutil.Redis(t, ns)
				w.options = append(w.options, discovery.WithRedis(rdb))
			}
			fn(t, w)
		})
	}
}

// registry returns a new Registry (a process) of the world.
func (w *world) registry(t *testing.T, opts ...discovery.Option) *discovery.Registry {
	t.Helper()
	r, err := discovery.New(append(append([]discovery.Option{}, w.options...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// eventually waits in real time for cond; in worlds where nothing announces
// changes (SQL without Redis) fake time moves, to end cache freshness.
func (w *world) eventually(t *testing.T, clock *discoverytest.Clock, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		if w.db && !w.redis {
			clock.Advance(time.Second)
		}
		time.Sleep(time.Millisecond)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

var x509MarshalPKIX = x509.MarshalPKIXPublicKey

const zapWarn = zapcore.WarnLevel

// waitStatus repeats a request until it gets status, for changes that reach
// the cache through a background refresh.
func (f *fixture) waitStatus(t *testing.T, method, target, authz string, status int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec := f.serve(method, target, authz)
		if rec.Code == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: still %d after 5s; want %d", method, target, rec.Code, status)
		}
		time.Sleep(time.Millisecond)
	}
}

// countingStore counts the reads of each service, to tell which services a
// Registry looked up in the store.
type countingStore struct {
	*discoverytest.Backend
	mu    sync.Mutex
	loads map[string]int64
}

func (s *countingStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.mu.Lock()
	if s.loads == nil {
		s.loads = map[string]int64{}
	}
	s.loads[name]++
	s.mu.Unlock()
	return s.Backend.Load(ctx, name)
}

func (s *countingStore) reads() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.loads)
}

func mustECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
