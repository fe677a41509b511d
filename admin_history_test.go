package discovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// jsonHistory is what GET /services/{name}/config/history answers.
type jsonHistory struct {
	Service  string `json:"service"`
	Versions []struct {
		ConfigRevision int64           `json:"config_revision"`
		Config         json.RawMessage `json:"config"`
		CreatedAt      time.Time       `json:"created_at"`
	} `json:"versions"`
}

// GET /services/{name}/config/history lists the kept versions of a
// service's configuration, newest first, with the ETag of the newest: the
// If-Match a rollback to one of them takes. A service without a
// configuration has none (ETag "0"); an unknown service is a 404, a bad
// name a 400.
func TestAdminConfigHistory(t *testing.T) {
	ctx := context.Background()
	r, _ := adminWorld(t)
	for _, doc := range []string{`{"workers":2}`, `{"workers":3}`} { // revisions 2 and 3
		if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(doc)); err != nil {
			t.Fatal(err)
		}
	}
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	get := func(path string) (int, string, jsonHistory, string) {
		t.Helper()
		rec := serve(h, "GET", path, "")
		var out jsonHistory
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("GET %s: %v in %s", path, err, rec.Body)
			}
		}
		return rec.Code, rec.Header().Get("ETag"), out, rec.Body.String()
	}

	code, etag, hist, body := get("/services/orders/config/history")
	if code != http.StatusOK || etag != `"3"` || hist.Service != "orders" || len(hist.Versions) != 3 {
		t.Fatalf("GET orders' history = %d, ETag %q %s; want 200, ETag \"3\", 3 versions", code, etag, body)
	}
	want := []string{`{"workers":3}`, `{"workers":2}`, `{"workers":8,"balancer":{"strategy":"round_robin"}}`}
	for i, v := range hist.Versions {
		if v.ConfigRevision != int64(3-i) || compact(v.Config) != want[i] || v.CreatedAt.IsZero() {
			t.Errorf("version %d = revision %d %s at %v; want revision %d %s with its time", i, v.ConfigRevision, v.Config, v.CreatedAt, 3-i, want[i])
		}
	}
	// The newest's ETag is what a rollback's If-Match takes.
	if rec := serve(h, "POST", "/services/orders/config/rollback/1", "", "If-Match", etag); rec.Code != http.StatusOK {
		t.Fatalf("rollback to 1 with the history's ETag %s = %d %s; want 200", etag, rec.Code, rec.Body)
	}
	if code, etag, hist, body := get("/services/orders/config/history"); code != http.StatusOK || etag != `"4"` || len(hist.Versions) != 4 ||
		hist.Versions[0].ConfigRevision != 4 || compact(hist.Versions[0].Config) != want[2] {
		t.Fatalf("history after the rollback = %d, ETag %q %s; want revision 4 first, revision 1's document", code, etag, body)
	}

	if code, etag, hist, body := get("/services/inventory/config/history"); code != http.StatusOK || etag != `"0"` || hist.Service != "inventory" ||
		hist.Versions == nil || len(hist.Versions) != 0 {
		t.Errorf("GET the history of a service without a configuration = %d, ETag %q %s; want 200, ETag \"0\", versions []", code, etag, body)
	}
	for path, status := range map[string]int{
		"/services/nosuch/config/history":     http.StatusNotFound,
		"/services/Bad%20Name/config/history": http.StatusBadRequest,
	} {
		rec := serve(h, "GET", path, "")
		var e struct{ Error string }
		if rec.Code != status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.HasPrefix(e.Error, "discovery: ") {
			t.Errorf("GET %s = %d %s; want %d with a JSON error", path, rec.Code, rec.Body, status)
		}
	}
	if rec := serve(h, "DELETE", "/services/orders/config/history", ""); rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Header().Get("Allow"), "GET") {
		t.Errorf("DELETE of the history = %d, Allow %q; want 405 allowing GET", rec.Code, rec.Header().Get("Allow"))
	}
}

// compact is doc without the indentation the handler's answers have.
func compact(doc json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		return string(doc)
	}
	return b.String()
}

// The history endpoint on the SQL stores: PostgreSQL's and SQLite's
// history, newest first, and WithConfigHistory's bound on what is kept.
func TestAdminConfigHistoryOnSQL(t *testing.T) {
	ctx := context.Background()
	for name, open := range map[string]func(t testing.TB, prefix string) *gorm.DB{"sqlite": sqlite, "postgres": testutil.Postgres} {
		t.Run(name, func(t *testing.T) {
			ns := strings.TrimSuffix(testutil.Prefix(t), "_")
			r, err := discovery.New(discovery.WithDB(open(t, ns+"_")), discovery.WithNamespace(ns), discovery.WithoutHealthChecks(),
				discovery.WithCloseDrain(0), discovery.WithConfigHistory(3))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			for i := 1; i <= 5; i++ {
				if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(`{"workers":`+string(rune('0'+i))+`}`)); err != nil {
					t.Fatal(err)
				}
			}
			h := r.AdminHandler()
			rec := serve(h, "GET", "/services/orders/config/history", "")
			var hist jsonHistory
			if rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"5"` || json.Unmarshal(rec.Body.Bytes(), &hist) != nil {
				t.Fatalf("GET the history = %d, ETag %q %s; want 200, ETag \"5\"", rec.Code, rec.Header().Get("ETag"), rec.Body)
			}
			var got []int64
			for _, v := range hist.Versions {
				got = append(got, v.ConfigRevision)
			}
			if len(got) != 3 || got[0] != 5 || got[1] != 4 || got[2] != 3 || compact(hist.Versions[0].Config) != `{"workers":5}` {
				t.Errorf("history = revisions %v %s; want [5 4 3] (WithConfigHistory(3)), newest first", got, rec.Body)
			}
			if rec := serve(h, "GET", "/services/nosuch/config/history", ""); rec.Code != http.StatusNotFound {
				t.Errorf("GET the history of an unknown service = %d %s; want 404", rec.Code, rec.Body)
			}
		})
	}
}
