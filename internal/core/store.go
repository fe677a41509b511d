package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Store is the source of truth the Registry reads through its caches and
// writes to. Implementations must be safe for concurrent use, bump a
// service's revision in the same transaction as every mutation of it, and
// return errors that match ErrNotFound or ErrUnavailable where those apply.
//
// Capabilities beyond this interface are optional interfaces (RevisionReader,
// Notifier, ConfigStore, ...) that the Registry discovers by type assertion.
type Store interface {
	// Register creates the instance or replaces the one with the same
	// Service and ID (keeping its RegisteredAt), creating the service if it is
	// new, and returns the service's new revision. in has been normalised.
	Register(ctx context.Context, in *Instance) (revision int64, err error)
	// Renew moves the end of a lease that is still running at now to
	// expiresAt, without changing the revision. It returns an error matching
	// ErrNotFound if the row is gone or its lease had already ended: readers
	// have dropped the instance, so the caller must Register it again (a new
	// revision) rather than bring it back silently.
	Renew(ctx context.Context, service, id string, now, expiresAt time.Time) error
	// Deregister removes an instance and returns the service's new revision,
	// or an error matching ErrNotFound.
	Deregister(ctx context.Context, service, id string) (revision int64, err error)
	// Load returns the service with its revision, configuration and every
	// instance row, expired ones included, ordered by ID. It returns an error
	// matching ErrNotFound if the service was never created (or a
	// ServiceReaper deleted it).
	Load(ctx context.Context, service string) (*Service, error)
	// Services lists every service, ordered by name, counting the instances
	// live at now.
	Services(ctx context.Context, now time.Time) ([]ServiceInfo, error)
	// Reap deletes instances whose lease ended before cutoff, and (in a
	// KeyStore) keys that retired before cutoff, bumping the revision of
	// each service it changed once, and returns those changes. Concurrent
	// reapers (other processes) must not both do the work: one may return
	// nothing.
	Reap(ctx context.Context, cutoff time.Time) ([]Change, error)
}

// ServiceReaper is implemented by stores that delete services left with
// nothing: no instance row, no key, and never a configuration. Reap leaves
// the service itself behind (its revision, its name in Services); without
// this, every name ever registered (a CI job's, a canary's) stayed listed
// for good. The Registry's reaper calls it after Reap.
type ServiceReaper interface {
	// ReapServices records now as the time at which each service left
	// with nothing was found so, at its current revision (unless recorded
	// at that revision already), and deletes the services found so before
	// cutoff that have not changed since (their revision is still the one
	// recorded) and still have nothing. It returns one Change per service
	// deleted, at a revision above the last it had, in name order.
	//
	// A service created again under a deleted name (by Register, SetConfig
	// or PutKey) starts at a revision above that Change's, so that no
	// cache, which keeps the higher revision it holds, takes the new
	// service for older than the one it held. A write racing the deletion
	// is never lost, and never fails for it: either it comes first and the
	// service is kept, or it creates the service again. Concurrent reapers
	// (other processes) must not both do the work: one may return nothing.
	// A store whose round is costly may also skip one (return nothing)
	// that comes within a quarter of the delay (now - cutoff) of the last
	// round any process made.
	ReapServices(ctx context.Context, now, cutoff time.Time) ([]Change, error)
}

// InstanceRenewer is implemented by stores that renew a lease only while the
// row still holds the instance as its owner registered it. The Registry
// renews through it when it can: a row that a database restored from a
// backup holds at an older version (an older address, weight, metadata or
// status) is then written again instead of renewed as it is, which kept
// the older fields for as long as the instance lived.
type InstanceRenewer interface {
	// RenewInstance moves the end of the lease of in (by Service and ID)
	// that is still running at now to in.ExpiresAt, without changing the
	// revision, if the row holds every field of in that Register writes
	// but the lease's end (and RegisteredAt, which Register keeps). It
	// returns an error matching ErrNotFound, and changes nothing, if the row
	// is gone, its lease had already ended, or it holds anything else: the
	// caller registers in again (a new revision), as after Renew's
	// ErrNotFound. in has been normalised. It costs what Renew does: one
	// statement.
	RenewInstance(ctx context.Context, in *Instance, now time.Time) error
}

