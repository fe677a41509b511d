package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// TransportOption configures the http.RoundTripper of Registry.Transport.
type TransportOption interface{ applyTransport(*transportOptions) }

type transportOptionFunc func(*transportOptions)

func (f transportOptionFunc) applyTransport(o *transportOptions) { f(o) }

type transportOptions struct {
	base        http.RoundTripper
	resolve     func(host string) (service string, ok bool)
	retries     int
	budgetRatio float64
	budgetMin   float64
	pickOpts    func(*http.Request) []PickOption
}

// BaseTransport sets the RoundTripper that carries requests to instances
// (by default a clone of http.DefaultTransport, or one with net/http's
// defaults if a program replaced that by another kind of RoundTripper, that
// every Transport of the Registry given no base shares, and whose idle
// connections Close closes; nil, or a nil pointer, leaves that default).
// Another RoundTripper, such as auth's token adder, may wrap it or be
// wrapped by it.
//
// An https request reaches the base with the instance's address in its URL.
// When the base is an *http.Transport (the default is one), the Transport
// sends it through a clone of the base per host name, whose TLS config
// names the host the caller asked for (the service name), so the instance's
// certificate is verified against that name, not the address; a ServerName
// set in the base's TLSClientConfig is kept, for every request. The
// Registry keeps the clones of the 256 host names used last (an older one's
// idle connections are closed, one busy then once its answer's body ends),
// shared by its Transports of the same base,
// and closes their idle connections on Close (one busy then, once its
// answer's body ends). Any other RoundTripper (an
// *http.Transport wrapped by instrumentation, say) gets the request as it
// is: if it dials TLS with net/http, the server name is the instance's
// address, which a certificate for the service does not name, unless its
// TLS config sets ServerName.
func BaseTransport(rt http.RoundTripper) TransportOption {
	return transportOptionFunc(func(o *transportOptions) {
		o.base = rt
		if core.IsNil(rt) { // a nil *http.Transport panicked in the request
			o.base = nil
		}
	})
}

// ServiceFromHost sets how a request's host names a service. By default
// the host (without port) is the service name: http://db_svc/users.
// Requests whose host the function refuses go to the base transport as
// they are.
func ServiceFromHost(fn func(host string) (service string, ok bool)) TransportOption {
	return transportOptionFunc(func(o *transportOptions) { o.resolve = fn })
}

// Retries sets how many times an idempotent request that failed (a
// connection error or a 5xx) is retried on another instance (1 by default;
// 0 disables retries). When no other instance is left to take a retry, or
// the budget is spent, the caller gets the last answer (or error) it had.
func Retries(n int) TransportOption {
	return transportOptionFunc(func(o *transportOptions) { o.retries = n })
}

// RetryBudget bounds retries to ratio of requests plus minPerSecond (20%
// and 10/s by default, as Finagle's budget), so retries cannot multiply the
// load of an outage. A value that is not a finite number of at least 0
// (NaN, which switched the budget off, Inf, a negative) leaves that
// default: a Transport has no error to return. Each Transport (and each
// HTTPClient) has a budget of its own, which starts with minPerSecond
// tokens (10 by default) and holds at most that many, or 10 if that is
// more: make one per program (or per downstream) and share it, since one made
// per request retries every request that fails.
func RetryBudget(ratio float64, minPerSecond float64) TransportOption {
	return transportOptionFunc(func(o *transportOptions) {
		if ratio >= 0 && !math.IsInf(ratio, 1) { // false for NaN
			o.budgetRatio = ratio
		}
		if minPerSecond >= 0 && !math.IsInf(minPerSecond, 1) {
			o.budgetMin = minPerSecond
		}
	})
}

// PickOptionsFrom derives Pick options (filters, hash keys, strategy) from
// each request.
func PickOptionsFrom(fn func(*http.Request) []PickOption) TransportOption {
	return transportOptionFunc(func(o *transportOptions) { o.pickOpts = fn })
}

