package discovery

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/cache/rediscache"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/health"
)

// Shared health results, with Redis. Per service, two keys that share the
// service's hash tag (so one script may touch both on Redis Cluster):
//
//	<ns>:health:{<service>}   hash: instance ID -> encoded health.State,
//	                          expiring 6 intervals after the last write
//	<ns>:hmembers:{<service>} sorted set: IDs of the processes that use the
//	                          service, scored by their last heartbeat (ms)
//
// and one channel, <ns>:health (<ns>:<db>:health for a client of a
// database other than 0), that carries "<service> <id> <state>"
// whenever an instance's shared status changes.
//
// Every interval each process that uses a service heartbeats into its
// member set, prunes members silent for 3 intervals, and reads the members
// and the hash (one script). An instance is probed by the two members that
// rendezvous hashing ranks highest for it; the others apply the results
// they read and the changes they receive. A process that checks only its
// own router instances of a service (it does not look the service up) reads
// without joining, and leaves if it had joined: it checks nothing else, and
// as a member it was handed other instances, which went unchecked. A prober
// folds its result into the shared state with a compare-and-set, so both
// probers' results feed one state machine (3 failures from either make the
// instance unhealthy). When Redis fails, each process probes every instance
// itself and keeps its results to itself until Redis is back.

// syncScript heartbeats ARGV[1] (unless empty) into the member set KEYS[1]
// at ARGV[2] ms, or else removes ARGV[5] (unless empty) from it, prunes
// members older than ARGV[3] ms, and returns the members and the shared
// states in KEYS[2].
//
// A key of another type (a string, a list: not the library's) is corrupt
// data, deleted when its first command answers WRONGTYPE (the prune is
// first, before the heartbeat, which it leaves alone): kept, it failed
// every sync of the service, and every process probed every instance
// itself for as long as the key lived (for good: it had no expiry).
var syncScript = redis.NewScript(`
local function typed(cmd, key, ...)
  local v = redis.pcall(cmd, key, ...)
  if type(v) == 'table' and v.err then
    if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
      error(v) -- as redis.call raises it
    end
    redis.call('DEL', key)
    return redis.call(cmd, key, ...)
  end
  return v
end
typed('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
elseif ARGV[5] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[5])
end
return {redis.call('ZRANGE', KEYS[1], 0, -1), typed('HGETALL', KEYS[2])}
`)

