package discovery

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Churn tests of the Transport: misuses a long-running process meets.

// An HTTPClient (or Transport) made for each request, a common misuse,
// costs that request alone: its connections are the Registry's pool, and
// nothing of it stays once the answer was read, over the network or
// in-process.
func TestAClientPerRequestLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	r, _ := fakeRegistry(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	portN, _ := strconv.Atoi(port)
	if _, err := r.Register(ctx, Instance{Service: "net_svc", Host: host, Port: portN}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(ctx, Instance{Service: "local_svc", Host: "10.0.0.1", Port: 1, Method: MethodRouter},
		WithHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))); err != nil {
		t.Fatal(err)
	}
	get := func(svc string) {
		resp, err := r.HTTPClient().Get("http://" + svc + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	get("net_svc")
	get("local_svc")
	before := runtime.NumGoroutine()
	for range 500 {
		get("net_svc")
		get("local_svc")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after 1,000 requests, each through a client of its own\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	if n := syncMapLen(&r.pools.clones); n != 0 {
		t.Errorf("%d per-host-name clones for plain http", n)
	}
	for _, svc := range []string{"net_svc", "local_svc"} {
		if m := r.stateIfAny(svc).insts.Load(); len(*m) != 1 {
			t.Errorf("%s: %d instance states", svc, len(*m))
		}
		for _, is := range *r.stateIfAny(svc).insts.Load() {
			if n := is.inflight.Load(); n != 0 {
				t.Errorf("%s: %d requests in flight", svc, n)
			}
		}
	}
}

// A response body that the caller drops without closing it (another
// misuse) is reported as ended once it is garbage; the in-process handler
// writing it, blocked on a caller that reads no more, ends too, with its
// goroutine, as a connection's does when its client goes away.
func TestAnInProcessBodyDroppedUnclosedEndsItsHandler(t *testing.T) {
	ctx := context.Background()
	r, _ := fakeRegistry(t)
	var running atomic.Int64
	if _, err := r.Register(ctx, Instance{Service: "local_svc", Host: "10.0.0.1", Port: 1, Method: MethodRouter},
		WithHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			running.Add(1)
			defer running.Add(-1)
			chunk := make([]byte, 16<<10)
			for range 64 { // 1 MiB: more than the pipe holds
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}))); err != nil {
		t.Fatal(err)
	}
	client := r.HTTPClient()
	func() {
		for range 20 {
			resp, err := client.Get("http://local_svc/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = resp.Body.Read(make([]byte, 1))
			// dropped, never closed
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	for running.Load() > 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := running.Load(); n > 0 {
		t.Errorf("%d in-process handlers still writing bodies their callers dropped unclosed (garbage since)", n)
	}
	for _, is := range *r.stateIfAny("local_svc").insts.Load() {
		if n := is.inflight.Load(); n != 0 {
			t.Errorf("%d requests in flight", n)
		}
	}
}
