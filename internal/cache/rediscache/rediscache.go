// Package rediscache is the shared L2: service snapshots in Redis, written
// by a script only forward in revision order and only at the generation
// (Gen) their writer read before its database read, a pub/sub channel that
// carries {service, revision} changes to every process, and a breaker that
// stops callers from waiting on Redis timeouts while it is down.
//
// It works on a single Redis, Sentinel and Cluster alike (a
// redis.UniversalClient): keys carry the service name as a hash tag, so a
// service's keys (its snapshot, its generation) share one Cluster slot, and
// every script and multi-key command touches the keys of one service only.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
)

// setScript writes ARGV[1] to KEYS[1] unless the service was invalidated
// since the writer read its generation, before its database read (KEYS[2],
// the generation, no longer holds ARGV[3]; "" for none): it returns 2 then.
// Else it writes unless the key holds a value whose header sorts after it
// (a newer revision, or the same revision read later): 0 then. A value of
// the same revision that claims a read later than the writer's clock reads
// now (ARGV[4], the header's load-time field) was read by a clock ahead of
// the writer's, and is replaced: kept, it stood for its whole TTL against
// every correct clock's read of that revision, and was served (once its
// claimed read time had passed) after leases in it had ended. A value whose
// header is not 40 digits is no snapshot of any release (another program's
// value, garbage) and is replaced too: compared as a header, one such as
// "hello, ..." sorted after every revision (letters after digits) and held
// off every write for as long as it lived.
//
// Either key holding another type than a string (a hash, a list: not the
// library's) is corrupt data, and deleted first, found by the GET's
// WRONGTYPE (no command beyond those the writes already need); a
// generation of another type is then none, as MGET read it. Kept, every
// command on it answered WRONGTYPE, and every write of the service failed
// for as long as it lived (for good: nothing gave it an expiry). The
// script returns its answer and how many keys it deleted so.
//
// A SET that Redis refuses (out of memory under maxmemory's noeviction,
// which refuses SET but not DEL) deletes the older snapshot the key held,
// and the script fails with the refusal: kept, that snapshot went on
// serving every process that did not hold the service (for up to a lease
// TTL) while the database held the newer one. Where Redis refuses the
// DEL too (a read-only replica), the caller's retry, once Redis takes
// writes (AwaitWrites), replaces it.
var setScript = redis.NewScript(`
local foreign = 0
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then
    if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
      error(v) -- as redis.call raises it
    end
    redis.call('DEL', key)
    foreign = foreign + 1
    return false
  end
  return v
end
if (get(KEYS[2]) or '') ~= ARGV[3] then
  return {2, foreign}
end
local cur = get(KEYS[1])
if cur and string.len(cur) >= 42 and string.find(string.sub(cur, 3, 42), '^%d+$') and
  string.sub(cur, 3, 42) > string.sub(ARGV[1], 3, 42) and
  not (string.sub(cur, 3, 22) == string.sub(ARGV[1], 3, 22) and string.sub(cur, 23, 42) > ARGV[4]) then
  return {0, foreign}
end
local set = redis.pcall('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if type(set) == 'table' and set.err then
  if cur then
    redis.pcall('DEL', KEYS[1])
  end
  error(set)
end
return {1, foreign}
`)

// invalidateScript deletes the snapshot KEYS[1] and gives the service a new
// generation KEYS[2] (ARGV[1], for ARGV[2] ms), in one step: no write of a
// snapshot read from the database before it lands after it.
var invalidateScript = redis.NewScript(`
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
`)

// dropScript deletes a key only if it still holds ARGV[1]: a reader removes
// a corrupt value, and a writer the snapshot it wrote (Delete), without
// racing another writer that just replaced it.
var dropScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// dropOlderScript deletes KEYS[1] if it holds a snapshot whose header
// sorts before ARGV[1]'s (an older revision, or the same one read
// earlier), as setScript compares them: a writer whose snapshot was too
// slow to write (ErrTooSlow) drops what it would have replaced, with a
// command of a few bytes; a newer snapshot stays.
var dropOlderScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 3, 42) < string.sub(ARGV[1], 3, 42) then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// probeScript is Start's check of the scripts every write runs: a read and
// a delete, as dropScript's, of a key no service has. The delete is a
// write, which a read-only replica refuses (READONLY): taken, such a
// client failed every snapshot write, each failure tripping the breaker
// that takes Redis out of the read path.
var probeScript = redis.NewScript(`
redis.call('GET', KEYS[1])
return redis.call('DEL', KEYS[1])
`)

// writeProbeScript is the write probe's (AwaitWrites): a write of a key in
// the Cluster slot of the service whose write Redis refused, by a script
// as every snapshot write is, so that it is refused as that write was (out
// of memory under maxmemory, a read-only replica, CLUSTERDOWN, an ACL
// without EVAL or the namespace's keys). It expires at once.
var writeProbeScript = redis.NewScript(`
return redis.call('SET', KEYS[1], '', 'PX', 1)
`)

// Options configure a Cache.
type Options struct {
	// Namespace prefixes every key and the channel.
	Namespace string
	// Channel is the pub/sub channel of changes (Namespace+"changes" if
	// empty). Channels are not per database: clients of different
	// databases of one server need different ones.
	Channel string
	// TTL of snapshots, jittered by +-10%.
	TTL time.Duration
	// Timeout bounds each Redis call.
	Timeout time.Duration
	// ProbeInterval is how often a down Redis is probed.
	ProbeInterval time.Duration
	// Log receives state changes (lost, back).
	Log *zap.Logger
	// OnChange is called for every change received on the channel, with
	// the snapshot the writer pushed along with it, still encoded: most
	// processes do not hold a given service, and decoding its snapshot
	// cost each of them more than the rest of the message (Pushed.Decode).
	OnChange func(ch core.Change, force bool, pushed Pushed)
	// OnResync is called on every (re)subscription and when Redis comes back:
	// changes may have been missed.
	OnResync func()
	// OnWritable is called when Redis takes a write and a publication
	// again after AwaitWrites: it had answered them with an error reply.
	OnWritable func()
	// Now is the clock snapshots' load times are read with (time.Now if
	// nil): a write replaces a snapshot of the same revision that claims a
	// read after it (see setScript).
	Now func() time.Time
}

