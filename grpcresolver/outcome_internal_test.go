package grpcresolver

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rssbot/discovery"
)

// What a call's end tells the Registry: the server failing, an overload, the
// caller giving up, or an answer (application errors included, which say
// nothing about the server's health).
func TestOutcomeOfACall(t *testing.T) {
	for _, tt := range []struct {
		code codes.Code
		want error // nil: an answer; errFailure: a failure
	}{
		{codes.Unavailable, errFailure}, {codes.DeadlineExceeded, errFailure}, {codes.Internal, errFailure},
		{codes.Unknown, errFailure}, {codes.DataLoss, errFailure},
		{codes.ResourceExhausted, discovery.ErrOverloaded}, {codes.Canceled, context.Canceled},
		{codes.NotFound, nil}, {codes.InvalidArgument, nil}, {codes.PermissionDenied, nil},
		{codes.Unauthenticated, nil}, {codes.FailedPrecondition, nil}, {codes.AlreadyExists, nil},
	} {
		got := outcome(status.Error(tt.code, "x"))
		switch {
		case tt.want == errFailure:
			if got == nil || errors.Is(got, discovery.ErrOverloaded) || errors.Is(got, context.Canceled) {
				t.Errorf("%v: outcome %v; want a failure", tt.code, got)
			}
		case !errors.Is(got, tt.want) || (tt.want == nil && got != nil):
			t.Errorf("%v: outcome %v; want %v", tt.code, got, tt.want)
		}
	}
	if outcome(nil) != nil {
		t.Error("a call without error is not an answer")
	}
}

var errFailure = errors.New("failure")
