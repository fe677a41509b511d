package core

import (
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits enforced by validation.
const (
	MaxNameLen        = 63
	MaxIDLen          = 255
	MaxHostLen        = 253
	MaxTags           = 32
	MaxTagLen         = 128
	MaxMetadataKeys   = 64
	MaxMetadataKeyLen = 128
	MaxMetadataBytes  = 8 << 10
	MaxLabelLen       = 64 // zone and version
	MaxHealthPathLen  = 256
)

func invalid(field, value, reason string) error {
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	return &ValidationError{Field: field, Value: value, Reason: reason}
}

// ValidateServiceName checks a service name: 1 to 63 bytes of letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit, with
// no "..". "db_svc" is valid; "", "a/b", "a:b", "*" and "a..b" are not.
func ValidateServiceName(name string) error {
	if name == "" {
		return invalid("service name", name, "must not be empty")
	}
	if len(name) > MaxNameLen {
		return invalid("service name", name, "longer than "+strconv.Itoa(MaxNameLen)+" bytes")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case isAlnum(c):
		case c == '-' || c == '_' || c == '.':
			if i == 0 || i == len(name)-1 {
				return invalid("service name", name, "must start and end with a letter or digit")
			}
			if c == '.' && name[i-1] == '.' {
				return invalid("service name", name, `must not contain ".."`)
			}
		default:
			return invalid("service name", name, "character "+strconv.QuoteRune(rune(c))+" not allowed (letters, digits, '-', '_', '.')")
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ValidateInstanceID checks an instance ID: 1 to 255 bytes of printable ASCII
// without spaces, quotes, backslashes, '*' or '?', and not "." or "..".
// Brackets and colons are allowed: an IPv6 default ID is "[::1]:8080".
func ValidateInstanceID(id string) error {
	if id == "" {
		return invalid("instance id", id, "must not be empty")
	}
	if len(id) > MaxIDLen {
		return invalid("instance id", id, "longer than "+strconv.Itoa(MaxIDLen)+" bytes")
	}
	if id == "." || id == ".." { // the admin API's DELETE could not name it
		return invalid("instance id", id, "must not be . or ..")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"'\*?`, c) >= 0 {
			return invalid("instance id", id, "character "+strconv.QuoteRune(rune(c))+" not allowed")
		}
	}
	return nil
}

// ValidateHost checks that host is an IP address, other than the
// unspecified 0.0.0.0 and ::, or a DNS name. A name of more than one label
// whose last label is all digits ("10.0.0.300", "010.0.0.1", "1.2.3") is
// neither: no top-level domain is all digits (RFC 3696), and such a name is
// a mistyped IPv4 address, which resolved nowhere, or, by a resolver that
// reads inet_aton's forms, to another address. A single label
// ("123456789012", a container's hostname) is a host name and may be all
// digits.
func ValidateHost(host string) error {
	if host == "" {
		return invalid("host", host, "must not be empty")
	}
	if len(host) > MaxHostLen {
		return invalid("host", host, "longer than 253 bytes")
	}
	if strings.IndexByte(host, ':') >= 0 {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return invalid("host", host, "not an IP address or DNS name")
		}
		if a.Zone() != "" {
			// A zone names an interface of one host: no other host
			// reaches the address through it.
			return invalid("host", host, "an IPv6 zone ("+a.Zone()+") names an interface of one host only; register an address others can reach")
		}
		return validAddr(host, a)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return validAddr(host, a)
	}
	name := strings.TrimSuffix(host, ".")
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return invalid("host", host, "DNS labels must be 1 to 63 bytes")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !isAlnum(c) && !(c == '-' && i > 0 && i < len(label)-1) {
				return invalid("host", host, "not an IP address or DNS name")
			}
		}
	}
	if last := name[strings.LastIndexByte(name, '.')+1:]; (last != name || name != host) && allDigits(last) {
		return invalid("host", host, "not an IP address (four parts of 0 to 255, no leading zeros) or DNS name (its last label is all digits)")
	}
	return nil
}