// Stats counts what the cache did. Hits, Misses, DecodeErrors and
// VersionMisses count reads; PushedDecodeErrors counts snapshots pushed
// with change messages that did not decode (no read, so no miss), and
// BadMessages change messages whose announcement did not parse (dropped).
type Stats struct {
	Hits, Misses, Errors, DecodeErrors, VersionMisses, Writes, StaleWrites, Published, Received, Trips uint64
	PushedDecodeErrors, BadMessages                                                                    uint64
	// SlowWrites and SlowReads count snapshot writes and reads that failed
	// with ErrTooSlow (also in Errors).
	SlowWrites, SlowReads uint64
}

// Cache is the L2. Start launches its goroutines; Close stops them.
type Cache struct {
	rdb     redis.UniversalClient
	opt     Options
	channel string

	down    atomic.Bool
	probing atomic.Bool
	// writeProbing says a write probe runs (AwaitWrites).
	writeProbing atomic.Bool
	// writeProbePassed is when the last write probe passed (Now, unix ns),
	// 0 once a snapshot write has landed since: an AwaitWrites soon after
	// it follows a write refused although the probe's was taken, and
	// backs off (writeBackoff, under mu).
	writeProbePassed atomic.Int64
	writeBackoff     int
	// writeAwaited holds the services in whose Cluster slots the write
	// probe writes (AwaitWrites; under mu).
	writeAwaited map[string]struct{}

	hits, misses, errs, decodeErrs, versionMisses, writes, staleWrites, published, received, trips atomic.Uint64
	slowWrites, slowReads                                                                          atomic.Uint64 // calls that failed with ErrTooSlow
	unusable                                                                                       atomic.Uint64 // hits the caller could not serve
	pushedErrs                                                                                     atomic.Uint64 // pushed snapshots that did not decode
	badMsgs                                                                                        atomic.Uint64 // change messages that did not parse

	// subscription is this Cache's subscription to the channel as Redis
	// last confirmed it: a number for each confirmation, 0 once a read
	// failed (the connection is dropped, and Redis no longer counts it).
	subscription  atomic.Uint64
	subscriptions uint64 // the confirmations so far; Listen's goroutine only

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	ps     *redis.PubSub
}

// New returns a Cache on rdb. It does not close rdb.
func New(rdb redis.UniversalClient, opt Options) *Cache {
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	if opt.Channel == "" {
		opt.Channel = opt.Namespace + "changes"
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{rdb: rdb, opt: opt, channel: opt.Channel, ctx: ctx, cancel: cancel}
}

// Key returns the Redis key of a service's snapshot. The braces make the
// service name the Cluster hash tag.
func (c *Cache) Key(service string) string { return c.opt.Namespace + "svc:{" + service + "}" }

// GenKey returns the Redis key of a service's generation (see Gen), in the
// Cluster slot of its snapshot's key.
func (c *Cache) GenKey(service string) string { return c.opt.Namespace + "gen:{" + service + "}" }

// A Gen is a service's generation in Redis, as a writer read it before it
// read the service from the database: Invalidate gives the service a new
// one, and a snapshot write (Set, SetEncoded) lands only while Redis still
// holds the generation its writer read. The revision cannot tell that a
// snapshot was read before an Invalidate: an Invalidate is for changes
// made behind the library's back, which may not move it. Without the
// generation, a process whose database read came before another process's
// Invalidate, and its Redis write after, put back what was read before,
// and every process served it for an L2 TTL.
//
// The zero Gen is "none": the service was not invalidated within
// GenerationTTL (or the key was lost), its own value, which differs from
// every generation Invalidate gives. Each generation is a random token, not
// a counter: a counter whose key expired starts again at the same number,
// and a write that read that number before the expiry would land after an
// Invalidate that brought it back.
type Gen string

// GenerationTTL is how long a service's generation lives after an
// Invalidate, unless Options.TTL is longer. It need only outlive a write
// that read the generation before the Invalidate (the generation is read
// before a database read, and the write follows within load and Redis
// timeouts): once it has expired, a write that read it is refused (the
// generation is then none), and one that read none before it and lands
// now would have to have waited that long. An hour is far past that, and
// a key per service invalidated within the hour costs Redis nothing.
const GenerationTTL = time.Hour

// ErrInvalidated is returned by a snapshot write refused because the
// service was invalidated since its writer read the generation.
var ErrInvalidated = errors.New("discovery: service invalidated since the snapshot was read")

// ErrTooSlow is returned by a read of a snapshot, or a write of a large
// one (over MaxPushed), that timed out while Redis still answers a ping:
// the link is too slow for the snapshot, and Redis is not down. The
// breaker is not tripped: tripped, every other call skipped Redis, the
// probe brought it back within a ProbeInterval (a resync), the writer
// wrote the snapshot through again and every process read it again, and
// it tripped again, a store read and a resync each time, for as long as
// the snapshot stayed that large.
var ErrTooSlow = errors.New("discovery: redis did not take the snapshot within the timeout, though it answers")

// Channel returns the pub/sub channel of changes.
func (c *Cache) Channel() string { return c.channel }

// Up reports whether Redis is believed reachable.
func (c *Cache) Up() bool { return !c.down.Load() }

// Stats returns counters. A snapshot the caller could not use (Unusable)
// counts as a miss, not a hit.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load() + c.unusable.Load(), Errors: c.errs.Load(), DecodeErrors: c.decodeErrs.Load(),
		VersionMisses: c.versionMisses.Load(), Writes: c.writes.Load(), StaleWrites: c.staleWrites.Load(),
		Published: c.published.Load(), Received: c.received.Load(), Trips: c.trips.Load(),
		PushedDecodeErrors: c.pushedErrs.Load(), BadMessages: c.badMsgs.Load(), SlowWrites: c.slowWrites.Load(), SlowReads: c.slowReads.Load(),
	}
}

// failed records err from a Redis call: anything but a miss, the caller's
// own cancellation or an error Redis answered with trips the breaker.
func (c *Cache) failed(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && c.ctx.Err() == nil {
		// The caller gave up, or its own deadline came first: Redis is
		// not to blame (the cache's timeout bounds a context derived
		// from ctx, so ctx itself ends only at the caller's will).
		return ctx.Err()
	}
	c.errs.Add(1)
	// An error reply (WRONGTYPE on one key, OOM, READONLY) came back at
	// once from a Redis that is up: nobody waits on it, and a tripped
	// breaker would drop the change message sent after a failed write.
	var reply redis.Error
	if !errors.As(err, &reply) && c.down.CompareAndSwap(false, true) {
		c.trips.Add(1)
		c.opt.Log.Warn("discovery: redis lost; serving from memory and the database", zap.String("op", op), zap.Error(err))
		c.startProbe()
	}
	return &core.BackendError{Backend: "redis", Op: op, Err: err}
}

