package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/auth"
	"github.com/rssbot/discovery/discoverytest"
)

func cfgDoc(n int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)) }

// A configuration written by one Registry is read by another with its
// revision; the history keeps the last 20; a rollback restores an old one as
// a new revision, and one beyond the history is not found.
func TestConfigUpdateReadHistoryRollback(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.registry(t), w.registry(t)
		if _, _, err := b.Config(ctx, "db_svc"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("Config of an unknown service = %v; want ErrNotFound", err)
		}
		mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
		if cfg, rev, err := a.Config(ctx, "db_svc"); err != nil || cfg != nil || rev != 0 {
			t.Fatalf("Config without one = %s, %d, %v; want nil, 0, nil", cfg, rev, err)
		}
		var last discovery.ConfigReport
		for i := 1; i <= 25; i++ {
			rep, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(i))
			if err != nil {
				t.Fatal(err)
			}
			if rep.ConfigRevision != int64(i) || rep.Revision != int64(i+1) || rep.Service != "db_svc" {
				t.Fatalf("update %d: report %+v", i, rep)
			}
			last = rep
		}
		waitFor(t, 2*time.Second, "b reading the last configuration", func() bool {
			cfg, rev, err := b.Config(ctx, "db_svc")
			return err == nil && string(cfg) == `{"n":25}` && rev == 25
		})
		hist, err := b.ConfigHistory(ctx, "db_svc")
		if err != nil || len(hist) != discovery.DefaultConfigHistory || hist[0].Revision != 25 || hist[19].Revision != 6 ||
			string(hist[19].Config) != `{"n":6}` {
			t.Fatalf("ConfigHistory = %d versions (%v); want 25..6", len(hist), err)
		}
		rep, err := b.RollbackConfig(ctx, "db_svc", 10)
		if err != nil || rep.ConfigRevision != 26 || rep.Revision != last.Revision+1 {
			t.Fatalf("RollbackConfig(10) = %+v, %v; want config revision 26", rep, err)
		}
		if cfg, rev, err := b.Config(ctx, "db_svc"); err != nil || string(cfg) != `{"n":10}` || rev != 26 {
			t.Fatalf("after the rollback Config = %s, %d, %v", cfg, rev, err)
		}
		if _, err := b.RollbackConfig(ctx, "db_svc", 5); !errors.Is(err, discovery.ErrNotFound) ||
			!strings.HasPrefix(err.Error(), "discovery: config revision 5") {
			t.Fatalf("RollbackConfig(5), beyond the history = %v; want ErrNotFound", err)
		}
		if _, err := b.ConfigHistory(ctx, "other"); !errors.Is(err, discovery.ErrNotFound) {
			t.Fatalf("ConfigHistory of a service without one = %v; want ErrNotFound", err)
		}
	})
}

var errTooManyWorkers = errors.New("workers must be at most 64")

// Refused configurations, whatever refuses them, leave the stored
// configuration, its revision and the history as they were.
func TestConfigValidationStoresNothing(t *testing.T) {
	deep := func(n int) string { return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + "}" }
	big := `{"a":"` + strings.Repeat("x", discovery.MaxConfigBytes) + `"}`
	tests := []struct {
		name   string
		doc    string
		reason string
	}{
		{"empty", ``, "empty"},
		{"blank", " \n", "empty"},
		{"syntax", `{"a":}`, "malformed JSON"},
		{"trailing", `{"a":1} x`, "malformed JSON"},
		{"unterminated", `{"a":"`, "malformed JSON"},
		{"array", `[1,2]`, "must be a JSON object"},
		{"null", `null`, "must be a JSON object"},
		{"string", `"x"`, "must be a JSON object"},
		{"too large", big, "larger than 512 KiB"},
		{"too deep", deep(65), "nested deeper than 64 levels"},
		{"very deep", strings.Repeat("[", 100000), "must be a JSON object"},
		{"very deep object", `{"a":` + strings.Repeat("[", 100000), "nested deeper than 64 levels"},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", "not valid UTF-8"},
		{"validator", `{"workers":65}`, "refused by its validator"},
	}
	validator := func(doc json.RawMessage) error {
		var c struct{ Workers int }
		if err := json.Unmarshal(doc, &c); err != nil {
			return err
		}
		if c.Workers > 64 {
			return errTooManyWorkers
		}
		return nil
	}
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		r := w.registry(t, discovery.WithConfigValidator("db_svc", validator))
		if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"workers":8}`)); err != nil {
			t.Fatal(err)
		}
		before, _ := r.Store().Load(ctx, "db_svc")
		for _, tt := range tests {
			_, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(tt.doc))
			var ce *discovery.ConfigError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ce) || ce.Service != "db_svc" ||
				!strings.Contains(err.Error(), tt.reason) || !strings.HasPrefix(err.Error(), "discovery: invalid config") {
				t.Errorf("%s: UpdateConfig = %v; want a ConfigError (%q) matching ErrInvalid", tt.name, err, tt.reason)
			}
		}
		if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"workers":65}`)); !errors.Is(err, errTooManyWorkers) {
			t.Errorf("the validator's error is not wrapped: %v", err)
		}
		after, err := r.Store().Load(ctx, "db_svc")
		if err != nil || after.Revision != before.Revision || after.ConfigRevision != 1 || string(after.Config) != `{"workers":8}` {
			t.Fatalf("after refused configurations the store has revision %d (was %d), config %s rev %d, %v",
				after.Revision, before.Revision, after.Config, after.ConfigRevision, err)
		}
		if cfg, rev, err := r.Config(ctx, "db_svc"); err != nil || string(cfg) != `{"workers":8}` || rev != 1 {
			t.Fatalf("Config = %s, %d, %v", cfg, rev, err)
		}
		if hist, err := r.ConfigHistory(ctx, "db_svc"); err != nil || len(hist) != 1 {
			t.Fatalf("history = %d versions, %v; want 1", len(hist), err)
		}
		// The limits themselves are accepted, and other services are not
		// subject to db_svc's validator.
		if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(deep(64))); err != nil {
			t.Errorf("a document nested 64 deep: %v", err)
		}
		exact := `{"a":"` + strings.Repeat("x", discovery.MaxConfigBytes-8) + `"}`
		if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(exact)); err != nil || len(exact) != discovery.MaxConfigBytes {
			t.Errorf("a document of exactly 512 KiB: %v", err)
		}
		if _, err := r.UpdateConfig(ctx, "other", json.RawMessage(`{"workers":65}`)); err != nil {
			t.Errorf("another service: %v", err)
		}
	})
}

// configlessStore hides the ConfigStore capability of a backend.
type configlessStore struct{ discovery.Store }

func TestConfigNeedsConfigStore(t *testing.T) {
	ctx := context.Background()
	r, err := discovery.New(discovery.WithStore(configlessStore{discoverytest.NewBackend()}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.UpdateConfig(ctx, "db_svc", cfgDoc(1)); !errors.Is(err, discovery.ErrUnsupported) {
		t.Fatalf("UpdateConfig = %v; want ErrUnsupported", err)
	}
	if _, err := r.ConfigHistory(ctx, "db_svc"); !errors.Is(err, discovery.ErrUnsupported) {
		t.Fatalf("ConfigHistory = %v; want ErrUnsupported", err)
	}
	if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`[`)); !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("a malformed document is refused first: %v", err)
	}
}

