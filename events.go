package discovery

import (
	"encoding/json"
	"strconv"
	"strings"
)

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of events.
const (
	// EventInstanceAdded: an instance registered (or came back).
	EventInstanceAdded EventKind = iota + 1
	// EventInstanceRemoved: an instance deregistered or its lease ended
	// (once it is no longer kept as a suspect).
	EventInstanceRemoved
	// EventInstanceUpdated: an instance's registration changed (weight,
	// metadata, tags, draining, ...).
	EventInstanceUpdated
	// EventHealthChanged: the status lookups show for an instance changed
	// in this process: its health, an ejection beginning or ending, or its
	// lease ending while it is kept as a suspect (self-preservation, a
	// database outage) and its renewal. Instance.Status is what Get shows
	// (suspect wins, then draining, then ejected; Registry.Draining tells
	// whether a suspect drains, which Pick never chooses).
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

// UnmarshalText implements encoding.TextUnmarshaler: the names String
// gives, so that an Event decodes from the JSON it encodes to (forwarded
// over a queue, say).
func (k *EventKind) UnmarshalText(text []byte) error {
	for i, n := range eventKindNames {
		if i > 0 && n == string(text) {
			*k = EventKind(i)
			return nil
		}
	}
	return &ValidationError{Field: "event kind", Value: string(text), Reason: "unknown (" + strings.Join(eventKindNames[1:], ", ") + ")"}
}

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
	// Previous is the instance's status before a health change. JSON has
	// it for every health change (StatusUnknown included) and for no other
	// event.
	Previous Status `json:"previous,omitempty"`
	// Config is the new configuration (config events); empty when the
	// service has none any more (its database restored from a backup
	// taken before its first).
	Config json.RawMessage `json:"config,omitempty"`
}

// MarshalJSON renders the event with its JSON tags, and "previous" for
// every health change: the tags alone leave it out when it is StatusUnknown,
// the zero Status and the commonest status a change starts from.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event // without this method
	if e.Kind != EventHealthChanged {
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		plain
		Previous Status `json:"previous"`
	}{plain(e), e.Previous})
}

// emit hands an event, read from health state is, to this Registry's
// watchers (see Watch).
func (r *Registry) emit(ev Event, is *instState) { r.watchEmit(ev, is) }

// statusShown is called once per change that may move the status lookups
// show for an instance in this process (its health; an ejection beginning
// or ending), after the views were rebuilt, with the caller holding
// st.viewMu: it tells watchers the status Get now shows. The hub drops it
// if that is what its watchers last saw, or if they saw the instance
// draining (a draining instance's health), or if it does not hold the
// instance (its addition will carry the status), and gives it the status
// they saw as Previous and the instance as they know it.
func (r *Registry) statusShown(st *svcState, is *instState, prev Status) {
	in := r.instanceOf(st.name, is.id)
	in.Status = viewStatus(&in, is, r.clock.Now().UnixNano())
	rev := int64(0)
	if e := r.l1.get(st.name); e != nil {
		rev = e.rev
	}
	r.emit(Event{Kind: EventHealthChanged, Service: st.name, Revision: rev, Instance: in, Previous: prev}, is)
}
