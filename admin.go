package discovery

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
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

func (a *admin) config(w http.ResponseWriter, req *http.Request) {
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	cfg, rev, err := a.r.Config(ctx, name)
	if err != nil {
		a.fail(w, err)
		return
	}
	if len(cfg) == 0 {
		cfg = json.RawMessage("null")
	}
	w.Header().Set("ETag", configETag(rev))
	writeJSON(w, http.StatusOK, jsonConfig{Service: name, ConfigRevision: rev, Config: cfg})
}

// configETag is the entity tag of configuration revision rev: "rev" ("0"
// for a service without a configuration).
func configETag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// ifMatch reads the If-Match header of a PUT of a configuration: the
// configuration revision it expects, and whether it has one at all. "*"
// (any configuration, not none) gives anyConfigRevision, a weak tag
// noConfigMatch (If-Match compares strongly: it never matches). Anything
// but one strong tag naming a revision ("3"), "*" or a weak tag is bad
// input.
func ifMatch(req *http.Request) (want int64, conditional bool, err error) {
	vals := req.Header.Values("If-Match")
	if len(vals) == 0 {
		return 0, false, nil
	}
	v := strings.TrimSpace(vals[0])
	refuse := &ValidationError{Field: "If-Match", Value: strings.Join(vals, ", "), Reason: `must be one entity tag, as GET's ETag ("3"), or *`}
	switch {
	case len(vals) > 1 || strings.Contains(v, ","):
		return 0, false, refuse
	case v == "*":
		return anyConfigRevision, true, nil
	case strings.HasPrefix(v, `W/"`) && strings.HasSuffix(v, `"`) && len(v) > 3:
		return noConfigMatch, true, nil
	case len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"':
		return 0, false, refuse
	}
	rev, perr := strconv.ParseInt(v[1:len(v)-1], 10, 64)
	if perr != nil || rev < 0 || strconv.FormatInt(rev, 10) != v[1:len(v)-1] {
		return 0, false, refuse
	}
	return rev, true, nil
}

// ifNoneMatch reads the If-None-Match header of a PUT of a configuration:
// "*" stores it only if the service has no configuration (create only, as
// UpdateConfigIf with revision 0). Ignored, it let the PUT overwrite the
// configuration its client meant to protect. Anything else is bad input:
// a PUT has no use for "store unless at this revision".
func ifNoneMatch(req *http.Request) (createOnly bool, err error) {
	vals := req.Header.Values("If-None-Match")
	if len(vals) == 0 {
		return false, nil
	}
	if len(vals) > 1 || strings.TrimSpace(vals[0]) != "*" {
		return false, &ValidationError{Field: "If-None-Match", Value: strings.Join(vals, ", "), Reason: "a PUT of a configuration takes only *"}
	}
	return true, nil
}

// noConfigMatch is the expected revision of an If-Match no configuration
// matches (a weak tag).
const noConfigMatch = -2

func (a *admin) putConfig(w http.ResponseWriter, req *http.Request) {
	who, ok := a.authorize(w, req)
	if !ok {
		return
	}
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	want, conditional, err := ifMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	createOnly, err := ifNoneMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	if createOnly {
		// Both must hold: If-None-Match * only with the If-Match of no
		// configuration ("0"), which is what * asks for.
		if conditional && want != 0 {
			a.fail(w, fmt.Errorf("discovery: If-Match and If-None-Match * of service %q cannot both hold: %w", name, ErrConflict))
			return
		}
		want, conditional = 0, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxConfigBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeJSON(w, http.StatusRequestEntityTooLarge, jsonError{"discovery: config larger than " + strconv.Itoa(MaxConfigBytes) + " bytes"})
			return
		}
		writeJSON(w, http.StatusBadRequest, jsonError{"discovery: cannot read the request body"})
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	rep, err := a.putConfigIf(ctx, name, body, want, conditional)
	if err != nil {
		a.fail(w, err)
		return
	}
	a.r.log.Info("discovery: admin: config updated", zap.String("service", name), zap.String("by", who.caller()))
	a.writeConfigReport(w, name, rep)
}

// writeConfigReport answers a stored configuration (a PUT's, a
// rollback's): the report of its notifications, and the new revision's
// ETag.
func (a *admin) writeConfigReport(w http.ResponseWriter, name string, rep ConfigReport) {
	out := jsonConfigReport{Service: rep.Service, Revision: rep.Revision, ConfigRevision: rep.ConfigRevision, Instances: []jsonNotify{}}
	for _, n := range rep.Instances {
		jn := jsonNotify{ID: n.Instance.ID, Outcome: n.Outcome.String(), Attempts: n.Attempts, Reason: n.Reason}
		var be *BackendError
		switch {
		case errors.As(n.Err, &be):
			// A TokenSource's backend (an auth.Signer that could not publish
			// the key it had to rotate to): its own text names its address
			// and user, and was answered here as it was.
			a.r.log.Warn("discovery: admin request failed", zap.String("service", name), zap.String("instance", n.Instance.ID), zap.Error(n.Err))
			jn.Error = "discovery: " + be.Backend + " unavailable"
		case n.Err != nil:
			jn.Error = n.Err.Error()
		}
		out.Instances = append(out.Instances, jn)
	}
	if rep.NotifyErr != nil {
		out.NotifyError = "discovery: stored, but the instances to notify could not be listed"
	}
	w.Header().Set("ETag", configETag(rep.ConfigRevision))
	writeJSON(w, http.StatusOK, out)
}