func TestConfigOptionsAreValidated(t *testing.T) {
	tests := []struct {
		opt  discovery.Option
		name string
	}{
		{discovery.WithConfigValidator("a/b", func(json.RawMessage) error { return nil }), "WithConfigValidator"},
		{discovery.WithConfigValidator("db_svc", nil), "WithConfigValidator"},
		{discovery.WithConfigHistory(0), "WithConfigHistory"},
		{discovery.WithConfigNotifyTimeout(0), "WithConfigNotifyTimeout"},
		{discovery.WithConfigNotifyRetries(0, time.Second), "WithConfigNotifyRetries"},
		{discovery.WithConfigNotifyRetries(3, -time.Second), "WithConfigNotifyRetries"},
		{discovery.WithPropagationDelay(-time.Second), "WithPropagationDelay"},
		{discovery.WithCloseDrain(-time.Second), "WithCloseDrain"},
	}
	for _, tt := range tests {
		r, err := discovery.New(tt.opt)
		if !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), tt.name) {
			t.Errorf("New(%s) = %v; want ErrInvalid naming the option", tt.name, err)
		}
		if r != nil {
			r.Close()
		}
	}
}

// received is what an HTTP instance was sent.
type received struct {
	mu      sync.Mutex
	bodies  []string
	auth    []string
	revs    []string
	methods []string
	paths   []string
}

func (rc *received) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.bodies = append(rc.bodies, string(body))
	rc.auth = append(rc.auth, r.Header.Get("Authorization"))
	rc.revs = append(rc.revs, r.Header.Get("X-Discovery-Config-Revision"))
	rc.methods = append(rc.methods, r.Method)
	rc.paths = append(rc.paths, r.URL.Path)
}

func (rc *received) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.bodies)
}

