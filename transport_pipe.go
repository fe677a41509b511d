package discovery

import (
	"io"
	"sync"
)

// localPipeBuffer is how much an in-process handler may write ahead of its
// caller's reads, as a socket's buffers let a server's writes finish before
// the client reads them.
const localPipeBuffer = 64 << 10

// localPipe is the body of an in-process response: an io.Pipe with a
// bounded buffer. Without one, every write of the handler waited for the
// caller's read, so a handler whose caller read nothing (or had not yet
// closed a body it did not want) blocked on its first write for good, where
// over the network it would have finished into the socket's buffers.
type localPipe struct {
	mu   sync.Mutex
	cond sync.Cond
	buf  []byte
	werr error // set when the writer closed: io.EOF, or the error given
	rerr error // set when the reader closed: writes fail with it
}

func newLocalPipe() *localPipe {
	p := &localPipe{}
	p.cond.L = &p.mu
	return p
}

// Write copies b into the buffer, waiting while it is full; it fails once
// the reader has closed.
func (p *localPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		switch {
		case p.rerr != nil:
			return n, p.rerr
		case p.werr != nil:
			return n, io.ErrClosedPipe
		case len(p.buf) < localPipeBuffer:
			k := min(len(b), localPipeBuffer-len(p.buf))
			p.buf = append(p.buf, b[:k]...)
			b, n = b[k:], n+k
			p.cond.Broadcast()
		default:
			p.cond.Wait()
		}
	}
	return n, nil
}

// Read returns what is buffered, waiting while nothing is; once the writer
// has closed and the buffer is empty, its error (io.EOF for a plain close).
func (p *localPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.rerr != nil:
			return 0, io.ErrClosedPipe
		case len(p.buf) > 0:
			n := copy(b, p.buf)
			p.buf = p.buf[n:]
			if len(p.buf) == 0 {
				p.buf = nil // let a large buffer go
			}
			p.cond.Broadcast()
			return n, nil
		case p.werr != nil:
			return 0, p.werr
		}
		p.cond.Wait()
	}
}

// CloseWrite ends the body: reads return err (io.EOF if nil) once the
// buffer is drained. The first close wins.
func (p *localPipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	if p.werr == nil {
		p.werr = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// CloseRead drops what is buffered; writes fail with err
// (io.ErrClosedPipe if nil). The first close wins.
func (p *localPipe) CloseRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.mu.Lock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.buf = nil
	p.cond.Broadcast()
	p.mu.Unlock()
}

// drained reports whether the writer closed cleanly (io.EOF) and the
// reader has read all that was written.
func (p *localPipe) drained() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.werr == io.EOF && len(p.buf) == 0 && p.rerr == nil
}
