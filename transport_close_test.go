package discovery_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// An answer without a body (a 204, a HEAD) that arrives after Close, to a
// request sent before it, leaves no connection open: its HTTP/2
// connection went idle after Close had emptied the pools, and stayed open
// for the base's idle timeout, its reader goroutine with it.
func TestRegistryCloseReleasesAConnectionAnsweringWithoutABodyAfterIt(t *testing.T) {
	for _, tt := range []struct {
		name, method string
		status       int
	}{{"204", http.MethodGet, http.StatusNoContent}, {"HEAD", http.MethodHead, http.StatusOK}} {
		t.Run(tt.name, func(t *testing.T) {
			srv, roots, entered, release := heldH2Server(t, tt.status)
			before := goleak.IgnoreCurrent()
			r, base := webOverH2(t, srv, roots) // closed by the test
			type answer struct {
				resp *http.Response
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				req, _ := http.NewRequest(tt.method, "https://web/", nil)
				resp, err := r.HTTPClient(discovery.BaseTransport(base)).Do(req)
				got <- answer{resp, err}
			}()
			<-entered
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			close(release)
			a := <-got
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.resp.ProtoMajor != 2 {
				t.Fatalf("the instance answered over %s; want HTTP/2", a.resp.Proto)
			}
			// The caller leaves the empty body unclosed, as net/http allows.
			base.CloseIdleConnections() // the caller's own pool: the caller's to empty
			if err := goleak.Find(before); err != nil {
				t.Fatalf("an answer without a body after Registry.Close left its connection open: %v", err)
			}
		})
	}
}

// The same for an answer without a body that arrives after its
// per-host-name clone was evicted: the clone's pool was emptied then, and
// its connection, idle once the answer came, stayed open for good (the
// base has no idle timeout), in a clone nothing used again.
func TestTransportEvictedCloneReleasesAConnectionAnsweringWithoutABodyAfter(t *testing.T) {
	srv, roots, entered, release := heldH2Server(t, http.StatusNoContent)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerServer(t, r, "web", &countingServer{Server: srv})
	base := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer base.CloseIdleConnections()
	clientConns := h2ClientConns
	before := clientConns()
	got := make(chan error, 1)
	go func() {
		resp, err := r.HTTPClient(discovery.BaseTransport(base)).Get("https://web/")
		if err == nil && resp.ProtoMajor != 2 {
			err = fmt.Errorf("the instance answered over %s; want HTTP/2", resp.Proto)
		}
		got <- err // the empty body left unclosed, as net/http allows
	}()
	<-entered
	discovery.FillTLSClones(r, base, discovery.MaxTLSClones) // "web"'s clone, the oldest, is evicted
	close(release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for clientConns() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := clientConns() - before; n > 0 {
		t.Fatalf("%d HTTP/2 connections of the evicted clone open 5s after its answer without a body; want 0", n)
	}
}

// heldH2Server is an HTTP/2 server of "web" that tells entered of each
// request and answers it with status, without a body, once release is
// closed.
func heldH2Server(t *testing.T, status int) (srv *httptest.Server, roots *x509.CertPool, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	in := make(chan struct{}, 1)
	release = make(chan struct{})
	srv, roots = h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		in <- struct{}{}
		<-release
		w.WriteHeader(status)
	}))
	return srv, roots, in, release
}
