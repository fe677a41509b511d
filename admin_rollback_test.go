package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
	"github.com/rssbot/discovery/internal/testutil"
)

// POST /services/{name}/config/rollback/{revision} restores a kept version
// of the configuration as a new revision, only if the configuration is
// still at the revision its If-Match names (RollbackConfigIf): an operator
// rolling back what they read gets a 412, not the erasure of a fix stored
// meanwhile. A missing If-Match is a 428 and changes nothing ("*" is the
// explicit "whatever is stored now"). An unknown version is a 404, one
// that is no revision a 400, each a JSON error; a success answers the
// PUT's report with the new revision's ETag.
func TestAdminRollbackConfig(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t, discovery.WithConfigValidator("orders", func(doc json.RawMessage) error {
		if strings.Contains(string(doc), `"workers":0`) {
			return errors.New("no workers")
		}
		return nil
	}))
	for _, doc := range []string{`{"workers":2}`, `{"workers":3}`} { // revisions 2 and 3
		if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(doc)); err != nil {
			t.Fatal(err)
		}
	}
	const first = `{"workers":8,"balancer":{"strategy":"round_robin"}}` // revision 1, adminWorld's
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	send := func(path string, hdr ...string) (int, string, []byte) {
		rec := serve(h, "POST", path, "", hdr...)
		return rec.Code, rec.Header().Get("ETag"), rec.Body.Bytes()
	}
	isError := func(body []byte) bool {
		var e struct{ Error string }
		return json.Unmarshal(body, &e) == nil && strings.HasPrefix(e.Error, "discovery: ")
	}
	stays := func(what string, wantRev int64, wantDoc string) {
		t.Helper()
		if cfg, rev, err := r.Config(ctx, "orders"); err != nil || rev != wantRev || string(cfg) != wantDoc {
			t.Fatalf("config after %s = %s rev %d, %v; want %s rev %d", what, cfg, rev, err, wantDoc, wantRev)
		}
	}

	code, etag, body := send("/services/orders/config/rollback/1", "If-Match", `"3"`)
	var rep struct {
		Service        string            `json:"service"`
		ConfigRevision int64             `json:"config_revision"`
		Instances      []json.RawMessage `json:"instances"`
	}
	if code != http.StatusOK || etag != `"4"` || json.Unmarshal(body, &rep) != nil || rep.Service != "orders" || rep.ConfigRevision != 4 || rep.Instances == nil {
		t.Fatalf("rollback to 1 with If-Match \"3\" = %d, ETag %q %s; want 200, ETag \"4\", the PUT's report", code, etag, body)
	}
	stays("the rollback to 1", 4, first)

	// Stale: another change came after the read. Nothing is stored.
	if code, _, body := send("/services/orders/config/rollback/2", "If-Match", `"3"`); code != http.StatusPreconditionFailed || !isError(body) {
		t.Errorf("rollback with a stale If-Match = %d %s; want 412 with a JSON error", code, body)
	}
	if code, _, body := send("/services/orders/config/rollback/2", "If-Match", `W/"4"`); code != http.StatusPreconditionFailed || !isError(body) {
		t.Errorf("rollback with a weak If-Match = %d %s; want 412 (If-Match compares strongly)", code, body)
	}
	// No precondition: refused, not a last-writer-wins rollback.
	if code, _, body := send("/services/orders/config/rollback/2"); code != http.StatusPreconditionRequired || !isError(body) {
		t.Errorf("rollback without If-Match = %d %s; want 428 with a JSON error", code, body)
	}
	for _, bad := range [][]string{
		{"If-Match", `4`}, {"If-Match", `"x"`}, {"If-Match", `"4", "3"`},
		{"If-Match", `"4"`, "If-None-Match", "*"},
	} {
		if code, _, body := send("/services/orders/config/rollback/2", bad...); code != http.StatusBadRequest || !isError(body) {
			t.Errorf("rollback with %q = %d %s; want 400 with a JSON error", bad, code, body)
		}
	}
	for _, rev := range []string{"0", "-1", "x", "01", "+2", "2.0", "99999999999999999999"} {
		if code, _, body := send("/services/orders/config/rollback/"+rev, "If-Match", `"4"`); code != http.StatusBadRequest || !isError(body) {
			t.Errorf("rollback to %q = %d %s; want 400 with a JSON error", rev, code, body)
		}
	}
	if code, _, body := send("/services/orders/config/rollback/42", "If-Match", `"4"`); code != http.StatusNotFound || !isError(body) {
		t.Errorf("rollback to a version not in the history = %d %s; want 404 with a JSON error", code, body)
	}
	for _, tag := range []string{`"0"`, `"1"`, `*`} {
		for _, svc := range []string{"nosuch", "payments"} { // unknown; without a configuration
			if code, _, body := send("/services/"+svc+"/config/rollback/1", "If-Match", tag); code != http.StatusNotFound || !isError(body) {
				t.Errorf("rollback of %s with If-Match %s = %d %s; want 404 with a JSON error", svc, tag, code, body)
			}
		}
	}
	if code, _, body := send("/services/Bad%20Name/config/rollback/1", "If-Match", `"4"`); code != http.StatusBadRequest || !isError(body) {
		t.Errorf("rollback of an invalid service name = %d %s; want 400 with a JSON error", code, body)
	}
	stays("the refused rollbacks", 4, first)

	// A version its service's validator now refuses is bad input, stored
	// nowhere.
	if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(`{"workers":5}`)); err != nil { // 5
		t.Fatal(err)
	}
	if _, _, err := discoverytestBackend(t, r).SetConfig(ctx, "orders", []byte(`{"workers":0}`), t0, 20); err != nil { // 6, unvalidated
		t.Fatal(err)
	}
	if code, _, body := send("/services/orders/config/rollback/6", "If-Match", `"6"`); code != http.StatusBadRequest || !isError(body) {
		t.Errorf("rollback to a version the validator refuses = %d %s; want 400 with a JSON error", code, body)
	}
	// "*": whatever configuration is stored now.
	if code, etag, body := send("/services/orders/config/rollback/3", "If-Match", `*`); code != http.StatusOK || etag != `"7"` {
		t.Fatalf("rollback with If-Match * = %d, ETag %q %s; want 200 with ETag \"7\"", code, etag, body)
	}
	stays("the rollback to 3", 7, `{"workers":3}`)

	// The method is POST only, said as every routing error is.
	rec := serve(h, "GET", "/services/orders/config/rollback/1", "")
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" || !isError(rec.Body.Bytes()) {
		t.Errorf("GET of the rollback = %d, Allow %q %s; want 405, Allow POST, a JSON error", rec.Code, rec.Header().Get("Allow"), rec.Body)
	}
}