// Failed records the failure of a Redis call made beside the cache (the
// Registry shares health results through the same Redis): a Redis that
// stopped answering them is down for the cache too, and callers stop
// waiting on it until the probe brings it back.
func (c *Cache) Failed(ctx context.Context, op string, err error) error {
	return c.failed(ctx, op, err)
}

func (c *Cache) startProbe() {
	// Checked and counted under mu, which Close cancels under: a failure
	// met as Close ran (its own cancellation ends the calls under way)
	// found the cache open, and added to wg while Close waited on it at
	// zero, which WaitGroup forbids, and the probe started after Close.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil || !c.probing.CompareAndSwap(false, true) {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(c.opt.ProbeInterval)
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(c.ctx, c.opt.Timeout)
			err := c.ping(ctx)
			cancel()
			if err == nil {
				// probing is cleared before down, and not again on the
				// way out: a failure that trips the breaker again once
				// down is cleared starts the next probe (refused while
				// probing was still set, it left the breaker open for
				// good), and that probe's flag stays set.
				c.probing.Store(false)
				c.down.Store(false)
				c.opt.Log.Info("discovery: redis back")
				if c.opt.OnResync != nil {
					c.opt.OnResync()
				}
				return
			}
		}
	}()
}

// maxWriteProbeInterval bounds the back-off of a write probe whose passes
// are each followed by a refused write (AwaitWrites).
const maxWriteProbeInterval = 30 * time.Second

// maxWriteProbeKeys bounds the slots a write probe writes in on a Cluster
// (AwaitWrites): one a service refused, until one takes writes.
const maxWriteProbeKeys = 16

// AwaitWrites starts, unless one runs, a probe that writes and publishes
// once a ProbeInterval until Redis takes both, then calls OnWritable. The
// caller's write of service (a snapshot, or its change message) was
// answered with an error reply: Redis is up (the breaker stays closed,
// reads go on), but refuses writes, and nothing else tells when it takes
// them again. The probe writes in the Cluster slot of each service it was
// asked for (up to maxWriteProbeKeys), and once one takes the write
// publishes an empty message (which every process ignores) on the channel. A probe
// asked for again soon after one passed (no snapshot write landed in
// between) waits twice as long as the last, up to maxWriteProbeInterval.
func (c *Cache) AwaitWrites(service string) {
	c.mu.Lock() // as startProbe
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	// Each service's slot: on a Cluster each master refuses writes on its
	// own (one out of memory, one a replica just promoted), and a probe of
	// the first service's slot alone left a change refused by another
	// master, which took writes again, unannounced for as long as the
	// first one refused them. One key is enough elsewhere.
	_, cluster := c.rdb.(*redis.ClusterClient)
	_, ring := c.rdb.(*redis.Ring)
	if _, ok := c.writeAwaited[service]; !ok && (len(c.writeAwaited) == 0 || (cluster || ring) && len(c.writeAwaited) < maxWriteProbeKeys) {
		if c.writeAwaited == nil {
			c.writeAwaited = map[string]struct{}{}
		}
		c.writeAwaited[service] = struct{}{}
	}
	if !c.writeProbing.CompareAndSwap(false, true) {
		return // the probe under way writes in service's slot too
	}
	// Redis took the last probe's write, then refused the caller's again
	// (a snapshot too large for the memory left under maxmemory, whose
	// own size counts, where the probe's few bytes fit): probed every
	// ProbeInterval, each pass was a database read and a refused write
	// every 250 ms, and a warning, for as long as Redis stayed so full.
	// Each such round waits twice as long as the last, up to
	// maxWriteProbeInterval; a snapshot write that lands starts afresh.
	// Soon: within the longest wait. Later, or after a write landed, it
	// is a refusal of its own, warned of and probed at once.
	if at := c.writeProbePassed.Swap(0); at != 0 && c.opt.Now().Sub(time.Unix(0, at)) < maxWriteProbeInterval {
		c.writeBackoff++
	} else {
		c.writeBackoff = 0
	}
	again := c.writeBackoff > 0
	interval := c.opt.ProbeInterval
	for range c.writeBackoff {
		if interval >= maxWriteProbeInterval {
			break
		}
		interval *= 2
	}
	interval = max(min(interval, maxWriteProbeInterval), c.opt.ProbeInterval)
	if again {
		c.opt.Log.Debug("discovery: redis refuses writes again after taking the probe's", zap.String("service", service), zap.Duration("next probe", interval))
	} else {
		c.opt.Log.Warn("discovery: redis refuses writes; changes announced once it takes them", zap.String("service", service))
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			if c.down.Load() {
				continue // the breaker's probe brings it back first
			}
			c.mu.Lock()
			keys := make([]string, 0, len(c.writeAwaited))
			for service := range c.writeAwaited {
				keys = append(keys, c.opt.Namespace+"probe:{"+service+"}")
			}
			c.mu.Unlock()
			ctx, cancel := context.WithTimeout(c.ctx, c.opt.Timeout)
			err := errors.New("no write taken")
			for _, key := range keys { // the first slot that takes writes
				if err = writeProbeScript.Run(ctx, c.rdb, []string{key}).Err(); err == nil {
					break
				}
			}
			if err == nil {
				err = c.rdb.Publish(ctx, c.channel, "").Err()
			}
			cancel()
			if err == nil {
				// Cleared before OnWritable: a write refused after it
				// starts the next probe, and its caller's change, kept
				// before it asked, is seen by this OnWritable or that one's.
				c.mu.Lock()
				c.writeAwaited = nil
				c.writeProbePassed.Store(c.opt.Now().UnixNano())
				c.writeProbing.Store(false)
				c.mu.Unlock()
				if again {
					c.opt.Log.Debug("discovery: redis takes the probe's write again")
				} else {
					c.opt.Log.Info("discovery: redis takes writes again")
				}
				if c.opt.OnWritable != nil {
					c.opt.OnWritable()
				}
				return
			}
		}
	}()
}

