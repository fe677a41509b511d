package discovery

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rssbot/discovery/internal/core"
)

// The admin handler: JSON endpoints and an HTML dashboard over one
// Registry, for the caller to mount on its own server (the library runs
// none). Reads are open unless AdminProtectReads; the mutating endpoints
// need an Authorizer.

//go:embed adminui
var adminUI embed.FS

// DefaultAdminRefresh is how often the dashboard fetches the overview.
const DefaultAdminRefresh = 1500 * time.Millisecond

// adminTimeout bounds the work of one admin request.
const adminTimeout = 10 * time.Second

// AdminOption configures Registry.AdminHandler.
type AdminOption interface{ applyAdmin(*adminOptions) }

type adminOptionFunc func(*adminOptions)

func (f adminOptionFunc) applyAdmin(o *adminOptions) { f(o) }

type adminOptions struct {
	authz   Authorizer
	scope   string
	refresh time.Duration
	title   string
	// protectReads makes the reads need the Authorizer too, and readScope
	// if it is not empty.
	protectReads bool
	readScope    string
	// hosts are the Host names the handler answers (AdminAllowedHosts),
	// lower case, without a trailing dot; none: every one.
	hosts map[string]bool
}

// AdminAuthorizer makes a the Authorizer of the handler's mutating
// endpoints, instead of the Registry's (WithAuthorizer, SetAuthorizer). A
// nil a, or a nil pointer, leaves the Registry's.
func AdminAuthorizer(a Authorizer) AdminOption {
	return adminOptionFunc(func(o *adminOptions) {
		o.authz = a
		if core.IsNil(a) { // a nil pointer panicked at the first request with a token
			o.authz = nil
		}
	})
}

// AdminScope makes the mutating endpoints require a caller whose identity
// carries scope (for example "discovery:admin"), on top of what the
// Authorizer decides. With an auth.Verifier the token's scopes are the
// caller's own claim (its Signer's auth.WithScopes): the scope keeps out
// no service the Verifier's policy admits to these paths, which is what
// decides who may change the registry.
func AdminScope(scope string) AdminOption {
	return adminOptionFunc(func(o *adminOptions) { o.scope = scope })
}

// AdminProtectReads makes every endpoint need authorization, the reads and
// the dashboard too: the handler asks the same Authorizer as for the
// mutating endpoints (AdminAuthorizer, else the Registry's) and, if scope
// is not empty, requires a caller whose identity carries it (the mutating
// endpoints too, and AdminScope's as well). Configurations, instance addresses
// and metadata are then not shown to whoever reaches the handler. Without
// an Authorizer every request gets 403. A browser must satisfy the
// Authorizer to use the dashboard (a session cookie it checks, or a proxy
// that adds the token): the page sends no token of its own.
func AdminProtectReads(scope string) AdminOption {
	return adminOptionFunc(func(o *adminOptions) { o.protectReads, o.readScope = true, scope })
}

// AdminRefresh sets how often the dashboard refreshes itself (1.5 s; at
// least 250 ms, at most 24 h: a browser keeps a timer's delay in 32 bits of
// milliseconds, and one past 24.8 days fired at once, so the page fetched
// the overview back to back).
func AdminRefresh(d time.Duration) AdminOption {
	return adminOptionFunc(func(o *adminOptions) { o.refresh = min(max(d, 250*time.Millisecond), 24*time.Hour) })
}

// AdminTitle sets the dashboard's title ("discovery").
func AdminTitle(title string) AdminOption {
	return adminOptionFunc(func(o *adminOptions) { o.title = title })
}

// AdminAllowedHosts makes the handler answer only requests whose Host
// header names one of hosts (a DNS name or an IP address, compared without
// the port, in any case; a port given with one is dropped, "" is ignored);
// any other gets 421 Misdirected
// Request and nothing else. It guards the open reads against DNS
// rebinding: a page in an operator's browser whose own name its server
// then points at the handler's address reads the handler as its own
// origin, past the network that keeps others out, and sends its own name
// as the Host. Without it (the default) every Host is answered. Calls add
// up.
func AdminAllowedHosts(hosts ...string) AdminOption {
	return adminOptionFunc(func(o *adminOptions) {
		for _, h := range hosts {
			// "ops.internal:8443" is the host ops.internal: kept with its
			// port, it matched no Host, and every request got 421.
			if host, _, err := net.SplitHostPort(strings.TrimSpace(h)); err == nil {
				h = host
			}
			if h = normalHost(h); h != "" {
				if o.hosts == nil {
					o.hosts = map[string]bool{}
				}
				o.hosts[h] = true
			}
		}
	})
}

