package health

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

func sampleState() State {
	s := New()
	s.Seq = 1764331200123
	s.By = "3f9a0c1d2e4b5a69"
	for i, r := range "PFWF" {
		c := Check{At: 1764331200123456789 + int64(i), RTT: time.Duration(i+1) * time.Millisecond}
		switch r {
		case 'P':
			c.Status = core.StatusHealthy
		case 'W':
			c.Status, c.Err = core.StatusWarning, `discovery: health check answered HTTP 429: "slow down"`
		case 'F':
			c.Status, c.Err = core.StatusUnhealthy, "dial tcp 10.0.0.7:8080: connect: connection refused"
		}
		s.Apply(c, defaultTh)
	}
	return s
}

func TestCodecRoundTrip(t *testing.T) {
	tests := []State{New(), sampleState(), {Seq: 7, Status: core.StatusUnhealthy, Score: 0, Up: 0, Down: 3, Same: 3, Last: core.StatusUnhealthy,
		Recent: []Check{{At: 1, Status: core.StatusUnhealthy, Err: "a:b 12:c"}}}}
	for _, s := range tests {
		got, err := Decode(Encode(&s))
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", s, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
		}
	}
	s := sampleState()
	svc, id, got, err := DecodeMessage(EncodeMessage("db_svc", "10.0.0.7:8080", &s))
	if err != nil || svc != "db_svc" || id != "10.0.0.7:8080" || !reflect.DeepEqual(got, s) {
		t.Fatalf("message round trip: %q %q %+v %v", svc, id, got, err)
	}
}

func TestDecodeRefusesCorruptData(t *testing.T) {
	good := sampleState()
	enc := Encode(&good)
	tests := []string{
		"",
		"h2" + enc[2:],
		enc + " ",
		enc[:len(enc)-1],
		strings.Replace(enc, " 0.", " 1.", 1), // score above 1
		strings.Replace(enc, "h1 1764331200123", "h1 -1", 1), // negative seq
		strings.Replace(enc, good.By, "UPPER", 1),            // bad process id
		strings.Replace(enc, " 4 ", " 5 ", 1),                // more results than allowed
		strings.Replace(enc, " 54:", " 540:", 1),             // error longer than the data
		strings.Replace(enc, " 54:", " 054:", 1),             // non-canonical number
		strings.Replace(enc, "h1 1764331200123 ", "h1 1764331200123  ", 1),
		"h1 1 9 1 0 0 0 0 0 - 0", // status out of range
		"h1 1 0 NaN 0 0 0 0 0 - 0",
		"h1 1 0 1 0 0 0 0 0 - 1 5 5 0 0:", // a result with status unknown
	}
	for _, v := range tests {
		if s, err := Decode(v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%q) = %+v, %v; want ErrCorrupt", v, s, err)
		}
	}
	for _, msg := range []string{"", "db_svc", "db_svc id", "a/b id " + enc, "db_svc i\"d " + enc} {
		if _, _, _, err := DecodeMessage(msg); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeMessage(%q) = %v; want ErrCorrupt", msg, err)
		}
	}
}

// FuzzDecode: whatever Redis hands back, Decode never panics, and what it
// accepts is a valid State that encodes back to an equal one.
func FuzzDecode(f *testing.F) {
	s := sampleState()
	f.Add(Encode(&s))
	n := New()
	f.Add(Encode(&n))
	f.Add("h1 1 0 1 0 0 0 0 0 - 0")
	f.Add("h1 1 3 0 1 0 3 3 3 abc 1 5 5 3 3:a b")
	f.Add(EncodeMessage("db_svc", "x", &s))
	f.Fuzz(func(t *testing.T, v string) {
		s, err := Decode(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode error %v does not match ErrCorrupt", err)
			}
			return
		}
		if s.Status > core.StatusUnhealthy || !(s.Score >= 0 && s.Score <= 1) || len(s.Recent) > RecentMax || s.Seq > MaxSeq {
			t.Fatalf("Decode accepted an invalid state %+v", s)
		}
		again, err := Decode(Encode(&s))
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("re-encoding %+v: %+v, %v", s, again, err)
		}
	})
}

func TestValidProcessID(t *testing.T) {
	for id, want := range map[string]bool{"a": true, "3f9a0c1d2e4b5a69": true, "": false, "A": false, "a-b": false, strings.Repeat("a", 33): false} {
		if got := ValidProcessID(id); got != want {
			t.Errorf("ValidProcessID(%q) = %v; want %v", id, got, want)
		}
	}
}

// FuzzDecodeMessage: a pub/sub message never panics the receiver, and one it
// accepts names a valid service and instance.
func FuzzDecodeMessage(f *testing.F) {
	s := sampleState()
	f.Add(EncodeMessage("db_svc", "10.0.0.7:8080", &s))
	f.Add("db_svc x h1 1 0 1 0 0 0 0 0 - 0")
	f.Add("a b c")
	f.Fuzz(func(t *testing.T, msg string) {
		svc, id, st, err := DecodeMessage(msg)
		if err != nil {
			return
		}
		if core.ValidateServiceName(svc) != nil || core.ValidateInstanceID(id) != nil {
			t.Fatalf("accepted names %q %q", svc, id)
		}
		if got := EncodeMessage(svc, id, &st); got != msg {
			if _, _, again, err := DecodeMessage(got); err != nil || !reflect.DeepEqual(again, st) {
				t.Fatalf("re-encoding %q: %v", msg, err)
			}
		}
	})
}

// A shared state and a change message written by a process of an earlier
// release (1bd4bc7, 2026-11-28) decode, and encode back to the same text:
// processes of both releases share the health hash and channel during an
// upgrade. A change to Encode that fails this needs a new codecVersion.
func TestDecodesStatesOfEarlierReleases(t *testing.T) {
	b, err := os.ReadFile("testdata/state-1bd4bc7.txt")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(string(b))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.Status != core.StatusHealthy || s.By != "d0e8fc0a71ac2a31" || len(s.Recent) != 4 || s.Seq != 1796030043349 {
		t.Fatalf("decoded %+v", s)
	}
	if got := Encode(&s); got != string(b) {
		t.Fatalf("Encode of the decoded state differs from what the earlier release wrote:\n got %q\nwant %q", got, b)
	}
	b, err = os.ReadFile("testdata/message-1bd4bc7.txt")
	if err != nil {
		t.Fatal(err)
	}
	svc, id, s, err := DecodeMessage(string(b))
	if err != nil || svc != "svce" || id != "o1" || s.Status != core.StatusHealthy {
		t.Fatalf("DecodeMessage = %q %q %+v %v", svc, id, s, err)
	}
	if got := EncodeMessage(svc, id, &s); got != string(b) {
		t.Fatalf("EncodeMessage differs from what the earlier release wrote:\n got %q\nwant %q", got, b)
	}
}
