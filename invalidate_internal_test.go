package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery/internal/cache/rediscache"
	"github.com/rssbot/discovery/internal/codec"
	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/fakeclock"
	"github.com/rssbot/discovery/internal/store/memory"
	"github.com/rssbot/discovery/internal/store/sqlstore"
	"github.com/rssbot/discovery/internal/testutil"
)

// heldStore is a database whose next Load, once hold is called, reads the
// service and then waits for the test before it returns: a read that began
// before something the test does next and finishes after it. It tells no
// Registry of changes (a SQL database without Redis's messages does not).
type heldStore struct {
	core.Store
	held    chan struct{} // receives when a held Load has read
	release chan struct{} // closed to let it return
	arm     chan struct{} // holds one token while the next Load is to be held
}

func newHeldStore() (*heldStore, *memory.Store) {
	mem := memory.New()
	return &heldStore{Store: mem, held: make(chan struct{}), release: make(chan struct{}), arm: make(chan struct{}, 1)}, mem
}

func (s *heldStore) hold() { s.arm <- struct{}{} }

// storesToHold are the stores the invalidation tests run on: the memory
// store, and PostgreSQL (skipped without DISCOVERY_TEST_POSTGRES).
func storesToHold() []heldStoreKind {
	return []heldStoreKind{
		{"memory", func(*testing.T, string) core.Store { return memory.New() }},
		{"postgres", func(t *testing.T, prefix string) core.Store {
			s, err := sqlstore.New(testutil.Postgres(t, prefix), prefix, 5*time.Second)
			if err == nil {
				err = s.Migrate(context.Background())
			}
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
}

// heldStoreKind names a store of storesToHold and opens one.
type heldStoreKind struct {
	name string
	open func(t *testing.T, prefix string) core.Store
}

// behindTheBack returns a function that registers an instance of db_svc
// in mem, a store under a Registry, without the Registry knowing.
func behindTheBack(t *testing.T, mem *memory.Store, clock *fakeclock.Clock) func(host string) {
	return func(host string) {
		t.Helper()
		if _, err := mem.Register(context.Background(), &core.Instance{Service: "db_svc", ID: host + ":1", Host: host, Port: 1, Weight: 100,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *heldStore) Load(ctx context.Context, name string) (*core.Service, error) {
	svc, err := s.Store.Load(ctx, name)
	select {
	case <-s.arm:
		s.held <- struct{}{}
		<-s.release
	default:
	}
	return svc, err
}

// refreshesDone waits until no background refresh of r is running.
func refreshesDone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for blockedIn("discovery.(*Registry).loadInBackground.func") {
		if time.Now().After(deadline) {
			t.Fatal("background refreshes still running after 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// refreshHeldAfterRead sets up what both tests below start from: db_svc
// cached at revision 1, gone stale, and the background refresh a lookup then
// started holding what it read (revision 1) until the test closes
// store.release. register adds an instance behind the Registry's back.
func refreshHeldAfterRead(t *testing.T) (r *Registry, store *heldStore, register func(host string)) {
	t.Helper()
	ctx := context.Background()
	store, mem := newHeldStore()
	r, clock := fakeRegistry(t, WithStore(store))
	register = behindTheBack(t, mem, clock)
	register("10.0.0.1")
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultFresh * 2) // stale: the next lookup starts a background refresh
	store.hold()
	if res, err := r.Lookup(ctx, "db_svc"); err != nil || !res.Stale {
		t.Fatalf("Lookup past the freshness window = %+v, %v; want the stale entry", res, err)
	}
	<-store.held // the refresh has read revision 1
	return r, store, register
}

// releaseAndWantRevision2 lets the held refresh finish and checks that a
// lookup then answers revision 2, what the database holds, after what.
func releaseAndWantRevision2(t *testing.T, r *Registry, store *heldStore, after string) {
	t.Helper()
	close(store.release)
	refreshesDone(t)
	res, err := r.Lookup(context.Background(), "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 2 || len(res.Service.Instances) != 2 {
		t.Fatalf("Lookup after %s = revision %d, %d instances (layer %v, stale %v); want revision 2, 2 instances",
			after, res.Revision, len(res.Service.Instances), res.Layer, res.Stale)
	}
}

// A forced reload (the message Invalidate publishes) reads the database
// even while an ordinary background refresh of the same entry, begun before
// the invalidation, is still under way. The forced refresh was skipped (one
// refresh per entry), and the older refresh then installed what it had read
// before the invalidation as fresh: lookups answered it for a whole
// freshness window after the operator had invalidated it.
func TestForcedReloadIsNotSkippedForARefreshUnderWay(t *testing.T) {
	r, store, register := refreshHeldAfterRead(t)
	register("10.0.0.2") // behind this process's back: revision 2
	// What Invalidate's message does in every process that holds the service.
	r.onMessage(core.Change{Service: "db_svc"}, true, rediscache.Pushed{})
	releaseAndWantRevision2(t, r, store, "the forced reload")
}

// The same holds in the process that calls Invalidate: a background refresh
// begun before it, finishing after Invalidate had dropped the entry, put
// back what it had read before, fresh, and lookups answered it though
// Invalidate had returned.
func TestInvalidateIsNotUndoneByARefreshUnderWay(t *testing.T) {
	ctx := context.Background()
	r, store, register := refreshHeldAfterRead(t)
	register("10.0.0.2") // behind this process's back: revision 2
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	releaseAndWantRevision2(t, r, store, "Invalidate")
}

// A lookup whose context has already ended gets its context's error and
// starts no load. It started one, and then chose at random between its
// context and that load's answer when the load was quick (the in-memory
// backend's): Get with a cancelled context said "not found" now and then.
func TestLookupWithAnEndedContextStartsNoLoad(t *testing.T) {
	store, _ := newHeldStore()
	r, _ := fakeRegistry(t, WithStore(store))
	store.hold() // a load would read, then wait here for the test
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Get(ctx, "web"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with a cancelled context = %v; want context.Canceled", err)
	}
	// Joins the Get's load if it started one; else runs on its own at once.
	ch := r.sf.DoChan("web", func() (any, error) { return nil, nil })
	select {
	case res := <-ch:
		if res.Shared {
			t.Fatal("a Get whose context had ended shared a load")
		}
	case <-store.held:
		close(store.release)
		<-ch
		t.Fatal("a Get whose context had ended started a load")
	}
}

// An Invalidate while a write's write-through is between its database read
// and its install leaves neither this process's L1 nor Redis with what that
// read found. The write-through installed its snapshot in L1, fresh, and
// wrote it to Redis after Invalidate had dropped both, without the look at
// the invalidation count that loads take: the invalidation was undone, here
// for a freshness window and in Redis for an L2 TTL, though the database had
// changed behind the Registry's back in between (what an operator
// invalidates for). Invalidate's forced message is held on its way to Redis
// until the checks are done: this process's own handling of it reloads an
// entry put back, at a moment no test controls, and hid the defect now and
// then.
func TestInvalidateIsNotUndoneByAWriteThrough(t *testing.T) {
	tests := storesToHold()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			db := tt.open(t, ns+"_")
			store := &heldStore{Store: db, held: make(chan struct{}), release: make(chan struct{}), arm: make(chan struct{}, 1)}
			rdb, _ := testutil.Redis(t, ns)
			pub := &forcedPublishGate{held: make(chan struct{}), release: make(chan struct{})}
			rdb.AddHook(pub)
			released := false
			defer func() {
				if !released { // a failed check must not leave Invalidate or the write waiting
					close(pub.release)
					close(store.release)
				}
			}()
			// A Redis timeout over the test client's own: the Registry uses the
			// client as it is, hook included (see redisCommands).
			r, err := New(WithStore(store), WithRedis(rdb), WithNamespace(ns), WithRedisTimeout(5*time.Second),
				WithoutHealthChecks(), WithCloseDrain(0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			// Revalidated after subscribing while L1 is still empty: a later
			// revalidation reloaded db_svc, and that load, not the write-through,
			// could be the read held below.
			resynced(t, r)
			if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}); err != nil {
				t.Fatal(err)
			}
			store.hold()
			wrote := make(chan error, 1)
			go func() { // revision 2: its write-through reads it, then waits
				_, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1})
				wrote <- err
			}()
			<-store.held
			// Behind the Registry's back: revision 3, which Invalidate is for.
			now := time.Now()
			if _, err := db.Register(ctx, &core.Instance{Service: "db_svc", ID: "10.0.0.3:1", Host: "10.0.0.3", Port: 1, Weight: 100,
				RegisteredAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			invalidated := make(chan error, 1)
			go func() { invalidated <- r.Invalidate(ctx, "db_svc") }()
			<-pub.held // Invalidate has dropped L1 and Redis, and publishes
			close(store.release)
			released = true
			if err := <-wrote; err != nil { // its write-through has ended
				close(pub.release)
				t.Fatal(err)
			}
			e := r.l1.get("db_svc")
			v, rerr := rdb.Get(ctx, r.l2.Key("db_svc")).Result()
			close(pub.release)
			if err := <-invalidated; err != nil {
				t.Fatal(err)
			}
			if e != nil {
				t.Errorf("after Invalidate, L1 holds revision %d, read before it; want nothing", e.rev)
			}
			if !errors.Is(rerr, redis.Nil) {
				rev, _, _ := codec.ParseHeader(v)
				t.Errorf("after Invalidate, Redis holds revision %d, read before it (%v); want nothing", rev, rerr)
			}
			res, err := r.Lookup(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			if res.Revision != 3 || len(res.Service.Instances) != 3 {
				t.Fatalf("Lookup after Invalidate = revision %d, %d instances (layer %v); want revision 3, 3 instances",
					res.Revision, len(res.Service.Instances), res.Layer)
			}
		})
	}
}

// resynced waits until r has revalidated its cache after subscribing to
// change messages.
func resynced(t *testing.T, r *Registry) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.ctr.resyncs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no revalidation after subscribing within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// forcedPublishGate is a go-redis hook that holds the first forced change
// message (Invalidate's) before it reaches Redis, until released.
type forcedPublishGate struct {
	once    sync.Once
	held    chan struct{} // closed when the message is held
	release chan struct{}
}

func (g *forcedPublishGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *forcedPublishGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *forcedPublishGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "publish" && len(args) == 3 {
			if msg, _ := args[2].(string); strings.HasSuffix(msg, " !") {
				g.once.Do(func() {
					close(g.held)
					<-g.release
				})
			}
		}
		return next(ctx, cmd)
	}
}

// An Invalidate made in another process while this one is between its
// database read and its Redis write leaves Redis without what that read
// found, and a process that then looks the service up reads the database.
// This process's own count of invalidations cannot see the other's
// Invalidate until its forced message arrives (held here on its way to
// Redis, as a slow subscriber or a busy network holds it): its write put
// back the snapshot read before the Invalidate, and every other process
// served it from Redis for an L2 TTL, though the database had changed
// behind the library's back (what Invalidate is for). Both writers are
// checked: a load's write-back, and a write-through after a registration.
func TestInvalidateInAnotherProcessIsNotUndone(t *testing.T) {
	stores := storesToHold()
	writers := []struct {
		name string
		// before holds one instance of db_svc in the database, by a then.
		before func(t *testing.T, a *Registry, db core.Store)
		// write starts the write that reads the database (held) and then
		// writes Redis; wait waits until that write to Redis is done.
		write func(t *testing.T, a *Registry) (wait func())
	}{
		{"load", func(t *testing.T, _ *Registry, db core.Store) {
			registerBehind(t, db, "10.0.0.1")
		}, func(t *testing.T, a *Registry) func() {
			before := a.l2.Stats()
			got := make(chan error, 1)
			go func() { _, err := a.Get(context.Background(), "db_svc"); got <- err }()
			return func() {
				if err := <-got; err != nil {
					t.Error(err)
				}
				// The load's write to Redis runs on after the load, in the
				// background: done when Redis answered it, whatever it said.
				deadline := time.Now().Add(10 * time.Second)
				for {
					s := a.l2.Stats()
					if s.Writes+s.StaleWrites+s.Errors > before.Writes+before.StaleWrites+before.Errors {
						return
					}
					if time.Now().After(deadline) {
						t.Fatal("the load's write to Redis not done within 10 s")
					}
					time.Sleep(time.Millisecond)
				}
			}
		}},
		{"write-through", func(t *testing.T, a *Registry, _ core.Store) {
			if _, err := a.Register(context.Background(), Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T, a *Registry) func() {
			wrote := make(chan error, 1)
			go func() {
				_, err := a.Register(context.Background(), Instance{Service: "db_svc", Host: "10.0.0.2", Port: 1})
				wrote <- err
			}()
			return func() { // Register returns once its write-through has ended
				if err := <-wrote; err != nil {
					t.Error(err)
				}
			}
		}},
	}
	for _, st := range stores {
		for _, wr := range writers {
			t.Run(st.name+"/"+wr.name, func(t *testing.T) {
				ctx := context.Background()
				ns := strings.TrimSuffix(testutil.Prefix(t), "_")
				db := st.open(t, ns+"_")
				held := &heldStore{Store: db, held: make(chan struct{}), release: make(chan struct{}), arm: make(chan struct{}, 1)}
				addr, rdbDB, _ := testutil.RedisAddr(t)
				rdbA, rdbB := testutil.RedisClient(t, addr, rdbDB, ns), testutil.RedisClient(t, addr, rdbDB, ns)
				pub := &forcedPublishGate{held: make(chan struct{}), release: make(chan struct{})}
				rdbB.AddHook(pub)
				releasedStore, releasedPub := false, false
				defer func() { // a failed check must not leave a read or Invalidate waiting
					if !releasedStore {
						close(held.release)
					}
					if !releasedPub {
						close(pub.release)
					}
				}()
				open := func(store core.Store, rdb redis.UniversalClient) *Registry {
					// A Redis timeout over the clients' own: the Registry uses
					// the client as it is, hook included (see redisCommands).
					r, err := New(WithStore(store), WithRedis(rdb), WithNamespace(ns), WithRedisTimeout(5*time.Second),
						WithoutHealthChecks(), WithCloseDrain(0))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = r.Close() })
					return r
				}
				a, b := open(held, rdbA), open(db, rdbB) // two processes
				// Revalidated after subscribing while L1 is still empty: a
				// later revalidation could be the read held below.
				resynced(t, a)
				wr.before(t, a, db)
				held.hold()
				wait := wr.write(t, a)
				<-held.held // a has read the database, and waits to write Redis
				registerBehind(t, db, "10.0.0.3")
				final, err := db.Load(ctx, "db_svc")
				if err != nil {
					t.Fatal(err)
				}
				invalidated := make(chan error, 1)
				go func() { invalidated <- b.Invalidate(ctx, "db_svc") }()
				<-pub.held // b has dropped Redis's snapshot, and publishes
				close(held.release)
				releasedStore = true
				wait()
				v, rerr := rdbA.Get(ctx, a.l2.Key("db_svc")).Result()
				if !errors.Is(rerr, redis.Nil) {
					rev, _, _ := codec.ParseHeader(v)
					t.Errorf("after another process's Invalidate, Redis holds revision %d, read before it (%v); want nothing (the database is at %d)",
						rev, rerr, final.Revision)
				}
				c := open(db, rdbA) // a third process, which looks db_svc up first now
				res, err := c.Lookup(ctx, "db_svc")
				if err != nil {
					t.Fatal(err)
				}
				if res.Revision != final.Revision || len(res.Service.Instances) != len(final.Instances) {
					t.Errorf("a new process's Lookup after the Invalidate = revision %d, %d instances (layer %v); want revision %d, %d instances",
						res.Revision, len(res.Service.Instances), res.Layer, final.Revision, len(final.Instances))
				}
				close(pub.release)
				releasedPub = true
				if err := <-invalidated; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// registerBehind registers an instance of db_svc at host in db, behind
// every Registry's back.
func registerBehind(t *testing.T, db core.Store, host string) {
	t.Helper()
	now := time.Now()
	if _, err := db.Register(context.Background(), &core.Instance{Service: "db_svc", ID: host + ":1", Host: host, Port: 1, Weight: 100,
		RegisteredAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// editedStore is a database edited behind the library's back without a
// new revision (what Invalidate is for), once edited is set: every
// instance it answers has weight 7.
type editedStore struct {
	core.Store
	edited atomic.Bool
}

func (s *editedStore) Load(ctx context.Context, name string) (*core.Service, error) {
	svc, err := s.Store.Load(ctx, name)
	if err != nil || !s.edited.Load() {
		return svc, err
	}
	out := *svc
	out.Instances = append([]core.Instance(nil), svc.Instances...)
	for i := range out.Instances {
		out.Instances[i].Weight = 7
	}
	return &out, nil
}

// A snapshot pushed with a change message that another process read before
// an Invalidate does not outlive the invalidation here, whichever of the
// two messages comes first. Its writer wrote Redis before the Invalidate,
// so the generation let it through, and published after it. Taken after
// the forced message, it went in fresh over the entry that message had
// marked for reloading; and read with its writer's clock ahead of this
// process's, it claimed a later read than the invalidation's reload here,
// at the same revision, and put refused the reload: lookups answered the
// snapshot from before the Invalidate until a lease TTL had passed.
func TestPushedSnapshotReadBeforeAnInvalidateDoesNotOutliveIt(t *testing.T) {
	tests := []struct {
		name        string
		forcedFirst bool
	}{
		{"forced message first", true},
		{"pushed snapshot first", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			mem := memory.New()
			edited := &editedStore{Store: mem}
			store := &heldStore{Store: edited, held: make(chan struct{}), release: make(chan struct{}), arm: make(chan struct{}, 1)}
			r, clock := fakeRegistry(t, WithStore(store))
			register := behindTheBack(t, mem, clock)
			register("10.0.0.1")
			if _, err := r.Get(ctx, "db_svc"); err != nil {
				t.Fatal(err)
			}
			// Another process writes revision 2, reads it (its clock a
			// second ahead of this one's) and writes it to Redis; then the
			// database is edited behind everyone's back, and a third
			// process invalidates the service.
			register("10.0.0.2")
			pushed, err := mem.Load(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			pushedAt := clock.Now().Add(time.Second)
			edited.edited.Store(true)
			push := func() {
				enc := codec.Encode(pushed, pushedAt)
				r.onMessage(core.Change{Service: "db_svc", Revision: pushed.Revision}, false, rediscache.NewPushed(r.l2, "db_svc", enc))
			}
			forced := func() { r.onMessage(core.Change{Service: "db_svc"}, true, rediscache.Pushed{}) }
			var reloaded *entry // the entry the forced message reloads
			if tt.forcedFirst {
				store.hold() // the reload reads the edited database, and waits
				reloaded = r.l1.get("db_svc")
				forced()
				<-store.held
				push()
				close(store.release)
			} else {
				close(store.release)
				push()
				reloaded = r.l1.get("db_svc")
				forced()
			}
			// refreshing is set before the reload's goroutine starts, and
			// cleared when it ends.
			for deadline := time.Now().Add(10 * time.Second); reloaded.refreshing.Load(); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the forced reload still running after 10 s")
				}
			}
			res, err := r.Lookup(ctx, "db_svc")
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range res.Service.Instances {
				if in.Weight != 7 {
					t.Fatalf("Lookup after the invalidation = revision %d, instance %s weight %d (layer %v, stale %v); want what the database holds since the edit, weight 7",
						res.Revision, in.ID, in.Weight, res.Layer, res.Stale)
				}
			}
		})
	}
}

// A lookup that runs while Invalidate is under way, before Invalidate's
// Redis step, does not leave the old snapshot in L1 past it. Invalidate
// counted and dropped the entry first: the lookup (another goroutine's, or
// a background refresh) took the moved count as its own, read the old
// snapshot from Redis, still there, and put it back, fresh; a Get after
// Invalidate returned answered without what the database had gained behind
// the library's back (1 run in 150 of TestCheckOfAnInstanceThatLeftApplies-
// ToNothing under load). The lookup runs in a hook, right before
// Invalidate's script reaches Redis.
func TestLookupDuringInvalidateDoesNotPutTheOldSnapshotBack(t *testing.T) {
	ctx := context.Background()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	rdb, _ := testutil.Redis(t, ns)
	hook := &scriptHook{before: true, arg: isGen} // Invalidate's script: EVAL(SHA) script 2 key genkey gen ttl
	rdb.AddHook(hook)
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(struct{ core.Store }{mem}), WithRedis(rdb), WithNamespace(ns), WithRedisTimeout(5*time.Second))
	resynced(t, r)
	if _, err := r.Register(ctx, Instance{Service: "db_svc", Host: "10.0.0.1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	behindTheBack(t, mem, clock)("10.0.0.2") // the database gains one; Redis and L1 hold the old snapshot
	hook.key = r.l2.Key("db_svc")
	hook.then = func() {
		if _, err := r.Get(ctx, "db_svc"); err != nil {
			t.Error(err)
		}
	}
	hook.armed.Store(true)
	if err := r.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	if hook.armed.Load() {
		t.Fatal("Invalidate ran no script on the snapshot's key")
	}
	res, err := r.Lookup(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	if res.Service.Instance("10.0.0.2:1") == nil {
		t.Fatalf("Lookup after Invalidate = revision %d from %v without 10.0.0.2; want the database's revision %d", res.Revision, res.Layer, 2)
	}
}

// BenchmarkChangeMessageNotTaken times what a process spends on a change
// message about a service it holds no entry of, the writer's snapshot of
// 10 instances pushed with it: most processes of a fleet, for most
// messages. The snapshot is decoded only where it is taken.
func BenchmarkChangeMessageNotTaken(b *testing.B) {
	r, err := New(WithStore(memory.New()), WithoutHealthChecks())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	svc := &core.Service{Name: "db_svc", Revision: 7}
	for i := range 10 {
		svc.Instances = append(svc.Instances, core.Instance{ID: fmt.Sprint("i-", i), Service: "db_svc", Host: "10.0.0.1", Port: 8000 + i,
			Weight: 100, Zone: "eu-1a", Metadata: map[string]string{"version": "1.4.2"}, ExpiresAt: time.Now().Add(time.Minute)})
	}
	p := rediscache.NewPushed(nil, "db_svc", codec.Encode(svc, time.Now()))
	ch := core.Change{Service: "db_svc", Revision: 7}
	b.ReportAllocs()
	for b.Loop() {
		r.onMessage(ch, false, p)
	}
}
