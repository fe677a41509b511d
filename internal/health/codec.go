package health

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// The shared encoding of a State, as a Redis hash field and inside a pub/sub
// message. It is text, fields separated by single spaces:
//
//	h1 <seq> <status> <score> <passed> <up> <down> <same> <last> <by> <n>
//	   then n times: <at> <rtt> <status> <len>:<err>
//
// Statuses are numbers, times Unix nanoseconds, rtt nanoseconds, by the
// writer's process ID ("-" if none); err is length-prefixed and may contain
// spaces. Anything that does not decode exactly is refused (ErrCorrupt);
// readers treat it as absent. Processes of several releases share states
// during an upgrade: a change to the encoding needs a new codecVersion
// (testdata holds a state an earlier release wrote).

// ErrCorrupt is returned for data that does not decode.
var ErrCorrupt = errors.New("discovery: corrupt shared health state")

const codecVersion = "h1"

// MaxSeq bounds the sequence of a shared state. Writers take the wall clock
// in milliseconds or one more than the sequence before (nextSeq), far below
// it for hundreds of thousands of years; a larger one is corrupt. Taken, the
// largest int64 made every later sequence (one more) wrap below it, and no
// result was adopted again.
const MaxSeq = 1 << 53

// maxProcessID bounds the length of a process ID.
const maxProcessID = 32

// ValidProcessID reports whether id can name a process: 1 to 32 bytes of
// [0-9a-z].
func ValidProcessID(id string) bool {
	if id == "" || len(id) > maxProcessID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// Encode returns the shared encoding of s.
func Encode(s *State) string {
	b := make([]byte, 0, 64+len(s.Recent)*48)
	b = append(b, codecVersion...)
	b = appendInt(b, s.Seq)
	b = appendInt(b, int64(s.Status))
	b = append(b, ' ')
	b = strconv.AppendFloat(b, s.Score, 'g', -1, 64)
	passed := int64(0)
	if s.Passed {
		passed = 1
	}
	b = appendInt(b, passed)
	b = appendInt(b, int64(s.Up))
	b = appendInt(b, int64(s.Down))
	b = appendInt(b, int64(s.Same))
	b = appendInt(b, int64(s.Last))
	b = append(b, ' ')
	if s.By == "" {
		b = append(b, '-')
	} else {
		b = append(b, s.By...)
	}
	b = appendInt(b, int64(len(s.Recent)))
	for _, c := range s.Recent {
		b = appendInt(b, c.At)
		b = appendInt(b, int64(c.RTT))
		b = appendInt(b, int64(c.Status))
		b = appendInt(b, int64(len(c.Err)))
		b = append(b, ':')
		b = append(b, c.Err...)
	}
	return string(b)
}

func appendInt(b []byte, v int64) []byte {
	b = append(b, ' ')
	return strconv.AppendInt(b, v, 10)
}

// decoder reads space-separated fields.
type decoder struct {
	s   string
	err bool
}

func (d *decoder) field() string {
	if d.err {
		return ""
	}
	if d.s == "" || d.s[0] != ' ' {
		d.err = true
		return ""
	}
	d.s = d.s[1:]
	i := strings.IndexByte(d.s, ' ')
	if i < 0 {
		i = len(d.s)
	}
	f := d.s[:i]
	d.s = d.s[i:]
	if f == "" {
		d.err = true
	}
	return f
}

func (d *decoder) int(lo, hi int64) int64 {
	f := d.field()
	if d.err {
		return 0
	}
	v, err := strconv.ParseInt(f, 10, 64)
	if err != nil || v < lo || v > hi || strconv.FormatInt(v, 10) != f {
		d.err = true
		return 0
	}
	return v
}

// status reads a status that a State may hold: unknown, healthy, warning or
// unhealthy.
func (d *decoder) status() core.Status {
	return core.Status(d.int(int64(core.StatusUnknown), int64(core.StatusUnhealthy)))
}

// Decode parses the shared encoding of a State.
func Decode(v string) (State, error) {
	var s State
	rest, ok := strings.CutPrefix(v, codecVersion)
	if !ok {
		return s, ErrCorrupt
	}
	d := &decoder{s: rest}
	s.Seq = d.int(0, MaxSeq)
	s.Status = d.status()
	if f := d.field(); !d.err {
		score, err := strconv.ParseFloat(f, 64)
		if err != nil || !(score >= 0 && score <= 1) {
			return State{}, ErrCorrupt
		}
		s.Score = score
	}
	s.Passed = d.int(0, 1) == 1
	s.Up = int(d.int(0, maxRun))
	s.Down = int(d.int(0, maxRun))
	s.Same = int(d.int(0, maxRun))
	s.Last = d.status()
	if by := d.field(); !d.err && by != "-" {
		if !ValidProcessID(by) {
			return State{}, ErrCorrupt
		}
		s.By = by
	}
	n := int(d.int(0, RecentMax))
	if d.err {
		return State{}, ErrCorrupt
	}
	if n > 0 {
		s.Recent = make([]Check, n)
	}
	for i := range n {
		c := &s.Recent[i]
		c.At = d.int(0, math.MaxInt64)
		c.RTT = time.Duration(d.int(0, math.MaxInt64))
		c.Status = d.status()
		if c.Status == core.StatusUnknown {
			d.err = true
		}
		if d.err || d.s == "" || d.s[0] != ' ' {
			return State{}, ErrCorrupt
		}
		l, after, found := strings.Cut(d.s[1:], ":")
		ln, err := strconv.Atoi(l)
		if !found || err != nil || ln < 0 || ln > MaxErrLen || ln > len(after) || strconv.Itoa(ln) != l {
			return State{}, ErrCorrupt
		}
		c.Err = after[:ln]
		d.s = after[ln:]
	}
	if d.err || d.s != "" || s.Last == core.StatusUnknown && n > 0 {
		return State{}, ErrCorrupt
	}
	return s, nil
}

// EncodeMessage returns the pub/sub message that announces the state of an
// instance: "<service> <id> <state>".
func EncodeMessage(service, id string, s *State) string {
	return service + " " + id + " " + Encode(s)
}

// DecodeMessage parses a message of EncodeMessage, validating the names.
func DecodeMessage(msg string) (service, id string, s State, err error) {
	service, rest, ok := strings.Cut(msg, " ")
	if !ok || core.ValidateServiceName(service) != nil {
		return "", "", State{}, ErrCorrupt
	}
	id, rest, ok = strings.Cut(rest, " ")
	if !ok || core.ValidateInstanceID(id) != nil {
		return "", "", State{}, ErrCorrupt
	}
	s, err = Decode(rest)
	if err != nil {
		return "", "", State{}, err
	}
	return service, id, s, nil
}
