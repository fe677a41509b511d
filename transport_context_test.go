package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

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

// midBodyInstance registers an instance of service that answers every
// request with handler, over the network or (inProcess) as a router
// instance served in-process, and returns its ID.
func midBodyInstance(t *testing.T, r *discovery.Registry, service string, inProcess bool, handler http.HandlerFunc) string {
	t.Helper()
	if inProcess {
		g, err := r.Register(context.Background(), discovery.Instance{Service: service, Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter}, discovery.WithHandler(handler))
		if err != nil {
			t.Fatal(err)
		}
		return g.Instance().ID
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return mustRegister(t, r, discovery.Instance{Service: service, Host: host, Port: p}).Instance().ID
}

// A caller whose own deadline (its context's, or http.Client.Timeout's,
// which also closes Request.Cancel) passes while it reads a body the
// instance is still streaming ended the call itself: the instance answered
// (its headers, its status) and was sending. Counted as the instance's
// failure, a few long-poll or event-stream callers with deadlines shorter
// than their streams ejected a healthy instance, over the network and
// in-process alike. It is neither success nor failure, and the request is
// no longer in flight.
func TestTransportCallerDeadlineMidBodyIsNotTheInstancesFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	stream := func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(http.StatusOK) // headers at once
		ticking(w, req)
	}
	// Long enough that a loaded machine has the headers before it, short
	// enough to end well inside the stream.
	const deadline = 200 * time.Millisecond
	tests := []struct {
		name          string
		inProcess     bool
		clientTimeout bool // http.Client.Timeout, not the context's deadline
	}{
		{"network-context", false, false},
		{"network-client-timeout", false, true},
		{"in-process-context", true, false},
		{"in-process-client-timeout", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			service := "stream-" + tt.name
			id := midBodyInstance(t, r, service, tt.inProcess, stream)
			client := r.HTTPClient()
			defer client.CloseIdleConnections()
			if tt.clientTimeout {
				client.Timeout = deadline
			}
			errs := make(chan error, discovery.DefaultEjectionFailures)
			for range discovery.DefaultEjectionFailures { // enough to eject it, were they failures
				go func() {
					rctx, cancel := context.WithCancel(ctx)
					if !tt.clientTimeout {
						rctx, cancel = context.WithTimeout(ctx, deadline)
					}
					defer cancel()
					req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+service+"/events", nil)
					resp, err := client.Do(req)
					if err != nil {
						errs <- fmt.Errorf("no headers within %v (a machine too slow for this test?): %w", deadline, err)
						return
					}
					defer resp.Body.Close()
					if _, err = io.ReadAll(resp.Body); err == nil {
						errs <- errors.New("the endless stream ended without an error")
						return
					}
					if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "Client.Timeout") {
						errs <- fmt.Errorf("reading the stream: %w; want the caller's deadline", err)
						return
					}
					errs <- nil
				}()
			}
			for range discovery.DefaultEjectionFailures {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if h := healthOf(t, r, service, id); h.PassiveFailures != 0 || h.Ejected {
				t.Errorf("after %d callers' deadlines passed mid-body: %d passive failures, ejected %v; want 0, not ejected (the callers ended those calls)",
					discovery.DefaultEjectionFailures, h.PassiveFailures, h.Ejected)
			}
			if svc, _ := r.Get(ctx, service); svc.Instance(id).Status == discovery.StatusEjected {
				t.Errorf("the streaming instance shows %v; want it in selection", svc.Instance(id).Status)
			}
			if n := discovery.InFlight(r, service, id); n != 0 {
				t.Errorf("%d requests in flight after every body ended; want 0", n)
			}
		})
	}
}