// WithHandler gives a router instance's http.Handler: a Transport of the
// same Registry serves requests picked to this instance in-process. The
// response streams as from net/http's server: the caller gets it at the
// handler's first write or flush (or its return) and the body as it is
// written (the handler's http.ResponseWriter is an http.Flusher; it may
// write 64 KiB ahead of the caller's reads, as into a socket's buffers; it
// is an http.Hijacker too, as an HTTP/1 server's, until the caller has the
// response, and a 101 written on the connection gives the caller a
// writable body, so an Upgrade works in-process),
// a body of a declared length ends once written, and closing the body
// before its end ends the handler's request context (which, as a
// server's, holds none of the caller's values). The request is as
// net/http's server gives it from net/http's client: the User-Agent that
// client sends (Go-http-client/1.1 unless the request sets one), a
// loopback RemoteAddr and, for https, a TLS state (r.TLS) naming the host
// asked for, though no client certificate; it is not offered gzip, which
// net/http's client would inflate again. Register refuses it for an
// HTTP instance, whose requests go over the network, and it given twice
// (the second would replace the first).
func WithHandler(h http.Handler) RegisterOption {
	return regOptionFunc(func(o *regOptions) {
		o.noteTwice("handler", o.handler != nil)
		o.handler = h
		o.noteNil("handler", h == nil)
	})
}

// Transport returns an http.RoundTripper that sends requests for
// http://<service>/path to an instance chosen by Pick (https://<service>
// verifies the instance's certificate against the service name: see
// BaseTransport; a request with another scheme goes to the base transport
// as it is), reports each outcome (connection errors, a body the instance
// cuts short, 5xx and the caller's deadline passing before the response's
// headers as failures, 429 and 503 with Retry-After as overload, the
// caller's cancellation (of its context, or through Request.Cancel, as
// http.Client does), the caller's deadline passing while it reads the body
// (a long poll or an event stream the caller ends: the instance had
// answered; but not one whose declared length none came of while the
// caller waited: a stall, a failure), a request that ended before it was sent, or a request body
// that failed to read or was not its declared length, as neither, and none
// of them retried; a TLS certificate refused, either way, is a failure only
// when the latest https request to that host name was answered, and
// otherwise the caller's own configuration, neither: see README's failure
// modes) when the response's body is closed or read to its
// end (in flight until then, or, dropped unclosed, until it is garbage
// collected; its latency is the time to the response's
// headers, not the body's life, which a stream or a slow reader makes the
// caller's), and retries idempotent requests once on another instance
// under a retry budget. A response names the caller's request
// (Response.Request, against which Location resolves), not the instance's
// address. A request net/http would not send to any
// instance (no URL or Header, a method or header name that is not a token,
// a Host with a byte a Host header cannot hold, a control character in a
// header value) is an error matching ErrInvalid, held against no instance.
func (r *Registry) Transport(opts ...TransportOption) http.RoundTripper {
	o := transportOptions{retries: 1, budgetRatio: 0.2, budgetMin: 10}
	for _, opt := range opts {
		if opt != nil {
			opt.applyTransport(&o)
		}
	}
	if o.base == nil {
		o.base = r.pools.defaultBase()
	}
	if o.resolve == nil {
		o.resolve = func(host string) (string, bool) { return host, true }
	}
	t := &transport{r: r, o: o}
	t.budget.tokens, t.budget.max = o.budgetMin, max(o.budgetMin, 10)
	t.budget.last = r.clock.Now()
	return t
}

// HTTPClient returns an http.Client that uses Transport. Make one and
// share it: each has a retry budget of its own (its connections are the
// Registry's, shared).
func (r *Registry) HTTPClient(opts ...TransportOption) *http.Client {
	return &http.Client{Transport: r.Transport(opts...)}
}

type transport struct {
	r      *Registry
	o      transportOptions
	budget retryBudget
	// trust tells whose fault a refused certificate is.
	trust tlsTrust
	// Retried counts retries made, for tests and metrics.
	retried atomic.Uint64
}

// transportPools is what a Registry's Transports share, and what Close
// releases: the base made for those not given one (one pool of
// connections, not one per Transport or HTTPClient call), and the clones of
// *http.Transport bases per host name of https requests, whose TLS config
// names the host (a pool of its own: a connection verified for one name
// never serves another), the maxTLSClones most recently used. The
// connections of either outlived Close, their goroutines with them.
type transportPools struct {
	mu     sync.Mutex
	base   *http.Transport // the default base, once a Transport needs it
	clones sync.Map        // tlsKey → *tlsClone
	n      int             // clones held, under mu
	uses   atomic.Uint64   // https requests through the clones: their clock
}

// maxTLSClones bounds the clones a Registry keeps of *http.Transport bases,
// one per base and host name of https requests. A clone for every name
// ever asked for grew without bound under a ServiceFromHost that maps many
// host names to services.
const maxTLSClones = 256

type tlsKey struct {
	base *http.Transport
	name string
}

