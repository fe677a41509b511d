package discovery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// serveLocal serves a request in-process as net/http's server would: the
// handler sees a non-nil body, which is closed when it returns, and a
// context that ends when the caller's does, when the caller closes the
// request's Cancel channel or the response body, and holds none of the
// caller's values. The caller gets the response when the handler first
// writes or flushes (or returns: a handler that wrote nothing gives
// http.NoBody), as net/http's server sends a header then, and the body as
// it is written, so a streaming handler streams. A panic before that is
// the instance's failure (an error, which send reports), one after it
// cuts the body short. A caller whose context ends (or whose Cancel
// channel closes) gets its error then, while a handler that does not
// watch the context runs on to its end, as a server's would.
//
// The handler sees the connection as over the network where a handler may
// look: the User-Agent net/http's client sends, a RemoteAddr on loopback,
// and for an https request a TLS state naming serverName, the host name the
// caller asked for (see localConn). It is not offered gzip: net/http's
// client asks for it and inflates the answer, so a caller gets the same
// bytes either way, and compressing in-process is work for nothing.
func serveLocal(h http.Handler, out *http.Request, serverName string) (*http.Response, error) {
	ctx := out.Context()
	if err := ctx.Err(); err != nil { // net/http sends nothing then
		if out.Body != nil {
			_ = out.Body.Close()
		}
		return nil, err
	}
	// The handler's context is a server's: none of the caller's values (a
	// handler saw them all, the identity the caller's auth middleware had
	// verified among them), ended when the caller's ends or it closes the
	// body.
	hctx, cancel := context.WithCancel(context.Background())
	in := serverRequest(out.WithContext(hctx))
	in.Header = requestHeader(out.Header)
	localConn(in, out.URL.Scheme, serverName)
	switch {
	case in.Body == nil || in.Body == http.NoBody:
		in.Body, in.ContentLength = http.NoBody, 0
	case in.ContentLength == 0:
		// the client's "unknown" is the server's -1: 0 is an empty body
		in.ContentLength = -1
	}
	// The framing net/http's client sends, from the request's fields and
	// never from its header, as its server reads it: in-process a handler
	// saw no Content-Length (one that requires it, or verifies a signature
	// over it, refused the request there alone) and whatever framing
	// header the caller's map held.
	for _, k := range [...]string{"Host", "Content-Length", "Transfer-Encoding", "Trailer"} {
		delete(in.Header, k)
	}
	in.TransferEncoding = nil
	switch m := in.Method; {
	case in.ContentLength < 0:
		in.TransferEncoding = []string{"chunked"}
	case in.ContentLength > 0 || m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch:
		in.Header.Set("Content-Length", strconv.FormatInt(in.ContentLength, 10))
	}
	pipe := newLocalPipe()
	w := &localWriter{req: out, header: make(http.Header), pipe: pipe, cancel: cancel, answer: make(chan localAnswer, 1), length: -1}
	// The body's reader gets the caller's error once the caller ends the
	// request (its context, or its Cancel channel, which net/http's
	// Transport watches too: watching the context alone, a caller that
	// closed Cancel waited in-process for a handler that did not answer,
	// and read a stream on), and the handler's context ends.
	end := func(err error) { pipe.CloseWrite(err); cancel() }
	stop := context.AfterFunc(ctx, func() { end(ctx.Err()) })
	stopCancel := onCancelClosed(out, func() { end(errRequestCanceled) })
	go func() {
		defer cancel()
		defer stop()
		defer stopCancel()
		w.serve(h, in, out.Body)
	}()
	var err error
	select {
	case a := <-w.answer:
		return a.resp, a.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-cancelOf(out):
		err = errRequestCanceled
	}
	pipe.CloseRead(err) // the handler's writes fail
	w.hj.abort()        // and its hijacked connection's
	return nil, err
}

// cancelOf returns req's (deprecated) Cancel channel, nil if it has none.
func cancelOf(req *http.Request) <-chan struct{} {
	//lint:ignore SA1019 http.Client still ends requests through it at its Timeout, for a RoundTripper not net/http's
	return req.Cancel
}

// onCancelClosed calls f once req's Cancel channel closes, unless stop was
// called first: the goroutine that waits for it ends either way.
func onCancelClosed(req *http.Request, f func()) (stop func()) {
	c := cancelOf(req)
	if c == nil {
		return func() {}
	}
	quit := make(chan struct{})
	go func() {
		select {
		case <-c:
			f()
		case <-quit:
		}
	}()
	return func() { close(quit) }
}

