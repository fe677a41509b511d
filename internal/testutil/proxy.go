package testutil

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy between the library and a backend (Redis,
// PostgreSQL) that can cut every connection, refuse new ones, add latency,
// or black-hole traffic on command.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refuse  bool
	hole    bool
	stalled map[net.Conn]bool
	latency time.Duration
	wg      sync.WaitGroup
	closed  atomic.Bool
	// Accepted counts connections accepted (refused ones included).
	Accepted atomic.Int64
}

// NewProxy listens on a loopback port and forwards to target; it is closed
// when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, stalled: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address, to give the client instead of the backend's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.Accepted.Add(1)
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		// A stalled connection's close does not reach the other end
		// either: a crashed host's never does, and the other end keeps its
		// side open (until Cut or Close).
		stalled := p.stalled[from]
		_ = from.Close()
		delete(p.conns, from)
		delete(p.stalled, from)
		if !stalled {
			_ = to.Close()
			delete(p.conns, to)
			delete(p.stalled, to)
		}
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, lat := p.hole || p.stalled[from], p.latency
			p.mu.Unlock()
			if lat > 0 {
				time.Sleep(lat)
			}
			if !hole {
				if _, werr := to.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// Cut closes every open connection; new ones are still accepted unless
// Refuse is on.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// Refuse makes the proxy close new connections at once (on) or forward them
// again (off).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Down cuts every connection and refuses new ones: the backend is gone.
func (p *Proxy) Down() {
	p.Refuse(true)
	p.Cut()
}

// Up forwards new connections again.
func (p *Proxy) Up() { p.Refuse(false) }

// Blackhole swallows traffic in both directions without closing anything,
// as a partition does (on), or forwards it again (off).
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	p.hole = on
	p.mu.Unlock()
}

// Stall swallows the traffic of every connection open now, in both
// directions and for good, without closing it, as a partition or a crashed
// host leaves a connection half-open; new connections are forwarded.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.stalled[c] = true
	}
}

// Latency delays every chunk forwarded by d.
func (p *Proxy) Latency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	if !p.closed.CompareAndSwap(false, true) {
		return
	}
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