// ping asks Redis whether it answers: on a Cluster, every master; on a
// Ring, every shard it holds up. A PING
// names no key, so a Cluster client sends it to a node at random: one
// master that stopped answering tripped the breaker, and a probe that
// reached another closed it again, and again, for as long as it was out.
func (c *Cache) ping(ctx context.Context) error {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Ping(ctx).Err()
		})
	}
	if ring, ok := c.rdb.(*redis.Ring); ok {
		// As on a Cluster: every shard the Ring holds up (the others'
		// keys go elsewhere), not one at random, which answered for a
		// shard that did not.
		return ring.ForEachShard(ctx, func(ctx context.Context, shard *redis.Client) error {
			return shard.Ping(ctx).Err()
		})
	}
	return c.rdb.Ping(ctx).Err()
}

func (c *Cache) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opt.Timeout)
}

// Get returns the snapshot of service, or (nil, nil) on a miss: absent, a
// marker, another format version, or undecodable (counted), and the
// service's generation (see GetIfChanged). It returns an error only when
// Redis failed, and at once (ErrUnavailable) while it is down.
func (c *Cache) Get(ctx context.Context, service string) (*core.Service, time.Time, Gen, error) {
	svc, at, _, gen, err := c.GetIfChanged(ctx, service, -1, -1)
	if svc != nil {
		c.Hit()
	}
	return svc, at, gen, err
}

// Held is what GetIfChanged learnt of the snapshot Redis holds from its
// header alone, without reading the snapshot.
type Held struct {
	// Same: Redis holds the caller's snapshot.
	Same bool
	// Older: Redis holds a snapshot of a lower revision than the caller's,
	// Revision (GetIfChanged's time is when it was read from the
	// database), unless it is asked for anyway (see GetIfChanged).
	Older    bool
	Revision int64
}

// Unread reports whether the snapshot was not read (Same or Older): the
// generation was not read with it either.
func (h Held) Unread() bool { return h.Same || h.Older }

// GetIfChanged is Get for a caller that holds the snapshot read from the
// database at haveAt with revision haveRev (-1 for none: a plain Get): if
// Redis holds that same one (the same revision, read at the same time), it
// reports it (Held.Same), having read its header alone (see holds): the
// snapshot is neither sent nor decoded. If Redis holds one of a lower
// revision, it reports that (Held.Older, with its revision, and when it
// was read as at), not reading it either: the caller, which judges from
// the header whether it could use it, reads it with a plain Get if it
// could (which a newer snapshot held replaces in L1 anyway). A caller
// that could not threw tens of KiB away (a service of a thousand
// instances) each refresh while Redis held an older snapshot than it did:
// its own write of the newer one failed, or had not landed. The caller
// then reports a snapshot found (or held) as a Hit or Unusable.
//
// It also returns the service's generation, read with the snapshot in one
// command: a caller that goes on to the database writes what it reads
// there with it (SetEncoded). It is valid only when err is nil and the
// snapshot was read (not Held.Unread): the header is read alone, and a
// caller that cannot serve the snapshot it holds reads the generation
// (Generation) before it reads the database.
func (c *Cache) GetIfChanged(ctx context.Context, service string, haveRev, haveAt int64) (svc *core.Service, at time.Time, held Held, gen Gen, err error) {
	if c.down.Load() {
		return nil, time.Time{}, Held{}, "", &core.BackendError{Backend: "redis", Op: "get", Err: errors.New("down")}
	}
	if haveRev >= 0 {
		h, err := c.header(ctx, service)
		if err != nil {
			return nil, time.Time{}, Held{}, "", c.readFailed(ctx, err)
		}
		if h == codec.Header(haveRev, haveAt) {
			return nil, time.Unix(0, haveAt), Held{Same: true}, "", nil
		}
		if rev, loaded, herr := codec.ParseHeader(h); herr == nil && rev < haveRev {
			return nil, time.Unix(0, loaded), Held{Older: true, Revision: rev}, "", nil
		}
	}
	tctx, cancel := c.timeout(ctx)
	vals, err := c.rdb.MGet(tctx, c.Key(service), c.GenKey(service)).Result()
	cancel()
	if err == nil && len(vals) != 2 {
		err = errors.New("mget: " + strconv.Itoa(len(vals)) + " values for 2 keys")
	}
	if err != nil {
		return nil, time.Time{}, Held{}, "", c.readFailed(ctx, err)
	}
	// MGET answers nil for a key that is absent or holds another type.
	g, _ := vals[1].(string)
	gen = Gen(g)
	v, ok := vals[0].(string)
	if !ok {
		c.misses.Add(1)
		return nil, time.Time{}, Held{}, gen, nil
	}
	if rev, loaded, herr := codec.ParseHeader(v); herr == nil && rev == haveRev && loaded == haveAt {
		return nil, time.Unix(0, loaded), Held{Same: true}, gen, nil
	}
	svc, at, err = codec.Decode(v)
	switch {
	case errors.Is(err, codec.ErrVersion):
		c.versionMisses.Add(1)
		return nil, time.Time{}, Held{}, gen, nil
	case err == nil && svc.Name != service:
		err = codec.ErrCorrupt
		fallthrough
	case err != nil:
		// Corrupt: count it, and remove it so that the next load can write a
		// good one (a corrupt header could otherwise claim a future revision).
		c.decodeErrs.Add(1)
		c.opt.Log.Debug("discovery: undecodable L2 snapshot", zap.String("service", service), zap.Error(err))
		tctx, cancel := c.timeout(ctx)
		_ = dropScript.Run(tctx, c.rdb, []string{c.Key(service)}, v).Err()
		cancel()
		return nil, time.Time{}, Held{}, gen, nil
	}
	return svc, at, Held{}, gen, nil
}

// header returns the header (codec.Header) of the snapshot of service
// Redis holds, reading that header alone (GETRANGE: some fifty bytes on
// the wire, one command as cheap as a GET); "" for none. A refresh read
// the whole snapshot before (an MGET) to compare its header here and
// throw it away: tens of KiB a refresh for a service of a thousand
// instances, in every process that held it, every freshness window. The
// header is part of the value, so the two cannot disagree, and a value
// of any release compares as it did. Measured against it, on loopback
// against a GET of about 25 µs: a Lua script that compared in Redis and
// sent the snapshot only if it differed cost every refresh 20 µs more at
// the median (the script's call), and the header pipelined with the
// generation's GET 7-10 µs more (the pipeline's own allocations, a second
// command).
//
// A header that is neither the caller's snapshot's nor an older one's
// (GetIfChanged) sends it on to read the snapshot as a plain Get does
// (MGET), a second round trip, which the snapshot it finds costs more
// than anyway. An error reply (GETRANGE refused by an ACL that names the
// commands it grants, a key of another type, which MGET reads as none) is
// no header, and the MGET answers as before; any other error is the
// read's.
func (c *Cache) header(ctx context.Context, service string) (string, error) {
	tctx, cancel := c.timeout(ctx)
	h, err := c.rdb.GetRange(tctx, c.Key(service), 0, codec.HeaderLen-1).Result()
	cancel()
	var reply redis.Error
	if err != nil && !errors.As(err, &reply) {
		return "", err
	}
	if err != nil {
		return "", nil
	}
	return h, nil
}