// normalHost is a host name as AdminAllowedHosts compares it: lower case,
// without a trailing dot or an IPv6 address's brackets.
func normalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return h
}

// hostAllowed reports whether a request's Host header (host or host:port)
// names a host the handler answers.
func (o *adminOptions) hostAllowed(hostport string) bool {
	if o.hosts == nil {
		return true
	}
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return o.hosts[normalHost(h)]
}

type admin struct {
	r    *Registry
	o    adminOptions
	page []byte
}

// AdminHandler returns an http.Handler with the registry's admin endpoints
// and dashboard. Mount it under a path ending in "/" with the prefix
// stripped, for example
//
//	mux.Handle("/discovery/", http.StripPrefix("/discovery", reg.AdminHandler()))
//
// Endpoints (JSON unless said):
//
//	GET    /                                the HTML dashboard (embedded assets, refreshes itself)
//	GET    /overview                        Registry.Overview
//	GET    /services                        every service: name, revision, live and expired instances
//	GET    /services/{name}                 its instances with their health and check history (none if none is live)
//	GET    /services/{name}/config          its configuration and configuration revision (also its ETag)
//	GET    /services/{name}/config/history  its kept versions (ConfigHistory), newest first; the newest's ETag
//	PUT    /services/{name}/config          store a new configuration (the body); needs authorization
//	POST   /services/{name}/config/rollback/{revision}
//	                                        restore a kept version (RollbackConfigIf); needs authorization and If-Match
//	DELETE /services/{name}/instances/{id}  deregister an instance; needs authorization
//
// GET's ETag is the configuration revision ("3"; "0" for none). A PUT with
// If-Match: "3" stores the body only if the configuration is still at
// revision 3 (UpdateConfigIf), else answers 412 and stores nothing, so an
// edit of what was read does not erase a PUT that came between ("*": any
// configuration, none gets 412). "If-None-Match: *" stores it only if the
// service has none (else 412); If-None-Match takes nothing else. Without
// either the last PUT wins. Each PUT answers the new revision's ETag.
//
// POST .../config/rollback/5 stores version 5 of the configuration (one of
// the kept versions, WithConfigHistory) as a new revision, validated and
// notified as a PUT's, and answers the PUT's report and ETag. It needs an
// If-Match: "3" rolls back only if the configuration is still at revision
// 3 (RollbackConfigIf), else answers 412 and stores nothing, so a fix
// stored after the operator read revision 3 is not erased; "*" rolls back
// whatever is stored. Without
// If-Match it answers 428 Precondition Required and changes nothing:
// unlike a PUT, which states the whole configuration its sender wants, a
// rollback is decided on the one its sender saw; and, a POST, it could be
// sent cross-site by a page in an operator's browser (with the cookies an
// Authorizer may accept) were it not for the If-Match, which no page can
// add without a CORS preflight that the handler does not answer. A version
// no longer (or never) kept is a 404, a revision that is not a whole
// number from 1 a 400, as is an If-None-Match.
//
// DELETE is for the rows of instances whose processes died: a process that
// still holds the instance's Registration registers it again at its next
// renewal (TTL/3), as after any loss of its row. A live instance is taken
// out by Registration.Drain (or Close) in its own process.
//
// Mutating endpoints ask the Authorizer (AdminAuthorizer, else the
// Registry's), and with AdminProtectReads every endpoint does: without one
// they answer 403 and change nothing; a request it
// refuses gets 401 (unauthenticated, with "WWW-Authenticate: Bearer") or 403
// (forbidden). Bad input gets 400 (a configuration body over MaxConfigBytes
// 413, an If-Match that is not one entity tag or "*" too, and an
// If-None-Match that is not "*"), a failed If-Match or If-None-Match 412,
// a rollback without If-Match 428, an unknown service, version or path
// 404, a method a path does not take 405 (with Allow), a backend outage
// 503, a PUT or a rollback of a configuration with a Store that keeps none
// 501, anything else 500, each with {"error": "..."}.
func (r *Registry) AdminHandler(opts ...AdminOption) http.Handler {
	a := &admin{r: r, o: adminOptions{refresh: DefaultAdminRefresh, title: "discovery"}}
	for _, opt := range opts {
		if opt != nil {
			opt.applyAdmin(&a.o)
		}
	}
	a.page = a.renderPage()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.read(a.dashboard))
	mux.HandleFunc("GET /assets/{file}", a.read(a.asset))
	mux.HandleFunc("GET /overview", a.read(a.overview))
	mux.HandleFunc("GET /services", a.read(a.services))
	mux.HandleFunc("GET /services/{name}", a.read(a.service))
	mux.HandleFunc("GET /services/{name}/config", a.read(a.config))
	mux.HandleFunc("GET /services/{name}/config/history", a.read(a.configHistory))
	mux.HandleFunc("PUT /services/{name}/config", a.putConfig)
	mux.HandleFunc("POST /services/{name}/config/rollback/{revision}", a.rollbackConfig)
	mux.HandleFunc("DELETE /services/{name}/instances/{id}", a.deregister)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !a.o.hostAllowed(req.Host) {
			writeJSON(w, http.StatusMisdirectedRequest, jsonError{"discovery: this admin handler does not answer for the host the request names"})
			return
		}
		if p := mountPrefix(req); p != "" {
			w = &remount{ResponseWriter: w, prefix: p}
		}
		if _, pattern := mux.Handler(req); pattern == "" {
			w = &routeMiss{ResponseWriter: w} // no endpoint: the mux's 404 or 405, or a redirect
		}
		mux.ServeHTTP(w, req)
	})
}

