package discovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// adminWorld is one Registry on a fake clock with fixed data: three
// services, checks injected at fixed times, one configuration.
func adminWorld(t *testing.T, opts ...discovery.Option) (*discovery.Registry, *discoverytest.Clock) {
	t.Helper()
	ctx := context.Background()
	clock := discoverytest.NewClock(t0)
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, append([]discovery.Option{discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0)}, opts...)...)
	add := func(service, host string, zone string) {
		addInstance(t, r, discovery.Instance{ID: host + ":8080", Service: service, Host: host, Port: 8080, Weight: 100, Zone: zone,
			Version: "1.4.2", RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})
	}
	add("orders", "10.0.0.1", "eu-1a")
	add("orders", "10.0.0.2", "eu-1b")
	add("inventory", "10.0.1.1", "eu-1a")
	add("payments", "10.0.2.1", "eu-1a")
	if _, _, err := backend.SetConfig(ctx, "orders", []byte(`{"workers":8,"balancer":{"strategy":"round_robin"}}`), t0, 20); err != nil {
		t.Fatal(err)
	}
	for range 2 { // loaded, then from L1: the overview's cache hit rate is 0.5
		for _, s := range []string{"orders", "inventory", "payments"} {
			if _, err := r.Get(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	checks := []struct {
		service, id string
		status      discovery.Status
		rtt         time.Duration
		err         string
	}{
		{"orders", "10.0.0.1:8080", discovery.StatusHealthy, 12 * time.Millisecond, ""},
		{"orders", "10.0.0.2:8080", discovery.StatusUnhealthy, 2 * time.Second, "timeout"},
		{"payments", "10.0.2.1:8080", discovery.StatusHealthy, 40 * time.Millisecond, ""},
		{"orders", "10.0.0.1:8080", discovery.StatusHealthy, 15 * time.Millisecond, ""},
		{"orders", "10.0.0.2:8080", discovery.StatusUnhealthy, 3 * time.Millisecond, "HTTP 500"},
		{"payments", "10.0.2.1:8080", discovery.StatusWarning, 60 * time.Millisecond, "HTTP 429"},
		{"orders", "10.0.0.1:8080", discovery.StatusHealthy, 9 * time.Millisecond, ""},
		{"orders", "10.0.0.2:8080", discovery.StatusUnhealthy, 2 * time.Millisecond, "HTTP 500"},
	}
	for _, c := range checks {
		clock.Advance(time.Second)
		discovery.InjectCheck(r, c.service, c.id, c.status, c.rtt, c.err)
	}
	return r, clock
}

// do sends one request to h and returns the status and body.
func do(t *testing.T, h http.Handler, method, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	rec := serve(h, method, path, body, hdr...)
	return rec.Code, rec.Body.Bytes()
}

// serve sends one request to h, with the header pairs hdr, and returns
// what h wrote.
func serve(h http.Handler, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// golden compares got with testdata/admin/name.json (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "admin", name+".json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestAdminGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// The JSON endpoints, on fixed data and a fake clock, match their golden
// files; errors are JSON with the right status.
func TestAdminGolden(t *testing.T) {
	r, _ := adminWorld(t)
	h := r.AdminHandler()
	tests := []struct {
		name, path string
		status     int
	}{
		{"services", "/services", 200},
		{"overview", "/overview", 200},
		{"service_orders", "/services/orders", 200},
		{"config_orders", "/services/orders/config", 200},
		{"config_inventory", "/services/inventory/config", 200},
		{"error_bad_name", "/services/no%20spaces", 400},
		{"error_unknown", "/services/nosuch", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, h, "GET", tt.path, "")
			if code != tt.status {
				t.Fatalf("GET %s = %d %s; want %d", tt.path, code, body, tt.status)
			}
			if !json.Valid(body) {
				t.Fatalf("GET %s: not JSON: %s", tt.path, body)
			}
			golden(t, tt.name, bytes.ReplaceAll(body, []byte(r.ProcessID()), []byte("PROCESS")))
		})
	}
}

// fakeAuthz answers every request with id and err.
type fakeAuthz struct {
	id  *discovery.Identity
	err error
}

func (f fakeAuthz) Authorize(*http.Request) (*discovery.Identity, error) { return f.id, f.err }

// Mutating endpoints refuse without authorization (401 or 403) and change
// nothing; with it they work; bad input is a 400 with a JSON error.
func TestAdminMutationsNeedAuthorization(t *testing.T) {
	ctx := context.Background()
	admin := &discovery.Identity{Service: "ops", Scopes: []string{"discovery:admin"}}
	refused := []struct {
		name   string
		opts   []discovery.AdminOption
		status int
	}{
		{"no authorizer", nil, http.StatusForbidden},
		{"unauthenticated", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{err: discovery.ErrUnauthenticated})}, http.StatusUnauthorized},
		{"forbidden", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{err: discovery.ErrForbidden})}, http.StatusForbidden},
		{"missing scope", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}),
			discovery.AdminScope("discovery:admin")}, http.StatusForbidden},
	}
	r, _ := adminWorld(t)
	cfgBefore, revBefore, _ := r.Config(ctx, "orders")
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			h := r.AdminHandler(tt.opts...)
			for _, m := range []struct{ method, path, body string }{
				{"DELETE", "/services/orders/instances/10.0.0.1:8080", ""},
				{"PUT", "/services/orders/config", `{"workers":1}`},
			} {
				code, body := do(t, h, m.method, m.path, m.body)
				if code != tt.status || !json.Valid(body) || !bytes.Contains(body, []byte(`"error"`)) {
					t.Fatalf("%s %s = %d %s; want %d with a JSON error", m.method, m.path, code, body, tt.status)
				}
			}
			svc, err := r.Store().Load(ctx, "orders")
			if err != nil || len(svc.Instances) != 2 {
				t.Fatalf("instances after refused requests: %v, %v; want both", svc, err)
			}
			cfg, rev, _ := r.Config(ctx, "orders")
			if rev != revBefore || !bytes.Equal(cfg, cfgBefore) {
				t.Fatalf("config changed by a refused request: %s (rev %d)", cfg, rev)
			}
		})
	}

	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: admin}), discovery.AdminScope("discovery:admin"))
	bad := []struct{ method, path, body string }{
		{"PUT", "/services/orders/config", `{"workers":`},
		{"PUT", "/services/orders/config", `[1,2]`},
		{"PUT", "/services/Bad%20Name/config", `{}`},
		{"DELETE", "/services/orders/instances/" + strings.Repeat("x", 300), ""},
	}
	for _, b := range bad {
		code, body := do(t, h, b.method, b.path, b.body)
		if code != http.StatusBadRequest || !json.Valid(body) || !bytes.Contains(body, []byte(`"error"`)) {
			t.Errorf("%s %s %q = %d %s; want 400 with a JSON error", b.method, b.path, b.body, code, body)
		}
	}
	if cfg, rev, _ := r.Config(ctx, "orders"); rev != revBefore || !bytes.Equal(cfg, cfgBefore) {
		t.Fatalf("config changed by bad input: %s", cfg)
	}
	if code, body := do(t, h, "DELETE", "/services/orders/instances/10.0.0.9:8080", ""); code != http.StatusNotFound {
		t.Errorf("DELETE of an unknown instance = %d %s; want 404", code, body)
	}

	code, body := do(t, h, "PUT", "/services/orders/config", `{"workers":2}`)
	if code != http.StatusOK {
		t.Fatalf("authorized PUT = %d %s", code, body)
	}
	if cfg, rev, _ := r.Config(ctx, "orders"); rev != revBefore+1 || string(cfg) != `{"workers":2}` {
		t.Fatalf("config after PUT: %s rev %d", cfg, rev)
	}
	code, body = do(t, h, "DELETE", "/services/orders/instances/10.0.0.1:8080", "")
	if code != http.StatusOK {
		t.Fatalf("authorized DELETE = %d %s", code, body)
	}
	if got := ids(r.Get(ctx, "orders")); got != "10.0.0.2:8080" {
		t.Fatalf("after DELETE: %s", got)
	}
	// The Registry's own Authorizer serves when the handler has none.
	r.SetAuthorizer(fakeAuthz{err: discovery.ErrUnauthenticated})
	if code, _ := do(t, r.AdminHandler(), "DELETE", "/services/orders/instances/10.0.0.2:8080", ""); code != http.StatusUnauthorized {
		t.Fatalf("with the Registry's refusing Authorizer: %d; want 401", code)
	}
}

