package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/core"
)

const (
	// maxCachedAudiences bounds a Signer's token cache.
	maxCachedAudiences = 1024
	// rotateRetry is how long after a failed rotation that was due (but not
	// yet needed) Token tries again.
	rotateRetry = 30 * time.Second
	// retirementCheck is how often Token reads the registry's copy of the
	// signing key for a retirement set elsewhere (a revocation).
	retirementCheck = time.Second
)

// claims are the claims of a service token.
type claims struct {
	jwt.RegisteredClaims
	Scope []string `json:"scope,omitempty"`
}

// Signer issues this service's tokens: short-lived JWTs signed with a key
// whose public half it publishes in the registry, one per audience, cached
// until shortly before they expire. It implements discovery.TokenSource and
// is safe for concurrent use.
//
// A token's claims: "iss" the deployment (WithIssuer); "sub" the service, or
// "service/instance" with WithInstance; "aud" the one service it is for;
// "exp" 1 minute after "iat" by default (WithTokenLifetime, at most 5
// minutes); "nbf" = "iat"; "jti" a random ID; "scope" the list of
// WithScopes. Its header names the key ("kid") and the type ("typ":
// "svc+jwt").
type Signer struct {
	reg         *discovery.Registry
	service     string
	subject     string
	issuer      string
	scopes      []string
	alg         string
	lifetime    time.Duration
	keyLifetime time.Duration
	now         func() time.Time
	log         *zap.Logger

	// rotating lets one rotation run at a time: a one-slot semaphore, so
	// that a caller waits for another's rotation only as long as its
	// context allows. What it guards:
	rotating     core.Slot
	rotateFailed time.Time     // when a due rotation last failed
	forcedErr    error         // the result of the last rotation that callers had to wait for
	forcedSeq    atomic.Uint64 // how many such rotations ended (read before waiting)

	mu    sync.RWMutex
	cur   *signingKey
	cache map[string]cachedToken // audience -> token

	nextCheck atomic.Int64 // when Token next reads the key's retirement (unix ns)

	closed  atomic.Bool // Close was called: no token is signed any more
	retired bool        // Close retired the key (guarded by rotating)
}

var _ discovery.TokenSource = (*Signer)(nil)

type signingKey struct {
	kid     string
	alg     string
	method  jwt.SigningMethod
	priv    crypto.Signer
	der     []byte
	created time.Time
	retires time.Time // zero: never
	// revoked is an earlier retirement published by another (RetireKey,
	// say after a leak), in unix ns; 0 if none.
	revoked atomic.Int64
	// lost: the registry has no such key any more (a database restored
	// from an older backup), or holds another key under its ID; no
	// verifier knows it, so it signs nothing.
	lost atomic.Bool
	// replaced: another key holds its ID (published again by another
	// writer), so retiring the ID would retire that key, not this one.
	replaced atomic.Bool
	given    bool // WithKey's: other processes may sign with it too
}

type cachedToken struct {
	token     string
	refreshAt time.Time
}

// NewSigner returns the Signer of service and publishes its first key
// through reg: the key of WithKey, or a new Ed25519 key (ES256 with
// WithAlgorithm). The options are validated first; errors match
// discovery.ErrInvalid and name the option.
func NewSigner(ctx context.Context, reg *discovery.Registry, service string, opts ...Option) (*Signer, error) {
	c, err := newChecked(reg, service, opts)
	if err != nil {
		return nil, err
	}
	switch {
	case c.lifetime < time.Second || c.lifetime > MaxTokenLifetime:
		return nil, optErr("WithTokenLifetime", c.lifetime.String(), "must be 1s to "+MaxTokenLifetime.String())
	case c.keyLifetime != 0 && c.keyLifetime < MinKeyLifetime:
		return nil, optErr("WithKeyLifetime", c.keyLifetime.String(), "must be 0 or at least "+MinKeyLifetime.String())
	case c.alg != EdDSA && c.alg != ES256:
		return nil, optErr("WithAlgorithm", c.alg, "must be EdDSA or ES256")
	}
	if err := validScopes(c.scopes); err != nil {
		return nil, err
	}
	subject := service
	if c.instance != "" {
		if err := discovery.ValidateInstanceID(c.instance); err != nil {
			return nil, err
		}
		subject += "/" + c.instance
	}
	s := &Signer{
		reg: reg, service: service, subject: subject, issuer: c.issuer, scopes: c.scopes, alg: c.alg,
		lifetime: c.lifetime, keyLifetime: c.keyLifetime, now: c.now(), log: c.log,
		cache: map[string]cachedToken{}, rotating: core.NewSlot(),
	}
	now := s.now()
	var k *signingKey
	if c.keySet {
		k, err = useKey(c.kid, c.key, now)
		if err == nil {
			s.alg, k.given = k.alg, true
		}
	} else {
		k, err = newKey(s.alg, now)
	}
	if err != nil {
		return nil, err
	}
	if s.keyLifetime > 0 {
		k.retires = now.Add(s.keyLifetime)
	}
	if err := s.publish(ctx, k); err != nil {
		return nil, err
	}
	s.cur = k
	return s, nil
}