// httpInstance starts a server standing for an HTTP instance and returns
// its registration and what it received.
func httpInstance(t *testing.T, r *discovery.Registry, id string, h func(n int, w http.ResponseWriter, req *http.Request)) *received {
	t.Helper()
	rc := &received{}
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rc.record(req)
		h(int(calls.Add(1)), w, req)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	if _, err := r.Register(context.Background(), discovery.Instance{ID: id, Service: "api", Host: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	return rc
}

type fakeTokens struct{ fail error }

func (f fakeTokens) Token(_ context.Context, audience string) (string, error) {
	if f.fail != nil {
		return "", f.fail
	}
	return "tok-for-" + audience, nil
}

// Every kind of instance gets the treatment UpdateConfig documents, and the
// report says what happened to each.
func TestConfigNotifiesInstances(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	// timeout is each attempt's: long enough that no slow machine makes
	// the instances that answer miss it. The silent one answers after
	// silentFor at the earliest, far beyond three attempts.
	// Health checks are off: their GET /health, due at a random moment
	// within the first interval, would be counted among what the instances
	// were sent.
	const timeout, silentFor = time.Second, 30 * time.Second
	r := discoverytest.NewRegistry(t, backend, discovery.WithTokenSource(fakeTokens{}), discovery.WithoutHealthChecks(),
		discovery.WithConfigNotifyTimeout(timeout), discovery.WithConfigNotifyRetries(3, 10*time.Millisecond))
	// another process, whose Drain holds its instance draining until the
	// test cancels it
	other := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithPropagationDelay(time.Hour))

	ok := func(int, http.ResponseWriter, *http.Request) {}
	okA := httpInstance(t, r, "a-ok", ok)
	okB := httpInstance(t, r, "b-ok", ok)
	flaky := httpInstance(t, r, "c-flaky", func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	silent := httpInstance(t, r, "d-silent", func(_ int, _ http.ResponseWriter, req *http.Request) {
		select { // does not answer: the client gives up at its timeout
		case <-req.Context().Done():
		case <-release:
		case <-time.After(silentFor):
		}
	})
	refused := httpInstance(t, r, "e-refuses", func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
	})
	target := &received{}
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { target.record(req) }))
	t.Cleanup(elsewhere.Close)
	redirects := httpInstance(t, r, "f-redirects", func(_ int, w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, elsewhere.URL+"/admin/reload-config", http.StatusTemporaryRedirect)
	})
	draining := httpInstance(t, other, "g-draining", ok)
	drainReg, err := other.Register(ctx, discovery.Instance{ID: "g-draining", Service: "api", Host: "127.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	drainCtx, cancelDrain := context.WithCancel(ctx)
	drained := make(chan error, 1)
	go func() { drained <- drainReg.Drain(drainCtx) }()
	waitFor(t, 2*time.Second, "the draining mark", func() bool {
		svc, err := r.Store().Load(ctx, "api")
		return err == nil && svc.Instance("g-draining") != nil && svc.Instance("g-draining").Status == discovery.StatusDraining
	})
	var calls []string
	var callMu sync.Mutex
	if _, err := r.Register(ctx, discovery.Instance{ID: "h-router", Service: "api", Host: "127.0.0.1", Port: 2, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(func(_ context.Context, cfg json.RawMessage) error {
			callMu.Lock()
			calls = append(calls, string(cfg))
			callMu.Unlock()
			return nil
		})); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Register(ctx, discovery.Instance{ID: "i-router-elsewhere", Service: "api", Host: "127.0.0.1", Port: 3, Method: discovery.MethodRouter}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(ctx, discovery.Instance{ID: "j-router-no-func", Service: "api", Host: "127.0.0.1", Port: 4, Method: discovery.MethodRouter}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	rep, err := r.UpdateConfig(ctx, "api", json.RawMessage(`{"level":"debug"}`))
	took := time.Since(start)
	cancelDrain()
	<-drained
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id       string
		outcome  discovery.NotifyOutcome
		attempts int
		detail   string
	}{
		{"a-ok", discovery.NotifyDelivered, 1, ""},
		{"b-ok", discovery.NotifyDelivered, 1, ""},
		{"c-flaky", discovery.NotifyDelivered, 3, ""},
		{"d-silent", discovery.NotifyFailed, 3, "deadline exceeded"},
		{"e-refuses", discovery.NotifyFailed, 1, "400 Bad Request"},
		{"f-redirects", discovery.NotifyFailed, 1, "307 Temporary Redirect"},
		{"g-draining", discovery.NotifySkipped, 0, "draining"},
		{"h-router", discovery.NotifyDelivered, 1, ""},
		{"i-router-elsewhere", discovery.NotifySkipped, 0, "another process"},
		{"j-router-no-func", discovery.NotifySkipped, 0, "without WithConfigFunc"},
	}
	if len(rep.Instances) != len(want) {
		t.Fatalf("report has %d instances; want %d: %+v", len(rep.Instances), len(want), rep.Instances)
	}
	for i, wt := range want {
		got := rep.Instances[i]
		detail := got.Reason
		if got.Err != nil {
			detail = got.Err.Error()
		}
		if got.Instance.ID != wt.id || got.Outcome != wt.outcome || got.Attempts != wt.attempts || !strings.Contains(detail, wt.detail) {
			t.Errorf("instance %d: %s %v after %d attempts (%s); want %s %v after %d (%q)",
				i, got.Instance.ID, got.Outcome, got.Attempts, detail, wt.id, wt.outcome, wt.attempts, wt.detail)
		}
		if got.Err != nil && !strings.HasPrefix(got.Err.Error(), "discovery:") {
			t.Errorf("%s: error %q lacks the discovery: prefix", got.Instance.ID, got.Err)
		}
	}
	if rep.Count(discovery.NotifyDelivered) != 4 || rep.Count(discovery.NotifyFailed) != 3 || rep.Count(discovery.NotifySkipped) != 3 {
		t.Errorf("counts: %d delivered, %d failed, %d skipped", rep.Count(discovery.NotifyDelivered), rep.Count(discovery.NotifyFailed), rep.Count(discovery.NotifySkipped))
	}
	// The silent instance costs three timeouts and two short backoffs, and
	// not much more (5 s of slack for a loaded machine): an attempt that
	// outlived its timeout would have taken silentFor.
	if slack := 5 * time.Second; took < 3*timeout || took >= 3*timeout+slack {
		t.Errorf("UpdateConfig took %v; want 3 x %v, and less than %v more", took, timeout, slack)
	}
	for name, rc := range map[string]*received{"a-ok": okA, "b-ok": okB, "c-flaky": flaky, "d-silent": silent, "e-refuses": refused, "f-redirects": redirects} {
		rc.mu.Lock()
		for i := range rc.bodies {
			if rc.bodies[i] != `{"level":"debug"}` || rc.auth[i] != "Bearer tok-for-api" || rc.revs[i] != "1" ||
				rc.methods[i] != http.MethodPost || rc.paths[i] != "/admin/reload-config" {
				t.Errorf("%s request %d: %s %s body %q auth %q revision %q", name, i, rc.methods[i], rc.paths[i], rc.bodies[i], rc.auth[i], rc.revs[i])
			}
		}
		rc.mu.Unlock()
	}
	if n := draining.count(); n != 0 {
		t.Errorf("the draining instance was sent %d notifications", n)
	}
	if n := target.count(); n != 0 {
		t.Errorf("a redirect was followed %d times", n)
	}
	callMu.Lock()
	defer callMu.Unlock()
	if len(calls) != 1 || calls[0] != `{"level":"debug"}` {
		t.Errorf("router callback calls = %q; want one", calls)
	}
}

// With a TokenSource that fails, no notification goes out unsigned.
func TestConfigNotificationNeverUnsigned(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithTokenSource(fakeTokens{fail: errors.New("no key")}))
	rc := httpInstance(t, r, "a", func(int, http.ResponseWriter, *http.Request) {})
	rep, err := r.UpdateConfig(context.Background(), "api", cfgDoc(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyFailed || !strings.Contains(rep.Instances[0].Err.Error(), "no key") {
		t.Fatalf("report = %+v; want failed for the token", rep.Instances)
	}
	if rc.count() != 0 {
		t.Fatalf("the instance got %d unsigned notifications", rc.count())
	}
}

// Options that only a router instance uses are refused where they would be
// ignored, by Register and by Update, and nothing is written.
func TestRouterOnlyOptionsRefusedElsewhere(t *testing.T) {
	ctx := context.Background()
	cfgFn := discovery.WithConfigFunc(func(context.Context, json.RawMessage) error { return nil })
	checkFn := discovery.WithCheckFunc(func(context.Context) error { return nil })
	handler := discovery.WithHandler(http.NotFoundHandler())
	router := func(check discovery.CheckKind) discovery.Instance {
		return discovery.Instance{Service: "api", Host: "10.0.0.1", Port: 1, Method: discovery.MethodRouter, Check: check}
	}
	tests := []struct {
		name  string
		in    discovery.Instance
		opt   discovery.RegisterOption
		field string
	}{
		{"http with config func", inst("api", "10.0.0.1", 1), cfgFn, "config func"},
		{"http with handler", inst("api", "10.0.0.1", 1), handler, "handler"},
		{"http with check func", inst("api", "10.0.0.1", 1), checkFn, "check func"},
		{"router checked by http with check func", router(discovery.CheckHTTP), checkFn, "check func"},
		{"router checked by tcp with check func", router(discovery.CheckTCP), checkFn, "check func"},
		{"router unchecked with check func", router(discovery.CheckNone), checkFn, "check func"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := discoverytest.NewRegistry(t, discoverytest.NewBackend())
			_, err := r.Register(ctx, tt.in, tt.opt)
			var ve *discovery.ValidationError
			if !errors.Is(err, discovery.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field {
				t.Fatalf("Register = %v; want a ValidationError on %s", err, tt.field)
			}
			if infos, _ := r.Services(ctx); len(infos) != 0 {
				t.Fatalf("the refused registration wrote: %+v", infos)
			}
		})
	}
	t.Run("router with all three", func(t *testing.T) {
		r := discoverytest.NewRegistry(t, discoverytest.NewBackend())
		g, err := r.Register(ctx, router(discovery.CheckDefault), cfgFn, checkFn, handler)
		if err != nil {
			t.Fatal(err)
		}
		// An Update that would make the options ignored is refused too.
		err = g.Update(ctx, func(in *discovery.Instance) { in.Check = discovery.CheckTCP })
		if !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("Update(Check = tcp) = %v; want ErrInvalid", err)
		}
		if got := g.Instance().Check; got != discovery.CheckDefault {
			t.Fatalf("the refused Update changed Check to %v", got)
		}
	})
}

// callbackLog records a router instance's configuration callbacks.
type callbackLog struct {
	mu    sync.Mutex
	revs  []int
	fail  bool
	calls atomic.Int64
}

func (l *callbackLog) fn(_ context.Context, cfg json.RawMessage) error {
	var c struct{ N int }
	if err := json.Unmarshal(cfg, &c); err != nil {
		return err
	}
	l.mu.Lock()
	l.revs = append(l.revs, c.N)
	l.mu.Unlock()
	l.calls.Add(1)
	if l.fail {
		return errors.New("cannot apply")
	}
	return nil
}

func (l *callbackLog) seen() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.revs...)
}

// A router instance's callback is called by its own process once per
// configuration revision it learns of, in order, whether the change was made
// by that process or another; an instance registering later starts with
// the current configuration.
func TestConfigCallbackOncePerRevision(t *testing.T) {
	for _, k := range fanOutWorlds() {
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, k)
			a, b := w.registry(t), w.registry(t)
			if _, err := a.UpdateConfig(ctx, "router_svc", cfgDoc(1)); err != nil {
				t.Fatal(err)
			}
			var cb callbackLog
			g, err := b.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
				discovery.WithConfigFunc(cb.fn))
			if err != nil {
				t.Fatal(err)
			}
			if cfg, rev := g.Config(); string(cfg) != `{"n":1}` || rev != 1 {
				t.Fatalf("Registration.Config = %s, %d; want the current one", cfg, rev)
			}
			for i := 2; i <= 6; i++ {
				writer := a
				if i%2 == 0 {
					writer = b // the registering process itself
				}
				rep, err := writer.UpdateConfig(ctx, "router_svc", cfgDoc(i))
				if err != nil {
					t.Fatal(err)
				}
				wantOutcome := discovery.NotifySkipped // a router instance of another process
				if writer == b {
					wantOutcome = discovery.NotifyDelivered
				}
				if len(rep.Instances) != 1 || rep.Instances[0].Outcome != wantOutcome {
					t.Fatalf("update %d by %s: report %+v", i, map[bool]string{true: "b", false: "a"}[writer == b], rep.Instances)
				}
				waitFor(t, 2*time.Second, "the callback", func() bool { _, rev := g.Config(); return rev == int64(i) })
			}
			time.Sleep(50 * time.Millisecond) // room for a duplicate to show up
			if got := fmt.Sprint(cb.seen()); got != "[2 3 4 5 6]" {
				t.Fatalf("callback saw %s; want [2 3 4 5 6], each once, in order", got)
			}
			late, err := a.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 2, Method: discovery.MethodRouter})
			if err != nil {
				t.Fatal(err)
			}
			if cfg, rev := late.Config(); string(cfg) != `{"n":6}` || rev != 6 {
				t.Fatalf("a later registration starts with %s, %d; want the current configuration", cfg, rev)
			}
		})
	}
}

// A callback's error is reported to the UpdateConfig caller of its process,
// and not retried.
func TestConfigCallbackErrorReported(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend())
	cb := &callbackLog{fail: true}
	if _, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(cb.fn)); err != nil {
		t.Fatal(err)
	}
	rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyFailed || rep.Instances[0].Err == nil ||
		rep.Instances[0].Err.Error() != "cannot apply" {
		t.Fatalf("report = %+v; want the callback's error", rep.Instances)
	}
	time.Sleep(50 * time.Millisecond)
	if n := cb.calls.Load(); n != 1 {
		t.Fatalf("callback called %d times; want 1", n)
	}
}