// The dashboard is served with its embedded assets and refers to nothing
// outside the handler.
func TestAdminDashboardIsSelfContained(t *testing.T) {
	r, _ := adminWorld(t)
	h := r.AdminHandler(discovery.AdminTitle("rssbot <prod>"), discovery.AdminRefresh(2*time.Second))
	code, page := do(t, h, "GET", "/", "")
	if code != 200 || !bytes.Contains(page, []byte("rssbot &lt;prod&gt;")) || !bytes.Contains(page, []byte(`data-refresh-ms="2000"`)) {
		t.Fatalf("GET / = %d\n%s", code, page)
	}
	for asset, ctype := range map[string]string{"/assets/app.js": "text/javascript; charset=utf-8", "/assets/style.css": "text/css; charset=utf-8"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", asset, nil))
		if rec.Code != 200 || rec.Body.Len() == 0 {
			t.Fatalf("GET %s = %d", asset, rec.Code)
		}
		if hd := rec.Header(); hd.Get("Content-Type") != ctype || hd.Get("X-Content-Type-Options") != "nosniff" || hd.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: Content-Type %q, X-Content-Type-Options %q, Cache-Control %q; want %q, nosniff, no-cache",
				asset, hd.Get("Content-Type"), hd.Get("X-Content-Type-Options"), hd.Get("Cache-Control"), ctype)
		}
		page = append(page, rec.Body.Bytes()...)
	}
	// Nothing else is served from the assets directory: no listing, and
	// not the page's template.
	for _, other := range []string{"/assets/", "/assets/index.html", "/assets/nope.js"} {
		if code, body := do(t, h, "GET", other, ""); code != http.StatusNotFound {
			t.Errorf("GET %s = %d %.60q; want 404", other, code, body)
		}
	}
	for _, external := range []string{`src="http`, `href="http`, `src="//`, `href="//`, "url(http", "@import", "fetch(\"http"} {
		if bytes.Contains(page, []byte(external)) {
			t.Errorf("the dashboard refers to something outside the handler: %s", external)
		}
	}
	if code, _ := do(t, h, "POST", "/overview", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /overview = %d; want 405", code)
	}
}