// serverRequest puts in (a copy of the request as sent) in the form
// net/http's server gives a handler: HTTP/1.1, a RequestURI, and a URL
// parsed from it (the path and query alone). The client's form, a URL
// holding the instance's address, made a router that matches the host
// (reading URL.Host when the URL is absolute) or logs RequestURI behave
// otherwise in-process than over the network.
func serverRequest(in *http.Request) *http.Request {
	// The protocol net/http's client speaks, whatever the Request says: a
	// literal one has no Proto, and a handler that checked
	// ProtoAtLeast(1, 1) (a WebSocket handshake) refused it in-process.
	in.Proto, in.ProtoMajor, in.ProtoMinor = "HTTP/1.1", 1, 1
	in.RequestURI = in.URL.RequestURI()
	if u, err := url.ParseRequestURI(in.RequestURI); err == nil {
		in.URL = u
	} else {
		in.URL = &url.URL{Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery}
	}
	return in
}

type localAnswer struct {
	resp *http.Response
	err  error
}

// localWriter is the http.ResponseWriter (and http.Flusher) of a request
// served in-process. Its methods run on the handler's goroutine.
type localWriter struct {
	req    *http.Request // as sent: Response.Request
	header http.Header
	// wrote is the header as it was at WriteHeader, the one the caller
	// gets, as net/http's server sends it: a header set after WriteHeader
	// reached the caller in-process alone.
	wrote  http.Header
	status int // 0 until WriteHeader
	// answered is set once the caller has its response. The writer keeps
	// no pointer to that response: the caller's body wraps it (doneBody),
	// and reached from a handler blocked on a caller who dropped the body
	// unclosed, it was never garbage, so the request stayed in flight and
	// the handler blocked for as long as the process ran (abandon).
	answered bool
	discard  bool // the response has no body: writes are eaten
	pipe     *localPipe
	cancel   context.CancelFunc
	answer   chan localAnswer // one answer, buffered
	trailer  http.Header      // set before pw is closed, read at EOF
	// declared is the trailers the header named when the caller was
	// answered: that header is the caller's since, to change at will.
	declared []string
	hj       localHijack
	// length is the body's declared Content-Length (-1 if none) and sent
	// the bytes of it written: as from net/http's server, a write past it
	// fails and a body that ends short of it is cut short.
	length, sent int64
}

func (w *localWriter) serve(h http.Handler, in *http.Request, body io.ReadCloser) {
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					err = errors.New("discovery: in-process handler aborted")
				} else {
					err = fmt.Errorf("discovery: in-process handler panicked: %v", p)
				}
			}
		}()
		h.ServeHTTP(w, in)
	}()
	if body != nil {
		_ = body.Close()
	}
	if w.hj.taken() {
		// The connection, and the answer on it, are the handler's: as
		// net/http's server, nothing more is sent, even after a panic.
		return
	}
	switch {
	case err != nil && !w.answered:
		w.answer <- localAnswer{err: err}
		w.pipe.CloseRead(nil)
	case err != nil:
		w.pipe.CloseWrite(err) // the caller's read fails, once it has read what was written
	case w.length >= 0 && w.sent < w.length && !w.discard:
		// net/http's server closes the connection: the caller reads what
		// came, then io.ErrUnexpectedEOF, a body cut short
		w.pipe.CloseWrite(io.ErrUnexpectedEOF)
	case !w.answered && w.declaresUnwrittenBody():
		// None of it written: cut short all the same (net/http's server
		// sends the header, then closes the connection). Answered as a
		// handler that wrote nothing is, the caller read an empty body to
		// a clean EOF under the declared length, and counted a success.
		w.commit(nil, false)
		w.pipe.CloseWrite(io.ErrUnexpectedEOF)
	default:
		w.commit(nil, true)
		if w.length < 0 {
			// a body of a declared length ended when written (and sends
			// no trailers over the network: it is not chunked)
			w.trailer = w.trailers()
		}
		w.pipe.CloseWrite(nil)
	}
}

// declaresUnwrittenBody reports whether the header declares a body (a
// Content-Length above 0, on a response that has one) that the handler,
// which returned before it answered the caller, never wrote.
func (w *localWriter) declaresUnwrittenBody() bool {
	cl, err := strconv.ParseInt(w.sentHeader().Get("Content-Length"), 10, 64)
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	return err == nil && cl > 0 && w.req.Method != http.MethodHead && bodyAllowedForStatus(status)
}

func (w *localWriter) Header() http.Header { return w.header }

// sentHeader returns the header the caller gets: as it was at WriteHeader,
// or as it is if WriteHeader has not been called.
func (w *localWriter) sentHeader() http.Header {
	if w.wrote != nil {
		return w.wrote
	}
	return w.header
}