// readFailed records the failure of a snapshot read (err): a timeout
// while Redis answers a ping is one caller's (ErrTooSlow: a snapshot too
// large for this link in the timeout, its size unknown until read), not
// Redis down for all; anything else goes to failed.
func (c *Cache) readFailed(ctx context.Context, err error) error {
	if c.tooSlow(ctx, err) {
		c.errs.Add(1)
		c.slowReads.Add(1)
		return &core.BackendError{Backend: "redis", Op: "get", Err: fmt.Errorf("%w: %w", ErrTooSlow, err)}
	}
	return c.failed(ctx, "get", err)
}

// Generation reads the generation of service, for a writer that reads the
// service from the database without reading Redis first (a forced load, a
// write-through): read before the database, and passed to the write.
func (c *Cache) Generation(ctx context.Context, service string) (Gen, error) {
	if c.down.Load() {
		return "", &core.BackendError{Backend: "redis", Op: "get generation", Err: errors.New("down")}
	}
	tctx, cancel := c.timeout(ctx)
	g, err := c.rdb.Get(tctx, c.GenKey(service)).Result()
	cancel()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", c.failed(ctx, "get generation", err)
	}
	return Gen(g), nil
}

// Hit and Unusable tell the cache whether the snapshot GetIfChanged found
// served the caller: a hit, or (too old, or older than the revision wanted)
// a miss. GetIfChanged counts neither itself: a read counted as a hit and
// taken back later made Stats' Hits go back between the two.
func (c *Cache) Hit() { c.hits.Add(1) }

// Unusable: see Hit.
func (c *Cache) Unusable() { c.unusable.Add(1) }

// Set writes svc, read from the database at loadedAt, unless Redis holds a
// newer one, or the service was invalidated since gen, its generation read
// before that database read, was read (ErrInvalidated). It reports whether
// it wrote.
func (c *Cache) Set(ctx context.Context, svc *core.Service, loadedAt time.Time, gen Gen) (bool, error) {
	return c.set(ctx, svc.Name, string(codec.Encode(svc, loadedAt)), gen)
}

// SetEncoded is Set of a snapshot of service already encoded (codec.Encode).
func (c *Cache) SetEncoded(ctx context.Context, service string, enc []byte, gen Gen) (bool, error) {
	return c.set(ctx, service, string(enc), gen)
}

func (c *Cache) set(ctx context.Context, service, val string, gen Gen) (bool, error) {
	if c.down.Load() {
		return false, &core.BackendError{Backend: "redis", Op: "set", Err: errors.New("down")}
	}
	ttl := c.opt.TTL + time.Duration((rand.Float64()*0.2-0.1)*float64(c.opt.TTL))
	tctx, cancel := c.timeout(ctx)
	// Redis refuses an expiry of 0 ms: a TTL under a millisecond is one.
	res, err := setScript.Run(tctx, c.rdb, []string{c.Key(service), c.GenKey(service)}, val, max(ttl.Milliseconds(), 1), string(gen),
		codec.LoadedAtField(c.opt.Now().UnixNano())).Int64Slice()
	cancel()
	if err == nil && len(res) != 2 {
		err = errors.New("set: " + strconv.Itoa(len(res)) + " values for 2")
	}
	if err != nil && len(val) > MaxPushed && c.tooSlow(ctx, err) {
		c.errs.Add(1)
		c.slowWrites.Add(1)
		return false, &core.BackendError{Backend: "redis", Op: "set", Err: fmt.Errorf("%w (%d bytes): %w", ErrTooSlow, len(val), err)}
	}
	if err != nil {
		return false, c.failed(ctx, "set", err)
	}
	if res[1] > 0 {
		c.decodeErrs.Add(uint64(res[1]))
		c.opt.Log.Debug("discovery: L2 key of another type deleted", zap.String("service", service))
	}
	switch res[0] {
	case 0:
		c.staleWrites.Add(1)
		return false, nil
	case 2:
		c.staleWrites.Add(1)
		return false, ErrInvalidated
	}
	c.writes.Add(1)
	c.writeProbePassed.Store(0) // a write landed: the next refusal is probed at once
	return true, nil
}

// tooSlow reports whether err, that of a call that carried a snapshot, is
// a timeout while Redis answers a ping on the same link (bounded by the
// timeout too): the snapshot, not Redis, was the trouble. A Redis that
// does not answer the ping is down, and the caller trips the breaker
// (failed), having waited two timeouts instead of one; one that refuses
// connections is down at once, without a ping.
func (c *Cache) tooSlow(ctx context.Context, err error) bool {
	var nerr net.Error
	timedOut := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout()
	if !timedOut || ctx.Err() != nil || c.ctx.Err() != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(c.ctx, c.opt.Timeout)
	defer cancel()
	// Every master of a Cluster, as the breaker's probe asks: a PING sent
	// to a node at random answered for a master that did not.
	return c.ping(pctx) == nil
}

// DropOlder deletes the snapshot of service if it is older than enc (a
// snapshot of it, codec.Encode; only its header is sent): for a writer
// whose write of enc failed with ErrTooSlow, so that the snapshot it would
// have replaced does not serve the processes that did not hear of the
// change.
func (c *Cache) DropOlder(ctx context.Context, service string, enc []byte) error {
	if c.down.Load() {
		return &core.BackendError{Backend: "redis", Op: "drop older", Err: errors.New("down")}
	}
	tctx, cancel := c.timeout(ctx)
	err := dropOlderScript.Run(tctx, c.rdb, []string{c.Key(service)}, string(enc[:min(len(enc), codec.HeaderLen)])).Err()
	cancel()
	if err != nil {
		return c.failed(ctx, "drop older", err)
	}
	return nil
}

