package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

func sample() *core.Service {
	t0 := time.Unix(0, 1764331200123456789)
	return &core.Service{
		Name: "db_svc", Revision: 42, ConfigRevision: 3, Config: []byte(`{"pool":8}`),
		Instances: []core.Instance{
			{ID: "a", Service: "db_svc", Host: "10.0.0.7", Port: 8080, Method: core.MethodHTTP, Weight: 100,
				Zone: "eu-1a", Version: "v1", HealthPath: "/health", Tags: []string{"x", "ü"},
				Metadata: map[string]string{"k": "v"}, RegisteredAt: t0, ExpiresAt: t0.Add(15 * time.Second)},
			{ID: "b", Service: "db_svc", Host: "::1", Port: 1, Method: core.MethodRouter, Check: core.CheckTCP,
				Status: core.StatusDraining, RegisteredAt: t0, ExpiresAt: t0},
		},
		Keys: []core.PublicKey{
			{ID: "k1", Algorithm: "EdDSA", Key: []byte{1, 2, 3}, CreatedAt: t0},
			{ID: "k0", Algorithm: "ES256", Key: []byte{4}, CreatedAt: t0, RetiresAt: t0.Add(time.Hour)},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	in := sample()
	at := time.Unix(0, 1764331200999)
	got, gotAt, err := Decode(string(Encode(in, at)))
	if err != nil {
		t.Fatal(err)
	}
	if !gotAt.Equal(at) || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", in) {
		t.Fatalf("round trip:\n got %+v @%v\nwant %+v @%v", got, gotAt, in, at)
	}
}

func TestHeaderSortsLikeRevisionThenTime(t *testing.T) {
	tests := []struct{ a, b [2]int64 }{
		{[2]int64{4, 999}, [2]int64{5, 1}},
		{[2]int64{5, 1}, [2]int64{5, 2}},
		{[2]int64{9, 0}, [2]int64{10, 0}},
	}
	for _, tt := range tests {
		if !(Header(tt.a[0], tt.a[1]) < Header(tt.b[0], tt.b[1])) {
			t.Errorf("header %v does not sort before %v", tt.a, tt.b)
		}
	}
	rev, at, err := ParseHeader(Header(12, 34))
	if rev != 12 || at != 34 || err != nil {
		t.Fatalf("ParseHeader = %d %d %v", rev, at, err)
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	good := string(Encode(sample(), time.Unix(1, 0)))
	tests := []struct {
		name string
		v    string
		want error
	}{
		{"empty", "", ErrCorrupt},
		{"short", "D1000", ErrCorrupt},
		{"other version", "D9" + good[2:], ErrVersion},
		{"json", `{"name":"db_svc","revision":1}`, ErrCorrupt},
		{"truncated", good[:len(good)-3], ErrCorrupt},
		{"trailing", good + "x", ErrCorrupt},
		{"non-digit header", "D1" + "x" + good[3:], ErrCorrupt},
		{"signed revision", "D1" + "-" + good[3:], ErrCorrupt}, // found by FuzzDecode
		{"signed load time", good[:22] + "+" + good[23:], ErrCorrupt},
		{"huge count", Header(1, 1) + "\x06db_svc\x00\x00\xff\xff\xff\xff\x0f", ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Decode(tt.v); !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v; want %v", err, tt.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(string(Encode(sample(), time.Unix(1, 0))))
	f.Add(string(Encode(&core.Service{Name: "x", Revision: 1}, time.Unix(0, 0))))
	f.Add("D1")
	f.Fuzz(func(t *testing.T, v string) {
		svc, at, err := Decode(v)
		if err != nil {
			return
		}
		// Whatever decodes holds only what a validated write can hold.
		for _, in := range svc.Instances {
			if in.Method > core.MethodRouter || in.Check > core.CheckNone || in.Status > core.StatusSuspect ||
				in.Port < 1 || in.Port > 65535 || in.Weight < 0 || in.Weight > core.MaxWeight {
				t.Fatalf("decoded an instance no write produces: %+v", in)
			}
		}
		// Whatever decodes must encode back to the same bytes, modulo map order.
		again, at2, err := Decode(string(Encode(svc, at)))
		if err != nil || !at.Equal(at2) || again.Revision != svc.Revision || len(again.Instances) != len(svc.Instances) {
			t.Fatalf("re-encoding a decoded value failed: %v", err)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	svc := sample()
	for i := range 8 {
		in := svc.Instances[0]
		in.ID = fmt.Sprint("i", i)
		svc.Instances = append(svc.Instances, in)
	}
	v := string(Encode(svc, time.Unix(1, 0)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(v); err != nil {
			b.Fatal(err)
		}
	}
}

// Decode refuses instance fields no writer produces (every write is
// validated): a status, method or check kind outside their enums, a port
// outside 1-65535, a weight outside 0..MaxWeight. One flipped byte in Redis
// reached lookups as Status(200), and the metrics collector indexed an
// array by it.
func TestDecodeRefusesImpossibleInstanceFields(t *testing.T) {
	mutations := map[string]func(in *core.Instance){
		"status 200":   func(in *core.Instance) { in.Status = 200 },
		"method 9":     func(in *core.Instance) { in.Method = 9 },
		"check 9":      func(in *core.Instance) { in.Check = 9 },
		"port 70000":   func(in *core.Instance) { in.Port = 70000 },
		"port 0 http":  func(in *core.Instance) { in.Port = 0 },
		"weight -5":    func(in *core.Instance) { in.Weight = -5 },
		"weight 10001": func(in *core.Instance) { in.Weight = core.MaxWeight + 1 },
	}
	for name, mut := range mutations {
		svc := sample()
		mut(&svc.Instances[0])
		got, _, err := Decode(string(Encode(svc, time.Unix(1, 0))))
		if err == nil {
			in := got.Instances[0]
			t.Errorf("%s: Decode accepted it: status=%v method=%v check=%v port=%d weight=%d",
				name, in.Status, in.Method, in.Check, in.Port, in.Weight)
		}
	}
}

// Every snapshot Encode writes decodes, however many keys it has: Decode
// refused more than 1024, so a service that had published 1025 keys (each
// Signer start and rotation publishes one) was an L2 miss and a decode
// error on every read, falling through to the database.
func TestManyKeysRoundTrip(t *testing.T) {
	for _, n := range []int{1024, 1025, 5000} {
		in := sample()
		in.Keys = nil
		t0 := time.Unix(0, 1764331200123456789)
		for i := range n {
			in.Keys = append(in.Keys, core.PublicKey{ID: fmt.Sprintf("k%05d", i), Algorithm: "EdDSA",
				Key: []byte{byte(i), byte(i >> 8)}, CreatedAt: t0, RetiresAt: t0.Add(time.Duration(i) * time.Second)})
		}
		at := time.Unix(0, 1764331200999)
		got, _, err := Decode(string(Encode(in, at)))
		if err != nil {
			t.Fatalf("%d keys: Decode = %v", n, err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", in) {
			t.Fatalf("%d keys: round trip lost something: %d keys back", n, len(got.Keys))
		}
	}
}

// maxCorruptAlloc is what Decode may allocate for a value that does not
// decode: its error.
const maxCorruptAlloc = 1 << 10

// A value that does not decode, up to the 8 MiB a snapshot may take, costs
// Decode its error and nothing else. (FuzzDecode does not measure: reading
// the memory statistics after each input took it from 31,000 inputs a
// second to none. Its corpus holds the small value below.) Every count in a value was bounded
// only by the bytes left (8 of them an instance, 5 a key), and Decode
// allocated for what it claimed before it read it: 8 MiB of bytes behind an
// instance count made it allocate 260 MB (a million instances and their
// tags) before the first of them failed, and a value whose every instance
// or key decoded but for one byte at the end cost all that its decoding
// built (for 1 MiB: 19 MB of instances, 38 MB with metadata, 107 MB of
// keys, grown by append). Redis returns such a value to every process that reads the
// service, which each decode (and count) it until one of them removes it.
func TestCorruptValuesCostNoMoreThanTheirError(t *testing.T) {
	// The largest a snapshot may be, and a smaller size for values Decode
	// walks to their end (a second or two each under the race detector).
	const size, walked = 8 << 20, 1 << 20
	// An instance with every string empty, port 1, zero times, then the
	// same with 64 metadata pairs of empty strings.
	instance := "\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	withMetadata := instance[:11] + "\x40" + strings.Repeat("\x00", 128) + "\x00\x00"
	key := "\x00\x00\x00\x00\x00"
	tests := []struct {
		name  string
		count int // of what follows the count
		items string
		tail  string // after the instances
	}{
		{"instance count, nothing behind it", size / 8, strings.Repeat("\xff", size), ""},
		{"instance count, 800 bytes behind it", 100, strings.Repeat("\xff", 800), ""}, // testdata/fuzz
		{"instances, then one byte too many", walked / len(instance), strings.Repeat(instance, walked/len(instance)), "\x00x"},
		{"instances with metadata, then one byte too many", walked / len(withMetadata), strings.Repeat(withMetadata, walked/len(withMetadata)), "\x00x"},
		{"keys, then one byte too many", 0, "", string(binary.AppendUvarint(nil, walked/5)) + strings.Repeat(key, walked/5) + "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Header(1, 1) + "\x06db_svc\x00\x00" + string(binary.AppendUvarint(nil, uint64(tt.count))) + tt.items + tt.tail
			var err error
			n := bytesAllocated(func() { _, _, err = Decode(v) })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Decode = %v; want %v", err, ErrCorrupt)
			}
			if n > maxCorruptAlloc {
				t.Fatalf("Decode of a %d-byte value that does not decode allocated %d bytes (%.1f times its size); want at most %d",
					len(v), n, float64(n)/float64(len(v)), maxCorruptAlloc)
			}
		})
	}
}

// bytesAllocated returns the fewest bytes the heap grew by over three calls
// of f: another goroutine's allocations only add to a call's count.
func bytesAllocated(f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// A snapshot written to Redis by a process of an earlier release (1bd4bc7,
// 2026-11-28) decodes, and encodes back to the same bytes: processes of
// both releases share L2 during an upgrade, and a reader deletes what it
// cannot decode. A change to Encode that fails this needs a new Version
// (readers of another version miss without deleting).
func TestDecodesSnapshotsOfEarlierReleases(t *testing.T) {
	b, err := os.ReadFile("testdata/snapshot-1bd4bc7.bin")
	if err != nil {
		t.Fatal(err)
	}
	svc, at, err := Decode(string(b))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if svc.Name != "svce" || svc.Revision != 2 || len(svc.Instances) != 2 || len(svc.Keys) != 0 {
		t.Fatalf("decoded %+v", svc)
	}
	in := svc.Instances[1]
	if in.ID != "o2" || in.Host != "127.0.0.1" || in.Port != 33305 || in.Weight != 100 || in.HealthPath != "/health" ||
		in.Status != core.StatusUnknown || !slices.Equal(in.Tags, []string{"old1"}) || in.Metadata["v"] != "old1" {
		t.Fatalf("instance %+v", in)
	}
	if got := Encode(svc, at); string(got) != string(b) {
		t.Fatalf("Encode of the decoded snapshot differs from what the earlier release wrote:\n got %q\nwant %q", got, b)
	}
}