// discoverytestBackend returns the in-memory backend r stores in.
func discoverytestBackend(t *testing.T, r *discovery.Registry) *discoverytest.Backend {
	t.Helper()
	b, ok := r.Store().(*discoverytest.Backend)
	if !ok {
		t.Fatalf("the Registry's Store is a %T; want *discoverytest.Backend", r.Store())
	}
	return b
}

// A rollback needs authorization as the PUT does, and a refused one
// changes nothing; a Store down is a 503 that does not quote the backend's
// error; a Store that keeps no configuration a 501.
func TestAdminRollbackConfigRefusals(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(`{"workers":2}`)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		opts   []discovery.AdminOption
		status int
	}{
		{"no authorizer", nil, http.StatusForbidden},
		{"unauthenticated", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{err: discovery.ErrUnauthenticated})}, http.StatusUnauthorized},
		{"forbidden", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{err: discovery.ErrForbidden})}, http.StatusForbidden},
		{"missing scope", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}),
			discovery.AdminScope("discovery:admin")}, http.StatusForbidden},
		{"missing read scope", []discovery.AdminOption{discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}),
			discovery.AdminProtectReads("discovery:read")}, http.StatusForbidden},
	} {
		code, body := do(t, r.AdminHandler(tt.opts...), "POST", "/services/orders/config/rollback/1", "", "If-Match", `"2"`)
		if code != tt.status || !json.Valid(body) || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: rollback = %d %s; want %d with a JSON error", tt.name, code, body, tt.status)
		}
	}
	if cfg, rev, _ := r.Config(ctx, "orders"); rev != 2 || string(cfg) != `{"workers":2}` {
		t.Fatalf("config after refused rollbacks = %s rev %d; want revision 2 kept", cfg, rev)
	}

	log, logs := observed()
	backend := discoverytest.NewBackend()
	down := discoverytest.NewRegistry(t, backend, discovery.WithLogger(log), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if _, err := down.UpdateConfig(ctx, "orders", json.RawMessage(`{"workers":1}`)); err != nil {
		t.Fatal(err)
	}
	const secret = "failed to connect to `user=svc_admin database=prod`: 10.9.8.7:5432"
	backend.SetFailure(errors.New(secret))
	defer backend.SetFailure(nil)
	h := down.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	for _, hdr := range []string{`"1"`, `*`} {
		code, body := do(t, h, "POST", "/services/orders/config/rollback/1", "", "If-Match", hdr)
		if code != http.StatusServiceUnavailable || !json.Valid(body) || strings.Contains(string(body), "10.9.8.7") || strings.Contains(string(body), "svc_admin") {
			t.Errorf("rollback with If-Match %s, the store down = %d %s; want 503 without the backend's error", hdr, code, body)
		}
	}
	if logs.FilterMessage("discovery: admin request failed").Len() == 0 {
		t.Error("the outage was not logged; the operator has no detail")
	}

	none, err := discovery.New(discovery.WithStore(configlessStore{discoverytest.NewBackend()}), discovery.WithoutHealthChecks(),
		discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = none.Close() })
	mustRegister(t, none, inst("web", "10.0.0.1", 80))
	h = none.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	for _, hdr := range []string{`"0"`, `*`, `W/"1"`} {
		if code, body := do(t, h, "POST", "/services/web/config/rollback/1", "", "If-Match", hdr); code != http.StatusNotImplemented || !json.Valid(body) {
			t.Errorf("rollback with If-Match %s on a Store without configurations = %d %s; want 501 with a JSON error", hdr, code, body)
		}
	}
}

