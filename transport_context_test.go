package discovery_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

// An in-process handler's request context holds what a server's would:
// nothing of the caller's. It was derived from the caller's context, so a
// handler saw the caller's values, among them the identity the caller's
// own auth middleware had verified for the caller's caller: auth.FromContext
// named a verified "frontend" in a handler no Verifier guarded, which over
// the network sees no identity at all. The caller's end (cancellation,
// deadline) still ends the handler's context.
func TestTransportInProcessHandlerGetsNoneOfTheCallersContextValues(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan bool, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, ok := auth.FromContext(req.Context())
		seen <- ok
	})
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "billing", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	// The caller: a handler of its own, whose request the auth middleware
	// verified as coming from "frontend", calling billing with that context.
	ctx := auth.NewContext(context.Background(), &auth.Identity{Service: "frontend"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://billing/charge", nil)
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if <-seen {
		t.Error("the in-process handler found a verified identity in its context that no Verifier of its own put there (the caller's); want none, as over the network")
	}
}
