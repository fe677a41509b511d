package auth

import (
	"sync"
	"time"
)

// DefaultUnknownCallerRate is how many lookups a second, on average, a
// Verifier makes of callers the registry may not know (WithUnknownCallerRate).
const DefaultUnknownCallerRate = 10

// unknownCallerBurst is how many seconds' worth of lookups of unknown
// callers a Verifier makes at once after a quiet time.
const unknownCallerBurst = 10

// unknownMemory is how long at most a name the registry did not know is
// answered unknown without a lookup (see admit), as the Registry's
// negative cache (WithNegativeTTL, 1 s by default) would. A shorter
// negative TTL shortens it, so that a service registered meanwhile is not
// refused longer than the Registry would refuse it.
const unknownMemory = time.Second

// maxKnownCallers bounds the services a Verifier has learnt lately that
// the registry knows. Past it, those become the ones it learnt before,
// still known, and it forgets what it learnt before them unless seen
// since: cleared at once instead, a caller that had just called, calling
// again during a flood of made-up names, was refused as a stranger.
const maxKnownCallers = 4096

// strangers bounds the lookups of callers the registry does not know.
//
// A token's caller is looked up before its signature can be checked (the
// key that checks it is the caller's), so a client that makes names up had
// every new name read from Redis and the database, as many a second as it
// sent requests, each leaving a negative entry in the Registry's cache. A
// caller the policy names is looked up freely (the policy bounds those),
// and so is one the registry was found to know. Any other lookup takes a
// token from a bucket (rate a second, burst at most) and gives it back if
// the registry knows the caller; without a token the request is refused
// unread. A name found unknown is answered unknown without a lookup for a
// second (the negative TTL if shorter), reading nothing. Requests of a
// caller whose paid lookup is under way take none either: the Registry
// loads a service once for all who ask meanwhile, and a busy caller's
// requests at start-up, each paying, spent the burst on one load and were
// refused past it.
type strangers struct {
	rate, burst float64       // rate 0: no bound
	memory      time.Duration // how long a name found unknown is answered so without a lookup

	mu     sync.Mutex
	tokens float64
	at     time.Time            // of the last refill
	known  map[string]struct{}  // callers the registry knew, learnt or seen lately
	before map[string]struct{}  // those of known's previous generation
	recent map[string]time.Time // callers it did not -> when
	// pruneAt is the size of recent at which its expired names are swept.
	pruneAt int
	paying  map[string]struct{} // callers whose paid lookup is under way
}

// newStrangers returns the bound of perSecond lookups (0: none) for a
// Registry remembering a name it does not know for negativeTTL.
func newStrangers(perSecond int, negativeTTL time.Duration, now time.Time) *strangers {
	rate := float64(perSecond)
	return &strangers{
		memory: min(unknownMemory, negativeTTL), rate: rate, burst: rate * unknownCallerBurst, tokens: rate * unknownCallerBurst, at: now,
		pruneAt: int(rate*unknownCallerBurst) + 1, known: map[string]struct{}{}, before: map[string]struct{}{}, recent: map[string]time.Time{}, paying: map[string]struct{}{},
	}
}

// admission is admit's answer.
type admission uint8

const (
	admitFree    admission = iota // look it up; no token taken
	admitPaid                     // look it up; a token taken, which settle gives back if the registry knows it
	admitUnknown                  // found unknown within the memory: unknown, without a lookup
	admitRefused                  // no token left: refused unread
)

// admit says whether caller may be looked up now.
//
// A name found unknown within the memory is answered unknown here, not
// looked up again: the Registry's negative cache would answer it, but an
// L1 that is full may have dropped that answer (ristretto evicts, and
// drops a Set when its buffer is full), and then every request of the
// name read the database for the rest of the second, unbounded. The price:
// a service registered within a second of its name being found unknown
// gets 401 for the rest of that second.
func (s *strangers) admit(caller string, now time.Time) admission {
	if s.rate == 0 {
		return admitFree
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.known[caller]; ok {
		return admitFree
	}
	if _, ok := s.before[caller]; ok {
		s.learn(caller) // seen again: kept another generation
		return admitFree
	}
	if at, ok := s.recent[caller]; ok && !now.Before(at) && now.Sub(at) < s.memory {
		return admitUnknown
	}
	if _, ok := s.paying[caller]; ok {
		return admitFree // joins that lookup's load
	}
	switch d := now.Sub(s.at); {
	case d > 0:
		s.tokens = min(s.burst, s.tokens+d.Seconds()*s.rate)
		s.at = now
	case d < 0:
		// The clock was set back (a wall clock without a monotonic
		// reading): kept, the last refill stayed ahead of it and no
		// token came back until the clock had made up the step.
		s.at = now
	}
	if s.tokens < 1 {
		return admitRefused
	}
	s.tokens--
	s.paying[caller] = struct{}{}
	return admitPaid
}

// settle records what a lookup admit let through at now found: the
// registry knows caller, or says it has no such service; a lookup that
// failed keeps its token. now is
// the admission's time, not the answer's: the negative cache's memory runs
// from its read, which came after, and timed from the answer the free
// lookups outlived it by as long as the read took.
func (s *strangers) settle(caller string, took bool, found callerLookup, now time.Time) {
	if s.rate == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if took {
		delete(s.paying, caller)
	}
	switch found {
	case callerKnown:
		if took {
			s.tokens = min(s.burst, s.tokens+1)
		}
		if _, ok := s.known[caller]; !ok {
			s.learn(caller)
		}
		delete(s.recent, caller)
	case callerUnknown:
		delete(s.known, caller) // a service gone from the registry
		delete(s.before, caller)
		if !took {
			return // its memory still runs; refreshed only by a lookup that paid
		}
		if len(s.recent) >= s.pruneAt {
			// Swept when it has doubled since the last sweep: at a size
			// fixed by the burst, a rate high enough to keep it full swept
			// it all for each name.
			for name, at := range s.recent {
				if now.Before(at) || now.Sub(at) >= s.memory {
					delete(s.recent, name)
				}
			}
			s.pruneAt = max(2*len(s.recent), int(s.burst)+1)
		}
		s.recent[caller] = now
	}
}

// learn notes that the registry knows caller, starting a generation when
// known is full; s.mu is held.
func (s *strangers) learn(caller string) {
	delete(s.before, caller)
	if len(s.known) >= maxKnownCallers {
		s.before, s.known = s.known, s.before
		clear(s.known)
	}
	s.known[caller] = struct{}{}
}