// tlsClone is a clone of a base for one host name.
type tlsClone struct {
	t       *http.Transport
	used    atomic.Uint64 // uses at its latest use
	retired atomic.Bool   // evicted: no longer handed out
}

// defaultTransport returns a clone of http.DefaultTransport, or, when a
// program replaced it by another RoundTripper (a tracing wrapper, say), a
// transport with net/http's defaults: the type assertion panicked there.
func defaultTransport() *http.Transport {
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		return dt.Clone()
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// defaultBase returns the base of Transports not given one: a clone of
// http.DefaultTransport, made once.
func (p *transportPools) defaultBase() *http.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.base == nil {
		p.base = defaultTransport()
	}
	return p.base
}

// baseFor returns the RoundTripper for out, a request to the instance
// for the host name the caller asked for, and the per-host-name clone it
// is, if it is one.
func (t *transport) baseFor(out *http.Request, name string) (http.RoundTripper, *tlsClone) {
	ht, ok := t.o.base.(*http.Transport)
	if !ok || out.URL.Scheme != "https" || name == "" || ht.TLSClientConfig != nil && ht.TLSClientConfig.ServerName != "" {
		return t.o.base, nil
	}
	c := t.r.pools.clone(ht, name)
	return c.t, c
}

// clone returns the clone of base whose TLS config names the host name.
func (p *transportPools) clone(base *http.Transport, name string) *tlsClone {
	k := tlsKey{base, name}
	if c := p.use(k); c != nil {
		return c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.use(k); c != nil { // made while this one waited
		return c
	}
	if p.n >= maxTLSClones {
		p.evict()
	} else {
		p.n++
	}
	c := &tlsClone{t: base.Clone()}
	if c.t.TLSClientConfig == nil {
		c.t.TLSClientConfig = &tls.Config{}
	}
	c.t.TLSClientConfig.ServerName = name
	c.used.Store(p.uses.Add(1))
	p.clones.Store(k, c)
	return c
}

// use returns the clone of k, marked as used now, or nil.
func (p *transportPools) use(k tlsKey) *tlsClone {
	v, ok := p.clones.Load(k)
	if !ok {
		return nil
	}
	c := v.(*tlsClone)
	c.used.Store(p.uses.Add(1))
	return c
}

// evict drops the least recently used clone and closes its idle
// connections; it is retired, and each answer of it read to its end or
// closed after closes those idle then (see send). Called with mu held.
func (p *transportPools) evict() {
	var (
		oldest   any
		old      *tlsClone
		oldestAt uint64
	)
	p.clones.Range(func(k, v any) bool {
		c := v.(*tlsClone)
		if u := c.used.Load(); old == nil || u < oldestAt {
			oldest, old, oldestAt = k, c, u
		}
		return true
	})
	if old != nil {
		p.clones.Delete(oldest)
		old.retired.Store(true)
		old.t.CloseIdleConnections()
	}
}

// closeIdle closes the idle connections of the clones of base, or of every
// clone and the default base if base is nil (Close).
func (p *transportPools) closeIdle(base *http.Transport) {
	p.clones.Range(func(k, c any) bool {
		if base == nil || k.(tlsKey).base == base {
			c.(*tlsClone).t.CloseIdleConnections()
		}
		return true
	})
	if base == nil {
		p.mu.Lock()
		b := p.base
		p.mu.Unlock()
		if b != nil {
			b.CloseIdleConnections()
		}
	}
}

// CloseIdleConnections closes the base transport's idle connections, if it
// can (http.Client.CloseIdleConnections calls it), and those of its clones.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.o.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	if ht, ok := t.o.base.(*http.Transport); ok {
		t.r.pools.closeIdle(ht)
	}
}

// refuse ends a request that is sent nowhere: RoundTrip must always close
// the body.
func refuse(req *http.Request, err error) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return nil, err
}

// errStatus marks a 5xx answer as a failure of the instance.
type errStatus int