// A callback that ignores its context holds UpdateConfig no longer than the
// notification timeout, as an HTTP instance that does not answer does: the
// instance is reported failed, and the callback, once it returns, is given
// the configurations that follow. UpdateConfig waited for it for good.
func TestConfigCallbackPastItsTimeoutDoesNotHoldUpdateConfig(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithConfigNotifyTimeout(50*time.Millisecond))
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the Registry's Close, which waits for the callback
	var cb callbackLog
	var calls atomic.Int64
	fn := func(ctx context.Context, cfg json.RawMessage) error {
		if calls.Add(1) == 1 {
			<-release // stuck, deaf to ctx
		}
		return cb.fn(ctx, cfg)
	}
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(fn))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		rep discovery.ConfigReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1))
		done <- result{rep, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("UpdateConfig still waits for a callback 5 s after its 50 ms notification timeout")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if is := res.rep.Instances; len(is) != 1 || is[0].Outcome != discovery.NotifyFailed || !errors.Is(is[0].Err, context.DeadlineExceeded) {
		t.Fatalf("report = %+v; want the instance failed with context.DeadlineExceeded", is)
	}
	release <- struct{}{} // the stuck call returns, and is recorded
	waitFor(t, 2*time.Second, "the end of the stuck call", func() bool { _, rev := g.Config(); return rev == 1 })
	rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(2))
	if err != nil {
		t.Fatal(err)
	}
	if is := rep.Instances; len(is) != 1 || is[0].Outcome != discovery.NotifyDelivered {
		t.Fatalf("report after the callback returned = %+v; want delivered", is)
	}
	if got := fmt.Sprint(cb.seen()); got != "[1 2]" {
		t.Fatalf("callback saw %s; want [1 2]", got)
	}
}

// Router instances registering while this process updates the
// configuration are either notified or start with it, never left waiting.
func TestConfigUpdateRacesRegistration(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithCloseDrain(0))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var regs sync.Map
	for i := range 4 {
		wg.Go(func() {
			for port := 1 + i*1000; ; port++ {
				select {
				case <-stop:
					return
				default:
				}
				cb := &callbackLog{}
				g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: port, Method: discovery.MethodRouter},
					discovery.WithConfigFunc(cb.fn))
				if err != nil {
					t.Error(err)
					return
				}
				regs.Store(g, cb)
			}
		})
	}
	for i := 1; i <= 30; i++ {
		uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		rep, err := r.UpdateConfig(uctx, "router_svc", cfgDoc(i))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, res := range rep.Instances {
			if res.Outcome == discovery.NotifyFailed {
				t.Errorf("update %d: %s failed: %v", i, res.Instance.ID, res.Err)
			}
		}
	}
	close(stop)
	wg.Wait()
	regs.Range(func(k, _ any) bool {
		g := k.(*discovery.Registration)
		waitFor(t, 2*time.Second, "every registration at the last configuration", func() bool { _, rev := g.Config(); return rev == 30 })
		return true
	})
}

// holdLoadStore lets a test hold one chosen Load call.
type holdLoadStore struct {
	*discoverytest.Backend
	mu      sync.Mutex
	holdNth int64 // the Load call (1-based, counted after arm) to hold; 0: none
	n       int64
	held    chan struct{} // closed when the held Load is waiting
	release chan struct{}
	loads   atomic.Int64
}

func (s *holdLoadStore) arm(nth int64) {
	s.mu.Lock()
	s.holdNth, s.n = nth, 0
	s.held, s.release = make(chan struct{}), make(chan struct{})
	s.mu.Unlock()
}

func (s *holdLoadStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.mu.Lock()
	var held, release chan struct{}
	if s.holdNth > 0 {
		s.n++
		if s.n == s.holdNth {
			held, release = s.held, s.release
		}
	}
	s.mu.Unlock()
	if held != nil {
		close(held)
		<-release
	}
	defer s.loads.Add(1)
	return s.Backend.Load(ctx, name)
}

