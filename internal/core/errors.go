package core

import (
	"cmp"
	"errors"
	"strconv"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrInvalid matches every validation error; nothing was written.
	ErrInvalid = errors.New("discovery: invalid argument")
	// ErrNotFound means the service (or instance) does not exist or has no
	// live instances.
	ErrNotFound = errors.New("discovery: not found")
	// ErrNoHealthyInstances means the service has instances but none can be
	// selected.
	ErrNoHealthyInstances = errors.New("discovery: no healthy instances")
	// ErrUnavailable means a backend needed for the call could not be reached.
	// The error also wraps the backend's own error.
	ErrUnavailable = errors.New("discovery: backend unavailable")
	// ErrClosed means the Registry or Registration was closed.
	ErrClosed = errors.New("discovery: closed")
	// ErrUnsupported means the configured Store lacks an optional capability.
	ErrUnsupported = errors.New("discovery: not supported by the store")
	// ErrConflict means a concurrent change won: a compare-and-set found
	// another revision than the one expected (ConfigConflictError); nothing
	// was written.
	ErrConflict = errors.New("discovery: conflict")
	// ErrTimeout is the cause (context.Cause) of the contexts the library
	// bounds its own backend calls with. A deadline with this cause is the
	// library's, not a caller's: a call it ends is the backend failing to
	// answer (a BackendError), where a caller's own deadline is the caller
	// giving up (its context's error, as it is).
	ErrTimeout = errors.New("discovery: no answer within the timeout")
	// ErrRevoked means a public key was revoked (retired by RetireKey at or
	// before the time of the call): it may never be published again, under
	// its ID or under another.
	ErrRevoked = errors.New("discovery: key revoked")
)