// Delete removes the snapshot of service if Redis still holds enc, the
// one its caller wrote (Set, SetEncoded), in one script: a snapshot that
// another process wrote since (newer, or read after an Invalidate) stays.
// A DEL removed whatever was there by then, and a write of an older
// snapshot, which the newer one had refused, landed in its place.
func (c *Cache) Delete(ctx context.Context, service string, enc []byte) error {
	if c.down.Load() {
		return &core.BackendError{Backend: "redis", Op: "delete", Err: errors.New("down")}
	}
	tctx, cancel := c.timeout(ctx)
	err := dropScript.Run(tctx, c.rdb, []string{c.Key(service)}, string(enc)).Err()
	cancel()
	if err != nil {
		return c.failed(ctx, "delete", err)
	}
	return nil
}

// Invalidate removes the snapshot of service and gives it a new generation,
// in one script: a snapshot read from the database before it, by any
// process, is refused when its writer tries to write it afterwards.
func (c *Cache) Invalidate(ctx context.Context, service string) error {
	if c.down.Load() {
		return &core.BackendError{Backend: "redis", Op: "invalidate", Err: errors.New("down")}
	}
	// Random, never "" (none): see Gen.
	gen := "g" + strconv.FormatUint(rand.Uint64(), 36)
	ttl := max(c.opt.TTL, GenerationTTL)
	tctx, cancel := c.timeout(ctx)
	err := invalidateScript.Run(tctx, c.rdb, []string{c.Key(service), c.GenKey(service)}, gen, ttl.Milliseconds()).Err()
	cancel()
	if err != nil {
		return c.failed(ctx, "invalidate", err)
	}
	return nil
}

// Publish announces that service moved to revision; force asks every process
// to reload it from the database whatever revision it holds. A change that
// deleted the service (ch.Gone) says so with the word "gone", which
// versions before it ignore (ParseMessage): they see a change, as before.
func (c *Cache) Publish(ctx context.Context, ch core.Change, force bool) error {
	return c.publish(ctx, message(ch, force))
}

func message(ch core.Change, force bool) string {
	msg := strconv.FormatInt(ch.Revision, 10) + " " + ch.Service
	if force {
		msg += " !"
	}
	if ch.Gone {
		msg += " gone"
	}
	return msg
}

// MaxPipelined is the most change messages PublishAll sends in one
// pipeline, within one Timeout.
const MaxPipelined = 256

// PublishAll announces changes as Publish (not forced) announces each, in
// pipelines of up to MaxPipelined: one round trip for them all, not one
// each. It returns each one's error, nil for those Redis took; a failure
// counts, and trips the breaker, as Publish's does.
func (c *Cache) PublishAll(ctx context.Context, changes []core.Change) []error {
	errs := make([]error, len(changes))
	for i := 0; i < len(changes); i += MaxPipelined {
		batch := changes[i:min(i+MaxPipelined, len(changes))]
		if c.down.Load() {
			for j := range batch {
				errs[i+j] = &core.BackendError{Backend: "redis", Op: "publish", Err: errors.New("down")}
			}
			continue
		}
		tctx, cancel := c.timeout(ctx)
		cmds, _ := c.rdb.Pipelined(tctx, func(p redis.Pipeliner) error {
			for _, ch := range batch {
				p.Publish(tctx, c.channel, message(ch, false))
			}
			return nil
		})
		cancel()
		for j := range batch {
			var err error
			if j < len(cmds) {
				err = cmds[j].Err()
			} else {
				err = errors.New("no reply") // not sent
			}
			if err != nil {
				errs[i+j] = c.failed(ctx, "publish", err)
				continue
			}
			c.published.Add(1)
		}
	}
	return errs
}

// MaxPushed is the largest encoded snapshot a change message carries;
// larger ones are announced only, and read from Redis by who needs them.
const MaxPushed = 8 << 10

// PublishSnapshot announces a change and pushes the snapshot enc
// (codec.Encode) of the service with it, so that every process that holds
// the service can take it from the message instead of reading it from Redis
// (one network hop instead of two). Snapshots over MaxPushed are announced
// only.
func (c *Cache) PublishSnapshot(ctx context.Context, ch core.Change, enc []byte) error {
	msg := strconv.FormatInt(ch.Revision, 10) + " " + ch.Service
	if len(enc) <= MaxPushed {
		msg += "\n" + string(enc)
	}
	return c.publish(ctx, msg)
}

func (c *Cache) publish(ctx context.Context, msg string) error {
	if c.down.Load() {
		return &core.BackendError{Backend: "redis", Op: "publish", Err: errors.New("down")}
	}
	tctx, cancel := c.timeout(ctx)
	err := c.rdb.Publish(tctx, c.channel, msg).Err()
	cancel()
	if err != nil {
		return c.failed(ctx, "publish", err)
	}
	c.published.Add(1)
	return nil
}

// Subscribers returns how many clients subscribe to the change channel, and
// false when that cannot be known (Redis is down). On a Cluster each node
// counts only its own subscribers, and a Ring sends the count's command to
// a random shard, so on both it sums over every node.
func (c *Cache) Subscribers(ctx context.Context) (int64, bool) {
	if c.down.Load() {
		return 0, false
	}
	var forEach func(context.Context, func(context.Context, *redis.Client) error) error
	switch cc := c.rdb.(type) {
	case *redis.ClusterClient:
		forEach = cc.ForEachShard
	case *redis.Ring:
		forEach = cc.ForEachShard
	}
	if forEach != nil {
		tctx, cancel := c.timeout(ctx)
		defer cancel()
		var total atomic.Int64
		err := forEach(tctx, func(ctx context.Context, node *redis.Client) error {
			n, err := node.PubSubNumSub(ctx, c.channel).Result()
			total.Add(n[c.channel])
			return err
		})
		if err != nil {
			_ = c.failed(ctx, "pubsub numsub", err)
			return 0, false
		}
		return total.Load(), true
	}
	tctx, cancel := c.timeout(ctx)
	n, err := c.rdb.PubSubNumSub(tctx, c.channel).Result()
	cancel()
	if err != nil {
		_ = c.failed(ctx, "pubsub numsub", err)
		return 0, false
	}
	return n[c.channel], true
}

