package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// countingProber returns a Prober that counts the bytes it reads from the
// network, and the connections it opens.
func countingProber() (*Prober, *atomic.Int64, *atomic.Int64) {
	p := NewProber(nil)
	var read, dials atomic.Int64
	dial := p.dial
	p.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &read}, nil
	}
	return p, &read, &dials
}

func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			return
		default:
		}
		h(w, r.WithContext(contextWithRelease(r.Context(), release)))
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return srv, strings.TrimPrefix(srv.URL, "http://")
}

type releaseKey struct{}

func contextWithRelease(ctx context.Context, ch chan struct{}) context.Context {
	return context.WithValue(ctx, releaseKey{}, ch)
}

// hangFor is how long a hanging handler or check function blocks at most: far
// longer than any check timeout here, so that a check that did not honour its
// timeout is told apart from a slow machine.
const hangFor = 10 * time.Second

// hang blocks until the client goes away, the test ends or hangFor passes.
func hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-r.Context().Value(releaseKey{}).(chan struct{}):
	case <-time.After(hangFor):
	}
}

// checkWithin is how long a check may take, at most, to return at its
// timeout: half of hangFor, and many times any timeout here, so that only a
// check that waited for the handler or function, not a slow machine,
// overruns it.
const checkWithin = hangFor / 2

func TestHTTPCheck(t *testing.T) {
	// timeout bounds the checks of a handler that hangs; the others get
	// generous, which no slow machine runs out.
	const timeout, generous = 300 * time.Millisecond, time.Minute
	sent := testutil.NewSentinel(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    core.Status
		errHas  string
		minRTT  time.Duration
	}{
		{"healthy", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }, core.StatusHealthy, "", 0},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, core.StatusHealthy, "", 0},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(150 * time.Millisecond)
			_, _ = w.Write([]byte("ok"))
		}, core.StatusHealthy, "", 150 * time.Millisecond},
		{"500", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			_, _ = w.Write([]byte("db down\n"))
		}, core.StatusUnhealthy, `HTTP 500: "db down."`, 0},
		{"429", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(429) }, core.StatusWarning, "HTTP 429", 0},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+sent.Addr()+"/health", http.StatusFound)
		}, core.StatusUnhealthy, "HTTP 302", 0},
		{"endless body", func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 32<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, core.StatusHealthy, "", 0},
		{"hanging", func(w http.ResponseWriter, r *http.Request) { hang(r) }, core.StatusUnhealthy, "timed out", timeout},
		{"hanging body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			hang(r)
		}, core.StatusUnhealthy, "timed out", timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := server(t, tt.handler)
			p, read, dials := countingProber()
			hangs := strings.HasPrefix(tt.name, "hanging")
			to := generous
			if hangs {
				to = timeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), to)
			defer cancel()
			start := time.Now()
			res := p.Check(ctx, Target{Kind: KindHTTP, Addr: addr, Path: "/health"})
			took := time.Since(start)
			if res.Status != tt.want {
				t.Fatalf("status = %v (%v); want %v", res.Status, res.Err, tt.want)
			}
			if tt.errHas == "" && res.Err != nil || tt.errHas != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tt.errHas)) {
				t.Fatalf("err = %v; want one containing %q", res.Err, tt.errHas)
			}
			// A hanging handler answers after hangFor at the earliest: a
			// check that honours its timeout returns long before that,
			// saying it timed out.
			var te *TimeoutError
			if hangs && (took >= checkWithin || !errors.As(res.Err, &te)) {
				t.Fatalf("the check took %v (%v); want a *TimeoutError after its timeout %v, well within %v", took, res.Err, timeout, checkWithin)
			}
			if !hangs && errors.As(res.Err, &te) {
				t.Fatalf("err = %v; want no timeout within %v", res.Err, to)
			}
			if res.RTT < tt.minRTT || res.RTT > took {
				t.Fatalf("RTT = %v; want between %v and %v", res.RTT, tt.minRTT, took)
			}
			// At most MaxBody bytes of body are read, plus the headers and what
			// the transport's 4 KiB read buffer takes ahead.
			if n := read.Load(); n > 3*MaxBody {
				t.Fatalf("read %d bytes from the network; want at most %d", n, 3*MaxBody)
			}
			if d := dials.Load(); d != 1 {
				t.Fatalf("%d connections; want 1", d)
			}
			t.Logf("%s: %v in %v, %d bytes read", tt.name, res.Status, took.Round(time.Millisecond), read.Load())
		})
	}
	if n := sent.Accepted(); n != 0 {
		t.Fatalf("the redirect target accepted %d connections; want 0", n)
	}
}