func (e errStatus) Error() string { return "discovery: instance answered " + strconv.Itoa(int(e)) }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil { // net/http's error, not a panic
		return refuse(req, &ValidationError{Field: "url", Value: "nil", Reason: "a request needs a URL"})
	}
	// Only http and https (or no scheme: http) reach an instance. Another
	// scheme goes to the base as it is, as a host the resolver refuses does:
	// net/http refuses it for any host (or a protocol registered with the
	// base serves it); resolved, each refusal was held against the picked
	// instance and retried on another, and a few ejected healthy instances.
	if s := req.URL.Scheme; s != "" && s != "http" && s != "https" {
		return t.o.base.RoundTrip(req)
	}
	service, ok := t.o.resolve(req.URL.Hostname())
	if !ok {
		return t.o.base.RoundTrip(req)
	}
	if err := sendable(req); err != nil {
		// The caller's mistake, which the base transport refuses for any
		// instance: refused before a pick, it counts against none (each
		// counted as the instance's failure, and was retried elsewhere).
		return refuse(req, err)
	}
	var pickOpts []PickOption
	if t.o.pickOpts != nil {
		pickOpts = t.o.pickOpts(req)
	}
	t.budget.deposit(t.o.budgetRatio)
	canRetry := isIdempotent(req) && (req.Body == nil || req.Body == http.NoBody || req.GetBody != nil)
	sel, err := t.r.Pick(req.Context(), service, pickOpts...)
	if err != nil {
		return refuse(req, err)
	}
	var again io.ReadCloser // the body of a retry (GetBody)
	for attempt := 0; ; attempt++ {
		resp, callers, err := t.send(req, sel, attempt > 0, again)
		// A request the caller got wrong fails on any instance: no retry.
		failed := err != nil && !callerEnded(req) && !callers || err == nil && resp.StatusCode >= 500
		// A caller out of time (or gone) keeps the answer it has: a retry
		// could only fail, and its instance's Done counted the caller's
		// deadline against that instance.
		if !failed || !canRetry || attempt >= t.o.retries || callerEnded(req) {
			return resp, err
		}
		// Find another instance before giving up this answer: with none,
		// the caller gets the instance's own answer (or error).
		if !t.budget.withdraw(t.r.clock.Now(), t.o.budgetMin) {
			return resp, err
		}
		// The body once more, before this answer is given up: asked
		// after, a GetBody that failed left the caller its error, the
		// answer it had drained and closed.
		var got bool
		if again, got = bodyAgain(req, resp); !got {
			t.budget.deposit(1) // no retry made
			return resp, err
		}
		pickOpts = append(pickOpts[:len(pickOpts):len(pickOpts)], Exclude(sel.Instance.ID))
		next, perr := t.r.Pick(req.Context(), service, pickOpts...)
		if perr != nil {
			t.budget.deposit(1) // no retry made
			if again != nil {
				_ = again.Close()
			}
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
		}
		t.retried.Add(1)
		sel = next
	}
}

// bodyAgain returns the request's body for a retry (GetBody; nil without
// one), and false if it cannot be had. A GetBody that panics closes resp
// first: the answer's instance is done with (its Selection ends with the
// body), where its request stayed counted in flight for good.
func bodyAgain(req *http.Request, resp *http.Response) (body io.ReadCloser, ok bool) {
	if req.GetBody == nil {
		return nil, true
	}
	done := false
	defer func() {
		if !done && resp != nil {
			resp.Body.Close()
		}
	}()
	body, err := req.GetBody()
	done = true
	return body, err == nil
}

// errBrokenBase marks the error of a base RoundTripper that broke its
// contract (sound): the caller's transport, not the instance, failed.
var errBrokenBase = errors.New("discovery: broken base RoundTripper")

// sound checks a response a base RoundTripper returned with no error as
// net/http's Client does: a nil one is an error, as is a nil Body where the
// length says there is one; else a nil Body becomes an empty one. Taken as
// it came, the first panicked here, in the caller's goroutine, and the
// second in the caller's Close, with its request left in flight.
func sound(base http.RoundTripper, out *http.Request, resp *http.Response) error {
	switch {
	case resp == nil:
		return fmt.Errorf("%w: %T returned a nil *Response with a nil error", errBrokenBase, base)
	case resp.Body != nil:
	case resp.ContentLength > 0 && out.Method != http.MethodHead:
		return fmt.Errorf("%w: %T returned a *Response with content length %d but a nil Body", errBrokenBase, base, resp.ContentLength)
	default:
		resp.Body = http.NoBody
	}
	return nil
}