// OtherSubscribers returns how many clients other than this Cache subscribe
// to the change channel, and false when that cannot be known (Redis is
// down). This Cache's own subscription is left out only while Redis has
// confirmed it (from before the count to after it): while it is lost (a
// dropped connection, a subscription that cannot be made again), Redis does
// not count it, and taking one subscriber for itself took another process,
// which had been sent every change, for nobody.
func (c *Cache) OtherSubscribers(ctx context.Context) (int64, bool) {
	before := c.subscription.Load()
	n, ok := c.Subscribers(ctx)
	if !ok {
		return 0, false
	}
	if before != 0 && c.subscription.Load() == before {
		n--
	}
	return max(n, 0), true
}

// SplitMessage splits a change message into its announcement and the
// snapshot pushed with it (empty when none was): "<announcement>\n<snapshot>".
func SplitMessage(s string) (head, snapshot string) {
	head, snapshot, _ = strings.Cut(s, "\n")
	return head, snapshot
}

// ParseMessage parses a change announcement: "<revision> <service>[ !][ gone]".
// "gone" says the change deleted the service (ch.Gone). Words after the
// service other than "!" (force) and "gone" are ignored: a later
// version may add flags or fields there, and its processes share the
// channel with this one's during an upgrade. Refused, such an announcement
// was dropped whole, and the change it carried with it; read, it is at
// worst a revalidation of the service.
func ParseMessage(s string) (ch core.Change, force bool, ok bool) {
	rev, rest, found := strings.Cut(s, " ")
	if !found {
		return ch, false, false
	}
	name, words, _ := strings.Cut(rest, " ")
	var gone bool
	for w := range strings.SplitSeq(words, " ") {
		force = force || w == "!"
		gone = gone || w == "gone"
	}
	r, err := strconv.ParseInt(rev, 10, 64)
	if err != nil || r < 0 || core.ValidateServiceName(name) != nil {
		return ch, false, false
	}
	return core.Change{Service: name, Revision: r, Gone: gone}, force, true
}

// Start subscribes to the channel. Every (re)subscription calls OnResync.
//
// It first asks Redis, within the one Timeout that bounds Start, for what
// the cache needs of it: a script that writes the namespace's keys (every
// snapshot write is one), a publication on the channel (an empty message, which
// every process ignores) and the subscription's confirmation. It returns a
// *RefusedError when Redis refuses one of them (a wrong password, an ACL
// user without the command, the keys or the channel, a read-only
// replica): no retry changes
// that answer, and taken without a word, such a client left the Registry
// deaf to every other process's changes, or mute about its own. Any other
// failure (Redis down, or slow) is no error here: the subscription is made
// again in the background, as on any loss.
func (c *Cache) Start() error {
	// The first subscription is bounded by the timeout: the Registry's New
	// calls Start, and on a Redis whose host does not answer connections (a
	// partition) it waited out the client's DialTimeout (5 s by default).
	// A subscription that fails is made again at Listen's first Receive.
	sctx, cancel := c.timeout(c.ctx)
	defer cancel()
	// No service is named "": the script deletes nothing.
	acl := "the client's user needs SUBSCRIBE, PUBLISH, EVALSHA and EVAL besides reads and writes, on the keys and channels that begin with " + c.opt.Namespace
	switch err := probeScript.Run(sctx, c.rdb, []string{c.GenKey("")}).Err(); {
	case Refused(err):
		return &RefusedError{What: "a script (EVALSHA, EVAL) on key " + c.GenKey(""), Err: err, Fix: acl}
	case readOnly(err):
		return &RefusedError{What: "writes (it is a read-only replica)", Err: err, Fix: "give the Registry a client of the primary"}
	}
	if err := c.rdb.Publish(sctx, c.channel, "").Err(); Refused(err) {
		return &RefusedError{What: "PUBLISH to channel " + c.channel, Err: err, Fix: acl}
	}
	c.mu.Lock()
	ps, err := subscribe(sctx, c.rdb, c.channel)
	c.ps = ps
	c.mu.Unlock()
	var first any
	if err == nil {
		first, err = ps.Receive(sctx)
		if Refused(err) {
			return &RefusedError{What: "SUBSCRIBE to channel " + c.channel, Err: err, Fix: acl}
		}
	}
	onSubscribe := func() {
		c.subscriptions++
		c.subscription.Store(c.subscriptions)
		if c.opt.OnResync != nil {
			c.opt.OnResync()
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.subscription.Store(0)
		if ps == nil { // a Ring with no shard up: asked for again until it has one
			if ps = Subscribe(c.ctx, c.rdb, c.channel); ps == nil {
				return
			}
			c.mu.Lock()
			if c.ctx.Err() != nil { // Close went by: it closed none
				_ = ps.Close()
			}
			c.ps = ps
			c.mu.Unlock()
		}
		if m, ok := first.(*redis.Subscription); ok && m.Kind == "subscribe" {
			onSubscribe() // read here, not by Listen
		}
		Listen(c.ctx, ps, c.channel, c.opt.Timeout, onSubscribe, func() { c.subscription.Store(0) }, func(payload string) {
			if payload == "" {
				return // a Start's check (see above), not a change
			}
			c.received.Add(1)
			c.handle(payload)
		})
	}()
	return nil
}

// Subscribe subscribes to channel through rdb, and asks again once a
// subscriptionCheck until it can or ctx ends (nil then). go-redis's Ring
// panics when it has found every shard down, having none for the channel:
// a Ring that lost its Redis crashed the process (New, or the health
// subscription's goroutine), where a Redis that is down is one to wait for.
func Subscribe(ctx context.Context, rdb redis.UniversalClient, channel string) *redis.PubSub {
	for {
		if ps, err := subscribe(ctx, rdb, channel); err == nil {
			return ps
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(subscriptionCheck):
		}
	}
}

// subscribe is one attempt of Subscribe: a Ring's panic is its error.
func subscribe(ctx context.Context, rdb redis.UniversalClient, channel string) (ps *redis.PubSub, err error) {
	defer func() {
		if p := recover(); p != nil {
			ps, err = nil, fmt.Errorf("subscribe: %v", p)
		}
	}()
	return rdb.Subscribe(ctx, channel), nil
}

// Refused reports whether err is Redis refusing the client what it asked:
// a wrong password (WRONGPASS, NOAUTH) or an ACL without the command, the
// key or the channel (NOPERM).
func Refused(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return false
	}
	msg := reply.Error()
	return strings.HasPrefix(msg, "NOPERM") || strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "WRONGPASS")
}

