package discovery_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rssbot/discovery"
)

// The exported error types are for users too: a Store passed to WithStore
// reports an outage as a BackendError, and a test fakes one. Each, built as
// a literal with only some fields set, still prints (a BackendError with no
// Err panicked in Error, so logging it crashed the caller), starts with
// "discovery:" and matches its sentinel.
func TestErrorTypesPrintWithFieldsLeftOut(t *testing.T) {
	tests := []struct {
		name string
		err  error
		is   error
	}{
		{"BackendError", &discovery.BackendError{Backend: "database", Op: "load"}, discovery.ErrUnavailable},
		{"BackendError zero", &discovery.BackendError{}, discovery.ErrUnavailable},
		{"ValidationError zero", &discovery.ValidationError{}, discovery.ErrInvalid},
		{"NotFoundError zero", &discovery.NotFoundError{}, discovery.ErrNotFound},
		{"NoHealthyError zero", &discovery.NoHealthyError{}, discovery.ErrNoHealthyInstances},
		{"ConfigError zero", &discovery.ConfigError{}, discovery.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msg string
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Error() panicked: %v", p)
					}
				}()
				msg = tt.err.Error()
			}()
			if !strings.HasPrefix(msg, "discovery:") {
				t.Errorf("Error() = %q; want the prefix \"discovery:\"", msg)
			}
			if !errors.Is(tt.err, tt.is) {
				t.Errorf("errors.Is(%q, %v) = false", msg, tt.is)
			}
		})
	}
	if got, want := (&discovery.BackendError{Backend: "database", Op: "load"}).Error(), "discovery: database unavailable during load"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}
