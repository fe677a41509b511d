package discovery_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	x509pkix "crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newServer(t *testing.T, status int) *countingServer {
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, strconv.Itoa(status))
	}))
	t.Cleanup(s.Close)
	return s
}

func registerServer(t *testing.T, r *discovery.Registry, service string, s *countingServer) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	g := mustRegister(t, r, discovery.Instance{Service: service, Host: host, Port: p})
	return g.Instance().ID
}

// Three instances, one answering 503: requests succeed (idempotent ones are
// retried on another instance), the failing one is ejected, and a POST is
// never retried.
func TestTransportRetriesEjectsAndNeverRetriesPOST(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	ok1, ok2, bad := newServer(t, 200), newServer(t, 200), newServer(t, 503)
	registerServer(t, r, "web", ok1)
	registerServer(t, r, "web", ok2)
	badID := registerServer(t, r, "web", bad)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()

	for i := 0; i < 300; i++ {
		resp, err := client.Get("http://web/items/" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %d: %d; want every GET to succeed through a retry", i, resp.StatusCode)
		}
	}
	if n := bad.hits.Load(); n != 5 {
		t.Fatalf("the failing instance got %d requests; want 5 (then ejected)", n)
	}
	svc, _ := r.Get(ctx, "web")
	if st := svc.Instance(badID).Status; st != discovery.StatusEjected {
		t.Fatalf("the failing instance shows %v; want ejected", st)
	}

	// A fresh Registry where the failing instance is not ejected yet.
	r2 := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	for _, s := range []*countingServer{ok1, ok2, bad} {
		s.hits.Store(0)
		registerServer(t, r2, "web", s)
	}
	c2 := r2.HTTPClient()
	defer c2.CloseIdleConnections()
	var failed int
	for i := 0; i < 30; i++ {
		resp, err := c2.Post("http://web/orders", "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 {
			failed++
		}
	}
	if total := ok1.hits.Load() + ok2.hits.Load() + bad.hits.Load(); total != 30 || failed == 0 {
		t.Fatalf("30 POSTs reached the servers %d times with %d failures; want exactly 30 (no retry) and some 503s", total, failed)
	}
}

// 429 is overload, not failure: the instance is not ejected. A cancelled
// request is not held against the instance either.
func TestTransportOutcomes(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	busy := newServer(t, 429)
	id := registerServer(t, r, "busy", busy)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for i := 0; i < 20; i++ {
		resp, err := client.Get("http://busy/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if svc, _ := r.Get(ctx, "busy"); svc.Instance(id).Status == discovery.StatusEjected {
		t.Fatal("429 answers ejected the instance")
	}

	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer slow.Close()
	defer close(hang)
	host, port, _ := net.SplitHostPort(slow.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	mustRegister(t, r, discovery.Instance{Service: "slow", Host: host, Port: p})
	for i := 0; i < 10; i++ {
		cctx, cancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, "http://slow/", nil)
		go cancel()
		if _, err := client.Do(req); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: %v", err)
		}
	}
	if _, err := r.Pick(ctx, "slow"); err != nil {
		t.Fatalf("after 10 cancelled requests the instance is not selectable: %v", err)
	}
}

// lateAnswer is a base transport whose first answer, a 503, comes in just
// as the caller's deadline passes; later requests fail as a real transport
// does once the context has ended.
type lateAnswer struct{ calls atomic.Int64 }

func (l *lateAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	if l.calls.Add(1) == 1 {
		<-req.Context().Done()
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("busy")), Request: req}, nil
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
}

// A failed answer that arrives once the caller's context has ended is not
// retried: the retry could only fail, and it did so on another instance,
// whose Done then counted the caller's deadline as that instance's
// failure (toward its ejection), and the caller got the deadline's error
// instead of the answer it had.
func TestTransportDoesNotRetryOnceTheCallerIsOutOfTime(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	mustRegister(t, r, discovery.Instance{Service: "web", Host: "10.0.0.1", Port: 80})
	mustRegister(t, r, discovery.Instance{Service: "web", Host: "10.0.0.2", Port: 80})
	base := &lateAnswer{}
	client := &http.Client{Transport: r.Transport(discovery.BaseTransport(base))}
	// Long enough that a loaded machine still sends the first attempt
	// before the deadline; the first answer waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web/x", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET = %v; want the instance's 503, which came in before the retry", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET = %d; want the instance's 503", resp.StatusCode)
		}
	}
	if n := base.calls.Load(); n != 1 {
		t.Errorf("%d attempts; want 1 (no retry once the deadline has passed)", n)
	}
	hs, err := r.Health(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	failures := 0
	for _, h := range hs {
		failures += h.PassiveFailures
		if n := discovery.InFlight(r, "web", h.ID); n != 0 {
			t.Errorf("%s has %d requests in flight; want 0", h.ID, n)
		}
	}
	if failures != 1 {
		t.Errorf("%d failures counted; want 1 (the 503), none for an instance the caller had no time left for", failures)
	}
}

// A request is idempotent by net/http's rule, which isIdempotent says it
// follows: an Idempotency-Key entry in the header map, even a zero-length
// one (net/http's documented way to mark a request idempotent without
// sending the header). The Transport read the header's value, so a POST
// marked the net/http way was never retried, and its caller got the 503.
func TestTransportRetriesAPOSTMarkedIdempotentTheNetHTTPWay(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	ok, bad := newServer(t, 200), newServer(t, 503)
	registerServer(t, r, "web", ok)
	registerServer(t, r, "web", bad)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	tests := []struct {
		name   string
		header string
		value  []string
	}{
		{"Idempotency-Key: k", "Idempotency-Key", []string{"k"}},
		{"Idempotency-Key, zero-length", "Idempotency-Key", []string{}},
		{"X-Idempotency-Key, nil", "X-Idempotency-Key", nil},
	}
	for _, tt := range tests {
		for i := range 2 { // round robin: one of the two goes to the failing instance first
			req, _ := http.NewRequest(http.MethodPost, "http://web/orders", strings.NewReader("order"))
			req.Header[tt.header] = tt.value
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("POST %d with %s: %d; want 200 through a retry", i, tt.name, resp.StatusCode)
			}
		}
	}
}

// A 503 with Retry-After is an instance shedding load, which ErrOverloaded's
// godoc names as overload with 429: it must not eject the instance (taking
// an overloaded instance out moves its load onto the others, the cascade
// ejection is there to prevent). The Transport counted it as a 5xx failure
// and ejected the instance after 5 of them; a 503 without Retry-After still
// does.
func TestTransport503WithRetryAfterIsOverloadNotFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	tests := []struct {
		service    string
		retryAfter string
		ejected    bool
	}{
		{"shedding", "1", false},
		{"broken", "", true},
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if tt.retryAfter != "" {
				w.Header().Set("Retry-After", tt.retryAfter)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		defer srv.Close()
		id := registerServer(t, r, tt.service, &countingServer{Server: srv})
		answered := 0
		for range 20 {
			resp, err := client.Get("http://" + tt.service + "/")
			if err != nil { // no instance left to pick
				break
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("GET %s: %d; want the instance's 503", tt.service, resp.StatusCode)
			}
			answered++
		}
		if want := map[bool]int{false: 20, true: 5}[tt.ejected]; answered != want {
			t.Errorf("the instance answering 503 (Retry-After %q) got %d of 20 requests; want %d", tt.retryAfter, answered, want)
		}
		svc, err := r.Get(ctx, tt.service)
		if err != nil {
			t.Fatal(err)
		}
		if got := svc.Instance(id).Status == discovery.StatusEjected; got != tt.ejected {
			t.Errorf("after its 503s (Retry-After %q) the instance shows %v; want ejected %v", tt.retryAfter, svc.Instance(id).Status, tt.ejected)
		}
	}
}

// A router instance registered with a handler is served in-process.
func TestTransportServesRouterInstancesInProcess(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	var hits atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "in-process "+req.URL.Path)
	})
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	resp, err := r.HTTPClient().Get("http://user_svc/profile")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "in-process /profile" || hits.Load() != 1 {
		t.Fatalf("got %q (%d hits); want the handler's answer, with no network (port 1 is closed)", body, hits.Load())
	}
}

// A panicking in-process handler is the instance's failure, an error to the
// caller: the request is not left counted in flight (it was, for good).
func TestTransportHandlerPanicIsAFailureNotARequestInFlight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { panic("boom") })
	g, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	id := g.Instance().ID
	func() {
		defer func() { _ = recover() }()
		resp, err := r.HTTPClient().Get("http://user_svc/x")
		if err == nil {
			resp.Body.Close()
		}
	}()
	if n := discovery.InFlight(r, "user_svc", id); n != 0 {
		t.Fatalf("after a handler panic the instance has %d requests in flight; want 0 (Selection.Done never called)", n)
	}
}

// A GET served in-process gives its handler a non-nil body, as net/http's
// server does: a handler that read it panicked.
func TestTransportInProcessGETHasABody(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body) // fine under net/http's server
		_, _ = w.Write(b)
	})
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	var perr any
	func() {
		defer func() { perr = recover() }()
		resp, err := r.HTTPClient().Get("http://user_svc/x")
		if err != nil {
			t.Errorf("GET: %v", err)
			return
		}
		resp.Body.Close()
	}()
	if perr != nil {
		t.Fatalf("GET served in-process panicked: %v", perr)
	}
}

type trackBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackBody) Close() error { b.closed.Store(true); return nil }

