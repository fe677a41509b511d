package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/rssbot/discovery"
)

// Identity is a caller as a verified token names it (see
// discovery.Identity).
type Identity = discovery.Identity

// maxParsedKeys bounds a Verifier's cache of parsed public keys, and
// maxRefetchState the services whose last refetch it remembers.
const (
	maxParsedKeys   = 4096
	maxRefetchState = 4096
)

// refusedHeaders name keys or certificates to fetch or trust from the token
// itself; a Verifier refuses any token that has one (RFC 8725 section 3.10)
// and never reads them. "crit" is refused too: no extension is understood.
var refusedHeaders = []string{"jku", "x5u", "jwk", "x5c", "crit"}

// Verifier checks the tokens sent to one service and what their callers may
// do there. It reads keys and the service's policy through the Registry's
// caches, so verifying allocates a little and reads nothing remote on the
// common path. It implements discovery.Authorizer and is safe for
// concurrent use.
//
// A token passes when, in this order: it is at most MaxTokenSize bytes of
// three base64url parts; its header has "typ" svc+jwt, "alg" EdDSA or
// ES256, a well-formed "kid", and none of "jku", "x5u", "jwk", "x5c",
// "crit"; its "sub" is "service" or "service/instance"; its "aud" is exactly
// this service and its "iss" this deployment's (WithIssuer); the key "kid"
// of the calling service is known (looked up after the checks above, and
// re-read from the database at most once per KeyRefetchInterval per service
// when unknown), not retired, and of the token's algorithm, which the
// parser is then pinned to; the signature verifies; "exp" and "iat" are
// present, and "exp", "nbf" and "iat" hold within the leeway; and "exp" is
// at most MaxTokenLifetime after "iat".
type Verifier struct {
	reg     *discovery.Registry
	service string
	issuer  string
	leeway  time.Duration
	now     func() time.Time
	log     *zap.Logger
	parsers map[string]*jwt.Parser // by algorithm

	keysMu sync.RWMutex
	keys   map[keyRef]*parsedKey

	refetchMu  sync.Mutex
	refetched  map[string]time.Time    // service -> last refetch
	refetching map[string]*refetchCall // service -> refetch under way

	strangers *strangers // bounds the lookups of callers the registry does not know

	policy atomic.Pointer[policyEntry]
}

var _ discovery.Authorizer = (*Verifier)(nil)

type keyRef struct{ service, kid string }

type parsedKey struct {
	der []byte
	alg string
	pub any
}

type policyEntry struct {
	configRev int64
	config    []byte // the document parsed, as the (immutable) snapshot holds it
	policy    *Policy
}

// sameConfig reports whether doc is the document e parsed: the same bytes
// (a new snapshot of an unchanged configuration) or the same slice (the
// same snapshot, the common case, compared in O(1)).
func (e *policyEntry) sameConfig(doc []byte) bool {
	if len(doc) != len(e.config) {
		return false
	}
	return len(doc) == 0 || sameSlice(doc, e.config) || bytes.Equal(doc, e.config)
}

// sameSlice reports whether a and b, of one length above 0, share their
// bytes.
func sameSlice(a, b []byte) bool { return &a[0] == &b[0] }

