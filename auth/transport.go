package auth

import (
	"net/http"
	"net/url"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/core"
)

// Transport is an http.RoundTripper that adds a bearer token for the
// request's target service to each request, taken from Source (a Signer,
// which caches one token per audience until shortly before it expires),
// and passes the request on to Base.
//
// Put it outside any transport that rewrites the request's host (such as a
// load balancer resolving "http://inventory/..." to an instance's address):
// the audience is the service name, which by default is the host of the
// request's URL without its port. A request that already carries an
// Authorization header is passed on unchanged, and so is a redirect that
// http.Client follows to another host: that target is the redirecting
// service's choice, and gets no token of the caller's.
type Transport struct {
	// Source gives the tokens. Required.
	Source discovery.TokenSource
	// Base sends the requests; http.DefaultTransport if nil.
	Base http.RoundTripper
	// Audience names the service a request is for; the URL's host without
	// its port if nil.
	Audience func(*http.Request) (string, error)
}

// RoundTrip implements http.RoundTripper. It does not modify req: the token
// goes on a copy. Errors getting a token close the request's body, as
// RoundTrip must.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Header.Get("Authorization") != "" {
		return base.RoundTrip(req)
	}
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	if core.IsNil(t.Source) { // a typed nil too: it panicked at Token
		return fail(optErr("Transport.Source", "nil", "must not be nil"))
	}
	if crossHostRedirect(req) {
		// A redirect to another host is the redirecting service's choice,
		// not the caller's: a token for it would let any service make this
		// one call a third with its identity (http.Client drops the
		// Authorization header of such redirects for the same reason).
		return base.RoundTrip(req)
	}
	var (
		aud string
		err error
	)
	if t.Audience != nil {
		aud, err = t.Audience(req)
	} else {
		aud = req.URL.Hostname()
	}
	if err != nil {
		return fail(err)
	}
	tok, err := t.Source.Token(req.Context(), aud)
	if err != nil {
		return fail(err)
	}
	r2 := req.Clone(req.Context())
	r2.Header.Set("Authorization", "Bearer "+tok)
	return base.RoundTrip(r2)
}

// crossHostRedirect reports whether req is a redirect http.Client follows to
// a host other than the one that answered it, or to one it cannot tell. The
// host that answered is the Host of the request that got the redirect (set
// by the Registry's transport to the service's name when it sent the
// request to an instance), else its URL's.
func crossHostRedirect(req *http.Request) bool {
	if req.Response == nil {
		return false
	}
	prev := req.Response.Request
	if prev == nil {
		return true
	}
	host := prev.Host
	if host == "" && prev.URL != nil {
		host = prev.URL.Host
	}
	// Compared exactly, as http.Client compares hosts for the same rule:
	// service names are case-sensitive, and Inventory is another service
	// than inventory (the token would be for the latter).
	return (&url.URL{Host: host}).Hostname() != req.URL.Hostname()
}

// CloseIdleConnections closes the idle connections of Base, if it can
// (http.Client.CloseIdleConnections calls it).
func (t *Transport) CloseIdleConnections() {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if c, ok := base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