// A router instance's registration races two configuration changes: this
// process's UpdateConfig offers rev 2 to the new registration before
// Register has read the configuration current at registration, and by
// then another process has written rev 3. The callback never goes back to
// rev 2 after it, and Registration.Config holds rev 3 (it went back to 2
// and stayed there).
func TestConfigCallbackNeverGoesBackToAnOlderRevision(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	gs := &holdLoadStore{Backend: backend}
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(gs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	other := discoverytest.NewRegistry(t, backend, discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if _, err := other.UpdateConfig(ctx, "router_svc", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}

	var cb callbackLog
	gs.arm(1) // the first Load from here on: Register's read of the current configuration
	type regRes struct {
		g   *discovery.Registration
		err error
	}
	regDone := make(chan regRes, 1)
	go func() {
		g, err := r.Register(ctx, discovery.Instance{ID: "rt", Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
			discovery.WithConfigFunc(cb.fn))
		regDone <- regRes{g, err}
	}()
	<-gs.held // the registration is written and visible to UpdateConfig; its config read is held

	// This process changes the configuration: it finds its own router
	// registration and offers it rev 2.
	before := gs.loads.Load()
	upd := make(chan discovery.ConfigReport, 1)
	go func() {
		uctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		rep, err := r.UpdateConfig(uctx, "router_svc", cfgDoc(2))
		if err != nil {
			t.Error(err)
		}
		upd <- rep
	}()
	waitFor(t, 2*time.Second, "UpdateConfig listing the instances", func() bool { return gs.loads.Load() > before })
	time.Sleep(20 * time.Millisecond) // offerConfig follows at once
	// Another process writes rev 3 before the registration reads its config.
	if _, err := other.UpdateConfig(ctx, "router_svc", cfgDoc(3)); err != nil {
		t.Fatal(err)
	}
	close(gs.release)
	rr := <-regDone
	if rr.err != nil {
		t.Fatal(rr.err)
	}
	<-upd
	// Deliveries are in-process but asynchronous: wait (generously) for the
	// current configuration, then leave room for a late, older one to
	// show up, which the checks below would catch.
	waitFor(t, 10*time.Second, "the registration at configuration 3", func() bool {
		_, rev := rr.g.Config()
		seen := cb.seen()
		return rev == 3 && (len(seen) == 0 || seen[len(seen)-1] == 3)
	})
	time.Sleep(300 * time.Millisecond)
	cfg, rev := rr.g.Config()
	seen := cb.seen()
	if rev != 3 || string(cfg) != `{"n":3}` {
		t.Errorf("Registration.Config = %s, rev %d; want the current configuration, rev 3", cfg, rev)
	}
	if len(seen) > 0 && seen[len(seen)-1] != 3 {
		t.Errorf("the last callback carried %d; want the current configuration 3 (calls %v)", seen[len(seen)-1], fmt.Sprint(seen))
	}
}

// failOnceStore fails the Nth Load (after arm) with a database error.
type failOnceStore struct {
	*discoverytest.Backend
	mu  sync.Mutex
	nth int
}

func (s *failOnceStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	s.mu.Lock()
	fail := false
	if s.nth > 0 {
		s.nth--
		fail = s.nth == 0
	}
	s.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("%w: transient", discovery.ErrUnavailable)
	}
	return s.Backend.Load(ctx, name)
}

// A failed read of the configuration at Register is made again later:
// Registration.Config holds the service's configuration (it stayed empty
// for good).
func TestRegistrationConfigIsReadAgainAfterAFailedRead(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	fs := &failOnceStore{Backend: backend}
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(fs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if _, err := r.UpdateConfig(ctx, "svc", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.nth = 1
	fs.mu.Unlock()
	g, err := r.Register(ctx, discovery.Instance{Service: "svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, rev := g.Config(); rev != 0 {
		t.Fatalf("Registration.Config = %s, %d at once; the read was to fail", cfg, rev)
	}
	waitFor(t, 5*time.Second, "the configuration read again", func() bool {
		cfg, rev := g.Config()
		return rev == 1 && string(cfg) == `{"n":1}`
	})
}

// A router instance whose Register could not read the configuration
// (Registration.Config empty) is given it by its callback once this process
// reads it, once, before the revisions that follow, as WithConfigFunc now
// says: its doc said the configuration current at registration never
// reaches the callback, which it does whenever that read fails.
func TestConfigCallbackGivenTheConfigRegisterCouldNotRead(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	fs := &failOnceStore{Backend: backend}
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(fs), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if _, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.nth = 1 // Register's read of the configuration
	fs.mu.Unlock()
	var cb callbackLog
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(cb.fn))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the callback given the configuration Register could not read", func() bool { return cb.calls.Load() > 0 })
	rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(2))
	if err != nil {
		t.Fatal(err)
	}
	if is := rep.Instances; len(is) != 1 || is[0].Outcome != discovery.NotifyDelivered {
		t.Fatalf("report = %+v; want delivered", is)
	}
	if got := fmt.Sprint(cb.seen()); got != "[1 2]" {
		t.Fatalf("callback saw %s; want [1 2]: the configuration Register could not read, once, then the new one", got)
	}
	if cfg, rev := g.Config(); rev != 2 || string(cfg) != `{"n":2}` {
		t.Fatalf("Registration.Config = %s, %d; want rev 2", cfg, rev)
	}
}

// ConfigReport.Instances are ordered by ID in byte order on every store: on
// PostgreSQL they came in the database's collation (on an ICU en-US
// database: _z a-1 a1 B-1).
func TestConfigReportOrderedByIDInByteOrder(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		r := w.registry(t)
		for _, id := range []string{"a-1", "B-1", "a1", "_z"} {
			if _, err := r.Register(ctx, discovery.Instance{ID: id, Service: "ord", Host: "10.0.0.1", Port: 1, Method: discovery.MethodRouter}); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := r.UpdateConfig(ctx, "ord", cfgDoc(1))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range rep.Instances {
			got = append(got, n.Instance.ID)
		}
		want := []string{"B-1", "_z", "a-1", "a1"} // byte order, as memory and SQLite
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("report order %v; want %v", got, want)
		}
	})
}

// A configuration notification signs each attempt with a token valid when
// it is sent. The token was taken once, before the first attempt, and every
// retry carried it however long the attempts before it took: once it had
// expired the instance's auth.Verifier answered 401, which is not retried,
// and the instance never got the configuration.
func TestConfigNotificationRetrySignsAgain(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	opts := []discovery.Option{discovery.WithClock(clock), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	r := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithConfigNotifyRetries(2, 0))...)
	inst := discoverytest.NewRegistry(t, backend, opts...) // the instance's process
	const policy = `{"auth":{"allow":{"ops":[{"path_prefix":"/admin/reload-config","methods":["POST"]}]}}`
	if _, _, err := backend.SetConfig(ctx, "api", []byte(policy+`}`), t0, 10); err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewSigner(ctx, r, "ops", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	r.SetTokenSource(signer)
	verifier, err := auth.NewVerifier(inst, "api", auth.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	codes := make(chan int, 4)
	signed := verifier.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			clock.Advance(2 * time.Minute) // a slow first attempt: longer than a token lives, leeway included
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := httptest.NewRecorder()
		signed.ServeHTTP(rec, req)
		codes <- rec.Code
		w.WriteHeader(rec.Code)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	addInstance(t, r, discovery.Instance{ID: "a", Service: "api", Host: host, Port: p, Weight: 100, RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})

	rep, err := r.UpdateConfig(ctx, "api", json.RawMessage(policy+`,"workers":2}`))
	if err != nil {
		t.Fatal(err)
	}
	close(codes)
	var got []int
	for c := range codes {
		got = append(got, c)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyDelivered || fmt.Sprint(got) != "[503 200]" {
		t.Fatalf("answers %v, report %+v; want 503 then 200, delivered at the second attempt", got, rep.Instances)
	}
}

// standbyInstance registers, in r, an HTTP instance of "api" served by a
// test server, on standby (Status StatusDraining), and returns its
// registration and the configuration notifications the server received.
func standbyInstance(t *testing.T, r *discovery.Registry, h func(n int, w http.ResponseWriter, req *http.Request)) (*discovery.Registration, *received) {
	t.Helper()
	rc := &received{}
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != discovery.ConfigReloadPath {
			return
		}
		rc.record(req)
		h(int(calls.Add(1)), w, req)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	g, err := r.Register(context.Background(), discovery.Instance{ID: "standby", Service: "api", Host: host, Port: p, Status: discovery.StatusDraining})
	if err != nil {
		t.Fatal(err)
	}
	return g, rc
}

// last returns the revision header and body of the last notification.
func (rc *received) last() (rev, body string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bodies) == 0 {
		return "", ""
	}
	return rc.revs[len(rc.revs)-1], rc.bodies[len(rc.bodies)-1]
}

// newerKept checks that the instance was left on revision 2 and that the
// older update (rep) was reported skipped, superseded by it.
func newerKept(t *testing.T, got *received, rep discovery.ConfigReport) {
	t.Helper()
	if rev, body := got.last(); rev != "2" || body != `{"n":2}` {
		got.mu.Lock()
		sent := fmt.Sprint(got.revs)
		got.mu.Unlock()
		t.Fatalf("the instance was sent revisions %s, the last %s %s; want the last to be 2", sent, rev, body)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifySkipped ||
		!strings.Contains(rep.Instances[0].Reason, "superseded by config revision 2") {
		t.Fatalf("report of the older update = %+v; want skipped, superseded by config revision 2", rep.Instances)
	}
}

func putInService(in *discovery.Instance) { in.Status = discovery.StatusUnknown }

func wantRegConfig(t *testing.T, g *discovery.Registration, want json.RawMessage, wantRev int64) {
	t.Helper()
	if doc, rev := g.Config(); string(doc) != string(want) || rev != wantRev {
		t.Errorf("Registration.Config() = %s, %d; want %s, %d", doc, rev, want, wantRev)
	}
}

// A standby HTTP instance is skipped by UpdateConfig (it is draining); the
// Update that puts it into service sends it the configuration stored while
// it waited, as UpdateConfig would have, and its Registration.Config moves
// to it. It went into service with the configuration it registered with,
// and nothing ever sent it the newer one.
func TestStandbyIsSentTheConfigWhenPutInService(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	opts := []discovery.Option{discovery.WithClock(discoverytest.NewClock(t0)), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	inst := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithTokenSource(fakeTokens{}))...) // the instance's process
	admin := discoverytest.NewRegistry(t, backend, opts...)
	if _, err := admin.UpdateConfig(ctx, "api", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	g, rc := standbyInstance(t, inst, func(int, http.ResponseWriter, *http.Request) {})
	wantRegConfig(t, g, cfgDoc(1), 1)

	rep, err := admin.UpdateConfig(ctx, "api", cfgDoc(2))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifySkipped || rep.Instances[0].Reason != "draining" {
		t.Fatalf("report = %+v; want the standby skipped as draining", rep.Instances)
	}
	if n := rc.count(); n != 0 {
		t.Fatalf("the standby was sent %d notifications", n)
	}

	if err := g.Update(ctx, putInService); err != nil {
		t.Fatal(err)
	}
	if n := rc.count(); n != 1 {
		t.Fatalf("put in service, the instance was sent %d notifications; want 1 (config revision 2)", n)
	}
	rc.mu.Lock()
	if rc.methods[0] != http.MethodPost || rc.bodies[0] != string(cfgDoc(2)) || rc.revs[0] != "2" || rc.auth[0] != "Bearer tok-for-api" {
		t.Errorf("notification: %s body %q revision %q auth %q; want POST %s, revision 2, Bearer tok-for-api",
			rc.methods[0], rc.bodies[0], rc.revs[0], rc.auth[0], cfgDoc(2))
	}
	rc.mu.Unlock()
	wantRegConfig(t, g, cfgDoc(2), 2)

	// In service, changes reach it by UpdateConfig; an Update that does not
	// take it out of draining sends nothing more.
	if _, err := admin.UpdateConfig(ctx, "api", cfgDoc(3)); err != nil {
		t.Fatal(err)
	}
	if err := g.SetWeight(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if n := rc.count(); n != 2 {
		t.Fatalf("after a config change in service and a SetWeight, %d notifications; want 2", n)
	}

	// Back on standby and out again with no change meanwhile: only what it
	// may have missed is sent (revision 3, which this process never sent).
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Status = discovery.StatusDraining }); err != nil {
		t.Fatal(err)
	}
	if err := g.Update(ctx, putInService); err != nil {
		t.Fatal(err)
	}
	if rev, body := rc.last(); rc.count() != 3 || rev != "3" || body != string(cfgDoc(3)) {
		t.Fatalf("%d notifications, the last revision %q %s; want 3, the last revision 3", rc.count(), rev, body)
	}
	wantRegConfig(t, g, cfgDoc(3), 3)
	if err := g.Update(ctx, func(in *discovery.Instance) { in.Status = discovery.StatusDraining }); err != nil {
		t.Fatal(err)
	}
	if err := g.Update(ctx, putInService); err != nil {
		t.Fatal(err)
	}
	if n := rc.count(); n != 3 {
		t.Errorf("put in service again with nothing new, the instance was sent %d notifications; want 3 in all", n)
	}
}

// When an instance put into service cannot be sent the configuration, the
// Update still succeeds (it is in service), Registration.Config stays where
// it was, and the next Update of the registration sends it again.
func TestStandbyConfigSentAgainAfterAFailure(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	opts := []discovery.Option{discovery.WithClock(discoverytest.NewClock(t0)), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	inst := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithConfigNotifyRetries(2, 0))...)
	admin := discoverytest.NewRegistry(t, backend, opts...)
	g, rc := standbyInstance(t, inst, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	if _, err := admin.UpdateConfig(ctx, "api", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	if err := g.Update(ctx, putInService); err != nil {
		t.Fatalf("Update = %v; want nil: the instance is in service", err)
	}
	if n := rc.count(); n != 2 {
		t.Fatalf("%d attempts; want 2 (WithConfigNotifyRetries)", n)
	}
	wantRegConfig(t, g, nil, 0)
	if got := g.Instance().Status; got != discovery.StatusUnknown {
		t.Fatalf("status %v; want it in service", got)
	}
	if err := g.SetWeight(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if rev, body := rc.last(); rc.count() != 3 || rev != "1" || body != string(cfgDoc(1)) {
		t.Fatalf("%d attempts, the last revision %q %s; want a third, revision 1", rc.count(), rev, body)
	}
	wantRegConfig(t, g, cfgDoc(1), 1)
}

// tokenHook is a TokenSource that runs a function at its first call.
type tokenHook struct {
	once sync.Once
	fn   func()
}

func (h *tokenHook) Token(context.Context, string) (string, error) {
	h.once.Do(h.fn)
	return "tok", nil
}

// A configuration stored while the one owed to an instance put in service
// is on its way reaches the instance last: the owed one, arriving after
// it, does not leave the instance on the older revision.
func TestStandbyConfigNotLeftOlderThanAConcurrentUpdate(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	opts := []discovery.Option{discovery.WithClock(discoverytest.NewClock(t0)), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0)}
	admin := discoverytest.NewRegistry(t, backend, opts...)
	hook := &tokenHook{}
	inst := discoverytest.NewRegistry(t, backend, append(opts, discovery.WithTokenSource(hook))...)
	g, rc := standbyInstance(t, inst, func(int, http.ResponseWriter, *http.Request) {})
	if _, err := admin.UpdateConfig(ctx, "api", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	// As revision 1 is about to be sent, revision 2 is stored and sent to
	// the instance, now in service.
	var rep discovery.ConfigReport
	hook.fn = func() {
		var err error
		if rep, err = admin.UpdateConfig(ctx, "api", cfgDoc(2)); err != nil {
			t.Error(err)
		}
	}
	if err := g.Update(ctx, putInService); err != nil {
		t.Fatal(err)
	}
	if rep.Count(discovery.NotifyDelivered) != 1 {
		t.Fatalf("the concurrent UpdateConfig reported %+v; want it delivered", rep.Instances)
	}
	if rev, body := rc.last(); rev != "2" || body != string(cfgDoc(2)) {
		t.Errorf("the instance was sent last revision %q %s; want 2", rev, body)
	}
	wantRegConfig(t, g, cfgDoc(2), 2)
}

// A configuration stored when the instances to notify cannot be listed
// says so in the report (NotifyErr) and in the admin answer: it returned
// an empty report and no error, as if the service had no instance.
func TestConfigReportSaysWhenNoInstanceCouldBeListed(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	store := &failLoadsStore{Backend: backend}
	r := discoverytest.NewRegistry(t, backend, discovery.WithStore(store), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	// A router instance without a callback: listed and skipped, no network.
	mustRegister(t, r, discovery.Instance{Service: "web", Host: "10.0.0.1", Port: 80, Method: discovery.MethodRouter})
	// Every read fails while the write runs, the listing after it too (the
	// registration's own background reads of the configuration retry). A
	// failure of only the next read was taken, now and then, by one of
	// those instead of the listing.
	store.failing.Store(true)
	rep, err := r.UpdateConfig(ctx, "web", json.RawMessage(`{"v": 1}`))
	store.failing.Store(false)
	if err != nil {
		t.Fatalf("UpdateConfig = %v; want nil: the configuration was stored", err)
	}
	if !errors.Is(rep.NotifyErr, discovery.ErrUnavailable) || len(rep.Instances) != 0 {
		t.Fatalf("report = %+v; want NotifyErr matching ErrUnavailable, no instance", rep)
	}
	if doc, rev, err := r.Config(ctx, "web"); err != nil || rev != 1 || string(doc) != `{"v": 1}` {
		t.Fatalf("Config = %s, %d, %v; want the stored configuration", doc, rev, err)
	}
	rep, err = r.UpdateConfig(ctx, "web", json.RawMessage(`{"v": 2}`))
	if err != nil || rep.NotifyErr != nil || len(rep.Instances) != 1 {
		t.Fatalf("UpdateConfig with the instances listed = %+v, %v; want one instance, no NotifyErr", rep, err)
	}

	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	store.failing.Store(true)
	code, body := do(t, h, "PUT", "/services/web/config", `{"v": 3}`)
	store.failing.Store(false)
	if code != http.StatusOK || !strings.Contains(string(body), `"notify_error": "discovery: stored, but the instances to notify could not be listed"`) ||
		strings.Contains(string(body), "transient") {
		t.Fatalf("PUT = %d %s; want 200 with notify_error and no backend text", code, body)
	}
}

// failLoadsStore fails every Load while failing is set.
type failLoadsStore struct {
	*discoverytest.Backend
	failing atomic.Bool
}

func (s *failLoadsStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.failing.Load() {
		return nil, fmt.Errorf("%w: transient", discovery.ErrUnavailable)
	}
	return s.Backend.Load(ctx, name)
}

// UpdateConfig's read of the instances to notify is a database read like
// any other, and Stats counts it: it was the one read it left out.
func TestConfigNotificationReadIsCounted(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	mustRegister(t, r, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter})
	before := r.Stats().StoreReads
	if _, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1)); err != nil {
		t.Fatal(err)
	}
	// Without Redis nothing is written through: the one read is the
	// listing of the instances to notify.
	if n := r.Stats().StoreReads - before; n != 1 {
		t.Fatalf("UpdateConfig counted %d store reads; want 1, the listing of its instances", n)
	}
}

// A callback that panics fails its delivery, as a check function that
// panics fails its check: the panic ran on the Registry's own goroutine,
// where the caller could not recover it, and took the process down. The
// panic is reported to the UpdateConfig caller, and the configurations that
// follow are delivered.
func TestConfigCallbackPanicIsAFailure(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	var calls atomic.Int32
	g, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter},
		discovery.WithConfigFunc(func(context.Context, json.RawMessage) error {
			if calls.Add(1) == 1 {
				panic("cannot parse")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyFailed || rep.Instances[0].Err == nil ||
		!strings.Contains(rep.Instances[0].Err.Error(), "cannot parse") {
		t.Fatalf("report = %+v; want the callback's panic as a failure", rep.Instances)
	}
	rep, err = r.UpdateConfig(ctx, "router_svc", cfgDoc(2))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyDelivered {
		t.Fatalf("report after the panic = %+v; want delivered", rep.Instances)
	}
	if _, rev := g.Config(); rev != 2 {
		t.Fatalf("Registration.Config revision %d; want 2", rev)
	}
}

// A validator that panics refuses the configuration, as one that returns an
// error does: nothing is stored, UpdateConfig returns a ConfigError and the
// admin handler a 400 with a JSON error. The panic went up the caller's
// stack, and in the admin handler to net/http, which cut the connection
// without an answer.
func TestConfigValidatorPanicRefusesTheConfig(t *testing.T) {
	ctx := context.Background()
	validator := func(doc json.RawMessage) error {
		var c map[string]any
		_ = json.Unmarshal(doc, &c)
		_ = c["workers"].(float64) // a validator's own bug: a document without "workers"
		return nil
	}
	r, _ := adminWorld(t, discovery.WithConfigValidator("orders", validator))
	_, before, _ := r.Config(ctx, "orders")
	call := func(fn func()) (panicked any) {
		defer func() { panicked = recover() }()
		fn()
		return nil
	}
	var err error
	if p := call(func() { _, err = r.UpdateConfig(ctx, "orders", json.RawMessage(`{"threads":2}`)) }); p != nil {
		t.Fatalf("UpdateConfig panicked: %v", p)
	}
	var ce *discovery.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, discovery.ErrInvalid) || !strings.Contains(err.Error(), "validator panicked") {
		t.Fatalf("UpdateConfig with a panicking validator = %v; want a ConfigError matching ErrInvalid", err)
	}
	h := r.AdminHandler(discovery.AdminAuthorizer(fakeAuthz{id: &discovery.Identity{Service: "ops"}}))
	var code int
	var body []byte
	if p := call(func() { code, body = do(t, h, "PUT", "/services/orders/config", `{"threads":2}`) }); p != nil {
		t.Fatalf("PUT panicked: %v", p)
	}
	if code != http.StatusBadRequest || !json.Valid(body) || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("PUT with a panicking validator = %d %s; want 400 with a JSON error", code, body)
	}
	if _, rev, _ := r.Config(ctx, "orders"); rev != before {
		t.Fatalf("config revision %d after refused writes; want %d", rev, before)
	}
	if _, err := r.UpdateConfig(ctx, "orders", json.RawMessage(`{"workers":2}`)); err != nil {
		t.Fatalf("a configuration the validator accepts: %v", err)
	}
}

// Two processes that read configuration revision 1 and each write their
// edit of it with UpdateConfigIf: one is stored, the other refused with a
// ConfigConflictError matching ErrConflict that names the revision now
// stored, leaving configuration and history as the winner wrote them. A
// read-modify-write with UpdateConfig lost the first edit without a word.
// 0 stands for a service without a configuration, and a negative revision
// is bad input.
func TestConfigUpdateIfRefusesAStaleRevision(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.registry(t), w.registry(t)
		if _, err := a.UpdateConfigIf(ctx, "db_svc", 1, cfgDoc(1)); !errors.Is(err, discovery.ErrConflict) {
			t.Fatalf("UpdateConfigIf(1) of a service without a configuration = %v; want ErrConflict", err)
		}
		if rep, err := a.UpdateConfigIf(ctx, "db_svc", 0, cfgDoc(1)); err != nil || rep.ConfigRevision != 1 {
			t.Fatalf("UpdateConfigIf(0) of a new service = %+v, %v; want config revision 1", rep, err)
		}
		if _, err := b.UpdateConfigIf(ctx, "db_svc", 0, cfgDoc(9)); !errors.Is(err, discovery.ErrConflict) {
			t.Fatalf("UpdateConfigIf(0) of a service with a configuration = %v; want ErrConflict", err)
		}
		rep, err := a.UpdateConfigIf(ctx, "db_svc", 1, cfgDoc(2))
		if err != nil || rep.ConfigRevision != 2 {
			t.Fatalf("a's UpdateConfigIf(1) = %+v, %v; want config revision 2", rep, err)
		}
		_, err = b.UpdateConfigIf(ctx, "db_svc", 1, cfgDoc(3))
		var ce *discovery.ConfigConflictError
		if !errors.Is(err, discovery.ErrConflict) || !errors.As(err, &ce) || ce.Service != "db_svc" || ce.Want != 1 || ce.Have != 2 {
			t.Fatalf("b's UpdateConfigIf(1) after a's = %v; want a ConfigConflictError (want 1, have 2)", err)
		}
		if _, err := b.UpdateConfigIf(ctx, "db_svc", -1, cfgDoc(3)); !errors.Is(err, discovery.ErrInvalid) {
			t.Fatalf("UpdateConfigIf(-1) = %v; want ErrInvalid", err)
		}
		svc, err := a.Store().Load(ctx, "db_svc")
		if err != nil || string(svc.Config) != `{"n":2}` || svc.ConfigRevision != 2 || svc.Revision != 2 {
			t.Fatalf("stored after the refused write: %s rev %d (service rev %d), %v; want {\"n\":2} rev 2", svc.Config, svc.ConfigRevision, svc.Revision, err)
		}
		if hist, err := b.ConfigHistory(ctx, "db_svc"); err != nil || len(hist) != 2 || string(hist[0].Config) != `{"n":2}` {
			t.Fatalf("history after the refused write = %d versions, %v; want 2", len(hist), err)
		}
		if _, err := b.UpdateConfigIf(ctx, "db_svc", 2, cfgDoc(3)); err != nil {
			t.Fatalf("b's UpdateConfigIf(2) after reading again: %v", err)
		}
	})
	t.Run("store without ConfigSwapper", func(t *testing.T) {
		ctx := context.Background()
		backend := discoverytest.NewBackend()
		r, err := discovery.New(discovery.WithStore(swaplessStore{backend, backend}))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := r.UpdateConfigIf(ctx, "db_svc", 0, cfgDoc(1)); !errors.Is(err, discovery.ErrUnsupported) {
			t.Fatalf("UpdateConfigIf = %v; want ErrUnsupported", err)
		}
		if _, err := r.UpdateConfig(ctx, "db_svc", cfgDoc(1)); err != nil {
			t.Fatalf("UpdateConfig: %v", err)
		}
	})
}