// validAddr refuses the unspecified address (0.0.0.0, ::): a listen
// address, which a process that dials it takes for its own host, so that
// its checks and picks reached whatever listened there on the port.
func validAddr(host string, a netip.Addr) error {
	if a.Unmap().IsUnspecified() {
		return invalid("host", host, "the unspecified address is one to listen on, and dialled it reaches the caller's own host; register an address others can reach")
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// CanonicalHost returns the one spelling of a valid host (ValidateHost):
// an IP address in its canonical form (RFC 5952 for IPv6: lower case,
// zeros dropped, the longest run of zero groups as "::"), an IPv4-mapped
// IPv6 address as the IPv4 address it maps (Go dials both alike), and a
// DNS name in lower case (DNS compares names without case, RFC 4343). A
// trailing dot is kept: "web." is not looked up in the resolver's search
// domains, and "web" is. The default instance ID is built from it: spelt
// as given, one host written two ways ("2001:db8::1", "2001:0db8:0:0::1"),
// by a process that restarted with another configuration, made a second
// instance beside the first, listed until its lease ended.
func CanonicalHost(host string) string {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(host)
}

// ValidatePort checks 1 <= port <= 65535.
func ValidatePort(port int) error {
	if port < 1 || port > 65535 {
		return invalid("port", strconv.Itoa(port), "must be 1..65535")
	}
	return nil
}

// ValidateWeight checks a weight as given to Register: ZeroWeight, 0 (the
// default) or 1..MaxWeight.
func ValidateWeight(w int) error {
	if w < ZeroWeight || w > MaxWeight {
		return invalid("weight", strconv.Itoa(w), "must be 0.."+strconv.Itoa(MaxWeight)+" (or ZeroWeight)")
	}
	return nil
}

// printable reports whether s is UTF-8 that prints as it is: letters,
// marks, numbers, punctuation, symbols and the ASCII space (strconv.IsPrint).
// Refusing control characters alone let invisible ones through (a zero-width
// space, a BOM, a bidi override, a no-break space, a line separator): a tag
// that printed as "prod" did not match WithTag("prod"), and a zone could
// reorder the text the admin UI showed around it.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// ValidateTags checks at most 32 distinct tags of 1 to 128 printable bytes.
func ValidateTags(tags []string) error {
	if len(tags) > MaxTags {
		return invalid("tags", strconv.Itoa(len(tags)), "more than "+strconv.Itoa(MaxTags)+" tags")
	}
	for i, t := range tags {
		if err := ValidateTag(t); err != nil {
			return err
		}
		for _, u := range tags[:i] {
			if u == t {
				return invalid("tag", t, "duplicate")
			}
		}
	}
	return nil
}

// ValidateMetadata checks at most 64 keys of 1 to 128 bytes ([A-Za-z0-9._/-])
// with UTF-8 values without NUL, 8 KiB in all.
func ValidateMetadata(md map[string]string) error {
	if len(md) > MaxMetadataKeys {
		return invalid("metadata", strconv.Itoa(len(md))+" keys", "more than "+strconv.Itoa(MaxMetadataKeys)+" keys")
	}
	total := 0
	for k, v := range md {
		if err := validateMetadataEntry(k, v); err != nil {
			return err
		}
		total += len(k) + len(v)
	}
	if total > MaxMetadataBytes {
		return invalid("metadata", strconv.Itoa(total)+" bytes", "more than 8 KiB in all")
	}
	return nil
}

// ValidateTag checks one tag as ValidateTags does: 1 to 128 printable bytes.
func ValidateTag(t string) error {
	if t == "" || len(t) > MaxTagLen || !printable(t) {
		return invalid("tag", t, "must be 1.."+strconv.Itoa(MaxTagLen)+" printable bytes")
	}
	return nil
}

// ValidateMetadataEntry checks one key and its value as ValidateMetadata
// does, the two within its 8 KiB.
func ValidateMetadataEntry(k, v string) error {
	if err := validateMetadataEntry(k, v); err != nil {
		return err
	}
	if len(k)+len(v) > MaxMetadataBytes {
		return invalid("metadata", strconv.Itoa(len(k)+len(v))+" bytes", "more than 8 KiB in all")
	}
	return nil
}

func validateMetadataEntry(k, v string) error {
	if k == "" || len(k) > MaxMetadataKeyLen {
		return invalid("metadata key", k, "must be 1.."+strconv.Itoa(MaxMetadataKeyLen)+" bytes")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !isAlnum(c) && strings.IndexByte("._/-", c) < 0 {
			return invalid("metadata key", k, "character "+strconv.QuoteRune(rune(c))+" not allowed (letters, digits, '.', '_', '/', '-')")
		}
	}
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
		return invalid("metadata value", k, "must be UTF-8 without NUL")
	}
	return nil
}

// ValidateLabel checks a zone or a version: at most 64 printable bytes.
func ValidateLabel(field, s string) error { return validateLabel(field, s) }

func validateLabel(field, s string) error {
	if len(s) > MaxLabelLen || !printable(s) {
		return invalid(field, s, "must be at most "+strconv.Itoa(MaxLabelLen)+" printable bytes")
	}
	return nil
}

// ValidateHealthPath checks an HTTP health-check path: it starts with a
// single '/', has no scheme, host, fragment, spaces or control characters,
// so a check can only ever reach the instance's own address, and every '%'
// starts an escape, so a check's URL can be built from it.
func ValidateHealthPath(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > MaxHealthPathLen {
		return invalid("health path", p, "longer than "+strconv.Itoa(MaxHealthPathLen)+" bytes")
	}
	if p[0] != '/' || strings.HasPrefix(p, "//") {
		return invalid("health path", p, "must start with a single '/'")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '#' || c == '\\' {
			return invalid("health path", p, "character "+strconv.QuoteRune(rune(c))+" not allowed")
		}
		// No URL is built from a '%' that does not start an escape: every
		// check of the instance failed and it stayed unhealthy.
		if p[i] == '%' && (i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2])) {
			return invalid("health path", p, "'%' must start an escape of two hex digits")
		}
	}
	return nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// Normalize validates in as given to Register and fills defaults: the ID