// NewVerifier returns the Verifier of the tokens sent to service, reading
// keys and the policy (service's configuration) through reg. The options
// are validated; errors match discovery.ErrInvalid and name the option.
func NewVerifier(reg *discovery.Registry, service string, opts ...Option) (*Verifier, error) {
	c, err := newChecked(reg, service, opts)
	if err != nil {
		return nil, err
	}
	if c.leeway < 0 || c.leeway > MaxLeeway {
		return nil, optErr("WithLeeway", c.leeway.String(), "must be 0 to "+MaxLeeway.String())
	}
	if c.unknownRate < 0 || c.unknownRate > maxUnknownCallerRate {
		return nil, optErr("WithUnknownCallerRate", strconv.Itoa(c.unknownRate), "must be 0 (no bound) to "+strconv.Itoa(maxUnknownCallerRate))
	}
	v := &Verifier{
		reg: reg, service: service, issuer: c.issuer, leeway: c.leeway, now: c.now(), log: c.log,
		parsers: map[string]*jwt.Parser{}, keys: map[keyRef]*parsedKey{}, refetched: map[string]time.Time{},
		refetching: map[string]*refetchCall{},
	}
	v.strangers = newStrangers(c.unknownRate, reg.NegativeTTL(), v.now())
	for _, alg := range []string{EdDSA, ES256} {
		v.parsers[alg] = jwt.NewParser(
			jwt.WithValidMethods([]string{alg}), // pinned: one parser per key algorithm
			jwt.WithAudience(service), jwt.WithIssuer(c.issuer),
			jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
			jwt.WithLeeway(c.leeway), jwt.WithTimeFunc(v.now), jwt.WithStrictDecoding(),
		)
	}
	return v, nil
}

// Service returns the name of the service whose tokens the Verifier checks.
func (v *Verifier) Service() string { return v.service }

// Verify checks a token sent to this service and returns its caller's
// identity. It does not consult the policy (Authorize does). Errors are
// *Error values matching ErrUnauthenticated, or discovery.ErrUnavailable when
// the caller's keys could not be read.
//
// Without a policy to refuse unknown callers first, it looks up the keys
// of whatever service a token names: a token naming a service the
// registry does not know costs a read of Redis and of the database (the
// answer is remembered a second per name). Such lookups are bounded
// (WithUnknownCallerRate: 10 a second on average, 100 at once): past the
// bound, a token of a caller the registry has not been found to know is
// refused unread, with an error matching discovery.ErrUnavailable (503),
// until the bound allows more. A caller the registry knows can be held up
// only on its first request to this Verifier (or its first since 4096
// other callers were first seen): once found known, it is looked up
// outside the bound.
// Where unauthenticated clients reach it, prefer Authorize: callers its
// policy names are looked up outside the bound, and others are refused
// before any lookup unless the policy admits any caller.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	id, err := v.verify(ctx, token, nil)
	if err != nil {
		return nil, err
	}
	return id, nil
}

// Authorize checks the request's bearer token and that the service's policy
// permits its caller to make it. A caller the policy does not name is
// refused before its keys are looked up, so made-up callers cost no
// database read; it is refused as unauthenticated (401), the answer a bad
// token gets, so that probing learns nothing of the policy. A verified
// caller the policy names but does not permit this request is forbidden
// (403). It implements discovery.Authorizer.
func (v *Verifier) Authorize(r *http.Request) (*Identity, error) {
	token, err := bearer(r)
	if err != nil {
		return nil, err
	}
	var pol *Policy
	gate := func(ctx context.Context, caller string) (bool, *Error) {
		p, err := v.currentPolicy(ctx)
		if err != nil {
			return false, err
		}
		pol = p
		if !p.names(caller) {
			return false, unauthenticated("caller not in the policy", nil)
		}
		return p.namesItself(caller), nil
	}
	id, verr := v.verify(r.Context(), token, gate)
	if verr != nil {
		return nil, verr
	}
	if !pol.Allows(id, r) {
		e := forbidden("request not permitted by the policy")
		e.Caller, e.KeyID = id.Service, id.KeyID
		return nil, e
	}
	return id, nil
}

// bearer returns the token of the request's one Authorization header.
func bearer(r *http.Request) (string, *Error) {
	vals := r.Header.Values("Authorization")
	switch {
	case len(vals) == 0:
		return "", unauthenticated("no bearer token", nil)
	case len(vals) > 1:
		return "", unauthenticated("several Authorization headers", nil)
	}
	const scheme = "bearer "
	h := vals[0]
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", unauthenticated("no bearer token", nil)
	}
	tok := strings.TrimLeft(h[len(scheme):], " ")
	if tok == "" {
		return "", unauthenticated("no bearer token", nil)
	}
	return tok, nil
}

