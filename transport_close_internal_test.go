package discovery

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/rssbot/discovery/internal/store/memory"
)

// openConns counts the HTTP client connections open in the process.
func openConns() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "net/http.(*persistConn).readLoop(")
}

// A request that the Transport picked an instance for before Close and
// sends after it is refused with ErrClosed: sent, it dialed after Close had
// closed the idle connections, and its connection stayed open and idle,
// with its two goroutines, for 90 s after Close returned.
func TestTransportSendsNothingAfterClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	p, _ := strconv.Atoi(port)
	r, err := New(WithStore(memory.New()), WithoutHealthChecks(), WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Register(ctx, Instance{Service: "web", Host: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	tr := r.Transport().(*transport)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web/", nil)
	sel, err := r.Pick(ctx, "web") // as RoundTrip does, before Close
	if err != nil {
		t.Fatal(err)
	}
	before := openConns()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	resp, _, err := tr.send(req, sel, false, nil)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("a request sent after Close = %v; want ErrClosed", err)
	}
	if n := openConns() - before; n > 0 {
		t.Errorf("%d connections of the Registry's transport open after Close", n)
	}
	if n := InFlight(r, "web", sel.Instance.ID); n != 0 {
		t.Errorf("in flight %d; want 0", n)
	}
}
