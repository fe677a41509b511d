package discovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"slices"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Services publish the public halves of their signing keys through the
// registry, so that any process can verify their tokens offline (package
// auth builds signed service-to-service tokens on this). Keys are part of a
// service's snapshot: every key change bumps the service's revision, so the
// caches of every process pick it up like any other change.

// PublicKey is a service's public signing key: ID (the JWT "kid", 1 to 64 of
// [A-Za-z0-9_-]), Algorithm ("EdDSA" for Ed25519, or "ES256"), Key (PKIX DER),
// CreatedAt and RetiresAt (zero: never).
type PublicKey = core.PublicKey

// KeyStore is an optional Store capability: keeping services' public keys.
// Both stores of this module have it.
type KeyStore = core.KeyStore

// ValidateServiceName checks a service name: 1 to 63 bytes of letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit,
// without "..". The error matches ErrInvalid.
func ValidateServiceName(name string) error { return core.ValidateServiceName(name) }

// ValidateInstanceID checks an instance ID: 1 to 255 bytes of printable
// ASCII without spaces, quotes, backslashes, '*' or '?', and not "." or
// ".." (the admin API could not name them). Brackets and colons are
// allowed: an IPv6 instance's default ID is "[::1]:8080". The error
// matches ErrInvalid.
func ValidateInstanceID(id string) error { return core.ValidateInstanceID(id) }

// ValidateKeyID checks a key ID: 1 to 64 of [A-Za-z0-9_-]. Anything else
// (SQL, paths, dots) is refused before it is looked up anywhere. The error
// matches ErrInvalid.
func ValidateKeyID(kid string) error { return core.ValidateKeyID(kid) }

// validatePublicKey checks a key as given to PublishKey, including that Key
// parses as a public key of Algorithm.
func validatePublicKey(k *PublicKey) error {
	if err := core.ValidatePublicKey(k); err != nil {
		return err
	}
	pub, err := x509.ParsePKIXPublicKey(k.Key)
	if err != nil {
		return &ValidationError{Field: "key", Value: k.ID, Reason: "not a PKIX DER public key"}
	}
	ok := false
	switch p := pub.(type) {
	case ed25519.PublicKey:
		ok = k.Algorithm == "EdDSA"
	case *ecdsa.PublicKey:
		ok = k.Algorithm == "ES256" && p.Curve == elliptic.P256()
	}
	if !ok {
		return &ValidationError{Field: "key", Value: k.ID, Reason: "is not a " + k.Algorithm + " key (EdDSA: Ed25519, ES256: ECDSA P-256)"}
	}
	// The key as Go encodes it: one public key has one form, so a revoked
	// key is known again by its fingerprint however it was encoded.
	if der, err := x509.MarshalPKIXPublicKey(pub); err == nil {
		k.Key = der
	} else {
		k.Key = slices.Clone(k.Key)
	}
	return nil
}

func (r *Registry) keyStore() (core.KeyStore, error) {
	ks, ok := r.store.(core.KeyStore)
	if !ok {
		return nil, ErrUnsupported
	}
	return ks, nil
}

// PublishKey adds (or replaces, by ID) a public key of a service, creating
// the service if needed. The name and the key are validated first (errors
// match ErrInvalid; nothing is written): Key must parse as a public key of
// Algorithm. A zero CreatedAt is set to now. A key that was revoked
// (RetireKey at or before now) is refused for good, under its own ID or
// any other, with a *RevokedKeyError matching ErrRevoked, and so is any key
// under a revoked ID. Every process sees the key
// within one cache refresh, at once where changes are announced (Redis, or a
// shared discoverytest backend). Stores without keys return ErrUnsupported.
func (r *Registry) PublishKey(ctx context.Context, service string, key PublicKey) error {
	if ctx == nil {
		return nilContext("PublishKey")
	}
	if r.closed.Load() {
		return ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return err
	}
	if err := validatePublicKey(&key); err != nil {
		return err
	}
	ks, err := r.keyStore()
	if err != nil {
		return err
	}
	if key.CreatedAt.IsZero() {
		key.CreatedAt = r.clock.Now()
	}
	rev, err := ks.PutKey(ctx, service, key)
	return r.written(ctx, "put key", service, rev, wrote{}, err)
}