// (Host:Port), the weight, the health path. It changes nothing when it
// returns an error.
func Normalize(in *Instance) error {
	if err := ValidateServiceName(in.Service); err != nil {
		return err
	}
	if err := ValidateHost(in.Host); err != nil {
		return err
	}
	if err := ValidatePort(in.Port); err != nil {
		return err
	}
	host := CanonicalHost(in.Host)
	id := in.ID
	if id == "" {
		id = JoinHostPort(host, in.Port)
		if len(id) > MaxIDLen { // a valid host of up to 253 bytes, and its port
			return invalid("instance id", id, "the default, Host:Port, is longer than "+strconv.Itoa(MaxIDLen)+" bytes; give the instance an ID")
		}
	}
	if err := ValidateInstanceID(id); err != nil {
		return err
	}
	if in.Method > MethodRouter {
		return invalid("method", in.Method.String(), "must be http or router")
	}
	if in.Check > CheckNone {
		return invalid("check", in.Check.String(), "must be default, http, tcp or none")
	}
	if err := ValidateWeight(in.Weight); err != nil {
		return err
	}
	if err := validateLabel("zone", in.Zone); err != nil {
		return err
	}
	if err := validateLabel("version", in.Version); err != nil {
		return err
	}
	if err := ValidateTags(in.Tags); err != nil {
		return err
	}
	if err := ValidateMetadata(in.Metadata); err != nil {
		return err
	}
	if err := ValidateHealthPath(in.HealthPath); err != nil {
		return err
	}
	if in.Status != StatusUnknown && in.Status != StatusDraining {
		return invalid("status", in.Status.String(), "only draining may be stored")
	}
	in.ID, in.Host = id, host
	switch in.Weight {
	case 0:
		in.Weight = DefaultWeight
	case ZeroWeight:
		in.Weight = 0
	}
	if in.HealthPath == "" && in.Method == MethodHTTP {
		in.HealthPath = DefaultHealthPath
	}
	return nil
}