// A check reaches only its own address: not a redirect's target, not a host
// smuggled into the path, not a proxy from the environment.
func TestCheckReachesOnlyItsOwnAddress(t *testing.T) {
	sent := testutil.NewSentinel(t)
	_, addr := server(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+sent.Addr()+"/", http.StatusTemporaryRedirect)
	})
	t.Setenv("HTTP_PROXY", "http://"+sent.Addr())
	t.Setenv("http_proxy", "http://"+sent.Addr())
	tests := []struct {
		name string
		t    Target
	}{
		{"redirect", Target{Kind: KindHTTP, Addr: addr, Path: "/health"}},
		{"userinfo path", Target{Kind: KindHTTP, Addr: addr, Path: "@" + sent.Addr() + "/"}},
		{"absolute path", Target{Kind: KindHTTP, Addr: addr, Path: "http://" + sent.Addr() + "/"}},
		{"other host", Target{Kind: KindHTTP, Addr: sent.Addr() + "x", Path: "/"}},
	}
	p := NewProber(nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			res := p.Check(ctx, tt.t)
			if res.Status == core.StatusHealthy {
				t.Fatalf("check passed; want it to fail")
			}
		})
	}
	// http.ProxyFromEnvironment reads the environment once per process, so
	// the variables above prove nothing if an earlier test used it: check
	// the transport itself too.
	if tr := p.client.Transport.(*http.Transport); tr.Proxy != nil || tr.DialContext == nil {
		t.Fatal("the transport may use a proxy, or dials without the guard")
	}
	// and the dialer refuses any address but the one the check is for
	ctx := context.WithValue(context.Background(), allowedAddrKey{}, addr)
	if _, err := p.guardedDial(ctx, "tcp", sent.Addr()); !errors.Is(err, ErrForbiddenAddr) {
		t.Fatalf("guardedDial(other) = %v; want ErrForbiddenAddr", err)
	}
	if _, err := p.guardedDial(context.Background(), "tcp", sent.Addr()); !errors.Is(err, ErrForbiddenAddr) {
		t.Fatalf("guardedDial(no allowed address) = %v; want ErrForbiddenAddr", err)
	}
	if n := sent.Accepted(); n != 0 {
		t.Fatalf("the other address accepted %d connections; want 0", n)
	}
}

func TestTCPCheck(t *testing.T) {
	sent := testutil.NewSentinel(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	p := NewProber(nil)
	tests := []struct {
		name string
		addr string
		want core.Status
	}{
		{"listening", sent.Addr(), core.StatusHealthy},
		{"refused", deadAddr, core.StatusUnhealthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if res := p.Check(ctx, Target{Kind: KindTCP, Addr: tt.addr}); res.Status != tt.want {
				t.Fatalf("status = %v (%v); want %v", res.Status, res.Err, tt.want)
			}
		})
	}
	// The check returns once its connection is made; the sentinel's Accept
	// may run a moment later.
	for deadline := time.Now().Add(5 * time.Second); sent.Accepted() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if sent.Accepted() != 1 {
		t.Fatalf("accepted %d; want 1", sent.Accepted())
	}
}

// goProber returns a Prober whose check goroutines wg counts.
func goProber(wg *sync.WaitGroup) *Prober {
	return NewProber(func(_ string, fn func()) bool {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
		return true
	})
}

