// Package core holds the data types, errors, validation and storage seam
// shared by the discovery package and its backends. The discovery package
// re-exports everything here under the same names; users never import core.
package core

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Method is how callers reach an instance.
type Method uint8

const (
	// MethodHTTP instances are reached over the network at Host:Port.
	MethodHTTP Method = iota
	// MethodRouter instances live inside a process and are reached through an
	// in-process handler given at registration (the seed's "router" mode).
	MethodRouter
)

// String returns "http" or "router".
func (m Method) String() string {
	switch m {
	case MethodHTTP:
		return "http"
	case MethodRouter:
		return "router"
	}
	return "Method(" + strconv.Itoa(int(m)) + ")"
}

// ParseMethod parses the String form of a Method.
func ParseMethod(s string) (Method, bool) {
	switch s {
	case "http", "":
		return MethodHTTP, true
	case "router":
		return MethodRouter, true
	}
	return 0, false
}

// CheckKind selects how active health checks probe an instance.
type CheckKind uint8

const (
	// CheckDefault probes MethodHTTP instances with HTTP GET and MethodRouter
	// instances with their in-process check function.
	CheckDefault CheckKind = iota
	// CheckHTTP sends GET http://Host:Port/HealthPath.
	CheckHTTP
	// CheckTCP opens a TCP connection to Host:Port.
	CheckTCP
	// CheckNone disables active checks; only passive outcomes count.
	CheckNone
)

// String returns "default", "http", "tcp" or "none".
func (k CheckKind) String() string {
	switch k {
	case CheckDefault:
		return "default"
	case CheckHTTP:
		return "http"
	case CheckTCP:
		return "tcp"
	case CheckNone:
		return "none"
	}
	return "CheckKind(" + strconv.Itoa(int(k)) + ")"
}

// Status is an instance's state as one process sees it.
type Status uint8

const (
	// StatusUnknown means no active check has finished yet. Unknown instances
	// are eligible for selection, as in Envoy and gRPC.
	StatusUnknown Status = iota
	// StatusHealthy means the instance passes its checks.
	StatusHealthy
	// StatusWarning means the instance answers but asks for less traffic
	// (HTTP 429); it stays eligible with a lower score.
	StatusWarning
	// StatusUnhealthy means the instance failed enough checks in a row.
	StatusUnhealthy
	// StatusEjected means passive outlier detection took it out of selection
	// for a while.
	StatusEjected
	// StatusDraining means the instance is leaving: no new selections.
	StatusDraining
	// StatusSuspect means its lease lapsed together with many others of its
	// service (a partition, not a deploy) and it is kept for a grace period.
	StatusSuspect
)

var statusNames = [...]string{"unknown", "healthy", "warning", "unhealthy", "ejected", "draining", "suspect"}

// String returns the lower-case name of the status.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// ParseStatus parses the String form of a Status.
func ParseStatus(s string) (Status, bool) {
	for i, n := range statusNames {
		if n == s {
			return Status(i), true
		}
	}
	return 0, false
}

