// Package memory is the in-memory Store: the backend of discoverytest and of
// a Registry given no database. Several Registry values may share one Store
// to stand for several processes; it notifies all of them of every change.
package memory

import (
	"context"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Store keeps services in memory. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	services map[string]*service
	subs     map[int]func(core.Change)
	nextSub  int
	// loads counts Load calls, for tests that assert how often the store is read.
	loads int64
	fail  error
	// floor is the highest revision a deleted service's Change had
	// (ReapServices): a service created after it starts above it.
	floor int64
	// revoked maps services to the IDs of their revoked keys, and those
	// to their fingerprints (core.KeyFingerprint); kept for good, through
	// the deletion of the service, as the SQL stores keep them.
	revoked map[string]map[string]string
}

type service struct {
	rev       int64
	config    []byte
	cfgRev    int64
	instances map[string]core.Instance
	history   []core.ConfigVersion
	keys      map[string]core.PublicKey
	// emptySince is when ReapServices found the service with nothing, at
	// revision emptyRev (0: not found so at any revision).
	emptySince time.Time
	emptyRev   int64
}

var (
	_ core.Store               = (*Store)(nil)
	_ core.RevisionReader      = (*Store)(nil)
	_ core.Notifier            = (*Store)(nil)
	_ core.ConfigStore         = (*Store)(nil)
	_ core.ConfigVersionReader = (*Store)(nil)
	_ core.ConfigSwapper       = (*Store)(nil)
	_ core.KeyStore            = (*Store)(nil)
	_ core.InstanceRenewer     = (*Store)(nil)
	_ core.ServiceReaper       = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{services: map[string]*service{}, subs: map[int]func(core.Change){}, revoked: map[string]map[string]string{}}
}

// Loads returns how many times Load has been called.
func (s *Store) Loads() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads
}