// The dashboard may not be framed by another site (clickjacking): its CSP
// says frame-ancestors 'none' (default-src does not cover framing), and
// X-Frame-Options says so to browsers without CSP 2.
func TestAdminDashboardRefusesFraming(t *testing.T) {
	r, _ := adminWorld(t)
	req := httptest.NewRequest("GET", "/", nil)
	rec := httptest.NewRecorder()
	r.AdminHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d", rec.Code)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q lacks frame-ancestors 'none': any site may frame the admin page", csp)
	}
	if got := rec.Header().Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options = %q; want DENY", got)
	}
}

// A configuration over MaxConfigBytes is a 413 whatever its size, one byte
// over included, and nothing is stored; one of MaxConfigBytes is stored.
func TestAdminPutConfigSizeLimit(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	doc := func(n int) string { // a JSON object of exactly n bytes
		return `{"pad":"` + strings.Repeat("x", n-len(`{"pad":""}`)) + `"}`
	}
	_, revBefore, _ := r.Config(ctx, "orders")
	for _, over := range []int{1, 2, 100} {
		code, body := do(t, h, "PUT", "/services/orders/config", doc(discovery.MaxConfigBytes+over))
		if code != http.StatusRequestEntityTooLarge || !json.Valid(body) {
			t.Errorf("PUT of MaxConfigBytes+%d bytes = %d %s; want 413 with a JSON error", over, code, body)
		}
	}
	if _, rev, _ := r.Config(ctx, "orders"); rev != revBefore {
		t.Fatalf("config revision %d after refused PUTs; want %d", rev, revBefore)
	}
	if code, body := do(t, h, "PUT", "/services/orders/config", doc(discovery.MaxConfigBytes)); code != http.StatusOK {
		t.Fatalf("PUT of MaxConfigBytes bytes = %d %s; want 200", code, body)
	}
}

// A path the handler does not serve, or a method a path does not take, is
// answered as every other error of the API: a JSON {"error": ...} (a 405
// with its Allow header), not the mux's plain text, which a script reading
// the API's errors as JSON cannot decode. Redirects to a cleaned path stay.
func TestAdminRoutingErrorsAreJSON(t *testing.T) {
	r, _ := adminWorld(t)
	h := r.AdminHandler()
	for _, tt := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/nope", http.StatusNotFound, ""},
		{"GET", "/services/orders/instances", http.StatusNotFound, ""},
		{"POST", "/overview", http.StatusMethodNotAllowed, "GET, HEAD"},
		{"PATCH", "/services/orders/config", http.StatusMethodNotAllowed, "GET, HEAD, PUT"},
		{"GET", "/services/orders/instances/10.0.0.1:8080", http.StatusMethodNotAllowed, "DELETE"},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e struct{ Error string }
		if rec.Code != tt.status || rec.Header().Get("Content-Type") != "application/json" ||
			json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Errorf("%s %s = %d %q %s; want %d with a JSON error", tt.method, tt.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes(), tt.status)
		}
		if got := rec.Header().Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow = %q; want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	req := httptest.NewRequest("GET", "/services/../overview", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "/overview" {
		t.Errorf("GET /services/../overview = %d to %q; want a redirect to /overview", rec.Code, rec.Header().Get("Location"))
	}
}