func useKey(kid string, key crypto.Signer, now time.Time) (*signingKey, error) {
	if err := discovery.ValidateKeyID(kid); err != nil {
		return nil, err
	}
	// Checked before key.Public, which panicked on a nil or short key.
	switch kk := key.(type) {
	case nil:
		return nil, optErr("WithKey", kid, "must not be nil (leave the option out for a generated key)")
	case ed25519.PrivateKey:
		if len(kk) != ed25519.PrivateKeySize {
			return nil, optErr("WithKey", kid, fmt.Sprintf("an Ed25519 private key is %d bytes, not %d", ed25519.PrivateKeySize, len(kk)))
		}
	default:
		if core.IsNil(key) {
			return nil, optErr("WithKey", kid, fmt.Sprintf("(%T)(nil) is not a key", key))
		}
	}
	k := &signingKey{kid: kid, priv: key, created: now}
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		k.alg, k.method = EdDSA, jwt.SigningMethodEdDSA
	case *ecdsa.PublicKey:
		kk, ok := key.(*ecdsa.PrivateKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, optErr("WithKey", kid, "an ECDSA key must be an *ecdsa.PrivateKey on P-256 (ES256)")
		}
		// Checked before encoding and signing, which panicked on a key
		// without its scalar or its point.
		if err := checkECDSA(kk); err != nil {
			return nil, optErr("WithKey", kid, "not a whole ECDSA key: "+err.Error())
		}
		k.alg, k.method = ES256, jwt.SigningMethodES256
	default:
		return nil, optErr("WithKey", kid, "must be an Ed25519 or ECDSA P-256 private key")
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, optErr("WithKey", kid, "public key does not encode: "+err.Error())
	}
	// A key that cannot sign failed every Token, and one whose halves do not
	// match published a public key that verified none of its tokens.
	const probe = "discovery: auth: key probe"
	sig, err := k.method.Sign(probe, key)
	if err != nil {
		return nil, optErr("WithKey", kid, "does not sign: "+err.Error())
	}
	if k.method.Verify(probe, sig, key.Public()) != nil {
		return nil, optErr("WithKey", kid, "its public half does not verify its signatures")
	}
	k.der = der
	return k, nil
}

// checkECDSA reports whether k is a whole, valid key: PrivateKey.Bytes
// checks the scalar's range and that the point is on the curve and is the
// scalar's, and panics (a nil big.Int) where a part is missing. The raw
// fields that would say so without it are deprecated.
func checkECDSA(k *ecdsa.PrivateKey) (err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("its private scalar (D) or public point (X, Y) is missing")
		}
	}()
	_, err = k.Bytes()
	return err
}

func newKey(alg string, now time.Time) (*signingKey, error) {
	var (
		priv crypto.Signer
		err  error
	)
	if alg == ES256 {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	return useKey(randomID(16), priv, now)
}

// randomID returns n random bytes in base64url: a key ID or token ID.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Signer) publish(ctx context.Context, k *signingKey) error {
	return s.reg.PublishKey(ctx, s.service, discovery.PublicKey{
		ID: k.kid, Algorithm: k.alg, Key: k.der, CreatedAt: k.created, RetiresAt: k.retires,
	})
}