// swaplessStore is a ConfigStore without the ConfigSwapper capability.
type swaplessStore struct {
	discovery.Store
	cs discovery.ConfigStore
}

func (s swaplessStore) SetConfig(ctx context.Context, service string, doc []byte, at time.Time, keep int) (int64, int64, error) {
	return s.cs.SetConfig(ctx, service, doc, at, keep)
}

func (s swaplessStore) ConfigHistory(ctx context.Context, service string) ([]discovery.ConfigVersion, error) {
	return s.cs.ConfigHistory(ctx, service)
}

// ConfigVersion carries JSON tags, and its configuration is a JSON
// document: encoded, a version holds the document, not its bytes in base64
// (what a []byte field gave, which a script reading a dumped history could
// not use).
func TestConfigHistoryEncodesTheDocumentAsJSON(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend())
	if _, err := r.UpdateConfig(ctx, "db_svc", json.RawMessage(`{"workers":8}`)); err != nil {
		t.Fatal(err)
	}
	hist, err := r.ConfigHistory(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(hist)
	if err != nil || !strings.Contains(string(b), `"config":{"workers":8}`) {
		t.Fatalf("encoded history = %s, %v; want the document under \"config\"", b, err)
	}
	var back []discovery.ConfigVersion
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 1 || string(back[0].Config) != `{"workers":8}` || back[0].Revision != 1 {
		t.Fatalf("decoded history = %+v, %v", back, err)
	}
}

