// Package codec encodes service snapshots for the shared L2 cache. The format
// is compact and versioned; Decode never panics and refuses anything that is
// not a snapshot it wrote.
//
// A value is a fixed header followed by the body:
//
//	"D1"  two bytes of format version
//	20 decimal digits: the service revision, zero-padded
//	20 decimal digits: when the snapshot was read from the database (Unix ns)
//	body: varint-framed fields (see Encode)
//
// The header is ASCII so that a Redis script can compare (revision, loaded
// at) of two values as strings: a cache never replaces a newer snapshot by an
// older one.
//
// Processes of several releases share these values during an upgrade. Any
// change to what Encode writes, even a field appended at the end, needs a
// new Version: Decode refuses trailing bytes and unknown values as corrupt,
// and a reader deletes a corrupt value, so an unmarked change made each
// release delete the other's snapshots, while a value of another version is
// a miss that stays (testdata holds a value an earlier release wrote).
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Version is the format tag of values this package writes.
const Version = "D1"

// HeaderLen is the length of the header.
const HeaderLen = 2 + 20 + 20

// Limits of what a value holds: past them it is corrupt. (A corrupt value
// costs Decode no allocation whatever it claims: see Decode.)
const (
	maxInstances = 1 << 20
	maxConfig    = 8 << 20
	// Keys have no limit of their own: Encode writes every key of a
	// snapshot, and one that did not decode was a miss on every read. A
	// count is bounded by the bytes left, and Decode allocates room for at
	// most preallocKeys before it has read them.
	preallocKeys = 1024
)

// Errors returned by Decode.
var (
	ErrVersion = errors.New("codec: other format version")
	ErrCorrupt = errors.New("codec: corrupt snapshot")
)

// Header renders the sortable header of a value.
func Header(revision int64, loadedAt int64) string {
	b := make([]byte, 0, HeaderLen)
	b = append(b, Version...)
	b = appendPadded(b, revision)
	b = appendPadded(b, loadedAt)
	return string(b)
}

// LoadedAtField renders loadedAt (Unix ns) as the header's load-time field,
// for a Redis script that compares it with a value's (bytes 23-42).
func LoadedAtField(loadedAt int64) string { return string(appendPadded(nil, loadedAt)) }

func appendPadded(b []byte, v int64) []byte {
	if v < 0 {
		v = 0
	}
	var digits [20]byte
	for i := range digits {
		digits[i] = '0'
	}
	s := strconv.AppendInt(nil, v, 10)
	copy(digits[20-len(s):], s)
	return append(b, digits[:]...)
}

