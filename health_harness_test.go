package discovery_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
)

// Test settings for health: a realistic interval on the fake clock, a
// (real-time) timeout short enough that hanging checks end quickly and long
// enough that modeSlow's 250 ms answer passes on a loaded machine. hangFor
// bounds modeHang, far beyond the timeout: a check that outlived its
// timeout shows as one that took about that long.
const (
	hInterval = 10 * time.Second
	hTimeout  = time.Second
	hStep     = 250 * time.Millisecond
	hangFor   = 30 * time.Second
)

// mode is how a probeServer answers its health path.
type mode int32

const (
	modeOK mode = iota
	modeSlow
	mode500
	mode429
	modeRedirect
	modeEndless
	modeHang
)

// probeServer is an instance's HTTP server whose behaviour a test flips.
type probeServer struct {
	srv      *httptest.Server
	host     string
	port     int
	mode     atomic.Int32
	hits     atomic.Int64 // health checks received
	redirect string       // where modeRedirect points
	release  chan struct{}
	closed   sync.Once
}

func newProbeServer(t *testing.T, redirect string) *probeServer {
	t.Helper()
	p := &probeServer{redirect: redirect, release: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	host, port, _ := net.SplitHostPort(p.srv.Listener.Addr().String())
	p.host = host
	p.port, _ = strconv.Atoi(port)
	t.Cleanup(p.kill)
	return p
}

func (p *probeServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/health" {
		http.NotFound(w, r)
		return
	}
	p.hits.Add(1)
	switch mode(p.mode.Load()) {
	case modeOK:
		_, _ = w.Write([]byte("ok"))
	case modeSlow:
		time.Sleep(250 * time.Millisecond) // below the timeout: passes, scores at most 0.4
		_, _ = w.Write([]byte("ok"))
	case mode500:
		http.Error(w, "database unreachable", http.StatusInternalServerError)
	case mode429:
		w.WriteHeader(http.StatusTooManyRequests)
	case modeRedirect:
		http.Redirect(w, r, p.redirect, http.StatusFound)
	case modeEndless:
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case modeHang:
		select {
		case <-r.Context().Done():
		case <-p.release:
		case <-time.After(hangFor):
		}
	}
}

func (p *probeServer) set(m mode) { p.mode.Store(int32(m)) }

// kill stops the server: its address refuses connections from then on.
func (p *probeServer) kill() {
	p.closed.Do(func() {
		close(p.release)
		p.srv.Close()
	})
}

// instance returns the instance of service served by p, with a lease long
// enough for any test.
func (p *probeServer) instance(service string) discovery.Instance {
	return discovery.Instance{ID: p.srv.Listener.Addr().String(), Service: service, Host: p.host, Port: p.port, Weight: 1,
		HealthPath: "/health", RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)}
}

// addInstance writes an instance straight into the store (no lease to renew).
func addInstance(t *testing.T, r *discovery.Registry, in discovery.Instance) {
	t.Helper()
	if _, err := r.Store().Register(context.Background(), &in); err != nil {
		t.Fatal(err)
	}
}

// step advances the clock by d and lets every Registry's health monitor do
// what fell due, waiting for the checks it started.
func step(clock interface{ Advance(time.Duration) }, d time.Duration, regs ...*discovery.Registry) {
	clock.Advance(d)
	var wg sync.WaitGroup
	for _, r := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			discovery.SettleHealth(r)
		}()
	}
	wg.Wait()
}

// healthOf returns the health of one instance as r sees it.
func healthOf(t *testing.T, r *discovery.Registry, service, id string) discovery.InstanceHealth {
	t.Helper()
	hs, err := r.Health(context.Background(), service)
	if err != nil {
		t.Fatalf("Health(%s): %v", service, err)
	}
	for _, h := range hs {
		if h.ID == id {
			return h
		}
	}
	t.Fatalf("Health(%s) has no instance %s: %+v", service, id, hs)
	return discovery.InstanceHealth{}
}

// viewStatus returns the status of an instance in r's Get.
func viewStatus(t *testing.T, r *discovery.Registry, service, id string) discovery.Status {
	t.Helper()
	svc, err := r.Get(context.Background(), service)
	if err != nil {
		t.Fatalf("Get(%s): %v", service, err)
	}
	in := svc.Instance(id)
	if in == nil {
		t.Fatalf("Get(%s) has no instance %s", service, id)
	}
	return in.Status
}