// A notification that waits to retry an older configuration does not go
// out after a newer one this process delivered to the same instance since:
// the instance was left on the older configuration, and both were
// reported delivered. The retry is given up, reported skipped as
// superseded.
func TestConfigRetryDoesNotOverwriteANewerConfig(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(t0)
	r := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks(),
		discovery.WithConfigNotifyRetries(3, time.Second))
	got := &received{}
	first := make(chan struct{})
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got.record(req)
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // the first attempt of revision 1
			close(first)
		}
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	addInstance(t, r, discovery.Instance{ID: "a", Service: "api", Host: host, Port: p, Weight: 100, RegisteredAt: t0, ExpiresAt: t0.Add(1000 * time.Hour)})

	older := updateInBackground(t, r, "api", cfgDoc(1))
	<-first // revision 1 waits for its retry on the fake clock, which stands still
	newer, err := r.UpdateConfig(ctx, "api", cfgDoc(2))
	if err != nil || newer.Count(discovery.NotifyDelivered) != 1 {
		t.Fatalf("UpdateConfig(2) = %+v, %v; want delivered", newer.Instances, err)
	}
	var rep discovery.ConfigReport
	waitFor(t, 5*time.Second, "the older update to end", func() bool {
		clock.Advance(2 * time.Second)
		select {
		case rep = <-older:
			return true
		default:
			return false
		}
	})
	newerKept(t, got, rep)
}

