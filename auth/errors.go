package auth

import (
	"context"

	"github.com/rssbot/discovery"
)

// The errors a Verifier returns match one of these (errors.Is); they are
// the root package's, so code that only sees a discovery.Authorizer can
// branch on them too.
var (
	// ErrUnauthenticated means no token, or one that does not verify: 401.
	ErrUnauthenticated = discovery.ErrUnauthenticated
	// ErrForbidden means a caller the policy does not permit: 403.
	ErrForbidden = discovery.ErrForbidden
)

// Error is a refusal. It matches ErrUnauthenticated, ErrForbidden or, when
// the keys or the policy could not be read, discovery.ErrUnavailable; it
// unwraps to the cause, if any. Its text is for logs and never reaches the
// caller, whose answer is a bare 401, 403 or 503.
type Error struct {
	// Reason says what was wrong in a few fixed words, such as "token
	// expired" or "unknown key"; it never quotes the token.
	Reason string
	// Caller is the service the token claims to come from, once it is known
	// to be well-formed; it is verified only when the error matches
	// ErrForbidden.
	Caller string
	// KeyID is the token's "kid", once it is known to be well-formed.
	KeyID string

	kind error
	err  error
}

// Error implements error.
func (e *Error) Error() string {
	s := "discovery: auth: " + e.Reason
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrUnauthenticated) (or ErrForbidden, or
// discovery.ErrUnavailable) true as the case may be.
func (e *Error) Is(target error) bool { return target == e.kind }

// Unwrap returns the cause, or nil.
func (e *Error) Unwrap() error { return e.err }

func unauthenticated(reason string, cause error) *Error {
	return &Error{Reason: reason, kind: ErrUnauthenticated, err: cause}
}

func forbidden(reason string) *Error { return &Error{Reason: reason, kind: ErrForbidden} }

func unavailable(reason string, cause error) *Error {
	kind := discovery.ErrUnavailable
	if cause == context.Canceled || cause == context.DeadlineExceeded {
		kind = cause
	}
	return &Error{Reason: reason, kind: kind, err: cause}
}
