package discovery

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/testutil"
)

// A snapshot write whose process counted an invalidation of the service
// while it wrote (a write of unknown outcome here: unsettle) is deleted
// again (setL2Unless), and only it: the delete removed whatever Redis held
// by then, and another process's newer snapshot, written between the two
// on the generation it read after the database had moved, went with it.
// Redis then held nothing newer, and an older snapshot still on its way
// (read from the database before that process's commit) landed where the
// newer one had refused it. The other process's write and this process's
// count happen in a hook, right after this process's write reached Redis
// and before it looks at its count again. Run on one Redis (miniredis, or
// DISCOVERY_TEST_REDIS) and, when it is set, on
// DISCOVERY_TEST_REDIS_CLUSTER.
func TestSetL2UnlessDeletesOnlyTheSnapshotItWrote(t *testing.T) {
	redises := testutil.RedisKinds()
	tests := []struct {
		name    string
		other   bool  // another process writes revision 3 in between
		wantRev int64 // the revision Redis holds at the end; -1 for none
	}{
		{"another process wrote since", true, 3},
		{"nobody wrote since", false, -1},
	}
	for _, rr := range redises {
		t.Run(rr.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if rev := writeThroughWhileUnsettled(t, rr.Open, tt.other); rev != tt.wantRev {
						t.Fatalf("after the write-through, Redis holds revision %d (-1: none); want %d", rev, tt.wantRev)
					}
				})
			}
		})
	}
}

// writeThroughWhileUnsettled registers revision 1 and 2 of db_svc in a
// Registry on the Redis open returns; right after revision 2's snapshot
// write, another process writes revision 3 (if other) and this one counts
// an invalidation. It returns the revision Redis holds at the end (-1 for
// none).
func writeThroughWhileUnsettled(t *testing.T, open func(t testing.TB, ns string) redis.UniversalClient, other bool) int64 {
	t.Helper()
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb := open(t, ns)
	hook := &scriptHook{arg: isSnapshot} // after the set script's write
	rdb.AddHook(hook)
	mem := memory.New()
	// A store that tells the Registry of no change (as a SQL database does
	// not): the memory store's own notice of revision 2 started a
	// background load, which wrote to Redis too. A Redis timeout over the
	// test client's own: the Registry uses the client as it is, hook
	// included (see redisCommands).
	r, clock := fakeRegistry(t, WithStore(struct{ core.Store }{mem}), WithRedis(rdb), WithNamespace(ns),
		WithRedisTimeout(5*time.Second))
	// Revalidated after subscribing while L1 is still empty: a later
	// revalidation reloaded db_svc and wrote it to Redis again.
	resynced(t, r)
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	register := behindTheBack(t, mem, clock)
	hook.key = r.l2.Key("db_svc")
	hook.then = func() {
		if other {
			// Another process commits revision 3 and writes its snapshot,
			// read after its commit, on the generation it read before.
			register("10.0.0.3")
			gen, err := r.l2.Generation(ctx, "db_svc")
			if err != nil {
				t.Error(err)
				return
			}
			svc, err := mem.Load(ctx, "db_svc")
			if err != nil {
				t.Error(err)
				return
			}
			if wrote, err := r.l2.Set(ctx, svc, clock.Now(), gen); !wrote || err != nil {
				t.Errorf("the other process's write of revision %d = %v, %v; want it written", svc.Revision, wrote, err)
			}
		}
		r.unsettle("db_svc") // this process's count moves
	}
	hook.armed.Store(true)
	// Revision 2: its write-through writes it to Redis, then finds the
	// count moved.
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if hook.armed.Load() {
		t.Fatal("the write-through wrote no snapshot to Redis")
	}
	v, err := rdb.Get(ctx, r.l2.Key("db_svc")).Result()
	if errors.Is(err, redis.Nil) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	rev, _, err := codec.ParseHeader(v)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// scriptHook is a go-redis hook that, once armed, calls then once, right
// before (before) or right after the first script on key whose first
// argument arg accepts (EVAL(SHA) script 2 key genkey arg ...) reaches
// Redis, before its caller sees the answer: what happens elsewhere in that
// instant. Commands that then makes pass through unheld.
type scriptHook struct {
	key    string
	before bool
	arg    func(string) bool
	armed  atomic.Bool
	then   func()
}

// isSnapshot accepts a snapshot (the set script's argument); isGen a
// generation (Invalidate's).
func isSnapshot(v string) bool { return strings.HasPrefix(v, codec.Version) }
func isGen(v string) bool      { return strings.HasPrefix(v, "g") }

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// armed first: key and then are set before it is
		if h.before && h.armed.Load() && h.matches(cmd) && h.armed.CompareAndSwap(true, false) {
			h.then()
		}
		err := next(ctx, cmd)
		if !h.before && err == nil && h.armed.Load() && h.matches(cmd) && h.armed.CompareAndSwap(true, false) {
			h.then()
		}
		return err
	}
}

func (h *scriptHook) matches(cmd redis.Cmder) bool {
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return false
	}
	args := cmd.Args()
	if len(args) < 6 || args[3] != h.key {
		return false
	}
	v, _ := args[5].(string)
	return h.arg(v)
}