// header is what a Verifier reads of a token's header before any lookup.
type header struct {
	alg, typ, kid string
}

// parseHeader decodes a token's header. It refuses key and certificate
// references whatever their case, and members that are not strings.
func parseHeader(seg string) (header, *Error) {
	var h header
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return h, unauthenticated("malformed header", nil)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return h, unauthenticated("malformed header", nil)
	}
	for name := range m {
		for _, bad := range refusedHeaders {
			if strings.EqualFold(name, bad) {
				return h, unauthenticated("key-reference header refused ("+bad+")", nil)
			}
		}
	}
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"alg", &h.alg}, {"typ", &h.typ}, {"kid", &h.kid}} {
		name, dst := f.name, f.dst
		raw, ok := m[name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, dst); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			return h, unauthenticated("malformed header", nil)
		}
	}
	return h, nil
}

func typeOK(typ string) bool {
	return strings.EqualFold(typ, TokenType) || strings.EqualFold(typ, "application/"+TokenType)
}

// splitSubject splits "service" or "service/instance".
func splitSubject(sub string) (service, instance string, ok bool) {
	service, instance, found := strings.Cut(sub, "/")
	if discovery.ValidateServiceName(service) != nil {
		return "", "", false
	}
	if found && discovery.ValidateInstanceID(instance) != nil {
		return "", "", false
	}
	return service, instance, true
}