// Behind a StripPrefix mount, the mux's redirects (to a cleaned path, to a
// subtree's "/") stay inside the mount: they went to the path without the
// prefix, which the outer server does not route to the admin handler.
func TestAdminRedirectsKeepTheMountPrefix(t *testing.T) {
	r, _ := adminWorld(t)
	outer := http.NewServeMux()
	outer.Handle("/discovery/", http.StripPrefix("/discovery", r.AdminHandler()))
	srv := httptest.NewServer(outer)
	t.Cleanup(srv.Close)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(client.CloseIdleConnections)
	for _, tt := range []struct{ path, want string }{
		{"/discovery/services/../overview", "/discovery/overview"},
		{"/discovery/services/../overview?v=1", "/discovery/overview?v=1"},
		{"/discovery//services", "/discovery/services"},
	} {
		req, err := http.NewRequest("GET", srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = tt.path // sent as is: no dot segments removed
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != tt.want {
			t.Errorf("GET %s = %d to %q; want a redirect to %q", tt.path, resp.StatusCode, resp.Header.Get("Location"), tt.want)
		}
	}
	// Unmounted, the redirect is the mux's own.
	rec := httptest.NewRecorder()
	r.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/services/../overview", nil))
	if rec.Code/100 != 3 || rec.Header().Get("Location") != "/overview" {
		t.Errorf("GET /services/../overview unmounted = %d to %q; want a redirect to /overview", rec.Code, rec.Header().Get("Location"))
	}
}

// DELETE of an instance whose process still holds its Registration takes
// it out at once, and that process registers it again at its next renewal
// (a registration whose row vanished does, as after a database restore):
// what README and AdminHandler's doc say, so that an operator knows to
// drain a live instance in its own process instead.
func TestAdminDeleteOfALiveRegistrationLastsUntilItsRenewal(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	owner := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	ops := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	id := mustRegister(t, owner, discovery.Instance{Service: "orders", Host: "10.0.0.1", Port: 8080}).Instance().ID
	h := ops.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	if code, body := do(t, h, "DELETE", "/services/orders/instances/"+id, ""); code != http.StatusOK {
		t.Fatalf("DELETE = %d %s", code, body)
	}
	if svc, err := backend.Load(ctx, "orders"); err == nil && svc.Instance(id) != nil {
		t.Fatal("the instance is still stored after DELETE")
	}
	clock.BlockUntilAt(t0.Add(discovery.DefaultLeaseTTL / 3)) // the owner's renewal timer is set
	clock.Advance(discovery.DefaultLeaseTTL / 3)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if svc, err := backend.Load(ctx, "orders"); err == nil && svc.Instance(id) != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the owner's renewal did not register the deleted instance again")
		}
	}
}

// A request its client gave up on (a dashboard tab closed mid-fetch, a
// server shutting down) is not an internal error: it is answered 503 and
// logs nothing, where it was a 500 with a warning, one per aborted fetch.
func TestAdminCancelledRequestIsNotAnInternalError(t *testing.T) {
	log, logs := observed()
	r, _ := adminWorld(t, discovery.WithLogger(log))
	h := r.AdminHandler()
	for _, path := range []string{"/overview", "/services", "/services/orders", "/services/orders/config", "/services/orders/config/history"} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequest("GET", path, nil).WithContext(ctx)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusInternalServerError {
			t.Errorf("GET %s, cancelled: %d %s; want no internal error", path, rec.Code, rec.Body.Bytes())
		}
	}
	if n := logs.FilterMessage("discovery: admin request failed").Len(); n != 0 {
		t.Errorf("cancelled requests logged %d warnings; want none", n)
	}
}