func TestFuncCheck(t *testing.T) {
	const timeout = 100 * time.Millisecond
	boom := errors.New("boom")
	release := make(chan struct{}) // closed once the overrunning check has returned
	tests := []struct {
		name   string
		fn     func(ctx context.Context) error
		want   core.Status
		errIs  error
		errHas string
	}{
		{"passes", func(context.Context) error { return nil }, core.StatusHealthy, nil, ""},
		{"fails", func(context.Context) error { return boom }, core.StatusUnhealthy, boom, ""},
		{"overruns", func(ctx context.Context) error {
			<-ctx.Done()
			select { // returns late: after hangFor, or once the check has returned
			case <-release:
			case <-time.After(hangFor):
			}
			return nil
		}, core.StatusUnhealthy, context.DeadlineExceeded, "timed out"},
		{"panics", func(context.Context) error { panic("bad") }, core.StatusUnhealthy, nil, "panicked: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wg sync.WaitGroup
			p := goProber(&wg)
			overruns := tt.name == "overruns"
			to := time.Minute // a slow machine cannot run this out
			if overruns {
				to = timeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), to)
			defer cancel()
			start := time.Now()
			res := p.Check(ctx, Target{Kind: KindFunc, Func: tt.fn})
			took := time.Since(start)
			if overruns {
				close(release)
			}
			if res.Status != tt.want || tt.errIs != nil && !errors.Is(res.Err, tt.errIs) ||
				tt.errHas != "" && (res.Err == nil || !strings.Contains(res.Err.Error(), tt.errHas)) {
				t.Fatalf("Check = %v, %v; want %v, %v %q", res.Status, res.Err, tt.want, tt.errIs, tt.errHas)
			}
			// The overrunning function returns after hangFor at the
			// earliest: the check returns at its timeout, long before.
			var te *TimeoutError
			if overruns && (took >= checkWithin || !errors.As(res.Err, &te)) {
				t.Fatalf("the check took %v (%v); want a *TimeoutError after its timeout %v, well within %v", took, res.Err, timeout, checkWithin)
			}
			wg.Wait()
		})
	}
}

// A check of a function whose earlier call is still running fails at once
// without calling it again; once that call returns, the next check calls it.
func TestFuncCheckStillRunning(t *testing.T) {
	var wg sync.WaitGroup
	p := goProber(&wg)
	release := make(chan struct{})
	var calls atomic.Int64
	var running atomic.Bool
	tg := Target{Kind: KindFunc, Running: &running, Func: func(context.Context) error {
		if calls.Add(1) == 1 {
			<-release // stuck past its timeout, deaf to its context
		}
		return nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if res := p.Check(ctx, tg); res.Status != core.StatusUnhealthy || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("first check = %v, %v; want unhealthy, timed out", res.Status, res.Err)
	}
	if res := p.Check(context.Background(), tg); res.Status != core.StatusUnhealthy || !errors.Is(res.Err, ErrStillRunning) {
		t.Fatalf("check while stuck = %v, %v; want unhealthy, %v", res.Status, res.Err, ErrStillRunning)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d calls; want 1 while the first is stuck", n)
	}
	close(release)
	wg.Wait()
	if res := p.Check(context.Background(), tg); res.Status != core.StatusHealthy || calls.Load() != 2 {
		t.Fatalf("check after it returned = %v, %v (%d calls); want healthy, 2 calls", res.Status, res.Err, calls.Load())
	}
	wg.Wait()
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		method  core.Method
		check   core.CheckKind
		hasFunc bool
		want    Kind
	}{
		{core.MethodHTTP, core.CheckDefault, false, KindHTTP},
		{core.MethodHTTP, core.CheckTCP, false, KindTCP},
		{core.MethodHTTP, core.CheckNone, true, KindNone},
		{core.MethodRouter, core.CheckDefault, true, KindFunc},
		{core.MethodRouter, core.CheckDefault, false, KindNone},
		{core.MethodRouter, core.CheckHTTP, false, KindHTTP},
	}
	for _, tt := range tests {
		in := core.Instance{Method: tt.method, Check: tt.check}
		if got := KindOf(&in, tt.hasFunc); got != tt.want {
			t.Errorf("KindOf(%v, %v, %v) = %v; want %v", tt.method, tt.check, tt.hasFunc, got, tt.want)
		}
	}
}