func (w *localWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	}
	if w.status != 0 || code < 200 && code != http.StatusSwitchingProtocols {
		return // superfluous, or informational: not the response
	}
	w.status = code
	w.wrote = w.header.Clone()
}

func (w *localWriter) Write(p []byte) (int, error) {
	if w.hj.taken() {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.commit(p, false)
	if w.discard {
		return len(p), nil
	}
	if w.length >= 0 && w.sent+int64(len(p)) > w.length {
		return 0, http.ErrContentLength // as net/http's server: none of it
	}
	n, err := w.pipe.Write(p)
	w.sent += int64(n)
	if w.length >= 0 && w.sent == w.length {
		// the whole declared body: the caller reads it to its end now,
		// as net/http's client does, not when the handler returns
		w.pipe.CloseWrite(nil)
	}
	return n, err
}

// Flush sends the header, if it is not sent yet: written bytes are with
// the caller's reader at once.
func (w *localWriter) Flush() {
	if !w.hj.taken() {
		w.commit(nil, false)
	}
}

// commit answers the caller, once: with the status and a copy of the
// header, and a body when one can follow.
func (w *localWriter) commit(p []byte, ended bool) {
	if w.answered || w.hj.taken() {
		return
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := wireHeader(w.sentHeader())
	// The header net/http's server sends, and the length its client reads
	// from it: without them, an empty answer's length was -1 (unknown)
	// in-process alone, and a 304 claimed a body it did not have.
	head := w.req.Method == http.MethodHead
	switch {
	case !bodyAllowedForStatus(w.status):
		// none of the body's headers (a 304's Content-Type neither)
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		if w.status == http.StatusNotModified {
			h.Del("Content-Type")
		}
	case len(p) > 0:
		// sniffed, unless the body is encoded (net/http's issue 31753) or
		// the handler set Content-Type, even to nil ("send none")
		if _, typed := w.sentHeader()["Content-Type"]; !typed && h.Get("Transfer-Encoding") == "" && h.Get("Content-Encoding") == "" {
			h.Set("Content-Type", http.DetectContentType(p))
		}
	case ended && !head && h.Get("Content-Length") == "" && h.Get("Transfer-Encoding") == "" && !w.hasTrailers():
		// the handler returned without a word: its length is known, 0
		h.Set("Content-Length", "0")
	}
	resp := &http.Response{
		Status:        strconv.Itoa(w.status) + " " + statusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Request:       w.req, // as net/http's transport sets it
		ContentLength: -1,
	}
	if cl, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && cl >= 0 {
		resp.ContentLength = cl
	}
	if !head && !bodyAllowedForStatus(w.status) {
		resp.ContentLength = 0 // as net/http's client reads a 1xx, 204 or 304
	}
	if ended || resp.ContentLength == 0 || w.req.Method == http.MethodHead || !bodyAllowedForStatus(w.status) {
		// as net/http's client gives an empty answer, and its server
		// sends none to a HEAD whatever the handler writes
		resp.Body, w.discard = http.NoBody, true
		if ended {
			resp.Trailer = w.trailers()
		}
	} else {
		if resp.ContentLength < 0 {
			// sent chunked: net/http's client moves the declaration
			// from the header to Trailer's keys (a body of a declared
			// length is not chunked, and has none: the declaration
			// stays in the header, with no keys that no value follows)
			w.declared = declaredTrailers(h)
			h.Del("Trailer")
		}
		for _, k := range w.declared {
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header)
			}
			resp.Trailer[k] = nil // its value comes with the body's end
		}
		resp.Body = &localBody{w: w, resp: resp}
		w.length = resp.ContentLength
	}
	w.answered = true
	w.answer <- localAnswer{resp: resp}
}

// trailers returns the trailers the handler set: the values of those the
// header declared (as it was when the caller was answered: reading the
// response's header, which the caller may be changing, was a data race, and
// a caller that deleted "Trailer" from it, as httputil.ReverseProxy does,
// lost the values), and those named with http.TrailerPrefix.
func (w *localWriter) trailers() http.Header {
	var t http.Header
	decl := w.declared
	if !w.answered {
		decl = declaredTrailers(w.sentHeader())
	}
	for _, k := range decl {
		if vv, ok := w.header[k]; ok {
			if t == nil {
				t = make(http.Header)
			}
			t[k] = append([]string(nil), vv...)
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = make(http.Header)
			}
			for _, v := range vv {
				t.Add(name, v)
			}
		}
	}
	return t
}

// defaultUserAgent is what net/http's client sends as User-Agent for a
// request that sets none.
const defaultUserAgent = "Go-http-client/1.1"

