package rediscache

import (
	"testing"

	"github.com/rssbot/discovery/internal/core"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		in    string
		want  core.Change
		force bool
		ok    bool
	}{
		{"5 db_svc", core.Change{Service: "db_svc", Revision: 5}, false, true},
		{"0 db_svc !", core.Change{Service: "db_svc"}, true, true},
		{"x db_svc", core.Change{}, false, false},
		{"-1 db_svc", core.Change{}, false, false},
		{"5 a/b", core.Change{}, false, false},
		{"5", core.Change{}, false, false},
		{"", core.Change{}, false, false},
	}
	for _, tt := range tests {
		got, force, ok := ParseMessage(tt.in)
		if got != tt.want || force != tt.force || ok != tt.ok {
			t.Errorf("ParseMessage(%q) = %v %v %v; want %v %v %v", tt.in, got, force, ok, tt.want, tt.force, tt.ok)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add("5 db_svc")
	f.Add("0 db_svc !")
	f.Add("99999999999999999999 x")
	f.Fuzz(func(t *testing.T, s string) {
		ch, _, ok := ParseMessage(s)
		if ok && (ch.Revision < 0 || core.ValidateServiceName(ch.Service) != nil) {
			t.Fatalf("ParseMessage(%q) accepted %+v", s, ch)
		}
	})
}
