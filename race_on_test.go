//go:build race

package discovery_test

// raceEnabled: the race detector slows every call several times over, so
// latency criteria are reported rather than enforced under it.
const raceEnabled = true