// Encode renders svc, read from the database at loadedAt.
func Encode(svc *core.Service, loadedAt time.Time) []byte {
	b := make([]byte, 0, HeaderLen+64+len(svc.Config)+len(svc.Instances)*96)
	b = append(b, Header(svc.Revision, loadedAt.UnixNano())...)
	b = appendString(b, svc.Name)
	b = binary.AppendVarint(b, svc.ConfigRevision)
	b = appendString(b, string(svc.Config))
	b = binary.AppendUvarint(b, uint64(len(svc.Instances)))
	for i := range svc.Instances {
		in := &svc.Instances[i]
		b = appendString(b, in.ID)
		b = appendString(b, in.Host)
		b = binary.AppendUvarint(b, uint64(in.Port))
		b = append(b, byte(in.Method), byte(in.Check), byte(in.Status))
		b = binary.AppendVarint(b, int64(in.Weight))
		b = appendString(b, in.Zone)
		b = appendString(b, in.Version)
		b = appendString(b, in.HealthPath)
		b = binary.AppendUvarint(b, uint64(len(in.Tags)))
		for _, t := range in.Tags {
			b = appendString(b, t)
		}
		b = binary.AppendUvarint(b, uint64(len(in.Metadata)))
		for k, v := range in.Metadata {
			b = appendString(b, k)
			b = appendString(b, v)
		}
		b = binary.AppendVarint(b, in.RegisteredAt.UnixNano())
		b = binary.AppendVarint(b, in.ExpiresAt.UnixNano())
	}
	b = binary.AppendUvarint(b, uint64(len(svc.Keys)))
	for i := range svc.Keys {
		k := &svc.Keys[i]
		b = appendString(b, k.ID)
		b = appendString(b, k.Algorithm)
		b = appendString(b, string(k.Key))
		b = binary.AppendVarint(b, k.CreatedAt.UnixNano())
		var retires int64
		if !k.RetiresAt.IsZero() {
			retires = k.RetiresAt.UnixNano()
		}
		b = binary.AppendVarint(b, retires)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// ParseHeader returns the revision and load time in a value's header.
func ParseHeader(v string) (revision, loadedAt int64, err error) {
	if len(v) < HeaderLen {
		return 0, 0, ErrCorrupt
	}
	if v[:2] != Version {
		return 0, 0, ErrVersion
	}
	revision, ok1 := parseDigits(v[2:22])
	loadedAt, ok2 := parseDigits(v[22:42])
	if !ok1 || !ok2 {
		return 0, 0, ErrCorrupt
	}
	return revision, loadedAt, nil
}

// parseDigits parses a zero-padded field of the header: decimal digits only
// (no sign: Encode writes none, and a sign would also upset the string
// comparison of headers), within int64.
func parseDigits(s string) (int64, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// Decode parses a value written by Encode. Strings in the result share v's
// memory. It returns ErrVersion for another format version and an error
// matching ErrCorrupt for anything malformed, never panicking.
//
// A value that does not decode costs Decode its error and nothing more: the
// value is walked once without keeping anything (body, dry) before it is
// decoded. Its counts are bounded only by the bytes left, and Decode
// allocated for what they claimed before it read it: a corrupt 8 MiB value
// cost 260 MB (a million instances) before its first instance failed, and
// one that failed on its last byte all that its decoding had built (1 GB
// for 8 MiB of empty keys). A value that decodes allocates as it did.
func Decode(v string) (svc *core.Service, loadedAt time.Time, err error) {
	rev, at, err := ParseHeader(v)
	if err != nil {
		return nil, time.Time{}, err
	}
	d := decoder{s: v, i: HeaderLen}
	if d.body(nil); d.err != nil {
		return nil, time.Time{}, d.err
	}
	d.i = HeaderLen
	svc = &core.Service{Revision: rev}
	if d.body(svc); d.err != nil {
		return nil, time.Time{}, d.err // the dry walk found it sound: never
	}
	return svc, time.Unix(0, at), nil
}

// body reads what follows the header into svc, or, dry (svc nil), only
// checks it, keeping nothing and allocating nothing: the same walk, so that
// a value the dry walk passes decodes, and every count in it is true.
func (d *decoder) body(svc *core.Service) {
	keep := svc != nil
	var dry core.Service
	if !keep {
		svc = &dry
	}
	svc.Name = d.str(core.MaxNameLen)
	svc.ConfigRevision = d.varint()
	if c := d.str(maxConfig); c != "" && keep {
		svc.Config = []byte(c)
	}
	n := d.count(maxInstances, 8)
	var (
		tagArena []string // one allocation for the tags of every instance
		dryIn    core.Instance
	)
	if n > 0 && keep {
		svc.Instances = make([]core.Instance, n)
		tagArena = make([]string, 0, 2*n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		in := &dryIn
		if keep {
			in = &svc.Instances[i]
		}
		in.Service = svc.Name
		d.instance(in, keep, &tagArena, n)
	}
	d.keys(svc, keep)
	if d.err == nil && d.i != len(d.s) {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.s)-d.i)
	}
}

// instance reads one of n instances into in, its tags into *tagArena (grown
// to hold 2n more when full) and its metadata into a map of its own, unless
// dry (!keep).
func (d *decoder) instance(in *core.Instance, keep bool, tagArena *[]string, n int) {
	in.ID = d.str(core.MaxIDLen)
	in.Host = d.str(core.MaxHostLen)
	in.Port = int(d.uvarint())
	in.Method, in.Check, in.Status = core.Method(d.byte()), core.CheckKind(d.byte()), core.Status(d.byte())
	in.Weight = int(d.varint())
	in.Zone = d.str(core.MaxLabelLen)
	in.Version = d.str(core.MaxLabelLen)
	in.HealthPath = d.str(core.MaxHealthPathLen)
	if nt := d.count(core.MaxTags, 1); nt > 0 && !keep {
		for range nt {
			d.str(core.MaxTagLen)
		}
	} else if nt > 0 {
		arena := *tagArena
		if cap(arena)-len(arena) < nt {
			arena = make([]string, 0, max(nt, 2*n))
		}
		start := len(arena)
		for range nt {
			arena = append(arena, d.str(core.MaxTagLen))
		}
		in.Tags = arena[start:len(arena):len(arena)] // capped: appending copies
		*tagArena = arena
	}
	if nm := d.count(core.MaxMetadataKeys, 2); nm > 0 {
		if keep {
			in.Metadata = make(map[string]string, nm)
		}
		for range nm {
			k := d.str(core.MaxMetadataKeyLen)
			v := d.str(core.MaxMetadataBytes)
			if keep {
				in.Metadata[k] = v
			}
		}
	}
	in.RegisteredAt = time.Unix(0, d.varint())
	in.ExpiresAt = time.Unix(0, d.varint())
	// Every write was validated (core.Normalize): anything else is corruption.
	if d.err == nil && (in.Method > core.MethodRouter || in.Check > core.CheckNone || in.Status > core.StatusSuspect ||
		in.Port < 1 || in.Port > 65535 || in.Weight < 0 || in.Weight > core.MaxWeight) {
		d.fail("instance field")
	}
}

// keys reads the signing keys into svc, unless dry (!keep).
func (d *decoder) keys(svc *core.Service, keep bool) {
	nk := d.count(len(d.s), 5) // as many as the bytes left can hold
	if nk > 0 && keep {
		svc.Keys = make([]core.PublicKey, 0, min(nk, preallocKeys))
	}
	for i := 0; i < nk && d.err == nil; i++ {
		var k core.PublicKey
		k.ID = d.str(64)
		k.Algorithm = d.str(16)
		key := d.str(1024)
		k.CreatedAt = time.Unix(0, d.varint())
		if r := d.varint(); r != 0 {
			k.RetiresAt = time.Unix(0, r)
		}
		if keep {
			k.Key = []byte(key)
			svc.Keys = append(svc.Keys, k)
		}
	}
}

type decoder struct {
	s   string
	i   int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d", ErrCorrupt, what, d.i)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	var s uint
	for j := 0; j < binary.MaxVarintLen64; j++ {
		if d.i >= len(d.s) {
			d.fail("varint")
			return 0
		}
		c := d.s[d.i]
		d.i++
		if c < 0x80 {
			if j == binary.MaxVarintLen64-1 && c > 1 {
				d.fail("varint")
				return 0
			}
			return x | uint64(c)<<s
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	d.fail("varint")
	return 0
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.i >= len(d.s) {
		d.fail("byte")
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

// count reads a length that must not exceed limit, nor promise more items
// (of at least minSize bytes each) than the bytes left can hold.
func (d *decoder) count(limit, minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) || n*uint64(minSize) > uint64(len(d.s)-d.i) {
		d.fail("count")
		return 0
	}
	return int(n)
}

func (d *decoder) str(limit int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(d.s)-d.i) {
		d.fail("string length")
		return ""
	}
	s := d.s[d.i : d.i+int(n)]
	d.i += int(n)
	return s
}