// The admin API's reads are open to anyone who can reach it, so a backend
// outage must be answered 503 without the backend's own error text: a
// database driver's error names the server's address, the database and the
// user (pgx: "failed to connect to `user=... database=...`: host:port").
// The detail goes to the log instead, where the operator looks.
func TestAdminBackendOutageDoesNotLeakTheBackendError(t *testing.T) {
	log, logs := observed()
	backend := discoverytest.NewBackend()
	r := discoverytest.NewRegistry(t, backend, discovery.WithLogger(log), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthorizer{&discovery.Identity{Service: "ops"}}))
	const secret = "failed to connect to `user=svc_admin database=prod`: 10.9.8.7:5432"
	backend.SetFailure(errors.New(secret))
	defer backend.SetFailure(nil)
	tests := []struct{ method, path, body string }{
		{"GET", "/services", ""},
		{"GET", "/services/orders", ""},
		{"GET", "/services/orders/config", ""},
		{"GET", "/services/orders/config/history", ""},
		{"PUT", "/services/orders/config", `{"workers":1}`},
		{"DELETE", "/services/orders/instances/i-1", ""},
	}
	for _, tt := range tests {
		code, body := do(t, h, tt.method, tt.path, tt.body)
		if code != http.StatusServiceUnavailable {
			t.Errorf("%s %s: %d %s; want 503", tt.method, tt.path, code, body)
		}
		for _, leak := range []string{"10.9.8.7", "svc_admin", "prod"} {
			if bytes.Contains(body, []byte(leak)) {
				t.Errorf("%s %s: answer %s quotes the backend's error (%q)", tt.method, tt.path, body, leak)
			}
		}
	}
	if logs.FilterMessage("discovery: admin request failed").Len() == 0 {
		t.Error("the outage was not logged; the operator has no detail")
	}
}