// verify checks a token; gate, if any, runs once the caller is known and
// before its keys are looked up, and reports whether the policy names the
// caller itself (not only through AnyCaller): then its lookup is outside
// the bound on lookups of unknown callers.
func (v *Verifier) verify(ctx context.Context, raw string, gate func(context.Context, string) (bool, *Error)) (*Identity, *Error) {
	if len(raw) > MaxTokenSize {
		return nil, unauthenticated("token too large", nil)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, unauthenticated("malformed token", nil)
	}
	h, e := parseHeader(parts[0])
	if e != nil {
		return nil, e
	}
	if !typeOK(h.typ) {
		return nil, unauthenticated("wrong or missing typ", nil)
	}
	if h.alg != EdDSA && h.alg != ES256 {
		return nil, unauthenticated("algorithm not allowed", nil)
	}
	if discovery.ValidateKeyID(h.kid) != nil {
		return nil, unauthenticated("malformed kid", nil)
	}
	var pre claims
	if b, err := base64.RawURLEncoding.Strict().DecodeString(parts[1]); err != nil || json.Unmarshal(b, &pre) != nil {
		return nil, unauthenticated("malformed claims", nil)
	}
	caller, instance, ok := splitSubject(pre.Subject)
	if !ok {
		return nil, unauthenticated("malformed sub", nil)
	}
	fail := func(e *Error) (*Identity, *Error) {
		e.Caller, e.KeyID = caller, h.kid
		return nil, e
	}
	if len(pre.Audience) != 1 || pre.Audience[0] != v.service {
		return fail(unauthenticated("wrong audience", nil))
	}
	if pre.Issuer != v.issuer {
		return fail(unauthenticated("wrong issuer", nil))
	}
	named := false
	if gate != nil {
		n, e := gate(ctx, caller)
		if e != nil {
			return fail(e)
		}
		named = n
	}
	var (
		took     bool
		admitted time.Time
	)
	if !named {
		admitted = v.now()
		switch v.strangers.admit(caller, admitted) {
		case admitRefused:
			return fail(unavailable("too many lookups of unknown callers", nil))
		case admitUnknown:
			return fail(unauthenticated("unknown key", nil))
		case admitPaid:
			took = true
		}
	}
	key, lookup, e := v.key(ctx, caller, h.kid)
	if !named {
		v.strangers.settle(caller, took, lookup, admitted)
	}
	if e != nil {
		return fail(e)
	}
	now := v.now()
	if !key.RetiresAt.IsZero() && !now.Before(key.RetiresAt) {
		return fail(unauthenticated("key retired", nil))
	}
	if key.Algorithm != h.alg {
		return fail(unauthenticated("algorithm does not match the key", nil))
	}
	pub, e := v.publicKey(caller, key)
	if e != nil {
		return fail(e)
	}
	var c claims
	_, err := v.parsers[key.Algorithm].ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		// The parser decoded the header again; it must say what we checked.
		if t.Header["kid"] != any(h.kid) || t.Header["alg"] != any(key.Algorithm) {
			return nil, errHeaderMismatch
		}
		return pub, nil
	})
	if err != nil {
		return fail(jwtError(err))
	}
	if c.IssuedAt == nil {
		return fail(unauthenticated("missing iat", nil))
	}
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > MaxTokenLifetime {
		return fail(unauthenticated("lifetime too long", nil))
	}
	if c.Subject != pre.Subject || len(c.ID) > 128 || !printableASCII(c.ID) {
		return fail(unauthenticated("malformed claims", nil))
	}
	if validScopes(c.Scope) != nil {
		return fail(unauthenticated("malformed scope", nil))
	}
	return &Identity{
		Service: caller, Instance: instance, Scopes: c.Scope, KeyID: h.kid, TokenID: c.ID,
		IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

var errHeaderMismatch = errors.New("header changed between reads")

// jwtError maps the parser's errors to fixed reasons.
func jwtError(err error) *Error {
	reasons := []struct {
		target error
		reason string
	}{
		{jwt.ErrTokenSignatureInvalid, "bad signature"},
		{jwt.ErrTokenRequiredClaimMissing, "missing exp"},
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenNotValidYet, "token not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "token issued in the future"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
		{jwt.ErrTokenMalformed, "malformed token"},
	}
	for _, r := range reasons {
		if errors.Is(err, r.target) {
			return unauthenticated(r.reason, err)
		}
	}
	return unauthenticated("invalid token", err)
}

// callerLookup is what a key lookup found of the caller's service.
type callerLookup uint8

const (
	callerFailed  callerLookup = iota // the registry could not be read
	callerUnknown                     // the registry has no such service
	callerKnown                       // the registry knows it
)

// key finds a key of service by ID: in the cached snapshot, else (at most
// once per KeyRefetchInterval per service) in the database. A service the
// registry does not know has no keys: the database said so within the
// negative cache's second, and reading it again doubled what a made-up
// caller costs and spent the refetch state of real services on it.
func (v *Verifier) key(ctx context.Context, service, kid string) (*discovery.PublicKey, callerLookup, *Error) {
	svc, err := v.reg.Snapshot(ctx, service)
	switch {
	case errors.Is(err, discovery.ErrNotFound):
		return nil, callerUnknown, unauthenticated("unknown key", nil)
	case err != nil:
		return nil, callerFailed, unavailable("keys unavailable", err)
	}
	if k := svc.Key(kid); k != nil {
		return k, callerKnown, nil
	}
	keys, ok, err := v.refetch(ctx, service)
	if !ok {
		return nil, callerKnown, unauthenticated("unknown key", nil)
	}
	if err != nil && !errors.Is(err, discovery.ErrNotFound) {
		return nil, callerKnown, unavailable("keys unavailable", err)
	}
	for i := range keys {
		if keys[i].ID == kid {
			return &keys[i], callerKnown, nil
		}
	}
	return nil, callerKnown, unauthenticated("unknown key", nil)
}

// refetchCall is a read of a service's keys from the database under way.
type refetchCall struct {
	done chan struct{} // closed once keys and err are set
	keys []discovery.PublicKey
	err  error
}

// refetch reads service's keys from the database, unless that was done
// within KeyRefetchInterval (ok false). A request that comes while a read
// is under way waits for it and shares its answer: refused as unknown at
// once, every request but the first that met a new key during the read
// failed.
func (v *Verifier) refetch(ctx context.Context, service string) (keys []discovery.PublicKey, ok bool, err error) {
	v.refetchMu.Lock()
	if call := v.refetching[service]; call != nil {
		v.refetchMu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
		if err := call.err; (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() == nil {
			// The reader's request ended, not the read: join the read
			// itself (RefreshKeys shares one read of a service).
			keys, err := v.reg.RefreshKeys(ctx, service)
			return keys, true, err
		}
		return call.keys, true, call.err
	}
	at, ok := v.mayRefetchLocked(service)
	if !ok {
		v.refetchMu.Unlock()
		return nil, false, nil
	}
	call := &refetchCall{done: make(chan struct{})}
	v.refetching[service] = call
	v.refetchMu.Unlock()

	call.keys, call.err = v.reg.RefreshKeys(ctx, service)
	v.refetchMu.Lock()
	delete(v.refetching, service)
	// A request that ended (its client hung up) left the read, which goes on
	// without it and keeps what it finds in the cache: the minute is spent.
	// Counted as a failed read, a client dropping each request during the
	// read had the keys read once a second instead of once a minute.
	left := ctx.Err() != nil && errors.Is(call.err, ctx.Err())
	if call.err != nil && !errors.Is(call.err, discovery.ErrNotFound) && !left {
		v.refetchFailedLocked(service, at)
	}
	v.refetchMu.Unlock()
	close(call.done)
	return call.keys, true, call.err
}

// mayRefetchLocked reports whether service's keys may be read from the
// database now, and if so notes it, returning the time noted. refetchMu is
// held.
func (v *Verifier) mayRefetchLocked(service string) (time.Time, bool) {
	now := v.now()
	if last, ok := v.refetched[service]; ok && now.Sub(last) < KeyRefetchInterval {
		return time.Time{}, false
	}
	if len(v.refetched) >= maxRefetchState {
		for s, last := range v.refetched {
			if now.Sub(last) >= KeyRefetchInterval {
				delete(v.refetched, s)
			}
		}
		if len(v.refetched) >= maxRefetchState {
			return time.Time{}, false
		}
	}
	v.refetched[service] = now
	return now, true
}

// keyRefetchRetry is how soon a refetch that failed may be tried again.
const keyRefetchRetry = time.Second

// refetchFailedLocked lets service's keys be read again keyRefetchRetry after a
// refetch noted at at failed (the database out): kept for the whole
// KeyRefetchInterval, every token of a key published meanwhile was refused
// as unknown for up to a minute after the database came back.
// refetchMu is held.
func (v *Verifier) refetchFailedLocked(service string, at time.Time) {
	if last, ok := v.refetched[service]; ok && last.Equal(at) {
		v.refetched[service] = at.Add(keyRefetchRetry - KeyRefetchInterval)
	}
}

// publicKey returns the parsed form of a published key, parsing it once.
func (v *Verifier) publicKey(service string, k *discovery.PublicKey) (any, *Error) {
	ref := keyRef{service, k.ID}
	v.keysMu.RLock()
	pk := v.keys[ref]
	v.keysMu.RUnlock()
	if pk != nil && pk.alg == k.Algorithm && bytes.Equal(pk.der, k.Key) {
		return pk.pub, nil
	}
	pub, err := x509.ParsePKIXPublicKey(k.Key)
	if err != nil {
		return nil, unauthenticated("unusable key", err)
	}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if k.Algorithm != EdDSA {
			return nil, unauthenticated("unusable key", nil)
		}
	case *ecdsa.PublicKey:
		if k.Algorithm != ES256 || p.Curve != elliptic.P256() {
			return nil, unauthenticated("unusable key", nil)
		}
	default:
		return nil, unauthenticated("unusable key", nil)
	}
	v.keysMu.Lock()
	if len(v.keys) >= maxParsedKeys {
		clear(v.keys)
	}
	v.keys[ref] = &parsedKey{der: bytes.Clone(k.Key), alg: k.Algorithm, pub: pub}
	v.keysMu.Unlock()
	return pub, nil
}

// currentPolicy returns the policy in the service's configuration, parsing
// it once per configuration revision and content: a revision that a
// restored database wrote again with other content is parsed again, where
// the policy parsed for its number held on. A policy that does not parse
// permits nothing and is logged once.
func (v *Verifier) currentPolicy(ctx context.Context) (*Policy, *Error) {
	svc, err := v.reg.Snapshot(ctx, v.service)
	if errors.Is(err, discovery.ErrNotFound) {
		return &Policy{}, nil
	}
	if err != nil {
		return nil, unavailable("policy unavailable", err)
	}
	e := v.policy.Load()
	if e != nil && e.configRev == svc.ConfigRevision && e.sameConfig(svc.Config) {
		if len(svc.Config) > 0 && !sameSlice(svc.Config, e.config) { // a new snapshot: compare it at once next time
			v.policy.Store(&policyEntry{configRev: e.configRev, config: svc.Config, policy: e.policy})
		}
		return e.policy, nil
	}
	p, err := ParsePolicy(svc.Config)
	if err != nil {
		v.log.Error("discovery: auth: the service's policy is invalid; every request is refused",
			zap.String("service", v.service), zap.Int64("config_revision", svc.ConfigRevision), zap.Error(err))
		p = &Policy{}
	}
	v.policy.Store(&policyEntry{configRev: svc.ConfigRevision, config: svc.Config, policy: p})
	return p, nil
}

type ctxKey struct{}

// NewContext returns ctx carrying id, as the middleware passes it on.
func NewContext(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the verified identity the middleware put in a
// request's context.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok && id != nil
}

// Wrap returns a handler that lets a request through to next only when
// Authorize accepts it, with the caller's identity in its context
// (FromContext). Otherwise it answers 401 (no token or a bad one), 403 (a
// caller not permitted) or 503 (keys or policy unreadable) with a bare body
// that says nothing more, and logs why at Info level (503: Warn) with the
// method, path, remote address, reason, key ID and caller ("claimed_caller"
// when the token did not verify), never the token.
func (v *Verifier) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := v.Authorize(r)
		if err != nil {
			v.refuse(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
	})
}