// RoundTrip must always close the request body, including on errors.
func TestTransportClosesTheBodyWhenNoInstanceIsPicked(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	body := &trackBody{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, "http://nosuch/x", body)
	_, err := r.Transport().RoundTrip(req)
	if err == nil {
		t.Fatal("want an error")
	}
	if !body.closed.Load() {
		t.Fatalf("RoundTrip returned %v without closing the request body", err)
	}
}

func TestTransportInProcessClosesTheBody(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { w.WriteHeader(204) })
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	body := &trackBody{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, "http://user_svc/x", body)
	resp, err := r.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !body.closed.Load() {
		t.Fatal("RoundTrip (in-process) never closed the request body")
	}
}

// One instance answering 503 to a GET, and no other to retry on: the caller
// gets the 503 (it got ErrNoHealthyInstances).
func TestTransportReturnsTheAnswerWhenNoOtherInstanceIsLeft(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	bad := newServer(t, 503)
	registerServer(t, r, "web", bad)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://web/x")
	if err != nil {
		t.Fatalf("GET to the one instance, which answered 503 (%d hits): error %v; want the 503 response (errors.Is NoHealthy: %v)",
			bad.hits.Load(), err, errors.Is(err, discovery.ErrNoHealthyInstances))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// An instance that drops the connection in the middle of every response
// body fails: the cut bodies count toward its ejection (each counted as a
// success, it was never ejected).
func TestTransportBodyCutShortIsAFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithStrategy(discovery.StrategyRoundRobin), discovery.WithoutHealthChecks())
	ok1, ok2 := newServer(t, 200), newServer(t, 200)
	registerServer(t, r, "web", ok1)
	registerServer(t, r, "web", ok2)
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		_ = buf.Flush()
		conn.Close()
	}))
	t.Cleanup(cut.Close)
	host, port, _ := net.SplitHostPort(cut.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	cutID := mustRegister(t, r, discovery.Instance{Service: "web", Host: host, Port: p}).Instance().ID
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	var broken int
	for i := 0; i < 60; i++ {
		resp, err := client.Get("http://web/x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			broken++
		}
		resp.Body.Close()
	}
	svc, _ := r.Get(ctx, "web")
	if st := svc.Instance(cutID).Status; st != discovery.StatusEjected {
		t.Fatalf("%d of 60 responses were cut off by the instance, which shows %v; want ejected (connection errors fail)", broken, st)
	}
}

// A response without a body (HEAD, 204, Content-Length: 0) that the caller
// never closes, as net/http allows for http.NoBody, is not left counted in
// flight: its outcome is reported when it arrives.
func TestTransportBodilessAnswerIsNotLeftInFlight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok, empty := newServer(t, 200), newServer(t, 204)
	okID, emptyID := registerServer(t, r, "web", ok), registerServer(t, r, "empty", empty)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for i := 0; i < 10; i++ {
		if _, err := client.Head("http://web/"); err != nil { // body never closed
			t.Fatal(err)
		}
		if _, err := client.Get("http://empty/"); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := discovery.InFlight(r, "web", okID), discovery.InFlight(r, "empty", emptyID); a != 0 || b != 0 {
		t.Fatalf("after 10 HEADs and 10 204s, none in flight, the instances count %d and %d in flight; want 0", a, b)
	}
}

// A Host the caller set on the request is the Host the instance sees, as
// with net/http (virtual hosting behind a service); only the URL's host, the
// service name, is rewritten to the instance's address.
func TestTransportKeepsTheCallersHost(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	got := make(chan string, 2)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { got <- req.Host + " " + req.URL.RequestURI() }))
	defer s.Close()
	host, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	mustRegister(t, r, discovery.Instance{Service: "web", Host: host, Port: p})
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, tt := range []struct{ setHost, want string }{
		{"api.example.com", "api.example.com /a%2Fb?q=1"},
		{"", "web:9999 /a%2Fb?q=1"},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://web:9999/a%2Fb?q=1", nil)
		req.Host = tt.setHost
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if g := <-got; g != tt.want {
			t.Errorf("req.Host %q: the instance saw %q; want %q", tt.setHost, g, tt.want)
		}
	}
}

// The same for a router instance served in-process: an empty answer the
// caller never closes is not left counted in flight.
func TestTransportInProcessBodilessAnswerIsNotLeftInFlight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { w.WriteHeader(http.StatusNoContent) })
	g, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	for i := 0; i < 10; i++ {
		if _, err := client.Get("http://user_svc/x"); err != nil { // body never closed
			t.Fatal(err)
		}
	}
	if n := discovery.InFlight(r, "user_svc", g.Instance().ID); n != 0 {
		t.Fatalf("after 10 answers without a body, none in flight, the instance counts %d in flight; want 0", n)
	}
}

// A deadline that passes while an instance holds a request before its
// headers (a hung instance, seen through a context deadline or
// http.Client.Timeout) is the instance's failure, as Done counts it for a
// caller that picks by hand: the instance is ejected after 5 of them, not
// picked for ever, over the network and in-process. A cancellation stays
// the caller's (TestTransportOutcomes), and so does a deadline that passes
// once the headers came, while the caller reads the body
// (TestTransportCallerDeadlineMidBodyIsNotTheInstancesFailure).
func TestTransportDeadlineIsAFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	hang := make(chan struct{})
	defer close(hang)
	hung := func(w http.ResponseWriter, req *http.Request) { // no answer at all
		select {
		case <-hang:
		case <-req.Context().Done():
		}
	}
	for _, tt := range []struct {
		service   string
		inProcess bool
	}{
		{"hung", false},
		{"hung-in-process", true},
	} {
		id := midBodyInstance(t, r, tt.service, tt.inProcess, hung)
		client := r.HTTPClient()
		client.Timeout = 50 * time.Millisecond
		for i := 0; i < 5; i++ {
			resp, err := client.Get("http://" + tt.service + "/")
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(fmt.Sprint(err), "Client.Timeout") {
				t.Fatalf("%s: request %d: %v; want the client's timeout", tt.service, i, err)
			}
		}
		client.CloseIdleConnections()
		if svc, _ := r.Get(ctx, tt.service); svc.Instance(id).Status != discovery.StatusEjected {
			t.Errorf("%s: after 5 requests past their deadline the instance shows %v; want ejected", tt.service, svc.Instance(id).Status)
		}
	}
}

// An in-process handler that does not watch its request's context (a
// computation, a call without the context) does not hold a caller that gave
// up: RoundTrip returns the context's error when the caller cancels, as it
// does for an instance over the network, and the request is not left in
// flight. It waited for the handler, for ever if the handler never returned.
func TestTransportInProcessCallerCancelsAHandlerThatDoesNotReturn(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	started, release, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer close(finished)
		close(started)
		<-release // not req.Context().Done()
		_, _ = io.WriteString(w, "late")
	})
	g, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { <-finished }()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://user_svc/x", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := r.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled in-process request: %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caller cancelled, yet the request is still held by the in-process handler")
	}
	if n := discovery.InFlight(r, "user_svc", g.Instance().ID); n != 0 {
		t.Fatalf("a cancelled in-process request left %d requests in flight; want 0", n)
	}
}

// A request that net/http refuses to send (a header name or value it cannot
// carry, a method that is not a token) is the caller's mistake: it is
// refused before any instance is picked, with an error matching
// ErrInvalid, and counts against no instance. Each was sent to the base
// transport, whose refusal counted as the instance's failure (and was
// retried on another instance): a caller looping on a bad header ejected
// healthy instances.
func TestTransportRefusesARequestNetHTTPWouldRefuseWithoutBlamingAnInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok1, ok2 := newServer(t, 200), newServer(t, 200)
	registerServer(t, r, "web", ok1)
	registerServer(t, r, "web", ok2)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	tests := []struct {
		name   string
		method string
		header string
		value  string
		host   string
	}{
		{"a value with a newline", http.MethodGet, "X-User", "a\nb", ""},
		{"a name with a space", http.MethodGet, "X User", "a", ""},
		{"a method with a space", "GET X", "X-User", "a", ""},
		{"a Host with a space", http.MethodGet, "X-User", "a", "web x"},
		{"a Host with a slash", http.MethodGet, "X-User", "a", "web/x"},
	}
	for _, tt := range tests {
		for i := range 6 {
			req, _ := http.NewRequest(http.MethodGet, "http://web/x", nil)
			req.Method = tt.method
			req.Header[tt.header] = []string{tt.value}
			req.Host = tt.host
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s: request %d answered %d; want an error", tt.name, i, resp.StatusCode)
			}
			if !errors.Is(err, discovery.ErrInvalid) {
				t.Errorf("%s: request %d: %v; want an error matching ErrInvalid", tt.name, i, err)
			}
		}
	}
	noneBlamed(t, r, "web", "requests the caller got wrong")
	if n := ok1.hits.Load() + ok2.hits.Load(); n != 0 {
		t.Errorf("the instances got %d requests; want 0", n)
	}
	// A request without a URL: net/http's error, where the Transport panicked.
	body := &closeCounter{Reader: strings.NewReader("x")}
	if resp, err := r.Transport().RoundTrip(&http.Request{Method: http.MethodPost, Header: http.Header{}, Body: body}); !errors.Is(err, discovery.ErrInvalid) || resp != nil {
		t.Errorf("RoundTrip of a request without a URL = %v, %v; want an error matching ErrInvalid", resp, err)
	}
	if body.closed.Load() != 1 {
		t.Errorf("RoundTrip of a request without a URL closed its body %d times; want 1", body.closed.Load())
	}
}