// ValidateKeyID checks a key ID: 1 to 64 of [A-Za-z0-9_-]. Anything else
// (SQL, paths, dots) is refused before it is looked up anywhere.
func ValidateKeyID(kid string) error {
	if kid == "" || len(kid) > 64 {
		return invalid("key id", kid, "must be 1 to 64 bytes")
	}
	for i := 0; i < len(kid); i++ {
		if c := kid[i]; !isAlnum(c) && c != '-' && c != '_' {
			return invalid("key id", kid, "character "+strconv.QuoteRune(rune(c))+" not allowed (letters, digits, '-', '_')")
		}
	}
	return nil
}

// ValidatePublicKey checks a key as given to PutKey.
func ValidatePublicKey(k *PublicKey) error {
	if err := ValidateKeyID(k.ID); err != nil {
		return err
	}
	if k.Algorithm != "EdDSA" && k.Algorithm != "ES256" {
		return invalid("key algorithm", k.Algorithm, "must be EdDSA or ES256")
	}
	if len(k.Key) == 0 || len(k.Key) > 1024 {
		return invalid("key", "", "must be 1 to 1024 bytes of PKIX DER")
	}
	if err := ValidateTime("key creation", k.CreatedAt); err != nil {
		return err
	}
	if err := ValidateRetirement("key retirement", k.RetiresAt); err != nil {
		return err
	}
	if !k.RetiresAt.IsZero() && !k.CreatedAt.IsZero() && k.RetiresAt.Before(k.CreatedAt) {
		return invalid("key retirement", k.RetiresAt.String(), "before the key's creation")
	}
	return nil
}

// Stored times are Unix nanoseconds (the SQL stores' BIGINT columns):
// minTime and maxTime bound what they can hold.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// ValidateTime checks that a time given to be stored is zero or one the
// stores can hold, 1677-09-21 to 2262-04-11: beyond, its Unix nanoseconds
// overflow, and a SQL store kept a time centuries off (a key retiring in
// 2300 came back retired since 1715).
func ValidateTime(field string, t time.Time) error {
	if !t.IsZero() && (t.Before(minTime) || t.After(maxTime)) {
		return invalid(field, t.UTC().Format(time.RFC3339), "must be between 1677-09-21 and 2262-04-11")
	}
	return nil
}

// ValidateRetirement checks a key's retirement time as ValidateTime does,
// and refuses the Unix epoch: the SQL stores and the cache encoding keep
// "never" as 0 Unix nanoseconds, which is also the epoch's, so a key retired
// then came back never retiring (a revocation undid the retirement it
// meant to bring forward).
func ValidateRetirement(field string, t time.Time) error {
	if err := ValidateTime(field, t); err != nil {
		return err
	}
	if !t.IsZero() && t.UnixNano() == 0 {
		return invalid(field, t.UTC().Format(time.RFC3339), "must not be the Unix epoch, which is stored as never; any other past time retires the key")
	}
	return nil
}

// IsNil reports whether v is nil or a nil pointer, map, slice, func or
// channel inside an interface: such a typed nil (a Store, a clock, a key)
// compares unequal to nil and panicked at its first use.
func IsNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// IsHollow reports whether v is a wrapper with nothing in it: a struct (or
// a pointer to one) whose fields are all embedded pointers or interfaces,
// each nil or hollow itself. discoverytest's Backend and Clock are such
// wrappers; declared rather than made by their constructors they hold no
// store or clock, and every method they promote dereferenced nil.
func IsHollow(v any) bool {
	if v == nil {
		return false
	}
	return hollow(reflect.ValueOf(v), 4)
}

func hollow(rv reflect.Value, depth int) bool {
	if depth == 0 {
		return false
	}
	if rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
		if rv.IsNil() {
			return false // IsNil's case
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct || rv.NumField() == 0 {
		return false
	}
	for i := range rv.NumField() {
		f := rv.Field(i)
		if !rv.Type().Field(i).Anonymous || f.Kind() != reflect.Pointer && f.Kind() != reflect.Interface {
			return false
		}
		if !f.IsNil() && !hollow(f, depth-1) {
			return false
		}
	}
	return true
}