// A PUT whose configuration is stored but whose notification could not be
// signed, the TokenSource's backend down (an auth.Signer that must rotate and
// cannot publish its key), reports the instance as failed without the
// backend's own text, which names its address and user, as every other
// answer of the handler does; the log has it.
func TestAdminNotificationReportDoesNotLeakTheBackendError(t *testing.T) {
	log, logs := observed()
	const secret = "failed to connect to `user=svc_admin database=prod`: 10.9.8.7:5432"
	tokens := fakeTokens{fail: &discovery.BackendError{Backend: "database", Op: "put key", Err: errors.New(secret)}}
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithLogger(log), discovery.WithTokenSource(tokens),
		discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	mustRegister(t, r, inst("orders", "10.0.0.1", 80))
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthorizer{&discovery.Identity{Service: "ops"}}))
	code, body := do(t, h, "PUT", "/services/orders/config", `{"workers":1}`)
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"outcome": "failed"`)) || !bytes.Contains(body, []byte("database unavailable")) {
		t.Fatalf("PUT = %d %s; want 200, the instance failed for the database", code, body)
	}
	for _, leak := range []string{"10.9.8.7", "svc_admin", "prod"} {
		if bytes.Contains(body, []byte(leak)) {
			t.Errorf("the report %s quotes the backend's error (%q)", body, leak)
		}
	}
	if logs.FilterMessage("discovery: admin request failed").FilterField(zap.String("instance", "10.0.0.1:80")).Len() != 1 {
		t.Errorf("the failure was not logged once with its instance; the operator has no detail: %v", logs.All())
	}
}

// lateDriverStore stands for a SQL store whose database does not answer
// before the caller's deadline: as sqlstore does for a deadline that is the
// caller's, it returns the driver's error, which names the server, the
// database and the user, as it is.
type lateDriverStore struct {
	*discoverytest.Backend
	secret string
}

func (s *lateDriverStore) late(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("%s: dial error: %w", s.secret, ctx.Err())
}

func (s *lateDriverStore) Services(ctx context.Context, _ time.Time) ([]discovery.ServiceInfo, error) {
	return nil, s.late(ctx)
}

func (s *lateDriverStore) Deregister(ctx context.Context, _, _ string) (int64, error) {
	return 0, s.late(ctx)
}

func (s *lateDriverStore) SetConfig(ctx context.Context, _ string, _ []byte, _ time.Time, _ int) (int64, int64, error) {
	return 0, 0, s.late(ctx)
}

// A database call that the request's deadline ends (the admin's own 10 s,
// with WithDatabaseTimeout longer than that or a call that began late) is
// answered 503 without the driver's error, as a backend outage is: the
// answer quoted it, naming the database's address and user to whoever can
// reach the open admin API.
func TestAdminDeadlineDoesNotLeakTheDriverError(t *testing.T) {
	log, logs := observed()
	const secret = "failed to connect to `user=svc_admin database=prod`: 10.9.8.7:5432"
	store := &lateDriverStore{Backend: discoverytest.NewBackend(), secret: secret}
	r := discoverytest.NewRegistry(t, store.Backend, discovery.WithStore(store), discovery.WithLogger(log),
		discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthorizer{&discovery.Identity{Service: "ops"}}))
	tests := []struct{ method, path, body string }{
		{"GET", "/services", ""},
		{"PUT", "/services/orders/config", `{"workers":1}`},
		{"DELETE", "/services/orders/instances/i-1", ""},
	}
	for _, tt := range tests {
		// The deadline has passed: the admin's own is derived from it.
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)).WithContext(ctx)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		cancel()
		if rec.Code != http.StatusServiceUnavailable || !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s %s: %d %s; want 503 with a JSON error", tt.method, tt.path, rec.Code, rec.Body)
		}
		for _, leak := range []string{"10.9.8.7", "svc_admin", "prod"} {
			if strings.Contains(rec.Body.String(), leak) {
				t.Errorf("%s %s: answer %s quotes the driver's error (%q)", tt.method, tt.path, rec.Body, leak)
			}
		}
	}
	if logs.FilterMessage("discovery: admin request failed").Len() != len(tests) {
		t.Errorf("logged %d failures; want %d, the detail for the operator", logs.FilterMessage("discovery: admin request failed").Len(), len(tests))
	}
}

// AdminRefresh sets how often the dashboard refreshes itself. Browsers
// take a setTimeout delay as a 32-bit integer of milliseconds: a longer one
// (AdminRefresh(30 * 24 * time.Hour), "hardly ever") wrapped to 0 or below,
// and the page fetched /overview back to back, as fast as the server
// answered. The delay the page gets fits a browser's timer.
func TestAdminRefreshFitsABrowserTimer(t *testing.T) {
	r, _ := adminWorld(t)
	for _, d := range []time.Duration{30 * 24 * time.Hour, discovery.MaxDuration, time.Duration(math.MaxInt64)} {
		_, page := do(t, r.AdminHandler(discovery.AdminRefresh(d)), "GET", "/", "")
		m := regexp.MustCompile(`data-refresh-ms="(-?\d+)"`).FindSubmatch(page)
		if m == nil {
			t.Fatalf("AdminRefresh(%v): the page has no data-refresh-ms", d)
		}
		ms, err := strconv.ParseInt(string(m[1]), 10, 64)
		if err != nil || ms < 250 || ms > math.MaxInt32 {
			t.Errorf("AdminRefresh(%v): data-refresh-ms = %s; want 250..%d (a browser's setTimeout wraps above)", d, m[1], math.MaxInt32)
		}
	}
}

// A service the database knows with no live instance (its instances all
// lapsed, or only a configuration stored) is listed by GET /services and
// answered by GET /services/{name} with no instances, not 404 "service not
// found": an operator following the listing to a service whose instances
// all died was told it did not exist.
func TestAdminServiceWithoutLiveInstances(t *testing.T) {
	ctx := context.Background()
	r, clock := adminWorld(t)
	addInstance(t, r, discovery.Instance{ID: "10.0.9.1:8080", Service: "dead", Host: "10.0.9.1", Port: 8080,
		RegisteredAt: t0, ExpiresAt: clock.Now().Add(-time.Second)})
	if _, err := r.UpdateConfig(ctx, "planned", json.RawMessage(`{"workers":1}`)); err != nil {
		t.Fatal(err)
	}
	h := r.AdminHandler()
	code, body := do(t, h, "GET", "/services", "")
	if code != http.StatusOK || !strings.Contains(string(body), `"dead"`) || !strings.Contains(string(body), `"planned"`) {
		t.Fatalf("GET /services = %d %s; want both services listed", code, body)
	}
	for _, name := range []string{"dead", "planned"} {
		code, body := do(t, h, "GET", "/services/"+name, "")
		var got struct {
			Name      string            `json:"name"`
			Revision  int64             `json:"revision"`
			Instances []json.RawMessage `json:"instances"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Name != name || got.Revision < 1 || got.Instances == nil || len(got.Instances) != 0 {
			t.Errorf("GET /services/%s = %d %s; want 200 with its revision and no instances", name, code, body)
		}
	}
	if code, body := do(t, h, "GET", "/services/nosuch", ""); code != http.StatusNotFound {
		t.Errorf("GET /services/nosuch = %d %s; want 404", code, body)
	}
}