// send makes one attempt on the chosen instance and reports its outcome
// when the response body is closed (or at once on error). callers is true
// when the attempt failed because of the caller's body, which fails the
// same on any instance.
func (t *transport) send(req *http.Request, sel Selection, retry bool, again io.ReadCloser) (resp *http.Response, callers bool, err error) {
	// A panic on the way (the base RoundTripper's) goes on to the caller,
	// as net/http lets it, but the instance is done with: its
	// request stayed counted in flight for good, and it lost every
	// least-connections pick after. It is no outcome of the instance's.
	reported := false
	defer func() {
		if !reported {
			sel.Done(context.Canceled)
		}
	}()
	// unsent ends an attempt that sends nothing: the bodies closed, as a
	// RoundTripper must, and no outcome of the instance's.
	unsent := func() {
		if !retry && req.Body != nil {
			_ = req.Body.Close()
		}
		if again != nil {
			_ = again.Close()
		}
		reported = true
		sel.Done(context.Canceled)
	}
	if callerEnded(req) {
		// Ended before the instance was asked (a deadline spent upstream,
		// or during the pick): net/http's answer, and not the instance's
		// failure. Sent, the deadline's error counted against the instance,
		// and five such requests ejected a healthy one.
		unsent()
		if ctx := req.Context(); ctx.Err() != nil {
			return nil, false, context.Cause(ctx)
		}
		return nil, false, errRequestCanceled
	}
	if t.r.ctx.Err() != nil {
		// Close is closing (or has closed) the idle connections of the
		// Registry's transports: a request picked before and sent now
		// dialed again after that, and its connection stayed open and
		// idle, with two goroutines, for the IdleConnTimeout (90 s) after
		// Close returned (and let the connections of requests under way
		// stay open too: a request after CloseIdleConnections ends its
		// effect).
		unsent()
		return nil, false, ErrClosed
	}
	out := req.Clone(req.Context())
	// The caller's Trailer, not a copy: net/http lets a body set the
	// values as it is read, up to its EOF, in the request's own map (an
	// upload's checksum). Cloned, every declared trailer went out empty.
	out.Trailer = req.Trailer
	if again != nil {
		out.Body = again
	}
	// The caller's body is watched: a request that failed because reading
	// it did (a stream whose source broke), or because it was not as long
	// as declared, failed on the caller's side, and was held against the
	// instance, which a few such uploads ejected.
	// A replayable body (GetBody: NewRequest's in-memory readers) and a
	// file are not: their reads do not fail, and net/http sends them
	// better as they are (headers and body in one packet; sendfile). A
	// replayable one whose length is not the declared one (the caller set
	// ContentLength) is found after an error (replayMismatch); a file
	// whose rest is not the declared length is watched (fileHolds).
	var body *watchedBody
	if f, file := out.Body.(*os.File); out.Body != nil && out.Body != http.NoBody && out.GetBody == nil && (!file || !fileHolds(f, out.ContentLength)) {
		body = &watchedBody{ReadCloser: out.Body}
		out.Body = body
	}
	out.URL.Host = sel.Instance.Addr()
	if out.URL.Scheme == "" {
		out.URL.Scheme = "http"
	}
	if out.Host == "" { // a Host the caller set wins, as in net/http
		out.Host = req.URL.Host
	}
	start := time.Now()
	h := t.r.localHandler(sel.Instance)
	local := h != nil
	var clone *tlsClone
	if local {
		resp, err = serveLocal(h, out, req.URL.Hostname())
	} else {
		var base http.RoundTripper
		base, clone = t.baseFor(out, req.URL.Hostname())
		if resp, err = base.RoundTrip(out); err == nil {
			err = sound(base, out, resp)
		}
	}
	if err != nil {
		// before reported: a GetBody that panics leaves the deferred Done
		callers = body != nil && body.callers(out.ContentLength) || body == nil && replayMismatch(out)
		reported = true
		if callers || callerCanceled(req) || errors.Is(err, errBrokenBase) ||
			!local && certRefused(err) && !t.trust.refused(req.URL.Hostname()) {
			// A certificate refused with no answer under the name since
			// the last refusal is the caller's (see tlsTrust).
			sel.DoneLatency(context.Canceled, time.Since(start))
		} else {
			sel.DoneLatency(err, time.Since(start))
		}
		return nil, callers, err
	}
	if !local && out.URL.Scheme == "https" && provesTrust(resp.TLS, t.o.base) {
		t.trust.answered(req.URL.Hostname())
	}
	// The response names the caller's request, to the service, as the one
	// the caller sent: named for the instance's address, resp.Location()
	// resolved a relative Location against that address, and a caller
	// that followed it reached that one instance around Pick.
	resp.Request = req
	// The latency is the time to the response's headers: the body's life
	// is the caller's (an event stream read for an hour, a download at
	// the caller's pace), no measure of the instance's speed, as a gRPC
	// stream's is not. Taken at the body's end, one stream made its
	// instance's average an hour, and p2c_ewma shunned it for minutes.
	// The request stays in flight until the body ends.
	latency := time.Since(start)
	var outcome error
	switch {
	case resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		// an instance shedding load (ErrOverloaded): counted as a
		// failure, it was ejected, and its load went to the others
		outcome = ErrOverloaded
	case resp.StatusCode >= 500:
		outcome = errStatus(resp.StatusCode)
	}
	if resp.Body == http.NoBody || resp.ContentLength == 0 || out.Method == http.MethodHead || !bodyAllowedForStatus(resp.StatusCode) {
		// Nothing to read: net/http lets the caller leave it unclosed, so
		// the request ends here (waiting for a Close kept it in flight).
		// Over HTTP/2 such a body is not http.NoBody but the protocol's
		// own: the answer to a HEAD, or a 204 or 304, has none either way.
		// An upgrade (101) ends with its handshake too: its body is the
		// connection, which the caller asserts writable (a wrapper hid
		// that), and whose life is no request's latency.
		reported = true
		sel.DoneLatency(outcome, latency)
		// Closed (or the clone evicted) while the instance answered: as
		// at a body's end (see end.done), the connection went idle after
		// the pool was emptied. Over HTTP/2 net/http's RoundTrip has
		// waited for such a stream to end, so it is idle now; left, it
		// stayed open for the base's idle timeout (for ever in a clone
		// of a base without one), its reader goroutine with it.
		if !local && t.r.closed.Load() {
			t.r.pools.closeIdle(nil)
		} else if clone != nil && clone.retired.Load() {
			clone.t.CloseIdleConnections()
		}
		return resp, false, nil
	}
	// What end holds must not refer to the answer, which a body may (a
	// chunked one's trailers go to its Response): see doneBody.
	end := &bodyEnd{}
	end.done = func(readErr error, body io.Closer, waitedSince time.Time) {
		o := outcome
		if o == nil && readErr != nil {
			// The instance cut the body short (a connection error, its
			// server gone mid-body): its failure. A read that failed
			// because the caller ended the request (its context done, by
			// cancellation or deadline, or Request.Cancel closed, as
			// http.Client.Timeout does) is neither: the instance had
			// answered (headers and status) and was sending, and the
			// body's life is the caller's, as its latency is. Counted as
			// the instance's failure, five long-poll or event-stream
			// callers whose deadlines were shorter than their streams
			// ejected a healthy instance.
			//
			// But an answer that declared its length and then sent none
			// of it while the caller waited (since before its deadline)
			// is a stall, the instance's, as no headers in time are: it
			// knew its whole answer (Envoy, whose route timeout covers
			// the body, counts any such as a gateway failure). A long
			// poll or an event stream has no declared length (it is
			// chunked), and a body that was flowing (a download longer
			// than the deadline) has had some. The price: an instance
			// that stalls after some of its body, or a stream's, is not
			// ejected by its callers' deadlines; its health check still
			// finds it hung.
			o = readErr
			if callerEnded(req) {
				o = context.Canceled
				if dl, ok := req.Context().Deadline(); ok && !waitedSince.IsZero() && waitedSince.Before(dl) && !callerCanceled(req) {
					o = errStalled
				}
			}
		}
		sel.DoneLatency(o, latency)
		if !local && t.r.closed.Load() {
			// The Registry closed while this answer was read: Close
			// emptied the pools, and this connection, idle once the body
			// is closed, stayed open after it (an HTTP/2 one for the
			// base's idle timeout, for ever in a clone of a base without
			// one), its goroutines with it. Closing a body at its end is
			// harmless; the caller's Close then does nothing more.
			_ = body.Close()
			t.r.pools.closeIdle(nil)
		} else if clone != nil && clone.retired.Load() {
			// The clone was evicted (more host names than maxTLSClones)
			// while this answer was read: its pool emptied then, and an
			// HTTP/2 connection busy then stayed open once idle, for the
			// base's idle timeout (for ever without one), with nothing to
			// hand it out again.
			_ = body.Close()
			clone.t.CloseIdleConnections()
		}
	}
	// A body dropped unclosed tells nothing of the instance, but its
	// status may have: a 5xx (or an overload) is its outcome, known at the
	// headers. Taken as no outcome, an instance answering 500 to callers
	// that return on the status without closing (the commonest leak) was
	// never ejected.
	dropped := outcome
	if dropped == nil {
		dropped = context.Canceled
	}
	end.dropped = func() { sel.DoneLatency(dropped, latency) }
	if lb, ok := resp.Body.(*localBody); ok {
		// An in-process handler still writing to a body dropped unclosed
		// ends, as a server's does when its client goes away. Its writer,
		// not the body, which refers to the answer.
		w := lb.w
		end.dropped = func() {
			sel.DoneLatency(dropped, latency)
			w.abandon()
		}
	}
	answer := &doneBody{ReadCloser: resp.Body, end: end, sized: resp.ContentLength > 0}
	answer.cleanup = runtime.AddCleanup(answer, (*bodyEnd).drop, end)
	resp.Body = answer
	reported = true // by the body, when it is closed or read to its end
	return resp, false, nil
}

