// Package health holds the parts of health monitoring that need no Registry:
// the active checkers (HTTP, TCP, an in-process function), the per-instance
// state machine with thresholds and a score, the encoding of that state as
// processes share it through Redis, and rendezvous hashing to choose which
// processes probe an instance.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// MaxBody is the most a check reads of an HTTP response body.
const MaxBody = 4 << 10

// maxHeaderBytes bounds the response headers of an HTTP check.
const maxHeaderBytes = 16 << 10

// maxErrBody is how much of a failing response's body goes into its error.
const maxErrBody = 128

// ErrStillRunning is the error of a check of an in-process function whose
// previous call has not returned yet.
var ErrStillRunning = errors.New("discovery: health check function still running since an earlier check")

// ErrForbiddenAddr is returned (wrapped) when a check tries to connect to any
// address but the instance's own registered one.
var ErrForbiddenAddr = errors.New("discovery: health check may connect only to the instance's own address")

// Kind is how a Target is probed.
type Kind uint8

// The kinds of check.
const (
	// KindNone: no active check.
	KindNone Kind = iota
	// KindHTTP: GET http://Host:Port/Path; 2xx passes, 429 warns, anything
	// else fails.
	KindHTTP
	// KindTCP: a TCP connection to Host:Port is opened and closed.
	KindTCP
	// KindFunc: the in-process function Func.
	KindFunc
)

// String returns "none", "http", "tcp" or "func".
func (k Kind) String() string {
	switch k {
	case KindHTTP:
		return "http"
	case KindTCP:
		return "tcp"
	case KindFunc:
		return "func"
	}
	return "none"
}

// KindOf returns how an instance is probed: its Check, or by default HTTP
// for http instances and the in-process function for router instances
// (hasFunc says whether this process holds one).
func KindOf(in *core.Instance, hasFunc bool) Kind {
	switch in.Check {
	case core.CheckHTTP:
		return KindHTTP
	case core.CheckTCP:
		return KindTCP
	case core.CheckNone:
		return KindNone
	}
	if in.Method == core.MethodRouter {
		if hasFunc {
			return KindFunc
		}
		return KindNone
	}
	return KindHTTP
}

// Target is what one check probes.
type Target struct {
	Kind Kind
	// Addr is the instance's Host:Port: the only address a check connects to.
	Addr string
	// Path is the HTTP path, starting with '/'.
	Path string
	// Func is the in-process check of KindFunc.
	Func func(ctx context.Context) error
	// Name names Func to its owner (in Close's error, if a call overruns).
	Name string
	// Running, if not nil, is set while a call of Func runs: a check
	// started while an earlier call has not returned (it overran its
	// timeout) fails with ErrStillRunning instead of calling Func again.
	Running *atomic.Bool
}

// Result is the outcome of one check.
type Result struct {
	// Status is StatusHealthy (passing), StatusWarning (HTTP 429) or
	// StatusUnhealthy (critical).
	Status core.Status
	// RTT is how long the check took.
	RTT time.Duration
	// Err says why the check did not pass; nil when it did.
	Err error
}

// Prober runs checks. It is safe for concurrent use and holds no
// connections between checks: each HTTP check uses a fresh connection,
// closed when it ends (as Consul's checks do), so nothing outlives it.
type Prober struct {
	client *http.Client
	// dial opens connections once the address is allowed; tests wrap it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// spawn runs the in-process check functions in a goroutine its caller
	// tracks, under the target's Name; nil runs them with the go statement.
	spawn func(name string, fn func()) bool
}

type allowedAddrKey struct{}

// NewProber returns a Prober. spawn, if not nil, starts the goroutines that
// run in-process check functions (so that their owner can wait for them).
func NewProber(spawn func(name string, fn func()) bool) *Prober {
	p := &Prober{spawn: spawn}
	d := &net.Dialer{KeepAlive: -1}
	p.dial = d.DialContext
	tr := &http.Transport{
		Proxy:                  nil, // never a proxy from the environment
		DialContext:            p.guardedDial,
		DisableKeepAlives:      true,
		DisableCompression:     true, // 4 KiB of body is 4 KiB on the wire
		MaxResponseHeaderBytes: maxHeaderBytes,
		ForceAttemptHTTP2:      false,
	}
	p.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer, never followed
		},
	}
	return p
}

// guardedDial connects only to the address the check was started for.
func (p *Prober) guardedDial(ctx context.Context, network, addr string) (net.Conn, error) {
	allowed, _ := ctx.Value(allowedAddrKey{}).(string)
	if allowed == "" || addr != allowed || (network != "tcp" && network != "tcp4" && network != "tcp6") {
		return nil, &net.OpError{Op: "dial", Net: network, Err: ErrForbiddenAddr}
	}
	return p.dial(ctx, network, addr)
}