// remount puts the prefix a StripPrefix mount took off back on the mux's
// redirects to a cleaned path or to a subtree's "/": without it, behind
// "/discovery", GET /discovery/assets was sent to /assets/, outside the
// mount.
type remount struct {
	http.ResponseWriter
	prefix string
}

func (m *remount) WriteHeader(status int) {
	if loc := m.Header().Get("Location"); status/100 == 3 && strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") {
		m.Header().Set("Location", m.prefix+loc)
	}
	m.ResponseWriter.WriteHeader(status)
}

// routeMiss turns the mux's own plain-text 404 and 405 into the JSON error
// every other answer of the API gives (a 405 keeps its Allow header);
// anything else, a redirect to a cleaned path, passes through.
type routeMiss struct {
	http.ResponseWriter
	answered bool
}

func (m *routeMiss) WriteHeader(status int) {
	switch status {
	case http.StatusNotFound:
		writeJSON(m.ResponseWriter, status, jsonError{"discovery: no such admin endpoint"})
	case http.StatusMethodNotAllowed:
		writeJSON(m.ResponseWriter, status, jsonError{"discovery: method not allowed; allowed: " + m.Header().Get("Allow")})
	default:
		m.ResponseWriter.WriteHeader(status)
		return
	}
	m.answered = true
}

func (m *routeMiss) Write(b []byte) (int, error) {
	if m.answered {
		return len(b), nil // the plain-text body, replaced
	}
	return m.ResponseWriter.Write(b)
}

// mountPrefix is the part of the path the client asked for that a mount
// (http.StripPrefix) took off before req reached the handler: what the
// request line's path has before the path the handler sees. "" when
// nothing was taken off or the two do not line up.
func mountPrefix(req *http.Request) string {
	asked := req.RequestURI
	if u, err := url.ParseRequestURI(asked); err == nil {
		asked = u.EscapedPath()
	} else if i := strings.IndexByte(asked, '?'); i >= 0 {
		asked = asked[:i]
	}
	seen := req.URL.EscapedPath()
	if len(asked) > len(seen) && strings.HasSuffix(asked, seen) {
		return asked[:len(asked)-len(seen)]
	}
	return ""
}

