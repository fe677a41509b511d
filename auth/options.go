package auth

import (
	"crypto"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/core"
)

// Limits and defaults, after RFC 8725 (JWT best current practice) and
// SPIFFE's JWT-SVID: short-lived tokens with one audience, asymmetric keys
// found by ID, a little leeway for clock skew.
const (
	// TokenType is the explicit "typ" header of service tokens (RFC 8725
	// section 3.11), so that no other kind of JWT signed by the same key can
	// pass for one. "application/svc+jwt" is accepted too.
	TokenType = "svc+jwt"
	// DefaultIssuer is the "iss" of tokens unless WithIssuer names this
	// deployment.
	DefaultIssuer = "discovery"
	// DefaultTokenLifetime is how long a token is valid ("exp" - "iat").
	DefaultTokenLifetime = time.Minute
	// MaxTokenLifetime bounds WithTokenLifetime; verifiers refuse tokens
	// that claim a longer one.
	MaxTokenLifetime = 5 * time.Minute
	// DefaultLeeway is the clock skew a verifier tolerates on "exp", "nbf"
	// and "iat".
	DefaultLeeway = 10 * time.Second
	// MaxLeeway bounds WithLeeway.
	MaxLeeway = 30 * time.Second
	// DefaultKeyLifetime is how long a signing key is published for; a
	// Signer rotates it after half of it. A key left behind by a process
	// that stopped stops verifying at the end of it, and the Registry's
	// reaper deletes it shortly after (discovery.WithReaper).
	DefaultKeyLifetime = 24 * time.Hour
	// MinKeyLifetime bounds WithKeyLifetime from below.
	MinKeyLifetime = 10 * time.Minute
	// KeyRefetchInterval is how often at most a Verifier reads a service's
	// keys from the database when it meets a key ID it does not know; a
	// read that failed may be made again a second later.
	KeyRefetchInterval = time.Minute
	// MaxTokenSize is the longest token a Verifier reads, in bytes.
	MaxTokenSize = 8 << 10
)

// The signing algorithms: Ed25519 by default, ECDSA P-256 allowed. No other
// algorithm is ever accepted, HMAC ("HS256") and "none" least of all.
const (
	EdDSA = "EdDSA"
	ES256 = "ES256"
)

// Option configures a Signer or a Verifier. Options that do not concern the
// constructor they are given to are ignored by it.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	issuer      string
	clock       discovery.Clock
	log         *zap.Logger
	lifetime    time.Duration
	keyLifetime time.Duration
	leeway      time.Duration
	alg         string
	kid         string
	key         crypto.Signer
	keySet      bool // WithKey was given (a nil key in it is an error, not "generate one")
	instance    string
	scopes      []string
	unknownRate int
}

func defaultConfig() config {
	return config{
		issuer: DefaultIssuer, log: zap.NewNop(), lifetime: DefaultTokenLifetime,
		keyLifetime: DefaultKeyLifetime, leeway: DefaultLeeway, alg: EdDSA, unknownRate: DefaultUnknownCallerRate,
	}
}