// MarshalText implements encoding.TextMarshaler.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: the names String
// gives, so that an Instance or a Service decodes from the JSON it encodes
// to (the admin API's, say).
func (s *Status) UnmarshalText(text []byte) error {
	v, ok := ParseStatus(string(text))
	if !ok {
		return &ValidationError{Field: "status", Value: string(text), Reason: "unknown (unknown, healthy, warning, unhealthy, ejected, draining, suspect)"}
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (m Method) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: "http" (or "") and
// "router".
func (m *Method) UnmarshalText(text []byte) error {
	v, ok := ParseMethod(string(text))
	if !ok {
		return &ValidationError{Field: "method", Value: string(text), Reason: "unknown (http, router)"}
	}
	*m = v
	return nil
}

// Weight bounds. A registered Weight of 0 means DefaultWeight; ZeroWeight
// registers an instance that is never selected.
const (
	DefaultWeight = 100
	MaxWeight     = 10000
	ZeroWeight    = -1
)

// DefaultHealthPath is the HTTP health-check path when none is given.
const DefaultHealthPath = "/health"

// Instance is one registered endpoint of a service.
type Instance struct {
	// ID identifies the instance within its service; it defaults to
	// Host:Port, with Host in its canonical spelling (CanonicalHost).
	ID string `json:"id"`
	// Service is the name of the service the instance belongs to.
	Service string `json:"service"`
	// Host is an IP address or DNS name that other processes reach the
	// instance at: not an unspecified (listen) address such as 0.0.0.0.
	// Register stores it in its canonical spelling (CanonicalHost).
	Host string `json:"host"`
	// Port is 1..65535.
	Port int `json:"port"`
	// Method is how callers reach the instance (http or router).
	Method Method `json:"method"`
	// Weight is the relative share of traffic, 0..MaxWeight. Register treats
	// 0 as DefaultWeight and ZeroWeight as an explicit 0 (never selected).
	Weight int `json:"weight"`
	// Zone is the locality (availability zone, rack), used by zone preference.
	Zone string `json:"zone,omitempty"`
	// Version is the deployed version, used by version filters.
	Version string `json:"version,omitempty"`
	// Tags are free-form labels, used by tag filters.
	Tags []string `json:"tags,omitempty"`
	// Metadata holds small key/value pairs (at most 64 keys, 8 KiB in all).
	Metadata map[string]string `json:"metadata,omitempty"`
	// HealthPath is the path of the HTTP health check; "/health" by default.
	// Only an HTTP check uses it (Check http, or the default check of an
	// http instance): Register refuses another path for any other.
	HealthPath string `json:"health_path,omitempty"`
	// Check selects the kind of active health check.
	Check CheckKind `json:"check,omitempty"`
	// RegisteredAt is when the instance was first registered.
	RegisteredAt time.Time `json:"registered_at"`
	// ExpiresAt is when its lease ends unless renewed.
	ExpiresAt time.Time `json:"expires_at"`
	// Status is the instance's state as this process sees it.
	Status Status `json:"status"`
}

// Addr returns Host:Port, bracketing IPv6 addresses.
func (in *Instance) Addr() string { return JoinHostPort(in.Host, in.Port) }

// Live reports whether the instance's lease is still running at now.
func (in *Instance) Live(now time.Time) bool { return now.Before(in.ExpiresAt) }

// Clone returns a deep copy of the instance.
func (in Instance) Clone() Instance {
	in.Tags = slices.Clone(in.Tags)
	in.Metadata = maps.Clone(in.Metadata)
	return in
}

// SameRegistration reports whether a and b hold the same registration:
// every field Register writes but the lease's end and RegisteredAt (which
// it keeps). Nil and empty tags or metadata are the same.
func SameRegistration(a, b *Instance) bool {
	return a.Service == b.Service && a.ID == b.ID && a.Host == b.Host && a.Port == b.Port && a.Method == b.Method &&
		a.Weight == b.Weight && a.Zone == b.Zone && a.Version == b.Version && a.HealthPath == b.HealthPath &&
		a.Check == b.Check && a.Status == b.Status && slices.Equal(a.Tags, b.Tags) && maps.Equal(a.Metadata, b.Metadata)
}

// HasTag reports whether the instance carries tag t.
func (in *Instance) HasTag(t string) bool { return slices.Contains(in.Tags, t) }

// Service is a service as one lookup saw it: its live instances, its
// configuration and the revision both belong to. Values returned by a
// Registry are shared and must not be modified; Clone gives a private copy.
type Service struct {
	// Name of the service.
	Name string `json:"name"`
	// Revision increases with every change to the service.
	Revision int64 `json:"revision"`
	// Instances are the live instances, ordered by ID.
	Instances []Instance `json:"instances"`
	// Config is the service's configuration document (JSON), if any.
	Config json.RawMessage `json:"config,omitempty"`
	// ConfigRevision is the revision of Config; 0 when there is none.
	ConfigRevision int64 `json:"config_revision,omitempty"`
	// Keys are the service's public signing keys, retired ones included,
	// ordered by ID.
	Keys []PublicKey `json:"keys,omitempty"`
}

// PublicKey is a service's public signing key, published through the
// registry so that any process can verify the service's tokens offline.
type PublicKey struct {
	// ID is the key ID (the JWT "kid"): 1 to 64 of [A-Za-z0-9_-].
	ID string `json:"kid"`
	// Algorithm is "EdDSA" (Ed25519) or "ES256".
	Algorithm string `json:"alg"`
	// Key is the public key in PKIX DER form.
	Key []byte `json:"key"`
	// CreatedAt is when the key was published.
	CreatedAt time.Time `json:"created_at"`
	// RetiresAt is when the key stops verifying; zero means never.
	RetiresAt time.Time `json:"retires_at,omitzero"`
}

// Key returns the public key with the given ID, or nil.
func (s *Service) Key(id string) *PublicKey {
	for i := range s.Keys {
		if s.Keys[i].ID == id {
			return &s.Keys[i]
		}
	}
	return nil
}

// Clone returns a deep copy of the service.
func (s *Service) Clone() *Service {
	c := *s
	c.Instances = make([]Instance, len(s.Instances))
	for i := range s.Instances {
		c.Instances[i] = s.Instances[i].Clone()
	}
	c.Config = slices.Clone(s.Config)
	c.Keys = slices.Clone(s.Keys)
	for i := range c.Keys {
		c.Keys[i].Key = slices.Clone(c.Keys[i].Key)
	}
	return &c
}

// Instance returns the instance with the given ID, or nil.
func (s *Service) Instance(id string) *Instance {
	for i := range s.Instances {
		if s.Instances[i].ID == id {
			return &s.Instances[i]
		}
	}
	return nil
}

// ServiceInfo summarises one service for listings.
type ServiceInfo struct {
	// Name of the service.
	Name string `json:"name"`
	// Revision is its current revision.
	Revision int64 `json:"revision"`
	// Live counts instances whose lease is running.
	Live int `json:"live"`
	// Expired counts instances whose lease ended and that no reaper has
	// removed yet.
	Expired int `json:"expired"`
}

// Change says that a service moved to a revision.
type Change struct {
	Service  string
	Revision int64
	// Gone says that the change deleted the service (a ServiceReaper's
	// deletion, or a write-through that found the service no more): every
	// process forgets what it keeps of it (its state, its metric series)
	// unless it holds a newer revision. A store that leaves it false has
	// its deletions seen only by the processes that read the service again.
	Gone bool
}

// JoinHostPort is net.JoinHostPort for an int port without allocating twice.
func JoinHostPort(host string, port int) string {
	p := strconv.Itoa(port)
	for i := 0; i < len(host); i++ {
		if host[i] == ':' {
			return "[" + host + "]:" + p
		}
	}
	return host + ":" + p
}