// A body the instance cuts short (its server drops the connection mid-body,
// or an in-process handler aborts) while the caller still waits for it is
// the instance's failure, counted towards its ejection, whether or not the
// caller has a deadline of its own (http.Client.Timeout closes
// Request.Cancel only once it passes).
func TestTransportBodyCutShortByTheInstanceIsAFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	// Headers and a first chunk, then the connection dropped.
	cut := func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "data: tick\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // net/http's server closes the connection, silently
	}
	tests := []struct {
		name          string
		inProcess     bool
		clientTimeout time.Duration
	}{
		{"network", false, 0},
		{"network-client-timeout", false, time.Minute},
		{"in-process", true, 0},
		{"in-process-client-timeout", true, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			service := "cut-" + tt.name
			id := midBodyInstance(t, r, service, tt.inProcess, cut)
			client := r.HTTPClient()
			defer client.CloseIdleConnections()
			client.Timeout = tt.clientTimeout
			for i := range discovery.DefaultEjectionFailures {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/events", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v; want the headers, which came before the cut", i, err)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Fatalf("request %d: a body cut short read to a clean end", i)
				}
				if h := healthOf(t, r, service, id); h.PassiveFailures != i+1 && !h.Ejected {
					t.Fatalf("after %d bodies cut short by the instance (%v): %d passive failures; want %d", i+1, err, h.PassiveFailures, i+1)
				}
			}
			if svc, _ := r.Get(ctx, service); svc.Instance(id).Status != discovery.StatusEjected {
				t.Errorf("after %d bodies cut short by the instance it shows %v; want ejected", discovery.DefaultEjectionFailures, svc.Instance(id).Status)
			}
			if n := discovery.InFlight(r, service, id); n != 0 {
				t.Errorf("%d requests in flight after every body ended; want 0", n)
			}
		})
	}
}

// A caller that ends its request by closing Request.Cancel (the way older
// callers cancel, and http.Client with a RoundTripper it does not know)
// ends it in-process as over the network, where net/http's Transport
// watches the channel: before the handler answers, RoundTrip returns, and
// while the body streams, the read ends. In-process only the context was
// watched: RoundTrip waited for a handler that did not answer, and a
// stream read on after its caller had closed Cancel. Neither is held
// against the instance, and the request is no longer in flight.
func TestTransportInProcessRequestCancelEndsTheRequest(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	tests := []struct {
		name    string
		midBody bool // Cancel closes once the caller has the headers and a first chunk
		handler http.HandlerFunc
	}{
		{"before-headers", false, func(w http.ResponseWriter, req *http.Request) {
			started <- struct{}{}
			<-release // not req.Context(): a handler that does not watch it
		}},
		{"mid-body", true, ticking},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			service := "cancel-" + tt.name
			id := midBodyInstance(t, r, service, true, tt.handler)
			rt := r.Transport()
			for i := range discovery.DefaultEjectionFailures {
				cancel := make(chan struct{})
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/", nil)
				req.Cancel = cancel //lint:ignore SA1019 what this test is about
				ended := make(chan error, 1)
				if tt.midBody {
					resp, err := rt.RoundTrip(req)
					if err != nil {
						t.Fatalf("request %d: %v; want the stream's headers", i, err)
					}
					defer resp.Body.Close()
					if _, err := resp.Body.Read(make([]byte, 64)); err != nil {
						t.Fatalf("request %d: reading the stream's first chunk: %v", i, err)
					}
					go func() {
						_, err := io.ReadAll(resp.Body)
						ended <- err
					}()
				} else {
					go func() {
						resp, err := rt.RoundTrip(req)
						if err == nil {
							resp.Body.Close()
						}
						ended <- err
					}()
					<-started
				}
				close(cancel)
				select {
				case err := <-ended:
					if err == nil {
						t.Fatalf("request %d: ended without an error after its Cancel closed", i)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("request %d: still under way 5s after its Cancel closed; want it ended, as over the network", i)
				}
			}
			if h := healthOf(t, r, service, id); h.PassiveFailures != 0 || h.Ejected {
				t.Errorf("after %d requests whose callers closed Cancel: %d passive failures, ejected %v; want 0, not ejected", discovery.DefaultEjectionFailures, h.PassiveFailures, h.Ejected)
			}
			if n := discovery.InFlight(r, service, id); n != 0 {
				t.Errorf("%d requests in flight after their callers closed Cancel; want 0", n)
			}
		})
	}
}