// requestHeader returns a request's header h as net/http's server reads
// it from net/http's client (see wireHeader), with the User-Agent the
// client writes: defaultUserAgent unless h has a User-Agent key, whose
// first value it sends (none if that is empty). In-process a handler saw
// no User-Agent at all, or every value of the key.
func requestHeader(h http.Header) http.Header {
	ua := defaultUserAgent
	if _, set := h["User-Agent"]; set {
		ua = h.Get("User-Agent")
	}
	out := wireHeaderWithout(h, "User-Agent")
	if ua = wireValue(ua); ua != "" {
		// first, before any value under a key set by hand in another case
		// ("user-agent"), which the client writes after it
		out["User-Agent"] = append([]string{ua}, out["User-Agent"]...)
	}
	return out
}

// localRemoteAddr is the RemoteAddr of a request served in-process: its
// caller is this process, on this host. Empty, as it was, a handler that
// splits it (net.SplitHostPort, for a rate limiter's key or a log line)
// failed in-process alone.
const localRemoteAddr = "127.0.0.1:0"

// localConn gives in the connection's side of a request served
// in-process: its RemoteAddr and, for an https request, the TLS state of
// a connection whose handshake completed for serverName (TLS 1.3, as
// net/http negotiates with itself). Without one, a handler that tells
// https from http by r.TLS (one that redirects plain requests to https,
// marks cookies Secure, or sets Strict-Transport-Security only over TLS)
// took an https caller for a plain one in-process alone. It holds no peer
// certificates: the caller's client certificate is not presented
// in-process.
func localConn(in *http.Request, scheme, serverName string) {
	in.RemoteAddr = localRemoteAddr
	if scheme == "https" {
		in.TLS = &tls.ConnectionState{
			Version:            tls.VersionTLS13,
			HandshakeComplete:  true,
			CipherSuite:        tls.TLS_AES_128_GCM_SHA256,
			NegotiatedProtocol: "http/1.1",
			ServerName:         serverName,
		}
	}
}

// wireHeader returns h as the far end of a connection reads it from
// net/http: keys canonical (the values of keys that differ only in case
// merged, in the order net/http writes them, sorted by key), values
// trimmed of spaces and tabs with line breaks as spaces, and no key that
// has no value, for which nothing is sent (nor one that names a trailer
// with http.TrailerPrefix, which goes after the body). Passed as it was,
// a header set by hand (req.Header["x-api-key"]) was found by Header.Get
// on the other side over the network alone, and net/http's way to send
// nothing (Idempotency-Key: nil, Date: nil) reached the other side
// in-process.
func wireHeader(h http.Header) http.Header { return wireHeaderWithout(h, "") }

// wireHeaderWithout is wireHeader leaving out the key skip, exactly as
// spelled (net/http's client writes its User-Agent apart).
func wireHeaderWithout(h http.Header, skip string) http.Header {
	keys := make([]string, 0, len(h))
	for k, vv := range h {
		if len(vv) > 0 && k != skip && !strings.HasPrefix(k, http.TrailerPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make(http.Header, len(keys))
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		for _, v := range h[k] {
			out[ck] = append(out[ck], wireValue(v))
		}
	}
	return out
}

// wireValue is a header value as net/http writes it: line breaks as
// spaces, trimmed of spaces and tabs.
func wireValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, v)
	}
	return textproto.TrimString(v)
}