// Middleware is v.Wrap(next).
func Middleware(v *Verifier, next http.Handler) http.Handler { return v.Wrap(next) }

func (v *Verifier) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status, body := http.StatusServiceUnavailable, "service unavailable\n"
	switch {
	case errors.Is(err, ErrUnauthenticated):
		status, body = http.StatusUnauthorized, "unauthorized\n"
		w.Header().Set("WWW-Authenticate", "Bearer")
	case errors.Is(err, ErrForbidden):
		status, body = http.StatusForbidden, "forbidden\n"
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))

	path := r.URL.Path
	if len(path) > 256 {
		path = path[:256] + "..."
	}
	fields := []zap.Field{
		zap.String("service", v.service), zap.Int("status", status),
		zap.String("method", r.Method), zap.String("path", path), zap.String("remote", r.RemoteAddr),
	}
	var ae *Error
	if errors.As(err, &ae) {
		fields = append(fields, zap.String("reason", ae.Reason))
		switch {
		case ae.Caller == "":
		case status == http.StatusForbidden: // verified, or refused before its keys were read
			fields = append(fields, zap.String("caller", ae.Caller))
		default:
			fields = append(fields, zap.String("claimed_caller", ae.Caller))
		}
		if ae.KeyID != "" {
			fields = append(fields, zap.String("kid", ae.KeyID))
		}
	}
	if status == http.StatusServiceUnavailable {
		v.log.Warn("discovery: auth: request refused", append(fields, zap.Error(errors.Unwrap(err)))...)
		return
	}
	v.log.Info("discovery: auth: request refused", fields...)
}