// SetFailure makes every call fail with an error matching ErrUnavailable
// that wraps err, standing for a database outage; nil ends it.
func (s *Store) SetFailure(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

func (s *Store) begin(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.fail != nil {
		err := s.fail
		s.mu.Unlock()
		return &core.BackendError{Backend: "database", Op: op, Err: err}
	}
	return nil
}

// commit unlocks and tells subscribers about ch.
func (s *Store) commit(ch core.Change) {
	subs := make([]func(core.Change), 0, len(s.subs))
	for _, fn := range s.subs {
		subs = append(subs, fn)
	}
	s.mu.Unlock()
	for _, fn := range subs {
		fn(ch)
	}
}

// svc returns the service name, created if it is not there: at the floor
// (the caller's bump takes it above), so that a service deleted by
// ReapServices and created again goes on from above its last revision.
func (s *Store) svc(name string) *service {
	sv := s.services[name]
	if sv == nil {
		sv = &service{rev: s.floor, instances: map[string]core.Instance{}}
		s.services[name] = sv
	}
	return sv
}

// stored returns t as the SQL stores (and the Redis cache) give it back:
// time.Unix of its Unix nanoseconds, in time.Local, without a monotonic
// reading. Kept as given (in the Clock's location, say), the Backend's
// times compared equal, with == or reflect.DeepEqual, to times that
// production's did not, and printed otherwise. The zero time stays zero.
func stored(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.Unix(0, t.UnixNano())
}

// Register implements core.Store.
func (s *Store) Register(ctx context.Context, in *core.Instance) (int64, error) {
	if err := s.begin(ctx, "register"); err != nil {
		return 0, err
	}
	sv := s.svc(in.Service)
	c := in.Clone()
	// Empty tags and metadata are kept as none, as the SQL stores keep
	// them: Load gave the empty ones back, which production never did.
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	if len(c.Metadata) == 0 {
		c.Metadata = nil
	}
	c.RegisteredAt, c.ExpiresAt = stored(c.RegisteredAt), stored(c.ExpiresAt)
	if old, ok := sv.instances[in.ID]; ok {
		c.RegisteredAt = old.RegisteredAt
	}
	sv.instances[in.ID] = c
	sv.rev++
	rev := sv.rev
	s.commit(core.Change{Service: in.Service, Revision: rev})
	return rev, nil
}

// Renew implements core.Store.
func (s *Store) Renew(ctx context.Context, service, id string, now, expiresAt time.Time) error {
	return s.renew(ctx, service, id, now, expiresAt, nil)
}

// RenewInstance implements core.InstanceRenewer.
func (s *Store) RenewInstance(ctx context.Context, in *core.Instance, now time.Time) error {
	return s.renew(ctx, in.Service, in.ID, now, in.ExpiresAt, in)
}

// renew moves the end of a lease still running at now to expiresAt, if the
// row holds want's registration (any, for a nil want): else ErrNotFound.
func (s *Store) renew(ctx context.Context, service, id string, now, expiresAt time.Time, want *core.Instance) error {
	if err := s.begin(ctx, "renew"); err != nil {
		return err
	}
	defer s.mu.Unlock()
	sv := s.services[service]
	if sv == nil {
		return &core.NotFoundError{Service: service, Instance: id}
	}
	in, ok := sv.instances[id]
	if !ok || !in.ExpiresAt.After(now) || want != nil && !core.SameRegistration(&in, want) {
		return &core.NotFoundError{Service: service, Instance: id}
	}
	in.ExpiresAt = stored(expiresAt)
	sv.instances[id] = in
	return nil
}

// Deregister implements core.Store.
func (s *Store) Deregister(ctx context.Context, service, id string) (int64, error) {
	if err := s.begin(ctx, "deregister"); err != nil {
		return 0, err
	}
	sv := s.services[service]
	if sv == nil {
		s.mu.Unlock()
		return 0, &core.NotFoundError{Service: service, Instance: id}
	}
	if _, ok := sv.instances[id]; !ok {
		s.mu.Unlock()
		return 0, &core.NotFoundError{Service: service, Instance: id}
	}
	delete(sv.instances, id)
	sv.rev++
	rev := sv.rev
	s.commit(core.Change{Service: service, Revision: rev})
	return rev, nil
}

// Load implements core.Store.
func (s *Store) Load(ctx context.Context, name string) (*core.Service, error) {
	if err := s.begin(ctx, "load"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	s.loads++
	sv := s.services[name]
	if sv == nil {
		return nil, &core.NotFoundError{Service: name}
	}
	// Instances stay nil when there are none, as the SQL stores leave
	// them: encoded, a snapshot's empty list was [] in tests and null in
	// production.
	out := &core.Service{
		Name: name, Revision: sv.rev,
		Config: slices.Clone(sv.config), ConfigRevision: sv.cfgRev,
	}
	if len(sv.instances) > 0 {
		out.Instances = make([]core.Instance, 0, len(sv.instances))
	}
	for _, id := range slices.Sorted(maps.Keys(sv.instances)) {
		out.Instances = append(out.Instances, sv.instances[id].Clone())
	}
	for _, id := range slices.Sorted(maps.Keys(sv.keys)) {
		k := sv.keys[id]
		k.Key = slices.Clone(k.Key)
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

// Services implements core.Store.
func (s *Store) Services(ctx context.Context, now time.Time) ([]core.ServiceInfo, error) {
	if err := s.begin(ctx, "services"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []core.ServiceInfo // nil when there is none, as from the SQL stores
	for name, sv := range s.services {
		info := core.ServiceInfo{Name: name, Revision: sv.rev}
		for _, in := range sv.instances {
			if in.Live(now) {
				info.Live++
			} else {
				info.Expired++
			}
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Reap implements core.Store.
func (s *Store) Reap(ctx context.Context, cutoff time.Time) ([]core.Change, error) {
	if err := s.begin(ctx, "reap"); err != nil {
		return nil, err
	}
	var changes []core.Change
	for name, sv := range s.services {
		n := 0
		for id, in := range sv.instances {
			if in.ExpiresAt.Before(cutoff) {
				delete(sv.instances, id)
				n++
			}
		}
		for kid, k := range sv.keys {
			if !k.RetiresAt.IsZero() && k.RetiresAt.Before(cutoff) {
				delete(sv.keys, kid)
				n++
			}
		}
		if n > 0 {
			sv.rev++
			changes = append(changes, core.Change{Service: name, Revision: sv.rev})
		}
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Service < changes[j].Service })
	s.notify(changes)
	return changes, nil
}

// ReapServices implements core.ServiceReaper.
func (s *Store) ReapServices(ctx context.Context, now, cutoff time.Time) ([]core.Change, error) {
	if err := s.begin(ctx, "reap services"); err != nil {
		return nil, err
	}
	var changes []core.Change
	for name, sv := range s.services {
		if len(sv.instances) > 0 || len(sv.keys) > 0 || sv.cfgRev > 0 || len(sv.history) > 0 {
			continue
		}
		if sv.emptyRev != sv.rev {
			sv.emptySince, sv.emptyRev = now, sv.rev
			continue
		}
		if !sv.emptySince.Before(cutoff) {
			continue
		}
		delete(s.services, name)
		ch := core.Change{Service: name, Revision: sv.rev + 1, Gone: true}
		s.floor = max(s.floor, ch.Revision)
		changes = append(changes, ch)
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Service < changes[j].Service })
	s.notify(changes)
	return changes, nil
}

// notify unlocks and tells subscribers about changes.
func (s *Store) notify(changes []core.Change) {
	subs := make([]func(core.Change), 0, len(s.subs))
	for _, fn := range s.subs {
		subs = append(subs, fn)
	}
	s.mu.Unlock()
	for _, ch := range changes {
		for _, fn := range subs {
			fn(ch)
		}
	}
}

// Revisions implements core.RevisionReader.
func (s *Store) Revisions(ctx context.Context, names []string) (map[string]int64, error) {
	if err := s.begin(ctx, "revisions"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make(map[string]int64, len(names))
	for _, n := range names {
		if sv := s.services[n]; sv != nil {
			out[n] = sv.rev
		}
	}
	return out, nil
}

// Subscribers returns how many subscriptions are active: how many Registry
// values follow the store.
func (s *Store) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// Subscribe implements core.Notifier.
func (s *Store) Subscribe(fn func(core.Change)) func() {
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

// SetConfig implements core.ConfigStore.
func (s *Store) SetConfig(ctx context.Context, name string, doc []byte, at time.Time, keep int) (int64, int64, error) {
	if err := s.begin(ctx, "set config"); err != nil {
		return 0, 0, err
	}
	return s.setConfig(name, doc, at, keep)
}

// SetConfigIf implements core.ConfigSwapper.
func (s *Store) SetConfigIf(ctx context.Context, name string, doc []byte, at time.Time, keep int, want int64) (int64, int64, error) {
	if want < 0 {
		return 0, 0, &core.ValidationError{Field: "config revision", Value: strconv.FormatInt(want, 10), Reason: "must not be negative"}
	}
	if err := s.begin(ctx, "set config"); err != nil {
		return 0, 0, err
	}
	var have int64
	if sv := s.services[name]; sv != nil {
		have = sv.cfgRev
	}
	if have != want {
		s.mu.Unlock()
		return 0, 0, &core.ConfigConflictError{Service: name, Want: want, Have: have}
	}
	return s.setConfig(name, doc, at, keep)
}

// setConfig stores doc as the configuration of name; s.mu is held, and
// released.
func (s *Store) setConfig(name string, doc []byte, at time.Time, keep int) (int64, int64, error) {
	sv := s.svc(name)
	at = stored(at)
	sv.rev++
	sv.cfgRev++
	sv.config = slices.Clone(doc)
	sv.history = append([]core.ConfigVersion{{Revision: sv.cfgRev, Config: slices.Clone(doc), CreatedAt: at}}, sv.history...)
	if keep > 0 && len(sv.history) > keep {
		sv.history = sv.history[:keep]
	}
	rev, cfgRev := sv.rev, sv.cfgRev
	s.commit(core.Change{Service: name, Revision: rev})
	return rev, cfgRev, nil
}

// ConfigHistory implements core.ConfigStore.
func (s *Store) ConfigHistory(ctx context.Context, name string) ([]core.ConfigVersion, error) {
	if err := s.begin(ctx, "config history"); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	sv := s.services[name]
	if sv == nil || len(sv.history) == 0 {
		return nil, &core.NotFoundError{Service: name}
	}
	out := make([]core.ConfigVersion, len(sv.history))
	for i, v := range sv.history {
		out[i] = core.ConfigVersion{Revision: v.Revision, Config: slices.Clone(v.Config), CreatedAt: v.CreatedAt}
	}
	return out, nil
}

// ConfigVersion implements core.ConfigVersionReader.
func (s *Store) ConfigVersion(ctx context.Context, name string, rev int64) (core.ConfigVersion, error) {
	if err := s.begin(ctx, "config version"); err != nil {
		return core.ConfigVersion{}, err
	}
	defer s.mu.Unlock()
	if sv := s.services[name]; sv != nil {
		for _, v := range sv.history {
			if v.Revision == rev {
				return core.ConfigVersion{Revision: v.Revision, Config: slices.Clone(v.Config), CreatedAt: v.CreatedAt}, nil
			}
		}
	}
	return core.ConfigVersion{}, &core.NotFoundError{Service: name}
}

// PutKey implements core.KeyStore.
func (s *Store) PutKey(ctx context.Context, name string, key core.PublicKey) (int64, error) {
	if err := s.begin(ctx, "put key"); err != nil {
		return 0, err
	}
	if err := s.refuseRevoked(name, key); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	sv := s.svc(name)
	if sv.keys == nil {
		sv.keys = map[string]core.PublicKey{}
	}
	key.Key = slices.Clone(key.Key)
	key.CreatedAt, key.RetiresAt = stored(key.CreatedAt), stored(key.RetiresAt)
	sv.keys[key.ID] = key
	sv.rev++
	rev := sv.rev
	s.commit(core.Change{Service: name, Revision: rev})
	return rev, nil
}

// RetireKey implements core.KeyStore.
func (s *Store) RetireKey(ctx context.Context, name, kid string, at time.Time) (int64, error) {
	return s.retireKey(ctx, "retire key", name, kid, at, false)
}

// RevokeKey implements core.KeyStore.
func (s *Store) RevokeKey(ctx context.Context, name, kid string, at time.Time) (int64, error) {
	return s.retireKey(ctx, "revoke key", name, kid, at, true)
}

func (s *Store) retireKey(ctx context.Context, op, name, kid string, at time.Time, revoke bool) (int64, error) {
	if err := s.begin(ctx, op); err != nil {
		return 0, err
	}
	sv := s.services[name]
	k, ok := sv.keyOK(kid)
	if !ok {
		s.mu.Unlock()
		return 0, &core.NotFoundError{Service: name, Key: kid}
	}
	if k.RetiresAt.IsZero() || at.Before(k.RetiresAt) { // only ever earlier
		k.RetiresAt = stored(at)
	}
	sv.keys[kid] = k
	if revoke {
		if s.revoked[name] == nil {
			s.revoked[name] = map[string]string{}
		}
		s.revoked[name][kid] = core.KeyFingerprint(k.Key)
	}
	sv.rev++
	rev := sv.rev
	s.commit(core.Change{Service: name, Revision: rev})
	return rev, nil
}

// refuseRevoked returns a *core.RevokedKeyError if key, by its ID or by its
// public key, was revoked in service name; s.mu is held.
func (s *Store) refuseRevoked(name string, key core.PublicKey) error {
	revoked := s.revoked[name]
	if len(revoked) == 0 {
		return nil
	}
	if _, ok := revoked[key.ID]; ok {
		return &core.RevokedKeyError{Service: name, Key: key.ID, RevokedID: key.ID}
	}
	// The least of the IDs it was revoked under, as the SQL stores name it:
	// the first one met in the map differed from call to call.
	fp := core.KeyFingerprint(key.Key)
	least := ""
	for kid, f := range revoked {
		if f == fp && (least == "" || kid < least) {
			least = kid
		}
	}
	if least != "" {
		return &core.RevokedKeyError{Service: name, Key: key.ID, RevokedID: least}
	}
	return nil
}

func (sv *service) keyOK(kid string) (core.PublicKey, bool) {
	if sv == nil {
		return core.PublicKey{}, false
	}
	k, ok := sv.keys[kid]
	return k, ok
}