// putConfigIf stores a PUT's configuration: with UpdateConfigIf when it
// has an If-Match (want), else with UpdateConfig. "*" expects the revision
// the database holds now, if there is one: UpdateConfigIf then refuses the
// PUT if another came between. A weak tag, or "*" without a configuration,
// fails before the body is checked; a revision is compared by UpdateConfigIf,
// after the body passed its checks (a refused body is a 400 either way).
func (a *admin) putConfigIf(ctx context.Context, name string, doc []byte, want int64, conditional bool) (ConfigReport, error) {
	if !conditional {
		return a.r.UpdateConfig(ctx, name, doc)
	}
	want, err := a.matchedRevision(ctx, name, want)
	if err != nil {
		return ConfigReport{}, err
	}
	return a.r.UpdateConfigIf(ctx, name, want, doc)
}

// matchedRevision is the configuration revision an If-Match (ifMatch's
// want) asks a write to expect: "*" the revision the database holds now,
// if there is one (the compare-and-set then refuses the write if another
// came between), a revision itself. A weak tag, or "*" without a
// configuration, is a conflict (412) without a write; a Store that keeps
// no configuration is ErrUnsupported first (501), not a 412 that sends the
// client to read the ETag and try again for what it can never store.
func (a *admin) matchedRevision(ctx context.Context, name string, want int64) (int64, error) {
	if want != noConfigMatch && want != anyConfigRevision {
		return want, nil
	}
	if _, err := a.r.configStore(); err != nil {
		return 0, err
	}
	if want == noConfigMatch {
		return 0, fmt.Errorf("discovery: If-Match of service %q is a weak entity tag, which never matches: %w", name, ErrConflict)
	}
	svc, err := a.r.storeLoad(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	if err != nil || svc.ConfigRevision == 0 {
		return 0, fmt.Errorf("discovery: service %q has no config for If-Match * to match: %w", name, ErrConflict)
	}
	return svc.ConfigRevision, nil
}

// rollbackConfig restores a kept version of a service's configuration
// (RollbackConfigIf), if the configuration is still at the revision the
// If-Match names. Without an If-Match it answers 428 and changes nothing:
// unlike a PUT, which states the whole configuration its sender wants, a
// rollback is decided on the configuration its sender saw, and one stored
// since (a fix) is what it would erase without a word; and a POST without
// a header of its own is one that a page in an operator's browser can send
// to the handler cross-site, where a PUT or a DELETE, or a POST with
// If-Match, cannot without the handler's consent (a CORS preflight it does
// not answer). "If-Match: *" asks for a rollback of whatever is stored.
func (a *admin) rollbackConfig(w http.ResponseWriter, req *http.Request) {
	who, ok := a.authorize(w, req)
	if !ok {
		return
	}
	name, ok := a.serviceName(w, req)
	if !ok {
		return
	}
	to, err := configRevisionParam(req.PathValue("revision"))
	if err != nil {
		a.fail(w, err)
		return
	}
	want, conditional, err := ifMatch(req)
	if err != nil {
		a.fail(w, err)
		return
	}
	if vals := req.Header.Values("If-None-Match"); len(vals) > 0 {
		a.fail(w, &ValidationError{Field: "If-None-Match", Value: strings.Join(vals, ", "), Reason: "a rollback takes If-Match only"})
		return
	}
	if !conditional {
		writeJSON(w, http.StatusPreconditionRequired, jsonError{`discovery: a rollback needs If-Match: the ETag of the configuration it replaces (GET .../config), or * for whatever is stored`})
		return
	}
	ctx, cancel := a.ctx(req)
	defer cancel()
	from, err := a.matchedRevision(ctx, name, want)
	if want == anyConfigRevision && errors.Is(err, ErrConflict) {
		// No configuration, so no version of one to restore: the 404 the
		// request would get without its If-Match comes before a 412 (RFC
		// 9110, 13.2.1), as it does for an If-Match naming a revision.
		err = fmt.Errorf("discovery: config revision %d of service %q is not in its history (it has no config): %w", to, name, ErrNotFound)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	rep, err := a.r.RollbackConfigIf(ctx, name, from, to)
	if err != nil {
		a.fail(w, err)
		return
	}
	a.r.log.Info("discovery: admin: config rolled back", zap.String("service", name), zap.Int64("to", to),
		zap.Int64("config_revision", rep.ConfigRevision), zap.String("by", who.caller()))
	a.writeConfigReport(w, name, rep)
}

// configRevisionParam reads the configuration revision a path names: a
// positive decimal number as the ETag and the JSON give it ("3"), nothing
// else ("03", "+3", "-1", "0": bad input).
func configRevisionParam(s string) (int64, error) {
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rev < 1 || strconv.FormatInt(rev, 10) != s {
		if len(s) > 64 {
			s = s[:64] + "..."
		}
		return 0, &ValidationError{Field: "config revision", Value: s, Reason: "must be a configuration revision: a whole number from 1"}
	}
	return rev, nil
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
