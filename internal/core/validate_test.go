package core

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func FuzzNormalize(f *testing.F) {
	f.Add("db_svc", "10.0.0.7", 8080, "", 0, "/health", "team", "core", "primary")
	f.Add("a..b", "exa mple", 0, "x y", -5, "//evil", "a b", "\x00", "")
	f.Add("db_svc", "10.0.0.7", 8080, "", 0, "/health%zz", "team", "core", "primary")
	f.Add("db_svc", "2001:0DB8:0:0::1", 8080, "", 0, "", "team", "core", "primary")
	f.Add("db_svc", "::ffff:10.0.0.7", 8080, "", 0, "", "team", "core", "primary")
	f.Fuzz(func(t *testing.T, service, host string, port int, id string, weight int, path, mk, mv, tag string) {
		in := Instance{ID: id, Service: service, Host: host, Port: port, Weight: weight, HealthPath: path,
			Metadata: map[string]string{mk: mv}, Tags: []string{tag}}
		before := in.Clone()
		err := Normalize(&in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "discovery: invalid ") {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			if in.ID != before.ID || in.Host != before.Host || in.Weight != before.Weight || in.HealthPath != before.HealthPath {
				t.Fatal("Normalize changed its input and failed")
			}
			return
		}
		// What passes is safe to store and to build a health URL from.
		if ValidateServiceName(in.Service) != nil || in.Port < 1 || in.Port > 65535 || in.ID == "" ||
			in.Weight < 0 || in.Weight > MaxWeight || strings.HasPrefix(in.HealthPath, "//") ||
			strings.ContainsAny(in.Service, "*?[]\\\\:/") || strings.Contains(in.Service, "..") {
			t.Fatalf("Normalize accepted %+v", in)
		}
		if u, err := url.Parse("http://" + JoinHostPort(in.Host, in.Port) + in.HealthPath); in.HealthPath != "" && (err != nil || u.Host != JoinHostPort(in.Host, in.Port)) {
			t.Fatalf("no health check URL from %q: %v", in.HealthPath, err)
		}
		if again := in; Normalize(&again) != nil {
			t.Fatalf("a normalised instance does not validate again: %+v", in)
		} else if again.Host != in.Host || again.ID != in.ID {
			t.Fatalf("the canonical host is not canonical: %q (ID %q) normalised again is %q (ID %q)", in.Host, in.ID, again.Host, again.ID)
		}
	})
}

func TestValidateServiceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"db_svc", true}, {"a", true}, {"user-api.v2", true}, {strings.Repeat("x", 63), true},
		{"", false}, {strings.Repeat("x", 64), false}, {"a/b", false}, {"a:b", false}, {"a*", false},
		{"a?", false}, {"a[1]", false}, {`a\b`, false}, {"a..b", false}, {"-a", false}, {"a-", false},
		{"a b", false}, {"a\x00", false}, {"ä", false},
	}
	for _, tt := range tests {
		if err := ValidateServiceName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateServiceName(%q) = %v; want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// A refused host is told why: an IPv6 address with a zone is an IP
// address, and "not an IP address or DNS name" sent its caller looking
// for a typo in it.
func TestValidateHostSaysWhy(t *testing.T) {
	tests := []struct{ host, reason string }{
		{"fe80::1%eth0", "zone"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"[::1]", "not an IP address or DNS name"},
		{"10.0.0.300", "all digits"},
	}
	for _, tt := range tests {
		err := ValidateHost(tt.host)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "host" || !strings.Contains(ve.Reason, tt.reason) {
			t.Errorf("ValidateHost(%q) = %v; want a host ValidationError saying %q", tt.host, err, tt.reason)
		}
	}
}

// A host of up to 253 bytes is valid, but its default ID, Host:Port, may
// not be: the error says so and what to do, rather than blame an ID the
// caller never gave.
func TestNormalizeSaysTheDefaultIDIsTooLong(t *testing.T) {
	host := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".example"
	if err := ValidateHost(host); err != nil {
		t.Fatal(err)
	}
	in := Instance{Service: "db_svc", Host: host, Port: 65535}
	err := Normalize(&in)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "instance id" || !strings.Contains(ve.Reason, "Host:Port") || in.ID != "" {
		t.Fatalf("Normalize = %v (ID %q); want an instance id error saying the default Host:Port is too long", err, in.ID)
	}
	in.ID = "db-1"
	if err := Normalize(&in); err != nil {
		t.Fatalf("with an ID: %v", err)
	}
}