// fileHolds reports whether the rest of f (from its offset) is n bytes
// long, or its length cannot be told (n is not above 0, f is no regular
// file): such a file is sent as it is. One that is not is refused by
// net/http, the caller's mistake, which blamed the instance.
func fileHolds(f *os.File, n int64) bool {
	if n <= 0 {
		return true
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return true
	}
	off, err := f.Seek(0, io.SeekCurrent)
	return err != nil || fi.Size()-off == n
}

// replayMismatch reports whether out, whose attempt failed, has a
// replayable body (GetBody) that is not the length it declares: net/http
// refuses it ("ContentLength=10 with Body length 3") whatever the
// instance. Such a body is not watched (see send), so it is read once more
// from GetBody, on this error path alone, up to one byte past the length.
func replayMismatch(out *http.Request) bool {
	if out.GetBody == nil || out.ContentLength <= 0 || out.Body == nil || out.Body == http.NoBody {
		return false
	}
	b, err := out.GetBody()
	if err != nil || b == nil {
		return false
	}
	defer b.Close()
	n, err := io.Copy(io.Discard, io.LimitReader(b, out.ContentLength+1))
	return err == nil && n != out.ContentLength
}

// callerCanceled reports whether the caller gave up on req: its context
// was cancelled, or its Cancel channel closed before the context's
// deadline. A deadline that passed before the response's headers is not
// that: the instance did not answer in the time the caller gives a call
// (http.Client.Timeout sets one), which Done counts as a failure, as it
// does the same error from a caller that picks by hand; a hung instance is
// ejected, not picked for ever. Once the headers came, the body's end is
// judged by callerEnded instead (see send).
func callerCanceled(req *http.Request) bool {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return errors.Is(err, context.Canceled)
	}
	if !cancelClosed(req) {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Now().Before(dl)
}