// GET /services/{name}/config gives the configuration revision as its
// ETag, and a PUT with If-Match stores the body only if the configuration
// is still at that revision: an operator who edits what they read gets a
// 412 with a JSON error when another PUT came between, instead of erasing
// it. "0" is a service without a configuration, "*" any that has one; an
// If-Match that is no entity tag is a 400. A PUT without If-Match stores as
// before, and every PUT answers the new revision's ETag.
func TestAdminPutConfigIfMatch(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	send := func(method, path, body string, hdr ...string) (int, string, []byte) {
		rec := serve(h, method, path, body, hdr...)
		return rec.Code, rec.Header().Get("ETag"), rec.Body.Bytes()
	}
	code, etag, body := send("GET", "/services/orders/config", "")
	if code != http.StatusOK || etag != `"1"` {
		t.Fatalf("GET config = %d, ETag %q %s; want 200 with ETag \"1\"", code, etag, body)
	}
	if code, etag, body := send("PUT", "/services/orders/config", `{"workers":2}`, "If-Match", `"1"`); code != http.StatusOK || etag != `"2"` {
		t.Fatalf("PUT with If-Match \"1\" = %d, ETag %q %s; want 200 with ETag \"2\"", code, etag, body)
	}
	code, _, body = send("PUT", "/services/orders/config", `{"workers":3}`, "If-Match", `"1"`)
	if code != http.StatusPreconditionFailed || !json.Valid(body) || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("PUT with a stale If-Match = %d %s; want 412 with a JSON error", code, body)
	}
	for _, bad := range []string{`1`, `"x"`, `"-1"`, `"1", "2"`} {
		if code, _, body := send("PUT", "/services/orders/config", `{"workers":4}`, "If-Match", bad); code != http.StatusBadRequest || !json.Valid(body) {
			t.Errorf("PUT with If-Match %s = %d %s; want 400 with a JSON error", bad, code, body)
		}
	}
	if cfg, rev, _ := r.Config(ctx, "orders"); rev != 2 || string(cfg) != `{"workers":2}` {
		t.Fatalf("config after refused PUTs: %s rev %d; want {\"workers\":2} rev 2", cfg, rev)
	}
	if code, _, body := send("PUT", "/services/orders/config", `{"workers":5}`, "If-Match", `W/"2"`); code != http.StatusPreconditionFailed {
		t.Errorf("PUT with a weak If-Match = %d %s; want 412 (If-Match compares strongly)", code, body)
	}
	if code, etag, body := send("PUT", "/services/orders/config", `{"workers":5}`, "If-Match", `*`); code != http.StatusOK || etag != `"3"` {
		t.Fatalf("PUT with If-Match * = %d, ETag %q %s; want 200", code, etag, body)
	}
	if code, _, body := send("PUT", "/services/payments/config", `{"workers":1}`, "If-Match", `*`); code != http.StatusPreconditionFailed {
		t.Errorf("PUT with If-Match * to a service without a configuration = %d %s; want 412", code, body)
	}
	if code, etag, _ := send("GET", "/services/payments/config", ""); code != http.StatusOK || etag != `"0"` {
		t.Fatalf("GET config of a service without one = %d, ETag %q; want \"0\"", code, etag)
	}
	if code, etag, body := send("PUT", "/services/payments/config", `{"workers":1}`, "If-Match", `"0"`); code != http.StatusOK || etag != `"1"` {
		t.Fatalf("PUT with If-Match \"0\" to a service without a configuration = %d, ETag %q %s; want 200", code, etag, body)
	}
	if code, etag, body := send("PUT", "/services/orders/config", `{"workers":6}`); code != http.StatusOK || etag != `"4"` {
		t.Fatalf("PUT without If-Match = %d, ETag %q %s; want 200 with ETag \"4\"", code, etag, body)
	}
}

// A PUT with "If-None-Match: *" (create only: RFC 9110's guard against
// overwriting what another client stored) stores the body only if the
// service has no configuration, else answers 412 and stores nothing; it
// was ignored, and the PUT overwrote the configuration it was sent to
// protect. An If-None-Match other than * is a 400, not ignored either.
func TestAdminPutConfigIfNoneMatch(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	send := func(path, body string, hdr ...string) (int, string, []byte) {
		rec := serve(h, "PUT", path, body, hdr...)
		return rec.Code, rec.Header().Get("ETag"), rec.Body.Bytes()
	}
	if code, _, body := send("/services/orders/config", `{"workers":1}`, "If-None-Match", "*"); code != http.StatusPreconditionFailed || !json.Valid(body) {
		t.Errorf("PUT with If-None-Match * to a service with a configuration = %d %s; want 412 with a JSON error", code, body)
	}
	for _, bad := range []string{`"1"`, `W/"1"`, `"1", *`} {
		if code, _, body := send("/services/orders/config", `{"workers":2}`, "If-None-Match", bad); code != http.StatusBadRequest || !json.Valid(body) {
			t.Errorf("PUT with If-None-Match %s = %d %s; want 400 with a JSON error", bad, code, body)
		}
	}
	if cfg, rev, _ := r.Config(ctx, "orders"); rev != 1 || !strings.Contains(string(cfg), `"workers":8`) {
		t.Fatalf("orders after refused PUTs: %s rev %d; want the configuration of revision 1", cfg, rev)
	}
	if code, etag, body := send("/services/payments/config", `{"workers":3}`, "If-None-Match", "*"); code != http.StatusOK || etag != `"1"` {
		t.Fatalf("PUT with If-None-Match * to a service without a configuration = %d, ETag %q %s; want 200 with ETag \"1\"", code, etag, body)
	}
	if code, _, body := send("/services/payments/config", `{"workers":4}`, "If-None-Match", "*"); code != http.StatusPreconditionFailed {
		t.Errorf("a second PUT with If-None-Match * = %d %s; want 412", code, body)
	}
	// With If-Match too, both must hold: only "0" (none) agrees with *.
	if code, _, body := send("/services/payments/config", `{"workers":5}`, "If-Match", `"1"`, "If-None-Match", "*"); code != http.StatusPreconditionFailed {
		t.Errorf("PUT with If-Match \"1\" and If-None-Match * = %d %s; want 412", code, body)
	}
	if code, etag, body := send("/services/inventory/config", `{"workers":6}`, "If-Match", `"0"`, "If-None-Match", "*"); code != http.StatusOK || etag != `"1"` {
		t.Errorf("PUT with If-Match \"0\" and If-None-Match * to a service without one = %d, ETag %q %s; want 200", code, etag, body)
	}
	if cfg, rev, _ := r.Config(ctx, "payments"); rev != 1 || string(cfg) != `{"workers":3}` {
		t.Fatalf("payments after refused PUTs: %s rev %d; want {\"workers\":3} rev 1", cfg, rev)
	}
}