// listingHook is a backend whose Load, when hold is set, waits on it once
// before it answers: an UpdateConfig stops between its write and the
// listing of the instances to notify.
type listingHook struct {
	*discoverytest.Backend
	hold   atomic.Pointer[chan struct{}]
	loaded chan struct{}
}

func (h *listingHook) Load(ctx context.Context, service string) (*discovery.Service, error) {
	if ch := h.hold.Swap(nil); ch != nil {
		h.loaded <- struct{}{}
		<-*ch
	}
	return h.Backend.Load(ctx, service)
}

// An UpdateConfig whose notification begins only after a newer one's has
// ended (the newer one stored, listed and sent all while the older one was
// between its write and its listing) does not send the instance the older
// configuration: it ended on it, both reported delivered.
func TestConfigOlderNotificationStartingLateDoesNotOverwriteANewerConfig(t *testing.T) {
	ctx := context.Background()
	backend := &listingHook{Backend: discoverytest.NewBackend(), loaded: make(chan struct{})}
	r, err := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	got := &received{}
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) { got.record(req) }))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	addInstance(t, r, discovery.Instance{ID: "a", Service: "api", Host: host, Port: p, Weight: 100, RegisteredAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})

	release := make(chan struct{})
	backend.hold.Store(&release)
	older := updateInBackground(t, r, "api", cfgDoc(1))
	<-backend.loaded // revision 1 is stored; its listing waits
	newer, err := r.UpdateConfig(ctx, "api", cfgDoc(2))
	if err != nil || newer.Count(discovery.NotifyDelivered) != 1 {
		t.Fatalf("UpdateConfig(2) = %+v, %v; want delivered", newer.Instances, err)
	}
	close(release)
	rep := <-older
	newerKept(t, got, rep)
}

// A router standby (registered draining) with a WithConfigFunc callback in
// this process is given the configuration by its process all the same (as
// README says, its process calls it once per revision): UpdateConfig's
// report says what became of that call, not "skipped, draining" for a
// callback that was called.
func TestConfigReportOfADrainingRouterSaysItsCallbackWasCalled(t *testing.T) {
	ctx := context.Background()
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	var cb callbackLog
	if _, err := r.Register(ctx, discovery.Instance{Service: "router_svc", Host: "127.0.0.1", Port: 1, Method: discovery.MethodRouter,
		Status: discovery.StatusDraining}, discovery.WithConfigFunc(cb.fn)); err != nil {
		t.Fatal(err)
	}
	rep, err := r.UpdateConfig(ctx, "router_svc", cfgDoc(1))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the callback", func() bool { return cb.calls.Load() == 1 })
	if len(rep.Instances) != 1 || rep.Instances[0].Outcome != discovery.NotifyDelivered || rep.Instances[0].Attempts != 1 {
		t.Fatalf("report %+v, callback saw %v; want delivered: the callback was called", rep.Instances, cb.seen())
	}
}

// updateInBackground runs UpdateConfig(svc, cfg) on a goroutine of its own
// and sends its report (an error fails the test).
func updateInBackground(t *testing.T, r *discovery.Registry, svc string, cfg json.RawMessage) <-chan discovery.ConfigReport {
	t.Helper()
	out := make(chan discovery.ConfigReport, 1)
	go func() {
		rep, err := r.UpdateConfig(context.Background(), svc, cfg)
		if err != nil {
			t.Error(err)
		}
		out <- rep
	}()
	return out
}

// A refused UpdateConfigIf tells this process that its snapshot of the
// service is older than the database: the Config that its writer reads
// next, as told ("read the configuration again"), has the revision the
// conflict named. It answered the snapshot the conflict proved stale
// until its freshness ran out (without Redis, where no change message
// comes, every time another process wrote), and each retry of the edit was
// refused in turn.
func TestConfigConflictMakesConfigReadTheStoredRevision(t *testing.T) {
	clock := discoverytest.NewClock(time.Unix(1_700_000_000, 0)) // L1 stays fresh: only the conflict can move it
	forEachWorld(t, func(t *testing.T, w *world) {
		ctx := context.Background()
		a, b := w.registry(t), w.registry(t)
		if _, err := a.UpdateConfig(ctx, "db_svc", cfgDoc(1)); err != nil {
			t.Fatal(err)
		}
		if _, rev, err := a.Config(ctx, "db_svc"); err != nil || rev != 1 {
			t.Fatalf("a's Config = %d, %v; want revision 1", rev, err)
		}
		if _, err := b.UpdateConfig(ctx, "db_svc", cfgDoc(2)); err != nil {
			t.Fatal(err)
		}
		_, err := a.UpdateConfigIf(ctx, "db_svc", 1, cfgDoc(3))
		var ce *discovery.ConfigConflictError
		if !errors.As(err, &ce) || ce.Have != 2 {
			t.Fatalf("a's UpdateConfigIf(1) after b's write = %v; want a conflict with revision 2", err)
		}
		cfg, rev, err := a.Config(ctx, "db_svc")
		if err != nil || rev != 2 || string(cfg) != `{"n":2}` {
			t.Fatalf("a's Config after the conflict = %s, %d, %v; want {\"n\":2} at revision 2, the one the conflict named", cfg, rev, err)
		}
		if _, err := a.UpdateConfigIf(ctx, "db_svc", rev, cfgDoc(3)); err != nil {
			t.Fatalf("a's UpdateConfigIf(%d), read again: %v", rev, err)
		}
	}, discovery.WithClock(clock))
}