// RetireKey sets when a key of a service stops verifying: at may be in the
// future (a rotation: the old key keeps verifying the tokens it signed until
// they expire) or now or earlier (a revocation). A retirement only ever
// moves earlier: a key that already retires before at keeps its
// retirement, so a later RetireKey cannot undo a revocation.
//
// A revocation is also recorded for good, in the same transaction: from
// then on PublishKey refuses that key ID, and the same public key under any
// ID, with ErrRevoked (an auth.Signer started WithKey with it fails to
// start), even after the reaper has deleted the key. Every process sees
// a retirement within one cache refresh, as with PublishKey. A retired key
// stays listed (Keys) until the reaper deletes it, its delay (WithReaper, 2
// min) after the key retired.
// It returns an error matching ErrNotFound if
// the service has no such key, and ErrInvalid for a bad name, key ID, a
// zero time or the Unix epoch (which the stores keep as never).
func (r *Registry) RetireKey(ctx context.Context, service, kid string, at time.Time) error {
	if ctx == nil {
		return nilContext("RetireKey")
	}
	if r.closed.Load() {
		return ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return err
	}
	if err := core.ValidateKeyID(kid); err != nil {
		return err
	}
	if at.IsZero() {
		return &ValidationError{Field: "retirement time", Reason: "must not be zero"}
	}
	if err := core.ValidateRetirement("retirement time", at); err != nil {
		return err
	}
	ks, err := r.keyStore()
	if err != nil {
		return err
	}
	retire, op := ks.RetireKey, "retire key"
	if !at.After(r.clock.Now()) {
		retire, op = ks.RevokeKey, "revoke key"
	}
	rev, err := retire(ctx, service, kid, at)
	return r.written(ctx, op, service, rev, wrote{}, err)
}

// Keys returns a copy of a service's public keys, retired ones included
// until the reaper deletes them (see RetireKey), ordered by ID, through the cache layers like Get. A service that exists
// without keys has none (nil, nil); one that was never created (or was
// deleted, left with nothing: WithServiceReap) is an error matching
// ErrNotFound.
func (r *Registry) Keys(ctx context.Context, service string) ([]PublicKey, error) {
	if ctx == nil {
		return nil, nilContext("Keys")
	}
	svc, err := r.serviceData(ctx, service)
	if err != nil {
		return nil, err
	}
	return cloneKeys(svc.Keys), nil
}

// RefreshKeys reads a service's snapshot from the database now, past this
// process's memory and Redis, keeps it in this process's cache and returns a
// copy of its keys. It is for a verifier that meets a key ID it does not
// know, which may be a key published while a change message was lost; each
// call reads the database, so callers limit how often they make it (package
// auth does so at most once a minute per service).
func (r *Registry) RefreshKeys(ctx context.Context, service string) ([]PublicKey, error) {
	if ctx == nil {
		return nil, nilContext("RefreshKeys")
	}
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if err := core.ValidateServiceName(service); err != nil {
		return nil, err
	}
	ch := r.sf.DoChan("!"+service, func() (any, error) { return r.load(service, true) })
	var e *entry
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, plainLoadErr(res.Err)
		}
		e = res.Val.(*entry)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if e.raw == nil {
		return nil, e.notFound
	}
	return cloneKeys(e.raw.Keys), nil
}

// Snapshot returns a service as the cache layers hold it, even when it has
// no live instance: its configuration, its keys and its live instances. It
// returns an error matching ErrNotFound only for a service that was never
// created. The value is shared and must not be modified (see Service.Clone);
// reading it allocates nothing on a cache hit.
func (r *Registry) Snapshot(ctx context.Context, service string) (*Service, error) {
	if ctx == nil {
		return nil, nilContext("Snapshot")
	}
	return r.serviceData(ctx, service)
}

// NegativeTTL returns how long the Registry remembers that a service does
// not exist (WithNegativeTTL): a lookup of such a name within it reads
// nothing. The auth package's bound on lookups of unknown callers counts
// on that memory, and no longer than it lasts.
func (r *Registry) NegativeTTL() time.Duration { return r.opts.negativeTTL }

func cloneKeys(keys []PublicKey) []PublicKey {
	if len(keys) == 0 {
		return nil
	}
	out := slices.Clone(keys)
	for i := range out {
		out[i].Key = slices.Clone(out[i].Key)
	}
	return out
}
