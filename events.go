package discovery

import (
	"encoding/json"
	"strconv"
)

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of events.
const (
	// EventInstanceAdded: an instance registered (or came back).
	EventInstanceAdded EventKind = iota + 1
	// EventInstanceRemoved: an instance deregistered or its lease ended.
	EventInstanceRemoved
	// EventInstanceUpdated: an instance's registration changed (weight,
	// metadata, tags, draining, ...).
	EventInstanceUpdated
	// EventHealthChanged: an instance's health status changed in this
	// process.
	EventHealthChanged
	// EventConfigChanged: the service's configuration changed.
	EventConfigChanged
)

var eventKindNames = [...]string{"", "instance_added", "instance_removed", "instance_updated", "health_changed", "config_changed"}

// String returns the snake_case name of the kind.
func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && k > 0 {
		return eventKindNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (k EventKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Event is one change to a service, as delivered by Watch.
type Event struct {
	// Kind of change.
	Kind EventKind `json:"kind"`
	// Service it happened to.
	Service string `json:"service"`
	// Revision of the service at which it was observed.
	Revision int64 `json:"revision"`
	// Instance is the instance concerned (for instance and health events):
	// its new state, or its last known state when removed.
	Instance Instance `json:"instance,omitzero"`
	// Previous is the instance's status before a health change.
	Previous Status `json:"previous,omitempty"`
	// Config is the new configuration (config events).
	Config json.RawMessage `json:"config,omitempty"`
}

// emit hands an event to this Registry's watchers (see Watch).
func (r *Registry) emit(ev Event) { r.watchEmit(ev) }

// healthChanged is called by the health monitor once per change of an
// instance's status in this process, after the views were rebuilt: it
// tells watchers.
func (r *Registry) healthChanged(st *svcState, in Instance, from, to Status) {
	in.Status = to
	rev := int64(0)
	if e := r.l1.get(st.name); e != nil {
		rev = e.rev
	}
	r.emit(Event{Kind: EventHealthChanged, Service: st.name, Revision: rev, Instance: in, Previous: from})
}