// Service returns the name of the service the Signer speaks for.
func (s *Signer) Service() string { return s.service }

// KeyID returns the ID of the key that signs now.
func (s *Signer) KeyID() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.kid
}

// Token returns a token for calling audience, a service name. It returns
// the cached token for that audience until three quarters of its lifetime
// have passed, then signs a new one. When the key is due for rotation (see
// WithKeyLifetime) the call rotates it first.
//
// Once a second it also reads the registry's copy of its key: a retirement
// set there by someone else (RetireKey, a revocation) is kept as the key's
// own, so that once the key cannot outlive a token any more, the cached
// tokens are dropped and the next call rotates; a key the registry no
// longer has (a database restored from an older backup), or whose ID
// another writer published again with another key, is dropped at once the
// same way, and the next call rotates to a new, published key (leaving
// that other key as it is). Without this the Signer
// went on signing with a revoked key, and every token it issued was
// refused, until its own rotation, up to half a key lifetime later.
func (s *Signer) Token(ctx context.Context, audience string) (string, error) {
	if s.closed.Load() {
		return "", discovery.ErrClosed
	}
	now := s.now()
	s.checkRetirement(ctx, now)
	s.mu.RLock()
	c, ok := s.cache[audience]
	s.mu.RUnlock()
	if ok && now.Before(c.refreshAt) {
		return c.token, nil
	}
	if err := discovery.ValidateServiceName(audience); err != nil {
		return "", err
	}
	k, err := s.signingKey(ctx, now)
	if err != nil {
		return "", err
	}
	tok, err := s.sign(k, audience, now)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	// Not rotated meanwhile, nor lost or revoked (checkRetirement cleared
	// the cache after marking it, under mu): cached, such a token was
	// handed out, and refused, for three quarters of its lifetime.
	if s.cur == k && s.usable(k, now) {
		if len(s.cache) >= maxCachedAudiences {
			s.pruneLocked(now)
		}
		s.cache[audience] = cachedToken{token: tok, refreshAt: now.Add(s.lifetime * 3 / 4)}
	}
	s.mu.Unlock()
	return tok, nil
}

func (s *Signer) pruneLocked(now time.Time) {
	for aud, c := range s.cache {
		if !now.Before(c.refreshAt) {
			delete(s.cache, aud)
		}
	}
	if len(s.cache) >= maxCachedAudiences {
		clear(s.cache)
	}
}

// usable reports whether k may sign a token issued at now: it does not
// retire before the token expires, leeway included.
func (s *Signer) usable(k *signingKey, now time.Time) bool {
	if k.lost.Load() {
		return false
	}
	retires := k.retiresAt()
	return retires.IsZero() || !now.Add(s.lifetime+MaxLeeway).After(retires)
}

// retiresAt is when k retires: its own retirement, or an earlier one
// another published; zero for never.
func (k *signingKey) retiresAt() time.Time {
	if rv := k.revoked.Load(); rv != 0 && (k.retires.IsZero() || rv < k.retires.UnixNano()) {
		return time.Unix(0, rv)
	}
	return k.retires
}