// The rollback answers the same on the SQL stores as on the in-memory
// one: their versions, conflicts and missing versions map to 200, 412 and
// 404 alike.
func TestAdminRollbackConfigOnSQL(t *testing.T) {
	ctx := context.Background()
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		t.Run(name, func(t *testing.T) {
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			r, err := discovery.New(discovery.WithDB(open(t, ns+"_")), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(),
				discovery.WithCloseDrain(0))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			for _, doc := range []string{`{"workers":1}`, `{"workers":2}`} {
				if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(doc)); err != nil {
					t.Fatal(err)
				}
			}
			h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
			for _, tt := range []struct {
				path, ifMatch string
				status        int
				etag          string
			}{
				{"/services/orders/config/rollback/1", `"2"`, http.StatusOK, `"3"`},
				{"/services/orders/config/rollback/2", `"2"`, http.StatusPreconditionFailed, ""},
				{"/services/orders/config/rollback/42", `"3"`, http.StatusNotFound, ""},
				{"/services/nosuch/config/rollback/1", `*`, http.StatusNotFound, ""},
				{"/services/orders/config/rollback/2", `*`, http.StatusOK, `"4"`},
			} {
				rec := serve(h, "POST", tt.path, "", "If-Match", tt.ifMatch)
				if rec.Code != tt.status || rec.Header().Get("ETag") != tt.etag || !json.Valid(rec.Body.Bytes()) {
					t.Errorf("POST %s with If-Match %s = %d, ETag %q %s; want %d, ETag %q", tt.path, tt.ifMatch, rec.Code,
						rec.Header().Get("ETag"), rec.Body, tt.status, tt.etag)
				}
			}
			if cfg, rev, err := r.Config(ctx, "orders"); err != nil || rev != 4 || string(cfg) != `{"workers":2}` {
				t.Fatalf("config after the rollbacks = %s rev %d, %v; want revision 2's document as 4", cfg, rev, err)
			}
		})
	}
}
