package health

import (
	"time"
	"unicode/utf8"

	"github.com/rssbot/discovery/internal/core"
)

// Score and history constants.
const (
	// ScoreRef is the response time that still scores 1: a passing check
	// scores min(1, ScoreRef/RTT) (the seed's rule, 100 ms / response time).
	ScoreRef = 100 * time.Millisecond
	// ScoreAlpha is the weight of the newest sample in the score's EWMA. At
	// 0.25 a perfect score stays above 0.5 for two failures and drops below
	// it at the third, together with the default unhealthy threshold.
	ScoreAlpha = 0.25
	// WarningFactor scales the sample of a warning (HTTP 429): the instance
	// answers but asks for less traffic, so it scores lower yet stays above
	// 0.5 when fast.
	WarningFactor = 0.6
	// RecentMax is how many of the latest results a State carries, so that
	// processes that do not probe an instance still see its recent history.
	RecentMax = 4
	// MaxErrLen bounds the error text kept per result.
	MaxErrLen = 256
	// maxRun caps the consecutive counters.
	maxRun = 1 << 20
	// MaxThreshold is the largest threshold the capped counters reach.
	MaxThreshold = maxRun
)

// Thresholds are how many consecutive results change an instance's status.
type Thresholds struct {
	// Healthy is how many passes in a row bring an unhealthy instance back
	// (and how many results of one kind switch between healthy and
	// warning). Until an instance has passed once, one pass is enough.
	Healthy int
	// Unhealthy is how many failures in a row make an instance unhealthy.
	Unhealthy int
}

// Check is one result as the state keeps it.
type Check struct {
	// At is when the check ended, in Unix nanoseconds.
	At int64
	// RTT is how long it took.
	RTT time.Duration
	// Status is StatusHealthy (passed), StatusWarning or StatusUnhealthy.
	Status core.Status
	// Err is the reason it did not pass ("" if it did), at most MaxErrLen bytes.
	Err string
}

// State is the health of one instance: its status with the counters that
// give it hysteresis, its score and its latest results. Processes share it
// through Redis (see Encode); Seq orders the versions.
type State struct {
	// Seq increases with every write of the shared state; a process applies
	// a received State only if its Seq is higher than the one it holds.
	Seq int64
	// Status is Unknown until the first status is reached, then Healthy,
	// Warning or Unhealthy.
	Status core.Status
	// Score is in [0, 1]: 1 before any check, 0 while unhealthy, else an
	// EWMA of the results' samples.
	Score float64
	// Passed is true once the instance has been healthy or warning; before,
	// one pass is enough to become healthy (the start-up rule).
	Passed bool
	// Up and Down count the consecutive passing (or warning) and failing
	// results; Same counts consecutive results of the kind of the last one.
	Up, Down, Same int
	// Last is the kind of the latest result (StatusUnknown before any).
	Last core.Status
	// By is the ID of the process that wrote the latest result.
	By string
	// Recent are the latest results, oldest first, at most RecentMax.
	Recent []Check
}

// New returns the state of an instance never checked.
func New() State { return State{Score: 1} }

// Latest returns the latest result, if any.
func (s *State) Latest() (Check, bool) {
	if len(s.Recent) == 0 {
		return Check{}, false
	}
	return s.Recent[len(s.Recent)-1], true
}

// Sample is the score of one result: min(1, ScoreRef/RTT) when it passed,
// WarningFactor times that for a warning, 0 when it failed.
func Sample(c Check) float64 {
	if c.Status != core.StatusHealthy && c.Status != core.StatusWarning {
		return 0
	}
	s := 1.0
	if c.RTT > ScoreRef {
		s = float64(ScoreRef) / float64(c.RTT)
	}
	if c.Status == core.StatusWarning {
		s *= WarningFactor
	}
	return s
}

// Apply adds one result and returns the status before it. The status moves:
//
//   - to Unhealthy after th.Unhealthy consecutive failures;
//   - from Unknown or Unhealthy to the result's kind (Healthy or Warning)
//     after th.Healthy consecutive passes, or one if it never passed;
//   - between Healthy and Warning after th.Healthy consecutive results of
//     the other kind.
//
// The score restarts at the sample when the instance comes up, is 0 while
// it is unhealthy, and is otherwise the EWMA of the samples.
func (s *State) Apply(c Check, th Thresholds) (from core.Status) {
	from = s.Status
	kind := c.Status
	if kind == core.StatusUnhealthy {
		s.Down, s.Up = inc(s.Down), 0
	} else {
		s.Up, s.Down = inc(s.Up), 0
	}
	if kind == s.Last {
		s.Same = inc(s.Same)
	} else {
		s.Same, s.Last = 1, kind
	}
	to := from
	switch {
	case kind == core.StatusUnhealthy:
		if s.Down >= th.Unhealthy {
			to = core.StatusUnhealthy
		}
	case from == core.StatusUnknown || from == core.StatusUnhealthy:
		if !s.Passed || s.Up >= th.Healthy {
			to = kind
		}
	case from != kind:
		if s.Same >= th.Healthy {
			to = kind
		}
	}
	sample := Sample(c)
	switch {
	case to == core.StatusUnhealthy:
		s.Score = 0
	case to != from && (from == core.StatusUnknown || from == core.StatusUnhealthy):
		s.Score = sample
	default:
		s.Score = ScoreAlpha*sample + (1-ScoreAlpha)*s.Score
	}
	if to == core.StatusHealthy || to == core.StatusWarning {
		s.Passed = true
	}
	s.Status = to
	c.Err = cutErr(c.Err)
	// a new slice: earlier copies of the state may share the old one
	keep := min(len(s.Recent), RecentMax-1)
	recent := make([]Check, 0, keep+1)
	recent = append(recent, s.Recent[len(s.Recent)-keep:]...)
	s.Recent = append(recent, c)
	return from
}

// Clone returns a copy that shares nothing with s.
func (s State) Clone() State {
	s.Recent = append([]Check(nil), s.Recent...)
	return s
}

func inc(n int) int { return min(n+1, maxRun) }

// cutErr bounds an error's text to MaxErrLen bytes, cut before a character
// rather than inside one: Health, the admin API and the logs show it, and a
// check function's error in a language other than English otherwise ended
// in invalid UTF-8.
func cutErr(s string) string {
	if len(s) <= MaxErrLen {
		return s
	}
	// a character is at most UTFMax bytes: past that, s is not UTF-8
	// anyway and is cut where it is
	for n := MaxErrLen; n > MaxErrLen-utf8.UTFMax; n-- {
		if utf8.RuneStart(s[n]) {
			return s[:n]
		}
	}
	return s[:MaxErrLen]
}
