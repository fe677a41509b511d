package discovery

import (
	"strings"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Sentinel errors; branch on them with errors.Is. Every error this package
// returns starts with "discovery:", except the caller's own: a call whose
// context ended before it could finish returns that context's error
// (matching context.Canceled or context.DeadlineExceeded), which may not.
//
// A backend that did not answer within the Registry's own timeouts
// (WithLoadTimeout, WithDatabaseTimeout) gives a BackendError, matching
// ErrUnavailable, that wraps the driver's error, which itself may match
// context.DeadlineExceeded; the caller's own deadline never matches
// ErrUnavailable. Test ErrUnavailable first to tell the two apart.
var (
	// ErrInvalid matches every validation error (see ValidationError);
	// nothing was written.
	ErrInvalid = core.ErrInvalid
	// ErrNotFound means the service does not exist or has no live instance.
	ErrNotFound = core.ErrNotFound
	// ErrNoHealthyInstances means a service has live instances but none is
	// eligible for selection, or, with WithFailClosed, too few to pick
	// without panic mode (see NoHealthyError).
	ErrNoHealthyInstances = core.ErrNoHealthyInstances
	// ErrUnavailable means a backend the call needed is down (see
	// BackendError, which wraps the backend's own error).
	ErrUnavailable = core.ErrUnavailable
	// ErrClosed means the Registry or the Registration is closed.
	ErrClosed = core.ErrClosed
	// ErrUnsupported means the Store lacks an optional capability, the
	// database WithDB gave is neither PostgreSQL nor SQLite, or its schema
	// is not the one this release needs (see Migrate).
	ErrUnsupported = core.ErrUnsupported
	// ErrConflict means a concurrent change won.
	ErrConflict = core.ErrConflict
	// ErrRevoked means PublishKey was given a key that was revoked (see
	// RevokedKeyError); nothing was written.
	ErrRevoked = core.ErrRevoked
)

// ValidationError names the invalid field, its value and what is wrong. It
// matches ErrInvalid.
type ValidationError = core.ValidationError

// NotFoundError names the service (and instance) not found. It matches
// ErrNotFound.
type NotFoundError = core.NotFoundError

// ConfigConflictError says UpdateConfigIf stored nothing because the
// service's configuration revision was no longer the one expected (Want);
// Have is the one stored. It matches ErrConflict.
type ConfigConflictError = core.ConfigConflictError

// BackendError is a Redis or database failure. It matches ErrUnavailable and
// unwraps to the backend's error.
type BackendError = core.BackendError

// NoHealthyError names the service with no eligible instance (with
// WithFailClosed, too few: Eligible counts them). It matches
// ErrNoHealthyInstances.
type NoHealthyError = core.NoHealthyError

// RevokedKeyError names a key PublishKey refused because it, or its ID, was
// revoked (RetireKey at or before now). It matches ErrRevoked.
type RevokedKeyError = core.RevokedKeyError

// CallbackError is Close's report of the calls of functions given to
// Register (WithCheckFunc, WithConfigFunc) still running when it stopped
// waiting for them, at the end of its close timeout (at least 100 ms after
// its deregistrations: see Registry.Close): functions that do not return
// when their context ends. Close did everything else; each such call's
// goroutine ends when the function returns. Running names them ("check
// func of orders/orders-1"); Waited is how long Close waited for them once
// its deregistrations were done.
type CallbackError struct {
	Running []string
	Waited  time.Duration
}

func (e *CallbackError) Error() string {
	return "discovery: Close waited " + e.Waited.String() + " for " + strings.Join(e.Running, ", ") +
		", still running: a function given to Register must return once its context is done"
}