// ticking writes an event every 10 ms until the caller goes.
func ticking(w http.ResponseWriter, req *http.Request) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-req.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// An instance that sends its headers, declaring a body of some length,
// and then none of it (a hung process behind a proxy that flushed the
// headers, a handler that blocks after WriteHeader and Flush) while its
// callers wait for the body until their deadlines pass, is at fault, as
// one whose headers do not come in time is: it had said how long its
// answer was. Such reads were taken as the callers' own ends, so a hung
// instance was never ejected by them. A long poll or an event stream (no
// declared length: it is sent chunked) whose caller's deadline passes
// before its first event is the caller's end, as before, and so is a body
// that was flowing when the deadline passed (a download longer than the
// caller's deadline), whichever its length.
func TestTransportInstanceStalledAfterItsHeadersIsAFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	stall := func(sized bool) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if sized {
				w.Header().Set("Content-Length", "100")
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // the headers, and nothing more
			<-req.Context().Done()
		}
	}
	flowing := func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "1000000000")
		w.WriteHeader(http.StatusOK)
		ticking(w, req)
	}
	// Long enough that a loaded machine has the headers before it.
	const deadline = 200 * time.Millisecond
	tests := []struct {
		name          string
		handler       http.HandlerFunc
		inProcess     bool
		clientTimeout bool // http.Client.Timeout, not the context's deadline
		failures      int
	}{
		{"sized-network-context", stall(true), false, false, discovery.DefaultEjectionFailures},
		{"sized-network-client-timeout", stall(true), false, true, discovery.DefaultEjectionFailures},
		{"sized-in-process-context", stall(true), true, false, discovery.DefaultEjectionFailures},
		{"sized-in-process-client-timeout", stall(true), true, true, discovery.DefaultEjectionFailures},
		{"long-poll-network", stall(false), false, false, 0},
		{"long-poll-in-process", stall(false), true, false, 0},
		{"flowing-network", flowing, false, false, 0},
		{"flowing-in-process", flowing, true, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			service := "stall-" + tt.name
			id := midBodyInstance(t, r, service, tt.inProcess, tt.handler)
			client := r.HTTPClient(discovery.Retries(0))
			defer client.CloseIdleConnections()
			if tt.clientTimeout {
				client.Timeout = deadline
			}
			errs := make(chan error, discovery.DefaultEjectionFailures)
			for range discovery.DefaultEjectionFailures {
				go func() {
					rctx, cancel := context.WithCancel(ctx)
					if !tt.clientTimeout {
						rctx, cancel = context.WithTimeout(ctx, deadline)
					}
					defer cancel()
					req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+service+"/", nil)
					resp, err := client.Do(req)
					if err != nil {
						errs <- fmt.Errorf("no headers within %v (a machine too slow for this test?): %w", deadline, err)
						return
					}
					defer resp.Body.Close()
					if _, err = io.ReadAll(resp.Body); !errors.Is(err, context.DeadlineExceeded) && (err == nil || !strings.Contains(err.Error(), "Client.Timeout")) {
						errs <- fmt.Errorf("reading the body: %v; want the caller's deadline", err)
						return
					}
					errs <- nil
				}()
			}
			for range discovery.DefaultEjectionFailures {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			h := healthOf(t, r, service, id)
			if tt.failures == 0 && (h.PassiveFailures != 0 || h.Ejected) {
				t.Errorf("after %d callers' deadlines: %d passive failures, ejected %v; want none, not ejected (the callers ended those calls)", discovery.DefaultEjectionFailures, h.PassiveFailures, h.Ejected)
			}
			if tt.failures > 0 && !h.Ejected {
				t.Errorf("after %d callers waited past their deadlines for a body the instance declared and never sent: %d passive failures, ejected %v; want it ejected", discovery.DefaultEjectionFailures, h.PassiveFailures, h.Ejected)
			}
			if n := discovery.InFlight(r, service, id); n != 0 {
				t.Errorf("%d requests in flight after every body ended; want 0", n)
			}
		})
	}
}
