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
// looked up again without a token: the Registry's negative cache
// (WithNegativeTTL, 1 s by default) answers it meanwhile. A shorter
// negative TTL shortens it: past the TTL a lookup reads the store again,
// and a 100 ms TTL had each made-up name read ten times for its token.
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
// unread. A name found unknown is looked up again without a token for a
// second (the negative TTL if shorter): the negative cache answers it,
// reading nothing. Requests of a caller whose paid lookup is under way
// take none either: the Registry loads a service once for all who ask
// meanwhile, and a busy caller's requests at start-up, each paying, spent
// the burst on one load and were refused past it.
type strangers struct {
	rate, burst float64       // rate 0: no bound
	memory      time.Duration // how long a name found unknown is looked up freely

	mu     sync.Mutex
	tokens float64
	at     time.Time            // of the last refill
	known  map[string]struct{}  // callers the registry knew, learnt or seen lately
	before map[string]struct{}  // those of known's previous generation
	recent map[string]time.Time // callers it did not -> when
	// pruneAt is the size of recent at which its expired names are swept.
	pruneAt int
	paying map[string]struct{}  // callers whose paid lookup is under way
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

// admit reports whether caller may be looked up now (ok), and whether that
// took a token, which settle gives back if the registry knows it.
func (s *strangers) admit(caller string, now time.Time) (took, ok bool) {
	if s.rate == 0 {
		return false, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.known[caller]; ok {
		return false, true
	}
	if _, ok := s.before[caller]; ok {
		s.learn(caller) // seen again: kept another generation
		return false, true
	}
	if at, ok := s.recent[caller]; ok && !now.Before(at) && now.Sub(at) < s.memory {
		return false, true
	}
	if _, ok := s.paying[caller]; ok {
		return false, true // joins that lookup's load
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
		return false, false
	}
	s.tokens--
	s.paying[caller] = struct{}{}
	return true, true
}

// settle records what a lookup admit let through at now found: whether
// the registry knows caller (known), or says it has no such service
// (unknown); neither when the lookup failed, which keeps its token. now is
// the admission's time, not the answer's: the negative cache's memory runs
// from its read, which came after, and timed from the answer the free
// lookups outlived it by as long as the read took.
func (s *strangers) settle(caller string, took, known, unknown bool, now time.Time) {
	if s.rate == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if took {
		delete(s.paying, caller)
	}
	switch {
	case known:
		if took {
			s.tokens = min(s.burst, s.tokens+1)
		}
		if _, ok := s.known[caller]; !ok {
			s.learn(caller)
		}
		delete(s.recent, caller)
	case unknown:
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