// readOnly reports whether err is a read-only replica refusing a write.
func readOnly(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "READONLY")
}

// RefusedError is Start's error when Redis refuses the client something
// the cache needs.
type RefusedError struct {
	// What the cache asked for.
	What string
	// Err is Redis's answer.
	Err error
	// Fix says what the client needs.
	Fix string
}

func (e *RefusedError) Error() string {
	return "Redis refuses " + e.What + ": " + e.Err.Error() + ": " + e.Fix
}

// Unwrap returns Redis's answer.
func (e *RefusedError) Unwrap() error { return e.Err }

// subscriptionCheck is how long a quiet subscription waits before it pings
// Redis: a ping that cannot be written drops the connection, and go-redis
// subscribes again on a new one.
const subscriptionCheck = time.Second

// silentFor is how long a read waits for anything on the subscription
// before it takes the connection for dead (a partition, a crashed host: the
// pings are written without error, and nothing comes back): Listen pings
// within 2 subscriptionChecks of quiet, a read begins at most one after its
// deadline was set, and the pong has one more and the timeout.
const silentFor = 4 * subscriptionCheck

// Listen reads the subscription ps of channel until ctx ends or ps is closed, calling
// onSubscribe (if not nil) for every (re)subscription, onLost (if not nil)
// for every read that failed (the subscription is lost until the next
// onSubscribe: go-redis drops the connection) and onMessage for every
// message, in this goroutine; a second one pings Redis on ps's
// connection when it has been quiet for subscriptionCheck, and Listen waits
// for it before it returns. timeout bounds each ping. The change channel and
// the health channel both read their subscription with it.
//
// go-redis's Channel would read ps in a goroutine of its own, hand each
// message over a Go channel and wake its health checker for each: two
// goroutine wake-ups a message before this one had it (publish to receive
// on loopback went from about 32-44 µs to 31 µs at the median without
// them). And it drops the connection only when a ping cannot be written, so
// a connection that went silent without being closed (a partition, a
// crashed host) was kept, its messages lost, until the kernel gave up on it.
// Here a read is bounded by a deadline silentFor (and the timeout) after it
// was set, renewed once a subscriptionCheck: a read that ends on it is an
// error for go-redis, which drops the connection and subscribes again on a
// new one (onSubscribe follows).
//
// A subscription Redis refused (Refused: an ACL without the channel, a
// password changed since ps was made) is asked for again once a
// subscriptionCheck: go-redis keeps a connection whose command Redis
// answered with an error, and subscribes only on a new one, so the
// subscription stayed lost for good, even once the refusal was lifted.
func Listen(ctx context.Context, ps *redis.PubSub, channel string, timeout time.Duration, onSubscribe, onLost func(), onMessage func(payload string)) {
	var (
		heard atomic.Uint64
		wg    sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		pingQuiet(ctx, ps, timeout, &heard, done)
	}()
	defer wg.Wait()
	defer close(done)
	failures := 0
	rctx, stop := ctx, context.CancelFunc(func() {})
	defer func() { stop() }()
	var renew time.Time
	for {
		if now := time.Now(); !now.Before(renew) {
			stop()
			var cancel context.CancelFunc
			rctx, cancel = context.WithDeadline(ctx, now.Add(silentFor+timeout))
			stop, renew = cancel, now.Add(subscriptionCheck)
		}
		m, err := ps.Receive(rctx)
		if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
			return
		}
		if err != nil {
			if onLost != nil {
				onLost()
			}
			if Refused(err) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(subscriptionCheck):
				}
				sctx, cancel := context.WithTimeout(ctx, timeout)
				_ = ps.Subscribe(sctx, channel) // its answer arrives through Receive
				cancel()
				continue
			}
			// go-redis has dropped a broken connection and subscribes again
			// at the next Receive; after the first failure, not in a loop.
			if failures++; failures > 1 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			continue
		}
		failures = 0
		heard.Add(1)
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && onSubscribe != nil {
				onSubscribe()
			}
		case *redis.Message:
			onMessage(m.Payload)
		}
	}
}

// pingQuiet pings Redis on ps's connection when it has been quiet for
// subscriptionCheck, as go-redis's Channel does, until done; it looks at a
// counter instead of being woken by every message. The pong ends a read
// that would otherwise reach its deadline.
func pingQuiet(ctx context.Context, ps *redis.PubSub, timeout time.Duration, heard *atomic.Uint64, done <-chan struct{}) {
	t := time.NewTicker(subscriptionCheck)
	defer t.Stop()
	last := heard.Load()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if n := heard.Load(); n != last {
			last = n
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		_ = ps.Ping(pctx) // its answer arrives through Listen
		cancel()
	}
}

// handle passes one change message to OnChange, with the snapshot pushed
// along with it if it decodes.
func (c *Cache) handle(payload string) {
	head, pushed := SplitMessage(payload)
	change, force, ok := ParseMessage(head)
	if !ok {
		c.badMsgs.Add(1)
		return
	}
	if c.opt.OnChange == nil {
		return
	}
	c.opt.OnChange(change, force, Pushed{c: c, service: change.Service, enc: pushed})
}

// Pushed is the snapshot a change message carries, still encoded (empty
// when the writer pushed none).
type Pushed struct {
	c       *Cache
	service string
	enc     string
}

// NewPushed returns the snapshot enc (codec.Encode) of service as a
// change message to c carries it; c counts its decode errors (none if nil).
func NewPushed(c *Cache, service string, enc []byte) Pushed {
	return Pushed{c: c, service: service, enc: string(enc)}
}

// Decode returns the pushed snapshot and when its writer read it from the
// database; ok is false when none was pushed or it does not decode (another
// schema version, or corrupt: counted in Stats.PushedDecodeErrors). Either
// way the change still counts; the snapshot is then read from Redis.
func (p Pushed) Decode() (svc *core.Service, loadedAt time.Time, ok bool) {
	if p.enc == "" {
		return nil, time.Time{}, false
	}
	svc, loadedAt, err := codec.Decode(p.enc)
	if err != nil || svc.Name != p.service {
		if p.c != nil {
			p.c.pushedErrs.Add(1)
		}
		return nil, time.Time{}, false
	}
	return svc, loadedAt, true
}

// Close unsubscribes and stops every goroutine. It does not close the client.
func (c *Cache) Close() {
	c.mu.Lock()
	c.cancel() // under mu: see startProbe
	if c.ps != nil {
		_ = c.ps.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}