func (a *admin) renderPage() []byte {
	raw, err := adminUI.ReadFile("adminui/index.html")
	if err != nil {
		panic("discovery: admin dashboard not embedded: " + err.Error()) // a build defect, not input
	}
	t := template.Must(template.New("index").Parse(string(raw)))
	var b bytes.Buffer
	_ = t.Execute(&b, struct {
		Title     string
		RefreshMS int64
	}{a.o.title, a.o.refresh.Milliseconds()})
	return b.Bytes()
}

func (a *admin) dashboard(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(a.page)
}

// asset serves one of the dashboard's two assets, with its type fixed and
// not to be sniffed, revalidated on each load (a new version of the library
// serves new ones under the same names). A file server served them before:
// it listed the directory at /assets/ and served index.html's template
// there, unrendered.
func (a *admin) asset(w http.ResponseWriter, req *http.Request) {
	var ctype string
	switch name := req.PathValue("file"); name {
	case "app.js":
		ctype = "text/javascript; charset=utf-8"
	case "style.css":
		ctype = "text/css; charset=utf-8"
	default:
		writeJSON(w, http.StatusNotFound, jsonError{"discovery: no such admin endpoint"})
		return
	}
	body, err := adminUI.ReadFile("adminui/" + req.PathValue("file"))
	if err != nil {
		panic("discovery: admin dashboard not embedded: " + err.Error()) // a build defect, not input
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(body)
}

// serviceName returns the service named in the path, or answers 400.
func (a *admin) serviceName(w http.ResponseWriter, req *http.Request) (string, bool) {
	name := req.PathValue("name")
	if err := core.ValidateServiceName(name); err != nil {
		a.fail(w, err)
		return "", false
	}
	return name, true
}

func (a *admin) ctx(req *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(req.Context(), adminTimeout)
}

func (a *admin) overview(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := a.ctx(req)
	defer cancel()
	ov, err := a.r.Overview(ctx)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toJSONOverview(&ov))
}

func (a *admin) services(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := a.ctx(req)
	defer cancel()
	infos, err := a.r.Services(ctx)
	if err != nil {
		a.fail(w, err)
		return
	}
	if infos == nil {
		infos = []ServiceInfo{}
	}
	writeJSON(w, http.StatusOK, struct {
		Services []ServiceInfo `json:"services"`
	}{infos})
}

