package discovery

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// The seams of service-to-service authentication. Package
// github.com/rssbot/discovery/auth implements both with signed tokens whose
// keys travel through the registry; features of this package (signed
// config-reload notifications, the admin handler's mutating endpoints) use
// them without importing it, and tests may use fakes.

// Authentication errors; branch on them with errors.Is.
var (
	// ErrUnauthenticated means a request carried no credential or one that
	// does not verify (HTTP 401).
	ErrUnauthenticated = errors.New("discovery: unauthenticated")
	// ErrForbidden means the caller is known but not permitted to do what it
	// asked (HTTP 403).
	ErrForbidden = errors.New("discovery: forbidden")
)

// TokenSource gives tokens that prove this service's identity to another
// service, the audience. Implementations are safe for concurrent use and
// cache tokens as they see fit. auth.Signer is one.
type TokenSource interface {
	Token(ctx context.Context, audience string) (string, error)
}

// Authorizer decides whether an HTTP request may proceed. It returns the
// caller's verified identity, or an error matching ErrUnauthenticated (no
// credential, or a bad one: answer 401) or ErrForbidden (a verified caller
// not permitted: answer 403); any other error (such as ErrUnavailable) means
// it could not decide. auth.Verifier is one.
type Authorizer interface {
	Authorize(r *http.Request) (*Identity, error)
}

// Identity is a caller as a verified token names it.
type Identity struct {
	// Service is the calling service.
	Service string
	// Instance is the calling instance, when the token names one.
	Instance string
	// Scopes are the token's scopes.
	Scopes []string
	// KeyID is the ID of the key that signed the token.
	KeyID string
	// TokenID is the token's "jti", safe to log (the token is not).
	TokenID string
	// IssuedAt and ExpiresAt bound the token's validity.
	IssuedAt, ExpiresAt time.Time
}

// HasScope reports whether the identity carries scope s.
func (id *Identity) HasScope(s string) bool {
	for _, x := range id.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// authSeams holds the TokenSource and Authorizer of a Registry. They can be
// set after New (SetTokenSource, SetAuthorizer) because an auth.Signer or
// auth.Verifier is built on the Registry it serves.
type authSeams struct {
	tokens atomic.Pointer[TokenSource]
	authz  atomic.Pointer[Authorizer]
}

// setTokens and setAuthz take a nil pointer in the interface (which
// panicked at its first call) for none.
func (s *authSeams) setTokens(ts TokenSource) {
	if core.IsNil(ts) {
		s.tokens.Store(nil)
		return
	}
	s.tokens.Store(&ts)
}

func (s *authSeams) setAuthz(a Authorizer) {
	if core.IsNil(a) {
		s.authz.Store(nil)
		return
	}
	s.authz.Store(&a)
}

// WithTokenSource gives the Registry the tokens it signs its outgoing
// requests with (such as config-reload notifications). A TokenSource built
// on the Registry itself, like auth.Signer, is set after New with
// SetTokenSource instead. A nil pointer (a nil *auth.Signer) is an error
// from New.
func WithTokenSource(ts TokenSource) Option {
	return optionFunc(func(o *options) {
		o.seams.setTokens(ts)
		o.noteNil("WithTokenSource", ts != nil && core.IsNil(ts))
	})
}

// WithAuthorizer gives the Registry the Authorizer that guards its mutating
// HTTP endpoints. One built on the Registry itself, like auth.Verifier, is
// set after New with SetAuthorizer instead. A nil pointer (a nil
// *auth.Verifier) is an error from New.
func WithAuthorizer(a Authorizer) Option {
	return optionFunc(func(o *options) {
		o.seams.setAuthz(a)
		o.noteNil("WithAuthorizer", a != nil && core.IsNil(a))
	})
}

// SetTokenSource replaces the TokenSource (nil, or a nil pointer, removes
// it). It is safe to call at any time, concurrently with requests.
func (r *Registry) SetTokenSource(ts TokenSource) { r.opts.seams.setTokens(ts) }

// SetAuthorizer replaces the Authorizer (nil, or a nil pointer, removes
// it). It is safe to call at any time, concurrently with requests.
func (r *Registry) SetAuthorizer(a Authorizer) { r.opts.seams.setAuthz(a) }

// TokenSource returns the TokenSource given by WithTokenSource or
// SetTokenSource, or nil.
func (r *Registry) TokenSource() TokenSource {
	if p := r.opts.seams.tokens.Load(); p != nil {
		return *p
	}
	return nil
}

// Authorizer returns the Authorizer given by WithAuthorizer or
// SetAuthorizer, or nil. Endpoints that need one refuse requests without it.
func (r *Registry) Authorizer() Authorizer {
	if p := r.opts.seams.authz.Load(); p != nil {
		return *p
	}
	return nil
}