// checkRetirement reads, at most once per retirementCheck (one caller
// reads; the others go on), the registry's copy of the signing key, and
// keeps a retirement earlier than the key's own: once the key cannot sign a
// whole token's life any more, the cached tokens go, and the next signing
// rotates (signingKey). A failed read changes nothing.
func (s *Signer) checkRetirement(ctx context.Context, now time.Time) {
	next := s.nextCheck.Load()
	if now.UnixNano() < next || !s.nextCheck.CompareAndSwap(next, now.Add(retirementCheck).UnixNano()) {
		return
	}
	s.mu.RLock()
	k := s.cur
	s.mu.RUnlock()
	var pk *discovery.PublicKey
	switch svc, err := s.reg.Snapshot(ctx, s.service); {
	case err == nil:
		pk = svc.Key(k.kid)
	case !errors.Is(err, discovery.ErrNotFound): // the service itself gone counts as the key lost
		return
	}
	if pk == nil {
		// Lost (a restored database): verifiers refuse its tokens as
		// "unknown key". Signing with it until the next rotation, 12 h
		// later by default, made every call of the service fail.
		if !k.lost.Swap(true) {
			s.log.Warn("discovery: auth: signing key no longer in the registry; rotating",
				zap.String("service", s.service), zap.String("kid", k.kid))
		}
		s.dropTokensOf(k)
		return
	}
	if pk.Algorithm != k.alg || !bytes.Equal(pk.Key, k.der) {
		// Its ID published again with another key (a replica started
		// WithKey under the same ID, an operator, a restore): verifiers
		// refuse its tokens as "bad signature", as for a lost key.
		k.replaced.Store(true)
		if !k.lost.Swap(true) {
			s.log.Warn("discovery: auth: signing key's ID published again with another key; rotating",
				zap.String("service", s.service), zap.String("kid", k.kid))
		}
		s.dropTokensOf(k)
		return
	}
	if pk.RetiresAt.IsZero() || !k.retires.IsZero() && !pk.RetiresAt.Before(k.retires) {
		return
	}
	if rv := pk.RetiresAt.UnixNano(); k.revoked.Load() != rv {
		k.revoked.Store(rv)
		s.log.Warn("discovery: auth: signing key retired by another; rotating before it retires",
			zap.String("service", s.service), zap.String("kid", k.kid), zap.Time("retires_at", pk.RetiresAt))
	}
	if !s.usable(k, now) {
		s.dropTokensOf(k)
	}
}

// dropTokensOf forgets the cached tokens if k still signs them.
func (s *Signer) dropTokensOf(k *signingKey) {
	s.mu.Lock()
	if s.cur == k {
		clear(s.cache)
	}
	s.mu.Unlock()
}

// signingKey returns the key to sign with at now, rotating first when the
// key is past half its lifetime (one caller rotates; the others go on with
// the current key) or when it could not sign a whole token's life any more
// (every caller waits for the rotation).
func (s *Signer) signingKey(ctx context.Context, now time.Time) (*signingKey, error) {
	s.mu.RLock()
	k := s.cur
	s.mu.RUnlock()
	if (s.keyLifetime == 0 || now.Sub(k.created) < s.keyLifetime/2) && s.usable(k, now) {
		return k, nil
	}
	if s.usable(k, now) {
		if s.rotating.TryLock() { // else another caller rotates; this one signs with the current key
			if now.Sub(s.rotateFailed) >= rotateRetry {
				if err := s.rotateLocked(ctx); err != nil {
					s.rotateFailed = now
					s.log.Warn("discovery: auth: key rotation failed; signing with the current key",
						zap.String("service", s.service), zap.String("kid", k.kid), zap.Error(err))
				}
			}
			s.rotating.Unlock()
		}
		s.mu.RLock()
		k = s.cur
		s.mu.RUnlock()
		return k, nil
	}
	seen := s.forcedSeq.Load()
	if err := s.rotating.Lock(ctx); err != nil {
		return nil, err
	}
	defer s.rotating.Unlock()
	s.mu.RLock()
	k = s.cur
	s.mu.RUnlock()
	if s.usable(k, now) {
		return k, nil // another caller rotated
	}
	// A caller that queued behind a rotation that failed gets its error
	// rather than trying again in turn: with the database down, the k-th
	// of them waited k database timeouts. One that comes later tries, and
	// so does one queued behind a caller whose own context ended.
	if s.forcedSeq.Load() != seen && s.forcedErr != nil {
		return nil, s.forcedErr
	}
	err := s.rotateLocked(ctx)
	s.forcedErr = err
	if err != nil && ctx.Err() != nil {
		// This caller gave up, not the database: the callers queued
		// behind it were failed with its context's error, their own
		// going on. The next one rotates.
		s.forcedErr = nil
	}
	s.forcedSeq.Add(1)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur, nil
}