// Check runs one check of t, bounded by ctx (whose deadline is the check's
// timeout). It never connects to any address but t.Addr, never follows a
// redirect, and reads at most MaxBody bytes of a response body.
func (p *Prober) Check(ctx context.Context, t Target) Result {
	start := time.Now()
	var res Result
	switch t.Kind {
	case KindHTTP:
		res = p.checkHTTP(ctx, t)
	case KindTCP:
		res = p.checkTCP(ctx, t)
	case KindFunc:
		res = p.checkFunc(ctx, t)
	default:
		return Result{Status: core.StatusUnknown}
	}
	res.RTT = time.Since(start)
	if res.Err != nil && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.Err = &TimeoutError{Err: res.Err}
	}
	return res
}

// TimeoutError is a check that did not finish within its timeout.
type TimeoutError struct{ Err error }

func (e *TimeoutError) Error() string {
	return "discovery: health check timed out: " + e.Err.Error()
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// StatusError is an HTTP check answered with a status that does not pass.
type StatusError struct {
	Code int
	// Body is the start of the response body.
	Body string
}

func (e *StatusError) Error() string {
	s := "discovery: health check answered HTTP " + strconv.Itoa(e.Code)
	if e.Body != "" {
		s += ": " + strconv.Quote(e.Body)
	}
	return s
}

func (p *Prober) checkHTTP(ctx context.Context, t Target) Result {
	ctx = context.WithValue(ctx, allowedAddrKey{}, t.Addr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Addr+t.Path, nil)
	if err != nil {
		return Result{Status: core.StatusUnhealthy, Err: err}
	}
	if req.URL.Host != t.Addr || req.URL.User != nil { // a path that would move the host
		return Result{Status: core.StatusUnhealthy, Err: &net.OpError{Op: "dial", Net: "tcp", Err: ErrForbiddenAddr}}
	}
	req.Header.Set("User-Agent", "discovery-health/1")
	resp, err := p.client.Do(req)
	if err != nil {
		return Result{Status: core.StatusUnhealthy, Err: err}
	}
	var buf [MaxBody]byte
	n, rerr := io.ReadFull(resp.Body, buf[:])
	_ = resp.Body.Close() // not drained: a longer body closes the connection
	if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
		return Result{Status: core.StatusUnhealthy, Err: rerr}
	}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return Result{Status: core.StatusHealthy}
	case code == http.StatusTooManyRequests:
		return Result{Status: core.StatusWarning, Err: &StatusError{Code: code, Body: excerpt(buf[:n])}}
	default:
		return Result{Status: core.StatusUnhealthy, Err: &StatusError{Code: code, Body: excerpt(buf[:n])}}
	}
}

// excerpt returns the start of a body as printable text.
func excerpt(b []byte) string {
	if len(b) > maxErrBody {
		b = b[:maxErrBody]
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c < ' ' || c >= 0x7f {
			c = '.'
		}
		out = append(out, c)
	}
	return string(out)
}

func (p *Prober) checkTCP(ctx context.Context, t Target) Result {
	ctx = context.WithValue(ctx, allowedAddrKey{}, t.Addr)
	c, err := p.guardedDial(ctx, "tcp", t.Addr)
	if err != nil {
		return Result{Status: core.StatusUnhealthy, Err: err}
	}
	_ = c.Close()
	return Result{Status: core.StatusHealthy}
}

// checkFunc runs the function in its own goroutine, so that the result is
// known at the timeout even if the function overruns it (it should return
// soon after ctx is done; its owner waits for it, for a while). While a call overruns,
// the checks of t.Running's target fail without calling it again: each
// started one more goroutine, which piled up as long as it was stuck.
func (p *Prober) checkFunc(ctx context.Context, t Target) Result {
	if t.Func == nil {
		return Result{Status: core.StatusUnknown}
	}
	if t.Running != nil && !t.Running.CompareAndSwap(false, true) {
		return Result{Status: core.StatusUnhealthy, Err: ErrStillRunning}
	}
	done := make(chan error, 1)
	run := func() {
		var err error
		defer func() {
			if v := recover(); v != nil {
				err = &PanicError{Value: v}
			}
			if t.Running != nil {
				t.Running.Store(false) // before the result: the next check may call it
			}
			done <- err
		}()
		err = t.Func(ctx)
	}
	if p.spawn == nil {
		go run()
	} else if !p.spawn(t.Name, run) {
		if t.Running != nil {
			t.Running.Store(false)
		}
		return Result{Status: core.StatusUnknown}
	}
	select {
	case err := <-done:
		if err != nil {
			return Result{Status: core.StatusUnhealthy, Err: err}
		}
		return Result{Status: core.StatusHealthy}
	case <-ctx.Done():
		return Result{Status: core.StatusUnhealthy, Err: ctx.Err()}
	}
}

// PanicError is an in-process check function that panicked.
type PanicError struct{ Value any }

func (e *PanicError) Error() string {
	return "discovery: health check function panicked: " + fmt.Sprint(e.Value)
}