// closeCounter is a request body that counts its closes.
type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// A protocol upgrade (101 Switching Protocols: WebSocket, h2c) gives the
// caller the connection as a writable body, as net/http does: WebSocket
// clients over an http.Client assert io.ReadWriteCloser. The Transport
// wrapped it in a read-only body, so every upgrade through it failed, and
// it would have reported the connection's whole life as one request's
// latency. The request ends with the handshake.
func TestTransportUpgradedConnectionIsWritable(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = buf.Flush()
		b := make([]byte, 4)
		if _, err := io.ReadFull(buf, b); err == nil {
			_, _ = conn.Write(b)
		}
	}))
	defer srv.Close()
	id := registerServer(t, r, "ws", &countingServer{Server: srv})
	req, _ := http.NewRequest(http.MethodGet, "http://ws/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d; want 101", resp.StatusCode)
	}
	upgraded(t, r, resp, id)
}

// http.Client.CloseIdleConnections reaches the base transport's pool, as
// for any other RoundTripper that has one: the Transport did not have the
// method, so the call did nothing and the idle connections to instances
// stayed open until their idle timeout (90 s), for each Transport made.
func TestTransportClosesIdleConnections(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			select {
			case closed <- struct{}{}:
			default:
			}
		}
	}
	srv.Start()
	defer srv.Close()
	registerServer(t, r, "web", &countingServer{Server: srv})
	client := r.HTTPClient()
	resp, err := client.Get("http://web/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close() // the connection goes back to the pool, idle
	client.CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection to the instance is still open after CloseIdleConnections")
	}
}

// A response served in-process names its request, as net/http's transport
// does (Response.Request: "the request that was sent to obtain this
// Response"): it was nil, and a caller that logs resp.Request.URL
// panicked for router instances alone.
func TestTransportInProcessResponseNamesItsRequest(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { _, _ = io.WriteString(w, "ok") })
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	resp, err := r.HTTPClient().Get("http://user_svc/profile")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Request == nil || resp.Request.Method != http.MethodGet || resp.Request.URL.Path != "/profile" {
		t.Fatalf("resp.Request = %+v; want the GET /profile that was sent", resp.Request)
	}
}

// A request whose context has already ended is not served in-process, as
// net/http's transport sends nothing for it: the handler ran anyway (in a
// goroutine nobody waited for), carrying out a POST whose caller was told
// it had been cancelled.
func TestTransportInProcessDoesNotServeAnEndedContext(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ran := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { ran <- struct{}{} })
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(context.Background(), "user_svc"); err != nil { // a warm cache: Pick does not need the context
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	body := &trackBody{Reader: strings.NewReader("order")}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://user_svc/orders", body)
	resp, err := r.Transport().RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("POST with a cancelled context: %v; want context.Canceled", err)
	}
	if !body.closed.Load() {
		t.Error("RoundTrip returned without closing the request body")
	}
	select {
	case <-ran:
		t.Fatal("the handler served a request whose context had ended before it was sent")
	case <-time.After(200 * time.Millisecond): // it starts at once when it starts at all
	}
}

// A HEAD served in-process has no body, as net/http's server and client
// make it, even from a handler that writes one (most serve GET and HEAD
// alike): the caller got the handler's body, and one that did not close
// it, as net/http allows for an empty answer, left the request counted
// in flight for good.
func TestTransportInProcessHEADHasNoBody(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { _, _ = io.WriteString(w, "hello") })
	g, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	for i := 0; i < 10; i++ {
		resp, err := client.Head("http://user_svc/x") // body never closed
		if err != nil {
			t.Fatal(err)
		}
		if resp.Body != http.NoBody {
			t.Fatalf("HEAD answered with a body (%T); want http.NoBody", resp.Body)
		}
	}
	if n := discovery.InFlight(r, "user_svc", g.Instance().ID); n != 0 {
		t.Fatalf("after 10 HEADs the instance counts %d requests in flight; want 0", n)
	}
}

// A streaming handler served in-process (server-sent events, a long
// download: anything that flushes) reaches its caller as it writes, as it
// would over the network: the handler wrote into a recorder, so the
// caller's Do returned only once the handler had ended, and never for one
// that does not end. The request ends when the caller closes the body,
// which ends the handler's context, as a client that leaves does.
func TestTransportInProcessStreams(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	read, finished := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer close(finished)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-read: // the caller has the event
		case <-req.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
		w.(http.Flusher).Flush()
		<-req.Context().Done() // a stream that ends when its reader leaves
	})
	g, err := r.Register(context.Background(), discovery.Instance{Service: "events", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-finished }()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://events/stream", nil)
	type answer struct {
		resp *http.Response
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := r.HTTPClient().Do(req)
		got <- answer{resp, err}
	}()
	var resp *http.Response
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatalf("GET of a streaming in-process handler: %v", a.err)
		}
		resp = a.resp
	case <-time.After(10 * time.Second):
		t.Fatal("the in-process handler wrote and flushed an event, yet the caller's Do has not returned")
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Errorf("got %d %q; want 200 text/event-stream", resp.StatusCode, ct)
	}
	first := make([]byte, len("data: one\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: one\n\n" {
		t.Fatalf("first event %q, %v; want \"data: one\\n\\n\"", first, err)
	}
	if n := discovery.InFlight(r, "events", g.Instance().ID); n != 1 {
		t.Errorf("%d requests in flight while the body is read; want 1", n)
	}
	close(read)
	second := make([]byte, len("data: two\n\n"))
	if _, err := io.ReadFull(resp.Body, second); err != nil || string(second) != "data: two\n\n" {
		t.Fatalf("second event %q, %v; want \"data: two\\n\\n\"", second, err)
	}
	resp.Body.Close()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the caller closed the body, yet the handler's context has not ended")
	}
	if n := discovery.InFlight(r, "events", g.Instance().ID); n != 0 {
		t.Errorf("%d requests in flight once the body is closed; want 0", n)
	}
}

// An https request to a service verifies the instance's certificate
// against the name the caller asked for, as grpc-go checks every backend
// against the target's authority: the Transport rewrote the URL's host to
// the instance's address, so the TLS server name and the verification used
// the instance's IP, and a certificate issued for the service failed.
func TestTransportHTTPSVerifiesTheServiceName(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	cert, roots := certFor(t, "web")
	sni := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		select {
		case sni <- hello.ServerName:
		default:
		}
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	registerServer(t, r, "web", &countingServer{Server: srv})
	client := r.HTTPClient(discovery.BaseTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}))
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://web/x")
	if err != nil {
		t.Fatalf("GET https://web/x from an instance whose certificate names web: %v; want it verified", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "ok" {
		t.Fatalf("GET https://web/x: %q, %v; want \"ok\"", b, err)
	}
	if got := <-sni; got != "web" {
		t.Errorf("the instance was asked for server name %q; want \"web\"", got)
	}
}

// certFor returns a self-signed certificate for the DNS name, and a pool
// that trusts it.
func certFor(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert := certWithin(t, name, 1, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return cert, roots
}

// certWithin returns a self-signed certificate (its own CA) for the DNS
// name, of the serial number, valid from notBefore to notAfter.
func certWithin(t *testing.T, name string, serial int64, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               x509pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// An in-process handler's short answer is written ahead of the caller's
// reads, as a server's is into its socket's buffers: the handler returns
// before the caller reads a byte. Its writes went through a pipe without
// a buffer, so a caller that had not yet read (or not yet closed a body it
// did not want) held the handler on its first write, for good if it never
// did.
func TestTransportInProcessHandlerFinishesBeforeTheCallerReads(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	finished := make(chan struct{})
	body := strings.Repeat("x", 32<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer close(finished)
		_, _ = io.WriteString(w, body)
	})
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	resp, err := r.HTTPClient().Get("http://user_svc/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		resp.Body.Close() // lets the handler go
		<-finished
		t.Fatal("the handler's 32 KiB answer waited for the caller's read")
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != body {
		t.Fatalf("body: %d bytes, %v; want the %d the handler wrote", len(got), err, len(body))
	}
}

// A request whose scheme is neither http nor https is not one the
// Transport can send to an instance: net/http refuses it ("unsupported
// protocol scheme") whatever the host. It was resolved through Pick all the
// same, each refusal counted as the picked instance's failure and retried
// on another, so that five requests with a mistyped scheme ejected healthy
// instances (and an in-process handler served "ftp://").
func TestTransportLeavesOtherSchemesToTheBaseWithoutBlamingAnInstance(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok1, ok2 := newServer(t, 200), newServer(t, 200)
	registerServer(t, r, "web", ok1)
	registerServer(t, r, "web", ok2)
	served := make(chan struct{}, 10)
	if _, err := r.Register(ctx, discovery.Instance{Service: "local", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { served <- struct{}{} }))); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, url := range []string{"ftp://web/x", "ftp://local/x"} {
		for i := range 6 {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s (%d) answered %d; want net/http's error", url, i, resp.StatusCode)
			}
			if !strings.Contains(err.Error(), "unsupported protocol scheme") {
				t.Errorf("GET %s (%d): %v; want net/http's unsupported protocol scheme", url, i, err)
			}
		}
	}
	for _, svc := range []string{"web", "local"} {
		noneBlamed(t, r, svc, "requests with a scheme net/http does not send")
	}
	if n := ok1.hits.Load() + ok2.hits.Load() + int64(len(served)); n != 0 {
		t.Errorf("the instances got %d requests; want 0", n)
	}
}

// A request with a nil Header, which net/http's Transport refuses ("nil
// Request.Header") whatever the instance, is the caller's mistake: it was
// sent to a picked instance, the refusal counted as that instance's
// failure and retried on another, and a few such requests ejected healthy
// instances.
func TestTransportRefusesANilHeaderWithoutBlamingAnInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok1, ok2 := newServer(t, 200), newServer(t, 200)
	registerServer(t, r, "web", ok1)
	registerServer(t, r, "web", ok2)
	rt := r.Transport()
	defer rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	for i := range 6 {
		req, _ := http.NewRequest(http.MethodGet, "http://web/x", nil)
		req.Header = nil
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request %d answered %d; want an error", i, resp.StatusCode)
		}
		if !errors.Is(err, discovery.ErrInvalid) {
			t.Errorf("request %d: %v; want an error matching ErrInvalid", i, err)
		}
	}
	noneBlamed(t, r, "web", "requests without a Header")
}