// hasTrailers reports whether the handler declared or set trailers, for
// which net/http's server sends a body chunked, of no declared length.
func (w *localWriter) hasTrailers() bool {
	if len(declaredTrailers(w.sentHeader())) > 0 {
		return true
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func declaredTrailers(h http.Header) []string {
	var keys []string
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// statusText is the reason net/http's server sends with a status: its
// text, or "status code N" for a status that has none (a bare "N " was
// given in-process).
func statusText(code int) string {
	if text := http.StatusText(code); text != "" {
		return text
	}
	return "status code " + strconv.Itoa(code)
}

// bodyAllowedForStatus is net/http's rule: no body with a 1xx, 204 or 304.
func bodyAllowedForStatus(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// localBody is the body of an in-process response: what the handler
// writes, as it writes it. Closing it ends the handler's context, as a
// client that goes away does over the network.
type localBody struct {
	w    *localWriter
	resp *http.Response
}

func (b *localBody) Read(p []byte) (int, error) {
	n, err := b.w.pipe.Read(p)
	if err == io.EOF {
		for k, vv := range b.w.trailer { // set before the pipe closed
			if b.resp.Trailer == nil {
				b.resp.Trailer = make(http.Header)
			}
			b.resp.Trailer[k] = vv
		}
		b.w.trailer = nil
	}
	return n, err
}

// Close ends the handler's context unless the caller had the whole body:
// over the network, a client that closes a body it read to its end keeps
// the connection, and the handler that runs on keeps its context.
func (b *localBody) Close() error {
	b.w.abandon()
	return nil
}

// abandon is what closing the body does: the handler's writes fail from
// then on, and its context ends unless the caller had the whole body. The
// transport calls it too for a body dropped unclosed, once it is garbage:
// a handler blocked on a full pipe (a body larger than the pipe holds, an
// event stream) then waited for a reader gone, for ever.
func (w *localWriter) abandon() {
	if !w.pipe.drained() {
		w.cancel()
	}
	w.pipe.CloseRead(nil)
}

// EnableFullDuplex lets the handler read its request while it writes its
// response, as net/http's HTTP/1 server does when asked: in-process that
// is so already (the body is the caller's, the response a pipe), so there
// is nothing to do; answering http.ErrNotSupported failed a handler that
// asks for it in-process alone.
func (w *localWriter) EnableFullDuplex() error { return nil }

// errHijackAfterAnswer is Hijack's error once the caller has the response:
// its connection cannot be handed over then.
var errHijackAfterAnswer = errors.New("discovery: in-process handler hijacked its connection after its response was sent")

// Hijack hands the handler its connection, as net/http's HTTP/1 server
// does: one end of an in-memory pipe, from whose other end the caller
// reads the response the handler writes on it (a 101's body is that end,
// writable, as over the network). A header written with WriteHeader
// before goes first, as net/http's server flushes it; after a write or
// a flush (the caller has its response) the connection cannot be had.
func (w *localWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.answered {
		return nil, nil, errHijackAfterAnswer
	}
	server, err := w.hj.take(w.req, w.answer)
	if err != nil {
		return nil, nil, err
	}
	if w.status != 0 {
		_, _ = fmt.Fprintf(server, "HTTP/1.1 %03d %s\r\n", w.status, statusText(w.status))
		_ = w.sentHeader().Write(server)
		_, _ = io.WriteString(server, "\r\n")
	}
	return server, bufio.NewReadWriter(bufio.NewReader(server), bufio.NewWriter(server)), nil
}

// localHijack is the hijacked connection of an in-process request. Its
// caller's end is closed if the caller stops waiting for the response
// (its context ended), so the goroutine reading it ends.
type localHijack struct {
	mu      sync.Mutex
	client  net.Conn // the caller's end, once hijacked
	aborted bool
}

// take makes the connection and starts reading the response from the
// caller's end; it fails once the caller has stopped waiting, or if the
// connection was taken already.
func (h *localHijack) take(req *http.Request, answer chan<- localAnswer) (net.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.client != nil:
		return nil, http.ErrHijacked
	case h.aborted:
		return nil, errors.New("discovery: in-process request ended before its handler hijacked the connection")
	}
	server, client := net.Pipe()
	h.client = client
	go readHijacked(client, req, answer)
	return server, nil
}

func (h *localHijack) taken() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.client != nil
}

// abort closes the caller's end: the caller has gone without a response.
func (h *localHijack) abort() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted = true
	if h.client != nil {
		_ = h.client.Close()
	}
}

// readHijacked answers the caller with the response read from its end of
// a hijacked connection: a 101's body is the connection, writable; another
// response's body reads from it, and closing it closes the connection.
func readHijacked(c net.Conn, req *http.Request, answer chan<- localAnswer) {
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		_ = c.Close()
		answer <- localAnswer{err: fmt.Errorf("discovery: in-process handler hijacked its connection: %w", err)}
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &upgradedConn{r: br, c: c}
	} else {
		resp.Body = &hijackedBody{ReadCloser: resp.Body, c: c}
	}
	answer <- localAnswer{resp: resp}
}

// upgradedConn is the body of a 101 from a hijacked connection: the
// connection, as net/http's client gives it (an io.ReadWriteCloser).
type upgradedConn struct {
	r *bufio.Reader // holds what was read past the response's header
	c net.Conn
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.r.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.c.Write(p) }
func (u *upgradedConn) Close() error                { return u.c.Close() }

// hijackedBody is the body of another response from a hijacked
// connection. Close closes the connection first: the body's Close drains
// what is left, which waited on a handler that wrote no more.
type hijackedBody struct {
	io.ReadCloser
	c net.Conn
}

func (b *hijackedBody) Close() error {
	_ = b.c.Close()
	_ = b.ReadCloser.Close()
	return nil
}