func (s *Signer) sign(k *signingKey, audience string, now time.Time) (string, error) {
	t := jwt.NewWithClaims(k.method, claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: s.issuer, Subject: s.subject, Audience: jwt.ClaimStrings{audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(s.lifetime)), NotBefore: jwt.NewNumericDate(now),
			IssuedAt: jwt.NewNumericDate(now), ID: randomID(12),
		},
		Scope: s.scopes,
	})
	t.Header["kid"] = k.kid
	t.Header["typ"] = TokenType
	return t.SignedString(k.priv)
}

// Rotate makes a new key sign from now on: it generates one (same
// algorithm), publishes it, switches to it, forgets cached tokens, and sets
// the old key to retire once every token it signed has expired (token
// lifetime plus MaxLeeway from now), or keeps an earlier retirement (a
// revocation: rotating after revoking a leaked key does not bring it
// back for that minute). If retiring the old key fails, the new
// key signs anyway and the error says so; the old key then retires at the
// end of its key lifetime.
//
// This process knows the new key at once; others within one cache refresh
// (at once where changes are announced), and a Verifier that meets it
// before then reads it from the database, but only once a minute per
// service: do not rotate more often than that.
func (s *Signer) Rotate(ctx context.Context) error {
	if err := s.rotating.Lock(ctx); err != nil {
		return err
	}
	defer s.rotating.Unlock()
	return s.rotateLocked(ctx)
}

func (s *Signer) rotateLocked(ctx context.Context) error {
	if s.closed.Load() {
		return discovery.ErrClosed // a key made now would never be retired
	}
	now := s.now()
	k, err := newKey(s.alg, now)
	if err != nil {
		return err
	}
	if s.keyLifetime > 0 {
		k.retires = now.Add(s.keyLifetime)
	}
	if err := s.publish(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	old := s.cur
	s.cur = k
	clear(s.cache)
	s.mu.Unlock()
	// Every token the old key signed was issued before the switch.
	if err := s.retireAfterItsTokens(ctx, old); err != nil {
		return fmt.Errorf("discovery: auth: the new key %s signs, but retiring %s failed: %w", k.kid, old.kid, err)
	}
	return nil
}

// retireAfterItsTokens sets k to retire once every token it signed until
// now has expired (token lifetime plus MaxLeeway), unless it retires
// sooner already: a revocation is never put off. A key the registry does
// not have (lost, or reaped) verifies nothing already, and one whose ID
// holds another key now is left alone: retiring the ID retired that key.
func (s *Signer) retireAfterItsTokens(ctx context.Context, k *signingKey) error {
	if k.replaced.Load() {
		return nil
	}
	retire := s.now().Add(s.lifetime + MaxLeeway)
	if r := k.retiresAt(); !r.IsZero() && !r.After(retire) {
		return nil
	}
	if err := s.reg.RetireKey(ctx, s.service, k.kid, retire); err != nil && !errors.Is(err, discovery.ErrNotFound) {
		return err
	}
	return nil
}

// Close ends the Signer: Token then fails with discovery.ErrClosed, and the
// key it generated and signs with retires once every token it issued has
// expired (token lifetime plus MaxLeeway from now), instead of at the end
// of its key lifetime (24 h by default) or never. A process that exits
// should close its Signer, so that its key, which no one can use any more,
// stops being trusted and is reaped. A key given with WithKey is not
// retired: other processes of the service may sign with it too.
//
// Close waits for a rotation in progress while ctx allows. If the
// retirement cannot be written, Close returns the error (the key then
// retires as it would have) and a later Close tries again; once it has
// been written, Close returns nil.
func (s *Signer) Close(ctx context.Context) error {
	s.closed.Store(true)
	if err := s.rotating.Lock(ctx); err != nil {
		return err
	}
	defer s.rotating.Unlock()
	if s.retired {
		return nil
	}
	s.mu.Lock()
	k := s.cur
	clear(s.cache)
	s.mu.Unlock()
	if !k.given {
		if err := s.retireAfterItsTokens(ctx, k); err != nil {
			return fmt.Errorf("discovery: auth: retiring key %s at Close: %w", k.kid, err)
		}
	}
	s.retired = true
	return nil
}
