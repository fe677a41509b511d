package rediscache

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/testutil"
)

// replyBytes is a go-redis hook that adds up the bytes of the strings in
// the replies of the commands it sees.
type replyBytes struct{ n atomic.Int64 }

func (h *replyBytes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *replyBytes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.add(cmd)
		}
		return err
	}
}

func (h *replyBytes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.add(cmd)
		return err
	}
}

// add adds the bytes of the strings in cmd's reply.
func (h *replyBytes) add(cmd redis.Cmder) {
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			h.n.Add(int64(len(v)))
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	switch cmd := cmd.(type) {
	case *redis.Cmd:
		walk(cmd.Val())
	case *redis.SliceCmd:
		walk(cmd.Val())
	case *redis.StringCmd:
		walk(cmd.Val())
	}
}

// A caller that holds a service's snapshot (a refresh) reads it from Redis
// only if Redis holds another: it reads the header (revision and load
// time) first, a few bytes, and the snapshot (with the generation) only
// when the headers differ. The snapshot
// came whole before (an MGET) to be compared here and thrown away: for a
// service of a thousand instances, tens of KiB a refresh. Any other value
// comes as before: a newer revision, the same one read later, one of
// another format version (an earlier or later release's), none; a key of
// another type is none, as MGET read it. Run on one Redis, a Ring of two
// and, when it is set, a Cluster.
func TestGetIfChangedSendsNoSnapshotTheCallerHolds(t *testing.T) {
	run := func(t *testing.T, rdb redis.UniversalClient, c *Cache) {
		ctx := context.Background()
		reply := &replyBytes{}
		rdb.AddHook(reply)
		svc := &core.Service{Name: "db_svc", Revision: 3}
		for i := range 1000 {
			svc.Instances = append(svc.Instances, core.Instance{Service: "db_svc", ID: "i" + strings.Repeat("x", 20) + string(rune('a'+i%26)),
				Host: "10.0.0.1", Port: 1 + i, Weight: 1, Zone: "eu-1a", Metadata: map[string]string{"team": "core"}})
		}
		at := time.Unix(1_800_000_000, 0)
		if err := c.Invalidate(ctx, "db_svc"); err != nil {
			t.Fatal(err)
		}
		gen, err := c.Generation(ctx, "db_svc")
		if err != nil || gen == "" {
			t.Fatalf("Generation = %q, %v", gen, err)
		}
		if wrote, err := c.Set(ctx, svc, at, gen); !wrote || err != nil {
			t.Fatalf("Set = %v, %v", wrote, err)
		}
		size := len(codec.Encode(svc, at))
		get := func(step string, rev int64, loaded time.Time) (*core.Service, time.Time, Held, int64) {
			t.Helper()
			before := reply.n.Load()
			got, gotAt, held, g, err := c.GetIfChanged(ctx, "db_svc", rev, loaded.UnixNano())
			if err != nil || !held.Unread() && g != gen {
				t.Fatalf("%s: GetIfChanged = %v, gen %q; want no error, gen %q", step, err, g, gen)
			}
			return got, gotAt, held, reply.n.Load() - before
		}

		got, gotAt, held, n := get("held", 3, at)
		t.Logf("a refresh of the %d-byte snapshot held: %d bytes in the reply", size, n)
		if held != (Held{Same: true}) || got != nil || !gotAt.Equal(at) || n >= 100 {
			t.Fatalf("GetIfChanged of the snapshot held = %v, at %v, %+v, %d bytes in the reply (the snapshot is %d); want unchanged at %v, under 100 bytes",
				got, gotAt, held, n, size, at)
		}
		// Redis holds an older revision than the caller: said from the
		// header, with its revision and read time, and not sent either.
		for _, loaded := range []time.Time{at, at.Add(-time.Hour), at.Add(time.Hour)} {
			got, gotAt, held, n = get("a newer revision held", 4, loaded)
			if held != (Held{Older: true, Revision: 3}) || got != nil || !gotAt.Equal(at) || n >= 100 {
				t.Fatalf("GetIfChanged with a newer revision held = %v, at %v, %+v, %d bytes in the reply (the snapshot is %d); want older (3) at %v, under 100 bytes",
					got, gotAt, held, n, size, at)
			}
		}
		for _, tt := range []struct {
			name   string
			rev    int64
			loaded time.Time
		}{
			{"an older revision held", 2, at},
			{"the same revision read earlier held", 3, at.Add(-time.Second)},
			{"the same revision read later held", 3, at.Add(time.Second)},
			{"none held", -1, time.Unix(0, -1)},
		} {
			got, gotAt, held, n := get(tt.name, tt.rev, tt.loaded)
			if held.Unread() || got == nil || got.Revision != 3 || len(got.Instances) != 1000 || !gotAt.Equal(at) || n < int64(size) {
				t.Fatalf("%s: GetIfChanged = %v, at %v, %+v, %d bytes; want Redis's snapshot", tt.name, got, gotAt, held, n)
			}
		}

		// A release of another format version: its header is not the
		// caller's, whatever its digits say.
		other := "D0" + codec.Header(3, at.UnixNano())[2:] + "body"
		if err := rdb.Set(ctx, c.Key("db_svc"), other, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		for _, rev := range []int64{3, 4} { // the same, or a newer one held
			vm := c.Stats().VersionMisses
			if got, _, held, _ := get("another version", rev, at); got != nil || held.Unread() || c.Stats().VersionMisses != vm+1 {
				t.Fatalf("GetIfChanged of another version's value, %d held = %v, %+v, version misses %d (were %d); want a version miss",
					rev, got, held, c.Stats().VersionMisses, vm)
			}
		}
		// None, and a key of another type, are misses.
		if err := rdb.Del(ctx, c.Key("db_svc")).Err(); err != nil {
			t.Fatal(err)
		}
		if got, _, held, _ := get("none", 3, at); got != nil || held.Unread() {
			t.Fatalf("GetIfChanged of no value = %v, %+v; want a miss", got, held)
		}
		if err := rdb.HSet(ctx, c.Key("db_svc"), "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		if got, _, held, _ := get("a hash", 3, at); got != nil || held.Unread() {
			t.Fatalf("GetIfChanged of a hash = %v, %+v; want a miss", got, held)
		}
	}
	eachRedis(t, run)
	t.Run("ring", func(t *testing.T) {
		m1, m2 := miniredis.RunT(t), miniredis.RunT(t)
		ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": m1.Addr(), "b": m2.Addr()}, MaxRetries: -1})
		defer ring.Close()
		c := New(ring, Options{Namespace: "ns:", TTL: time.Minute, Timeout: 5 * time.Second, ProbeInterval: time.Second})
		defer c.Close()
		run(t, ring, c)
	})
}

// Where an ACL grants GET but not GETRANGE (a user whose commands are
// named one by one), a refresh still works: it reads the snapshot
// whole, and the caller compares it, as before. Refused, every refresh
// failed, and went to the database. Run on
// DISCOVERY_TEST_REDIS (miniredis has no ACL).
func TestGetIfChangedWithoutGetrangeComparesHere(t *testing.T) {
	ctx := context.Background()
	ns := testutil.Prefix(t)
	admin := testutil.RealRedis(t, ns)
	user := strings.TrimSuffix(ns, "_") + "_nogetrange"
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">"+user, "~*", "&*", "+@all", "-getrange").Err(); err != nil {
		t.Skipf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	opt := testutil.RedisOptions()
	opt.Username, opt.Password, opt.MaxRetries = user, user, -1
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	c := New(rdb, Options{Namespace: ns, TTL: time.Minute, Timeout: 5 * time.Second, ProbeInterval: time.Second})
	defer c.Close()
	if err := rdb.GetRange(ctx, c.Key("x"), 0, 1).Err(); !Refused(err) {
		t.Fatalf("GETRANGE as %s: %v; want it refused", user, err)
	}
	svc := &core.Service{Name: "db_svc", Revision: 3}
	at := time.Unix(1_800_000_000, 0)
	if wrote, err := c.Set(ctx, svc, at, ""); !wrote || err != nil {
		t.Fatalf("Set = %v, %v", wrote, err)
	}
	if got, gotAt, held, _, err := c.GetIfChanged(ctx, "db_svc", 3, at.UnixNano()); err != nil || !held.Same || got != nil || !gotAt.Equal(at) {
		t.Fatalf("GetIfChanged of the snapshot held = %v, at %v, %+v, %v; want unchanged", got, gotAt, held, err)
	}
	if got, _, held, _, err := c.GetIfChanged(ctx, "db_svc", 2, at.UnixNano()); err != nil || held.Unread() || got == nil || got.Revision != 3 {
		t.Fatalf("GetIfChanged of an older one held = %v, %+v, %v; want Redis's", got, held, err)
	}
	// Without the header, a newer one held gets Redis's older snapshot,
	// which its caller judges, as before.
	if got, _, held, _, err := c.GetIfChanged(ctx, "db_svc", 4, at.UnixNano()); err != nil || held.Unread() || got == nil || got.Revision != 3 {
		t.Fatalf("GetIfChanged of a newer one held = %v, %+v, %v; want Redis's", got, held, err)
	}
	if !c.Up() {
		t.Fatal("the breaker tripped")
	}
}