func newConfig(opts []Option) config {
	c := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

func (c *config) now() func() time.Time {
	if c.clock == nil {
		return time.Now
	}
	return c.clock.Now
}

func optErr(name, value, reason string) error {
	return &discovery.ValidationError{Field: "option " + name, Value: value, Reason: reason}
}

// validateCommon checks the options both constructors use.
func (c *config) validateCommon() error {
	switch {
	case c.issuer == "" || len(c.issuer) > 256 || !printableASCII(c.issuer):
		return optErr("WithIssuer", c.issuer, "must be 1 to 256 printable ASCII characters")
	case c.log == nil:
		return optErr("WithLogger", "nil", "must not be nil (use zap.NewNop)")
	case c.clock != nil && core.IsNil(c.clock):
		return optErr("WithClock", fmt.Sprintf("(%T)(nil)", c.clock), "must not be a nil clock (leave the option out for the system clock)")
	case c.clock != nil && core.IsHollow(c.clock):
		return optErr("WithClock", fmt.Sprintf("a zero %T", c.clock), "holds no clock: make it with its constructor (discoverytest.NewClock)")
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// WithIssuer sets the "iss" that a Signer writes and a Verifier requires:
// one value per deployment, such as "rssbot-prod" ("discovery" by default).
// Tokens of another deployment sharing the same keys are refused.
func WithIssuer(iss string) Option { return optionFunc(func(c *config) { c.issuer = iss }) }

// WithClock sets the clock (the system clock by default). Give it the clock
// of the Registry (see discoverytest.NewClock in tests).
func WithClock(clock discovery.Clock) Option { return optionFunc(func(c *config) { c.clock = clock }) }

// WithLogger sends refusals (Verifier) and failed rotations (Signer) to l;
// tokens are never logged. The default logs nothing.
func WithLogger(l *zap.Logger) Option { return optionFunc(func(c *config) { c.log = l }) }

// WithTokenLifetime sets how long the Signer's tokens are valid: 1 minute by
// default, at most MaxTokenLifetime (5 minutes), at least 1 second.
func WithTokenLifetime(d time.Duration) Option {
	return optionFunc(func(c *config) { c.lifetime = d })
}

// WithKeyLifetime sets how long the Signer publishes each key for (24 h by
// default, at least MinKeyLifetime); it rotates after half of it, on the
// first Token call after that. 0 publishes keys without an end and never
// rotates by itself: such a key is never deleted, so each start of a
// process leaves one in every snapshot of the service until it is retired
// (Registry.RetireKey) and reaped.
func WithKeyLifetime(d time.Duration) Option {
	return optionFunc(func(c *config) { c.keyLifetime = d })
}

// WithLeeway sets the clock skew the Verifier tolerates on "exp", "nbf" and
// "iat": 10 s by default, at most MaxLeeway (30 s).
func WithLeeway(d time.Duration) Option { return optionFunc(func(c *config) { c.leeway = d }) }

// maxUnknownCallerRate bounds WithUnknownCallerRate: past a few thousand
// reads a second the bound protects no database, and its memory of names
// found unknown (up to ten seconds' worth) grows with it.
const maxUnknownCallerRate = 10_000

// WithUnknownCallerRate bounds the lookups a Verifier makes of callers the
// registry has not been found to know, which each read Redis and the
// database when the name is made up: perSecond a second on average, ten
// times as many at once after a quiet time (10 and 100 by default; 0 lifts
// the bound; at most 10,000). A token of such a caller past the bound is refused unread
// with discovery.ErrUnavailable (503), and a real caller's next request
// gets through once the bound allows. Callers the policy names, and
// services the registry was found to know, are looked up outside it; a
// name found unknown is answered unknown (401) without a lookup for a
// second, or for the Registry's WithNegativeTTL if shorter, nor are
// requests of a caller whose counted lookup is under way (they share its
// one load).
func WithUnknownCallerRate(perSecond int) Option {
	return optionFunc(func(c *config) { c.unknownRate = perSecond })
}

// WithAlgorithm makes the Signer generate keys for alg: EdDSA (Ed25519, the
// default) or ES256 (ECDSA P-256).
func WithAlgorithm(alg string) Option { return optionFunc(func(c *config) { c.alg = alg }) }

// WithKey makes the Signer start with the given private key, an
// ed25519.PrivateKey (EdDSA) or an *ecdsa.PrivateKey on P-256 (ES256), under
// key ID kid (1 to 64 of [A-Za-z0-9_-]), instead of generating one; the key
// must sign, and its public half verify what it signs. Keys made by later
// rotations are generated, with the same algorithm. The Signer publishes the
// key under kid, which replaces a published key of that ID, retirement
// included. A key that was revoked (Registry.RetireKey at or before now),
// or a kid that was, is refused for good: NewSigner fails with
// discovery.ErrRevoked.
func WithKey(kid string, key crypto.Signer) Option {
	return optionFunc(func(c *config) { c.kid, c.key, c.keySet = kid, key, true })
}

// WithInstance makes the Signer's tokens name this instance too: their
// "sub" is "service/instance" instead of "service".
func WithInstance(id string) Option { return optionFunc(func(c *config) { c.instance = id }) }

// WithScopes sets the "scope" list of the Signer's tokens (at most 32 scopes
// of 1 to 128 printable ASCII characters). Policies may require one. A
// scope is the calling service's own claim, signed with its own key: a rule
// (or AdminScope) that requires one refuses the tokens a Signer of that
// caller made without it, not another caller, which can put any scope in
// its own tokens; what keeps a caller out is its name missing from the
// policy.
func WithScopes(scopes ...string) Option {
	return optionFunc(func(c *config) { c.scopes = append([]string(nil), scopes...) })
}

func validScopes(scopes []string) error {
	if len(scopes) > 32 {
		return optErr("WithScopes", strconv.Itoa(len(scopes))+" scopes", "at most 32")
	}
	for _, s := range scopes {
		if s == "" || len(s) > 128 || !printableASCII(s) {
			return optErr("WithScopes", s, "each must be 1 to 128 printable ASCII characters")
		}
	}
	return nil
}

// newChecked is the start of NewSigner and NewVerifier: the options, a
// Registry and a valid service name, checked before anything else.
func newChecked(reg *discovery.Registry, service string, opts []Option) (config, error) {
	c := newConfig(opts)
	if reg == nil {
		return config{}, optErr("registry", "nil", "must not be nil")
	}
	if err := discovery.ValidateServiceName(service); err != nil {
		return config{}, err
	}
	if err := c.validateCommon(); err != nil {
		return config{}, err
	}
	return c, nil
}