func (a *admin) service(w http.ResponseWriter, req *http.Request) {
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	// Looked up as the Overview does, uncounted: an operator's read is not
	// the application's traffic (Stats, metrics and their service labels).
	hs, err := a.r.overviewHealth(ctx, name, false)
	var rev int64
	if errors.Is(err, ErrNotFound) {
		// No live instance: a service the database knows all the same (its
		// instances lapsed, or only a configuration is stored) is listed by
		// /services, and answered here with none rather than "not found".
		if svc, serr := a.r.serviceData(ctx, name); serr == nil {
			hs, rev, err = nil, svc.Revision, nil
		}
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	out := jsonService{Name: name, Revision: rev, Instances: make([]jsonInstance, 0, len(hs))}
	if e := a.r.l1.get(name); e != nil && e.rev > out.Revision {
		out.Revision = e.rev
	}
	for i := range hs {
		out.Instances = append(out.Instances, toJSONInstance(&hs[i], true))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) deregister(w http.ResponseWriter, req *http.Request) {
	who, ok := a.authorize(w, req)
	if !ok {
		return
	}
	name, id := req.PathValue("name"), req.PathValue("id")
	if err := core.ValidateServiceName(name); err != nil {
		a.fail(w, err)
		return
	}
	if err := core.ValidateInstanceID(id); err != nil {
		a.fail(w, err)
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	if err := a.r.Deregister(ctx, name, id); err != nil {
		a.fail(w, err)
		return
	}
	a.r.log.Info("discovery: admin: instance deregistered", zap.String("service", name), zap.String("instance", id),
		zap.String("by", who.caller()))
	writeJSON(w, http.StatusOK, struct {
		Service    string `json:"service"`
		Deregister string `json:"deregistered"`
	}{name, id})
}

// caller names the identity in log lines: service or service/instance.
func (id *Identity) caller() string {
	if id.Instance != "" {
		return id.Service + "/" + id.Instance
	}
	return id.Service
}

// read wraps a read endpoint: with AdminProtectReads it runs only for a
// caller the Authorizer accepts, with the read scope.
func (a *admin) read(h http.HandlerFunc) http.HandlerFunc {
	if !a.o.protectReads {
		return h
	}
	return func(w http.ResponseWriter, req *http.Request) {
		if _, ok := a.authorizeScope(w, req, a.o.readScope); ok {
			h(w, req)
		}
	}
}

// authorize returns the caller if the request may change something, else
// answers 401, 403 or 503 and returns false. It needs AdminScope's scope
// and, with AdminProtectReads, the read scope too: a caller refused the
// reads overwrote configurations it could not read, deregistered
// instances, and was shown their addresses in the PUT's report.
func (a *admin) authorize(w http.ResponseWriter, req *http.Request) (*Identity, bool) {
	if a.o.protectReads {
		return a.authorizeScope(w, req, a.o.scope, a.o.readScope)
	}
	return a.authorizeScope(w, req, a.o.scope)
}

// authorizeScope returns the caller if the Authorizer accepts the request
// and the caller carries every scope that is not empty, else answers 401,
// 403 or 503 and returns false.
func (a *admin) authorizeScope(w http.ResponseWriter, req *http.Request, scopes ...string) (*Identity, bool) {
	az := a.o.authz
	if az == nil {
		az = a.r.Authorizer()
	}
	if az == nil {
		msg := "discovery: read-only: no authorizer is configured"
		if a.o.protectReads {
			msg = "discovery: no authorizer is configured"
		}
		writeJSON(w, http.StatusForbidden, jsonError{msg})
		return nil, false
	}
	id, err := az.Authorize(req)
	switch {
	case errors.Is(err, ErrUnauthenticated), err == nil && id == nil:
		w.Header().Set("WWW-Authenticate", "Bearer") // every 401 says how to authenticate (RFC 9110)
		writeJSON(w, http.StatusUnauthorized, jsonError{"discovery: unauthenticated"})
		return nil, false
	case errors.Is(err, ErrForbidden):
		writeJSON(w, http.StatusForbidden, jsonError{"discovery: forbidden"})
		return nil, false
	case err != nil:
		// It could not decide (an auth.Verifier whose key store is down):
		// its text may name the backend's address and user, so the log gets
		// it, as fail's backend errors, and the caller does not.
		a.r.log.Warn("discovery: admin request failed", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, jsonError{"discovery: cannot authorize now"})
		return nil, false
	}
	for _, scope := range scopes {
		if scope != "" && !id.HasScope(scope) {
			writeJSON(w, http.StatusForbidden, jsonError{"discovery: forbidden"})
			return nil, false
		}
	}
	return id, true
}

// fail answers an error with its status: 400 invalid, 404 not found, 503 a
// backend or the Registry unavailable, or the request's context ended (the
// client went away, the server is shutting down), 501 unsupported, 500
// otherwise. The text of a backend's error, of an internal one and of one
// the request's deadline ended is logged, never answered.
func (a *admin) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		status = http.StatusServiceUnavailable
	case errors.Is(err, ErrUnsupported):
		status = http.StatusNotImplemented
	case errors.Is(err, ErrConflict):
		status = http.StatusPreconditionFailed // only a PUT or a rollback with If-Match asks for a compare-and-set
	}
	msg := err.Error()
	var be *BackendError
	switch {
	case status == http.StatusInternalServerError:
		a.r.log.Warn("discovery: admin request failed", zap.Error(err))
		msg = "discovery: internal error"
	case errors.As(err, &be):
		// The backend's own error names its address, database and user:
		// the log gets it, the (possibly unauthenticated) client does not.
		a.r.log.Warn("discovery: admin request failed", zap.Error(err))
		msg = "discovery: " + be.Backend + " unavailable"
	case status == http.StatusServiceUnavailable && errors.Is(err, context.DeadlineExceeded):
		// A call the request's deadline ended (the admin's own, adminTimeout)
		// comes back as the driver said it, which names the same.
		a.r.log.Warn("discovery: admin request failed", zap.Error(err))
		msg = "discovery: request timed out"
	case status == http.StatusServiceUnavailable && errors.Is(err, context.Canceled):
		msg = "discovery: request cancelled" // the client went away: nothing to log
	}
	writeJSON(w, status, jsonError{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"discovery: cannot encode the answer"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