// The trailers an in-process handler declared come with its body's end,
// whatever the caller does meanwhile with the response's header, which is
// the caller's: httputil.ReverseProxy deletes "Trailer" from it (a hop-by-hop
// header) before it copies the body. The handler read the declaration from
// that header when it returned, racing with the caller's changes to it (a
// data race, and a concurrent map read and write), and the trailer's value
// was lost.
func TestTransportInProcessTrailersSurviveTheCallersHeaderChanges(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	proceed := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		<-proceed
		w.Header().Set("X-Sum", "42")
	})
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "sums", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	resp, err := r.HTTPClient().Get("http://sums/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	resp.Header.Del("Trailer") // as ReverseProxy does
	close(proceed)
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "body" {
		t.Fatalf("body %q, %v; want \"body\"", b, err)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q once the body is read; want \"42\" (trailer %v)", got, resp.Trailer)
	}
}

// A caller whose deadline has passed before its request is sent (a
// deadline spent upstream, and passed on in the context) gets the
// deadline's error at once, as from net/http, and no instance is blamed:
// the instance was never asked, yet each such request counted as the
// picked instance's failure, and five of them ejected a healthy instance.
func TestTransportDeadlinePassedBeforeSendingBlamesNoInstance(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok := newServer(t, 200)
	registerServer(t, r, "web", ok)
	if _, err := r.Register(ctx, discovery.Instance{Service: "local", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {}))); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, svc := range []string{"web", "local"} {
		if _, err := r.Get(ctx, svc); err != nil { // a warm cache: the pick takes no load
			t.Fatal(err)
		}
		for i := range 6 {
			dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			req, _ := http.NewRequestWithContext(dctx, http.MethodGet, "http://"+svc+"/x", nil)
			resp, err := client.Do(req)
			cancel()
			if err == nil {
				resp.Body.Close()
				t.Fatalf("%s: request %d with a passed deadline answered %d; want the deadline's error", svc, i, resp.StatusCode)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: request %d: %v; want an error matching context.DeadlineExceeded", svc, i, err)
			}
		}
		noneBlamed(t, r, svc, "requests whose deadline passed before they were sent")
	}
	if n := ok.hits.Load(); n != 0 {
		t.Errorf("the instance got %d requests; want 0", n)
	}
}

// failingBody is a request body that fails after its first bytes, as a
// stream a proxy forwards does when its own client goes away.
type failingBody struct{ sent bool }

var errCallersBody = errors.New("the caller's body failed")

func (b *failingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, "part"), nil
	}
	return 0, errCallersBody
}

func (b *failingBody) Close() error { return nil }

// A request whose own body fails to read is the caller's failure, not the
// instance's: net/http gives the body's error back, and it counted as the
// picked instance's failure, so a few uploads whose source broke ejected a
// healthy instance.
func TestTransportCallersBodyErrorBlamesNoInstance(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok := newServer(t, 200)
	registerServer(t, r, "web", ok)
	if _, err := r.Register(ctx, discovery.Instance{Service: "local", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				panic(http.ErrAbortHandler) // as net/http's server does on a body cut short
			}
		}))); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, svc := range []string{"web", "local"} {
		for range 6 {
			req, _ := http.NewRequest(http.MethodPost, "http://"+svc+"/upload", &failingBody{})
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		noneBlamed(t, r, svc, "requests whose own body failed")
	}
}

// An in-process handler that declares a Content-Length and writes fewer
// bytes cut its body short, as net/http's server does when it closes the
// connection: the caller's read fails (io.ErrUnexpectedEOF) and the
// instance gets the failure. The caller read a short body to a clean EOF,
// counted a success. Bytes past the declared length are refused to the
// handler (http.ErrContentLength), as net/http's server refuses them; the
// caller got them all (a write that would pass it is refused whole).
func TestTransportInProcessHonoursContentLength(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	writeErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "10")
		if req.URL.Path == "/short" {
			_, _ = io.WriteString(w, "abc")
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 10))
		_, err := io.WriteString(w, strings.Repeat("y", 10))
		writeErr <- err
	})
	g, err := r.Register(ctx, discovery.Instance{Service: "sized", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	resp, err := client.Post("http://sized/short", "text/plain", nil) // a POST: not retried
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a body of 3 of its declared 10 bytes: %q, %v; want io.ErrUnexpectedEOF", b, err)
	}
	hs, err := r.Health(ctx, "sized")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].PassiveFailures != 1 {
		t.Errorf("health after a body cut short: %+v; want 1 passive failure", hs)
	}

	resp, err = client.Get("http://sized/long")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != strings.Repeat("x", 10) {
		t.Errorf("body of a handler that wrote 10 bytes of a declared 10, then 10 more: %q, %v; want the first 10", b, err)
	}
	if err := <-writeErr; !errors.Is(err, http.ErrContentLength) {
		t.Errorf("the handler's write past its Content-Length: %v; want http.ErrContentLength", err)
	}
	if n := discovery.InFlight(r, "sized", g.Instance().ID); n != 0 {
		t.Errorf("%d requests in flight; want 0", n)
	}
}

// Close releases the connections the Registry's Transports opened through
// the base transport it made for them (BaseTransport not given), as it
// does those of its own HTTP client: their read and write goroutines
// outlived Close, for the base's idle timeout (90 s), and a test with a
// leak check that used HTTPClient failed.
func TestCloseReleasesTheTransportsConnections(t *testing.T) {
	b := discoverytest.NewBackend()
	ok := newServer(t, 200)
	before := goleak.IgnoreCurrent()
	r := discoverytest.NewRegistry(t, b, discovery.WithoutHealthChecks())
	registerServer(t, r, "web", ok)
	for range 2 {
		resp, err := r.HTTPClient().Get("http://web/x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before)
}

// A request whose body does not have the length it declares is refused by
// net/http ("ContentLength=10 with Body length 3") whatever the instance:
// the caller's mistake, which counted as the picked instance's failure.
func TestTransportContentLengthMismatchBlamesNoInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ok := newServer(t, 200)
	registerServer(t, r, "web", ok)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for range 6 {
		req, _ := http.NewRequest(http.MethodPost, "http://web/upload", io.MultiReader(strings.NewReader("abc")))
		req.ContentLength = 10
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.Fatalf("a body of 3 bytes declared as 10 was sent: %d", resp.StatusCode)
		}
	}
	noneBlamed(t, r, "web", "requests whose body did not have its declared length")
}

// Over HTTP/2 too, a bodiless answer (to a HEAD, a 204) whose body the
// caller never closes is not left counted in flight: net/http's HTTP/2
// client gives such answers a body of its own, not http.NoBody, and the
// Transport waited for a Close that never came, so the instance counted
// one more request in flight for good with each (least_connections and
// p2c_ewma shunned it).
func TestTransportBodilessAnswerOverHTTP2IsNotLeftInFlight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	protos := make(chan string, 100)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		protos <- req.Proto
		if req.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	id := registerServer(t, r, "web", &countingServer{Server: srv})
	client := r.HTTPClient(discovery.BaseTransport(&http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}))
	defer client.CloseIdleConnections()
	for range 5 {
		if _, err := client.Head("https://web/"); err != nil { // body never closed
			t.Fatal(err)
		}
		if _, err := client.Get("https://web/empty"); err != nil {
			t.Fatal(err)
		}
	}
	if p := <-protos; p != "HTTP/2.0" {
		t.Fatalf("the instance was asked over %s; want HTTP/2.0", p)
	}
	if n := discovery.InFlight(r, "web", id); n != 0 {
		t.Fatalf("after 5 HEADs and 5 204s over HTTP/2, none in flight, the instance counts %d in flight; want 0", n)
	}
}

// Close releases the connections its Transports keep: a Transport made
// without BaseTransport cloned http.DefaultTransport, a pool of its own for
// each HTTPClient() call, and Close left them all open, each idle
// connection (and its two goroutines) alive for the pool's idle timeout,
// 90 s: a test with goleak, or a process that makes and closes Registries,
// found them leaked. The Transports made without a base now share one pool,
// the Registry's, which Close empties. (A BaseTransport the caller gave is
// the caller's to close.)
func TestRegistryCloseClosesItsTransportsIdleConnections(t *testing.T) {
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	var opened, closed atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	registerServer(t, r, "web", &countingServer{Server: srv})
	for range 2 { // two clients, as code that makes one per call does
		resp, err := r.HTTPClient().Get("http://web/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close() // the connection goes back to its pool, idle
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every connection to the instance closed after Registry.Close", func() bool {
		return opened.Load() > 0 && closed.Load() == opened.Load()
	})
}