// callerEnded reports whether the caller ended req: its context is done,
// or its Cancel channel is closed. http.Client ends a request at its
// Timeout by closing Cancel when its RoundTripper is not net/http's (this
// one), on a timer of its own that races the context's deadline, and older
// callers cancel that way too: watching the context alone, such a request
// was retried on another instance after its caller had given up, and one
// ended before it was sent counted against an instance it never reached.
func callerEnded(req *http.Request) bool {
	return req.Context().Err() != nil || cancelClosed(req)
}

// cancelClosed reports whether req's (deprecated) Cancel channel is closed.
// http.Client still closes it at its Timeout for a RoundTripper that is not
// net/http's own, as this one is not.
func cancelClosed(req *http.Request) bool {
	c := cancelOf(req)
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// errRequestCanceled answers a request whose Cancel channel was closed
// before it was sent, as net/http does.
var errRequestCanceled = errors.New("discovery: request canceled (its Cancel channel is closed)")

// watchedBody is a request's body that notes whether a read of it failed,
// and how long it was. Atomics: net/http reads it on its write goroutine.
type watchedBody struct {
	io.ReadCloser
	failed, ended atomic.Bool
	n             atomic.Int64
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	switch {
	case err == io.EOF:
		b.ended.Store(true)
	case err != nil:
		b.failed.Store(true)
	}
	return n, err
}

// callers reports whether the body made the request fail on the caller's
// side: a read of it failed, or it ended at a length other than the one
// declared (net/http refuses it: "ContentLength=10 with Body length 3").
func (b *watchedBody) callers(declared int64) bool {
	return b.failed.Load() || declared > 0 && b.ended.Load() && b.n.Load() != declared
}

// doneBody reports the outcome once, when the body is closed or read to
// its end, so in-flight counts cover the whole response; or, if the
// caller drops it unclosed, when it is garbage (a cleanup, with the
// status's outcome alone, a 5xx's failure, say): such a body kept its
// instance counted in flight for good, and
// least_connections and p2c_ewma shunned it. What the cleanup holds
// (bodyEnd) must not refer to the doneBody, or it is never garbage.
type doneBody struct {
	io.ReadCloser
	end     *bodyEnd
	cleanup runtime.Cleanup
	// sized is set when the answer declared its length; then got is set
	// once a byte of it came, and waitFrom is when the caller first read
	// before that (see bodyEnd.done). Read's alone.
	sized    bool
	got      bool
	waitFrom time.Time
}

// errStalled is the outcome of an answer that declared its length and
// sent none of its body before the caller's deadline, while the caller
// waited for it.
var errStalled = errors.New("discovery: instance sent none of the body it declared before the caller's deadline")

// bodyEnd is how a doneBody ends: done when it is closed or read to its
// end, dropped when it is garbage first; once.
type bodyEnd struct {
	once sync.Once
	// done is given the read's error (nil at a close or the end), and
	// when the caller began to wait for a declared body none of which
	// came (zero if some did, or none was declared).
	done    func(readErr error, body io.Closer, waitedSince time.Time)
	dropped func()
}

func (e *bodyEnd) drop() { e.once.Do(e.dropped) }

func (b *doneBody) finish(readErr error) {
	var since time.Time
	if readErr != nil && !b.got { // read on Read's goroutine alone
		since = b.waitFrom
	}
	b.end.once.Do(func() { b.end.done(readErr, b.ReadCloser, since) })
	b.cleanup.Stop()
}

func (b *doneBody) Read(p []byte) (int, error) {
	if b.sized && !b.got && b.waitFrom.IsZero() && len(p) > 0 {
		b.waitFrom = time.Now() // once per sized answer
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.sized {
		b.got = true
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.finish(nil)
	default:
		b.finish(err)
	}
	return n, err
}

func (b *doneBody) Close() error {
	b.finish(nil)
	return b.ReadCloser.Close()
}

// sendable refuses a request that net/http will not send, whatever the
// instance: a nil Header, a method that is not a token, a Host with a byte
// a Host header cannot hold, a header name that is not a token, a header
// value with a control character other than a tab.
func sendable(req *http.Request) error {
	if req.Header == nil { // net/http's Transport refuses it ("nil Request.Header")
		return &ValidationError{Field: "header", Value: "nil", Reason: "a request needs a Header (http.NewRequest makes one)"}
	}
	if req.Method != "" && !isToken(req.Method) {
		return &ValidationError{Field: "method", Value: req.Method, Reason: "not an HTTP token"}
	}
	for i := 0; i < len(req.Host); i++ {
		if c := req.Host[i]; !isAlnum(c) && strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) < 0 {
			return &ValidationError{Field: "host", Value: req.Host, Reason: "not a valid Host header"}
		}
	}
	for name, values := range req.Header {
		if !isToken(name) {
			return &ValidationError{Field: "header name", Value: name, Reason: "not an HTTP token"}
		}
		for _, v := range values {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
					return &ValidationError{Field: "header value", Value: name, Reason: "holds a control character"}
				}
			}
		}
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110, 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isIdempotent is net/http's rule: GET, HEAD, OPTIONS and TRACE, or any
// request whose header has an Idempotency-Key or X-Idempotency-Key entry,
// even a zero-length one (net/http's way to mark a request idempotent
// without sending the header, which reading the value missed).
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// retryBudget is a token bucket: every request deposits ratio of a token,
// minPerSecond tokens arrive each second, and a retry spends one.
type retryBudget struct {
	mu     sync.Mutex
	tokens float64
	max    float64
	last   time.Time
}

func (b *retryBudget) deposit(ratio float64) {
	b.mu.Lock()
	b.tokens = min(b.max, b.tokens+ratio)
	b.mu.Unlock()
}

func (b *retryBudget) withdraw(now time.Time, perSecond float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.max, b.tokens+perSecond*d.Seconds())
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// localHandler returns the handler of a router instance registered by this
// Registry, or nil.
func (r *Registry) localHandler(in *Instance) http.Handler {
	if in.Method != MethodRouter {
		return nil
	}
	r.regMu.Lock()
	defer r.regMu.Unlock()
	for g := range r.regs {
		if g.service == in.Service && g.id == in.ID {
			return g.opts.handler
		}
	}
	return nil
}