// RevisionReader is implemented by stores that can read many services'
// revisions cheaply; the Registry uses it to revalidate its caches after a
// reconnection. Unknown services are absent from the result.
type RevisionReader interface {
	Revisions(ctx context.Context, services []string) (map[string]int64, error)
}

// Notifier is implemented by stores that can tell every Registry sharing
// them about changes (the in-memory backend does; SQL stores rely on Redis).
// fn is called after every committed change and must not block. The
// returned function unsubscribes.
type Notifier interface {
	Subscribe(fn func(Change)) (unsubscribe func())
}

// ConfigVersion is one stored version of a service's configuration.
type ConfigVersion struct {
	// Revision numbers the service's config versions 1, 2, 3, ...
	Revision int64 `json:"revision"`
	// Config is the JSON document (a json.RawMessage: encoded as the
	// document itself, where a []byte was encoded in base64).
	Config json.RawMessage `json:"config"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"created_at"`
}

// ConfigStore is implemented by stores that keep service configurations.
type ConfigStore interface {
	// SetConfig stores doc as the service's configuration (creating the
	// service if needed), bumps the service's revision and its config
	// revision in one transaction, and keeps at most keep versions of history.
	// It returns the new service revision and config revision.
	SetConfig(ctx context.Context, service string, doc []byte, at time.Time, keep int) (revision, configRevision int64, err error)
	// ConfigHistory returns the kept versions, newest first, or an error
	// matching ErrNotFound if the service has never had a configuration.
	ConfigHistory(ctx context.Context, service string) ([]ConfigVersion, error)
}

// ConfigSwapper is implemented by config stores that can store a
// configuration only while the service's configuration revision is the one
// the caller read (compare-and-set), so that concurrent read-modify-write
// cycles do not lose each other's changes.
type ConfigSwapper interface {
	// SetConfigIf does what SetConfig does if the service's configuration
	// revision is want (0: the service has no configuration, or does not
	// exist); otherwise it writes nothing and returns a
	// *ConfigConflictError, matching ErrConflict.
	SetConfigIf(ctx context.Context, service string, doc []byte, at time.Time, keep int, want int64) (revision, configRevision int64, err error)
}

// ConfigVersionReader is implemented by config stores that can read one
// kept version of a configuration, so that a rollback does not read the
// whole history (up to 1000 versions) to restore one.
type ConfigVersionReader interface {
	// ConfigVersion returns the kept version revision of the service's
	// configuration, or an error matching ErrNotFound if it is not kept
	// (or the service never had it).
	ConfigVersion(ctx context.Context, service string, revision int64) (ConfigVersion, error)
}

// KeyStore is implemented by stores that keep services' public signing keys.
// Keys are part of a service's snapshot (Service.Keys): every key change
// bumps the service's revision, so caches everywhere pick it up.
type KeyStore interface {
	// PutKey adds or replaces a public key of a service (creating the
	// service if needed) and returns the new revision, or a
	// *RevokedKeyError (nothing written) for a key revoked by RevokeKey.
	PutKey(ctx context.Context, service string, key PublicKey) (revision int64, err error)
	// RetireKey sets when a key stops verifying, unless it already retires
	// earlier (a retirement only moves earlier, so a revocation sticks),
	// and returns the new revision, or an error matching ErrNotFound. Once
	// retired, a key is deleted by Reap with a cutoff after its retirement.
	RetireKey(ctx context.Context, service, kid string, at time.Time) (revision int64, err error)
	// RevokeKey retires a key at at (as RetireKey) and, in the same
	// transaction, records its service, ID and KeyFingerprint as revoked for
	// good: the record outlives the key's row (Reap never deletes it), and
	// PutKey refuses, with a *RevokedKeyError, a key of that service with the
	// revoked ID or the revoked public key. It returns the new revision, or
	// an error matching ErrNotFound (nothing is recorded then).
	RevokeKey(ctx context.Context, service, kid string, at time.Time) (revision int64, err error)
}

// KeyFingerprint identifies a public key by its PKIX DER bytes (the SHA-256,
// in hex), so that a revoked key is known again under any ID.
func KeyFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