// With AdminAllowedHosts the handler answers only the Host names it was
// given, whatever their port, case or trailing dot: a request naming
// another (a DNS-rebinding page's own name, sent by an operator's browser)
// gets 421 and none of the handler's data.
func TestAdminAnswersOnlyTheAllowedHosts(t *testing.T) {
	r, _ := adminWorld(t)
	h := r.AdminHandler(discovery.AdminAllowedHosts("Admin.Internal.", "10.0.0.7", "[::1]", "", "ops.internal:8443", "[fd00::7]:9000"))
	tests := []struct {
		host string
		want int
	}{
		{"admin.internal", http.StatusOK},
		{"ADMIN.internal:8080", http.StatusOK},
		{"admin.internal.", http.StatusOK},
		{"10.0.0.7:9000", http.StatusOK},
		{"[::1]:8080", http.StatusOK},
		{"ops.internal:8443", http.StatusOK}, // allowed with its port: the host counts
		{"ops.internal", http.StatusOK},
		{"[fd00::7]:80", http.StatusOK},
		{"rebind.attacker.example", http.StatusMisdirectedRequest},
		{"rebind.attacker.example:8080", http.StatusMisdirectedRequest},
		{"admin.internal.attacker.example", http.StatusMisdirectedRequest},
		{"10.0.0.8", http.StatusMisdirectedRequest},
		{"", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		for _, path := range []string{"/services", "/overview", "/"} {
			req := httptest.NewRequest("GET", path, nil)
			req.Host = tt.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("GET %s with Host %q = %d; want %d", path, tt.host, rec.Code, tt.want)
			}
			if tt.want != http.StatusOK && strings.Contains(rec.Body.String(), "10.0.0.1") {
				t.Errorf("GET %s with Host %q answered the registry's data: %s", path, tt.host, rec.Body)
			}
		}
	}
	// Without the option every Host is answered, as before.
	req := httptest.NewRequest("GET", "/services", nil)
	req.Host = "rebind.attacker.example"
	rec := httptest.NewRecorder()
	r.AdminHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /services without AdminAllowedHosts = %d; want 200", rec.Code)
	}
}

// A PUT of a configuration to a Store that keeps none is a 501, as
// AdminHandler's doc says, whatever its precondition: If-Match * and a weak
// If-Match answered 412 (no configuration to match), which sent a client to
// read the ETag and try again for a configuration it can never store.
func TestAdminPutConfigToAConfiglessStoreIsNotImplemented(t *testing.T) {
	r, err := discovery.New(discovery.WithStore(configlessStore{discoverytest.NewBackend()}), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	for _, hdr := range [][]string{nil, {"If-Match", `"0"`}, {"If-Match", "*"}, {"If-Match", `W/"1"`}, {"If-None-Match", "*"}} {
		code, body := do(t, h, "PUT", "/services/web/config", `{"v":1}`, hdr...)
		if code != http.StatusNotImplemented || !json.Valid(body) {
			t.Errorf("PUT with %q to a Store without configurations = %d %s; want 501 with a JSON error", hdr, code, body)
		}
	}
}
