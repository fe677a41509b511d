package health

import (
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rssbot/discovery/internal/core"
)

var defaultTh = Thresholds{Healthy: 2, Unhealthy: 3}

// run applies results written as a string: 'P' pass (fast), 'S' pass (slow,
// 400 ms), 'W' warning, 'F' failure. It returns the status after each.
func run(s *State, th Thresholds, results string) []core.Status {
	out := make([]core.Status, 0, len(results))
	for i, r := range results {
		c := Check{At: int64(i + 1), RTT: 10 * time.Millisecond}
		switch r {
		case 'P':
			c.Status = core.StatusHealthy
		case 'S':
			c.Status, c.RTT = core.StatusHealthy, 400*time.Millisecond
		case 'W':
			c.Status = core.StatusWarning
		case 'F':
			c.Status, c.Err = core.StatusUnhealthy, "boom"
		}
		s.Apply(c, th)
		out = append(out, s.Status)
	}
	return out
}

func letters(sts []core.Status) string {
	var b strings.Builder
	for _, s := range sts {
		b.WriteByte("?HWUEDS"[s])
	}
	return b.String()
}

func TestThresholds(t *testing.T) {
	tests := []struct {
		name    string
		th      Thresholds
		results string
		want    string // status after each result: ? unknown, H, W, U
	}{
		{"one pass at start-up", defaultTh, "P", "H"},
		{"one warning at start-up", defaultTh, "W", "W"},
		{"failures at start-up need the threshold", defaultTh, "FFF", "??U"},
		{"one pass after failing at start-up", defaultTh, "FFFP", "??UH"},
		{"unhealthy after 3 failures", defaultTh, "PFFF", "HHHU"},
		{"a pass resets the failures", defaultTh, "PFFPFF", "HHHHHH"},
		{"healthy after 2 passes", defaultTh, "PFFFPP", "HHHUUH"},
		{"back as warning", defaultTh, "PFFFWW", "HHHUUW"},
		{"healthy to warning after 2", defaultTh, "PWWP", "HHWW"},
		{"warning to healthy after 2", defaultTh, "WPP", "WWH"},
		{"pass and warning flapping", defaultTh, "PWPWPW", "HHHHHH"},
		{"custom thresholds", Thresholds{Healthy: 1, Unhealthy: 1}, "PFPF", "HUHU"},
		{"higher thresholds", Thresholds{Healthy: 3, Unhealthy: 5}, "PFFFFFPPP", "HHHHHUUUH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			if got := letters(run(&s, tt.th, tt.results)); got != tt.want {
				t.Fatalf("%s -> %s; want %s", tt.results, got, tt.want)
			}
		})
	}
}

// A flapping instance (pass, fail, pass, ...) changes status at most once
// per threshold window, whatever the phase it starts in.
func TestFlappingChangesAtMostOncePerWindow(t *testing.T) {
	for _, pattern := range []string{"PF", "FP", "PPF", "PFF", "FFP", "WF"} {
		for _, th := range []Thresholds{defaultTh, {Healthy: 1, Unhealthy: 2}, {Healthy: 3, Unhealthy: 3}} {
			s := New()
			results := strings.Repeat(pattern, 50)
			sts := run(&s, th, results)
			window := min(th.Healthy, th.Unhealthy)
			last, lastAt := core.StatusUnknown, -window
			for i, st := range sts {
				if st == last {
					continue
				}
				if last != core.StatusUnknown && i-lastAt < window {
					t.Fatalf("%q with %+v: changes at results %d and %d (%s)", pattern, th, lastAt, i, letters(sts))
				}
				last, lastAt = st, i
			}
		}
	}
}

func TestScore(t *testing.T) {
	tests := []struct {
		name    string
		results string
		want    float64
	}{
		{"never checked", "", 1},
		{"fast", "P", 1},
		{"slow starts at its sample", "S", 0.25},
		{"warning", "W", WarningFactor},
		{"one failure from perfect", "PF", 0.75},
		{"two failures from perfect", "PFF", 0.5625},
		{"unhealthy is 0", "PFFF", 0},
		{"back restarts at the sample", "PFFFPP", 1},
		{"slowing down is smoothed", "PS", 0.25*0.25 + 0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			run(&s, defaultTh, tt.results)
			if math.Abs(s.Score-tt.want) > 1e-9 {
				t.Fatalf("score after %q = %v; want %v", tt.results, s.Score, tt.want)
			}
		})
	}
	// A perfect instance stays above the selection cut-off (0.5) until it is
	// unhealthy, so the score does not undo the hysteresis.
	s := New()
	run(&s, defaultTh, "PFF")
	if s.Score <= 0.5 || s.Status != core.StatusHealthy {
		t.Fatalf("after two failures: %v %v", s.Status, s.Score)
	}
}

func TestRecentIsBoundedAndNotShared(t *testing.T) {
	s := New()
	run(&s, defaultTh, "PFPFPFPF")
	if len(s.Recent) != RecentMax {
		t.Fatalf("len(Recent) = %d; want %d", len(s.Recent), RecentMax)
	}
	if s.Recent[RecentMax-1].At != 8 || s.Recent[0].At != 5 {
		t.Fatalf("Recent = %+v; want results 5..8", s.Recent)
	}
	c := s.Clone()
	run(&s, defaultTh, "P")
	if c.Recent[RecentMax-1].At != 8 {
		t.Fatalf("a clone changed with the original: %+v", c.Recent)
	}
	long := Check{At: 1, Status: core.StatusUnhealthy, Err: strings.Repeat("x", 1000)}
	s.Apply(long, defaultTh)
	if l, _ := s.Latest(); len(l.Err) != MaxErrLen {
		t.Fatalf("error kept %d bytes; want %d", len(l.Err), MaxErrLen)
	}
}

// A long error is cut at a character boundary: cut inside one, the error
// that Health, the admin API and the logs show ended in invalid UTF-8 (a
// replacement character in JSON), as a check function's error in any
// language but English did once past MaxErrLen bytes.
func TestLongErrorIsCutAtACharacter(t *testing.T) {
	s := New()
	msg := strings.Repeat("é", MaxErrLen) // 2 bytes each; MaxErrLen is even
	s.Apply(Check{At: 1, Status: core.StatusUnhealthy, Err: "x" + msg}, defaultTh)
	l, _ := s.Latest()
	if !utf8.ValidString(l.Err) || len(l.Err) > MaxErrLen || len(l.Err) < MaxErrLen-utf8.UTFMax {
		t.Fatalf("error kept as %d bytes, valid UTF-8 %v; want valid, at most %d and close to it",
			len(l.Err), utf8.ValidString(l.Err), MaxErrLen)
	}
}