// BaseTransport given nil, or a nil pointer (a *http.Transport variable
// never set), leaves the default base, as AdminAuthorizer does for a nil
// Authorizer: a Transport has no error to return, and the nil pointer
// panicked in the request (net/http's RoundTrip on a nil *http.Transport).
func TestTransportNilBaseIsTheDefault(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	srv := newServer(t, http.StatusOK)
	registerServer(t, r, "web", srv)
	var unset *http.Transport
	for name, base := range map[string]http.RoundTripper{"nil": nil, "nil *http.Transport": unset} {
		t.Run(name, func(t *testing.T) {
			var resp *http.Response
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Get through BaseTransport(%s) panicked: %v", name, p)
					}
				}()
				resp, err = r.HTTPClient(discovery.BaseTransport(base)).Get("http://web/")
			}()
			if err != nil {
				t.Fatalf("Get through BaseTransport(%s) = %v; want the default base's answer", name, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
	}
}

// wrappedRoundTripper stands for what instrumentation libraries install as
// http.DefaultTransport: a RoundTripper that is not an *http.Transport.
type wrappedRoundTripper struct{ http.RoundTripper }

// A process whose http.DefaultTransport was replaced by a wrapper (tracing
// libraries do it) could not use the Transport: making one cloned
// http.DefaultTransport as an *http.Transport, and panicked. It now takes
// net/http's defaults instead.
func TestTransportWithDefaultTransportReplaced(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	srv := newServer(t, http.StatusOK)
	registerServer(t, r, "web", srv)
	orig := http.DefaultTransport
	http.DefaultTransport = wrappedRoundTripper{orig}
	defer func() { http.DefaultTransport = orig }()
	var resp *http.Response
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("a Transport with http.DefaultTransport replaced panicked: %v", p)
			}
		}()
		resp, err = r.HTTPClient().Get("http://web/")
	}()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// A panic while a request is with its instance (the base RoundTripper's, a
// GetBody's on a retry) reaches the caller, as net/http lets it, but the
// instance is done with: it stayed counted in flight for good, and lost
// every least-connections pick after.
func TestTransportPanicLeavesNoRequestInFlight(t *testing.T) {
	tests := []struct {
		name    string
		base    http.RoundTripper
		getBody func() (io.ReadCloser, error)
	}{
		{
			name: "base panics",
			base: roundTripFunc(func(*http.Request) (*http.Response, error) { panic("base transport bug") }),
		},
		{
			name: "GetBody panics on the retry",
			base: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 502, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
			}),
			getBody: func() (io.ReadCloser, error) { panic("GetBody bug") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			var ids []string
			for port := 1; port <= 2; port++ {
				ids = append(ids, mustRegister(t, r, discovery.Instance{Service: "web", Host: "127.0.0.1", Port: port}).Instance().ID)
			}
			req, _ := http.NewRequest(http.MethodPut, "http://web/x", strings.NewReader("body"))
			req.Header["Idempotency-Key"] = []string{"k"}
			if tt.getBody != nil {
				req.GetBody = tt.getBody
			}
			var p any
			func() {
				defer func() { p = recover() }()
				resp, err := r.Transport(discovery.BaseTransport(tt.base)).RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
			}()
			if p == nil {
				t.Fatal("RoundTrip did not panic; the test expects the panic to reach the caller")
			}
			for _, id := range ids {
				if n := discovery.InFlight(r, "web", id); n != 0 {
					t.Errorf("after a panic (%v), instance %s has %d requests in flight; want 0 (Selection.Done never called)", p, id, n)
				}
			}
		})
	}
}

// An in-process handler that declares a Content-Length and returns without
// writing any of it cut its body short too, as one that wrote part of it:
// net/http's server sends the header and closes the connection, and the
// caller's read fails (io.ErrUnexpectedEOF). The caller got an empty body
// with a clean EOF, the declared length with it, counted a success.
func TestTransportInProcessDeclaredLengthNeverWrittenIsCutShort(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "10") // and then nothing: its source failed, say
	})
	g, err := r.Register(ctx, discovery.Instance{Service: "sized", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.HTTPClient().Post("http://sized/x", "text/plain", nil) // a POST: not retried
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a body of none of its declared 10 bytes: %q, %v; want io.ErrUnexpectedEOF, as over the network", b, err)
	}
	hs, err := r.Health(ctx, "sized")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].PassiveFailures != 1 {
		t.Errorf("health after a body cut short: %+v; want 1 passive failure", hs)
	}
	if n := discovery.InFlight(r, "sized", g.Instance().ID); n != 0 {
		t.Errorf("%d requests in flight; want 0", n)
	}
}

// A base RoundTripper that breaks its contract gets the answer net/http's
// Client gives it, and the instance is not blamed: a nil response with a
// nil error is an error (send read its status and panicked, in the
// caller's goroutine), and a response with a nil Body reads as empty
// (the caller's Close panicked, and its request stayed in flight).
func TestTransportBaseThatBreaksItsContract(t *testing.T) {
	tests := []struct {
		name    string
		resp    func(*http.Request) *http.Response
		wantErr bool
	}{
		{"nil response, nil error", func(*http.Request) *http.Response { return nil }, true},
		{"nil Body", func(req *http.Request) *http.Response {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Request: req}
		}, false},
		{"nil Body of a declared length", func(req *http.Request) *http.Response {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: 10, Request: req}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			id := mustRegister(t, r, discovery.Instance{Service: "web", Host: "127.0.0.1", Port: 1}).Instance().ID
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) { return tt.resp(req), nil })
			req, _ := http.NewRequest(http.MethodPost, "http://web/x", strings.NewReader("body"))
			var (
				resp *http.Response
				err  error
				p    any
			)
			func() {
				defer func() { p = recover() }()
				resp, err = r.Transport(discovery.BaseTransport(base)).RoundTrip(req)
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					if rerr != nil || len(b) != 0 {
						t.Errorf("body %q, %v; want an empty one", b, rerr)
					}
					resp.Body.Close()
				}
			}()
			if p != nil {
				t.Fatalf("RoundTrip panicked: %v", p)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("RoundTrip error = %v; want an error: %v", err, tt.wantErr)
			}
			if n := discovery.InFlight(r, "web", id); n != 0 {
				t.Errorf("instance %s has %d requests in flight; want 0", id, n)
			}
			if h := healthOf(t, r, "web", id); h.PassiveFailures != 0 {
				t.Errorf("the instance was blamed for its caller's base transport: %d passive failures", h.PassiveFailures)
			}
		})
	}
}

// A retry whose body cannot be had again (GetBody fails) leaves the caller
// the answer it has, readable: the 5xx answer was drained and closed
// before GetBody was asked, and the caller got GetBody's error instead.
func TestTransportRetryWhoseBodyCannotBeHadAgainKeepsTheAnswer(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	var ids []string
	for port := 1; port <= 2; port++ {
		ids = append(ids, mustRegister(t, r, discovery.Instance{Service: "web", Host: "127.0.0.1", Port: port}).Instance().ID)
	}
	var calls atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		calls.Add(1)
		return &http.Response{StatusCode: 502, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("upstream down")), ContentLength: -1, Request: req}, nil
	})
	req, _ := http.NewRequest(http.MethodPut, "http://web/x", strings.NewReader("body"))
	req.Header["Idempotency-Key"] = []string{"k"}
	req.GetBody = func() (io.ReadCloser, error) { return nil, errors.New("the body is gone") }
	resp, err := r.Transport(discovery.BaseTransport(base)).RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip = %v; want the instance's 502, which it had", err)
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || string(b) != "upstream down" || rerr != nil {
		t.Fatalf("answer %d %q, %v; want 502 \"upstream down\"", resp.StatusCode, b, rerr)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d attempts; want 1 (no body for a second)", n)
	}
	for _, id := range ids {
		if n := discovery.InFlight(r, "web", id); n != 0 {
			t.Errorf("instance %s has %d requests in flight; want 0", id, n)
		}
	}
}

// A response names the request the caller sent, to http://<service>/...,
// not the one sent to the instance: resp.Location() resolved a relative
// Location against the instance's address, so a caller that followed it
// (a CheckRedirect that stops, a 201's new resource) went to that one
// instance by address, around Pick, health and TLS verification by name,
// and resp.Request.URL logged an address for a service.
func TestTransportResponseNamesTheCallersRequest(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	created := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Location", "/items/7")
		w.WriteHeader(http.StatusCreated)
	})
	s := &countingServer{Server: httptest.NewServer(created)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(created)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Post("http://"+service+"/items", "text/plain", strings.NewReader("item"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatal(err)
		}
		if want := "http://" + service + "/items/7"; loc.String() != want || resp.Request.URL.Host != service {
			t.Errorf("%s: Location() = %s, resp.Request.URL = %s; want %s, and the URL the caller asked for", service, loc, resp.Request.URL, want)
		}
	}
}