// ValidationError says which field of which input is wrong and why. It
// matches ErrInvalid.
type ValidationError struct {
	// Field is the name of the offending field, like "port" or "metadata".
	Field string
	// Value is the offending value, shortened for display.
	Value string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ValidationError) Error() string {
	s := "discovery: invalid " + e.Field
	if e.Value != "" {
		s += " " + strconv.Quote(e.Value)
	}
	return s + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// ConfigConflictError says a configuration was not stored because the
// service's configuration revision was no longer the one expected: another
// writer stored one since it was read. It matches ErrConflict; nothing was
// written.
type ConfigConflictError struct {
	// Service whose configuration was not stored.
	Service string
	// Want is the configuration revision expected (0: none).
	Want int64
	// Have is the one the store holds (0: none).
	Have int64
}

// Error implements error.
func (e *ConfigConflictError) Error() string {
	return "discovery: config of service " + strconv.Quote(e.Service) + " is at revision " +
		strconv.FormatInt(e.Have, 10) + ", not " + strconv.FormatInt(e.Want, 10) + ": not stored"
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConfigConflictError) Is(target error) bool { return target == ErrConflict }

// NotFoundError names what was not found. It matches ErrNotFound. Service
// is always set; Instance names a missing instance of it, Key a missing
// public key (RetireKey); with neither, the service itself is missing.
type NotFoundError struct {
	Service  string
	Instance string
	Key      string
}

// Error implements error.
func (e *NotFoundError) Error() string {
	if e.Instance != "" {
		return "discovery: instance " + strconv.Quote(e.Instance) + " of service " + strconv.Quote(e.Service) + " not found"
	}
	if e.Key != "" {
		return "discovery: key " + strconv.Quote(e.Key) + " of service " + strconv.Quote(e.Service) + " not found"
	}
	return "discovery: service " + strconv.Quote(e.Service) + " not found"
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// BackendError is a failure of Redis or the database. It matches
// ErrUnavailable and unwraps to the backend's error.
type BackendError struct {
	// Backend is "database" or "redis".
	Backend string
	// Op is the operation that failed, like "register" or "load".
	Op string
	// Err is the backend's error.
	Err error
}

// Error implements error. A field left empty is left out of the text: a
// BackendError built by a Store or a test without Err printed by
// dereferencing nil.
func (e *BackendError) Error() string {
	s := "discovery: " + cmp.Or(e.Backend, "backend") + " unavailable"
	if e.Op != "" {
		s += " during " + e.Op
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the backend's error.
func (e *BackendError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *BackendError) Is(target error) bool { return target == ErrUnavailable }

// RevokedKeyError says that a key may not be published because it, or a key
// of the same ID, was revoked. It matches ErrRevoked; nothing was written.
type RevokedKeyError struct {
	Service string
	// Key is the ID of the key being published.
	Key string
	// RevokedID is the ID the revoked key was published under: Key, or
	// another ID when the same public key comes back under a new one (the
	// least in byte order, if it was revoked under several).
	RevokedID string
}

// Error implements error.
func (e *RevokedKeyError) Error() string {
	s := "discovery: key " + strconv.Quote(e.Key) + " of service " + strconv.Quote(e.Service) + " was revoked"
	if e.RevokedID != "" && e.RevokedID != e.Key {
		s += " (the same public key as revoked key " + strconv.Quote(e.RevokedID) + ")"
	}
	return s + " and may not be published again"
}

// Is makes errors.Is(err, ErrRevoked) true.
func (e *RevokedKeyError) Is(target error) bool { return target == ErrRevoked }

// NoHealthyError names the service that has no eligible instance (or,
// with WithFailClosed, too few: see Eligible). It matches
// ErrNoHealthyInstances.
type NoHealthyError struct {
	Service string
	// Live counts the live instances, none of which was eligible (but for
	// the Eligible ones).
	Live int
	// Eligible counts the eligible instances of a pick that WithFailClosed
	// refused: some of those the pick could use are eligible, too few of
	// them (below the panic threshold) to pick without panic mode. 0 when
	// none is.
	Eligible int
	// Filtered counts the live instances the pick's filters (WithTag,
	// WithMeta, WithVersion) left out, and Excluded the eligible ones its
	// Exclude options left out: the pick's own doing, not the instances'
	// health.
	Filtered, Excluded int
	// Slow counts those of the instances the pick could use that pass
	// their health checks but answer them so slowly that they score at or
	// below WithMinScore, where the same answer within 100 ms would score
	// above it: a score is min(1, 100 ms / response time), so with the
	// default 0.5 a check slower than 200 ms keeps an instance out of
	// selection however often it passes. A warning (HTTP 429: throttling)
	// scores 0.6 times that: with WithMinScore(0.6) or more it keeps an
	// instance out however fast it is answered, and counts in Throttled.
	Slow int
	// Throttled counts those of the instances the pick could use that
	// answer their health checks with HTTP 429 (a warning: throttling),
	// which scores 0.6 times what a pass does, when WithMinScore is 0.6 or
	// more: no answer of theirs, however fast, scores above it, so they are
	// out of selection until they stop asking for less traffic. A slow 429
	// counts here, not in Slow, as a faster one would not bring it back;
	// below 0.6 a 429 that would score above the minimum when answered
	// within 100 ms is Slow instead.
	Throttled int
}

// Error implements error.
func (e *NoHealthyError) Error() string {
	s := "discovery: no healthy instances of service " + strconv.Quote(e.Service) + " (" + strconv.Itoa(e.Live) + " live"
	if e.Eligible > 0 {
		// Not "no healthy instances": Get and Health show these healthy.
		s = "discovery: too few healthy instances of service " + strconv.Quote(e.Service) + " (" + strconv.Itoa(e.Live) + " live; " +
			strconv.Itoa(e.Eligible) + " eligible, below the panic threshold, and WithFailClosed refuses to pick in panic mode"
	}
	if e.Filtered > 0 {
		s += "; the pick's filters left out " + strconv.Itoa(e.Filtered)
	}
	if e.Excluded > 0 {
		s += "; Exclude left out " + strconv.Itoa(e.Excluded) + " eligible"
	}
	switch {
	case e.Slow == 1:
		s += "; 1 passes its health checks too slowly to score above the minimum score: speed its check up or lower WithMinScore"
	case e.Slow > 1:
		s += "; " + strconv.Itoa(e.Slow) + " pass their health checks too slowly to score above the minimum score: speed their checks up or lower WithMinScore"
	}
	switch {
	case e.Throttled == 1:
		s += "; 1 answers its health checks with 429 (throttling), which scores at or below the minimum score however fast: relieve its load or lower WithMinScore below 0.6"
	case e.Throttled > 1:
		s += "; " + strconv.Itoa(e.Throttled) + " answer their health checks with 429 (throttling), which scores at or below the minimum score however fast: relieve their load or lower WithMinScore below 0.6"
	}
	return s + ")"
}

// Is makes errors.Is(err, ErrNoHealthyInstances) true.
func (e *NoHealthyError) Is(target error) bool { return target == ErrNoHealthyInstances }
