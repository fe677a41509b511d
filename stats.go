package discovery

import (
	"sync/atomic"
	"unsafe"
)

// stripes spread a hot counter over cache lines so that cores incrementing
// it at once do not contend; the value is their sum.
const stripes = 16

type paddedUint64 struct {
	atomic.Uint64
	_ [56]byte
}

type stripedCounter struct{ cells [stripes]paddedUint64 }

// stripe picks a cell from the address of the caller's stack, which differs
// between goroutines (stacks are at least 2 KiB apart) and costs nothing.
//
//go:nosplit
func stripe() int {
	var x byte
	p := uintptr(unsafe.Pointer(&x))
	return int(uint64(p>>10) * golden >> 60) // Fibonacci hashing: every bit counts
}

// add adds n and returns the new value of the caller's cell, which hot paths
// use to sample (one call in k) without a random number.
func (c *stripedCounter) add(n uint64) uint64 { return c.cells[stripe()].Add(n) }

func (c *stripedCounter) load() uint64 {
	var s uint64
	for i := range c.cells {
		s += c.cells[i].Load()
	}
	return s
}

// Stats counts what a Registry did since New. Reads and picks are counted
// exactly; see Registry.Stats.
type Stats struct {
	// Lookups answered by each layer (index 1..3 = LayerL1..LayerL3), of
	// Get and Lookup. A Pick is counted in Picks, not here, whichever layer
	// answered it: an application that only picks shows no lookups (and
	// the Overview's hit rates none).
	Lookups [4]uint64
	// Stale counts lookups and picks answered with a stale snapshot
	// (stale-while-revalidate, stale-if-error): it counts what was served
	// stale, whoever asked, so it is no share of Lookups.
	Stale uint64
	// NotFound counts lookups of services with no live instance.
	NotFound uint64
	// StoreReads counts loads from the database (L3), for any reason.
	StoreReads uint64
	// StoreErrors counts failed database calls of every kind: loads,
	// registrations, renewals and other writes, listings, the reaper's.
	StoreErrors uint64
	// L2Hits and L2Misses count Redis reads; one that found corrupt or
	// other-version data is a miss, and an L2DecodeError. L2DecodeErrors
	// also counts snapshots pushed with change messages that did not
	// decode (no read: no miss; the service is read instead), change
	// messages that did not parse (dropped), and shared health states and
	// health messages that did not decode (ignored). L2Errors counts
	// failed Redis calls of every kind, health sharing's included: each
	// trips the breaker that takes Redis out of the read path.
	L2Hits, L2Misses, L2Errors, L2DecodeErrors uint64
	// L2Writes and L2StaleWrites count snapshot writes, and writes refused
	// because Redis held a newer revision, or because the service was
	// invalidated (Invalidate, in any process) since the snapshot was read.
	L2Writes, L2StaleWrites uint64
	// Published and Received count change messages.
	Published, Received uint64
	// Invalidations counts L1 entries found older than a published change.
	Invalidations uint64
	// Refreshes counts background refreshes started.
	Refreshes uint64
	// Pushed counts snapshots taken from change messages (the writer pushes
	// the new snapshot with its announcement), each sparing a Redis read.
	Pushed uint64
	// Picks counts selections, by strategy (index: Strategy).
	Picks [StrategyRandom + 1]uint64
	// PanicPicks counts selections made in panic mode (too few healthy
	// instances: chosen among all live ones).
	PanicPicks uint64
	// SelfPreservations counts episodes of self-preservation (instances of a
	// service that stopped renewing together, kept as suspects), and
	// Suspects the instances kept as suspects now, by self-preservation or
	// because their leases ended during a database outage.
	//
	// Suspects counts, in the snapshots this process holds, the instances
	// marked suspect whose hold has not ended at the time of the call; an
	// instance whose lease ended after its snapshot was built counts from
	// the snapshot's next rebuild (a lookup's load, or a change). A database
	// outage ends, for this process, at its first call that the database
	// answers: a lookup's load (or its probe, when Redis answered it), a
	// renewal, the reaper, a revalidation after Redis reconnects. Until
	// then the leases that ended during the outage stay held, so a process
	// that makes no such call (it stopped looking the service up) counts
	// them until it makes one, and for two lease TTLs after (or the
	// self-preservation grace, if longer: WithSelfPreservation). Stats
	// reads what the process knows; it runs no timer and asks no database.
	SelfPreservations uint64
	Suspects          int64
	// Resyncs counts revalidations of the whole cache after a
	// (re)subscription to Redis or its return, counted when finished.
	Resyncs uint64
	// ChecksPassed, ChecksWarned and ChecksFailed count the active health
	// checks this process ran, by result; Ejections the passive ejections.
	ChecksPassed, ChecksWarned, ChecksFailed uint64
	Ejections                                uint64
}

type counters struct {
	l1Hits, l1Misses                                                               stripedCounter
	l2, l3, stale, notFound, storeReads, storeErrs, invalidated, refreshes, pushed atomic.Uint64
	preservations                                                                  atomic.Uint64
	resyncs                                                                        atomic.Uint64
	// panics and ejections count those of services whose state was
	// forgotten (dropState); the others count in their state.
	panics, ejections atomic.Uint64
	// checks counts the active checks this process ran, by result: passed,
	// warned, failed (metrics.go's checkResults).
	checks [3]atomic.Uint64
}
