// Package discovery is an embeddable client library for service discovery:
// Go services register themselves at start-up, look other services up
// in-process, and pick one healthy instance with a load balancer. There is no
// discovery server: every process keeps its own cache, and all of them share
// a SQL database (the source of truth) and, optionally, Redis.
//
// # Quick start
//
//	db, _ := gorm.Open(postgres.Open(dsn), &gorm.Config{})
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs, ContextTimeoutEnabled: true})
//	reg, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithLogger(logger))
//	if err != nil { ... }
//	defer reg.Close()
//
//	// register this process; its lease is renewed until Close
//	lease, err := reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
//
//	// look a service up (from memory almost always)
//	svc, err := reg.Get(ctx, "db_svc")
//
// # Layers
//
// A lookup is answered by the nearest layer that has the service fresh:
//
//   - L1, this process's memory: a ristretto cache (bounded, TinyLFU) behind a
//     lock-free index, so a hit costs tens of nanoseconds, allocates nothing
//     and scales across cores.
//   - L2, Redis (single, Sentinel or Cluster): encoded snapshots shared by every
//     process, written only forward in revision order by a script.
//   - L3, the database through GORM (PostgreSQL; SQLite embedded): services,
//     instances, leases, configurations and keys.
//
// Every change bumps the service's revision in the same transaction. The
// writer writes the new snapshot through to Redis and publishes {service,
// revision}; every process refreshes what it holds that is older. Messages
// lost across reconnections are recovered by revalidating every cached
// service against the database's revisions on each (re)subscription, and
// bounded in any case by the L1 freshness window. Concurrent misses for one
// service collapse into one load. Lookup tells which layer answered, the
// revision, the age and whether the answer is stale.
//
// Invalidate drops a service from every layer in every process, for changes
// made to the database behind the library's back. It also gives the service
// a new generation in Redis: a snapshot that any process read from the
// database before it is not written to Redis after it, and a process that
// has heard of it takes no snapshot pushed with a change message over what
// it held before it.
//
// # Leases
//
// A Registration renews its lease every TTL/3 (TTL 15 s by default). An
// instance whose lease has ended is invisible to every reader at once: cache
// entries are fresh only until the first lease in them ends. A registration
// whose row vanished or whose lease lapsed (a restored database, a long
// pause), or whose row holds other fields than it last wrote (a backup
// taken before an Update), registers itself again; while the database is
// down renewals retry with backoff, and at least once in each half of what
// is left of the lease (each attempt waiting no longer than that half), so
// that a database back before the lease ends finds it renewed before then. A reaper, one at a time across processes, deletes rows whose
// lease ended long ago, and published keys that retired as long ago, and
// then the services left with nothing (no instance, no key, never a
// configuration; WithServiceReap): a name deleted and registered again
// comes back at a higher revision than it had. Close deregisters.
//
// # Health
//
// Health checking runs inside the calling service, for the services it
// uses (looked up within the last 35 s): every 10 s (plus a random 10-20%;
// the first checks of a service are spread over one interval) each instance
// gets an HTTP GET of its HealthPath (2xx passes, 429 warns, anything else
// or the 2 s timeout fails), a TCP connect (Check: CheckTCP), or, for a
// router instance, the function its own process gave WithCheckFunc. A check
// connects only to the instance's registered host and port, never follows a
// redirect, ignores proxy settings and reads at most 4 KiB of a body.
//
// Statuses have hysteresis: unhealthy after 3 failures in a row, healthy
// after 2 passes (one while the instance has never passed). The score, in
// [0, 1], is a moving average of min(1, 100 ms / response time) per check,
// 0 while unhealthy; selection skips unhealthy instances and scores of 0.5 or
// less. Registry.Health returns status, score, latest result, error, history
// and ejection per instance; each change of status is logged once and
// reported to watchers.
//
// With Redis, results are shared: each instance is probed by two of the
// processes that use its service (rendezvous hashing over a member set with
// heartbeats), both fold their results into one shared state, and every
// process applies it; a change of status reaches every process at once.
// Without Redis, or while it is down, each process probes on its own.
//
// Passive outcomes (ReportOutcome, and the balancer's Pick(...).Done) eject
// an instance after 5 failed calls in a row for 30 s x the times it was
// ejected (at most 300 s), never more than 10% of a service at once (at
// least one); a passing check ends an ejection early. The caller's own
// cancellation does not count.
//
// # Configuration
//
// Each service has a configuration, a JSON object stored with it, with its
// own revision and the last 20 versions kept. UpdateConfig validates it
// before any I/O (at most 512 KiB, nested at most 64 deep, then the
// service's WithConfigValidator), stores it, and notifies the live
// instances: HTTP ones by POST /admin/reload-config (10 s per attempt, 3
// attempts, signed when a TokenSource is set), router ones through the
// WithConfigFunc callback, called by their own process once per revision.
// It returns a report per instance; UpdateConfigIf stores it only if the
// configuration revision is still the one its writer read (ErrConflict
// otherwise). Config reads it through the caches;
// RollbackConfig restores a kept version (RollbackConfigIf only if the
// configuration is still the one rolled back); a registration starts with the
// current one (Registration.Config).
//
// # Watching
//
// Watch delivers a service's changes as this process sees them, in
// revision order: instances added, removed, updated (draining included),
// their health changing, the configuration changing. A watched service is
// kept fresh even if nobody looks it up, so a lost change message delays an
// event by the freshness window at most. A slow reader never blocks the
// Registry: its pending events coalesce to the latest state per instance.
//
// # Draining
//
// Registration.Drain marks an instance draining (no new selections), waits
// until every process has seen that (the propagation delay, 100 ms, when
// changes fan out by Redis or the store, nothing when no other process
// listens, the longest freshness window and the propagation delay, 5.6 s,
// when they do not), then deregisters it. Close drains its registrations
// first, for at most 1 s and half the close timeout (WithCloseDrain). A
// draining instance whose lease lapsed, kept as a suspect, shows as
// StatusSuspect in Get and Watch; Pick never chooses it, and
// Registry.Draining tells that it drains.
//
// # Failure modes
//
//   - Redis down: lookups go from L1 to the database; after the first failed
//     call no lookup waits on Redis (a background probe brings it back soon
//     after its return: 84 ms after a refusing Redis came back, 332 ms after
//     a black-holed one, in README's fault runs). Nothing the database can
//     answer fails.
//   - Database down: lookups answer from L1 or L2, marked stale, for up to the
//     stale-if-error window (5 min); writes fail with an error matching
//     ErrUnavailable that wraps the cause.
//   - Corrupt or other-version data in Redis is a miss, counted, never a panic;
//     so is a corrupt shared health state or message, which the next probe
//     overwrites.
//   - Redis down for health sharing: every process probes every instance of
//     the services it uses itself, and shares again when Redis is back.
//
// # Observability
//
// WithMetrics registers Prometheus metrics (lookups by service and layer,
// lookup durations, cache hits, stale answers, backend errors, health checks,
// instances by status, picks, panic mode, ejections) read from the Registry's
// own counters at scrape time; an L1 hit stays allocation-free. The logger
// (WithLogger) gets each state change once: an instance changing health or
// ejected, Redis or the database lost and back, a configuration changed.
// Registry.Overview summarises every service's health and the cache hit rates,
// and Registry.AdminHandler serves it as JSON and as an HTML dashboard for the
// caller to mount; its mutating endpoints need an Authorizer.
//
// # Defaults
//
// Lease 15 s renewed every 5 s; L1 fresh 5 s (+-10%), stale-while-revalidate 30 s,
// stale-if-error 5 min; negative lookups remembered 1 s; Redis snapshots kept
// 300 s (+-10%) and served for at most one lease TTL; Redis calls time out
// after 250 ms; rows reaped 2 min after their lease ended. Health checks every
// 10 s (+10-20%) with a 2 s timeout, unhealthy after 3 failures, healthy
// after 2 passes; ejection after 5 failed calls, 30 s x times ejected (at most
// 300 s), at most 10% of a service; configurations of at most 512 KiB, 20
// versions kept, notifications 10 s x 3 attempts; drains wait 100 ms for
// propagation, at most 1 s on Close; Close ends within its 5 s close
// timeout, plus at most CloseSlack (200 ms), whatever the backends do.
package discovery
