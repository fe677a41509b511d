package discovery_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// tlsInstance registers, as an instance of service, an https server that
// presents cert, and returns its ID.
func tlsInstance(t *testing.T, r *discovery.Registry, service string, cert tls.Certificate) string {
	t.Helper()
	return tlsInstanceAuth(t, r, service, cert, nil)
}

// tlsInstanceAuth is tlsInstance whose server requires a client
// certificate of clientCAs, if not nil.
func tlsInstanceAuth(t *testing.T, r *discovery.Registry, service string, cert tls.Certificate, clientCAs *x509.CertPool) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAs != nil {
		srv.TLS.ClientAuth, srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes it refuses
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return registerServer(t, r, service, &countingServer{Server: srv})
}

// ejectedOf returns the IDs of the service's ejected instances.
func ejectedOf(t *testing.T, r *discovery.Registry, service string) []string {
	t.Helper()
	svc, err := r.Get(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range svc.Instances {
		if in.Status == discovery.StatusEjected {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// A caller that cannot verify any instance's certificate (its CA bundle
// lacks the service's CA, say), or whose client certificate every instance
// refuses (expired, or none), has a configuration problem of its own:
// every instance fails it alike. Counted as the instances' failures, its
// requests ejected healthy instances (up to the ejection cap) from the
// picks of every client of the process, the well-configured ones too, and
// logged them as outliers.
func TestTransportCallerThatTrustsNoInstanceEjectsNone(t *testing.T) {
	cert, roots := certFor(t, "web")
	_, otherCA := certFor(t, "web") // a bundle without the instances' CA
	tests := []struct {
		name      string
		clientCAs *x509.CertPool // instances require a client certificate of it
		rootCAs   *x509.CertPool
		want      string
	}{
		{"caller lacks the CA", nil, otherCA, "certificate signed by unknown authority"},
		{"client certificate refused", otherCA, roots, "certificate required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
			for range 3 {
				tlsInstanceAuth(t, r, "web", cert, tt.clientCAs)
			}
			client := r.HTTPClient(discovery.BaseTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: tt.rootCAs}}))
			defer client.CloseIdleConnections()
			for i := range 30 {
				resp, err := client.Get("https://web/" + strconv.Itoa(i))
				if err == nil {
					resp.Body.Close()
					t.Fatal("GET https://web/ succeeded; want the handshake refused")
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("GET https://web/: %v; want %q", err, tt.want)
				}
			}
			if ids := ejectedOf(t, r, "web"); len(ids) != 0 {
				t.Errorf("a caller whose certificates no instance gets through ejected %v; want none ejected", ids)
			}
		})
	}
}

// An instance whose certificate does not verify while the others' do (a
// certificate for another name, from an unknown CA, expired: another
// process at a recycled address, a botched rotation) is that instance's
// fault: its failures count, and it is ejected.
func TestTransportInstanceWithABadCertificateIsEjected(t *testing.T) {
	good, roots := certFor(t, "web")
	wrongName, _ := certFor(t, "other")
	unknown, _ := certFor(t, "web")
	expired := expiredCertFor(t, "web")
	roots.AddCert(wrongName.Leaf)
	roots.AddCert(expired.Leaf)
	tests := []struct {
		name string
		cert tls.Certificate
	}{
		{"wrong name", wrongName},
		{"unknown authority", unknown},
		{"expired", expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
			tlsInstance(t, r, "web", good)
			tlsInstance(t, r, "web", good)
			bad := tlsInstance(t, r, "web", tt.cert)
			client := r.HTTPClient(discovery.BaseTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}))
			defer client.CloseIdleConnections()
			for i := range 30 {
				resp, err := client.Get("https://web/" + strconv.Itoa(i))
				if err != nil {
					t.Fatalf("GET %d: %v; want the retry on a good instance to answer", i, err)
				}
				resp.Body.Close()
			}
			if ids := ejectedOf(t, r, "web"); len(ids) != 1 || ids[0] != bad {
				t.Errorf("ejected %v; want the instance with the bad certificate, %s", ids, bad)
			}
		})
	}
}

// expiredCertFor returns a self-signed certificate for the DNS name that
// expired an hour ago.
func expiredCertFor(t *testing.T, name string) tls.Certificate {
	t.Helper()
	return certWithin(t, name, 2, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
}

// A CA (here a self-signed certificate, its own CA) that expires under a
// running caller fails every new handshake alike, while the connections
// opened before it expired go on answering: those answers are no proof
// that the caller's trust is right now. Taken as proof, every refusal of a
// new connection (a pool that grows, an instance that starts) counted
// against its instance, and an instance started after the expiry, which
// only new connections reach, was ejected, though every instance presents
// the same certificate.
func TestTransportCAExpiredUnderARunningCallerEjectsNone(t *testing.T) {
	cert, roots := certFor(t, "web") // valid for another hour
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	for range 3 {
		tlsInstance(t, r, "web", cert)
	}
	var ahead atomic.Int64 // the caller's TLS clock, ahead of the wall clock by this
	now := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	client := r.HTTPClient(discovery.BaseTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Time: now}}))
	defer client.CloseIdleConnections()
	get := func(i int) error {
		resp, err := client.Get("https://web/" + strconv.Itoa(i))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	for i := range 9 { // a connection to each instance, kept alive
		if err := get(i); err != nil {
			t.Fatal(err)
		}
	}
	ahead.Store(int64(2 * time.Hour)) // the certificate has expired for the caller
	late := tlsInstance(t, r, "web", cert)
	if _, err := r.Get(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		_ = get(i) // the new instance refused; the retry answered over an old connection
	}
	if ids := ejectedOf(t, r, "web"); len(ids) != 0 {
		t.Errorf("a caller for which the CA of every instance has expired ejected %v (the instance started after the expiry: %s); want none ejected", ids, late)
	}
}