// An in-process handler gets its request in the form net/http's server
// gives it: a RequestURI, and a URL of the path and query alone. It got
// the client's form (no RequestURI, a URL holding the instance's
// address), so a router matching on the host (which reads URL.Host when
// the URL is absolute, as gorilla/mux does) or logging RequestURI behaved
// otherwise in-process than over the network.
func TestTransportInProcessRequestIsInServerForm(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen <- fmt.Sprintf("RequestURI %q URL %q absolute %v Host %q", req.RequestURI, req.URL, req.URL.IsAbs(), req.Host)
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	get := func(service string) string {
		req, _ := http.NewRequest(http.MethodGet, "http://"+service+"/a%2Fb/c?q=1", nil)
		req.Host = "api.example"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-seen
	}
	if local, net := get("user_svc"), get("web"); local != net {
		t.Fatalf("in-process the handler saw %s; over the network %s", local, net)
	}
}

// An in-process handler's header is the one it had at WriteHeader, as
// net/http's server sends it: a header set after WriteHeader (and before
// the first write) reached the caller in-process alone.
func TestTransportInProcessHeaderIsTakenAtWriteHeader(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("X-Early", "1")
		w.WriteHeader(http.StatusAccepted)
		w.Header().Set("X-Late", "1")
		_, _ = io.WriteString(w, "hi")
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Get("http://" + service + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || string(body) != "hi" || resp.Header.Get("X-Early") != "1" || resp.Header.Get("X-Late") != "" {
			t.Errorf("%s: %d %q with header %v; want 202 \"hi\" with X-Early, not X-Late (set after WriteHeader)", service, resp.StatusCode, body, resp.Header)
		}
	}
}

// A replayable body (GetBody: NewRequest's in-memory readers) that is not
// the length the request declares is the caller's mistake too, refused by
// net/http whatever the instance: it counted as the picked instance's
// failure, was retried on another one, blamed as well, and six such
// requests ejected a healthy instance.
func TestTransportReplayableBodyLengthMismatchBlamesNoInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	a, b := newServer(t, 200), newServer(t, 200)
	registerServer(t, r, "web", a)
	registerServer(t, r, "web", b)
	tr := r.Transport()
	client := &http.Client{Transport: tr}
	defer client.CloseIdleConnections()
	for range 6 {
		req, _ := http.NewRequest(http.MethodPut, "http://web/upload", strings.NewReader("abc"))
		req.Header["Idempotency-Key"] = []string{"k"}
		req.ContentLength = 10
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.Fatalf("a body of 3 bytes declared as 10 was sent: %d", resp.StatusCode)
		}
	}
	noneBlamed(t, r, "web", "requests whose body did not have its declared length")
	if n := discovery.Retried(tr); n != 0 {
		t.Errorf("%d retries of requests the caller got wrong; want 0", n)
	}
}

// An in-process response that declares trailers has them in Trailer, not
// in its header, as net/http's client gives a chunked response: the
// header kept "Trailer" in-process alone, so a caller that copies the
// header on (a proxy) announced the trailers twice.
func TestTransportInProcessTrailerHeaderIsMovedToTrailer(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "hi")
		w.Header().Set("X-Sum", "5")
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Get("http://" + service + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, announced := resp.Header["Trailer"]
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if announced || resp.Trailer.Get("X-Sum") != "5" {
			t.Errorf("%s: header %v, trailer %v; want no Trailer in the header, X-Sum: 5 in the trailer", service, resp.Header, resp.Trailer)
		}
	}
}

// An in-process handler can hijack its connection, as under net/http's
// HTTP/1 server, and an upgrade through it is a writable connection to the
// caller, as over the network: the in-process ResponseWriter was no
// http.Hijacker, so a WebSocket (or any Upgrade) handler of a router
// instance failed in-process alone.
func TestTransportInProcessHandlerCanHijack(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = buf.Flush()
		b := make([]byte, 4)
		if _, err := io.ReadFull(buf, b); err == nil {
			_, _ = conn.Write(b)
		}
	})
	g, err := r.Register(context.Background(), discovery.Instance{Service: "ws", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://ws/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d (%q); want 101", resp.StatusCode, b)
	}
	upgraded(t, r, resp, g.Instance().ID)
}

// An in-process handler sees a body of unknown length as net/http's
// server does, ContentLength -1: it saw the client's convention, 0 with a
// body, which a server's handler reads as an empty body, so one that
// refuses an empty request (or skips reading it) did so in-process alone.
func TestTransportInProcessBodyOfUnknownLengthIsNotEmpty(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.ContentLength == 0 {
			http.Error(w, "empty request", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(req.Body)
		_, _ = fmt.Fprintf(w, "%d %s", req.ContentLength, b)
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		// a reader of no known length: NewRequest leaves ContentLength 0
		resp, err := client.Post("http://"+service+"/", "text/plain", io.MultiReader(strings.NewReader("order")))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "-1 order" {
			t.Errorf("%s: %d %q; want 200 \"-1 order\" (a body of unknown length)", service, resp.StatusCode, b)
		}
	}
}

// An in-process answer with a status net/http has no text for has the
// Status net/http's server sends for it, "599 status code 599": it was
// "599 ", a status line with no reason.
func TestTransportInProcessStatusWithoutTextIsAsOverTheNetwork(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { w.WriteHeader(299) })
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Get("http://" + service + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Status != "299 status code 299" {
			t.Errorf("%s: Status %q; want \"299 status code 299\"", service, resp.Status)
		}
	}
}

// A file body shorter than the length the request declares is the
// caller's mistake as well, refused by net/http whatever the instance:
// files are sent as they are (sendfile), unwatched, and six such uploads
// ejected a healthy instance.
func TestTransportFileBodyLengthMismatchBlamesNoInstance(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerServer(t, r, "web", newServer(t, 200))
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	path := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(path, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://web/upload", f)
		req.ContentLength = 10
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.Fatalf("a file of 3 bytes declared as 10 was sent: %d", resp.StatusCode)
		}
	}
	noneBlamed(t, r, "web", "uploads whose file did not have the declared length")
}

// An in-process handler may ask for full duplex (reading the request
// while writing the response), as under net/http's HTTP/1 server: the
// in-process path is full duplex already, but EnableFullDuplex answered
// "feature not supported", and a handler that needs it failed in-process
// alone.
func TestTransportInProcessHandlerCanEnableFullDuplex(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "echo: ")
		http.NewResponseController(w).Flush()
		_, _ = io.Copy(w, req.Body)
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Post("http://"+service+"/", "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "echo: hi" {
			t.Errorf("%s: %d %q; want 200 \"echo: hi\"", service, resp.StatusCode, b)
		}
	}
}

// A caller reads an in-process body of a declared length to its end once
// it has that length, as net/http's client does, while the handler runs
// on: the caller's read waited for the handler to return, so a handler
// that waits for the caller after writing its answer hung both, in-process
// alone. Closing the body then does not end the handler's context (the
// connection is not cut).
func TestTransportInProcessBodyOfDeclaredLengthEndsWhenWritten(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	release := make(chan struct{})
	ctxErr := make(chan error, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "2")
		_, _ = io.WriteString(w, "hi")
		http.NewResponseController(w).Flush()
		<-release // the caller has read the answer
		ctxErr <- req.Context().Err()
	})
	s := &countingServer{Server: httptest.NewServer(h)}
	t.Cleanup(s.Close)
	registerServer(t, r, "web", s)
	if _, err := r.Register(context.Background(), discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(h)); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "user_svc"} {
		resp, err := client.Get("http://" + service + "/")
		if err != nil {
			t.Fatal(err)
		}
		read := make(chan string, 1)
		go func() {
			b, err := io.ReadAll(resp.Body)
			read <- fmt.Sprintf("%q %v", b, err)
		}()
		select {
		case got := <-read:
			if got != `"hi" <nil>` {
				t.Errorf("%s: read %s; want \"hi\" <nil>", service, got)
			}
		case <-time.After(5 * time.Second):
			release <- struct{}{}
			<-read
			resp.Body.Close()
			<-ctxErr
			t.Fatalf("%s: the caller's read of a 2-byte body it had was still waiting after 5s, for the handler to return", service)
		}
		resp.Body.Close()
		release <- struct{}{}
		if err := <-ctxErr; err != nil {
			t.Errorf("%s: the handler's context ended (%v) when the caller closed a body it had read to its end", service, err)
		}
	}
}

// noneBlamed fails the test if an instance of svc was counted a failure, or
// ejected, after what (requests the caller got wrong, which are no
// instance's fault).
func noneBlamed(t *testing.T, r *discovery.Registry, svc, after string) {
	t.Helper()
	hs, err := r.Health(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.PassiveFailures != 0 || h.Ejected {
			t.Errorf("%s/%s: %d failures, ejected %v after %s; want 0, not ejected", svc, h.ID, h.PassiveFailures, h.Ejected, after)
		}
	}
}

// upgraded checks a 101 answer from instance id of "ws": its body is the
// connection, writable, which echoes a ping, and the request no longer
// counts in flight.
func upgraded(t *testing.T, r *discovery.Registry, resp *http.Response, id string) {
	t.Helper()
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("the upgraded connection's body is a %T, not an io.ReadWriteCloser", resp.Body)
	}
	if n := discovery.InFlight(r, "ws", id); n != 0 {
		t.Errorf("%d requests in flight once the handshake is done; want 0", n)
	}
	if _, err := rw.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(rw, b); err != nil || string(b) != "ping" {
		t.Fatalf("read %q, %v through the upgraded connection; want \"ping\"", b, err)
	}
}

