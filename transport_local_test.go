package discovery_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// What a handler sees of the caller's connection is as over the network:
// a User-Agent (net/http's client sends "Go-http-client/1.1" unless the
// request sets one, or sets it empty to send none), a RemoteAddr that
// net.SplitHostPort takes, and, for an https request, r.TLS. In-process a
// handler saw no User-Agent (one that refuses agentless requests, or logs
// and counts callers by it, behaved otherwise there alone), an empty
// RemoteAddr (a rate limiter or a logger that splits it failed), and r.TLS
// nil for https (a handler that redirects plain requests to https, or sets
// cookies Secure only over TLS, answered an https caller as a plain one).
func TestTransportInProcessRequestIsAsOverTheNetwork(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _, err := net.SplitHostPort(req.RemoteAddr)
		tlsSeen := "no TLS"
		if req.TLS != nil {
			tlsSeen = fmt.Sprintf("TLS to %q, complete %v", req.TLS.ServerName, req.TLS.HandshakeComplete)
		}
		seen <- fmt.Sprintf("User-Agent %q, RemoteAddr splits %v, %s", req.Header.Values("User-Agent"), err == nil, tlsSeen)
	})
	// over the network: plain as "web", https as "secure"
	midBodyInstance(t, r, "web", false, h)
	cert, roots := certFor(t, "secure")
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	registerServer(t, r, "secure", &countingServer{Server: srv})
	// in-process: the same handler as "local"
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient(discovery.BaseTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}))
	defer client.CloseIdleConnections()
	tests := []struct {
		name   string
		scheme string
		ua     []string // nil: left unset
		set    bool
		want   string
	}{
		{"default", "http", nil, false, `User-Agent ["Go-http-client/1.1"], RemoteAddr splits true, no TLS`},
		{"set", "http", []string{" me/1 ", "other"}, true, `User-Agent ["me/1"], RemoteAddr splits true, no TLS`},
		{"set empty", "http", []string{""}, true, `User-Agent [], RemoteAddr splits true, no TLS`},
		{"set to no value", "http", nil, true, `User-Agent [], RemoteAddr splits true, no TLS`},
		{"https", "https", nil, false, `User-Agent ["Go-http-client/1.1"], RemoteAddr splits true, TLS to %q, complete true`},
	}
	for _, tt := range tests {
		over := "web"
		if tt.scheme == "https" {
			over = "secure"
		}
		for _, service := range []string{over, "local"} {
			req, _ := http.NewRequest(http.MethodGet, tt.scheme+"://"+service+"/", nil)
			if tt.set {
				req.Header["User-Agent"] = tt.ua
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s to %s: %v", tt.name, service, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			want := tt.want
			if tt.scheme == "https" {
				want = fmt.Sprintf(want, service)
			}
			if got := <-seen; got != want {
				t.Errorf("%s to %s: the handler saw %s; want %s", tt.name, service, got, want)
			}
		}
	}
}
