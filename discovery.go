package discovery

import (
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// The data types are defined in an internal package so that the stores this
// package constructs can share them; these aliases are their public names,
// as os.FileInfo is io/fs.FileInfo.

// Instance is one registered endpoint of a service: ID (defaults to
// Host:Port), Service, Host, Port, Method, Weight, Zone, Version, Tags,
// Metadata, HealthPath, Check, RegisteredAt, ExpiresAt and Status.
//
// Register and Update store the Host in one spelling, and the default ID
// is built from it: an IP address in its canonical form (RFC 5952 for
// IPv6: "2001:0DB8:0:0::1" is stored as "2001:db8::1"), an IPv4-mapped
// IPv6 address as its IPv4 address ("::ffff:10.0.0.7" as "10.0.0.7"), and
// a DNS name in lower case (DNS ignores case); a trailing dot is kept (it
// changes how the name is looked up). So one host written two ways, by a
// process that restarted with another configuration, is one instance, not
// two. An ID given is kept as given.
//
// Register refuses, with a *ValidationError that matches ErrInvalid and
// names the field, and before writing anything: a Service or ID that
// ValidateServiceName or ValidateInstanceID refuses; a Host that is neither
// an IP address (an IPv6 zone, 0.0.0.0 and :: are refused) nor a DNS name
// of at most 253 bytes; a Port outside 1..65535; a Weight outside
// 0..MaxWeight other than ZeroWeight; a Zone or Version of more than 64
// bytes or with a character that does not print (strconv.IsPrint); more
// than 32 Tags, an empty or duplicate one, or one of more than 128 bytes or
// with a character that does not print; more than 64 Metadata keys, a key
// that is empty, longer than 128 bytes or with a character other than
// letters, digits, '.', '_', '/' and '-', a value that is not UTF-8 or
// holds a NUL, or more than 8 KiB of keys and values;
// a HealthPath of more than 256 bytes, not starting with a single '/', or
// holding a space, a control or non-ASCII character, '#', '\' or a '%' that
// starts no escape, or, other than DefaultHealthPath, on an instance whose
// check is not HTTP (Check tcp or none, a router's function), which would
// never use it; a Status other than StatusUnknown and StatusDraining.
// Update refuses the same, but keeps the HealthPath an instance had when it
// changes only the kind of check.
type Instance = core.Instance

// Service is a service as one lookup saw it: Name, Revision, live Instances
// ordered by ID, and Config. Values returned by a Registry are shared and
// must not be modified; call Clone for a private copy.
type Service = core.Service

// ServiceInfo summarises one service: its revision and how many of its
// instances are live or expired.
type ServiceInfo = core.ServiceInfo

// Change says that a service moved to a revision.
type Change = core.Change

// Status is an instance's state as this process sees it.
type Status = core.Status

// The statuses of an instance.
const (
	StatusUnknown   = core.StatusUnknown
	StatusHealthy   = core.StatusHealthy
	StatusWarning   = core.StatusWarning
	StatusUnhealthy = core.StatusUnhealthy
	StatusEjected   = core.StatusEjected
	StatusDraining  = core.StatusDraining
	StatusSuspect   = core.StatusSuspect
)

// Method is how callers reach an instance: over HTTP, or in-process (router).
type Method = core.Method

// The connection methods.
const (
	MethodHTTP   = core.MethodHTTP
	MethodRouter = core.MethodRouter
)

// CheckKind selects how active health checks probe an instance.
type CheckKind = core.CheckKind

// The kinds of active check.
const (
	CheckDefault = core.CheckDefault
	CheckHTTP    = core.CheckHTTP
	CheckTCP     = core.CheckTCP
	CheckNone    = core.CheckNone
)

// Weights. Register treats Weight 0 as DefaultWeight and ZeroWeight as an
// explicit 0: the instance stays registered but is never picked.
const (
	DefaultWeight = core.DefaultWeight
	MaxWeight     = core.MaxWeight
	ZeroWeight    = core.ZeroWeight
)

// DefaultHealthPath is the HTTP health-check path when none is given.
const DefaultHealthPath = core.DefaultHealthPath

// Store is the storage seam: the source of truth behind the caches. The
// library ships an in-memory Store (discoverytest.NewBackend) and a SQL Store
// (WithDB); WithStore accepts any other. Optional capabilities are the
// interfaces RevisionReader, Notifier, ConfigStore, ConfigSwapper,
// ConfigVersionReader, KeyStore, InstanceRenewer and ServiceReaper.
type Store = core.Store

// ServiceReaper is an optional Store capability: deleting services left
// with nothing (no instance, no key, never a configuration), which the
// reaper does after WithServiceReap's delay, while keeping a name deleted
// and created again from going back in revision.
type ServiceReaper = core.ServiceReaper

// InstanceRenewer is an optional Store capability: renewing a lease only
// while the row holds the instance as registered, so that a row restored
// from an older backup is written again at its next renewal instead of
// keeping its older fields.
type InstanceRenewer = core.InstanceRenewer

// RevisionReader is an optional Store capability: reading many revisions at
// once, used to revalidate caches after a reconnection.
type RevisionReader = core.RevisionReader

// Notifier is an optional Store capability: telling every Registry sharing
// the store about each change, as Redis pub/sub does for SQL stores.
type Notifier = core.Notifier

// ConfigStore is an optional Store capability: per-service configuration
// with history.
type ConfigStore = core.ConfigStore

// ConfigSwapper is an optional Store capability: storing a configuration
// only while its revision is the one expected (UpdateConfigIf).
type ConfigSwapper = core.ConfigSwapper

// ConfigVersionReader is an optional Store capability: reading one kept
// version of a configuration, so that RollbackConfig reads that version
// rather than the whole history.
type ConfigVersionReader = core.ConfigVersionReader

// ConfigVersion is one stored version of a service's configuration.
type ConfigVersion = core.ConfigVersion

// Clock tells the time and makes timers; WithClock injects one (see
// discoverytest.NewClock).
type Clock = core.Clock

// Timer is the part of *time.Timer a Clock returns.
type Timer = core.Timer

// Layer names the cache layer that answered a lookup.
type Layer uint8

// The layers, from nearest to farthest.
const (
	// LayerL1 is this process's memory (ristretto).
	LayerL1 Layer = iota + 1
	// LayerL2 is the shared Redis.
	LayerL2
	// LayerL3 is the database, the source of truth.
	LayerL3
)

// String returns "L1", "L2" or "L3".
func (l Layer) String() string {
	switch l {
	case LayerL1:
		return "L1"
	case LayerL2:
		return "L2"
	case LayerL3:
		return "L3"
	}
	return "none"
}

// Name returns the seed's name of the layer: "memory", "redis" or "database".
func (l Layer) Name() string {
	switch l {
	case LayerL1:
		return "memory"
	case LayerL2:
		return "redis"
	case LayerL3:
		return "database"
	}
	return "none"
}

// Result is a lookup with its provenance.
type Result struct {
	// Service is the answer, shared: do not modify it.
	Service *Service
	// Layer is where the snapshot was found.
	Layer Layer
	// Revision of the snapshot.
	Revision int64
	// Age is how long ago the snapshot was read from the database.
	Age time.Duration
	// Stale is true when the snapshot is past its freshness window (a
	// refresh is under way), known to be superseded, or served because
	// every lower layer failed.
	Stale bool
}