// An answer's latency is the time to its headers, not the life of its
// body: an event stream (or a download at the caller's pace) read for a
// long time is the caller's doing, no measure of the instance's speed, as
// a gRPC stream's life is not (README). Taken at the body's end, a stream
// read for an hour set its instance's peak-EWMA average to an hour, and
// p2c_ewma shunned that instance for minutes after.
func TestTransportLatencyIsTheTimeToTheHeadersNotTheBodysLife(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	release := make(chan struct{})
	srv := httptest.NewServer(twoEvents(release))
	defer srv.Close()
	id := registerServer(t, r, "events", &countingServer{Server: srv})
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Get("http://events/stream")
	if err != nil {
		t.Fatal(err)
	}
	headers := time.Since(start) // at least the Transport's own measure of it
	// The caller reads the stream for a while: at least twice the time
	// the headers took, after them (no assertion on how long).
	for time.Since(start) <= 3*headers {
		time.Sleep(headers)
	}
	close(release)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := discovery.InFlight(r, "events", id); n != 0 {
		t.Fatalf("%d requests in flight once the stream ended; want 0", n)
	}
	if got := discovery.LatencyAverage(r, "events", id); got <= 0 || got > headers {
		t.Fatalf("latency average %v after one stream whose headers came within %v and which was read for %v; want the time to the headers", got, headers, time.Since(start))
	}
}

// A response still being read when the Registry closes does not leave its
// connection open after: Close empties the pools, but an HTTP/2
// connection busy then went idle once the body ended, and net/http keeps
// an idle one for the base's idle timeout (90 s by default; for ever in
// the Registry's per-host-name clone of a base without one), its reader
// goroutine with it. (An HTTP/1 connection net/http closes itself then.)
func TestRegistryCloseReleasesAConnectionBusyAtClose(t *testing.T) {
	release := make(chan struct{})
	srv, roots := h2EventServer(t, release)
	before := goleak.IgnoreCurrent()
	r, base := webOverH2(t, srv, roots) // closed by the test
	tests := []struct {
		name string
		end  func(io.ReadCloser)
	}{
		{"read to its end", func(b io.ReadCloser) { _, _ = io.Copy(io.Discard, b) }},
		{"closed", func(b io.ReadCloser) { _ = b.Close() }},
	}
	var resps []*http.Response
	for range tests {
		resp, err := r.HTTPClient(discovery.BaseTransport(base)).Get("https://web/stream")
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("the instance answered over %s; want HTTP/2", resp.Proto)
		}
		resps = append(resps, resp)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	for i, tt := range tests {
		tt.end(resps[i].Body)
	}
	base.CloseIdleConnections() // the caller's own pool: the caller's to empty
	if err := goleak.Find(before); err != nil {
		t.Fatalf("answers read after Registry.Close and their bodies %s and %s: connections left open: %v", tests[0].name, tests[1].name, err)
	}
}

// An answer still being read when its per-host-name clone is evicted (more
// https host names in use than the Registry keeps clones for) does not
// leave its connection open after: eviction empties the clone's pool, but
// an HTTP/2 connection busy then went idle once the body ended, and stayed
// open for the base's idle timeout (for ever for a base without one, as
// here), its reader goroutine with it, in a clone nothing used again.
func TestTransportEvictedCloneReleasesAConnectionBusyThen(t *testing.T) {
	release := make(chan struct{})
	srv, roots := h2EventServer(t, release)
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	registerServer(t, r, "web", &countingServer{Server: srv})
	base := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer base.CloseIdleConnections()
	clientConns := h2ClientConns
	before := clientConns()
	resp, err := r.HTTPClient(discovery.BaseTransport(base)).Get("https://web/stream")
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("the instance answered over %s; want HTTP/2", resp.Proto)
	}
	discovery.FillTLSClones(r, base, discovery.MaxTLSClones) // "web"'s clone, the oldest, is evicted
	close(release)
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for clientConns() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := clientConns() - before; n > 0 {
		t.Fatalf("%d HTTP/2 connections of the evicted clone open 5s after its answer ended; want 0", n)
	}
}

// h2EventServer starts an HTTP/2 TLS server for the host name "web" that
// answers twoEvents(release), and returns it and the roots that trust it.
func h2EventServer(t *testing.T, release <-chan struct{}) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	return h2Server(t, twoEvents(release))
}

// h2Server serves h over HTTP/2 with TLS as "web", until the test ends,
// and returns the roots that trust it.
func h2Server(t *testing.T, h http.Handler) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	cert, roots := certFor(t, "web")
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, roots
}

// A request its caller ended through Request.Cancel (the way http.Client
// ends a request at its Timeout through a RoundTripper it does not know,
// as this one, and the deprecated way of older callers) is the caller's:
// it is not retried, and it is held against no instance. The Transport
// watched the context alone, so such a request failed as the instance's
// failure and was retried on another instance, where it failed at once
// (never sent) and counted again: with http.Client.Timeout, whose timer
// races the context's, about one request in four that timed out was
// retried after the caller's time was up, and a request ended before it
// was sent ejected a healthy instance.
func TestTransportRequestEndedThroughCancelIsTheCallers(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	stop := make(chan struct{})
	var cancel atomic.Pointer[chan struct{}]
	var hits atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		hits.Add(1)
		if c := cancel.Swap(nil); c != nil {
			close(*c) // the caller ends it while the instance works on it
		}
		select {
		case <-req.Context().Done():
		case <-stop:
		}
	})
	a, b := httptest.NewServer(h), httptest.NewServer(h)
	defer a.Close()
	defer b.Close()
	defer close(stop)
	registerServer(t, r, "web", &countingServer{Server: a})
	registerServer(t, r, "web", &countingServer{Server: b})
	rt := r.Transport()
	defer rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
	for i := range 6 {
		c := make(chan struct{})
		req, _ := http.NewRequest(http.MethodGet, "http://web/slow", nil)
		req.Cancel = c //lint:ignore SA1019 what http.Client.Timeout closes for a RoundTripper not net/http's
		if i%2 == 0 {
			close(c) // ended before it was sent
		} else {
			cancel.Store(&c)
		}
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatalf("request %d, ended through its Cancel channel: %d; want an error", i, resp.StatusCode)
		}
	}
	if n := discovery.Retried(rt); n != 0 || hits.Load() != 3 {
		t.Errorf("6 requests ended by their callers, 3 before they were sent: %d retries, %d reached an instance; want 0 and 3", n, hits.Load())
	}
	noneBlamed(t, r, "web", "requests their callers ended through Request.Cancel")
}

// A response whose body its caller drops without closing it (an early
// return on a status, say) does not keep its instance counted in flight
// for good once the body is garbage: each such answer left one more
// request in flight, and least_connections and p2c_ewma shunned the
// instance for the life of the process. A body of a declared length, a
// chunked one (whose trailers net/http reads into its Response, which
// refers to the body), and an in-process one.
func TestTransportAnswerDroppedUnclosedIsNotLeftInFlight(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	sized := newServer(t, http.StatusOK)
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "rest")
	}))
	defer chunked.Close()
	inProcess := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { _, _ = io.WriteString(w, "ok") })
	g, err := r.Register(context.Background(), discovery.Instance{Service: "local", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(inProcess))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{
		"sized":   registerServer(t, r, "sized", sized),
		"chunked": registerServer(t, r, "chunked", &countingServer{Server: chunked}),
		"local":   g.Instance().ID,
	}
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends net/http's own wait for the bodies
	drop := func(svc string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svc+"/x", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK { // the body is never closed
			t.Fatalf("%s: got %d; want 200", svc, resp.StatusCode)
		}
	}
	for svc, id := range ids {
		for range 3 {
			drop(svc)
		}
		if n := discovery.InFlight(r, svc, id); n != 3 {
			t.Fatalf("%s: %d requests in flight with 3 bodies unread and unclosed; want 3", svc, n)
		}
	}
	for svc, id := range ids {
		waitFor(t, 10*time.Second, svc+": the requests of bodies dropped unclosed out of flight once they are garbage", func() bool {
			runtime.GC()
			return discovery.InFlight(r, svc, id) == 0
		})
		noneBlamed(t, r, svc, "answers dropped unclosed")
	}
}

// twoEvents is an event stream: one event at once, the second once release
// is closed.
func twoEvents(release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-req.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
}

// A header crosses the connection in net/http's wire form, both ways: its
// keys canonical (a map key set by hand, req.Header["x-api-key"], reads as
// X-Api-Key on the other side), a key with no value not sent at all (as
// net/http's Idempotency-Key: nil, or a handler's Date: nil), and values
// without surrounding spaces. In-process the handler got the caller's map
// as it was, so Header.Get("X-Api-Key") found nothing there alone (an API
// key refused, an auth check failed), and the caller got the handler's
// "x-trace" under a key Get never finds.
func TestTransportInProcessHeaderIsAsOverTheNetwork(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, idem := req.Header["Idempotency-Key"]
		seen <- fmt.Sprintf("X-Api-Key %q Idempotency-Key present %v", req.Header.Values("X-Api-Key"), idem)
		w.Header()["x-trace"] = []string{"t1"}
		w.Header()["X-Empty"] = nil
		w.Header()["Content-Type"] = nil                // net/http's "do not sniff, send none"
		w.Header().Set(http.TrailerPrefix+"X-Sum", "1") // a trailer, not a header
		_, _ = io.WriteString(w, "hi")
	})
	midBodyInstance(t, r, "web", false, h)
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "local"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+service+"/", nil)
		req.Header["x-api-key"] = []string{" secret "}
		req.Header["Idempotency-Key"] = nil // net/http's "idempotent, send nothing"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got, want := <-seen, `X-Api-Key ["secret"] Idempotency-Key present false`; got != want {
			t.Errorf("%s: the handler saw %s; want %s", service, got, want)
		}
		_, empty := resp.Header["X-Empty"]
		_, typed := resp.Header["Content-Type"]
		_, leaked := resp.Header[http.TrailerPrefix+"X-Sum"]
		if resp.Header.Get("X-Trace") != "t1" || empty || typed || leaked || resp.Trailer.Get("X-Sum") != "1" {
			t.Errorf("%s: the caller got the header %v, trailer %v; want X-Trace: t1, no X-Empty, Content-Type nor Trailer:X-Sum, and the trailer X-Sum: 1", service, resp.Header, resp.Trailer)
		}
	}
}