// casScript sets field ARGV[1] of KEYS[1] to ARGV[3] if it holds ARGV[2]
// (” for absent), refreshing the expiry (ARGV[4] ms); otherwise it returns
// what the field holds.
var casScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then cur = '' end
if cur ~= ARGV[2] then return {0, cur} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, ''}
`)

var errRedisDown = errors.New("redis down")

// sharer shares one Registry's health results through Redis.
type sharer struct {
	r       *Registry
	m       *monitor
	rdb     redis.UniversalClient
	channel string

	// lastRead holds, by service, when its shared states were last read
	// (Unix ns): refresh reads them at most once an interval. An entry an
	// interval old says nothing any more, and scan prunes it (prune).
	lastRead sync.Map
	failing  atomic.Bool
	corrupt  atomic.Uint64 // shared states or messages that did not decode
}

func newSharer(r *Registry, m *monitor) *sharer {
	return &sharer{r: r, m: m, rdb: r.opts.redisCmd, channel: redisChannel(r.opts.namespace, "health", r.opts.rdb)}
}

func (s *sharer) healthKey(service string) string {
	return s.r.opts.namespace + ":health:{" + service + "}"
}

func (s *sharer) membersKey(service string) string {
	return s.r.opts.namespace + ":hmembers:{" + service + "}"
}

// memberTTL is how long a process stays a member of a service without a
// heartbeat.
func (s *sharer) memberTTL(sm *svcMon) time.Duration { return 3 * sm.interval }

// stateTTL is how long a service's shared states outlive their last write.
func stateTTL(interval time.Duration) time.Duration { return 6 * interval }

// up reports whether Redis is believed reachable (the L2's breaker).
func (s *sharer) up() bool { return s.r.l2 == nil || s.r.l2.Up() }

// note logs sharing failing and coming back, once each.
func (s *sharer) note(err error) {
	if err == nil {
		if s.failing.CompareAndSwap(true, false) {
			s.r.log.Info("discovery: sharing health results through redis again")
		}
		return
	}
	if s.r.ctx.Err() != nil {
		return
	}
	if s.failing.CompareAndSwap(false, true) {
		s.r.log.Warn("discovery: sharing health results through redis failed; probing every instance here", zap.Error(err))
	}
}

func (s *sharer) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.r.opts.redisTO)
}

// failed notes a failed Redis call: logged once, and reported to the L2's
// breaker unless the caller gave up.
func (s *sharer) failed(ctx context.Context, err error) {
	s.note(err)
	if s.r.l2 != nil {
		_ = s.r.l2.Failed(ctx, "health", err)
	}
}

// sync heartbeats this process into a service's members if it probes the
// service's instances (join; else it leaves them) and applies the shared
// states.
func (s *sharer) sync(sm *svcMon, now int64, join bool) {
	if !s.up() {
		s.note(errRedisDown)
		return
	}
	ctx, cancel := s.timeout(s.r.ctx)
	defer cancel()
	ms, ttl := now/int64(time.Millisecond), s.memberTTL(sm).Milliseconds()
	beat, leave := s.m.id, ""
	if !join {
		beat, leave = "", s.m.id
	}
	v, err := syncScript.Run(ctx, s.rdb, []string{s.membersKey(sm.name), s.healthKey(sm.name)},
		beat, ms, ms-ttl, ttl, leave).Slice()
	if err != nil {
		s.failed(s.r.ctx, err) // the context before the Redis timeout: that one ending is Redis's failure
		return
	}
	s.note(nil)
	ids, fields := parseSync(v)
	prev := sm.members.Load()
	sm.members.Store(&memberView{ids: ids, at: now})
	if prev == nil || !slices.Equal(prev.ids, ids) {
		s.m.syncedChanged(sm)
	}
	s.apply(ctx, sm.name, sm.interval, fields, now)
}

// refresh reads a service's shared states without joining its members.
func (s *sharer) refresh(ctx context.Context, service string, now int64) {
	interval, _ := s.r.opts.health.timing(service)
	if v, ok := s.lastRead.Load(service); ok && now-v.(int64) < int64(interval) {
		return
	}
	if !s.up() {
		return
	}
	tctx, cancel := s.timeout(ctx)
	defer cancel()
	ms := now / int64(time.Millisecond)
	v, err := syncScript.Run(tctx, s.rdb, []string{s.membersKey(service), s.healthKey(service)}, "", ms, 0, 0, "").Slice()
	if err != nil {
		// At most one attempt an interval, and the L2's breaker hears of
		// it: on a black-holed Redis every Health call paid the Redis
		// timeout, and Overview once per service, with Redis never marked
		// down (1.76 s an Overview of 8 services, measured).
		s.lastRead.Store(service, now)
		if ctx.Err() != nil {
			// The caller gave up first (its cancellation, or its deadline
			// before the Redis timeout): nothing is known of Redis. Noted,
			// it marked sharing as failing, logged a Redis failure and
			// made this process probe every instance until its next sync.
			return
		}
		s.failed(ctx, err)
		return
	}
	_, fields := parseSync(v)
	s.apply(tctx, service, interval, fields, now)
}

// prune forgets the reads of services an interval ago or more, which no
// longer spare a refresh. Kept, lastRead held an entry for every service
// this process had ever checked or asked the Health of, for as long as it
// ran: names that came and went (one per deployment, tenant or job) piled
// up behind the monitor, which drops the services no longer used.
func (s *sharer) prune(now int64) {
	s.lastRead.Range(func(k, v any) bool {
		interval, _ := s.r.opts.health.timing(k.(string))
		if now-v.(int64) >= int64(interval) {
			s.lastRead.CompareAndDelete(k, v)
		}
		return true
	})
}

// parseSync splits the sync script's answer into the member IDs (sorted)
// and the flat field/value list of the shared states.
func parseSync(v []any) (ids, fields []string) {
	if len(v) != 2 {
		return nil, nil
	}
	if ms, ok := v[0].([]any); ok {
		for _, x := range ms {
			if id, ok := x.(string); ok && health.ValidProcessID(id) {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	if fs, ok := v[1].([]any); ok {
		for _, x := range fs {
			f, _ := x.(string)
			fields = append(fields, f)
		}
	}
	return ids, fields
}

// apply adopts the shared states of a service's instances that this process
// knows, and deletes states of instances long gone.
func (s *sharer) apply(ctx context.Context, service string, interval time.Duration, fields []string, now int64) {
	r := s.r
	st := r.stateIfAny(service)
	var e *entry
	if x := r.l1.get(service); x != nil && x.raw != nil {
		e = x
	}
	var stale []string
	for i := 0; i+1 < len(fields); i += 2 {
		id, raw := fields[i], fields[i+1]
		hs, err := health.Decode(raw)
		if err != nil || hs.Seq <= 0 || core.ValidateInstanceID(id) != nil {
			s.corrupt.Add(1) // a prober overwrites it at its next check
			continue
		}
		if r.checksOff(service, id) {
			continue
		}
		var is *instState
		if st != nil {
			is = st.inst(id)
		}
		if is == nil && r.liveInstance(service, id) != nil {
			st = r.state(service)
			is = st.instOrNew(id)
		}
		if is != nil {
			r.adoptShared(st, is, hs, raw)
			continue
		}
		if l, ok := hs.Latest(); e != nil && e.raw.Instance(id) == nil && (!ok || now-l.At > int64(stateTTL(interval))) {
			stale = append(stale, id)
		}
	}
	s.lastRead.Store(service, now)
	if len(stale) > 0 {
		_ = s.rdb.HDel(ctx, s.healthKey(service), stale...).Err()
	}
}

// record folds one check result into an instance's shared state and
// announces a change of status to every process. stale reports whether
// what the check probed has changed since it began (see applyLocal).
func (s *sharer) record(sm *svcMon, st *svcState, is *instState, c health.Check, stale func() bool) {
	// The instance left while it was checked: the result is of no state
	// lookups read (see applyLocal). Written, it became the shared state of
	// the instance back with the same ID, in every process. The same goes
	// for a check of an address the instance has left.
	if !s.r.held(st, is) || stale() {
		return
	}
	if !s.up() {
		s.note(errRedisDown)
		s.r.applyLocalIf(st, is, c, stale)
		return
	}
	ctx, cancel := s.timeout(s.r.ctx)
	defer cancel()
	key, ttl := s.healthKey(sm.name), stateTTL(sm.interval).Milliseconds()
	is.hmu.Lock()
	local, expected := is.health.state(), is.health.raw
	is.hmu.Unlock()
	base := local
	for range 4 {
		next := base.Clone()
		next.Apply(c, s.m.th)
		next.Seq, next.By = nextSeq(max(base.Seq, local.Seq), c.At), s.m.id
		enc := health.Encode(&next)
		v, err := casScript.Run(ctx, s.rdb, []string{key}, is.id, expected, enc, ttl).Slice()
		if err != nil {
			s.failed(s.r.ctx, err) // counted, and the breaker hears of it, as for a sync (the context before the Redis timeout)
			s.r.applyLocalIf(st, is, c, stale)
			return
		}
		if len(v) != 2 {
			s.note(nil)
			s.r.applyLocalIf(st, is, c, stale)
			return
		}
		s.note(nil)
		if n, _ := v[0].(int64); n == 1 {
			if _, moved := s.r.adoptSharedIf(st, is, next, enc, stale); moved {
				s.unwrite(ctx, key, ttl, st, is, next, enc)
				return
			}
			if next.Status != base.Status {
				_ = s.rdb.Publish(ctx, s.channel, health.EncodeMessage(sm.name, is.id, &next)).Err()
			}
			return
		}
		// another prober wrote first: start again from what it wrote, unless
		// this process holds a newer state (written while Redis was away)
		expected, _ = v[1].(string)
		base = local
		if hs, err := health.Decode(expected); err == nil && hs.Seq > local.Seq {
			base = hs
		}
	}
	s.r.applyLocalIf(st, is, c, stale)
}

// forget replaces an instance's shared state, if it still is raw, by the
// state of an instance never checked (see monitor.forget).
func (s *sharer) forget(sm *svcMon, st *svcState, is *instState, raw string) {
	if !s.up() {
		return
	}
	old, err := health.Decode(raw)
	if err != nil {
		return
	}
	ctx, cancel := s.timeout(s.r.ctx)
	defer cancel()
	s.unwrite(ctx, s.healthKey(sm.name), stateTTL(sm.interval).Milliseconds(), st, is, old, raw)
}

// unwrite replaces the shared state enc (written.Seq) by the state of an
// instance never checked, unless another process wrote since: enc is a
// verdict of what the instance no longer is (the address it moved from,
// checks now off), which the change forgot in every process, and which,
// left in Redis, every process adopted again. Here enc is the result of a
// check that landed after the move (record), or what the move found there
// (forget).
func (s *sharer) unwrite(ctx context.Context, key string, ttl int64, st *svcState, is *instState, written health.State, enc string) {
	fresh := health.New()
	fresh.Seq, fresh.By = nextSeq(written.Seq, s.r.clock.Now().UnixNano()), s.m.id
	fenc := health.Encode(&fresh)
	v, err := casScript.Run(ctx, s.rdb, []string{key}, is.id, enc, fenc, ttl).Slice()
	if err != nil {
		s.failed(s.r.ctx, err)
		return
	}
	if len(v) == 2 {
		if n, _ := v[0].(int64); n == 1 {
			s.r.adoptShared(st, is, fresh, fenc)
		}
	}
}

// listen applies the changes other processes announce, until Close. Every
// (re)subscription rereads every service's shared states: messages may have
// been lost. It reads the subscription as the change channel does
// (rediscache.Listen): a connection that went silent without being closed
// (a partition, a crashed host) is replaced within seconds, where go-redis's
// Channel, read here before, kept it deaf for as long as the kernel kept it,
// and other processes' status changes arrived only with this process's
// syncs, an interval apart.
//
// Close closes the subscription at once: go-redis ends a read on its
// deadline, not on its context's cancellation, and Close waited for the
// read under way until a pong came (a second or more on a quiet channel)
// or, on a Redis that stopped answering, until the silence deadline (about
// 4 s), past a shorter WithCloseTimeout.
func (s *sharer) listen() {
	ps := rediscache.Subscribe(s.r.ctx, s.rdb, s.channel) // nil only once closed
	if ps == nil {
		return
	}
	stop := context.AfterFunc(s.r.ctx, func() { _ = ps.Close() })
	defer func() {
		if stop() {
			_ = ps.Close()
		}
	}()
	rediscache.Listen(s.r.ctx, ps, s.channel, s.r.opts.redisTO, func() {
		s.m.resync.Store(true)
		s.m.poke()
	}, nil, s.onMessage)
}

func (s *sharer) onMessage(payload string) {
	service, id, hs, err := health.DecodeMessage(payload)
	if err != nil || hs.Seq <= 0 {
		s.corrupt.Add(1)
		return
	}
	r := s.r
	st := r.stateIfAny(service)
	if st == nil || r.checksOff(service, id) {
		return // a service this process does not use, or no verdict to take
	}
	is := st.inst(id)
	if is == nil {
		if r.liveInstance(service, id) == nil {
			return
		}
		is = st.instOrNew(id)
	}
	r.adoptShared(st, is, hs, payload[len(service)+len(id)+2:])
}

// leaveAsync removes this process from a service's members, so that the
// others take its instances over at once.
func (s *sharer) leaveAsync(service string) {
	s.m.busy.Add(1)
	s.m.jobs.Add(1)
	if !s.r.spawn(func() {
		defer s.m.busy.Add(-1)
		s.leave(service)
	}) {
		s.m.busy.Add(-1)
	}
}

// leave removes this process from a service's members.
func (s *sharer) leave(service string) {
	ctx, cancel := s.timeout(s.r.ctx)
	defer cancel()
	_ = s.rdb.ZRem(ctx, s.membersKey(service), s.m.id).Err()
}

// leave removes this process from every service's members, within d;
// Close calls it after the monitor stopped.
func (m *monitor) leave(d time.Duration) {
	if m == nil || m.share == nil || len(m.svcs) == 0 || !m.share.up() { // nil: New failed before it started
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	pipe := m.share.rdb.Pipeline()
	for name := range m.svcs {
		pipe.ZRem(ctx, m.share.membersKey(name), m.id)
	}
	_, _ = pipe.Exec(ctx)
}

// checksOff reports whether an instance, as this process's L1 holds it, has
// its active checks turned off (Check: CheckNone). Its shared state is
// what its last checks left in Redis, for up to 6 intervals: the monitor
// forgets that verdict at every reload of the service (forgetVerdict), and
// a process that started using the service since adopted it, unhealthy
// say, until its next reload, with no check left to change it.
func (r *Registry) checksOff(service, id string) bool {
	if e := r.l1.get(service); e != nil && e.raw != nil {
		if in := e.raw.Instance(id); in != nil {
			return in.Check == core.CheckNone
		}
	}
	return false
}

// refreshShared reads a service's shared states if this process has not
// lately (Health calls it, so that a dashboard sees results at once).
func (m *monitor) refreshShared(ctx context.Context, service string) {
	if m.share != nil {
		m.share.refresh(ctx, service, m.r.clock.Now().UnixNano())
	}
}
