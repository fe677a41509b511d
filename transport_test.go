package discovery_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

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