// An answer with no body has the length and header net/http's server and
// client give it: a handler that returns without writing answers
// "Content-Length: 0" (ContentLength 0), a 204 or 304 has ContentLength 0
// and none of the body's headers (a 304 no Content-Type either), and a
// body under a Content-Encoding is not sniffed for a Content-Type. In-process
// the length was -1 (unknown), so a caller that skips decoding an empty
// answer (ContentLength == 0) decoded nothing and failed with io.EOF there
// alone, and a 304 claimed a 10-byte body it did not have.
func TestTransportInProcessLengthAndHeaderAreAsOverTheNetwork(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		length  int64
		header  string // the answer's Content-Length, Content-Type, Content-Encoding
	}{
		{"empty", func(w http.ResponseWriter, req *http.Request) {}, 0, `["0"] [] []`},
		{"created", func(w http.ResponseWriter, req *http.Request) { w.WriteHeader(http.StatusCreated) }, 0, `["0"] [] []`},
		{"no content", func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNoContent)
		}, 0, `[] ["application/json"] []`},
		{"not modified", func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Length", "10")
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNotModified)
		}, 0, `[] [] []`},
		{"encoded", func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Content-Encoding", "br")
			w.Header().Set("Content-Length", "11")
			_, _ = io.WriteString(w, "<html>hello")
		}, 11, `["11"] [] ["br"]`},
	}
	for _, tt := range tests {
		for _, inProcess := range []bool{false, true} {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
			midBodyInstance(t, r, "web", inProcess, tt.handler)
			client := r.HTTPClient()
			resp, err := client.Get("http://web/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			client.CloseIdleConnections()
			got := fmt.Sprintf("%q %q %q", resp.Header.Values("Content-Length"), resp.Header.Values("Content-Type"), resp.Header.Values("Content-Encoding"))
			if resp.ContentLength != tt.length || got != tt.header {
				t.Errorf("%s (in-process %v): ContentLength %d, header %s; want %d, %s", tt.name, inProcess, resp.ContentLength, got, tt.length, tt.header)
			}
		}
	}
}

// trailerAtEOF is a request body that sets its request's trailer X-Sum
// when it ends, as net/http's Request.Trailer documents for a client: the
// values may be set while the body is read, up to its EOF.
type trailerAtEOF struct {
	io.Reader
	req *http.Request
}

func (b *trailerAtEOF) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF {
		b.req.Trailer.Set("X-Sum", "abc")
	}
	return n, err
}

func (b *trailerAtEOF) Close() error { return nil }

// A request's trailers reach the instance with the values its body set by
// its end, as through net/http's Client: each attempt went out as a deep
// copy of the request (Clone), whose Trailer the body never sees, so the
// instance got every declared trailer empty (a checksum, a signature of a
// streamed upload), over the network and in-process alike.
func TestTransportSendsTheTrailersTheBodySetsAtItsEnd(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		seen <- fmt.Sprintf("%s, X-Sum %q", b, req.Trailer.Get("X-Sum"))
	})
	midBodyInstance(t, r, "web", false, h)
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "local"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+service+"/upload", nil)
		req.Body = &trailerAtEOF{Reader: strings.NewReader("data"), req: req}
		req.ContentLength = -1 // chunked, so trailers can follow
		req.Trailer = http.Header{"X-Sum": nil}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := <-seen, `data, X-Sum "abc"`; got != want {
			t.Errorf("%s: the handler got %s; want %s", service, got, want)
		}
	}
}

// An answer whose status already says the instance failed (a 5xx) counts
// as its failure even if the caller drops the body unclosed (an early
// return on the status, the commonest way to leak one): its outcome was
// known at its headers. Dropped, it counted as no outcome at all, so an
// instance answering 500 to callers that return on the status without
// closing was never ejected and kept its share of the picks.
func TestTransportFailedAnswerDroppedUnclosedIsAFailure(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	id := registerServer(t, r, "broken", newServer(t, http.StatusInternalServerError))
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends net/http's own wait for the bodies
	for range 3 {
		// a POST: not retried, so the caller gets every 500
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://broken/orders", strings.NewReader("order"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusInternalServerError { // the body is never closed
			t.Fatalf("got %d; want 500", resp.StatusCode)
		}
	}
	waitFor(t, 10*time.Second, "the requests of bodies dropped unclosed out of flight once they are garbage", func() bool {
		runtime.GC()
		return discovery.InFlight(r, "broken", id) == 0
	})
	hs, err := r.Health(context.Background(), "broken")
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].PassiveFailures != 3 {
		t.Fatalf("after 3 answers of 500 dropped unclosed the instance shows %+v; want 3 passive failures", hs)
	}
}

// An in-process handler sees the protocol net/http's client speaks,
// HTTP/1.1, whatever the caller's Request says of it: a Request built as a
// literal has no Proto, which net/http's client never sends, so a handler
// that checks ProtoAtLeast(1, 1) (a WebSocket library's handshake, say)
// refused it in-process alone.
func TestTransportInProcessRequestSpeaksHTTP11(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen <- fmt.Sprintf("%q at least 1.1 %v", req.Proto, req.ProtoAtLeast(1, 1))
	})
	midBodyInstance(t, r, "web", false, h)
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "local"} {
		u, _ := url.Parse("http://" + service + "/")
		resp, err := client.Do(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := <-seen, `"HTTP/1.1" at least 1.1 true`; got != want {
			t.Errorf("%s: the handler saw %s; want %s", service, got, want)
		}
	}
}

// An in-process handler sees a request's framing as net/http's client
// sends it and its server reads it: a Content-Length header that is the
// request's length (0 for an empty POST), a body of unknown length
// chunked, and no framing header of the caller's own, which net/http's
// client never sends. In-process the handler saw no Content-Length (a
// handler that requires one, or verifies a signature over it, refused
// the request there alone) and, for a body of unknown length, whatever
// Content-Length header the caller's map held.
func TestTransportInProcessRequestFramingIsAsOverTheNetwork(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		seen <- fmt.Sprintf("Content-Length %q, ContentLength %d, TransferEncoding %q", req.Header.Values("Content-Length"), req.ContentLength, req.TransferEncoding)
	})
	midBodyInstance(t, r, "web", false, h)
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	tests := []struct {
		name string
		req  func(url string) *http.Request
		want string
	}{
		{"sized", func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("payload"))
			return req
		}, `Content-Length ["7"], ContentLength 7, TransferEncoding []`},
		{"empty POST", func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, nil)
			return req
		}, `Content-Length ["0"], ContentLength 0, TransferEncoding []`},
		{"unknown length", func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPut, url, io.NopCloser(strings.NewReader("payload")))
			req.Header.Set("Content-Length", "99") // net/http's client sends the request's own
			return req
		}, `Content-Length [], ContentLength -1, TransferEncoding ["chunked"]`},
	}
	for _, tt := range tests {
		for _, service := range []string{"web", "local"} {
			resp, err := client.Do(tt.req("http://" + service + "/"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := <-seen; got != tt.want {
				t.Errorf("%s to %s: the handler saw %s; want %s", tt.name, service, got, tt.want)
			}
		}
	}
}

// A body of a declared length has no trailers, as net/http's server does
// not chunk it: its client leaves the Trailer declaration in the header
// and Response.Trailer empty. In-process the caller got the declared keys
// in Trailer, with no values ever to come.
func TestTransportInProcessSizedBodyHasNoTrailers(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("Content-Length", "2")
		_, _ = io.WriteString(w, "hi")
		w.Header().Set("X-Sum", "1")
	})
	midBodyInstance(t, r, "web", false, h)
	midBodyInstance(t, r, "local", true, h)
	client := r.HTTPClient()
	defer client.CloseIdleConnections()
	for _, service := range []string{"web", "local"} {
		resp, err := client.Get("http://" + service + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hi" || len(resp.Trailer) != 0 || resp.Header.Get("Trailer") != "X-Sum" {
			t.Errorf("%s: %q with trailer %v, header Trailer %q; want \"hi\", no trailer, the declaration left in the header", service, body, resp.Trailer, resp.Header.Get("Trailer"))
		}
	}
}

// h2ClientConns counts the HTTP/2 client connections open in the process
// (their reader goroutines).
func h2ClientConns() int {
	buf := make([]byte, 4<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*http2ClientConn).readLoop(")
}

// webOverH2 is a Registry the test closes itself, without a close drain,
// with srv registered as "web", and an HTTP/2 base transport that trusts
// roots (its idle connections closed when the test ends).
func webOverH2(t *testing.T, srv *httptest.Server, roots *x509.CertPool) (*discovery.Registry, *http.Transport) {
	t.Helper()
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	registerServer(t, r, "web", &countingServer{Server: srv})
	base := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(base.CloseIdleConnections)
	return r, base
}
